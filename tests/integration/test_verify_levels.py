"""Verification levels against real Orthanc servers, the destination altered behind pacsmig.

Each alteration is made through Orthanc's REST API (delete, upload, modify) and checked
there independently; verify must catch a changed pixel and a changed patient attribute,
naming the instance and the element, catch a destination that keeps its old copy on a
re-send, and pass a lossless transcode.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import JPEGLosslessSV1

from pacsmig import api
from pacsmig.journal.store import Journal
from pacsmig.testing.corpus import generate_corpus, real_sample_files
from pacsmig.testing.servers import OrthancServer
from tests.integration.conftest import Site, run_cli
from tests.integration.helpers import read, sop_uid_of

ALL_IMAGES = "--image-sample=1000"


def migrate(site: Site, *, studies: int = 2, extra: str = "") -> tuple[Path, list[Path]]:
    files = generate_corpus(site.work / "gen", studies=studies, n_series=1, per_series=3)
    for f in files:
        assert site.source.upload(f) is not None
    plan = site.work / "plan.json"
    api.plan(site.spec(extra=extra), plan)
    result = api.apply(plan, auto_approve=True)
    assert result.ok and result.sent == len(files)
    return plan, files


def latest(plan: Path) -> dict[str, dict[str, Any]]:
    with Journal.open(plan.with_name("plan.journal.sqlite")) as j:
        found = j.latest_verification()
        assert found is not None
        return found[1]


def replace_at(dest: OrthancServer, sop_uid: str, data: bytes) -> None:
    """Swap the destination's copy of an instance for other bytes with the same UID."""
    assert dest.delete_instance(sop_uid)
    assert dest.upload(data) is not None
    assert dest.instance_file(sop_uid) == data


def with_other_pixels(data: bytes) -> bytes:
    ds = read(data)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)
    arr = ds.pixel_array.copy()
    arr[5:9, 5:9] = arr[5:9, 5:9] + 11
    ds.PixelData = arr.astype(ds.pixel_array.dtype).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def study_of(site: Site, sop_uid: str) -> str:
    return str(site.source.instance_tags(sop_uid)["StudyInstanceUID"])


def test_replaced_pixels_are_named_by_instance_and_element(site: Site) -> None:
    plan, files = migrate(site)
    victim = sorted(sop_uid_of(f) for f in files)[1]
    replace_at(site.dest, victim, with_other_pixels(site.dest.instance_file(victim)))

    out = run_cli("verify", plan, "--levels", "counts,instances,images", ALL_IMAGES, check=1)
    assert f"image {victim}: (7FE0,0010) PixelData" in out.stdout
    assert "images_differ" in out.stdout

    rows = latest(plan)
    study = study_of(site, victim)
    assert rows[study]["status"] == "images_differ"
    images = rows[study]["detail"]["images"]
    assert images["sampled"] == 3 and images["equal"] == 2 and images["errors"] == []
    (different,) = images["different"]
    assert different["sop_uid"] == victim
    assert [d["tag"] for d in different["differences"]] == ["(7FE0,0010)"]
    (other,) = set(rows) - {study}
    assert rows[other]["status"] == "verified" and rows[other]["detail"]["images"]["equal"] == 3
    with Journal.open(plan.with_name("plan.journal.sqlite")) as j:
        assert j.needs_resend(study) == {victim}


def test_modified_patient_attribute_shows_before_and_after(site: Site) -> None:
    # One study, so deleting it deletes its patient: Orthanc keeps a patient's tags as first
    # stored while any of its studies remains.
    plan, files = migrate(site, studies=1)
    study = study_of(site, sop_uid_of(files[0]))
    originals = [site.dest.instance_file(u) for u in sorted(site.dest.instances_of_study(study))]
    planned_name = str(read(originals[0]).PatientName)
    site.dest.rest_delete(f"/studies/{site.dest.study_id_for(study)}")
    for data in originals:
        ds = read(data)
        ds.PatientName = "CHANGED^BEHIND^BACK"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        assert site.dest.upload(buf.getvalue()) is not None
    tags = site.dest.rest_get(f"/studies/{site.dest.study_id_for(study)}/patient")
    assert tags["MainDicomTags"]["PatientName"] == "CHANGED^BEHIND^BACK"

    out = run_cli("verify", plan, "--levels", "counts,attributes", check=1)
    assert f"PatientName: planned '{planned_name}', found 'CHANGED^BEHIND^BACK'" in out.stdout
    rows = latest(plan)
    assert rows[study]["status"] == "attributes_differ"
    assert rows[study]["detail"]["attributes"] == [
        {"keyword": "PatientName", "expected": planned_name, "found": "CHANGED^BEHIND^BACK"}
    ]
    assert rows[study]["detail"]["images"] is None  # not asked for


def test_destination_that_keeps_its_old_copy_on_resend(site: Site) -> None:
    site.dest.extra_config["OverwriteInstances"] = False
    site.dest.restart()
    files = generate_corpus(site.work / "gen", studies=1, n_series=1, per_series=3)
    for f in files:
        assert site.source.upload(f) is not None
    victim = sop_uid_of(files[0])
    stale = with_other_pixels(site.source.instance_file(victim))
    assert site.dest.upload(stale) is not None  # an older, different copy already there
    plan = site.work / "plan.json"
    api.plan(site.spec(), plan)
    applied = api.apply(plan, auto_approve=True)
    assert applied.sent == 2 and applied.present == 1

    out = run_cli("verify", plan, "--levels", "counts,instances,images", ALL_IMAGES, check=1)
    assert f"image {victim}: (7FE0,0010) PixelData" in out.stdout

    # Send the right copy again: this destination keeps what it had.
    site.source.store_to_modality("newpacs", [site.source.instance_id_for(victim) or ""])
    assert site.dest.instance_file(victim) == stale
    out = run_cli("verify", plan, "--levels", "counts,images", ALL_IMAGES, check=1)
    assert f"image {victim}: (7FE0,0010) PixelData" in out.stdout
    with Journal.open(plan.with_name("plan.journal.sqlite")) as j:
        assert j.needs_resend(study_of(site, victim)) == {victim}


def test_lossless_transcode_at_the_destination_passes(site: Site) -> None:
    plan, files = migrate(site, studies=1)
    uids = sorted(sop_uid_of(f) for f in files)
    for uid in uids:
        ident = site.dest.instance_id_for(uid)
        data = site.dest._request(
            "POST",
            f"/instances/{ident}/modify",
            json.dumps(
                {"Transcode": JPEGLosslessSV1, "Keep": ["SOPInstanceUID"], "Force": True}
            ).encode(),
            "application/json",
        )
        ds = read(data)
        assert ds.file_meta.TransferSyntaxUID == JPEGLosslessSV1 and ds.SOPInstanceUID == uid
        replace_at(site.dest, uid, data)
    # Independently: different bytes at the destination, the same pixels decoded.
    for uid in uids:
        ours, theirs = read(site.source.instance_file(uid)), read(site.dest.instance_file(uid))
        assert ours.PixelData != theirs.PixelData
        assert np.array_equal(ours.pixel_array, theirs.pixel_array)

    out = run_cli("verify", plan, "--levels", "counts,instances,attributes,images", ALL_IMAGES)
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = latest(plan).values()
    assert row["status"] == "verified"
    assert row["detail"]["images"]["equal"] == len(uids) == row["detail"]["images"]["sampled"]


def test_storage_commitment_with_orthanc(site: Site) -> None:
    plan, files = migrate(site, extra="verify:\n  levels: [counts, instances, commitment]\n")
    result = api.verify(plan)
    assert result.ok
    rows = latest(plan)
    total = 0
    for row in rows.values():
        commitment = row["detail"]["commitment"]
        assert commitment["failed"] == [] and not commitment["timed_out"]
        assert commitment["committed"] == commitment["requested"] == 3
        assert row["detail"]["levels"] == ["counts", "instances", "commitment"]
        total += commitment["committed"]
    assert total == len(files) == len(site.dest.sop_instance_uids())


def test_cmove_source_images_then_commitment_share_local_port(site: Site) -> None:
    """Source copies arrive by C-MOVE at local.port, then reports do: one after the other."""
    files = generate_corpus(site.work / "gen", studies=1, n_series=1, per_series=3)
    for f in files:
        assert site.source.upload(f) is not None
    plan = site.work / "plan.json"
    api.plan(site.spec("c-move", extra="verify:\n  levels: [counts]\n"), plan)
    assert api.apply(plan, auto_approve=True).ok
    result = api.verify(plan, levels="counts,instances,images,commitment", image_sample=10)
    (check,) = result.checks
    assert check.status == "verified", check
    assert check.images is not None and check.images.equal == 3
    assert check.commitment is not None and check.commitment.committed == 3


def test_image_sample_is_the_same_on_a_rerun(site: Site) -> None:
    plan, _ = migrate(site)
    api.verify(plan, levels="counts,images", image_sample="1")
    first = {k: v["detail"]["images"] for k, v in latest(plan).items()}
    api.verify(plan, levels="counts,images", image_sample="1")
    again = {k: v["detail"]["images"] for k, v in latest(plan).items()}
    assert first == again and all(v["sampled"] == 1 and v["equal"] == 1 for v in again.values())
    bad = run_cli("verify", plan, "--levels", "counts,pixels", check=2)
    assert "unknown level 'pixels'" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("verify", plan, "--image-sample", "1.5", check=2)
    assert "--image-sample" in bad.stderr


def test_untouched_real_samples_pass_every_level(site: Site) -> None:
    """No false alarm on real-world data: JPEG, JPEG 2000, RLE, private and UN elements."""
    accepted = [f for f in real_sample_files() if site.source.upload(f) is not None]
    assert len(accepted) >= 8
    plan = site.work / "plan.json"
    api.plan(site.spec(), plan)
    assert api.apply(plan, auto_approve=True).ok
    out = run_cli(
        "verify", plan, "--levels", "counts,instances,attributes,images,commitment", ALL_IMAGES
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = latest(plan)
    assert sum(r["detail"]["images"]["equal"] for r in rows.values()) == len(
        site.dest.sop_instance_uids()
    )


def test_filesystem_source_copies_are_read_from_legacy_storage(tmp_path: Path) -> None:
    """Big-endian, bare and gzipped files: the source copy is the normalised file."""
    from tests.integration.test_filesystem_source import build_tree

    good = build_tree(tmp_path)
    with OrthancServer(tmp_path / "dest", aet="NEWPACS") as dest:
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            "version: 1\nname: tape\nlocal: {ae_title: PACSMIG}\n"
            "source:\n  kind: filesystem\n  roots: [raid]\n  exclude: ['**/*.tmp']\n"
            f"destination: {{ae_title: NEWPACS, host: 127.0.0.1, port: {dest.dicom_port}}}\n"
        )
        plan = tmp_path / "plan.json"
        api.plan(spec, plan)
        assert api.apply(plan, auto_approve=True).ok
        out = run_cli("verify", plan, "--levels", "counts,instances,images", ALL_IMAGES)
        assert out.returncode == 0, out.stdout + out.stderr
        victim = next(u for u in sorted(good) if "PixelData" in read(dest.instance_file(u)))
        replace_at(dest, victim, with_other_pixels(dest.instance_file(victim)))
        out = run_cli("verify", plan, "--levels", "counts,images", ALL_IMAGES, check=1)
        assert f"image {victim}: (7FE0,0010)" in out.stdout
