"""Quality and scale benchmark for study/order matching on a labelled, messy corpus.

    python bench/reconcile_bench.py --studies 20000      # quality table per error kind
    python bench/reconcile_bench.py --scale 1000000      # + wall time and memory at 1M x 1M

The corpus knows the true order of every study, so every match is scored right or wrong. Each
true pair carries one error *kind*; the kinds mimic what RIS/PACS migrations meet: manual
registrations at the modality (no accession, typed names), accession typos that land on a
neighbour's order (RIS numbers are sequential), exams done a day or two off their scheduled
date, day/month swaps, MRN changes after patient merges, duplicate orders, twins, orders
never performed and studies never ordered.

"Makeable" is what a careful person could pair with the same evidence and no more: the
study's own accession, or (MRN or birth date + a recognisable name) within two days -- and,
without the accession, only when no other order of the same patient with a compatible
modality lies within those two days (a person could not choose either). It is computed from
the generator's truth (patient identity), not by running the matcher.

Orders carry a requested-procedure description (``PROCEDURES``) and studies carry their true
order's with the noise archives show (case, abbreviations, a dropped modality word, 16-char
truncation, a protocol name instead, empty: ``_study_description``), since real archives keep
the study description and the matcher's accession guard weighs it. Follow-ups repeat the
previous procedure with probability ``FOLLOW_UP_SAME_PROCEDURE``. Descriptions come from their
own random stream, so the rest of the corpus is what it was before they were added.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import resource
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pacsmig.inventory.model import StudyRecord  # noqa: E402
from pacsmig.reconcile.match import DEFAULT_RULES, MatchResult, match_studies  # noqa: E402
from pacsmig.reconcile.normalize import modality_key  # noqa: E402
from pacsmig.reconcile.orders import Order  # noqa: E402


def _words(text: str) -> list[str]:
    return text.split()


FAMILIES = _words(
    "SMITH JOHNSON WILLIAMS BROWN JONES GARCIA MILLER DAVIS RODRIGUEZ MARTINEZ HERNANDEZ "
    "LOPEZ GONZALEZ WILSON ANDERSON THOMAS TAYLOR MOORE JACKSON MARTIN LEE PEREZ THOMPSON "
    "WHITE HARRIS SANCHEZ CLARK RAMIREZ LEWIS ROBINSON WALKER YOUNG ALLEN KING WRIGHT SCOTT "
    "TORRES NGUYEN HILL FLORES GREEN ADAMS NELSON BAKER HALL RIVERA CAMPBELL MITCHELL CARTER "
    "ROBERTS MÜLLER SCHMIDT SCHNEIDER FISCHER WEBER MEYER WAGNER BECKER SCHULZ HOFFMANN "
    "LEFÈVRE DUBOIS MOREAU LAURENT GARÇON FRANÇOIS O'BRIEN O'CONNOR SMITH-JONES "
    "VAN_DER_BERG DE_LA_CRUZ NÚÑEZ GONZÁLEZ JIMÉNEZ ÅSTRÖM LINDQVIST SØRENSEN KOWALSKI "
    "NOWAK WIŚNIEWSKI DVOŘÁK NOVÁK HORVÁTH KOVAČ PETROVIĆ YILMAZ ÖZTÜRK ŞAHIN"
)
# '_' joins multi-word family names for the split above.
FAMILIES = [f.replace("_", " ") for f in FAMILIES]
GIVENS = _words(
    "JAMES MARY ROBERT PATRICIA JOHN JENNIFER MICHAEL LINDA DAVID ELIZABETH WILLIAM BARBARA "
    "RICHARD SUSAN JOSEPH JESSICA THOMAS SARAH CHARLES KAREN CHRISTOPHER LISA DANIEL NANCY "
    "MATTHEW BETTY ANTHONY MARGARET MARK SANDRA DONALD ASHLEY STEVEN KIMBERLY PAUL EMILY "
    "ANDREW DONNA JOSHUA MICHELLE KENNETH CAROL KEVIN AMANDA BRIAN DOROTHY GEORGE MELISSA "
    "JÜRGEN RENÉ JOSÉ FRANÇOISE ZOË BJÖRN SØREN ANNA ANNE HANS ÉLODIE MARÍA LUÍS ÇAĞLA "
    "ANNA-LENA JEAN-PIERRE MARIE-CLAIRE"
)
SYLLABLES = _words("KA LO MI RA TE SU NO BEL VAN DOR EN IS TAR GOL WIN FER LAN SOR PEL MAR")
MODALITIES = ("CT", "MR", "CR", "DX", "US", "MG", "NM", "PT", "XA", "RF")
MOD_WEIGHTS = np.array([24, 16, 14, 10, 14, 8, 4, 3, 4, 3], dtype=float)
MOD_WEIGHTS /= MOD_WEIGHTS.sum()
DERIVED = ("SR", "PR", "KO")
# Requested-procedure descriptions per modality, as a RIS books them.
PROCEDURES: dict[str, tuple[str, ...]] = {
    "CT": (
        "CT HEAD WITHOUT CONTRAST",
        "CT CHEST WITH CONTRAST",
        "CT CHEST WITHOUT CONTRAST",
        "CT ABDOMEN PELVIS WITH CONTRAST",
        "CT ANGIOGRAPHY CHEST",
        "CT CERVICAL SPINE WITHOUT CONTRAST",
        "CT LUMBAR SPINE WITHOUT CONTRAST",
        "CT SINUS WITHOUT CONTRAST",
    ),
    "MR": (
        "MRI BRAIN WITH AND WITHOUT CONTRAST",
        "MRI BRAIN WITHOUT CONTRAST",
        "MRI LUMBAR SPINE WITHOUT CONTRAST",
        "MRI CERVICAL SPINE WITHOUT CONTRAST",
        "MRI KNEE RIGHT WITHOUT CONTRAST",
        "MRI KNEE LEFT WITHOUT CONTRAST",
        "MRI SHOULDER RIGHT WITHOUT CONTRAST",
        "MRI PROSTATE WITH AND WITHOUT CONTRAST",
    ),
    "CR": (
        "XR CHEST 2 VIEWS",
        "XR CHEST 1 VIEW",
        "XR KNEE LEFT 3 VIEWS",
        "XR HAND RIGHT 3 VIEWS",
        "XR LUMBAR SPINE 2 VIEWS",
        "XR ABDOMEN 1 VIEW",
        "XR PELVIS 1 VIEW",
    ),
    "US": (
        "US ABDOMEN COMPLETE",
        "US PELVIS TRANSVAGINAL",
        "US RENAL",
        "US THYROID",
        "US OB SECOND TRIMESTER",
        "US VENOUS DOPPLER LOWER EXTREMITY LEFT",
        "US BREAST RIGHT",
    ),
    "MG": (
        "MG SCREENING BILATERAL",
        "MG DIAGNOSTIC LEFT",
        "MG DIAGNOSTIC RIGHT",
        "MG DIAGNOSTIC BILATERAL",
    ),
    "NM": ("NM BONE SCAN WHOLE BODY", "NM MYOCARDIAL PERFUSION", "NM THYROID UPTAKE"),
    "PT": ("PET CT SKULL BASE TO THIGH", "PET CT WHOLE BODY"),
    "XA": ("XA CORONARY ANGIOGRAPHY", "XA CEREBRAL ANGIOGRAPHY", "XA PERIPHERAL ANGIOGRAPHY"),
    "RF": ("RF UPPER GI SERIES", "RF BARIUM SWALLOW", "RF VOIDING CYSTOURETHROGRAM"),
}
PROCEDURES["DX"] = PROCEDURES["CR"]
# A follow-up within two days repeats the same procedure this often (a control head CT);
# otherwise it is another procedure of the same modality, drawn at random (which can also be
# the same one).
FOLLOW_UP_SAME_PROCEDURE = 0.35
_ABBREVIATIONS = (
    ("WITH AND WITHOUT", "W/WO"),
    ("WITHOUT", "W/O"),
    ("WITH ", "W/ "),
    ("CONTRAST", "CONT"),
    ("LEFT", "LT"),
    ("RIGHT", "RT"),
    ("ABDOMEN", "ABD"),
    ("BILATERAL", "BILAT"),
    ("VIEWS", "VW"),
)

# kind -> weight among true pairs. '_na' = the study also lacks its accession.
PAIR_KINDS: dict[str, float] = {
    "clean": 0.50,
    "missing_accession": 0.10,
    "wrong_accession": 0.04,
    "name_typo_na": 0.04,
    "swapped_name_na": 0.03,
    "shifted_date_na": 0.05,
    "transposed_date": 0.02,
    "transposed_date_na": 0.01,
    "mrn_merge": 0.03,
    "mrn_merge_na": 0.04,
    "mrn_merge_name_typo_na": 0.02,
    "mrn_merge_swapped_na": 0.01,
    "mrn_merge_shifted_na": 0.02,
    "duplicate_order": 0.03,
    "duplicate_order_na": 0.01,
    "twin_mrn_merge_na": 0.01,
    "follow_up_na": 0.04,
}
STUDY_ONLY_SHARE = 0.04  # studies with no order (outside images, unordered exams)
ORDER_ONLY_SHARE = 0.05  # orders with no study (no-shows, cancellations)
WINDOW = 2

D0 = dt.date(2014, 1, 1).toordinal()
D1 = dt.date(2024, 12, 31).toordinal()
B0 = dt.date(1930, 1, 1).toordinal()
B1 = dt.date(2020, 12, 31).toordinal()


@dataclass(slots=True)
class Corpus:
    studies: list[StudyRecord]
    orders: list[Order]
    kind: list[str]  # per study
    truth: list[str | None]  # per study: true order id
    makeable: np.ndarray  # per study: a careful person could pair it
    person: np.ndarray  # per study: true patient (a merged patient keeps one number)
    day: np.ndarray  # per study: study date as a day ordinal
    order_person: dict[str, int]  # order id -> patient


class _Dates:
    """ordinal -> YYYYMMDD, cached: strftime per row would dominate generation at 1M."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, ordinal: int) -> str:
        s = self._cache.get(ordinal)
        if s is None:
            s = self._cache[ordinal] = dt.date.fromordinal(ordinal).strftime("%Y%m%d")
        return s


def _typo(rng: np.random.Generator, word: str) -> str:
    letters = "ABCDEFGHIJKLMNOPRSTUVWY"
    if len(word) < 4:
        return word + letters[int(rng.integers(len(letters)))]
    i = int(rng.integers(1, len(word) - 1))
    op = int(rng.integers(4))
    c = letters[int(rng.integers(len(letters)))]
    if op == 0:
        return word[:i] + c + word[i + 1 :]  # substitution
    if op == 1:
        return word[:i] + word[i + 1 :]  # deletion
    if op == 2:
        return word[:i] + c + word[i:]  # insertion
    return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]  # transposition


def _study_description(rng: np.random.Generator, proc: str, r: float) -> str:
    """What the archive shows for a booked procedure: usually the RIS text as the modality
    received it from the worklist, otherwise as a technologist or an interface left it."""
    if r < 0.50:
        return proc
    if r < 0.62:
        return proc.title() if r < 0.58 else proc.lower()
    if r < 0.74:  # abbreviated by a person or a 64-character interface
        out = proc
        for long, short in _ABBREVIATIONS:
            out = out.replace(long, short)
        return out
    if r < 0.82:  # modality word dropped or spelled differently
        words = proc.split()
        return " ".join(words[1:]) if rng.random() < 0.5 else f"{words[0]}-{' '.join(words[1:])}"
    if r < 0.89:  # cut at 16 characters (SH-sized fields on older modalities)
        return proc[:16].rstrip()
    if r < 0.95:  # the protocol name instead of the booked procedure
        return f"{proc.split()[1]} ROUTINE"
    return ""  # not filled in


def _ascii_fold(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _transpose(ordinal: int) -> int:
    """Day and month swapped, or, where that is no date or no change, a year digit slip."""
    d = dt.date.fromordinal(ordinal)
    if d.day <= 12 and d.day != d.month:
        return dt.date(d.year, d.day, d.month).toordinal()
    return dt.date(d.year - 1 if d.year > 2014 else d.year + 1, d.month, min(d.day, 28)).toordinal()


def generate_corpus(n_studies: int, seed: int = 7) -> Corpus:
    rng = np.random.default_rng(seed)
    day = _Dates()
    n_study_only = int(n_studies * STUDY_ONLY_SHARE)
    n_pairs = n_studies - n_study_only
    n_patients = max(n_studies // 3, 10)

    # --- patients -------------------------------------------------------------------------
    n_syn = n_patients // 3
    syn = ["".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))) for _ in range(n_syn)]
    fam_idx = rng.integers(len(FAMILIES), size=n_patients - n_syn)
    families = [FAMILIES[i] for i in fam_idx] + syn
    givens = [GIVENS[i] for i in rng.integers(len(GIVENS), size=n_patients)]
    middles = [
        GIVENS[i] if r < 0.25 else ""
        for i, r in zip(
            rng.integers(len(GIVENS), size=n_patients), rng.random(n_patients), strict=True
        )
    ]
    dobs = rng.integers(B0, B1, size=n_patients)
    sexes = rng.choice(np.array(["M", "F"]), size=n_patients)
    mrn_perm = rng.permutation(n_patients * 2)
    mrns = [f"M{v:08d}" for v in mrn_perm[:n_patients]]
    old_mrns = [f"M{v:08d}" for v in mrn_perm[n_patients:]]

    def pn(p: int) -> str:
        return "^".join(x for x in (families[p], givens[p], middles[p]) if x).rstrip("^")

    # --- exams (true pairs) -----------------------------------------------------------------
    kinds = list(PAIR_KINDS)
    weights = np.array([PAIR_KINDS[k] for k in kinds])
    pair_kind = rng.choice(len(kinds), size=n_pairs, p=weights / weights.sum())
    pat = rng.integers(n_patients, size=n_pairs)
    exam_day = rng.integers(D0, D1, size=n_pairs)
    mod = rng.choice(len(MODALITIES), size=n_pairs, p=MOD_WEIGHTS)
    # Follow-ups repeat the previous exam's patient and modality a day or two later.
    fu = np.flatnonzero(np.array(kinds)[pair_kind] == "follow_up_na")
    fu = fu[fu > 0]
    pat[fu] = pat[fu - 1]
    mod[fu] = mod[fu - 1]
    exam_day[fu] = exam_day[fu - 1] + rng.integers(0, 3, size=fu.size)
    # Descriptions draw from their own stream, so adding them left the rest of the corpus
    # (kinds, patients, dates, typos) exactly as it was: before/after compare like for like.
    drng = np.random.default_rng([seed, 1])
    proc_pick = drng.random(n_pairs)
    proc_of = [PROCEDURES[MODALITIES[int(x)]] for x in mod]
    proc = [p[int(r * len(p))] for p, r in zip(proc_of, proc_pick, strict=True)]
    same = drng.random(fu.size) < FOLLOW_UP_SAME_PROCEDURE
    for i, keep in zip(fu.tolist(), same.tolist(), strict=True):
        if keep:
            proc[i] = proc[i - 1]
    desc_noise = drng.random(n_pairs)
    twin_desc = drng.random((n_pairs, 2))
    order_seq = np.argsort(exam_day, kind="stable")
    acc_num = np.empty(n_pairs, dtype=np.int64)
    acc_num[order_seq] = np.arange(n_pairs) + 10_000_000  # sequential, like a RIS counter

    studies: list[StudyRecord] = []
    orders: list[Order] = []
    kind_out: list[str] = []
    truth: list[str | None] = []
    study_patient: list[int] = []
    study_day: list[int] = []
    study_mod: list[str] = []
    has_acc_evidence: list[bool] = []
    uid_seq = 0
    order_seq_no = 0

    def new_uid() -> str:
        nonlocal uid_seq
        uid_seq += 1
        return f"1.2.826.0.1.3680043.10.999.{uid_seq}"

    def new_order_id() -> str:
        nonlocal order_seq_no
        order_seq_no += 1
        return f"ORD{order_seq_no:09d}"

    rand = rng.random(size=(n_pairs, 4))
    for i in range(n_pairs):
        k = kinds[pair_kind[i]]
        p = int(pat[i])
        m = MODALITIES[int(mod[i])]
        d = int(exam_day[i])
        acc = f"A{acc_num[i]}"
        oid = new_order_id()
        o_name = pn(p)
        o_pid = mrns[p]
        orders.append(
            Order(
                order_id=oid,
                accession=acc,
                patient_id=o_pid,
                patient_name=o_name,
                birth_date=day(int(dobs[p])),
                sex=str(sexes[p]),
                study_date=day(d),
                modality=m,
                description=proc[i],
            )
        )
        s_name = o_name
        # Archives often lose accents (charset trouble) or keep the modality's mixed case.
        if rand[i, 0] < 0.12:
            s_name = _ascii_fold(s_name)
        elif rand[i, 0] < 0.15:
            s_name = s_name.encode("ascii", "replace").decode()
        elif rand[i, 0] < 0.3:
            s_name = s_name.title()
        s_pid, s_acc, s_day = o_pid, acc, d
        s_dob = day(int(dobs[p]))
        s_mods: tuple[str, ...] = (m,)
        if m == "CR" and rand[i, 1] < 0.5:
            s_mods = ("DX",)
        if rand[i, 2] < 0.2:
            s_mods = (*s_mods, DERIVED[int(rand[i, 3] * 3)])
        if k.endswith("_na") or k == "missing_accession":
            s_acc = ""
        if k == "wrong_accession":
            s_acc = f"A{acc_num[i] + int(rng.choice([-10, -1, 1, 10]))}"
        if "name_typo" in k:
            comps = s_name.split("^")
            j = 0 if len(comps) == 1 or rand[i, 3] < 0.6 else 1
            comps[j] = _typo(rng, comps[j])
            s_name = "^".join(comps)
        if "swapped" in k:
            comps = s_name.split("^")
            if len(comps) >= 2:
                comps[0], comps[1] = comps[1], comps[0]
            s_name = "^".join(comps)
        if "shifted" in k:
            s_day = d + int(rng.choice([-2, -1, 1, 2]))
        if "transposed" in k:
            s_day = _transpose(d)
        if "mrn_merge" in k:
            s_pid = old_mrns[p]
        if k.startswith("duplicate_order"):
            orders.append(
                Order(
                    order_id=new_order_id(),
                    accession=f"D{acc_num[i]}",
                    patient_id=o_pid,
                    patient_name=o_name,
                    birth_date=day(int(dobs[p])),
                    sex=str(sexes[p]),
                    study_date=day(d),
                    modality=m,
                    description=proc[i],
                )
            )
        if k.startswith("twin"):
            # A twin: same family and birth date, own given name and MRN, imaged the same day
            # on the same modality, whose study also lacks an accession.
            t_given = GIVENS[(GIVENS.index(givens[p]) + 1 + int(rand[i, 3] * 5)) % len(GIVENS)]
            t_name = f"{families[p]}^{t_given}"
            t_mrn = f"T{uid_seq:09d}"
            t_oid = new_order_id()
            t_procs = PROCEDURES[m]
            t_proc = t_procs[int(twin_desc[i, 0] * len(t_procs))]
            orders.append(
                Order(
                    order_id=t_oid,
                    accession=f"T{acc_num[i]}",
                    patient_id=t_mrn,
                    patient_name=t_name,
                    birth_date=day(int(dobs[p])),
                    sex=str(sexes[p]),
                    study_date=day(d),
                    modality=m,
                    description=t_proc,
                )
            )
            studies.append(
                StudyRecord(
                    study_uid=new_uid(),
                    patient_id=t_mrn,
                    patient_name=t_name,
                    birth_date=day(int(dobs[p])),
                    sex=str(sexes[p]),
                    study_date=day(d),
                    accession="",
                    modalities=(m,),
                    description=_study_description(drng, t_proc, float(twin_desc[i, 1])),
                )
            )
            kind_out.append("twin_sibling_na")
            truth.append(t_oid)
            study_patient.append(len(mrns))
            mrns.append(t_mrn)  # the twin is a patient of their own
            study_day.append(d)
            study_mod.append(m)
            has_acc_evidence.append(False)
        studies.append(
            StudyRecord(
                study_uid=new_uid(),
                patient_id=s_pid,
                patient_name=s_name,
                birth_date=s_dob,
                sex=str(sexes[p]),
                study_date=day(s_day),
                accession=s_acc,
                modalities=s_mods,
                description=_study_description(drng, proc[i], float(desc_noise[i])),
            )
        )
        kind_out.append(k)
        truth.append(oid)
        study_patient.append(p)
        study_day.append(s_day)
        study_mod.append(m)
        has_acc_evidence.append(s_acc == acc)

    # --- studies with no order, orders with no study ------------------------------------------
    for p, d, mi in zip(
        rng.integers(n_patients, size=n_study_only).tolist(),
        rng.integers(D0, D1, size=n_study_only).tolist(),
        rng.choice(len(MODALITIES), size=n_study_only, p=MOD_WEIGHTS).tolist(),
        strict=True,
    ):
        m = MODALITIES[mi]
        studies.append(
            StudyRecord(
                study_uid=new_uid(),
                patient_id=mrns[p],
                patient_name=pn(p),
                birth_date=day(int(dobs[p])),
                sex=str(sexes[p]),
                study_date=day(d),
                accession=f"EXT{d}{mi}" if d % 2 else "",
                modalities=(m,),
                description="OUTSIDE IMAGES",
            )
        )
        kind_out.append("study_without_order")
        truth.append(None)
        study_patient.append(p)
        study_day.append(d)
        study_mod.append(m)
        has_acc_evidence.append(False)
    n_order_only = int(len(orders) * ORDER_ONLY_SHARE)
    for p, d, mi in zip(
        rng.integers(n_patients, size=n_order_only).tolist(),
        rng.integers(D0, D1, size=n_order_only).tolist(),
        rng.choice(len(MODALITIES), size=n_order_only, p=MOD_WEIGHTS).tolist(),
        strict=True,
    ):
        orders.append(
            Order(
                order_id=new_order_id(),
                accession=f"N{order_seq_no}",
                patient_id=mrns[p],
                patient_name=pn(p),
                birth_date=day(int(dobs[p])),
                sex=str(sexes[p]),
                study_date=day(d),
                modality=MODALITIES[mi],
                description=PROCEDURES[MODALITIES[mi]][d % len(PROCEDURES[MODALITIES[mi]])],
            )
        )

    makeable = _makeable(orders, truth, study_patient, study_day, study_mod, has_acc_evidence, mrns)
    person_of_mrn = {v: i for i, v in enumerate(mrns)}
    return Corpus(
        studies=studies,
        orders=orders,
        kind=kind_out,
        truth=truth,
        makeable=makeable,
        person=np.array(study_patient),
        day=np.array(study_day),
        order_person={o.order_id: person_of_mrn[o.patient_id] for o in orders},
    )


def _makeable(
    orders: list[Order],
    truth: list[str | None],
    study_patient: list[int],
    study_day: list[int],
    study_mod: list[str],
    has_acc: list[bool],
    mrns: list[str],
) -> np.ndarray:
    """Careful-person pairability from the generator's truth (see the module docstring)."""
    person_of_mrn = {v: i for i, v in enumerate(mrns)}
    o_person = [person_of_mrn.get(o.patient_id, -1 - i) for i, o in enumerate(orders)]
    o = pd.DataFrame(
        {
            "person": o_person,
            "oday": [
                dt.date(
                    int(x.study_date[:4]), int(x.study_date[4:6]), int(x.study_date[6:])
                ).toordinal()
                for x in orders
            ],
            "omod": [modality_key(x.modality) for x in orders],
            "oid": [x.order_id for x in orders],
        }
    )
    s = pd.DataFrame(
        {
            "sidx": np.arange(len(truth)),
            "person": study_patient,
            "sday": study_day,
            "smod": [modality_key(x) for x in study_mod],
            "truth": truth,
        }
    )
    j = s.merge(o, on="person")
    j = j[(j.sday - j.oday).abs() <= WINDOW]
    true_row = j.oid == j.truth
    compat = j.smod == j.omod
    # A rival whose own study carries its accession is eliminated, as a person would.
    claimed = {t for t, a in zip(truth, has_acc, strict=True) if a and t is not None}
    free = ~j.oid.isin(claimed)
    near_true = j[true_row].sidx.unique()
    rivals = j[~true_row & compat & free].sidx.unique()
    n = len(truth)
    in_window = np.zeros(n, dtype=bool)
    in_window[near_true] = True
    ambiguous = np.zeros(n, dtype=bool)
    ambiguous[rivals] = True
    has_truth = np.array([t is not None for t in truth])
    acc = np.array(has_acc)
    # Outside-window pairs with no accession are not makeable; twins are told apart by name.
    return has_truth & (acc | (in_window & ~ambiguous))


# ---------------------------------------------------------------------------------------
# Scoring


def score(corpus: Corpus, results: list[MatchResult]) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "kind": corpus.kind,
            "truth": corpus.truth,
            "makeable": corpus.makeable,
            "status": [r.status for r in results],
            "got": [r.order_id for r in results],
        }
    )
    matched = df.status == "matched"
    df["tp"] = matched & (df.got == df.truth)
    df["fp"] = matched & (df.got != df.truth)
    # A false match is "blind" when everything the study shows fits the wrong order as well as
    # the right one: same patient, date within the window, compatible modality (the rules
    # checked that), and an accession that is empty, unknown to the RIS, or the wrong order's
    # own (a typo that landed on the patient's other exam). No rule on these attributes can
    # tell such orders apart; only data the inputs lack (exam time, procedure code) could.
    orders = {o.order_id: o for o in corpus.orders}
    known_acc = {o.accession for o in corpus.orders}
    blind = np.zeros(len(df), dtype=bool)
    for i in np.flatnonzero(df.fp.to_numpy()).tolist():
        got = orders[results[i].order_id or ""]
        acc = corpus.studies[i].accession
        got_day = dt.date(
            int(got.study_date[:4]), int(got.study_date[4:6]), int(got.study_date[6:])
        ).toordinal()
        blind[i] = (
            corpus.order_person[got.order_id] == corpus.person[i]
            and abs(got_day - int(corpus.day[i])) <= WINDOW
            and (not acc or acc == got.accession or acc not in known_acc)
        )
    df["fp_blind"] = blind
    df["held"] = df.status == "hold"
    df["unmatched"] = df.status == "unmatched"
    df["tp_makeable"] = df.tp & df.makeable

    def row(g: pd.DataFrame) -> dict[str, float]:
        n = len(g)
        pairs = int(g.truth.notna().sum())
        tp, fp = int(g.tp.sum()), int(g.fp.sum())
        mk = int(g.makeable.sum())
        return {
            "studies": n,
            "makeable": mk,
            "TP": tp,
            "FP": fp,
            "FP_blind": int(g.fp_blind.sum()),
            "held": int(g.held.sum()),
            "unmatched": int(g.unmatched.sum()),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / pairs if pairs else float("nan"),
            "recall_makeable": int(g.tp_makeable.sum()) / mk if mk else float("nan"),
            "hold_rate": int(g.held.sum()) / n if n else float("nan"),
        }

    order = [*PAIR_KINDS, "twin_sibling_na", "study_without_order"]
    rows = {k: row(df[df.kind == k]) for k in order if (df.kind == k).any()}
    rows["ALL"] = row(df)
    return pd.DataFrame.from_dict(rows, orient="index")


def _fmt(table: pd.DataFrame) -> str:
    out = table.copy()
    for c in ("precision", "recall", "recall_makeable", "hold_rate"):
        out[c] = out[c].map(lambda v: "-" if v != v else f"{100 * v:.2f}%")
    return str(out.to_string())


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_hwm() -> bool:
    """Reset this process's peak-RSS mark (Linux >= 4.0), so generation does not count."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _hwm_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=20_000, help="corpus size for quality")
    ap.add_argument("--scale", type=int, default=0, help="also time matching at this size")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    n = args.scale or args.studies

    t0 = time.perf_counter()
    corpus = generate_corpus(n, seed=args.seed)
    t_gen = time.perf_counter() - t0
    gc.collect()
    rss_before = _rss_mib()
    hwm_reset = _reset_hwm()
    print(
        f"corpus: {len(corpus.studies):,} studies, {len(corpus.orders):,} orders, "
        f"{int(corpus.makeable.sum()):,} makeable pairs (generated in {t_gen:.1f} s)"
    )
    print(
        "rules: "
        + "; ".join(
            f"{r.rule}"
            + (f" window {r.date_window_days}" if r.rule != "accession" else "")
            + (f" min {r.min_similarity}" if r.rule == "demographics" else "")
            for r in DEFAULT_RULES
        )
    )

    t0 = time.perf_counter()
    results = match_studies(corpus.studies, corpus.orders, DEFAULT_RULES)
    t_match = time.perf_counter() - t0
    peak = _hwm_mib() if hwm_reset else _peak_mib()

    print()
    print(_fmt(score(corpus, results)))
    print()
    reasons = Counter(r.reason for r in results if r.status != "matched")
    rules = Counter(r.rule for r in results if r.status == "matched")
    print("matched by rule: " + ", ".join(f"{k}={v:,}" for k, v in rules.most_common()))
    print("not matched:     " + ", ".join(f"{k}={v:,}" for k, v in reasons.most_common()))
    print()
    print(f"match_studies wall time: {t_match:.2f} s")
    print(
        f"memory: RSS with the inputs loaded {rss_before:,.0f} MiB; peak RSS while matching "
        f"{peak:,.0f} MiB ({'VmHWM reset after generation' if hwm_reset else 'ru_maxrss'}); "
        f"matching added at most {max(peak - rss_before, 0):,.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
