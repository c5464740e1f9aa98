"""The images level's sample: deterministic, sized per study, stable across re-runs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pacsmig.verify.sample import rank, sample_instances, sample_size

uids = st.lists(
    st.from_regex(r"1\.2\.[1-9][0-9]{0,6}(\.[1-9][0-9]{0,4}){0,3}", fullmatch=True),
    unique=True,
    max_size=60,
)
fingerprints = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@settings(max_examples=100, deadline=None)
@given(fingerprints, uids, st.floats(min_value=1e-6, max_value=1.0), st.randoms())
def test_fraction_sample_is_deterministic_and_rounds_up(
    fp: str, population: list[str], fraction: float, rnd: object
) -> None:
    shuffled = list(population)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    first = sample_instances(fp, population, fraction=fraction)
    assert sample_instances(fp, shuffled + population[:3], fraction=fraction) == first
    n = len(population)
    assert set(first) <= set(population)
    if n:
        assert len(first) >= 1
        assert len(first) >= fraction * n - 1e-6  # never fewer than the share asked
        assert len(first) - 1 < fraction * n + 1e-6  # and at most one more (rounding up)
    else:
        assert first == []
    # The lowest ranks: nothing left out ranks below anything taken.
    if first and len(first) < n:
        worst_taken = max(rank(fp, u) for u in first)
        assert all(rank(fp, u) > worst_taken for u in set(population) - set(first))


@settings(max_examples=100, deadline=None)
@given(fingerprints, uids, st.integers(min_value=0, max_value=80))
def test_count_sample_grows_by_prefix_and_caps_at_the_population(
    fp: str, population: list[str], count: int
) -> None:
    taken = sample_instances(fp, population, count=count)
    assert len(taken) == min(count, len(population))
    bigger = sample_instances(fp, population, count=count + 1)
    assert bigger[: len(taken)] == taken
    if count >= len(population):
        assert sorted(taken) == sorted(population)


def test_another_plan_samples_other_instances() -> None:
    population = [f"1.2.3.{n}" for n in range(50)]
    a = sample_instances("a" * 64, population, count=5)
    assert sample_instances("a" * 64, population, count=5) == a
    assert sample_instances("b" * 64, population, count=5) != a


def test_sizes() -> None:
    assert sample_size(30, fraction=0.1) == 3
    assert sample_size(20, fraction=0.05) == 1
    assert sample_size(3, fraction=0.05) == 1
    assert sample_size(0, fraction=0.5) == 0
    assert sample_size(7, count=100) == 7
    assert sample_size(7, count=0) == 0
    assert sample_size(100) == 5  # default: 5 % of each study
