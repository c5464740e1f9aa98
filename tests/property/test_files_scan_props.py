"""Properties of the file-tree scan on damaged real files.

Hypothesis flips bytes (mostly in the header, where structure lives), truncates at random
offsets, prepends and appends junk, and gzips the result now and then, starting from
pydicom's real test files in several encodings. Whatever it makes:

1. the scan never raises, and every file it was given ends indexed, duplicate or quarantined
   (the counts add up to the files seen, no path twice);
2. a second scan reads nothing and returns the same result (the index keeps every value);
3. every indexed instance normalises to a Part 10 file whose File Meta names its SOP UIDs and
   transfer syntax, or read_normalised says why with an InputError: nothing else escapes;
4. after any one change (a file touched, regrown under the same mtime, added or removed) or
   none, a re-scan returns what a scan from nothing returns, reading only the changed file,
   and returns the last result unrebuilt exactly when nothing changed.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.filereader import read_file_meta_info

import pacsmig.inventory.files as files
from pacsmig.errors import InputError
from pacsmig.inventory.files import QUARANTINE_REASONS, ScanResult, _read_one, read_normalised, scan

pytestmark = pytest.mark.property

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOURCES = (
    "CT_small.dcm",  # explicit VR LE, native pixels
    "MR_small_implicit.dcm",  # implicit VR LE
    "MR_small_bigendian.dcm",  # explicit VR BE
    "ExplVR_LitEndNoMeta.dcm",  # bare data set
    "JPEG2000.dcm",  # encapsulated pixel data
    "image_dfl.dcm",  # deflated
    "rtplan.dcm",  # nested sequences, no pixels
    "test-SR.dcm",  # deep SR content tree
)


def raw(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert path is not None
    return Path(path).read_bytes()


ORIGINALS = {name: raw(name) for name in SOURCES}

# Byte offsets: half of them in the first 2 KiB, where File Meta and element headers are.
offsets = st.one_of(st.integers(0, 2048), st.integers(0, 1 << 20))
operations = st.one_of(
    st.tuples(st.just("flip"), offsets, st.integers(1, 255)),
    st.tuples(st.just("truncate"), offsets, st.just(0)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64), st.just(0)),
    st.tuples(st.just("prepend"), st.binary(min_size=1, max_size=64), st.just(0)),
)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(ORIGINALS[draw(st.sampled_from(SOURCES))])
    for op, arg, value in draw(st.lists(operations, max_size=4)):
        if op == "flip" and data:
            assert isinstance(arg, int)
            data[arg % len(data)] ^= value
        elif op == "truncate":
            assert isinstance(arg, int)
            del data[arg % (len(data) + 1) :]
        elif op == "append":
            assert isinstance(arg, bytes)
            data += arg
        elif op == "prepend":
            assert isinstance(arg, bytes)
            data[:0] = arg
    out = bytes(data)
    if draw(st.integers(0, 4)) == 0:
        out = gzip.compress(out)
        cut = draw(st.one_of(st.none(), st.integers(0, len(out))))
        out = out if cut is None else out[:cut]
    return out


def everything(result: ScanResult) -> list[str]:
    kept = [i.path for v in result.instances.values() for i in v]
    return (
        kept
        + [d[2] for d in result.duplicates]
        + [q.path for q in result.quarantine]
        + list(result.dicomdirs)
    )


@SETTINGS
@given(st.lists(damaged(), min_size=1, max_size=6))
def test_every_damaged_file_ends_indexed_or_quarantined(batch: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        written = set()
        for i, data in enumerate(batch):
            path = root / f"d{i % 2}" / f"f{i}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written.add(str(path))
        index = Path(tmp) / "index.sqlite"

        result = scan([root], index_path=index, workers=1)
        paths = everything(result)
        assert len(paths) == len(set(paths)) == result.files_seen == len(batch)
        assert set(paths) == written
        assert result.files_read == len(batch)
        assert all(q.reason in QUARANTINE_REASONS for q in result.quarantine)
        # Conflicts quarantine the other file and name the study of the kept one.
        conflicting = [q for q in result.quarantine if q.reason == "duplicate_conflict"]
        assert len(conflicting) <= sum(len(v) for v in result.conflicts.values())

        again = scan([root], index_path=index, workers=1)
        assert again.files_read == 0
        assert again == ScanResult(
            studies=result.studies,
            instances=result.instances,
            quarantine=result.quarantine,
            duplicates=result.duplicates,
            conflicts=result.conflicts,
            files_seen=result.files_seen,
            files_read=0,
            dicomdirs=result.dicomdirs,
        )

        for files in result.instances.values():
            for inst in files:
                try:
                    out = read_normalised(inst)
                except InputError as exc:
                    assert "\n" not in str(exc) and inst.path in str(exc)
                    continue
                assert out[128:132] == b"DICM"
                normalised = Path(tmp) / "normalised.dcm"
                normalised.write_bytes(out)
                meta = read_file_meta_info(normalised)
                assert meta.MediaStorageSOPInstanceUID == inst.sop_uid
                assert meta.MediaStorageSOPClassUID == inst.sop_class_uid
                big_endian = "big_endian" in inst.fixes
                ts = "1.2.840.10008.1.2.1" if big_endian else inst.transfer_syntax
                assert meta.TransferSyntaxUID == ts


@SETTINGS
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_escape_the_reader(data: bytes) -> None:
    with tempfile.NamedTemporaryFile() as fh:
        fh.write(data)
        fh.flush()
        row = _read_one(fh.name)
    path, size, _, kind, packed, _ = row
    assert path == fh.name and size == len(data)
    assert kind in ("i", "q", "d")
    if kind == "q":
        assert packed.split("\x1f", 1)[0] in QUARANTINE_REASONS


CHANGES = ("none", "touch", "regrow", "add", "remove")


@SETTINGS
@given(
    st.lists(damaged(), min_size=1, max_size=6),
    st.sampled_from(CHANGES),
    st.integers(0, 5),
    damaged(),
)
def test_a_rescan_after_any_one_change_equals_a_scan_from_nothing(
    batch: list[bytes], change: str, which: int, extra: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        written = []
        for i, data in enumerate(batch):
            path = root / f"d{i % 2}" / f"f{i}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written.append(path)
        index = Path(tmp) / "index.sqlite"
        scan([root], index_path=index, workers=1)

        target = written[which % len(written)]
        st_ = target.stat()
        if change == "touch":
            os.utime(target, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1))
        elif change == "regrow":
            target.write_bytes(target.read_bytes() + b"\0")
            os.utime(target, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        elif change == "add":
            (root / "d9").mkdir()
            (root / "d9" / "late.dcm").write_bytes(extra)
        elif change == "remove":
            target.unlink()

        with mock.patch.object(files, "_scan", wraps=files._scan) as rebuilding:
            again = scan([root], index_path=index, workers=1)
        assert rebuilding.called == (change != "none")
        assert again.files_read == (1 if change in ("touch", "regrow", "add") else 0)
        fresh = scan([root], index_path=Path(tmp) / "fresh.sqlite", workers=1)
        assert again == dataclasses.replace(fresh, files_read=again.files_read)
