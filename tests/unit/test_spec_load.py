from __future__ import annotations

from pathlib import Path

import pytest

from pacsmig.errors import SpecError
from pacsmig.spec.load import load_spec, spec_from_text

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
version: 1
name: holdout
local:
  ae_title: PACSMIG        # our calling AE title
  port: 11113              # our Storage SCP port, used for C-MOVE
source:
  kind: dimse
  ae_title: LEGACY
  host: 127.0.0.1
  port: 4242
  retrieve: c-get          # c-get | c-move
destination:
  ae_title: NEWPACS
  host: 127.0.0.1
  port: 4243
"""


def test_issue_example_validates_as_is() -> None:
    spec = spec_from_text(GOOD)
    assert spec.name == "holdout"
    assert spec.local.ae_title == "PACSMIG" and spec.local.port == 11113
    assert spec.source.retrieve == "c-get"
    assert (spec.source.host, spec.source.port, spec.source.ae_title) == (
        "127.0.0.1",
        4242,
        "LEGACY",
    )
    assert (spec.destination.ae_title, spec.destination.port) == ("NEWPACS", 4243)
    assert spec.select.date_range() == ""


def test_shipped_example_spec_loads() -> None:
    spec = load_spec(REPO / "plans" / "example.yaml")
    assert spec.version == 1


def test_misspelt_key_names_key_line_and_expectation() -> None:
    text = GOOD.replace("  retrieve: c-get", "  retreive: c-get")
    with pytest.raises(SpecError) as info:
        spec_from_text(text, source_name="spec.yaml")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("spec.yaml line 11: source.retreive: unknown key")
    assert "did you mean 'retrieve'" in msg


def test_bad_value_names_line_and_allowed_values() -> None:
    text = GOOD.replace("retrieve: c-get", "retrieve: c-fetch")
    with pytest.raises(
        SpecError, match=r"line 11: source\.retrieve: got 'c-fetch', expected one of: c-get, c-move"
    ):
        spec_from_text(text)


def test_port_out_of_range() -> None:
    with pytest.raises(SpecError, match=r"line 15: destination\.port: got 70000"):
        spec_from_text(GOOD.replace("port: 4243", "port: 70000"))


def test_missing_required_key() -> None:
    text = "\n".join(
        line for line in GOOD.splitlines() if "host: 127.0.0.1" not in line or "4243" in line
    )
    text = GOOD.replace("  host: 127.0.0.1\n  port: 4242\n", "  port: 4242\n")
    with pytest.raises(SpecError, match=r"source\.host: required key is missing"):
        spec_from_text(text)


def test_unknown_top_level_key() -> None:
    with pytest.raises(SpecError, match=r"line 16: extra: unknown key"):
        spec_from_text(GOOD + "extra: 1\n")


def test_python_object_tag_refused() -> None:
    evil = GOOD.replace("name: holdout", "name: !!python/object/apply:os.system ['echo hi']")
    with pytest.raises(
        SpecError, match="line 2: YAML tag .*python/object/apply:os.system.* not allowed"
    ):
        spec_from_text(evil)


def test_custom_tag_refused() -> None:
    with pytest.raises(SpecError, match="YAML tag"):
        spec_from_text(GOOD.replace("name: holdout", "name: !secret holdout"))


def test_not_yaml() -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        spec_from_text("version: [1\n", source_name="x.yaml")


def test_empty_and_scalar_documents() -> None:
    with pytest.raises(SpecError, match="empty"):
        spec_from_text("")
    with pytest.raises(SpecError, match="must be a mapping"):
        spec_from_text("just text")


def test_c_move_requires_local_port() -> None:
    text = GOOD.replace("  port: 11113              # our Storage SCP port, used for C-MOVE\n", "")
    assert spec_from_text(text).local.port is None
    with pytest.raises(SpecError, match="local.port: required when source.retrieve is c-move"):
        spec_from_text(text.replace("retrieve: c-get", "retrieve: c-move"))


def test_select_dates_and_modalities() -> None:
    text = (
        GOOD + "select:\n  study_date: {from: 2019-01-01, to: '20201231'}\n  modalities: [CT, MR]\n"
    )
    spec = spec_from_text(text)
    assert spec.select.date_range() == "20190101-20201231"
    assert spec.select.modalities == ("CT", "MR")
    with pytest.raises(SpecError, match="'from' is after 'to'"):
        spec_from_text(GOOD + "select:\n  study_date: {from: 2021-01-01, to: 2020-01-01}\n")


def test_ae_title_rules() -> None:
    with pytest.raises(SpecError, match="ae_title"):
        spec_from_text(GOOD.replace("ae_title: LEGACY", "ae_title: WAY_TOO_LONG_AE_TITLE_X"))
    with pytest.raises(SpecError, match="ae_title"):
        spec_from_text(GOOD.replace("ae_title: LEGACY", "ae_title: 'A\\\\B'"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_journal_relative_to_spec(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD + "journal: j/x.sqlite\n")
    assert load_spec(path).journal == tmp_path / "j" / "x.sqlite"


def test_tls_blocks(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  port: 4243\n",
        "  port: 4243\n  tls: {ca: pki/ca.pem, cert: pki/me.pem, key: pki/me.key}\n",
    )
    path = tmp_path / "s.yaml"
    path.write_text(text)
    spec = load_spec(path)
    assert (
        spec.destination.tls is not None and spec.destination.tls.ca == tmp_path / "pki" / "ca.pem"
    )
    with pytest.raises(SpecError, match="destination.tls"):
        spec_from_text(GOOD.replace("  port: 4243\n", "  port: 4243\n  tls: {cert: a.pem}\n"))
    with pytest.raises(SpecError, match="local.tls: cert and key are required"):
        spec_from_text(
            GOOD.replace("  ae_title: PACSMIG ", "  tls: {ca: x.pem}\n  ae_title: PACSMIG ")
        )


def test_image_sample_is_a_fraction_or_a_count() -> None:
    import pytest

    from pacsmig.errors import SpecError

    def sample(value: str):  # type: ignore[no-untyped-def]
        return spec_from_text(GOOD + f"verify: {{image_sample: {value}}}\n").verify

    assert sample("0.05").image_sample_fraction == 0.05
    assert sample("200").image_sample_count == 200
    assert sample("200.0").image_sample_count == 200
    with pytest.raises(
        SpecError, match=r"line \d+: verify.image_sample: 1.5 is neither a fraction"
    ):
        sample("1.5")
