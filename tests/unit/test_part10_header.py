"""pacsmig's own File Meta encoder for received instances equals pynetdicom's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from pacsmig.dicomnet.received import part10_header

UIDS = st.lists(st.integers(0, 99999), min_size=2, max_size=12).map(
    lambda parts: "1." + ".".join(str(p) for p in parts)
)
SYNTAXES = st.sampled_from(
    ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"]
)


@given(UIDS, UIDS, SYNTAXES)
def test_header_is_byte_identical_to_pynetdicoms(cls: str, sop: str, ts: str) -> None:
    meta = create_file_meta(sop_class_uid=cls, sop_instance_uid=sop, transfer_syntax=ts)
    expected = b"\0" * 128 + b"DICM" + encode_file_meta(meta)
    assert part10_header(cls, sop, ts) == expected
