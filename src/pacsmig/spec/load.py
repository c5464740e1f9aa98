"""Read a spec: ruamel.yaml safe-ish round-trip parse, JSON Schema validation, frozen Spec.

The round-trip loader is used for its line numbers; it never constructs Python objects, and any
explicit tag other than YAML's core ones is refused outright.
"""

from __future__ import annotations

import datetime as dt
import difflib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pacsmig.errors import SpecError
from pacsmig.resources import load_schema
from pacsmig.spec.model import (
    DEFAULT_CORRECT,
    DEFAULT_TIMEOUT,
    DEFAULT_VERIFY_LEVELS,
    Destination,
    DimseSource,
    FilesystemSource,
    LocalAE,
    LossyPolicy,
    Priority,
    RisSpec,
    Schedule,
    ScheduleWindow,
    Select,
    Spec,
    TlsFiles,
    VerifySpec,
)

_CORE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:timestamp",
}


def load_spec(path: str | Path) -> Spec:
    """Load and validate a spec file; raise SpecError with one line naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from None
    return spec_from_text(text, source_name=str(path), base_dir=path.resolve().parent)


def spec_from_text(text: str, *, source_name: str = "<spec>", base_dir: Path | None = None) -> Spec:
    data = _parse_yaml(text, source_name)
    return spec_from_mapping(data, source_name=source_name, base_dir=base_dir)


def _parse_yaml(text: str, source_name: str) -> Any:
    yaml = YAML(typ="rt")
    try:
        node = yaml.compose(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(
            f"{source_name}{line}: not valid YAML: {exc.problem or exc.context}"
        ) from None
    except YAMLError as exc:
        raise SpecError(f"{source_name}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if node is None:
        raise SpecError(f"{source_name}: the spec is empty")
    _refuse_tags(node, source_name)
    try:
        return yaml.load(text)
    except YAMLError as exc:  # pragma: no cover - compose already succeeded
        raise SpecError(f"{source_name}: not valid YAML: {str(exc).splitlines()[0]}") from None


def _refuse_tags(node: Node, source_name: str) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        tag = current.tag
        tag_text = tag if isinstance(tag, str) else getattr(tag, "value", None)
        if tag_text is not None and tag_text not in _CORE_TAGS and not tag_text.startswith("?"):
            raise SpecError(
                f"{source_name} line {current.start_mark.line + 1}: YAML tag {tag_text!r} is not "
                "allowed in a spec (only plain values, lists and mappings)"
            )
        if isinstance(current, MappingNode):
            for key, value in current.value:
                stack.extend((key, value))
        elif isinstance(current, SequenceNode):
            stack.extend(current.value)
        elif not isinstance(current, ScalarNode):  # pragma: no cover
            raise SpecError(f"{source_name}: unsupported YAML node")


def _plain(value: Any) -> Any:
    """CommentedMap/Seq and YAML timestamps to JSON-like data."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _line_of(data: Any, path: Sequence[Any], key: Any = None) -> int | None:
    """1-based YAML line of the node at path (or of key inside it)."""
    node = data
    line: int | None = None
    for part in path:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    if key is not None and isinstance(node, CommentedMap) and key in node:
        return int(node.lc.key(key)[0]) + 1
    if line is None and isinstance(node, CommentedMap | CommentedSeq):
        return int(node.lc.line) + 1
    return line


def _dotted(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _best_error(errors: list[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    # The deepest error names the most specific key; ties go to schema order.
    return max(errors, key=lambda e: (len(e.absolute_path), -errors.index(e)))


def _describe(error: jsonschema.ValidationError, data: Any, source_name: str) -> str:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        key = extra[0] if extra else "?"
        line = _line_of(data, path, key)
        hint = difflib.get_close_matches(key, allowed, n=1)
        did_you = f" (did you mean {hint[0]!r}?)" if hint else ""
        where = _dotted([*path, key])
        return (
            f"{source_name} line {line}: {where}: unknown key{did_you}; expected one of: "
            f"{', '.join(allowed)}"
        )
    if error.validator == "required":
        line = _line_of(data, path)
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        where = _dotted([*path, missing])
        return f"{source_name} line {line}: {where}: required key is missing"
    line = _line_of(data, path)
    where = _dotted(path)
    expected = _expected(error)
    return f"{source_name} line {line}: {where}: {expected}"


def _expected(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    got = (
        repr(error.instance)
        if not isinstance(error.instance, dict | list)
        else type(error.instance).__name__
    )
    validator = error.validator
    if validator == "enum":
        return f"got {got}, expected one of: {', '.join(map(str, schema.get('enum', [])))}"
    if validator == "const":
        return f"got {got}, expected {schema.get('const')!r}"
    if validator == "type":
        return f"got {got}, expected {schema.get('type')}"
    if validator in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        return f"got {got}, expected {validator} {schema.get(validator)}"
    if validator == "pattern":
        desc = schema.get("description") or f"text matching {schema.get('pattern')}"
        return f"got {got}, expected {desc}"
    if validator in {"minLength", "maxLength", "minItems", "maxItems", "uniqueItems"}:
        return f"got {got}: {error.message}"
    return str(error.message).splitlines()[0]


def spec_from_mapping(
    data: Any, *, source_name: str = "<spec>", base_dir: Path | None = None
) -> Spec:
    """Validate a parsed document (CommentedMap keeps line numbers) and build the Spec."""
    if not isinstance(data, dict):
        raise SpecError(
            f"{source_name}: the spec must be a mapping of keys, got {type(data).__name__}"
        )
    plain = _plain(data)
    validator = jsonschema.Draft202012Validator(load_schema("spec.schema.json"))
    errors = list(validator.iter_errors(plain))
    if errors:
        raise SpecError(_describe(_best_error(errors), data, source_name))
    return _build(plain, base_dir or Path.cwd(), source_name, data)


def _date(value: str | None) -> str | None:
    return value.replace("-", "") if value else None


def _tls(doc: dict[str, Any] | None, base_dir: Path) -> TlsFiles | None:
    if doc is None:
        return None
    return TlsFiles(**{k: base_dir / v for k, v in doc.items()})


def _endpoint_args(doc: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    return {
        "tls": _tls(doc.get("tls"), base_dir),
        "ae_title": doc["ae_title"],
        "host": doc["host"],
        "port": doc["port"],
        "timeout": float(doc.get("timeout", DEFAULT_TIMEOUT)),
        "max_pdu": int(doc.get("max_pdu", 0)),
    }


def _build(doc: dict[str, Any], base_dir: Path, source_name: str, data: Any) -> Spec:
    local_doc = doc["local"]
    src = doc["source"]
    if (
        src["kind"] == "dimse"
        and src.get("retrieve", "c-get") == "c-move"
        and "port" not in local_doc
    ):
        line = _line_of(data, ["local"])
        raise SpecError(
            f"{source_name} line {line}: local.port: required when source.retrieve is c-move "
            "(pacsmig's Storage SCP receives the moved instances there)"
        )
    if "tls" in local_doc and "cert" not in local_doc["tls"]:
        line = _line_of(data, ["local", "tls"])
        raise SpecError(
            f"{source_name} line {line}: local.tls: cert and key are required (the Storage SCP "
            "presents them to the source)"
        )
    select_doc = doc.get("select", {})
    dates = select_doc.get("study_date", {})
    date_from, date_to = _date(dates.get("from")), _date(dates.get("to"))
    if date_from and date_to and date_from > date_to:
        line = _line_of(data, ["select", "study_date"])
        raise SpecError(f"{source_name} line {line}: select.study_date: 'from' is after 'to'")
    journal = doc.get("journal")
    ris = _ris(doc.get("ris"), base_dir, source_name, data)
    return Spec(
        version=doc["version"],
        name=doc["name"],
        local=LocalAE(
            ae_title=local_doc["ae_title"],
            port=local_doc.get("port"),
            bind=local_doc.get("bind", ""),
            tls=_tls(local_doc.get("tls"), base_dir),
        ),
        source=_source(src, base_dir),
        destination=_destination(doc["destination"], base_dir, source_name, data),
        select=Select(
            date_from=date_from,
            date_to=date_to,
            modalities=tuple(select_doc.get("modalities", ())),
        ),
        journal=(base_dir / journal) if journal else None,
        ris=ris,
        schedule=_schedule(doc.get("schedule"), source_name, data),
        priority=_priority(doc.get("priority"), base_dir, source_name, data),
        verify=_verify(doc.get("verify"), source_name, data),
        document=doc,
        base_dir=base_dir,
    )


def _source(src: dict[str, Any], base_dir: Path) -> DimseSource | FilesystemSource:
    if src["kind"] == "filesystem":
        return FilesystemSource(
            roots=tuple(base_dir / r for r in src["roots"]),
            include=tuple(src.get("include", ("**/*",))),
            exclude=tuple(src.get("exclude", ())),
            workers=src.get("workers"),
            parallel=int(src.get("parallel", 1)),
        )
    return DimseSource(
        retrieve=src.get("retrieve", "c-get"),
        find_limit=src.get("find_limit"),
        parallel=int(src.get("parallel", 1)),
        **_endpoint_args(src, base_dir),
    )


def _destination(doc: dict[str, Any], base_dir: Path, source_name: str, data: Any) -> Destination:
    syntaxes = []
    for i, name in enumerate(doc.get("syntaxes", ())):
        uid = syntax_uid(name)
        if uid is None:
            line = _line_of(data, ["destination", "syntaxes", i])
            close = difflib.get_close_matches(name, SYNTAX_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(
                f"{source_name} line {line}: destination.syntaxes: unknown transfer syntax "
                f"{name!r}{hint}; use a UID or one of {', '.join(SYNTAX_NAMES)}"
            )
        if uid in LOSSY_SYNTAXES:
            line = _line_of(data, ["destination", "syntaxes", i])
            raise SpecError(
                f"{source_name} line {line}: destination.syntaxes: {name!r} is lossy; lossy "
                "compression is allowed only through destination.lossy"
            )
        syntaxes.append(uid)
    lossy = doc.get("lossy")
    return Destination(
        move_ae=doc.get("move_ae"),
        route=doc.get("route", "auto"),
        associations=int(doc.get("associations", 1)),
        syntaxes=tuple(syntaxes),
        lossy=LossyPolicy(
            syntax=SYNTAX_NAMES.get(lossy["syntax"], lossy["syntax"]), quality=lossy.get("quality")
        )
        if lossy
        else None,
        **_endpoint_args(doc, base_dir),
    )


# Names a spec may use for transfer syntaxes (PS3.5 Annex A), beside plain UIDs.
SYNTAX_NAMES = {
    "explicit-le": "1.2.840.10008.1.2.1",
    "implicit-le": "1.2.840.10008.1.2",
    "deflated": "1.2.840.10008.1.2.1.99",
    "rle": "1.2.840.10008.1.2.5",
    "jpeg-lossless": "1.2.840.10008.1.2.4.70",
    "jpeg-ls-lossless": "1.2.840.10008.1.2.4.80",
    "jpeg-ls-near-lossless": "1.2.840.10008.1.2.4.81",
    "jpeg-2000-lossless": "1.2.840.10008.1.2.4.90",
    "jpeg-2000": "1.2.840.10008.1.2.4.91",
}


LOSSY_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
    }
)


def syntax_uid(value: str) -> str | None:
    """A transfer syntax UID from a name or UID; None for an unknown name."""
    if value in SYNTAX_NAMES:
        return SYNTAX_NAMES[value]
    if value[:1].isdigit():
        return value
    return None


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _schedule(doc: dict[str, Any] | None, source_name: str, data: Any) -> Schedule:
    if not doc:
        return Schedule()
    tz = doc.get("timezone")
    if tz:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            line = _line_of(data, ["schedule", "timezone"])
            raise SpecError(
                f"{source_name} line {line}: schedule.timezone: unknown time zone {tz!r} "
                "(an IANA name such as Europe/Berlin)"
            ) from None
    windows = []
    for w in doc.get("windows", ()):
        windows.append(
            ScheduleWindow(
                days=tuple(_DAYS.index(d) for d in w.get("days", _DAYS)),
                start=_minutes(w.get("start", "00:00")),
                end=_minutes(w.get("end", "24:00")),
                max_instances_per_second=w.get("max_instances_per_second"),
                max_mb_per_second=w.get("max_mb_per_second"),
            )
        )
    return Schedule(windows=tuple(windows), timezone=tz)


def _priority(doc: dict[str, Any] | None, base_dir: Path, source_name: str, data: Any) -> Priority:
    if not doc:
        return Priority()
    if "orders_column" in doc and "ris" not in data:
        line = _line_of(data, ["priority", "orders_column"])
        raise SpecError(
            f"{source_name} line {line}: priority.orders_column: needs a ris block (the column "
            "is read from ris.orders)"
        )
    patients = doc.get("patients")
    return Priority(
        patients=(base_dir / patients) if patients else None,
        orders_column=doc.get("orders_column"),
        orders_values=tuple(doc.get("orders_values", ())),
        order=doc.get("order", "newest-first"),
    )


def _verify(doc: dict[str, Any] | None, source_name: str, data: Any) -> VerifySpec:
    if not doc:
        return VerifySpec()
    sample = doc.get("image_sample")
    if isinstance(sample, float) and sample > 1 and sample.is_integer():
        sample = int(sample)  # 200.0: a count
    if isinstance(sample, float) and sample > 1:
        line = _line_of(data, ["verify", "image_sample"])
        raise SpecError(
            f"{source_name} line {line}: verify.image_sample: {sample} is neither a fraction "
            "of the instances (0 to 1, e.g. 0.05) nor a whole number of instances (e.g. 200)"
        )
    fraction = float(sample) if isinstance(sample, float) else None
    count = sample if isinstance(sample, int) and not isinstance(sample, bool) else None
    return VerifySpec(
        levels=tuple(doc.get("levels", DEFAULT_VERIFY_LEVELS)),
        image_sample_fraction=fraction,
        image_sample_count=count,
        commitment_timeout=float(doc.get("commitment_timeout", 60.0)),
    )


def _ris(doc: dict[str, Any] | None, base_dir: Path, source_name: str, data: Any) -> RisSpec | None:
    if doc is None:
        return None
    fmt = doc.get("format", "csv")
    if fmt == "csv" and "columns" not in doc:
        line = _line_of(data, ["ris"])
        raise SpecError(
            f"{source_name} line {line}: ris.columns: required for format csv (which column "
            "holds order_id, accession, patient_id, ...)"
        )
    from pacsmig.reconcile.match import DEFAULT_RULES, parse_match_rules

    if "match" in doc:
        try:
            parse_match_rules(doc["match"])
        except SpecError as exc:
            line = _line_of(data, ["ris", "match"])
            raise SpecError(f"{source_name} line {line}: {exc}") from None
        match = tuple(dict(m) for m in doc["match"])
    else:
        match = tuple(
            {
                "rule": r.rule,
                "date_window_days": r.date_window_days,
                "min_similarity": r.min_similarity,
            }
            if r.rule == "demographics"
            else {"rule": r.rule, "date_window_days": r.date_window_days}
            if r.rule == "patient-date-modality"
            else {"rule": r.rule}
            for r in DEFAULT_RULES
        )
    overrides = doc.get("overrides")
    return RisSpec(
        orders=base_dir / doc["orders"],
        format=fmt,
        columns=dict(doc.get("columns", {})),
        match=match,
        unmatched=doc.get("unmatched", "hold"),
        overrides=(base_dir / overrides) if overrides else None,
        correct=tuple(doc.get("correct", DEFAULT_CORRECT)),
    )


def spec_of_plan(document: dict[str, Any], base_dir: str) -> Spec:
    """The spec a saved plan carries, with relative paths resolved as when it was planned."""
    return spec_from_mapping(
        document, source_name="the plan's spec", base_dir=Path(base_dir) if base_dir else None
    )
