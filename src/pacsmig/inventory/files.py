"""Inventory of a file tree: the legacy PACS's RAID, tape or disc dumps.

``scan`` walks the roots, reads the *header* of every candidate file in worker processes,
keeps what it learnt in a SQLite index keyed by (path, size, mtime_ns) so the next scan reads
only new or changed files, and builds the same StudyRecords a C-FIND inventory would.

Legacy storage holds more than clean Part 10 files, so each file is parsed by a small
structural walker rather than trusted: it finds the true encoding (trying the others when the
File Meta lies or is missing), and walks every element to the end of the file -- seeking past
large values, never loading pixel data -- so that a file cut short is caught here, not at the
destination. What normalisation has to do is recorded as stable fix codes:

``gzip``
    the whole file is gzip-compressed; normalisation gunzips it.
``no_preamble``
    no 128-byte preamble and ``DICM`` prefix.
``no_file_meta``
    no File Meta Information group at all (a bare data set).
``invalid_file_meta``
    a File Meta group that lacks a required element, names other SOP UIDs than the data set,
    or has a wrong group length.
``wrong_transfer_syntax_in_meta``
    the File Meta names a transfer syntax the data set is not encoded in.
``big_endian``
    Explicit VR Big Endian (retired, refused by most archives); normalisation transcodes the
    data set to Explicit VR Little Endian, swapping binary values by their VR.

Files that cannot be migrated are quarantined with a reason: ``not_dicom``, ``truncated``,
``corrupt``, ``missing_uid``, ``unreadable`` or ``duplicate_conflict``. An image whose file
ends cleanly at an element boundary before its Pixel Data counts as truncated. Every file
seen ends as exactly one of: an instance, an identical duplicate, a quarantine entry, or a
DICOMDIR (whose records bring in the files they reference; one listed but absent is
quarantined as ``unreadable``).

Copies of one SOP Instance UID are compared by a digest of their data set bytes, then, when
those differ, by pydicom's decoded elements (so implicit, explicit, big endian and gzipped
copies of one instance are duplicates). The copy with the smallest path is kept; a copy with
other content is quarantined as ``duplicate_conflict`` and its study listed in ``conflicts``.

A re-scan stats every file. When it finds exactly what the last scan found -- every path,
size and mtime_ns, every unreadable path, every file a DICOMDIR brings in -- with the same
parameters and code, it returns the last result, kept in the index, instead of rebuilding
it from the rows: the same value, in a fraction of the time. Any difference rebuilds it.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import re
import sqlite3
import stat
import struct
import sys
import threading
import warnings
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, compress, count, islice, repeat
from operator import attrgetter, ne, sub
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

from pydicom import __version__ as pydicom_version
from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID
from pydicom.values import convert_PN, convert_text

from pacsmig import __version__
from pacsmig.errors import InputError
from pacsmig.inventory.model import SeriesRecord, StudyRecord

__all__ = [
    "FIX_CODES",
    "QUARANTINE_REASONS",
    "FileInstance",
    "QuarantineEntry",
    "ScanResult",
    "normalised_transfer_syntax",
    "read_normalised",
    "scan",
]

Progress = Callable[[int, int], None]

FIX_CODES: Final = (
    "gzip",
    "no_preamble",
    "no_file_meta",
    "invalid_file_meta",
    "wrong_transfer_syntax_in_meta",
    "big_endian",
)
QUARANTINE_REASONS: Final = (
    "not_dicom",
    "truncated",
    "corrupt",
    "missing_uid",
    "unreadable",
    "duplicate_conflict",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileInstance:
    """One readable instance file, with what normalisation must do to it."""

    path: str
    size: int
    mtime_ns: int
    sop_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    # The syntax the data set is really encoded in, whatever the File Meta claims.
    transfer_syntax: str
    fixes: tuple[str, ...] = ()
    # Patient-identifying values stay out of repr: records end up in logs and tracebacks.
    patient_id: str = field(default="", repr=False)
    patient_name: str = field(default="", repr=False)
    birth_date: str = field(default="", repr=False)
    sex: str = field(default="", repr=False)
    study_date: str = ""
    study_time: str = ""
    accession: str = field(default="", repr=False)
    study_description: str = field(default="", repr=False)
    modality: str = ""
    series_number: str = ""
    series_description: str = field(default="", repr=False)
    instance_number: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantineEntry:
    """A file that cannot be migrated; ``detail`` names tags and offsets, never values."""

    path: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanResult:
    studies: list[StudyRecord]
    # Study Instance UID -> the kept file of each of its SOP instances, by path.
    instances: dict[str, list[FileInstance]]
    quarantine: list[QuarantineEntry]
    # (sop_uid, kept_path, other_path) for byte-identical copies of one instance.
    duplicates: list[tuple[str, str, str]]
    # Study Instance UID -> one line per same-SOP-UID-different-content pair: hold the study.
    conflicts: dict[str, list[str]]
    files_seen: int
    # Files parsed by this scan (the rest came from the index unchanged).
    files_read: int
    dicomdirs: list[str] = field(default_factory=list)


# --- DICOM constants --------------------------------------------------------------------------

IMPLICIT_LE: Final = "1.2.840.10008.1.2"
EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
DEFLATED_LE: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE: Final = "1.2.840.10008.1.2.2"
# JPIP Referenced Deflate: the data set is deflated like 1.2.840.10008.1.2.1.99.
JPIP_DEFLATE: Final = "1.2.840.10008.1.2.4.95"
MEDIA_STORAGE_DIRECTORY: Final = "1.2.840.10008.1.3.10"
# Native syntaxes; every other (known or private) syntax encapsulates its pixel data.
_NATIVE: Final = frozenset({IMPLICIT_LE, EXPLICIT_LE, DEFLATED_LE, EXPLICIT_BE, JPIP_DEFLATE})
_JPIP_REFERENCED: Final = "1.2.840.10008.1.2.4.94"

# How a data set's bytes are laid out; a transfer syntax maps onto one of these.
_ILE, _ELE, _EBE, _DEFL = "implicit_le", "explicit_le", "explicit_be", "deflated"
_CANONICAL_TS: Final = {_ILE: IMPLICIT_LE, _ELE: EXPLICIT_LE, _EBE: EXPLICIT_BE, _DEFL: DEFLATED_LE}

_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS: Final = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
_ALL_VRS: Final = _LONG_VRS | _SHORT_VRS
# Byte width of the unit each binary VR is made of, for swapping big-endian values.
_SWAP_WIDTH: Final = {
    b"US": 2, b"SS": 2, b"OW": 2, b"AT": 2,
    b"UL": 4, b"SL": 4, b"FL": 4, b"OF": 4, b"OL": 4,
    b"FD": 8, b"OD": 8, b"SV": 8, b"UV": 8, b"OV": 8,
}  # fmt: skip

_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_DELIM: Final = 0xFFFEE00D
_SEQ_DELIM: Final = 0xFFFEE0DD
# Pixel Data, Float Pixel Data, Double Float Pixel Data: all in group 7FE0.
_PIXEL_ELEMS: Final = frozenset({0x0010, 0x0008, 0x0009})
_MAX_DEPTH: Final = 48

T_CHARSET: Final = 0x00080005
T_SOP_CLASS: Final = 0x00080016
T_SOP_UID: Final = 0x00080018
T_STUDY_DATE: Final = 0x00080020
T_STUDY_TIME: Final = 0x00080030
T_ACCESSION: Final = 0x00080050
T_MODALITY: Final = 0x00080060
T_STUDY_DESC: Final = 0x00081030
T_SERIES_DESC: Final = 0x0008103E
T_PATIENT_NAME: Final = 0x00100010
T_PATIENT_ID: Final = 0x00100020
T_BIRTH_DATE: Final = 0x00100030
T_SEX: Final = 0x00100040
T_STUDY_UID: Final = 0x0020000D
T_SERIES_UID: Final = 0x0020000E
T_SERIES_NUMBER: Final = 0x00200011
T_INSTANCE_NUMBER: Final = 0x00200013
T_ROWS: Final = 0x00280010
_WANTED: Final = frozenset(
    {
        T_CHARSET, T_SOP_CLASS, T_SOP_UID, T_STUDY_DATE, T_STUDY_TIME, T_ACCESSION,
        T_MODALITY, T_STUDY_DESC, T_SERIES_DESC, T_PATIENT_NAME, T_PATIENT_ID, T_BIRTH_DATE,
        T_SEX, T_STUDY_UID, T_SERIES_UID, T_SERIES_NUMBER, T_INSTANCE_NUMBER, T_ROWS,
    }
)  # fmt: skip
_REQUIRED_UIDS: Final = (
    (T_SOP_UID, "SOP Instance UID"),
    (T_SOP_CLASS, "SOP Class UID"),
    (T_STUDY_UID, "Study Instance UID"),
    (T_SERIES_UID, "Series Instance UID"),
)
# Longest value worth keeping for the inventory; anything longer is not one of ours.
_MAX_KEPT_VALUE: Final = 1024

_HEAD: Final = 16384
_WINDOW: Final = 4096
_WS: Final = " \x00\t\r\n\f\v"
_UID_RE: Final = re.compile(r"[0-9.]+\Z")

_U16_LE = struct.Struct("<H")
_U32_LE = struct.Struct("<L")
_TAG_LE = struct.Struct("<HH")
_TAG_BE = struct.Struct(">HH")
_U16_BE = struct.Struct(">H")
_U32_BE = struct.Struct(">L")
_ELEM_HDR_LE = struct.Struct("<HHL")
_ELEM_HDR_BE = struct.Struct(">HHL")
# One unpack per element header: tag, VR and (short) length, or tag and length.
_HDR_EXPLICIT_LE = struct.Struct("<HH2sH").unpack_from
_HDR_EXPLICIT_BE = struct.Struct(">HH2sH").unpack_from
_HDR_IMPLICIT = _ELEM_HDR_LE.unpack_from


class _Bad(Exception):
    """A file that cannot become an instance: reason code and a patient-free detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# --- byte source -----------------------------------------------------------------------------


class _Source:
    """Bytes of one file: a head read up front, further windows read on demand.

    Values the walker skips (pixel data, large private blobs) are never read: a file is known
    complete once every element's declared length fits exactly in its size.
    """

    __slots__ = ("base", "buf", "fd", "size")

    def __init__(self, buf: bytes, size: int, fd: int = -1) -> None:
        self.buf = buf
        self.base = 0
        self.size = size
        self.fd = fd

    def window(self, pos: int, need: int) -> None:
        if pos + need > self.size:
            raise _Bad("truncated", f"file ends at byte {self.size}, inside the element at {pos}")
        if self.fd < 0:
            # In memory, everything up to size is already in buf.
            return
        buf = os.pread(self.fd, max(need, _WINDOW), pos)
        if len(buf) < need:
            raise _Bad("truncated", f"file shrank to {pos + len(buf)} bytes while being read")
        self.buf = buf
        self.base = pos

    def read(self, pos: int, n: int) -> bytes:
        off = pos - self.base
        if off >= 0 and off + n <= len(self.buf):
            return self.buf[off : off + n]
        self.window(pos, n)
        off = pos - self.base
        return self.buf[off : off + n]

    def is_zero_tail(self, pos: int) -> bool:
        """Whether everything from pos to the end is NUL padding (some writers pad media)."""
        while pos < self.size:
            n = min(1 << 20, self.size - pos)
            if self.read(pos, n).strip(b"\x00"):
                return False
            pos += n
        return True


# --- structural walk -------------------------------------------------------------------------


@dataclass(slots=True)
class _Walk:
    """What one pass over the data set found."""

    found: dict[int, bytes] = field(default_factory=dict)
    pixels: bool = False
    encapsulated: bool = False


def _walk_dataset(
    src: _Source,
    pos: int,
    end: int,
    enc: str,
    depth: int,
    out: _Walk | None,
) -> int:
    """Walk elements from pos; end = -1 means an undefined-length item (stop at its delimiter).

    Returns the position after the last element (after the delimiter when end == -1). Only
    depth 0 (out is not None) records values; nested data sets are checked for structure.
    This loop runs for every element of every file, so it is written for speed: one unpack
    per element in the common case, tags only computed in the groups that hold wanted ones.
    """
    if depth > _MAX_DEPTH:
        raise _Bad("corrupt", f"sequences nested deeper than {_MAX_DEPTH} at byte {pos}")
    implicit = enc == _ILE
    little = enc != _EBE
    explicit_header = _HDR_EXPLICIT_LE if little else _HDR_EXPLICIT_BE
    implicit_header = _HDR_IMPLICIT
    u32 = _U32_LE.unpack_from if little else _U32_BE.unpack_from
    long_vrs = _LONG_VRS
    short_vrs = _SHORT_VRS
    wanted = _WANTED
    max_kept = _MAX_KEPT_VALUE
    pixel_elems = _PIXEL_ELEMS
    found = out.found if out is not None else None
    size = src.size
    limit = size if end < 0 else end
    buf = src.buf
    base = src.base
    nbuf = len(buf)
    while pos < limit:
        off = pos - base
        if off < 0 or off + 12 > nbuf:
            if pos + 8 > size:
                raise _Bad("truncated", f"file ends at byte {size}, inside an element header")
            src.window(pos, min(12, size - pos))
            buf, base = src.buf, src.base
            nbuf = len(buf)
            off = pos - base
        if implicit:
            group, elem, length = implicit_header(buf, off)
            vr = b""
            vstart = pos + 8
            if group == 0xFFFE:
                # Only an item delimiter, closing the undefined-length item walked, is valid.
                if elem == 0xE00D and end < 0:
                    return pos + 8
                raise _Bad("corrupt", f"unexpected delimiter (FFFE,{elem:04X}) at byte {pos}")
        else:
            group, elem, vr, length = explicit_header(buf, off)
            if vr in short_vrs:
                vstart = pos + 8
            elif vr in long_vrs:
                if off + 12 > nbuf:
                    raise _Bad("truncated", f"file ends at byte {size}, inside an element header")
                length = u32(buf, off + 8)[0]
                vstart = pos + 12
            elif group == 0xFFFE:
                if elem == 0xE00D and end < 0:
                    return pos + 8
                raise _Bad("corrupt", f"unexpected delimiter (FFFE,{elem:04X}) at byte {pos}")
            elif found is not None and group == 0 and elem == 0 and src.is_zero_tail(pos):
                # NUL padding after the last element, as some media writers leave.
                break
            else:
                tag = group << 16 | elem
                raise _Bad("corrupt", f"invalid VR at byte {pos + 4} in {_tag_text(tag)}")
        if length == 0xFFFFFFFF:  # undefined length (a literal: no global lookup per element)
            if group == 0x7FE0 and elem in pixel_elems and vr in (b"", b"OB", b"OW"):
                # Encapsulated (compressed) frames; valid only in explicit VR LE, which the
                # caller checks against the transfer syntax.
                pos = _walk_items(src, vstart, enc, depth, fragments=True)
                if out is not None:
                    out.encapsulated = True
                    out.pixels = True
            elif implicit or vr == b"SQ":
                pos = _walk_items(src, vstart, enc, depth, fragments=False)
            elif vr == b"UN":
                # CP-246: an undefined-length UN is a sequence encoded as implicit VR LE.
                pos = _walk_items(src, vstart, _ILE, depth, fragments=False)
            else:
                tag = group << 16 | elem
                raise _Bad("corrupt", f"undefined length on {_tag_text(tag)} at byte {pos}")
            buf, base = src.buf, src.base
            nbuf = len(buf)
            continue
        vend = vstart + length
        if vend > limit:
            tag = group << 16 | elem
            if vend > size:
                raise _Bad(
                    "truncated",
                    f"{_tag_text(tag)} at byte {pos} declares {length} bytes; "
                    f"the file ends at byte {size}",
                )
            raise _Bad("corrupt", f"{_tag_text(tag)} at byte {pos} overruns its container")
        if found is not None:
            if group <= 0x0028:
                tag = group << 16 | elem
                if tag in wanted and length <= max_kept:
                    voff = vstart - base
                    if voff + length <= nbuf:
                        found[tag] = buf[voff : voff + length]
                    else:
                        found[tag] = src.read(vstart, length)
                        buf, base = src.buf, src.base
                        nbuf = len(buf)
            elif group == 0x7FE0 and elem in pixel_elems and out is not None:
                out.pixels = True
        pos = vend
    if end >= 0 and pos != end:
        raise _Bad("corrupt", f"elements overrun their item at byte {pos}")
    return pos


def _walk_items(src: _Source, pos: int, enc: str, depth: int, *, fragments: bool) -> int:
    """Walk the items of an undefined-length sequence (or pixel fragments) to its delimiter."""
    little = enc != _EBE
    hdr = _ELEM_HDR_LE if little else _ELEM_HDR_BE
    size = src.size
    while True:
        if pos + 8 > size:
            raise _Bad("truncated", f"file ends at byte {size} inside a sequence")
        group, elem, length = hdr.unpack(src.read(pos, 8))
        tag = group << 16 | elem
        if tag == _SEQ_DELIM:
            return pos + 8
        if tag != _ITEM:
            raise _Bad("corrupt", f"expected an item at byte {pos}, found {_tag_text(tag)}")
        if length == _UNDEFINED:
            if fragments:
                raise _Bad("corrupt", f"pixel data fragment of undefined length at byte {pos}")
            pos = _walk_dataset(src, pos + 8, -1, enc, depth + 1, None)
        else:
            if pos + 8 + length > size:
                raise _Bad(
                    "truncated",
                    f"item at byte {pos} declares {length} bytes; the file ends at byte {size}",
                )
            pos += 8 + length


# --- file layout -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Meta:
    """The File Meta group as found (all raw values), and where the data set starts."""

    start: int
    end: int
    ts: str = ""
    sop_class: str = ""
    sop_uid: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Parsed:
    ts: str
    fixes: tuple[str, ...]
    found: dict[int, bytes]
    ds_start: int
    # The data set in its true encoding (inflated when deflated), or None when only the
    # head of the file was read.
    dataset: bytes | None = None
    # The bytes after the File Meta exactly as stored (still deflated when deflated).
    stored: bytes | None = None
    dicomdir: bool = False


def _uid(raw: bytes | None) -> str:
    if not raw:
        return ""
    try:
        return raw.decode("ascii").strip(_WS)
    except UnicodeDecodeError:
        return "\ufffd"


def _encoding_of(ts: str) -> str:
    if ts == IMPLICIT_LE:
        return _ILE
    if ts == EXPLICIT_BE:
        return _EBE
    if ts in (DEFLATED_LE, JPIP_DEFLATE):
        return _DEFL
    return _ELE


def _parse_meta(src: _Source, start: int) -> _Meta:
    """Read the group 0002 elements from start (explicit VR LE, or implicit as a fallback)."""
    meta = _Meta(start=start, end=start)
    pos = start
    size = src.size
    group_length: int | None = None
    meta_body_start = 0
    values: dict[int, bytes] = {}
    implicit = False
    while pos + 8 <= size:
        head = src.read(pos, min(12, size - pos))
        group, elem = _TAG_LE.unpack_from(head, 0)
        if group != 0x0002:
            break
        vr = head[4:6]
        if not implicit and vr in _LONG_VRS:
            if len(head) < 12:
                raise _Bad("truncated", f"file ends inside the File Meta at byte {pos}")
            length = _U32_LE.unpack_from(head, 8)[0]
            vstart = pos + 12
        elif not implicit and vr in _SHORT_VRS:
            length = _U16_LE.unpack_from(head, 6)[0]
            vstart = pos + 8
        else:
            if pos == start:
                implicit = True
            if not implicit:
                raise _Bad("corrupt", f"invalid VR in the File Meta at byte {pos + 4}")
            length = _U32_LE.unpack_from(head, 4)[0]
            vstart = pos + 8
        if length == _UNDEFINED or vstart + length > size:
            raise _Bad("truncated", f"File Meta element at byte {pos} runs past the end")
        value = src.read(vstart, length) if length <= _MAX_KEPT_VALUE else b""
        tag = group << 16 | elem
        values[tag] = value
        if tag == 0x00020000 and length == 4:
            group_length = _U32_LE.unpack(value)[0]
            meta_body_start = vstart + 4
        pos = vstart + length
    meta.end = pos
    if implicit:
        meta.problems.append("File Meta in implicit VR")
    if group_length is None:
        meta.problems.append("no File Meta group length")
    elif meta_body_start + group_length != pos:
        meta.problems.append("wrong File Meta group length")
    for tag, name in ((0x00020001, "version"), (0x00020012, "Implementation Class UID")):
        if tag not in values:
            meta.problems.append(f"no {name}")
    ts = _uid(values.get(0x00020010))
    meta.ts = ts if _UID_RE.match(ts) else ""
    if not meta.ts:
        meta.problems.append("no usable Transfer Syntax UID")
    meta.sop_class = _uid(values.get(0x00020002))
    meta.sop_uid = _uid(values.get(0x00020003))
    return meta


def _sniff_order(src: _Source, pos: int) -> list[str]:
    """Encodings to try for a data set at pos, the likeliest first."""
    head = src.read(pos, min(6, src.size - pos))
    explicit = head[4:6] in _ALL_VRS
    if head[:2] == b"\x00\x08":
        return [_EBE, _ELE, _ILE]
    if explicit:
        return [_ELE, _ILE, _EBE]
    return [_ILE, _ELE, _EBE]


def _looks_like_dataset(src: _Source, pos: int) -> bool:
    """A bare data set opens with group 0008 (SOP Common, Identifying): LE or BE."""
    head = src.read(pos, min(8, src.size - pos))
    return len(head) == 8 and head[:2] in (b"\x08\x00", b"\x00\x08")


def _try_encoding(src: _Source, ds_start: int, enc: str) -> tuple[_Walk, _Source, bytes | None]:
    if enc == _DEFL:
        raw = src.read(ds_start, src.size - ds_start)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(raw) + inflater.flush()
        except zlib.error as exc:
            raise _Bad("corrupt", "deflated data set does not inflate") from exc
        if not inflater.eof:
            raise _Bad("truncated", "deflated data set ends before its end marker")
        inner = _Source(data, len(data))
        walk = _Walk()
        _walk_dataset(inner, 0, len(data), _ELE, 0, walk)
        return walk, inner, data
    walk = _Walk()
    _walk_dataset(src, ds_start, src.size, enc, 0, walk)
    return walk, src, None


def _missing_uids(found: dict[int, bytes]) -> list[str]:
    return [name for tag, name in _REQUIRED_UIDS if not _uid(found.get(tag))]


def _inspect(src: _Source, *, name: str = "", want_dataset: bool = False) -> _Parsed:
    """Find the layout and true encoding of one (already gunzipped) file."""
    size = src.size
    if size == 0:
        raise _Bad("not_dicom", "empty file")
    fixes: list[str] = []
    head = src.read(0, min(132, size))
    meta: _Meta | None = None
    if size >= 132 and head[128:132] == b"DICM":
        meta_at = 132
    elif head[:4] == b"DICM":
        meta_at = 4
        fixes.append("no_preamble")
    elif head[:2] == b"\x02\x00" and size >= 8:
        meta_at = 0
        fixes.append("no_preamble")
    else:
        meta_at = -1
        fixes.append("no_preamble")
    if meta_at >= 0:
        meta = _parse_meta(src, meta_at)
        if meta.end == meta.start:
            meta = None
    if meta is None:
        fixes.append("no_file_meta")
        ds_start = max(meta_at, 0)
        if ds_start >= size:
            raise _Bad("truncated", "file ends before the data set")
        if not _looks_like_dataset(src, ds_start):
            if meta_at < 0:
                raise _Bad("not_dicom", "no DICM prefix and no recognisable data set")
            raise _Bad("corrupt", "DICM prefix but neither File Meta nor a data set after it")
    else:
        ds_start = meta.end
        if meta.sop_class == MEDIA_STORAGE_DIRECTORY or _iso_name(name) == "DICOMDIR":
            return _Parsed(ts=meta.ts, fixes=(), found={}, ds_start=ds_start, dicomdir=True)
        if ds_start >= size:
            raise _Bad("truncated", "file ends after the File Meta")
    declared = meta.ts if meta else ""
    order = _sniff_order(src, ds_start) if ds_start < size else [_ELE]
    if declared:
        first = _encoding_of(declared)
        order = [first] + [e for e in order if e != first]
    first_error: _Bad | None = None
    chosen: tuple[str, _Walk, _Source, bytes | None] | None = None
    for enc in order:
        try:
            walk, inner, data = _try_encoding(src, ds_start, enc)
        except _Bad as bad:
            first_error = first_error or bad
            continue
        if not _missing_uids(walk.found):
            chosen = (enc, walk, inner, data)
            break
        # Structurally clean but without its UIDs: the likeliest reading unless another
        # encoding finds them.
        chosen = chosen or (enc, walk, inner, data)
    if chosen is None:
        assert first_error is not None
        raise first_error
    enc, walk, inner, data = chosen
    missing = _missing_uids(walk.found)
    if missing:
        raise _Bad("missing_uid", "no " + ", no ".join(missing))
    for tag, label in _REQUIRED_UIDS:
        if not _UID_RE.match(_uid(walk.found.get(tag))):
            raise _Bad("corrupt", f"{label} is not a valid UID")
    ts = _true_syntax(declared, enc, walk)
    if not walk.pixels and (T_ROWS in walk.found or _is_image_class(_uid(walk.found[T_SOP_CLASS]))):
        raise _Bad("truncated", "image instance without Pixel Data: the file ends before it")
    if meta is not None:
        if not declared:
            fixes.append("invalid_file_meta")
        elif ts != declared:
            fixes.append("wrong_transfer_syntax_in_meta")
        uids_differ = meta.sop_class != _uid(walk.found[T_SOP_CLASS]) or meta.sop_uid != _uid(
            walk.found[T_SOP_UID]
        )
        if (meta.problems or uids_differ) and "invalid_file_meta" not in fixes:
            fixes.append("invalid_file_meta")
    if enc == _EBE:
        fixes.append("big_endian")
    parsed = _Parsed(ts=ts, fixes=tuple(fixes), found=walk.found, ds_start=ds_start)
    if want_dataset:
        parsed.stored = src.read(ds_start, size - ds_start)
        parsed.dataset = data if data is not None else parsed.stored
    return parsed


def _true_syntax(declared: str, enc: str, walk: _Walk) -> str:
    """The transfer syntax the data set is really in, given the encoding that parsed it."""
    if declared and _encoding_of(declared) == enc and _is_transfer_syntax(declared):
        if declared in _NATIVE or declared == _JPIP_REFERENCED:
            ts = declared
        else:
            # A compressed syntax names how pixels are encoded: native pixels belie it.
            ts = declared if walk.encapsulated or not walk.pixels else EXPLICIT_LE
    else:
        ts = _CANONICAL_TS[enc]
    if walk.encapsulated and enc != _ELE:
        raise _Bad("corrupt", "encapsulated Pixel Data in a data set that is not explicit VR LE")
    if walk.encapsulated and ts in _NATIVE:
        raise _Bad(
            "corrupt",
            "encapsulated Pixel Data, but no compressed transfer syntax names its codec",
        )
    return ts


@lru_cache(maxsize=64)
def _is_transfer_syntax(uid: str) -> bool:
    return bool(UID(uid).is_transfer_syntax)


@lru_cache(maxsize=512)
def _is_image_class(sop_class: str) -> bool:
    try:
        return "Image Storage" in UID(sop_class).name
    except Exception:
        return False


# --- text values ------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _encodings(charset: bytes) -> tuple[str, ...]:
    terms = [t.strip(_WS) for t in charset.decode("latin-1").split("\\")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return tuple(convert_encodings(terms or None))
        except Exception:
            return ("iso8859",)


def _text(found: dict[int, bytes], tag: int, *, pn: bool = False) -> str:
    """Like the C-FIND inventory: stripped text, multiple values joined by backslash.

    Plain ASCII (most values) is decoded here; anything else goes through pydicom's own
    conversion, so names read exactly as pydicom (and a C-FIND SCP built on it) show them.
    """
    raw = found.get(tag)
    if not raw:
        return ""
    if raw.isascii() and b"\x1b" not in raw and not (pn and b"=" in raw):
        text = raw.decode("ascii")
        if "\\" in text:
            return "\\".join(v.strip(_WS) for v in text.split("\\"))
        return text.strip(_WS)
    encodings = list(_encodings(found.get(T_CHARSET, b"")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = convert_PN(raw, encodings) if pn else convert_text(raw, encodings)
        except Exception:
            value = raw.decode("latin-1")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip(_WS) for v in value)
    return str(value).strip(_WS)


# --- one file ---------------------------------------------------------------------------------

# Index rows, also what workers return: (path, size, mtime_ns, kind, data, digest). The data
# of an instance packs its fields (in _FIELDS order) into one string: one column to store and
# load instead of eighteen keeps a re-scan of a large tree quick.
Row = tuple[str, int, int, str, str, "str | None"]
_K_INSTANCE, _K_QUARANTINE, _K_DICOMDIR = "i", "q", "d"
_SEP: Final = "\x1f"
_FIELDS: Final = (
    "sop_uid", "sop_class_uid", "study_uid", "series_uid", "transfer_syntax", "fixes",
    "patient_id", "patient_name", "birth_date", "sex", "study_date", "study_time", "accession",
    "study_description", "modality", "series_number", "series_description", "instance_number",
)  # fmt: skip
# (tag, is a person name) for the text fields after 'fixes', in _FIELDS order.
_TEXT_TAGS: Final = (
    (T_PATIENT_ID, False), (T_PATIENT_NAME, True), (T_BIRTH_DATE, False), (T_SEX, False),
    (T_STUDY_DATE, False), (T_STUDY_TIME, False), (T_ACCESSION, False),
    (T_STUDY_DESC, False), (T_MODALITY, False), (T_SERIES_NUMBER, False),
    (T_SERIES_DESC, False), (T_INSTANCE_NUMBER, False),
)  # fmt: skip


def _quarantine_row(path: str, size: int, mtime_ns: int, reason: str, detail: str) -> Row:
    return (path, size, mtime_ns, _K_QUARANTINE, reason + _SEP + detail, None)


def _open_source(fd: int, size: int) -> tuple[_Source, bool]:
    """The file's bytes, gunzipped when the gzip magic says so."""
    head = os.pread(fd, _HEAD, 0)
    if head[:2] != b"\x1f\x8b":
        return _Source(head, size, fd), False
    raw = head if len(head) >= size else head + _pread_all(fd, len(head), size)
    try:
        data = gzip.decompress(raw)
    except EOFError as exc:
        raise _Bad("truncated", "gzip stream ends before its end marker") from exc
    except (OSError, zlib.error) as exc:
        raise _Bad("corrupt", f"gzip stream is damaged ({type(exc).__name__})") from exc
    return _Source(data, len(data)), True


def _pread_all(fd: int, pos: int, size: int) -> bytes:
    parts = []
    while pos < size:
        chunk = os.pread(fd, min(1 << 24, size - pos), pos)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


def _read_one(path: str) -> Row:
    size = mtime_ns = -1
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            size, mtime_ns = st.st_size, st.st_mtime_ns
            src, gzipped = _open_source(fd, size)
            parsed = _inspect(src, name=os.path.basename(path))
        finally:
            os.close(fd)
    except _Bad as bad:
        return _quarantine_row(path, size, mtime_ns, bad.reason, bad.detail)
    except OSError as exc:
        detail = f"{type(exc).__name__}: {exc.strerror or 'I/O error'}"
        return _quarantine_row(path, size, mtime_ns, "unreadable", detail)
    except Exception as exc:
        # A parser bug on one odd file must not stop the inventory of a million others.
        detail = f"unparseable ({type(exc).__name__})"
        return _quarantine_row(path, size, mtime_ns, "corrupt", detail)
    if parsed.dicomdir:
        return (path, size, mtime_ns, _K_DICOMDIR, "", None)
    f = parsed.found
    fixes = ("gzip",) + parsed.fixes if gzipped else parsed.fixes
    values = [
        _uid(f.get(T_SOP_UID)),
        _uid(f.get(T_SOP_CLASS)),
        _uid(f.get(T_STUDY_UID)),
        _uid(f.get(T_SERIES_UID)),
        parsed.ts,
        " ".join(fixes),
    ]
    values.extend(_text(f, tag, pn=pn) for tag, pn in _TEXT_TAGS)
    data = _SEP.join(values)
    if data.count(_SEP) != len(_FIELDS) - 1:
        # A control character no DICOM text may hold; keep the packing unambiguous.
        data = _SEP.join(v.replace(_SEP, " ") for v in values)
    return (path, size, mtime_ns, _K_INSTANCE, data, None)


def _read_chunk(paths: list[str]) -> list[Row]:
    return [_read_one(p) for p in paths]


# --- full reads: normalisation and digests ---------------------------------------------------


class _Unavailable(InputError):
    """A file that cannot be read now, or is no longer the one indexed: not about its bytes."""


def _load(path: str, size: int, mtime_ns: int) -> tuple[_Parsed, bytes]:
    """Parse a whole file again, refusing it if it is not the one that was indexed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise _Unavailable(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            raise _Unavailable(
                f"{path} changed on disk since it was indexed (size or mtime differ); "
                "re-run the inventory"
            )
        data = _pread_all(fd, 0, size)
    except OSError as exc:
        raise _Unavailable(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)
    try:
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (EOFError, OSError, zlib.error) as exc:
                raise _Bad("corrupt", "gzip stream is damaged") from exc
        parsed = _inspect(_Source(data, len(data)), name=os.path.basename(path), want_dataset=True)
    except _Bad as bad:
        raise InputError(f"{path} is no longer readable as indexed: {bad.reason}") from None
    return parsed, data


def _digest_one(item: tuple[str, int, int]) -> tuple[str, str | None, bool]:
    """(path, digest of its data set or None, whether that answer depends on its bytes only)."""
    path, size, mtime_ns = item
    try:
        parsed, _ = _load(path, size, mtime_ns)
    except _Unavailable:
        return path, None, False
    except InputError:
        return path, None, True
    assert parsed.dataset is not None
    return path, hashlib.sha256(parsed.dataset).hexdigest(), True


def _digest_chunk(items: list[tuple[str, int, int]]) -> list[tuple[str, str | None, bool]]:
    return [_digest_one(i) for i in items]


def _swap(value: bytes, width: int) -> bytes:
    out = bytearray(value)
    n = len(value) - len(value) % width
    for k in range(width):
        out[k:n:width] = value[width - 1 - k : n : width]
    return bytes(out)


def _be_to_le(data: bytes, pos: int, end: int, out: bytearray, depth: int = 0) -> int:
    """Re-encode an explicit VR big endian data set as little endian, value by value."""
    if depth > _MAX_DEPTH:
        raise _Bad("corrupt", "sequences nested too deep")
    bits_allocated = 16
    while pos < end:
        group, elem = _TAG_BE.unpack_from(data, pos)
        tag = group << 16 | elem
        if group == 0xFFFE:
            length = _U32_BE.unpack_from(data, pos + 4)[0]
            out += _ELEM_HDR_LE.pack(group, elem, length)
            pos += 8
            if tag == _ITEM_DELIM:
                return pos
            raise _Bad("corrupt", f"unexpected delimiter at byte {pos - 8}")
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            length = _U32_BE.unpack_from(data, pos + 8)[0]
            out += _TAG_LE.pack(group, elem) + vr + b"\x00\x00" + _U32_LE.pack(length)
            pos += 12
        else:
            length = _U16_BE.unpack_from(data, pos + 6)[0]
            out += _TAG_LE.pack(group, elem) + vr + _U16_LE.pack(length)
            pos += 8
        if vr == b"SQ":
            pos = _be_items(data, pos, length, out, depth)
        elif length == _UNDEFINED:
            # Only UN can be here: CP-246 content is implicit VR LE already, copy it as is.
            src = _Source(data, len(data))
            after = _walk_items(src, pos, _ILE, depth, fragments=False)
            out += data[pos:after]
            pos = after
        else:
            value = data[pos : pos + length]
            width = _SWAP_WIDTH.get(vr)
            if tag == 0x00280100 and length == 2:
                bits_allocated = _U16_BE.unpack(value)[0]
            elif tag == 0x7FE00010 and vr == b"OW" and bits_allocated in (32, 64):
                # Readers (pydicom, GDCM) take OW pixels of 32/64-bit cells as whole
                # big endian cells, not as 16-bit words.
                width = bits_allocated // 8
            out += _swap(value, width) if width else value
            pos += length
    return pos


def _be_items(data: bytes, pos: int, length: int, out: bytearray, depth: int) -> int:
    end = len(data) if length == _UNDEFINED else pos + length
    while pos < end:
        group, elem, item_len = _ELEM_HDR_BE.unpack_from(data, pos)
        tag = group << 16 | elem
        out += _ELEM_HDR_LE.pack(group, elem, item_len)
        pos += 8
        if tag == _SEQ_DELIM:
            return pos
        if tag != _ITEM:
            raise _Bad("corrupt", f"expected an item at byte {pos - 8}")
        if item_len == _UNDEFINED:
            pos = _be_to_le(data, pos, len(data), out, depth + 1)
        else:
            pos = _be_to_le(data, pos, pos + item_len, out, depth + 1)
    return pos


def _file_meta(sop_class: str, sop_uid: str, ts: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PACSMIG_{__version__}"[:16]
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return fp.getvalue()


def normalised_transfer_syntax(instance: FileInstance) -> str:
    """The transfer syntax of read_normalised's bytes: the true one, save big endian."""
    return EXPLICIT_LE if "big_endian" in instance.fixes else instance.transfer_syntax


def read_normalised(instance: FileInstance) -> bytes:
    """The instance as a valid Part 10 byte string: data set bytes kept, File Meta corrected.

    Gunzips, adds the preamble and File Meta a bare data set lacks, rewrites a File Meta that
    names the wrong syntax or UIDs, and transcodes big endian to explicit VR little endian.
    Raises InputError when the file is not the one that was indexed.
    """
    parsed, data = _load(instance.path, instance.size, instance.mtime_ns)
    sop_uid = _uid(parsed.found.get(T_SOP_UID))
    if sop_uid != instance.sop_uid or parsed.ts != instance.transfer_syntax:
        raise InputError(
            f"{instance.path} no longer holds the indexed instance; re-run the inventory"
        )
    assert parsed.stored is not None
    if not parsed.fixes:
        # Nothing to fix (but maybe a gunzip): the file is returned byte for byte.
        return data
    body = parsed.stored
    ts = parsed.ts
    if "big_endian" in parsed.fixes:
        out = bytearray()
        try:
            _be_to_le(body, 0, len(body), out)
        except (_Bad, struct.error) as exc:
            raise InputError(f"{instance.path}: big endian data set cannot be transcoded") from exc
        body = bytes(out)
        ts = EXPLICIT_LE
    meta = _file_meta(_uid(parsed.found[T_SOP_CLASS]), sop_uid, ts)
    return b"\x00" * 128 + b"DICM" + meta + body


# --- tree walk --------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> str:
    """fnmatch-style glob on '/'-separated relative paths; '**' spans directories."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            c = pattern[i]
            i += 1
            if c == "*":
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            elif c == "[":
                j = i
                if j < n and pattern[j] in "!^":
                    j += 1
                if j < n and pattern[j] == "]":
                    j += 1
                while j < n and pattern[j] != "]":
                    j += 1
                if j >= n:
                    out.append(re.escape(c))
                else:
                    body = pattern[i:j].replace("\\", "\\\\")
                    if body[:1] in ("!", "^"):
                        body = "^" + body[1:]
                    out.append(f"[{body}]")
                    i = j + 1
            else:
                out.append(re.escape(c))
    return "".join(out) + r"\Z"


def _matcher(patterns: Sequence[str]) -> Callable[[str], bool] | None:
    """None when every path matches (the common default): no regex per file."""
    pats = [p.lstrip("/") for p in patterns]
    if not pats:
        return lambda _rel: False
    if any(p in ("**", "**/*") for p in pats):
        return None
    regex = re.compile("|".join(f"(?:{_glob_regex(p)})" for p in pats), re.DOTALL)
    return lambda rel: regex.match(rel) is not None


# One folder as the walk saw it: path, digest, then its candidate files' names ('\0'-joined)
# and their sizes and mtime_ns (int64 bytes, or tuples of ints beyond 64 bits).
_Listing = tuple[str, bytes, str, "bytes | tuple[int, ...]", "bytes | tuple[int, ...]"]


class _Tree:
    """The candidate files under the roots, the paths that cannot be read, and a digest of both.

    The digest covers every folder listed (its path, and the names, sizes and mtimes of its
    candidate files) and every problem, in an order that depends neither on how the walk was
    split among processes nor on the order a file system lists a folder in.
    """

    __slots__ = ("_files", "_listings", "_packed", "digest", "problems")

    def __init__(
        self,
        listings: list[_Listing],
        problems: list[QuarantineEntry],
        digests: list[tuple[str, bytes]] | None = None,
        packed: list[bytes] | None = None,
    ) -> None:
        """digests: (folder, digest) of each listing, those of listings still packed too."""
        self._listings = listings
        # Listings from worker processes, still pickled: a re-scan that returns the last
        # result never needs them.
        self._packed = packed or []
        self._files: dict[str, tuple[int, int]] | None = None
        self.problems = problems
        h = hashlib.sha256()
        for _, digest in sorted(digests if digests is not None else _digests(listings)):
            h.update(digest)
        listed = sorted((q.path, q.reason, q.detail) for q in problems)
        h.update(repr(listed).encode("utf-8", "surrogatepass"))
        self.digest = h.hexdigest()

    def files(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every candidate file (made when first asked for)."""
        if self._files is None:
            for blob in self._packed:
                self._listings.extend(_PlainUnpickler(io.BytesIO(blob)).load())
            self._packed = []
            files: dict[str, tuple[int, int]] = {}
            for folder, _, names, sizes, mtimes in self._listings:
                if names:
                    prefix = os.path.join(folder, "")
                    paths = [prefix + name for name in names.split("\0")]
                    files.update(
                        zip(paths, zip(_ints(sizes), _ints(mtimes), strict=True), strict=True)
                    )
            self._files = files
        return self._files


def _digests(listings: list[_Listing]) -> list[tuple[str, bytes]]:
    return [(listing[0], listing[1]) for listing in listings]


def _ints(values: bytes | tuple[int, ...]) -> Sequence[int]:
    return array("q", values) if isinstance(values, bytes) else values


def _listing(folder: str, names: list[str], sizes: list[int], mtimes: list[int]) -> _Listing:
    joined = "\0".join(names)
    packed_sizes: bytes | tuple[int, ...]
    packed_mtimes: bytes | tuple[int, ...]
    try:
        packed_sizes = array("q", sizes).tobytes()
        packed_mtimes = array("q", mtimes).tobytes()
        numbers = b"a" + packed_sizes + packed_mtimes
    except OverflowError:  # beyond 64 bits: from no real file system, but not a crash
        packed_sizes, packed_mtimes = tuple(sizes), tuple(mtimes)
        numbers = b"r" + repr((packed_sizes, packed_mtimes)).encode()
    # Injective: paths and names hold no NUL, and the count says where the numbers start.
    h = hashlib.sha256(os.fsencode(folder))
    h.update(b"\0" + len(names).to_bytes(8, "little") + os.fsencode(joined) + b"\0" + numbers)
    return (folder, h.digest(), joined, packed_sizes, packed_mtimes)


_entry_name = attrgetter("name")
# Listing a folder through its descriptor lets each stat resolve only the name (POSIX).
_SCANDIR_FD: Final = os.scandir in os.supports_fd
_DIR_FLAGS: Final = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


class _Walker:
    """Lists folders: the candidate files of each, and the paths that cannot be read.

    Symbolic links to folders are followed once: a link back up the tree (or into a folder
    already walked) would loop or count files twice. visited holds the (st_dev, st_ino) of
    every folder met; found those this walker added, revisits how often one was met again.
    """

    def __init__(
        self,
        include: Callable[[str], bool] | None,
        exclude: Callable[[str], bool] | None,
        visited: set[tuple[int, int]],
    ) -> None:
        self.include = include
        self.exclude = exclude
        self.visited = visited
        self.found: list[tuple[int, int]] = []
        self.revisits = 0
        self.listings: list[_Listing] = []
        self.problems: list[QuarantineEntry] = []

    def root(self, root: str) -> bool:
        """Whether root is a folder not walked yet (marked walked now)."""
        try:
            st = os.stat(root)
        except OSError as exc:
            self.problems.append(
                QuarantineEntry(path=root, reason="unreadable", detail=f"root: {exc.strerror}")
            )
            return False
        if not stat.S_ISDIR(st.st_mode):
            self.problems.append(
                QuarantineEntry(path=root, reason="unreadable", detail="root is not a folder")
            )
            return False
        return self._first_visit((st.st_dev, st.st_ino))

    def _first_visit(self, key: tuple[int, int]) -> bool:
        if key in self.visited:
            self.revisits += 1
            return False
        self.visited.add(key)
        self.found.append(key)
        return True

    def descend(self, folders: list[tuple[str, str]]) -> None:
        """Walk everything under folders, depth first, in name order."""
        stack = folders[::-1]
        while stack:
            stack.extend(reversed(self.folder(*stack.pop())))

    def folder(self, folder: str, rel_folder: str) -> list[tuple[str, str]]:
        """List one folder: note its candidate files, return its subfolders (path, rel)."""
        fd = -1
        try:
            if _SCANDIR_FD:
                fd = os.open(folder, _DIR_FLAGS)
            try:
                with os.scandir(fd if fd >= 0 else folder) as it:
                    entries = sorted(it, key=_entry_name)
                return self._entries(folder, rel_folder, entries)
            finally:
                if fd >= 0:
                    os.close(fd)
        except OSError as exc:
            self.problems.append(
                QuarantineEntry(
                    path=folder,
                    reason="unreadable",
                    detail=f"folder cannot be listed: {exc.strerror}",
                )
            )
            return []

    def _entries(
        self, folder: str, rel_folder: str, entries: list[os.DirEntry[str]]
    ) -> list[tuple[str, str]]:
        include = self.include
        exclude = self.exclude
        globs = include is not None or exclude is not None
        is_reg = stat.S_ISREG
        prefix = os.path.join(folder, "")
        subfolders: list[tuple[str, str]] = []
        names: list[str] = []
        sizes: list[int] = []
        mtimes: list[int] = []
        # Per-file work is kept minimal: a re-scan of an unchanged tree is mostly this loop.
        for entry in entries:
            name = entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    dst = entry.stat()
                except OSError:
                    continue
                if self._first_visit((dst.st_dev, dst.st_ino)):
                    subfolders.append((prefix + name, rel_folder + name + "/"))
                continue
            if globs:
                rel = rel_folder + name
                if include is not None and not include(rel):
                    continue
                if exclude is not None and exclude(rel):
                    continue
            try:
                fst = entry.stat()
            except OSError as exc:
                detail = "broken symbolic link" if entry.is_symlink() else str(exc.strerror)
                self.problems.append(
                    QuarantineEntry(path=prefix + name, reason="unreadable", detail=detail)
                )
                continue
            if is_reg(fst.st_mode):
                names.append(name)
                sizes.append(fst.st_size)
                mtimes.append(fst.st_mtime_ns)
        self.listings.append(_listing(folder, names, sizes, mtimes))
        return subfolders


def _walk_roots(
    roots: list[str],
    include: Callable[[str], bool] | None,
    exclude: Callable[[str], bool] | None,
) -> _Tree:
    """Every candidate file under roots, walked in order in this process."""
    walker = _Walker(include, exclude, set())
    for root in roots:
        if walker.root(root):
            walker.descend([(root, "")])
    return _Tree(walker.listings, walker.problems)


class _Part(NamedTuple):
    """What a walk task found: its listings pickled, for this process to unpickle if needed."""

    digests: list[tuple[str, bytes]]
    listings: bytes
    problems: list[QuarantineEntry]
    found: list[tuple[int, int]]
    revisits: int


def _walk_part(
    folders: list[tuple[str, str]],
    include: list[str],
    exclude: list[str],
    visited: frozenset[tuple[int, int]],
) -> _Part:
    """A walk task (plain arguments, plain result): everything under folders."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        walker = _Walker(_matcher(include), _matcher(exclude) if exclude else None, set(visited))
        walker.descend(folders)
        listings = pickle.dumps(walker.listings, protocol=pickle.HIGHEST_PROTOCOL)
        digests = _digests(walker.listings)
        return _Part(digests, listings, walker.problems, walker.found, walker.revisits)
    finally:
        if gc_was_enabled:
            gc.enable()


# A walk is split among the workers once this many folders are left to list...
_SPLIT_FOLDERS: Final = 64
# ...found by listing, level by level, at most this many here (a narrow tree is walked here).
_MAIN_FOLDERS: Final = 256
# Several tasks per worker, so that this process can take back those not started yet.
_WALK_TASKS: Final = 16

_T = TypeVar("_T")


def _walk(
    roots: list[str],
    include: Sequence[str],
    exclude: Sequence[str],
    pool: _Pool,
    meanwhile: Callable[[], _T],
) -> tuple[_Tree, _T]:
    """Walk the roots, in worker processes when the tree is large; meanwhile() runs alongside.

    This process lists the first levels of the tree until enough folders are left to share,
    hands them out as tasks, runs meanwhile(), then walks the tasks no worker has started.
    Folders met twice (links, nested roots) make which path lists them depend on the order of
    the walk: then the tree is walked again here, in order, as with a single process.
    """
    include_m = _matcher(include)
    exclude_m = _matcher(exclude) if exclude else None
    if pool.workers <= 1:
        return _walk_roots(roots, include_m, exclude_m), meanwhile()
    main = _Walker(include_m, exclude_m, set())
    level = [(root, "") for root in roots if main.root(root)]
    listed = 0
    while level and len(level) < _SPLIT_FOLDERS and listed + len(level) <= _MAIN_FOLDERS:
        listed += len(level)
        level = [sub for folder in level for sub in main.folder(*folder)]
    tasks: list[list[tuple[str, str]]] = []
    futures: list[Future[_Part]] = []
    visited = frozenset(main.visited)
    if len(level) >= 2:
        n = min(_WALK_TASKS, len(level))
        tasks = [level[i::n] for i in range(n)]
        futures = [pool.submit_walk(task, include, exclude, visited) for task in tasks]
    else:
        main.descend(level)
    extra = meanwhile()
    stolen: dict[int, _Part] = {}
    for i in reversed(range(len(tasks))):
        if futures[i].cancel():
            stolen[i] = _walk_part(tasks[i], list(include), list(exclude), visited)
    parts = [stolen[i] if i in stolen else f.result() for i, f in enumerate(futures)]
    found = set(main.found)
    count = len(main.found)
    revisits = main.revisits
    for part in parts:
        found.update(part.found)
        count += len(part.found)
        revisits += part.revisits
    if revisits or len(found) != count:
        return _walk_roots(roots, include_m, exclude_m), extra
    digests = _digests(main.listings) + [d for part in parts for d in part.digests]
    problems = main.problems + [q for part in parts for q in part.problems]
    packed = [part.listings for part in parts]
    return _Tree(main.listings, problems, digests, packed), extra


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles builtin containers, strings and numbers only: never imports or calls."""

    def find_class(self, module: str, name: str, /) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not expected here")


# --- DICOMDIR ---------------------------------------------------------------------------------


def _dicomdir_refs(path: str) -> list[str]:
    """Referenced File IDs of a DICOMDIR's records, as '/'-joined relative paths."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path, force=True)
    refs: list[str] = []
    for record in ds.get("DirectoryRecordSequence", []):
        value = record.get("ReferencedFileID")
        if value is None or value == "":
            continue
        parts = [value] if isinstance(value, str) else [str(v) for v in value]
        parts = [p.strip(_WS) for p in parts]
        if parts and all(p and p not in (".", "..") and "/" not in p for p in parts):
            refs.append("/".join(parts))
    return sorted(set(refs))


def _iso_name(name: str) -> str:
    """ISO 9660 names as mounted: any case, maybe a ';1' version suffix or a trailing dot."""
    upper = name.upper()
    upper = re.sub(r";\d+\Z", "", upper)
    return upper.rstrip(".")


class _Resolver:
    """Finds a DICOMDIR's referenced files on disk, tolerating how media get mounted."""

    def __init__(self) -> None:
        self._listing: dict[str, dict[str, str]] = {}

    def _names(self, folder: str) -> dict[str, str]:
        names = self._listing.get(folder)
        if names is None:
            names = {}
            try:
                for name in sorted(os.listdir(folder)):
                    names.setdefault(_iso_name(name), name)
            except OSError:
                pass
            self._listing[folder] = names
        return names

    def resolve(self, base: str, ref: str) -> str | None:
        exact = os.path.join(base, *ref.split("/"))
        if os.path.isfile(exact):
            return exact
        folder = base
        for part in ref.split("/"):
            name = self._names(folder).get(_iso_name(part))
            if name is None:
                return None
            folder = os.path.join(folder, name)
        return folder if os.path.isfile(folder) else None


class _Follower:
    """Brings in the files DICOMDIRs reference, and remembers what it found in a digest.

    A later scan that follows the same references to the same (path, size, mtime_ns) and
    misses the same ones gets the same digest.
    """

    def __init__(self, exclude: Callable[[str], bool] | None) -> None:
        self.exclude = exclude
        self.resolver = _Resolver()
        self.missing: set[str] = set()
        self.problems: list[QuarantineEntry] = []
        self.log: list[tuple[str, int, int]] = []

    def follow(
        self,
        dicomdir: str,
        refs: list[str],
        seen: Callable[[str], bool],
        pending: dict[str, tuple[int, int]],
    ) -> None:
        """Add the files dicomdir references, unless seen or already pending, to pending."""
        base = os.path.dirname(dicomdir)
        for ref in refs:
            target = self.resolver.resolve(base, ref)
            if target is None:
                expected = os.path.join(base, *ref.split("/"))
                if expected not in self.missing:
                    self.missing.add(expected)
                    self.problems.append(
                        QuarantineEntry(
                            path=expected,
                            reason="unreadable",
                            detail=f"listed in DICOMDIR {dicomdir} but not found",
                        )
                    )
                continue
            if seen(target) or target in pending:
                continue
            if self.exclude is not None and self.exclude(os.path.relpath(target, base)):
                continue
            try:
                st = os.stat(target)
            except OSError:
                continue
            pending[target] = (st.st_size, st.st_mtime_ns)
            self.log.append((target, st.st_size, st.st_mtime_ns))

    def digest(self) -> str:
        found = (self.log, [(q.path, q.detail) for q in self.problems])
        return hashlib.sha256(repr(found).encode("utf-8", "surrogatepass")).hexdigest()


def _replay(
    dicomdirs: dict[str, list[str]], tree: _Tree, exclude: Callable[[str], bool] | None
) -> str:
    """The follower digest of following, on today's tree, the DICOMDIRs the last scan read.

    Valid when the walk found the same files as then: the DICOMDIRs are those same files.
    Follows them in the order _scan does, so an unchanged tree gives the digest _scan gave.
    """
    follower = _Follower(exclude)
    if not dicomdirs:
        return follower.digest()
    files = tree.files()
    followed: dict[str, tuple[int, int]] = {}

    def seen(path: str) -> bool:
        return path in files or path in followed

    pending = files
    while pending:
        new: dict[str, tuple[int, int]] = {}
        for path in sorted(p for p in dicomdirs if p in pending):
            follower.follow(path, dicomdirs[path], seen, new)
        followed.update(new)
        pending = new
    return follower.digest()


# --- index ------------------------------------------------------------------------------------

# Bump when parsing changes what a row means: older indexes are then read afresh.
_INDEX_VERSION: Final = 4
# Any change to the files table drops the cached result (scan_cache): whatever makes it (an
# older pacsmig, a hand edit), the result is never reused for other rows. scan's own writes
# replace the cached result themselves, so they leave the triggers out while they run.
_CACHE_TRIGGERS: Final = tuple(
    (f"scan_cache_after_{event.lower()}", event) for event in ("INSERT", "UPDATE", "DELETE")
)


def _open_index(index_path: Path) -> sqlite3.Connection:
    index_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = sqlite3.connect(str(index_path), timeout=60, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version != _INDEX_VERSION:
            con.execute("DROP TABLE IF EXISTS files")
            con.execute("DROP TABLE IF EXISTS scan_cache")
            con.execute(f"PRAGMA user_version={_INDEX_VERSION}")
        con.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "mtime_ns INTEGER NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL, digest TEXT) "
            "WITHOUT ROWID"
        )
        # The last scan's result, for a scan that finds the very same files with the same
        # parameters: key names parameters and code, walk the _Tree digest.
        con.execute(
            "CREATE TABLE IF NOT EXISTS scan_cache (id INTEGER PRIMARY KEY CHECK (id = 0), "
            "key TEXT NOT NULL, walk TEXT NOT NULL, result BLOB NOT NULL)"
        )
        _create_triggers(con)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"inventory index {index_path} is unusable: {exc}") from None
    return con


def _create_triggers(con: sqlite3.Connection) -> None:
    # Names and events come from the module constant _CACHE_TRIGGERS, never from input.
    for name, event in _CACHE_TRIGGERS:
        sql = f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON files BEGIN DELETE FROM scan_cache; END"  # noqa: E501  # nosec B608
        con.execute(sql)


def _load_rows(con: sqlite3.Connection) -> dict[str, Row]:
    return {r[0]: r for r in con.execute("SELECT * FROM files")}


def _store(
    con: sqlite3.Connection,
    stale: list[tuple[str]],
    fresh: list[Row],
    cache: tuple[str, str, bytes] | None,
) -> None:
    """Apply a scan's changes to the index and replace the cached result, in one transaction."""
    con.execute("BEGIN")
    try:
        if stale or fresh:
            for name, _ in _CACHE_TRIGGERS:
                con.execute(f"DROP TRIGGER IF EXISTS {name}")
            con.executemany("DELETE FROM files WHERE path = ?", stale)
            con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", fresh)
            _create_triggers(con)
        con.execute("DELETE FROM scan_cache")
        if cache is not None:
            con.execute("INSERT INTO scan_cache VALUES (0, ?, ?, ?)", cache)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


# --- the cached result ------------------------------------------------------------------------

# Bump when the layout _pack writes changes.
_CACHE_FORMAT: Final = 1
_STUDY_FIELDS: Final = tuple(name for name in StudyRecord.__slots__ if name != "series")
# Values unique to each file: not worth looking up to share.
_UNIQUE_FIELDS: Final = frozenset({"path", "size", "mtime_ns", "sop_uid"})


@lru_cache(maxsize=1)
def _code_stamp() -> str:
    """A digest of this module's source: a result made by other code is never reused."""
    try:
        return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    except OSError:
        return ""


def _cache_key(roots: list[str], include: Sequence[str], exclude: Sequence[str]) -> str:
    """What a result depends on besides the files: parameters, code and record layouts.

    pydicom too: a rebuild asks it again to compare conflicting copies (and new DICOMDIRs).
    """
    layouts = [
        FileInstance.__slots__,
        QuarantineEntry.__slots__,
        StudyRecord.__slots__,
        SeriesRecord.__slots__,
    ]
    text = json.dumps(
        [
            _CACHE_FORMAT,
            __version__,
            _INDEX_VERSION,
            _code_stamp(),
            pydicom_version,
            sys.version,
            layouts,
            roots,
            list(include),
            list(exclude),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Cached:
    """The last scan's result, and what it was made from."""

    walk: str  # _Tree.digest
    follow: str  # _Follower.digest
    dicomdirs: dict[str, list[str]]  # DICOMDIR path -> the references it holds
    result: ScanResult


def _load_cache(con: sqlite3.Connection, key: str) -> _Cached | None:
    # One read transaction: the digest and the result come from the same committed scan.
    con.execute("BEGIN")
    try:
        found = con.execute(
            "SELECT walk FROM scan_cache WHERE id = 0 AND key = ?", (key,)
        ).fetchone()
        if found is None:
            return None
        try:
            with con.blobopen("scan_cache", "result", 0, readonly=True) as blob:
                follow, dicomdirs, result = _unpack(_BlobFile(blob))
        except Exception:
            # Damaged: the scan does without it (and replaces it).
            return None
    finally:
        con.execute("COMMIT")
    return _Cached(walk=found[0], follow=follow, dicomdirs=dicomdirs, result=result)


class _BlobFile:
    """An SQLite blob as the file an Unpickler reads: frame by frame, never copied whole."""

    def __init__(self, blob: sqlite3.Blob) -> None:
        self._blob = blob

    def read(self, n: int = -1) -> bytes:
        return self._blob.read(n)

    def readline(self) -> bytes:
        # Only protocol 0 text opcodes read lines; _pack never writes those.
        raise pickle.UnpicklingError("unexpected text opcode in the cached result")


def _columns(objs: Sequence[object], names: Sequence[str], shared: dict[Any, Any]) -> list[Any]:
    """objs taken apart into one encoded column per attribute (see _encode)."""
    return [_encode(list(map(attrgetter(name), objs)), name, shared) for name in names]


def _encode(column: list[Any], name: str, shared: dict[Any, Any]) -> tuple[Any, ...]:
    """A column in the shortest of three forms, all made and read back in C loops.

    ("i", int64 bytes) for integers; ("r", values, int64 run lengths) when equal values come in
    runs (study- and series-level fields: records come grouped by study and series); else
    ("l", values), equal values made one object, which pickle then writes once.
    """
    n = len(column)
    if n and type(column[0]) is int and set(map(type, column)) == {int}:
        try:
            return ("i", array("q", column).tobytes())
        except OverflowError:
            pass
    if name in _UNIQUE_FIELDS:
        return ("l", column)
    starts = [0, *compress(count(1), map(ne, islice(column, 1, None), column))]
    if 2 * len(starts) <= n:
        values = [shared.setdefault(v, v) for v in map(column.__getitem__, starts)]
        lengths = list(map(sub, [*starts[1:], n], starts))
        return ("r", values, array("q", lengths).tobytes())
    return ("l", list(map(shared.setdefault, column, column)))


def _decode(encoded: tuple[Any, ...], n: int) -> Iterable[Any]:
    """The n values of an _encode column, as an iterable (runs are never expanded to a list)."""
    kind = encoded[0]
    if kind == "r":
        values, lengths = encoded[1], array("q", encoded[2])
        if len(values) != len(lengths) or sum(lengths) != n or (lengths and min(lengths) < 0):
            raise ValueError("cached result is damaged")
        return chain.from_iterable(map(repeat, values, lengths))
    column: Sequence[Any] = array("q", encoded[1]) if kind == "i" else encoded[1]
    if kind not in ("i", "l") or len(column) != n:
        raise ValueError("cached result is damaged")
    return column


def _rebuild(cls: type[_T], names: Sequence[str], n: int, columns: list[Any]) -> list[_T]:
    """The n objects _columns took apart, made without __init__ (see _instance), in C loops."""
    if len(columns) != len(names):
        raise ValueError("cached result does not match the record layout")
    objs = list(map(_new, repeat(cls, n)))
    for name, column in zip(names, columns, strict=True):
        deque(map(getattr(cls, name).__set__, objs, _decode(column, n)), maxlen=0)
    return objs


def _split(items: list[_T], counts: list[int]) -> list[list[_T]]:
    out: list[list[_T]] = []
    at = 0
    for n in counts:
        out.append(items[at : at + n])
        at += n
    if at != len(items):
        raise ValueError("cached result is damaged")
    return out


def _pack(result: ScanResult, follow: str, dicomdirs: dict[str, list[str]]) -> bytes:
    """result (files_read aside) as builtin values only, laid out to be rebuilt quickly.

    Records become one column per field: unpickling and refilling 100,000 FileInstances that
    way takes a fraction of what pickling the objects themselves (or parsing rows) costs.
    """
    shared: dict[Any, Any] = {}
    series = [s for study in result.studies for s in study.series]
    instances = [inst for files in result.instances.values() for inst in files]
    payload = (
        _CACHE_FORMAT,
        follow,
        dicomdirs,
        [len(study.series) for study in result.studies],
        _columns(result.studies, _STUDY_FIELDS, shared),
        _columns(series, SeriesRecord.__slots__, shared),
        list(result.instances),
        [len(files) for files in result.instances.values()],
        _columns(instances, FileInstance.__slots__, shared),
        len(result.quarantine),
        _columns(result.quarantine, QuarantineEntry.__slots__, shared),
        result.duplicates,
        result.conflicts,
        result.files_seen,
        result.dicomdirs,
    )
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack(file: _BlobFile | io.BytesIO) -> tuple[str, dict[str, list[str]], ScanResult]:
    (
        layout,
        follow,
        dicomdirs,
        series_counts,
        study_columns,
        series_columns,
        study_uids,
        instance_counts,
        instance_columns,
        quarantined,
        quarantine_columns,
        duplicates,
        conflicts,
        files_seen,
        dicomdir_paths,
    ) = _PlainUnpickler(file).load()
    if layout != _CACHE_FORMAT:
        raise ValueError("cached result has another layout")
    series = _rebuild(SeriesRecord, SeriesRecord.__slots__, sum(series_counts), series_columns)
    studies = _rebuild(StudyRecord, _STUDY_FIELDS, len(series_counts), study_columns)
    set_series = vars(StudyRecord)["series"].__set__
    for study, members in zip(studies, _split(series, series_counts), strict=True):
        set_series(study, tuple(members))
    instances = _rebuild(
        FileInstance, FileInstance.__slots__, sum(instance_counts), instance_columns
    )
    by_study = dict(zip(study_uids, _split(instances, instance_counts), strict=True))
    quarantine = _rebuild(
        QuarantineEntry, QuarantineEntry.__slots__, quarantined, quarantine_columns
    )
    result = ScanResult(
        studies=studies,
        instances=by_study,
        quarantine=quarantine,
        duplicates=duplicates,
        conflicts=conflicts,
        files_seen=files_seen,
        files_read=0,
        dicomdirs=dicomdir_paths,
    )
    return follow, dicomdirs, result


# --- scan -------------------------------------------------------------------------------------


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


class _Pool:
    """Worker processes, started only when there is enough to read to pay for them."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: Executor | None = None

    def map_rows(self, paths: list[str], progress: Callable[[int], None]) -> Iterator[list[Row]]:
        if self.workers <= 1 or len(paths) < 64:
            for chunk in _chunks(paths, 64):
                rows = _read_chunk(chunk)
                progress(len(rows))
                yield rows
            return
        # Chunks big enough to make pickling cheap, small enough to balance the workers.
        size = max(16, min(512, len(paths) // (self.workers * 8) or 1))
        for rows in self._pool().map(_read_chunk, _chunks(paths, size)):
            progress(len(rows))
            yield rows

    def submit_walk(
        self,
        folders: list[tuple[str, str]],
        include: Sequence[str],
        exclude: Sequence[str],
        visited: frozenset[tuple[int, int]],
    ) -> Future[_Part]:
        return self._pool().submit(_walk_part, folders, list(include), list(exclude), visited)

    def digests(self, items: list[tuple[str, int, int]]) -> list[tuple[str, str | None, bool]]:
        if self.workers <= 1 or len(items) < 16:
            return _digest_chunk(items)
        size = max(4, min(64, len(items) // (self.workers * 4) or 1))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        return [d for part in self._pool().map(_digest_chunk, chunks) for d in part]

    def _pool(self) -> Executor:
        if self._executor is None:
            methods = multiprocessing.get_all_start_methods()
            # fork starts workers at once with everything imported and needs no import of
            # the caller's __main__; but forking a threaded process can leave a child stuck
            # on a lock another thread held, so threaded callers get a clean forkserver.
            if "fork" in methods and threading.active_count() == 1:
                method = "fork"
            elif "forkserver" in methods:
                method = "forkserver"
            else:
                method = "spawn"
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context(method),
                # A forked worker inherits scan()'s disabled collector; a damaged file leaves
                # an exception-traceback cycle behind, so workers collect as usual.
                initializer=gc.enable,
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def scan(
    roots: Sequence[Path],
    *,
    include: Sequence[str] = ("**/*",),
    exclude: Sequence[str] = (),
    index_path: Path,
    workers: int | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Inventory the files under roots (see the module docstring).

    include/exclude are globs on the path relative to its root ('/'-separated, case
    sensitive, '**' for any depth). Files a DICOMDIR references are read even where include
    would skip them; exclude still applies. The index mirrors the last scan: rows of files no
    longer seen are dropped. workers defaults to the CPU count; progress(done, total) is
    called as files are read.

    The index also keeps the last result. A scan that finds exactly the files the last one
    did (every path, size and mtime_ns, and every problem, with the same parameters and code)
    returns it instead of rebuilding it from the rows: the same value, built faster.
    """
    abs_roots = [os.path.abspath(r) for r in roots]
    # Hundreds of thousands of long-lived rows and records: generational collection passes
    # over them cost more than the whole re-scan of an unchanged tree, and free nothing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    pool = _Pool(workers if workers is not None else (os.cpu_count() or 1))
    try:
        con = _open_index(index_path)
        try:
            key = _cache_key(abs_roots, include, exclude)

            def meanwhile() -> _Loaded:
                # While workers walk: the last result if it was made with these parameters,
                # else the index rows and the records they make.
                cached = _load_cache(con, key)
                if cached is not None:
                    return _Loaded(cached, None, {})
                known = _load_rows(con)
                built = {p: _instance(r) for p, r in known.items() if r[3] == _K_INSTANCE}
                return _Loaded(None, known, built)

            tree, loaded = _walk(abs_roots, include, exclude, pool, meanwhile)
            exclude_m = _matcher(exclude) if exclude else None
            cached = loaded.cached
            built = loaded.built
            if cached is not None:
                if cached.walk == tree.digest and cached.follow == _replay(
                    cached.dicomdirs, tree, exclude_m
                ):
                    return cached.result
                built = {i.path: i for files in cached.result.instances.values() for i in files}
            known = loaded.known if loaded.known is not None else _load_rows(con)
            outcome = _scan(tree, known, built, pool, exclude_m, progress)
            cache = None
            if outcome.follow is not None:
                packed = _pack(outcome.result, outcome.follow, outcome.dicomdirs)
                # Beyond what SQLite stores in one value (1 GB by default): not kept.
                if len(packed) < con.getlimit(sqlite3.SQLITE_LIMIT_LENGTH):
                    cache = (key, tree.digest, packed)
            _store(con, outcome.stale, outcome.fresh, cache)
            return outcome.result
        finally:
            con.close()
    finally:
        pool.close()
        if gc_was_enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class _Loaded:
    cached: _Cached | None
    known: dict[str, Row] | None
    built: dict[str, FileInstance]


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: ScanResult
    fresh: list[Row]
    stale: list[tuple[str]]
    # The follower digest, None when the result must not be reused: a file changed while it
    # was read, or could not be read for a digest or comparison (which may work next time).
    follow: str | None
    dicomdirs: dict[str, list[str]]


def _scan(
    tree: _Tree,
    known: dict[str, Row],
    built: dict[str, FileInstance],
    pool: _Pool,
    exclude: Callable[[str], bool] | None,
    progress: Progress | None,
) -> _Outcome:
    rows: dict[str, Row] = {}
    fresh: list[Row] = []
    counter = _Counter(progress)
    follower = _Follower(exclude)
    dicomdirs: dict[str, list[str]] = {}
    # Whether every row holds the size and mtime_ns the walk saw (what the digests cover).
    steady = True
    pending = tree.files()
    while pending:
        todo: list[str] = []
        for path, key in pending.items():
            row = known.get(path)
            if row is not None and (row[1], row[2]) == key:
                rows[path] = row
            else:
                todo.append(path)
        counter.total += len(todo)
        for chunk_rows in pool.map_rows(todo, counter.tick):
            for row in chunk_rows:
                rows[row[0]] = row
                fresh.append(row)
                if (row[1], row[2]) != pending[row[0]]:
                    steady = False
        # DICOMDIRs name their files: read those even where the include globs would not.
        new: dict[str, tuple[int, int]] = {}
        for path in sorted(p for p in pending if rows[p][3] == _K_DICOMDIR):
            row = rows[path]
            if not row[4]:
                try:
                    refs = _dicomdir_refs(path)
                except Exception as exc:
                    detail = f"DICOMDIR unreadable ({type(exc).__name__})"
                    row = _quarantine_row(path, row[1], row[2], "corrupt", detail)
                    rows[path] = row
                    fresh.append(row)
                    continue
                row = (path, row[1], row[2], _K_DICOMDIR, json.dumps(refs), None)
                rows[path] = row
                fresh.append(row)
            dicomdirs[path] = json.loads(row[4])
            follower.follow(path, dicomdirs[path], rows.__contains__, new)
        pending = new

    # Byte identity needs full reads: only for SOP UIDs found in more than one file.
    by_sop: dict[str, list[str]] = {}
    for path, row in rows.items():
        if row[3] == _K_INSTANCE:
            by_sop.setdefault(row[4][: row[4].find(_SEP)], []).append(path)
    need = [
        (p, rows[p][1], rows[p][2])
        for paths in by_sop.values()
        if len(paths) > 1
        for p in paths
        if rows[p][5] is None
    ]
    for path, digest, settled in pool.digests(need):
        steady = steady and settled
        if digest is None:
            continue
        row = (*rows[path][:5], digest)
        rows[path] = row
        fresh.append(row)

    stale = [(p,) for p in known if p not in rows]
    problems = tree.problems + follower.problems
    result, certain = _assemble(rows, by_sop, problems, counter.done, built)
    follow = follower.digest() if steady and certain else None
    return _Outcome(result, fresh, stale, follow, dicomdirs)


class _Counter:
    """Files read so far, against files to read (which grows as DICOMDIRs are followed)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.done = 0
        self.total = 0

    def tick(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


def _instance(row: Row) -> FileInstance:
    """The record of an index row.

    A re-scan builds one per file, so this skips the generated __init__ (21 keyword arguments,
    21 writes through the frozen class's object.__setattr__) and fills the slots directly:
    the largest single cost of re-scanning an unchanged tree drops by about half. The values
    come from this module's own rows, in _FIELDS order.
    """
    f = row[4].split(_SEP)
    if len(f) != len(_FIELDS):
        raise InputError(f"inventory index row for {row[0]} is damaged; delete the index")
    inst = _new(FileInstance)
    _s_path(inst, row[0])
    _s_size(inst, row[1])
    _s_mtime_ns(inst, row[2])
    _s_sop_uid(inst, f[0])
    _s_sop_class_uid(inst, f[1])
    _s_study_uid(inst, f[2])
    _s_series_uid(inst, f[3])
    _s_transfer_syntax(inst, f[4])
    _s_fixes(inst, tuple(f[5].split()) if f[5] else ())
    _s_patient_id(inst, f[6])
    _s_patient_name(inst, f[7])
    _s_birth_date(inst, f[8])
    _s_sex(inst, f[9])
    _s_study_date(inst, f[10])
    _s_study_time(inst, f[11])
    _s_accession(inst, f[12])
    _s_study_description(inst, f[13])
    _s_modality(inst, f[14])
    _s_series_number(inst, f[15])
    _s_series_description(inst, f[16])
    _s_instance_number(inst, f[17])
    return inst


_new = object.__new__
_SLOT_SETTERS: Final = {
    name: getattr(FileInstance, name).__set__ for name in FileInstance.__slots__
}
if tuple(FileInstance.__slots__) != ("path", "size", "mtime_ns", *_FIELDS):
    # _instance sets every slot by name: a field added to one list must go to the other.
    raise RuntimeError("FileInstance fields and the index row layout disagree")
_s_path = _SLOT_SETTERS["path"]
_s_size = _SLOT_SETTERS["size"]
_s_mtime_ns = _SLOT_SETTERS["mtime_ns"]
_s_sop_uid = _SLOT_SETTERS["sop_uid"]
_s_sop_class_uid = _SLOT_SETTERS["sop_class_uid"]
_s_study_uid = _SLOT_SETTERS["study_uid"]
_s_series_uid = _SLOT_SETTERS["series_uid"]
_s_transfer_syntax = _SLOT_SETTERS["transfer_syntax"]
_s_fixes = _SLOT_SETTERS["fixes"]
_s_patient_id = _SLOT_SETTERS["patient_id"]
_s_patient_name = _SLOT_SETTERS["patient_name"]
_s_birth_date = _SLOT_SETTERS["birth_date"]
_s_sex = _SLOT_SETTERS["sex"]
_s_study_date = _SLOT_SETTERS["study_date"]
_s_study_time = _SLOT_SETTERS["study_time"]
_s_accession = _SLOT_SETTERS["accession"]
_s_study_description = _SLOT_SETTERS["study_description"]
_s_modality = _SLOT_SETTERS["modality"]
_s_series_number = _SLOT_SETTERS["series_number"]
_s_series_description = _SLOT_SETTERS["series_description"]
_s_instance_number = _SLOT_SETTERS["instance_number"]


def _same_content(a: FileInstance, b: FileInstance) -> bool | None:
    """Whether two files hold the same data elements, whatever their encoding.

    Group lengths and trailing padding say nothing about the content, so they are ignored.
    None when a file cannot be read now (or changed): not the same now, maybe next time.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            da = dcmread(io.BytesIO(read_normalised(a)))
            db = dcmread(io.BytesIO(read_normalised(b)))
            for ds in (da, db):
                for tag in [e.tag for e in ds if e.tag.element == 0 or e.tag == 0xFFFCFFFC]:
                    del ds[tag]
            return bool(da == db)
    except _Unavailable:
        return None
    except Exception:
        # Unreadable by pydicom: not provably the same, so the study is held.
        return False


def _assemble(
    rows: dict[str, Row],
    by_sop: dict[str, list[str]],
    problems: list[QuarantineEntry],
    files_read: int,
    built: dict[str, FileInstance],
) -> tuple[ScanResult, bool]:
    """The result, and whether it holds for as long as the files do not change."""

    def instance(path: str) -> FileInstance:
        row = rows[path]
        inst = built.get(path)
        if inst is not None and inst.size == row[1] and inst.mtime_ns == row[2]:
            return inst
        return _instance(row)

    quarantine = list(problems)
    dicomdirs: list[str] = []
    duplicates: list[tuple[str, str, str]] = []
    conflicts: dict[str, list[str]] = {}
    kept: list[FileInstance] = []
    # Patient IDs of the copies not kept; the kept files' own are added per study below.
    copy_pids: dict[str, set[str]] = {}
    certain = True
    for sop, paths in by_sop.items():
        if len(paths) == 1:
            # The common case, inlined: one call per file costs a tenth of a re-scan.
            path = paths[0]
            row = rows[path]
            inst = built.get(path)
            if inst is None or inst.size != row[1] or inst.mtime_ns != row[2]:
                inst = _instance(row)
            kept.append(inst)
            continue
        paths.sort()
        first = instance(paths[0])
        kept.append(first)
        for other_path in paths[1:]:
            other = instance(other_path)
            copy_pids.setdefault(other.study_uid, set()).add(other.patient_id)
            d1, d2 = rows[first.path][5], rows[other_path][5]
            if d1 is not None and d1 == d2:
                duplicates.append((sop, first.path, other_path))
                continue
            same = _same_content(first, other)
            if same is None:
                certain = False
            elif same:
                duplicates.append((sop, first.path, other_path))
                continue
            text = (
                f"SOP Instance UID {sop} is in {first.path} and {other_path} with different content"
            )
            for study in dict.fromkeys((first.study_uid, other.study_uid)):
                conflicts.setdefault(study, []).append(text)
            quarantine.append(
                QuarantineEntry(
                    path=other_path,
                    reason="duplicate_conflict",
                    detail=f"same SOP Instance UID as {first.path}, different content",
                )
            )
    for path, row in rows.items():
        if row[3] == _K_DICOMDIR:
            dicomdirs.append(path)
        elif row[3] == _K_QUARANTINE:
            reason, _, detail = row[4].partition(_SEP)
            quarantine.append(QuarantineEntry(path=path, reason=reason, detail=detail))

    kept.sort(key=_path_of)
    instances: dict[str, list[FileInstance]] = {}
    for inst in kept:
        study_files = instances.get(inst.study_uid)
        if study_files is None:
            instances[inst.study_uid] = [inst]
        else:
            study_files.append(inst)
    studies = [
        _study_record(uid, instances[uid], copy_pids.get(uid, set())) for uid in sorted(instances)
    ]
    quarantine.sort(key=lambda q: (q.path, q.reason))
    duplicates.sort()
    for texts in conflicts.values():
        texts.sort()
    result = ScanResult(
        studies=studies,
        instances=instances,
        quarantine=quarantine,
        duplicates=duplicates,
        conflicts=dict(sorted(conflicts.items())),
        files_seen=len(kept) + len(duplicates) + len(quarantine) + len(dicomdirs),
        files_read=files_read,
        dicomdirs=sorted(dicomdirs),
    )
    return result, certain


def _path_of(inst: FileInstance) -> str:
    return inst.path


def _study_record(uid: str, files: list[FileInstance], copy_pids: set[str]) -> StudyRecord:
    """A study as C-FIND would report it; study-level values from its first file by path.

    Patient IDs come from every file naming the study, copies not kept included.
    """
    first = files[0]
    pids = set(copy_pids)
    series: dict[str, list[FileInstance]] = {}
    for inst in files:
        pids.add(inst.patient_id)
        members = series.get(inst.series_uid)
        if members is None:
            series[inst.series_uid] = [inst]
        else:
            members.append(inst)
    records = tuple(
        SeriesRecord(
            series_uid=s_uid,
            modality=members[0].modality,
            series_number=members[0].series_number,
            description=members[0].series_description,
            instance_count=len(members),
        )
        for s_uid, members in sorted(series.items())
    )
    ids = sorted(pids)
    return StudyRecord(
        study_uid=uid,
        patient_id=first.patient_id,
        patient_name=first.patient_name,
        birth_date=first.birth_date,
        sex=first.sex,
        study_date=first.study_date,
        study_time=first.study_time,
        accession=first.accession,
        modalities=tuple(sorted({s.modality for s in records if s.modality})),
        description=first.study_description,
        series=records,
        other_patient_ids=tuple(ids) if len(ids) > 1 else (),
    )
