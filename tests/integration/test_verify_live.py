"""LiveVerifier, driven directly as the executor will, against real Orthanc servers."""

from __future__ import annotations

from pacsmig import api
from pacsmig.journal.store import Journal
from pacsmig.plan.codec import fingerprint, read_plan
from pacsmig.testing.corpus import generate_corpus
from pacsmig.verify.live import LiveVerifier
from tests.integration.conftest import Site
from tests.integration.helpers import sop_uid_of
from tests.integration.test_verify_levels import replace_at, study_of, with_other_pixels

EVERY_LEVEL = """\
verify:
  levels: [counts, instances, attributes, images, commitment]
  image_sample: 1000
  commitment_timeout: 30
"""


def test_live_verification_records_under_the_apply_run(site: Site) -> None:
    files = generate_corpus(site.work / "gen", studies=3, n_series=1, per_series=3)
    for f in files:
        assert site.source.upload(f) is not None
    plan_path = site.work / "plan.json"
    api.plan(site.spec(extra=EVERY_LEVEL), plan_path)
    assert api.apply(plan_path, auto_approve=True).ok
    victim = sorted(sop_uid_of(f) for f in files)[0]
    replace_at(site.dest, victim, with_other_pixels(site.dest.instance_file(victim)))
    bad_study = study_of(site, victim)

    plan = read_plan(plan_path)
    jpath = api.journal_path(plan_path, plan)
    with Journal.open(jpath) as j:
        run_id = j.start_run("apply", fingerprint(plan), None)
    studies = [a.study_uid for a in plan.actions]
    # Two studies' references fill a batch; the third goes alone once the queue idles.
    with LiveVerifier(
        plan,
        jpath,
        index_path=api.index_path(plan_path, plan.header.spec),
        run_id=run_id,
        batch_instances=6,
        batch_wait=0.5,
    ) as live:
        for study in studies:
            live.submit(study)
        summary = live.close(timeout=180)

    assert summary.pending == 0 and summary.finished == 3
    assert summary.statuses == {"verified": 2, "images_differ": 1}
    with Journal.open(jpath) as j:
        found = j.latest_verification()
        assert found is not None
        run, rows = found
        assert run.run_id == run_id and run.kind == "apply"
        assert set(rows) == set(studies)
        for study, row in rows.items():
            assert row["run_id"] == run_id
            detail = row["detail"]
            assert detail["levels"] == ["counts", "instances", "attributes", "images", "commitment"]
            assert detail["commitment"]["committed"] == detail["commitment"]["requested"] == 3
            assert detail["images"]["sampled"] == 3
            want = "images_differ" if study == bad_study else "verified"
            assert row["status"] == want
        (different,) = rows[bad_study]["detail"]["images"]["different"]
        assert different["sop_uid"] == victim
        assert j.needs_resend(bad_study) == {victim}
    # Every committed instance is one Orthanc holds (independent check over REST).
    assert len(site.dest.sop_instance_uids()) == len(files)
