"""choose_syntax over the whole space of stored, accepted and preferred syntaxes.

Never a lossy syntax other than the stored one without a policy; never a lossy original
re-encoded into a lossless codec; always an accepted syntax or None; and what is proposed at
association time (wanted_syntaxes) is exactly what the choice may pick from.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import (
    JPEG2000,
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

from pacsmig.apply.transcode import (
    LOSSY_TARGETS,
    choose_syntax,
    is_lossless,
    syntax_candidates,
    wanted_syntaxes,
)
from pacsmig.spec.model import LossyPolicy

SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    "1.2.840.10008.1.2.4.100",  # MPEG-2: lossy, no codec here
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless: no encoder here
    "1.2.826.0.1.3680043.99.1",  # a private syntax
]
UNCOMPRESSED = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}

syntax = st.sampled_from([str(ts) for ts in SYNTAXES])
policies = st.none() | st.builds(
    LossyPolicy,
    syntax=st.sampled_from([str(JPEG2000), str(JPEGLSNearLossless), str(JPEGBaseline8Bit)]),
    quality=st.none() | st.integers(min_value=0, max_value=50),
)


@given(
    stored=syntax,
    accepted=st.sets(syntax),
    preferred=st.lists(syntax, max_size=4),
    lossy=policies,
)
def test_choice_is_accepted_and_never_silently_lossy(
    stored: str, accepted: set[str], preferred: list[str], lossy: LossyPolicy | None
) -> None:
    chosen = choose_syntax(stored, accepted, preferred=preferred, lossy=lossy)
    candidates = syntax_candidates(stored, accepted, preferred=preferred, lossy=lossy)
    assert chosen == (candidates[0] if candidates else None)
    assert len(set(candidates)) == len(candidates)
    for ts in candidates:
        assert ts in accepted
        if ts == stored:
            continue
        if not is_lossless(ts):
            # Lossy only as the policy's own syntax, and only one pacsmig can encode.
            assert lossy is not None and ts == lossy.syntax and ts in LOSSY_TARGETS
        if not is_lossless(stored) and is_lossless(ts):
            # A lossy original is decoded to uncompressed, never dressed as lossless.
            assert ts in UNCOMPRESSED
    if stored in accepted and not preferred and lossy is None:
        assert chosen == stored  # nothing asks for a conversion: sent as it is
    if chosen is None:
        assert stored not in accepted


@given(
    stored=syntax,
    accepted=st.sets(syntax),
    preferred=st.lists(syntax, max_size=4),
    lossy=policies,
)
def test_what_is_proposed_is_what_may_be_chosen(
    stored: str, accepted: set[str], preferred: list[str], lossy: LossyPolicy | None
) -> None:
    wanted = wanted_syntaxes(stored, preferred=preferred, lossy=lossy)
    candidates = syntax_candidates(stored, accepted, preferred=preferred, lossy=lossy)
    assert candidates == [ts for ts in wanted if ts in accepted]
    assert stored in wanted


@given(
    stored=syntax,
    accepted=st.sets(syntax),
    preferred=st.lists(syntax, max_size=4),
    lossy=policies,
)
def test_the_lossy_policy_wins_only_for_lossless_originals(
    stored: str, accepted: set[str], preferred: list[str], lossy: LossyPolicy | None
) -> None:
    chosen = choose_syntax(stored, accepted, preferred=preferred, lossy=lossy)
    if lossy is not None and chosen == lossy.syntax and chosen != stored:
        # Either the original is lossless and the policy comes first, or a lossy original
        # had no other way in.
        others = syntax_candidates(stored, accepted - {lossy.syntax}, preferred=preferred)
        assert is_lossless(stored) or not others
