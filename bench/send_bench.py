"""Send-only throughput, now part of bench/throughput.py (its ``send`` table).

    python bench/send_bench.py --small 2000 --large 300 --runs 3

runs ``python bench/throughput.py --only send --small 2000 --ct 300 --runs 3``: pacsmig's sender
against DCMTK storescu into ``storescp --ignore``, with 1 and 4 associations; add ``--nagle``
for the rows with Nagle's algorithm on at the peer. Kept so that old notes still run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import main  # noqa: E402


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--small", type=int, default=2000, help="instances of 64x64 (about 10 KB)")
    ap.add_argument("--large", type=int, default=300, help="instances of 512x512 (about 0.5 MB)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nagle", action="store_true", help="also with Nagle on at the peer")
    args = ap.parse_args(argv)
    forwarded = ["--only", "send", "--small", str(args.small), "--ct", str(args.large)]
    forwarded += ["--runs", str(args.runs)] + (["--nagle"] if args.nagle else [])
    return main(forwarded)


if __name__ == "__main__":
    sys.exit(run())
