"""Pair every source study with at most one RIS order, and say why when it cannot.

The matcher is deliberately conservative: a wrong match rewrites a patient's identity in the
destination archive, while a hold only costs a person a look. So every rule must find exactly
one candidate; two candidates are held, never guessed between; an order two studies claim is
held for both; and a candidate whose identity positively disagrees with the study (another
patient's accession typed by mistake) is not a candidate at all.

Order of precedence, each step working only on what the previous ones left open:

1. overrides (a person's decisions), including ``skip``;
2. studies the archive files under two patient IDs: held (``patient_conflict``);
3. the rules, in spec order. An order is *taken* once a study claims it (matched, or held
   because another study claimed it too) and later rules never see it again, so each order
   ends up with at most one study and a weaker rule cannot hand a disputed order to a third
   study. Orders that were merely candidates of an ambiguous hold stay available: the held
   study may be the one that is wrong about them, and reserving them would turn another
   study's unique, correct fit into a spurious "no order".

The rules (an empty value never matches anything):

* ``accession``: equal accession (``id_key``: case and blanks ignored). An accession shared by
  more than ``MAX_ORDERS_PER_ACCESSION`` orders is a placeholder and ignored. When one
  accession carries several orders (a multi-procedure booking) and exactly one of them fits
  the study's modality, that one is the candidate; otherwise all are.
* ``patient-date-modality``: equal patient ID, study and order date at most
  ``date_window_days`` apart, and a compatible modality.
* ``demographics``: equal birth date, dates within the window, compatible modality, and name
  similarity (``name_similarity``) at least ``min_similarity``.

A modality is *compatible* when the order's is among the study's series modalities, or when
either side states none (an order without a DICOM modality, e.g. OBR-24 'RAD', or a study with
no series information): a missing value is no evidence against the pair, and the other keys
still have to agree. The first two rules also drop a candidate whose identity *contradicts*
the study: of patient ID (accession rule only), birth date and name, at least one is present on
both sides and none of those agrees (names agree from ``GUARD_NAME_SIMILARITY``). A study left
with no candidate only because of that is held as ``identity_conflict`` unless a later rule
matches it.

The accession guard. An accession typo that lands on the *same patient's* other order (RIS
numbers are sequential, so a slip often hits the next exam) passes the identity check, and
would then also hand the true order to that exam's own, accession-less study by elimination:
two wrong matches. An accession match is therefore *contestable* when the patient (the study's
or the order's patient ID) has a *sibling* order: within the widest rule window of the study
date, of compatible modality, untaken and claimed by no accession, for which a *rival* study
exists, one no accession explains that a later rule could pair with the sibling (same patient
ID or birth date, within the window, compatible modality). A sibling with no rival (a
duplicate booking, a no-show) does not contest: nothing could be given it by mistake. A
contestable match stands only when evidence beyond the accession prefers its order over every
sibling and none prefers a sibling (``_preferred``): the study date is strictly closer to the
order's date than to any sibling's, or the study description agrees with the order's
(``DESC_AGREE``) by ``DESC_MARGIN`` more than with any sibling's (``description_similarity``:
case, accents, punctuation and common abbreviations forgiven, modality words ignored).
Otherwise the study is held as ``ambiguous_candidates`` with the order and its siblings as
candidates. Those orders stay available, so a rival that sees both is held as ambiguous by its
own rule. Each order of a held contest is also linked to the others: when a later rule finds a
study that has one of them as its only candidate (the rest out of its reach), the linked orders
are added as candidates and the study is held, unless its own date and description prefer
that order. So no order is ever given by elimination while the accession beside it is in doubt.

Everything is computed column-wise: studies and orders become integer-coded NumPy/pandas
columns once, rules are hash joins on integer keys, and candidate counts are bincounts. The
only per-study Python is reading the input objects and building the result objects; name
and description keys are computed only for the candidate pairs that need them.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, cast, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd
from rapidfuzz import fuzz, process

from pacsmig.errors import SpecError
from pacsmig.inventory.model import StudyRecord
from pacsmig.reconcile.normalize import (
    id_key,
    lenient_date,
    lenient_sex,
    modality_key,
    name_key,
    normalize_id,
    normalize_pn,
    normalize_text,
    parse_date,
)
from pacsmig.reconcile.orders import Order

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

RuleName = Literal["accession", "patient-date-modality", "demographics"]
RuleLabel = Literal["accession", "patient-date-modality", "demographics", "override"]
Status = Literal["matched", "hold", "unmatched", "skip"]
RULE_NAMES: Final[tuple[RuleName, ...]] = get_args(RuleName)

# Stable reason codes (snake_case, like the plan's); the text is for reports.
REASONS: Final[dict[str, str]] = {
    "": "matched",
    "ambiguous_candidates": "a rule found more than one order; a person must choose",
    "order_claimed_twice": "the same order fits more than one study",
    "identity_conflict": "an order fits by accession or patient ID but the patient differs",
    "patient_conflict": "the archive files this study under more than one patient ID",
    "no_order": "no order fits this study",
    "override_skip": "a person decided not to migrate this study",
    "override_unknown_order": "the override names an order that is not in the order list",
}

# The guard's bar for "the names are the same person's". As high as the demographics default
# because the guard only asks the name when patient ID and birth date already disagree, and a
# relative's order (same family name, short given names such as JOHN/JEAN score 0.85) is
# exactly what a mistyped accession lands on.
GUARD_NAME_SIMILARITY: Final = 0.92
# Below this two names are clearly different people's (half of random pairs score < 0.37,
# nine in ten < 0.5), not a typo or a name change (SMITH^JANE -> JONES^JANE scores 0.6).
GUARD_NAME_DIFFERENT: Final = 0.5
# An accession shared by more orders than this is a placeholder ('0', 'UNKNOWN'), not an
# identifier: it is ignored rather than joined, which would also explode the pair count.
MAX_ORDERS_PER_ACCESSION: Final = 20
# The accession guard's description test (``_desc_key`` + token_set_ratio, 0..1): a study's
# description *agrees* with an order's from DESC_AGREE, and one order is *preferred* over
# another only when it also scores DESC_MARGIN higher. Same-modality procedures that differ
# in one body-part word score ~0.88 ('HEAD WITHOUT CONTRAST' / 'CHEST WITHOUT CONTRAST');
# a shortened or abbreviated spelling of the same procedure scores 1.0.
DESC_AGREE: Final = 0.9
DESC_MARGIN: Final = 0.1
_MAX_WINDOW_DAYS: Final = 366
# Day ordinals are < 2**22 (year 9999 is 3_652_059), so block * 2**22 + day is collision-free.
_DAY_BITS: Final = 1 << 22


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchRule:
    """One entry of the spec's ``ris.match`` list; parameters a rule does not use are ignored."""

    rule: RuleName
    date_window_days: int = 2
    min_similarity: float = 0.92

    def __post_init__(self) -> None:
        if self.rule not in RULE_NAMES:
            raise SpecError(f"ris.match: unknown rule {self.rule!r}")
        window = self.date_window_days
        if isinstance(window, bool) or not isinstance(window, int):
            raise SpecError("ris.match: date_window_days must be a whole number of days")
        if not 0 <= window <= _MAX_WINDOW_DAYS:
            raise SpecError(f"ris.match: date_window_days must be 0..{_MAX_WINDOW_DAYS}")
        sim = self.min_similarity
        if isinstance(sim, bool) or not isinstance(sim, int | float) or not 0 < sim <= 1:
            raise SpecError("ris.match: min_similarity must be a number in (0, 1]")


DEFAULT_RULES: Final = (
    MatchRule(rule="accession"),
    MatchRule(rule="patient-date-modality", date_window_days=2),
    MatchRule(rule="demographics", min_similarity=0.92, date_window_days=2),
)

_RULE_KEYS: Final[dict[str, frozenset[str]]] = {
    "accession": frozenset({"rule"}),
    "patient-date-modality": frozenset({"rule", "date_window_days"}),
    "demographics": frozenset({"rule", "date_window_days", "min_similarity"}),
}


def parse_match_rules(items: object) -> tuple[MatchRule, ...]:
    """The spec's ``ris.match`` list as rules; a ``SpecError`` for anything unexpected.

    Keys a rule does not use are errors rather than ignored, so a ``min_similarity`` typed
    under the wrong rule cannot silently leave the intended rule at its default.
    """
    if not isinstance(items, list) or not items:
        raise SpecError("ris.match: must be a non-empty list of rules")
    rules = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "rule" not in item:
            raise SpecError(f"ris.match[{i}]: must be a mapping with a 'rule' key")
        name = item["rule"]
        if name not in _RULE_KEYS:
            raise SpecError(f"ris.match[{i}]: unknown rule {name!r}")
        extra = sorted(set(item) - _RULE_KEYS[name])
        if extra:
            raise SpecError(f"ris.match[{i}]: {extra[0]!r} does not apply to rule {name!r}")
        try:
            rules.append(MatchRule(**{str(k): v for k, v in item.items()}))
        except SpecError as exc:
            raise SpecError(str(exc).replace("ris.match:", f"ris.match[{i}]:", 1)) from None
    return tuple(rules)


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchResult:
    """What became of one study. ``order_id`` is set only when ``status`` is 'matched'."""

    study_uid: str
    status: Status
    order_id: str | None = None
    rule: RuleLabel | None = None
    # Name similarity for 'demographics', 1.0 for the exact rules, None for overrides (a
    # person's decision has no score) and for everything that is not a match.
    score: float | None = None
    reason: str = ""
    candidates: tuple[str, ...] = ()  # order ids, sorted


# ---------------------------------------------------------------------------------------
# Names


class _NameForms(NamedTuple):
    """The spellings of one name a pair is compared under ('' when there is no name)."""

    full: str  # family given middle ...
    swapped: str  # given family middle ...
    core: str  # family + first given word
    core_swapped: str  # first given word + family


_NO_NAME: Final = _NameForms("", "", "", "")


def _name_forms(raw: str) -> _NameForms:
    comps = name_key(raw).split("^")
    if not comps[0] and len(comps) == 1:
        return _NO_NAME
    family = comps[0]
    given = comps[1] if len(comps) > 1 else ""
    rest = [c for c in comps[2:] if c]
    first_given = given.split()[0] if given else ""

    def join(*parts: str) -> str:
        return " ".join(p for p in parts if p)

    return _NameForms(
        full=join(family, given, *rest),
        swapped=join(given, family, *rest),
        core=join(family, first_given),
        core_swapped=join(first_given, family),
    )


def _similarity(a: list[_NameForms], b: list[_NameForms]) -> FloatArray:
    """Pairwise similarity in [0, 1] of aligned name lists; 0 where either name is empty.

    The best of: whole name as written; whole name with family and given swapped (a classic
    registration error); family + first given name only (so a middle name recorded on one side
    does not drag a sure match below the bar), straight and swapped; and token_sort_ratio for
    other word orders. Plain ratio is needed beside token_sort because a typo in a first
    letter re-sorts the tokens (VDORAK LISA / DVORAK LISA would score 0.45).
    """
    if not a:
        return np.zeros(0)

    def cols(forms: list[_NameForms], i: int) -> list[str]:
        return [f[i] for f in forms]

    full_a, full_b, core_a, core_b = cols(a, 0), cols(b, 0), cols(a, 2), cols(b, 2)
    kw: dict[str, Any] = {"processor": None, "workers": -1}
    # Swapping on either side keeps the score symmetric when middle names trail.
    variants = (
        (fuzz.ratio, full_a, full_b),
        (fuzz.ratio, full_a, cols(b, 1)),
        (fuzz.ratio, cols(a, 1), full_b),
        (fuzz.ratio, core_a, core_b),
        (fuzz.ratio, core_a, cols(b, 3)),
        (fuzz.token_sort_ratio, full_a, full_b),
    )
    best = np.zeros(len(a), dtype=np.float64)
    for scorer, left, right in variants:
        np.maximum(best, process.cpdist(left, right, scorer=scorer, **kw), out=best)
    best /= 100.0
    empty = np.fromiter((not x.full or not y.full for x, y in zip(a, b, strict=True)), bool)
    best[empty] = 0.0
    return best


def name_similarity(a: str, b: str) -> float:
    """How alike two person names are (any accepted spelling), 0..1; 0 if either is empty."""
    return float(_similarity([_name_forms(a)], [_name_forms(b)])[0])


class _Names:
    """Name forms of one side, computed on first use: most names are never compared."""

    def __init__(self, raw: list[str]) -> None:
        self.raw = raw
        self.forms: list[_NameForms] = [_NO_NAME] * len(raw)
        self.done = np.zeros(len(raw), dtype=bool)
        self.present = np.zeros(len(raw), dtype=bool)
        self._cache: dict[str, _NameForms] = {}

    def ensure(self, idx: IntArray) -> None:
        todo = np.unique(idx[~self.done[idx]])
        for i in todo.tolist():
            raw = self.raw[i]
            forms = self._cache.get(raw)
            if forms is None:
                forms = self._cache[raw] = _name_forms(raw)
            self.forms[i] = forms
            self.present[i] = bool(forms.full)
        self.done[todo] = True


# ---------------------------------------------------------------------------------------
# Descriptions (evidence for the accession guard only)

# Spellings RIS and modalities use for the same word. Modality words are dropped: siblings the
# guard compares share a modality, so 'CT'/'MRI' would only inflate every score alike.
_DESC_WORDS: Final[dict[str, str]] = {
    "WO": "WITHOUT",
    "W": "WITH",
    "WWO": "WITH AND WITHOUT",
    "CONT": "CONTRAST",
    "CON": "CONTRAST",
    "CM": "CONTRAST",
    "LT": "LEFT",
    "RT": "RIGHT",
    "BILAT": "BILATERAL",
    "ABD": "ABDOMEN",
    "ABDO": "ABDOMEN",
    "VW": "VIEWS",
    "VWS": "VIEWS",
    "VIEW": "VIEWS",
}
_DESC_DROP: Final = frozenset(
    {"CT", "MR", "MRI", "CR", "DX", "DR", "XR", "XRAY", "RAD", "US", "MG", "NM", "PT", "PET"}
    | {"XA", "RF"}
)
_DESC_SPLIT: Final = re.compile(r"[^A-Z0-9]+")


def _desc_key(raw: str) -> str:
    """A procedure description as comparable words: case, accents, punctuation and the usual
    abbreviations ('W/O', 'WO', 'LT', 'ABD') forgiven, modality words dropped."""
    text = unicodedata.normalize("NFKD", normalize_text(raw).upper())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.replace("W/O", " WITHOUT ").replace("W/", " WITH ").replace("+C", " CONTRAST ")
    words = (_DESC_WORDS.get(w, w) for w in _DESC_SPLIT.split(text) if w)
    return " ".join(w for w in words if w not in _DESC_DROP)


class _Texts:
    """Description keys of one side, computed on first use (only guard pairs need them)."""

    def __init__(self, raw: list[str]) -> None:
        self.raw = raw
        self.keys: list[str] = [""] * len(raw)
        self.done = np.zeros(len(raw), dtype=bool)
        self._cache: dict[str, str] = {}

    def get(self, idx: IntArray) -> list[str]:
        todo = np.unique(idx[~self.done[idx]])
        for i in todo.tolist():
            raw = self.raw[i]
            key = self._cache.get(raw)
            if key is None:
                key = self._cache[raw] = _desc_key(raw)
            self.keys[i] = key
        self.done[todo] = True
        keys = self.keys
        return [keys[i] for i in idx.tolist()]


def description_similarity(a: str, b: str) -> float:
    """How alike two procedure descriptions are, 0..1; 0 if either says nothing."""
    ka, kb = _desc_key(a), _desc_key(b)
    if not ka or not kb:
        return 0.0
    return float(fuzz.token_set_ratio(ka, kb, processor=None)) / 100.0


# ---------------------------------------------------------------------------------------
# Column building


def _shared_codes(
    a: list[str], b: list[str], key: Callable[[str], str]
) -> tuple[IntArray, IntArray]:
    """Integer codes of ``key(value)`` over both sides in one code space; -1 for ''.

    ``key`` runs once per distinct raw value, not per row.
    """
    codes, uniques = pd.factorize(np.array(a + b, dtype=object))
    keys = np.array([key(u) for u in uniques], dtype=object)
    key_codes, key_uniques = pd.factorize(keys)
    # A trailing -1 makes the -1 pandas gives None/NaN index to "no value" instead of wrapping.
    key_codes = np.append(key_codes.astype(np.int64), -1)
    empty = np.flatnonzero(key_uniques == "")
    if empty.size:
        key_codes[key_codes == empty[0]] = -1
    full = key_codes[codes]
    return full[: len(a)], full[len(a) :]


def _day(value: str) -> int:
    try:
        date = parse_date(value)
    except ValueError:
        # A malformed date in the archive is no evidence; it must not block the other rules.
        return -1
    return -1 if date is None else date.toordinal()


def _days(a: list[str], b: list[str]) -> tuple[IntArray, IntArray]:
    codes, uniques = pd.factorize(np.array(a + b, dtype=object))
    values = np.array([*(_day(u) for u in uniques), -1], dtype=np.int64)
    full = values[codes]
    return full[: len(a)], full[len(a) :]


@dataclass(slots=True)
class _Columns:
    n: int
    m: int
    s_acc: IntArray
    o_acc: IntArray
    s_pid: IntArray
    o_pid: IntArray
    s_day: IntArray
    o_day: IntArray
    s_dob: IntArray
    o_dob: IntArray
    s_modset: IntArray  # code of the study's set of modality keys
    set_empty: BoolArray  # per modset code: no modality known
    o_mod: IntArray  # -1: the order states no (DICOM) modality
    mod_pairs: IntArray  # sorted modset * n_mod + mod for every (set, modality) it holds
    n_mod: int
    s_names: _Names
    o_names: _Names
    s_desc: _Texts
    o_desc: _Texts
    junk_acc: BoolArray  # per accession code

    @classmethod
    def build(cls, studies: Sequence[StudyRecord], orders: Sequence[Order]) -> _Columns:
        n, m = len(studies), len(orders)

        def cols(objs: Sequence[Any], attr: str) -> list[str]:
            return [getattr(x, attr) for x in objs]

        s_acc, o_acc = _shared_codes(cols(studies, "accession"), cols(orders, "accession"), id_key)
        s_pid, o_pid = _shared_codes(
            cols(studies, "patient_id"), cols(orders, "patient_id"), id_key
        )
        s_day, o_day = _days(cols(studies, "study_date"), cols(orders, "study_date"))
        s_dob, o_dob = _days(cols(studies, "birth_date"), cols(orders, "birth_date"))

        set_codes: dict[tuple[str, ...], int] = {}
        s_modset = np.fromiter(
            (set_codes.setdefault(s.modalities, len(set_codes)) for s in studies),
            dtype=np.int64,
            count=n,
        )
        mod_codes: dict[str, int] = {}
        set_mods = [
            {mod_codes.setdefault(k, len(mod_codes)) for k in map(modality_key, t) if k}
            for t in set_codes
        ]
        order_mod_keys = {v: modality_key(v) for v in set(cols(orders, "modality"))}
        for k in order_mod_keys.values():
            if k:
                mod_codes.setdefault(k, len(mod_codes))
        o_mod = np.fromiter(
            (mod_codes.get(order_mod_keys[o.modality], -1) for o in orders),
            dtype=np.int64,
            count=m,
        )
        n_mod = max(len(mod_codes), 1)
        mod_pairs = np.sort(
            np.array([c * n_mod + k for c, ks in enumerate(set_mods) for k in ks], dtype=np.int64)
        )
        set_empty = np.array([not ks for ks in set_mods], dtype=bool)

        acc_counts = np.bincount(
            o_acc[o_acc >= 0], minlength=int(max(s_acc.max(initial=-1), o_acc.max(initial=-1))) + 1
        )
        junk_acc = acc_counts > MAX_ORDERS_PER_ACCESSION
        return cls(
            n=n,
            m=m,
            s_acc=s_acc,
            o_acc=o_acc,
            s_pid=s_pid,
            o_pid=o_pid,
            s_day=s_day,
            o_day=o_day,
            s_dob=s_dob,
            o_dob=o_dob,
            s_modset=s_modset,
            set_empty=set_empty,
            o_mod=o_mod,
            mod_pairs=mod_pairs,
            n_mod=n_mod,
            s_names=_Names(cols(studies, "patient_name")),
            o_names=_Names(cols(orders, "patient_name")),
            s_desc=_Texts(cols(studies, "description")),
            o_desc=_Texts(cols(orders, "description")),
            junk_acc=junk_acc,
        )

    # -- pair predicates (s, o are aligned index arrays) -----------------------------------

    def modality_ok(self, s: IntArray, o: IntArray) -> BoolArray:
        """The order's modality is among the study's, or either side states none."""
        om = self.o_mod[o]
        sc = self.s_modset[s]
        ok = (om < 0) | self.set_empty[sc]
        check = ~ok
        ok[check] = np.isin(sc[check] * self.n_mod + om[check], self.mod_pairs)
        return ok

    def name_scores(self, s: IntArray, o: IntArray) -> FloatArray:
        self.s_names.ensure(s)
        self.o_names.ensure(o)
        sf, of = self.s_names.forms, self.o_names.forms
        return _similarity([sf[i] for i in s.tolist()], [of[j] for j in o.tolist()])

    def desc_scores(self, s: IntArray, o: IntArray) -> FloatArray:
        """Description similarity of aligned pairs (see ``description_similarity``)."""
        if s.size == 0:
            return np.zeros(0)
        a, b = self.s_desc.get(s), self.o_desc.get(o)
        scores = process.cpdist(
            a, b, scorer=fuzz.token_set_ratio, processor=None, workers=-1
        ).astype(np.float64)
        scores /= 100.0
        empty = np.fromiter((not x or not y for x, y in zip(a, b, strict=True)), bool, s.size)
        scores[empty] = 0.0
        return scores

    def contradicted(self, s: IntArray, o: IntArray, *, use_pid: bool) -> BoolArray:
        """The pair's identity evidence says "another patient".

        Patient ID (unless it is what the rule joined on), birth date and name each count only
        when both sides have one. Contradicted: some evidence and none of it agrees, or two
        pieces that clearly disagree (a different ID and a clearly different name outvote a
        shared birth date, which one patient in ~30,000 has by chance). A pair with no
        comparable evidence is not contradicted, so the rule's own key decides.
        """
        evidence = np.zeros(s.size, dtype=bool)
        agree = np.zeros(s.size, dtype=bool)
        against = np.zeros(s.size, dtype=np.int8)
        pairs = [(self.s_dob[s], self.o_dob[o])]
        if use_pid:
            pairs.append((self.s_pid[s], self.o_pid[o]))
        for sv, ov in pairs:
            both = (sv >= 0) & (ov >= 0)
            evidence |= both
            agree |= both & (sv == ov)
            against += both & (sv != ov)
        # The name can only change the verdict where nothing agrees yet or one piece disagrees.
        todo = np.flatnonzero(~agree | (against > 0))
        if todo.size:
            ts, to = s[todo], o[todo]
            self.s_names.ensure(ts)
            self.o_names.ensure(to)
            named = self.s_names.present[ts] & self.o_names.present[to]
            evidence[todo] |= named
            if named.any():
                where = todo[named]
                scores = self.name_scores(ts[named], to[named])
                agree[where] |= scores >= GUARD_NAME_SIMILARITY
                against[where] += scores < GUARD_NAME_DIFFERENT
        return (evidence & ~agree) | (against >= 2)


def _window_pairs(
    s: IntArray,
    s_block: IntArray,
    s_day: IntArray,
    o: IntArray,
    o_block: IntArray,
    o_day: IntArray,
    window: int,
) -> tuple[IntArray, IntArray]:
    """Pairs with equal block and |day difference| <= window, as 2*window+1 exact joins.

    Joining on (block, day + offset) instead of on block and then filtering keeps the pair
    count to what actually qualifies: a placeholder patient ID with thousands of studies
    would otherwise square into billions of rows.
    """
    left = pd.DataFrame({"s": s, "k": s_block * _DAY_BITS + s_day})
    parts = []
    for offset in range(-window, window + 1):
        right = pd.DataFrame({"o": o, "k": o_block * _DAY_BITS + o_day + offset})
        parts.append(left.merge(right, on="k", how="inner", sort=False)[["s", "o"]])
    pairs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"s": [], "o": []})
    return pairs["s"].to_numpy(np.int64), pairs["o"].to_numpy(np.int64)


def _preferred(c: _Columns, s: IntArray, o: IntArray, kk: IntArray, rival: IntArray) -> BoolArray:
    """Per item k (study ``s[k]``, chosen order ``o[k]``): does evidence other than the rule's
    own key prefer ``o[k]`` over every rival order ``rival[i]`` of item ``kk[i]``?

    Two votes, each for the chosen order (+1), for a rival (-1) or neither (0): the study date
    (strictly closer to the chosen order's than to every rival's) and the description
    (``DESC_AGREE`` and ``DESC_MARGIN`` over the best rival). Preferred: one vote for and none
    against. Items without rivals are not asked (True).
    """
    n = s.size
    sk = s[kk]
    if n == 0:
        return np.ones(0, dtype=bool)
    big = np.iinfo(np.int64).max
    # Date: unknown days give no vote.
    d_pick = np.where((c.s_day[s] >= 0) & (c.o_day[o] >= 0), np.abs(c.s_day[s] - c.o_day[o]), -1)
    d_riv = np.where(
        (c.s_day[sk] >= 0) & (c.o_day[rival] >= 0), np.abs(c.s_day[sk] - c.o_day[rival]), big
    )
    d_best = np.full(n, big, dtype=np.int64)
    np.minimum.at(d_best, kk, d_riv)
    known = (d_pick >= 0) & (d_best < big)
    date_vote = np.where(known, np.sign(d_best - d_pick), 0)
    # Description.
    a_pick = c.desc_scores(s, o)
    a_best = np.zeros(n)
    np.maximum.at(a_best, kk, c.desc_scores(sk, rival))
    desc_vote = ((a_pick >= DESC_AGREE) & (a_pick - a_best >= DESC_MARGIN)).astype(np.int64) - (
        (a_best >= DESC_AGREE) & (a_best - a_pick >= DESC_MARGIN)
    ).astype(np.int64)
    asked = np.bincount(kk, minlength=n) > 0
    ok = (date_vote >= 0) & (desc_vote >= 0) & (date_vote + desc_vote > 0)
    return np.asarray(ok | ~asked, dtype=bool)


def _unique_pairs(a: IntArray, b: IntArray, width: int) -> tuple[IntArray, IntArray]:
    code = np.unique(a * max(width, 1) + b)
    return code // max(width, 1), code % max(width, 1)


# ---------------------------------------------------------------------------------------
# Resolution state

_OPEN, _MATCHED, _HOLD, _UNMATCHED, _SKIP = range(5)
_STATUS: Final[tuple[Status, ...]] = ("unmatched", "matched", "hold", "unmatched", "skip")
_LABELS: Final[tuple[RuleLabel | None, ...]] = (None, "override", *RULE_NAMES)
_REASON_CODES: Final = tuple(REASONS)


def _label(name: RuleLabel) -> int:
    return _LABELS.index(name)


def _reason(code: str) -> int:
    return _REASON_CODES.index(code)


class _State:
    def __init__(self, n: int, m: int) -> None:
        self.n, self.m = n, m
        self.status = np.full(n, _OPEN, dtype=np.int8)
        self.order = np.full(n, -1, dtype=np.int64)
        self.rule = np.zeros(n, dtype=np.int8)
        self.score = np.full(n, np.nan)
        self.reason = np.zeros(n, dtype=np.int8)
        self.taken = np.zeros(m, dtype=bool)
        self.hold_s: list[IntArray] = []
        self.hold_o: list[IntArray] = []
        self.pending = np.zeros(n, dtype=np.int8)  # rule label of a guard rejection
        self.pending_s: list[IntArray] = []
        self.pending_o: list[IntArray] = []
        # Order pairs of contested accession holds (each order with its rivals), both ways.
        self.link_a: list[IntArray] = []
        self.link_b: list[IntArray] = []

    def open(self) -> BoolArray:
        return np.asarray(self.status == _OPEN, dtype=bool)

    def hold(self, s: IntArray, o: IntArray | None, reason: str, label: int) -> None:
        self.status[s] = _HOLD
        self.reason[s] = _reason(reason)
        self.rule[s] = label
        if o is not None:
            self.hold_s.append(s)
            self.hold_o.append(o)

    def settle(self, s: IntArray, o: IntArray, score: FloatArray, label: int) -> None:
        """Apply one rule's surviving candidate pairs (every s open, every o untaken)."""
        if s.size == 0:
            return
        count = np.bincount(s, minlength=self.n)
        one = count[s] == 1
        s1, o1, sc1 = s[one], o[one], score[one]
        claims = np.bincount(o1, minlength=self.m)
        twice = claims[o1] > 1
        win = ~twice
        self.status[s1[win]] = _MATCHED
        self.order[s1[win]] = o1[win]
        self.rule[s1[win]] = label
        self.score[s1[win]] = sc1[win]
        self.hold(s1[twice], o1[twice], "order_claimed_twice", label)
        self.hold(s[~one], o[~one], "ambiguous_candidates", label)
        self.taken[o1] = True

    def reject(self, s: IntArray, o: IntArray, kept_s: IntArray, label: int) -> None:
        """Remember guard rejections of studies left with no candidate at this rule."""
        if s.size == 0:
            return
        gone = ~np.isin(s, kept_s) & (self.pending[s] == 0)
        s, o = s[gone], o[gone]
        self.pending[s] = label
        self.pending_s.append(s)
        self.pending_o.append(o)

    def finish(self) -> None:
        open_ = self.open()
        if self.pending_s:
            ps, po = np.concatenate(self.pending_s), np.concatenate(self.pending_o)
            keep = open_[ps]
            ps, po = ps[keep], po[keep]
            if ps.size:
                self.hold_s.append(ps)
                self.hold_o.append(po)
                self.status[ps] = _HOLD
                self.reason[ps] = _reason("identity_conflict")
                self.rule[ps] = self.pending[ps]
        open_ = self.open()
        self.status[open_] = _UNMATCHED
        self.reason[open_] = _reason("no_order")


# ---------------------------------------------------------------------------------------
# Rules


def _rule_accession(c: _Columns, st: _State, label: int, window: int) -> None:
    sm = st.open() & (c.s_acc >= 0)
    om = ~st.taken & (c.o_acc >= 0)
    om[om] = ~c.junk_acc[c.o_acc[om]]
    s_idx, o_idx = np.flatnonzero(sm), np.flatnonzero(om)
    left = pd.DataFrame({"s": s_idx, "k": c.s_acc[s_idx]})
    right = pd.DataFrame({"o": o_idx, "k": c.o_acc[o_idx]})
    pairs = left.merge(right, on="k", how="inner", sort=False)
    s, o = pairs["s"].to_numpy(np.int64), pairs["o"].to_numpy(np.int64)
    bad = c.contradicted(s, o, use_pid=True)
    st.reject(s[bad], o[bad], s[~bad], label)
    s, o = s[~bad], o[~bad]
    # Several orders under one accession (a multi-procedure booking): the modality may single
    # one out. If it does not, all stay candidates and the study is held.
    multi = np.bincount(s, minlength=c.n)[s] > 1
    if multi.any():
        compat = c.modality_ok(s, o)
        narrowed = np.bincount(s[multi & compat], minlength=c.n)[s] == 1
        keep = ~(multi & narrowed) | compat
        s, o = s[keep], o[keep]
    s, o = _guard_accession(c, st, s, o, label, window)
    st.settle(s, o, np.ones(s.size), label)


def _guard_accession(
    c: _Columns, st: _State, s: IntArray, o: IntArray, label: int, window: int
) -> tuple[IntArray, IntArray]:
    """Hold accession matches a typo could have produced (module docstring, "guard").

    Returns the accession pairs minus those of the held studies.
    """
    if s.size == 0:
        return s, o
    count = np.bincount(s, minlength=c.n)[s]
    claims = np.bincount(o, minlength=c.m)[o]
    would = np.flatnonzero((count == 1) & (claims == 1))
    ws, wo = s[would], o[would]
    k = np.arange(ws.size, dtype=np.int64)
    # Siblings: orders of the same patient (the study's ID or the order's) dated within the
    # window of the study, of compatible modality, untaken and claimed by no accession.
    pool = ~st.taken & (c.o_pid >= 0) & (c.o_day >= 0)
    pool[o] = False
    oi = np.flatnonzero(pool)
    has_day = c.s_day[ws] >= 0
    parts_k, parts_o = [], []
    for block in (c.o_pid[wo], c.s_pid[ws]):
        sel = has_day & (block >= 0)
        a, b = _window_pairs(
            k[sel], block[sel], c.s_day[ws[sel]], oi, c.o_pid[oi], c.o_day[oi], window
        )
        parts_k.append(a)
        parts_o.append(b)
    kk, sib = _unique_pairs(np.concatenate(parts_k), np.concatenate(parts_o), c.m)
    ok = c.modality_ok(ws[kk], sib)
    kk, sib = kk[ok], sib[ok]
    if kk.size == 0:
        return s, o
    # Rivals: an open study no accession explains, which a later rule could pair with the
    # sibling (same patient ID or birth date, within the window, compatible modality).
    sib_o = np.unique(sib)
    free = st.open() & (c.s_day >= 0)
    free[s] = False
    sp = np.flatnonzero(free)
    backed = np.zeros(c.m, dtype=bool)
    for skey, okey in ((c.s_pid, c.o_pid), (c.s_dob, c.o_dob)):
        ss, oo = sp[skey[sp] >= 0], sib_o[okey[sib_o] >= 0]
        rs, ro = _window_pairs(ss, skey[ss], c.s_day[ss], oo, okey[oo], c.o_day[oo], window)
        backed[ro[c.modality_ok(rs, ro)]] = True
    contested = np.zeros(ws.size, dtype=bool)
    contested[kk[backed[sib]]] = True
    ck = np.flatnonzero(contested)
    if ck.size == 0:
        return s, o
    # Only contested matches are asked for more evidence, against all their siblings.
    pos = np.full(ws.size, -1, dtype=np.int64)
    pos[ck] = np.arange(ck.size)
    asked = contested[kk]
    kk, sib = pos[kk[asked]], sib[asked]
    held = ~_preferred(c, ws[ck], wo[ck], kk, sib)
    if not held.any():
        return s, o
    hs, ho = ws[ck][held], wo[ck][held]
    hk = held[kk]
    st.hold(
        np.concatenate([hs, ws[ck][kk[hk]]]),
        np.concatenate([ho, sib[hk]]),
        "ambiguous_candidates",
        label,
    )
    group = pd.DataFrame(
        {"g": np.concatenate([np.flatnonzero(held), kk[hk]]), "o": np.concatenate([ho, sib[hk]])}
    )
    links = group.merge(group, on="g")
    links = links[links["o_x"] != links["o_y"]]
    st.link_a.append(links["o_x"].to_numpy(np.int64))
    st.link_b.append(links["o_y"].to_numpy(np.int64))
    keep = np.ones(c.n, dtype=bool)
    keep[hs] = False
    keep_pairs = keep[s]
    return s[keep_pairs], o[keep_pairs]


def _guard_elimination(
    c: _Columns, st: _State, s: IntArray, o: IntArray, score: FloatArray
) -> tuple[IntArray, IntArray, FloatArray]:
    """A later rule's lone candidate that belongs to a held accession contest gets the
    contest's other orders as candidates too (so the study is held), unless the study's own
    date and description prefer it (see ``_preferred``)."""
    if not st.link_a or s.size == 0:
        return s, o, score
    single = np.flatnonzero(np.bincount(s, minlength=c.n)[s] == 1)
    left = pd.DataFrame({"i": single, "o": o[single]})
    right = pd.DataFrame({"o": np.concatenate(st.link_a), "r": np.concatenate(st.link_b)})
    j = left.merge(right, on="o", how="inner", sort=False)
    if j.empty:
        return s, o, score
    i, r = j["i"].to_numpy(np.int64), j["r"].to_numpy(np.int64)
    items, kk = np.unique(i, return_inverse=True)
    bad = ~_preferred(c, s[items], o[items], kk.astype(np.int64), r)[kk]
    add_s, add_o = s[i[bad]], r[bad]
    return (
        np.concatenate([s, add_s]),
        np.concatenate([o, add_o]),
        np.concatenate([score, np.full(add_s.size, np.nan)]),
    )


def _rule_patient_date_modality(c: _Columns, st: _State, rule: MatchRule, label: int) -> None:
    sm = st.open() & (c.s_pid >= 0) & (c.s_day >= 0)
    om = ~st.taken & (c.o_pid >= 0) & (c.o_day >= 0)
    si, oi = np.flatnonzero(sm), np.flatnonzero(om)
    s, o = _window_pairs(
        si, c.s_pid[si], c.s_day[si], oi, c.o_pid[oi], c.o_day[oi], rule.date_window_days
    )
    ok = c.modality_ok(s, o)
    s, o = s[ok], o[ok]
    bad = c.contradicted(s, o, use_pid=False)
    st.reject(s[bad], o[bad], s[~bad], label)
    s, o = s[~bad], o[~bad]
    s, o, score = _guard_elimination(c, st, s, o, np.ones(s.size))
    st.settle(s, o, score, label)


def _rule_demographics(c: _Columns, st: _State, rule: MatchRule, label: int) -> None:
    sm = st.open() & (c.s_dob >= 0) & (c.s_day >= 0)
    om = ~st.taken & (c.o_dob >= 0) & (c.o_day >= 0)
    si, oi = np.flatnonzero(sm), np.flatnonzero(om)
    s, o = _window_pairs(
        si, c.s_dob[si], c.s_day[si], oi, c.o_dob[oi], c.o_day[oi], rule.date_window_days
    )
    ok = c.modality_ok(s, o)
    s, o = s[ok], o[ok]
    score = c.name_scores(s, o)
    ok = score >= rule.min_similarity
    s, o, score = _guard_elimination(c, st, s[ok], o[ok], score[ok])
    st.settle(s, o, score, label)


# ---------------------------------------------------------------------------------------
# Entry points


def match_studies(
    studies: Sequence[StudyRecord],
    orders: Sequence[Order],
    rules: Sequence[MatchRule] = DEFAULT_RULES,
    overrides: Mapping[str, str | None] | None = None,
) -> list[MatchResult]:
    """One ``MatchResult`` per study, in input order (see the module docstring)."""
    n, m = len(studies), len(orders)
    order_ids = [o.order_id for o in orders]
    if len(set(order_ids)) != m:
        raise ValueError("order ids must be unique")
    c = _Columns.build(studies, orders)
    st = _State(n, m)
    uids = [s.study_uid for s in studies]

    if overrides:
        _apply_overrides(st, uids, order_ids, overrides)
    conflict = np.fromiter((bool(s.other_patient_ids) for s in studies), dtype=bool, count=n)
    st.hold(np.flatnonzero(st.open() & conflict), None, "patient_conflict", 0)

    # The accession guard looks as far from the study date as the widest rule window.
    window = max(r.date_window_days for r in rules) if rules else 0
    for rule in rules:
        label = _label(rule.rule)
        if rule.rule == "accession":
            _rule_accession(c, st, label, window)
        elif rule.rule == "patient-date-modality":
            _rule_patient_date_modality(c, st, rule, label)
        else:
            _rule_demographics(c, st, rule, label)
    st.finish()
    return _results(st, uids, order_ids)


def _apply_overrides(
    st: _State, uids: list[str], order_ids: list[str], overrides: Mapping[str, str | None]
) -> None:
    # Loops here run over a person's decisions, not over the population.
    chosen = [(i, overrides[u]) for i, u in enumerate(uids) if u in overrides]
    by_key = {id_key(oid): j for j, oid in enumerate(order_ids)}
    label = _label("override")
    skip, unknown, claim_s, claim_o = [], [], [], []
    for i, target in chosen:
        if target is None:
            skip.append(i)
        elif (j := by_key.get(id_key(target))) is None:
            unknown.append(i)
        else:
            claim_s.append(i)
            claim_o.append(j)
    s_skip = np.array(skip, dtype=np.int64)
    st.status[s_skip] = _SKIP
    st.reason[s_skip] = _reason("override_skip")
    st.rule[s_skip] = label
    st.hold(np.array(unknown, dtype=np.int64), None, "override_unknown_order", label)
    s = np.array(claim_s, dtype=np.int64)
    o = np.array(claim_o, dtype=np.int64)
    # Even a person's decisions keep "one order, one study": two studies overridden onto one
    # order are held, since corrections would give both the same accession and patient.
    st.settle(s, o, np.full(s.size, np.nan), label)


def _results(st: _State, uids: list[str], order_ids: list[str]) -> list[MatchResult]:
    candidates: dict[int, tuple[str, ...]] = {}
    if st.hold_s:
        hs, ho = np.concatenate(st.hold_s), np.concatenate(st.hold_o)
        keep = st.status[hs] == _HOLD
        hs, ho = hs[keep], ho[keep]
        lists: dict[int, list[str]] = {}
        for i, j in zip(hs.tolist(), ho.tolist(), strict=True):
            lists.setdefault(i, []).append(order_ids[j])
        candidates = {i: tuple(sorted(set(v))) for i, v in lists.items()}
    status = st.status.tolist()
    order = st.order.tolist()
    rule = st.rule.tolist()
    reason = st.reason.tolist()
    score = np.round(st.score, 4).tolist()
    return [
        MatchResult(
            study_uid=uid,
            status=_STATUS[status[i]],
            order_id=order_ids[order[i]] if status[i] == _MATCHED else None,
            rule=_LABELS[rule[i]],
            score=None if status[i] != _MATCHED or math.isnan(score[i]) else score[i],
            reason=_REASON_CODES[reason[i]],
            candidates=candidates.get(i, ()),
        )
        for i, uid in enumerate(uids)
    ]


# ---------------------------------------------------------------------------------------
# Corrections

_CanonFn = Callable[[str], str]
# keyword -> (order/study attribute, canonical form, comparison form of a canonical value).
# IDs compare case-sensitively (the destination looks them up verbatim); descriptions compare
# ignoring case, since rewriting 'Ct Head' to 'CT HEAD' would be churn, not a correction.
_CORRECTABLE: Final[dict[str, tuple[str, _CanonFn, _CanonFn]]] = {
    "PatientID": ("patient_id", normalize_id, str),
    "PatientName": ("patient_name", normalize_pn, str),
    "PatientBirthDate": ("birth_date", lenient_date, str),
    "PatientSex": ("sex", lenient_sex, str),
    "AccessionNumber": ("accession", normalize_id, str),
    "StudyDescription": ("description", normalize_text, str.casefold),
}
CORRECTABLE_KEYWORDS: Final = tuple(_CORRECTABLE)


def corrections_for(
    study: StudyRecord, order: Order, correct: Sequence[str]
) -> list[tuple[str, str, str]]:
    """(DICOM keyword, value in the archive, order's canonical value) for each change.

    Both sides are brought to canonical form before comparing, so spelling differences that
    canonicalise away ('Doe^John' vs 'DOE^JOHN^^', '2024-03-05' vs '20240305') are not
    changes; 'before' is the archive's value as it is. An empty order value never erases
    what the archive has. Keywords are taken in the order given, duplicates once.
    """
    out: list[tuple[str, str, str]] = []
    for keyword in dict.fromkeys(correct):
        spec = _CORRECTABLE.get(keyword)
        if spec is None:
            raise SpecError(f"ris.correct: {keyword!r} is not a correctable attribute")
        attr, canon, compare = spec
        after = canon(cast(str, getattr(order, attr)))
        if not after:
            continue
        before = cast(str, getattr(study, attr))
        if compare(canon(before)) != compare(after):
            out.append((keyword, before, after))
    return out
