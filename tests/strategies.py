"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

from hypothesis import strategies as st

from pacsmig.inventory.model import Holdings, SeriesRecord, StudyRecord

uid = st.from_regex(r"1\.2\.[1-9][0-9]{0,8}(\.[1-9][0-9]{0,8}){1,4}", fullmatch=True)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=24)
date = st.one_of(st.just(""), st.dates().map(lambda d: d.strftime("%Y%m%d")))


@st.composite
def studies(draw: st.DrawFn) -> StudyRecord:
    series = draw(
        st.lists(
            st.builds(
                SeriesRecord,
                series_uid=uid,
                modality=st.sampled_from(["CT", "MR", "US", "SR", ""]),
                series_number=st.integers(0, 999).map(str),
                description=text,
                instance_count=st.integers(0, 400),
            ),
            max_size=4,
            unique_by=lambda s: s.series_uid,
        )
    )
    return StudyRecord(
        study_uid=draw(uid),
        patient_id=draw(text),
        patient_name=draw(text),
        birth_date=draw(date),
        sex=draw(st.sampled_from(["M", "F", "O", ""])),
        study_date=draw(date),
        accession=draw(text),
        modalities=tuple(sorted({s.modality for s in series if s.modality})),
        description=draw(text),
        series=tuple(series),
        other_patient_ids=draw(st.one_of(st.just(()), st.tuples(text, text))),
    )


@st.composite
def world(draw: st.DrawFn) -> tuple[list[StudyRecord], dict[str, Holdings]]:
    records = draw(st.lists(studies(), max_size=8, unique_by=lambda s: s.study_uid))
    holdings: dict[str, Holdings] = {}
    for rec in records:
        mode = draw(st.sampled_from(["none", "complete", "partial", "extra"]))
        if mode == "none" or not rec.series:
            continue
        counts = {s.series_uid: s.instance_count for s in rec.series}
        if mode == "partial":
            counts = {k: draw(st.integers(0, v)) for k, v in counts.items()}
        elif mode == "extra":
            counts[draw(uid)] = draw(st.integers(1, 5))
        holdings[rec.study_uid] = Holdings(study_uid=rec.study_uid, series_counts=counts)
    return records, holdings
