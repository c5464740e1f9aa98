"""Transfer syntax conversion on the way to the destination (PS3.5 section 8, Annex A).

Pure: bytes in, bytes out, no network. ``choose_syntax`` decides which of the syntaxes a
destination accepted an instance travels in; ``transcode`` re-encodes a Part 10 instance into
that syntax.

What changes, and what never does
    Only the Pixel Data element, the File Meta Transfer Syntax UID and the Image Pixel
    elements that describe the encoding of the pixels change: Photometric Interpretation where
    a codec's colour transform is undone (JPEG 2000 YBR_RCT/YBR_ICT decode to RGB; JPEG
    YBR_FULL_422 decodes to full-resolution YBR_FULL), Planar Configuration where the decoded
    layout differs, and the Extended Offset Table elements, which describe fragments. The SOP
    Instance UID, SOP Class and every other element are kept: pydicom 3's ``compress`` and
    ``decompress`` mint a new SOP Instance UID unless told not to, and a migration that
    renamed instances would break idempotent re-runs and every reference to them.

Lossless paths are checked
    After encoding into a lossless syntax the output is decoded again and compared with the
    decoded input, sample for sample; a difference raises ``TranscodeError`` (and the sender
    tries the next syntax) instead of sending an image that is not the one the source held.

Lossy
    Only with an explicit ``LossyPolicy`` for the destination, and only into JPEG 2000
    (quality = compression ratio) or JPEG-LS near-lossless (quality = NEAR, the largest error
    per sample). The instance then gets Lossy Image Compression "01" and one more value of
    Lossy Image Compression Ratio and Method (PS3.3 C.7.6.1.1.5). The SOP Instance UID is
    kept even so, although PS3.3 would have a lossy derivative be a new instance: the policy
    replaces the original at the destination rather than adding a derivative next to it, the
    plan, journal and verify track instances by that UID, and a new UID per run would store a
    second copy on every resume.

A lossy-stored image (JPEG baseline, ...) may be decoded to an uncompressed syntax (lossless
from here on; Lossy Image Compression stays, or becomes, "01"), never re-encoded into a
lossless compressed syntax, which would present it as a lossless original.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.pixels.utils import compress, decompress
from pydicom.pixels.utils import pixel_array as decode_pixels
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from pacsmig.errors import PacsmigError
from pacsmig.spec.model import LossyPolicy

__all__ = [
    "DEFAULT_J2K_RATIO",
    "DEFAULT_JLS_NEAR",
    "LOSSY_TARGETS",
    "TranscodeError",
    "choose_syntax",
    "is_lossless",
    "producible",
    "syntax_candidates",
    "transcode",
    "wanted_syntaxes",
]

# Syntaxes whose encoding is lossless by definition. Anything else (JPEG baseline, JPEG 2000
# and HTJ2K "lossy or lossless", JPEG-LS near-lossless, MPEG, unknown private syntaxes) is
# treated as possibly lossy: never chosen as a conversion target without a policy.
_LOSSLESS = frozenset(
    {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEG2000Lossless,
        JPEG2000MCLossless,
        RLELossless,
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
    }
)
# DCT-based JPEG can never be lossless: decoding it records the loss if nothing did.
_ALWAYS_LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
_UNCOMPRESSED_TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Fallback order when the stored syntax is refused: JPEG 2000 is the codec archives accept
# most widely, RLE the least efficient.
_COMPRESSED_TARGETS = (JPEG2000Lossless, JPEGLSLossless, RLELossless)
LOSSY_TARGETS = frozenset({JPEG2000, JPEGLSNearLossless})
_METHOD = {JPEG2000: "ISO_15444_1", JPEGLSNearLossless: "ISO_14495_1"}
_ALWAYS_LOSSY_METHOD = {JPEGBaseline8Bit: "ISO_10918_1", JPEGExtended12Bit: "ISO_10918_1"}

DEFAULT_J2K_RATIO = 10  # when the policy names JPEG 2000 without a quality
DEFAULT_JLS_NEAR = 2  # when the policy names JPEG-LS near-lossless without a quality

_PARTIAL = ("YBR_PARTIAL_422", "YBR_PARTIAL_420")
_OFFSET_TABLES = (0x7FE00001, 0x7FE00002, 0x7FE00003)  # describe fragments, not pixels


class TranscodeError(PacsmigError):
    """The pixel data cannot be decoded, or cannot be encoded in the requested syntax."""


def is_lossless(syntax: str) -> bool:
    """True for transfer syntaxes that cannot lose information."""
    return str(syntax) in _LOSSLESS


@functools.cache
def _decodable(syntax: str) -> bool:
    uid = UID(syntax)
    if not uid.is_transfer_syntax:
        return False  # a private or unknown syntax: no codec knows it
    if not uid.is_compressed:
        return True
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:
        return False


@functools.cache
def _encodable(syntax: str) -> bool:
    try:
        return bool(get_encoder(UID(syntax)).is_available)
    except NotImplementedError:
        return False


@functools.cache
def producible(stored: str) -> tuple[str, ...]:
    """Lossless syntaxes pacsmig can convert an instance stored in `stored` into.

    Only uncompressed ones for a lossy-stored instance; nothing when its pixel data cannot
    be decoded here. Whether one instance's pixels fit a codec is known only when it is tried.
    """
    if not _decodable(stored):
        return ()
    out = [ts for ts in _UNCOMPRESSED_TARGETS if ts != stored]
    if is_lossless(stored):
        out += [ts for ts in _COMPRESSED_TARGETS if ts != stored and _encodable(ts)]
    return tuple(str(ts) for ts in out)


def syntax_candidates(
    stored: str,
    accepted: Collection[str],
    *,
    preferred: Sequence[str] = (),
    lossy: LossyPolicy | None = None,
) -> list[str]:
    """Every accepted syntax the instance may travel in, best first (see ``choose_syntax``).

    The sender tries them in turn: a codec may refuse one instance's pixels (bit depth,
    colour model) where the next syntax takes them.
    """
    ok = {str(ts) for ts in accepted}
    return _candidates(str(stored), ok.__contains__, preferred, lossy)


def wanted_syntaxes(
    stored: str, *, preferred: Sequence[str] = (), lossy: LossyPolicy | None = None
) -> list[str]:
    """Every syntax an instance stored in `stored` could travel in, best first.

    What to propose to the destination: ``syntax_candidates`` of a destination that accepts
    everything.
    """
    return _candidates(str(stored), lambda ts: True, preferred, lossy)


def _candidates(
    stored: str,
    accepts: Callable[[str], bool],
    preferred: Sequence[str],
    lossy: LossyPolicy | None,
) -> list[str]:
    can_make = producible(stored)
    out: list[str] = []

    def add(ts: str) -> None:
        if ts not in out and accepts(ts):
            out.append(ts)

    if lossy is not None and is_lossless(stored):
        target = str(lossy.syntax)
        # A lossy-stored image keeps its own compression: a second lossy generation would
        # only add error. The policy applies to lossless originals.
        if target == stored or (
            target in LOSSY_TARGETS and _decodable(stored) and _encodable(target)
        ):
            add(target)
    for ts in map(str, preferred):
        if ts == stored or (is_lossless(ts) and ts in can_make):
            add(ts)
    add(stored)
    for ts in can_make:
        add(ts)
    if lossy is not None and not is_lossless(stored) and _decodable(stored):
        # Last resort for a lossy original the destination takes in no other form.
        target = str(lossy.syntax)
        if target in LOSSY_TARGETS and _encodable(target):
            add(target)
    return out


def choose_syntax(
    stored: str,
    accepted: Collection[str],
    *,
    preferred: Sequence[str] = (),
    lossy: LossyPolicy | None = None,
) -> str | None:
    """The transfer syntax to send an instance stored in `stored` in, or None if none fits.

    In order: the policy's lossy syntax, if a policy is given, the destination accepted it
    and the original is lossless; the first of `preferred` that was accepted (lossless
    syntaxes only; a lossy-stored image only into an uncompressed one); the stored syntax;
    explicit then implicit VR little endian; a lossless compressed syntax pacsmig can encode
    (never for a lossy-stored image). A lossy syntax other than the stored one is returned
    only with a policy.
    """
    found = syntax_candidates(stored, accepted, preferred=preferred, lossy=lossy)
    return found[0] if found else None


# -- transcoding ----------------------------------------------------------------------------


def transcode(data: bytes, target: str, *, lossy: LossyPolicy | None = None) -> bytes:
    """Return the Part 10 instance `data` re-encoded in transfer syntax `target`.

    Raises TranscodeError (one line, no patient data) when the pixel data cannot be decoded,
    does not fit the target's codec, or a lossless result does not decode to the same pixels.
    A lossy `target` needs a `lossy` policy naming it.
    """
    target_uid = UID(str(target))
    ds = _read(data)
    stored = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if target_uid == stored:
        return data
    if not stored.is_transfer_syntax:
        raise TranscodeError(f"unknown stored transfer syntax {stored}")
    name = _name(target_uid)
    if target_uid in LOSSY_TARGETS:
        if lossy is None or UID(lossy.syntax) != target_uid:
            raise TranscodeError(f"lossy {name} needs a lossy policy for the destination")
    elif target_uid not in _UNCOMPRESSED_TARGETS and target_uid not in _COMPRESSED_TARGETS:
        raise TranscodeError(f"cannot encode {name}")
    elif not is_lossless(stored) and target_uid not in _UNCOMPRESSED_TARGETS:
        raise TranscodeError(f"a lossy {_name(stored)} image is not re-encoded as {name}")
    if target_uid.is_compressed and not _encodable(target_uid):
        raise TranscodeError(f"no encoder for {name} is installed")
    if stored == ExplicitVRBigEndian:
        data = _little_endian(data)
        ds = _read(data)
        stored = ExplicitVRLittleEndian
        if target_uid == stored:
            return data
    if "PixelData" not in ds:
        if target_uid.is_compressed:
            raise TranscodeError(f"no Pixel Data to encode as {name}")
        return _write(ds, target_uid)
    if stored.is_compressed:
        _decode(ds, stored)
    if not target_uid.is_compressed:
        return _write(ds, target_uid)
    reference = _pixels(ds, "the pixel data")
    _encode(ds, target_uid, lossy, reference)
    out = _write(ds, target_uid)
    _check(out, reference, target_uid, lossy)
    return out


def _name(uid: UID) -> str:
    return f"{uid.name} ({uid})" if uid.name != uid else str(uid)


def _read(data: bytes) -> FileDataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(data))
    except Exception as exc:
        raise TranscodeError(f"not a readable Part 10 instance ({type(exc).__name__})") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        raise TranscodeError("the File Meta names no transfer syntax")
    return ds


def _write(ds: Dataset, target: UID) -> bytes:
    ds.file_meta.TransferSyntaxUID = target
    # Part 10 requires these; some files lack them and pydicom refuses to write without.
    if "MediaStorageSOPClassUID" not in ds.file_meta and "SOPClassUID" in ds:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "MediaStorageSOPInstanceUID" not in ds.file_meta and "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for tag in _OFFSET_TABLES:
        if not target.is_compressed and tag in ds:
            del ds[tag]
    buffer = io.BytesIO()
    try:
        ds.save_as(
            buffer,
            implicit_vr=target.is_implicit_VR,
            little_endian=True,
            enforce_file_format=True,
        )
    except Exception as exc:
        raise TranscodeError(
            f"cannot write the instance as {_name(target)} ({type(exc).__name__})"
        ) from exc
    return buffer.getvalue()


def _decode(ds: Dataset, stored: UID) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # as_rgb=False: no colour conversion of our own (it rounds); a codec's own
            # reversible transform (JPEG 2000 RCT) is still undone, as it must be.
            decompress(ds, as_rgb=False, generate_instance_uid=False)
    except Exception as exc:
        raise TranscodeError(
            f"cannot decode {_name(stored)} pixel data ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    for tag in _OFFSET_TABLES:
        if tag in ds:
            del ds[tag]
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "YBR_FULL_422" and _full_size(ds):
        # pydicom returns JPEG's chroma upsampled but leaves the subsampled label; the
        # samples are full resolution YCbCr now, which is what YBR_FULL means.
        ds.PhotometricInterpretation = "YBR_FULL"
    elif photometric in _PARTIAL and _full_size(ds):
        # Upsampled limited-range YCbCr has no uncompressed Photometric Interpretation.
        raise TranscodeError(f"decoded {photometric} pixels cannot be labelled uncompressed")
    if stored in _ALWAYS_LOSSY and ds.get("LossyImageCompression") != "01":
        # Without this, the uncompressed copy would look like a lossless original (PS3.3
        # C.7.6.1.1.5: once 01, never reset).
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = _ALWAYS_LOSSY_METHOD[stored]


def _full_size(ds: Dataset) -> bool:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = ds.Rows * ds.Columns * ds.SamplesPerPixel * frames * (ds.BitsAllocated // 8)
    return len(ds.PixelData) in (expected, expected + 1)


def _pixels(ds: Dataset, what: str) -> np.ndarray[Any, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return decode_pixels(ds, as_rgb=False)
    except Exception as exc:
        raise TranscodeError(
            f"cannot decode {what} ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc


def _encode(
    ds: Dataset, target: UID, lossy: LossyPolicy | None, reference: np.ndarray[Any, Any]
) -> None:
    options: dict[str, Any] = {}
    if target == JPEG2000:
        assert lossy is not None
        options["j2k_cr"] = [float(lossy.quality or DEFAULT_J2K_RATIO)]
    elif target == JPEGLSNearLossless:
        assert lossy is not None
        options["jls_error"] = int(lossy.quality if lossy.quality is not None else DEFAULT_JLS_NEAR)
    raw_length = reference.size * reference.dtype.itemsize
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        # The decoded array is colour-by-pixel whatever the input was, and PS3.5 section 8
        # has every codec's Planar Configuration be 0 (encoding from a colour-by-plane buffer
        # gave wrong RLE here: the check below caught it).
        ds.PlanarConfiguration = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compress(ds, target, reference, generate_instance_uid=False, **options)
    except Exception as exc:
        raise TranscodeError(
            f"cannot encode these pixels as {_name(target)} ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        ) from exc
    if target in LOSSY_TARGETS:
        ratio = raw_length / max(1, len(ds.PixelData))
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = [*_values(ds, "LossyImageCompressionRatio"), f"{ratio:.2f}"]
        ds.LossyImageCompressionMethod = [
            *_values(ds, "LossyImageCompressionMethod"),
            _METHOD[target],
        ]


def _values(ds: Dataset, keyword: str) -> list[Any]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _check(
    out: bytes, reference: np.ndarray[Any, Any], target: UID, lossy: LossyPolicy | None
) -> None:
    got = _pixels(_read(out), f"the {_name(target)} result")
    if got.shape != reference.shape:
        raise TranscodeError(f"{_name(target)} result has another shape than the input")
    if target == JPEG2000:
        return  # the policy allowed the loss; its ratio is recorded in the instance
    if target == JPEGLSNearLossless:
        assert lossy is not None
        near = lossy.quality if lossy.quality is not None else DEFAULT_JLS_NEAR
        error = np.abs(got.astype(np.int64) - reference.astype(np.int64)).max(initial=0)
        if error > near:
            raise TranscodeError(f"{_name(target)} result differs by {error}, more than {near}")
        return
    if not np.array_equal(got, reference):
        raise TranscodeError(f"{_name(target)} result does not decode to the same pixels")


def _little_endian(data: bytes) -> bytes:
    # The inventory's value-by-value big endian rewrite (swapping by VR) is the one place
    # that knows how; pydicom refuses to change byte order on writing.
    from pacsmig.inventory.files import _Bad, _be_to_le

    if len(data) < 144 or data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise TranscodeError("big endian instance without a File Meta group length")
    meta_end = 144 + struct.unpack_from("<I", data, 140)[0]
    ds = _read(data)
    body = bytearray()
    try:
        _be_to_le(data, meta_end, len(data), body)
    except (_Bad, struct.error, IndexError) as exc:
        raise TranscodeError("big endian data set cannot be converted") from exc
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta = DicomBytesIO()
    meta.is_little_endian = True
    meta.is_implicit_VR = False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    return data[:128] + b"DICM" + meta.getvalue() + bytes(body)


def _first_line(exc: BaseException) -> str:
    # pydicom puts each plugin's reason on a line of its own after a general first line.
    text = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
    return text[:200]
