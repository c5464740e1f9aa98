"""Presentation contexts: what to propose for retrieval and for sending."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
UNCOMPRESSED_ALL = frozenset(
    {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)

# Transfer syntaxes offered, each in its own context, when receiving a study whose stored
# syntaxes are unknown: the sender then finds the one it holds and need not transcode.
RECEIVE_SYNTAX_GROUPS: tuple[tuple[str, ...], ...] = (
    (ExplicitVRLittleEndian,),
    (ImplicitVRLittleEndian,),
    (JPEGBaseline8Bit,),
    (JPEGExtended12Bit,),
    (JPEGLosslessSV1,),
    (JPEGLossless,),
    (JPEGLSLossless,),
    (JPEGLSNearLossless,),
    (JPEG2000Lossless,),
    (JPEG2000,),
    (RLELossless,),
    (ExplicitVRBigEndian,),
    (DeflatedExplicitVRLittleEndian,),
)

MAX_CONTEXTS = 128

# Study Root Query/Retrieve models (PS3.4 C.6.2). pynetdicom creates its named constants at
# run time, which type checkers cannot see.
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.2.2")
STUDY_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")

_LOSSLESS_COMPRESSED = (
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
)
_LOSSY = (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000)


def scp_syntax_preference(all_syntaxes: Iterable[str]) -> list[str]:
    """Order in which pacsmig's SCP accepts syntaxes (pynetdicom picks the acceptor's first).

    Explicit VR first: implicit VR loses the VR of private elements. Lossy syntaxes last, so a
    peer that offers several in one context is never asked to compress lossily.
    """
    first = [
        ExplicitVRLittleEndian,
        *_LOSSLESS_COMPRESSED,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        ImplicitVRLittleEndian,
    ]
    rest = [str(ts) for ts in all_syntaxes if ts not in first and ts not in _LOSSY]
    return [str(ts) for ts in first] + rest + [str(ts) for ts in _LOSSY]


def receive_contexts(sop_classes: Iterable[str]) -> list[PresentationContext]:
    """Storage contexts for a C-GET of a study holding these SOP classes.

    Raises ValueError when they cannot fit in one association; callers split by series.
    """
    contexts: list[PresentationContext] = []
    for sop_class in sorted(set(sop_classes)):
        for group in RECEIVE_SYNTAX_GROUPS:
            contexts.append(build_context(sop_class, list(group)))
    if len(contexts) > MAX_CONTEXTS - 1:
        raise ValueError(f"{len(set(sop_classes))} SOP classes need more than one association")
    return contexts


def max_classes_per_get() -> int:
    return (MAX_CONTEXTS - 1) // len(RECEIVE_SYNTAX_GROUPS)


def storage_class_chunks() -> list[list[str]]:
    """Every storage SOP class pynetdicom knows, in slices that fit one C-GET association.

    Used when the source's C-FIND does not return SOP Class UID (dcmqrscp): each slice is
    tried in turn for the instances the previous ones did not bring.
    """
    classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    size = MAX_CONTEXTS - 1
    return [classes[i : i + size] for i in range(0, len(classes), size)]


def fallback_storage_contexts(classes: Iterable[str]) -> list[PresentationContext]:
    """When the SOP classes are unknown: one context each, the uncompressed syntaxes."""
    return [build_context(sop_class, [*UNCOMPRESSED, ExplicitVRBigEndian]) for sop_class in classes]


def send_contexts(
    pairs: Iterable[tuple[str, str]], *, extra: Mapping[str, Sequence[str]] | None = None
) -> list[PresentationContext]:
    """Contexts to send instances of these (SOP class, transfer syntax) pairs.

    Each pair gets its own context so each instance can travel as it is; each SOP class also
    gets an uncompressed context, the fallback when the destination refuses the original.
    `extra` lists, per SOP class and best first, further syntaxes the sender may convert to
    (preferred, lossy, lossless fallbacks); each gets a context of its own, so the
    destination's answer says exactly which it takes. They fill what room the association has
    left (MAX_CONTEXTS), every class's best extra before any class's second.
    """
    contexts: list[PresentationContext] = []
    proposed: set[tuple[str, str]] = set()
    classes: list[str] = []
    for sop_class, ts in sorted(set(pairs)):
        if sop_class not in classes:
            classes.append(sop_class)
        if (sop_class, ts) not in proposed:
            proposed.add((sop_class, ts))
            contexts.append(build_context(sop_class, [ts]))
    for sop_class in classes:
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
        proposed.update((sop_class, str(ts)) for ts in UNCOMPRESSED)
    wanted = {c: [str(ts) for ts in (extra or {}).get(c, ())] for c in classes}
    for rank in range(max((len(v) for v in wanted.values()), default=0)):
        for sop_class in classes:
            if len(contexts) >= MAX_CONTEXTS:
                return contexts
            if rank < len(wanted[sop_class]):
                ts = wanted[sop_class][rank]
                if (sop_class, ts) not in proposed:
                    proposed.add((sop_class, ts))
                    contexts.append(build_context(sop_class, [ts]))
    return contexts
