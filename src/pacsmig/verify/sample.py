"""Which instances of a study the images level retrieves and compares.

The sample is deterministic: each instance is ranked by sha256(plan fingerprint, SOP Instance
UID) and the lowest ranks are taken. A re-run of the same plan checks the same instances; a
new plan (another fingerprint) checks others. Sizes are per study: a fraction rounds up, so
every study with instances gets at least one; a count larger than the study takes all of it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

DEFAULT_FRACTION = 0.05


def rank(fingerprint: str, sop_uid: str) -> str:
    return hashlib.sha256(
        f"{fingerprint}\0{sop_uid}".encode("utf-8", "surrogateescape")
    ).hexdigest()


def sample_size(population: int, *, fraction: float | None = None, count: int | None = None) -> int:
    """How many of `population` instances to check; the default is DEFAULT_FRACTION."""
    if population <= 0:
        return 0
    if count is not None:
        return max(0, min(count, population))
    share = DEFAULT_FRACTION if fraction is None else fraction
    if share <= 0:
        return 0
    # The epsilon keeps 0.1 * 30 (3.0000000000000004 in binary) at 3.
    return max(1, min(population, math.ceil(share * population - 1e-9)))


def sample_instances(
    fingerprint: str,
    sop_uids: Iterable[str],
    *,
    fraction: float | None = None,
    count: int | None = None,
) -> list[str]:
    """The sampled SOP Instance UIDs, lowest rank first."""
    unique = sorted(set(sop_uids))
    size = sample_size(len(unique), fraction=fraction, count=count)
    return sorted(unique, key=lambda uid: (rank(fingerprint, uid), uid))[:size]
