"""Send-only throughput: pacsmig's C-STORE sender against DCMTK storescu, same files, same run.

    .venv/bin/python bench/send_bench.py --small 2000 --large 300 --runs 3

Prints instances/s and MB/s for each sender into `storescp --ignore` (a sink that costs
nothing) and into a real Orthanc, and the ratio pacsmig/storescu. A benchmark, not a test:
the machine is 2 cores and noisy; read the median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pydicom import dcmread

from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.store import open_store
from pacsmig.testing.corpus import generate_corpus
from pacsmig.testing.servers import OrthancServer, StoreSCPServer, dcmtk_storescu


def pacsmig_send(files: list[Path], peer: Peer) -> None:
    metas = [dcmread(f, stop_before_pixels=True).file_meta for f in files]
    pairs = [(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas]
    with open_store("PACSMIG", peer, set(pairs)) as session:
        for path, pair in zip(files, pairs, strict=True):
            outcome = session.send_file(path, *pair)
            if not outcome.stored:
                raise SystemExit(f"pacsmig send failed: {outcome.describe()}")


def storescu_send(files: list[Path], port: int, aet: str) -> None:
    dcmtk_storescu("127.0.0.1", port, aet, files, batch_size=100_000)


def timed(fn: object, *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=2000, help="instances of 64x64 (about 10 KB)")
    ap.add_argument("--large", type=int, default=300, help="instances of 512x512 (about 0.5 MB)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpora = {
            "small": generate_corpus(
                work / "s", studies=max(1, args.small // 100), per_series=50, rows=64, cols=64
            ),
            "large": generate_corpus(
                work / "l",
                studies=max(1, args.large // 50),
                per_series=25,
                rows=512,
                cols=512,
                seed=1,
            ),
        }
        print(f"{'corpus':6} {'peer':9} {'sender':9} {'inst/s':>9} {'MB/s':>8}  ratio")
        for name, files in corpora.items():
            mb = sum(f.stat().st_size for f in files) / 1e6
            for peer_kind in ("storescp", "orthanc"):
                results: dict[str, list[float]] = {"storescu": [], "pacsmig": []}
                for run in range(args.runs):
                    for sender in ("storescu", "pacsmig"):
                        if peer_kind == "storescp":
                            server: StoreSCPServer | OrthancServer = StoreSCPServer(
                                work / f"scp{run}{sender}", ignore=True
                            )
                        else:
                            server = OrthancServer(work / f"o{run}{sender}{name}", aet="NEWPACS")
                        with server:
                            port = (
                                server.port
                                if isinstance(server, StoreSCPServer)
                                else server.dicom_port
                            )
                            aet = server.aet
                            if sender == "storescu":
                                dt = timed(storescu_send, files, port, aet)
                            else:
                                dt = timed(
                                    pacsmig_send,
                                    files,
                                    Peer(ae_title=aet, host="127.0.0.1", port=port),
                                )
                        results[sender].append(dt)
                base = statistics.median(results["storescu"])
                for sender, times in results.items():
                    t = statistics.median(times)
                    print(
                        f"{name:6} {peer_kind:9} {sender:9} {len(files) / t:9.1f} {mb / t:8.1f}  {base / t:5.2f}"
                    )


if __name__ == "__main__":
    main()
