"""Security basics that need no PACS: file names, HTML escaping, YAML tags, SQL parameters."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pacsmig.apply.spool import StudySpool
from pacsmig.dicomnet.received import ReceivedInstance
from pacsmig.journal.store import Journal
from pacsmig.plan.model import Correction, ExpectedSeries, Plan, StudyAction
from pacsmig.report.context import build_context
from pacsmig.report.render import render_csv, render_html
from pacsmig.spec.load import spec_from_text
from tests.unit.test_plan_codec import SPEC
from tests.unit.test_spec_load import GOOD

HOSTILE = [
    "..",
    "../x",
    "/etc/x",
    "a\x00b",
    "x" * 300,
    "..\\..\\win",
    "~root",
    "$(rm -rf /)",
    "%2e%2e/",
]


@pytest.mark.parametrize("uid", HOSTILE)
def test_spool_paths_stay_under_root(tmp_path: Path, uid: str) -> None:
    root = tmp_path / "spool"
    spool = StudySpool(root, uid, {uid})
    spool(
        ReceivedInstance(
            sop_uid=uid, sop_class_uid="1.2", transfer_syntax="1.2.840.10008.1.2.1", data=b"x"
        )
    )
    written = spool.received[uid].path
    assert written.resolve().is_relative_to(root.resolve())
    assert spool.dir.resolve().parent == root.resolve()
    assert len(written.name) < 64
    spool.cleanup()
    assert not spool.dir.exists()


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=400))
def test_any_uid_gives_a_contained_file_name(uid: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "s"
        spool = StudySpool(root, uid, {uid})
        spool(ReceivedInstance(sop_uid=uid, sop_class_uid="1", transfer_syntax="1", data=b""))
        assert spool.received[uid].path.resolve().is_relative_to(root.resolve())


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]


def _hostile_plan() -> Plan:
    from pacsmig.plan.build import header_for

    evil = '<script>alert("x")</script>'
    action = StudyAction(
        study_uid="1.2.3",
        action="migrate",
        reason="not_at_destination",
        patient_id='"><img src=x onerror=alert(1)>',
        patient_name=evil,
        description=evil,
        series=(ExpectedSeries(series_uid="1.2.3.1", description=evil, instances=1),),
        corrections=(Correction(keyword="PatientName", before=evil, after="<b>x</b>"),),
    )
    return Plan(header=header_for(SPEC, "2026-01-01T00:00:00Z"), actions=(action,))


def test_report_escapes_dicom_values(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite") as journal:
        context = build_context(_hostile_plan(), journal, None, generated_at="now")
    html = render_html("report.html.j2", context)
    scan = _Scan()
    scan.feed(html)
    # The page's own script and its JSON data block; a hostile value adds none.
    assert scan.tags.count("script") == 2, "only the page's own script and data block"
    assert "img" not in scan.tags and "b" not in scan.tags
    assert not scan.handlers
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_templates_never_mark_values_safe() -> None:
    from pacsmig.resources import templates_dir

    for template in templates_dir().glob("*.j2"):
        text = template.read_text()
        assert "|safe" not in text.replace(" ", "") and "Markup(" not in text, template.name


def test_csv_export_neutralises_formulas(tmp_path: Path) -> None:
    import dataclasses

    plan = _hostile_plan()
    plan = dataclasses.replace(
        plan, actions=(dataclasses.replace(plan.actions[0], patient_id='=HYPERLINK("http://x")'),)
    )
    with Journal.open(tmp_path / "j.sqlite") as journal:
        text = render_csv(build_context(plan, journal, None, generated_at="now"))
    assert "\n=HYPERLINK" not in text and ",=HYPERLINK" not in text
    assert "'=HYPERLINK" in text


def test_yaml_python_tag_refused() -> None:
    from pacsmig.errors import SpecError

    with pytest.raises(SpecError, match="not allowed"):
        spec_from_text(GOOD + "journal: !!python/object/new:os.system ['id']\n")
