"""C-FIND (PS3.4 Annex C): study, series and instance level queries, Study Root model."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.dsutils import decode, encode

from pacsmig.dicomnet import wire
from pacsmig.dicomnet.ae import Peer, associate, wire_associate
from pacsmig.dicomnet.contexts import STUDY_ROOT_FIND
from pacsmig.errors import PacsError
from pacsmig.inventory.model import InstanceRecord, SeriesRecord, StudyRecord

_FIND = STUDY_ROOT_FIND

STUDY_KEYS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYS = (
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
)
IMAGE_KEYS = ("SOPClassUID", "InstanceNumber")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _belongs(ds: Dataset, *, study_uid: str, series_uid: str = "") -> bool:
    """An answer names the study (and series) asked about, or leaves it out: else it is stray."""
    got_study = _text(ds, "StudyInstanceUID")
    got_series = _text(ds, "SeriesInstanceUID") if series_uid else ""
    return got_study in ("", study_uid) and (not series_uid or got_series in ("", series_uid))


class FindSession:
    """One association for many C-FIND requests."""

    def __init__(self, assoc: Any, peer: Peer) -> None:
        """assoc: a pynetdicom Association, or pacsmig's own ``wire.WireAssociation``."""
        self._assoc = assoc
        self._peer = peer
        self._msg_id = 0
        self.last_answers = 0
        # Set when the peer ended the last query with 0xFE00 (Orthanc's LimitFindResults):
        # the answers are a prefix, not the whole.
        self.truncated = False

    def _responses(self, ds: Dataset) -> Iterator[tuple[int | None, str, Dataset | None]]:
        """(status, error comment, identifier) of each response; status None: no answer."""
        if isinstance(self._assoc, wire.WireAssociation):
            found = self._assoc.context_of(_FIND)
            if found is None:
                raise PacsError(f"{self._peer.describe()} does not accept Study Root C-FIND")
            cid, syntax = found
            implicit = syntax == ImplicitVRLittleEndian
            encoded = encode(ds, implicit, True)
            if encoded is None:
                raise PacsError("a C-FIND identifier could not be encoded")
            for answer in self._assoc.find(cid, _FIND, encoded):
                identifier = None
                if answer.identifier is not None:
                    identifier = decode(io.BytesIO(answer.identifier), implicit, True)
                yield answer.status, answer.comment, identifier
            return
        self._msg_id = self._msg_id % 65535 + 1
        for status, identifier in self._assoc.send_c_find(ds, _FIND, msg_id=self._msg_id):
            code = getattr(status, "Status", None)
            comment = _text(status, "ErrorComment") if code is not None else ""
            yield (None if code is None else int(code)), comment, identifier

    def query(self, level: str, keys: dict[str, Any]) -> Iterator[Dataset]:
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        ds.SpecificCharacterSet = "ISO_IR 192"
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        self.truncated = False
        got_final = False
        for code, comment, identifier in self._responses(ds):
            if code is None:
                raise PacsError(
                    f"{self._peer.describe()} did not answer a {level} C-FIND "
                    f"(timeout or aborted association after {self._peer.timeout:g}s)"
                )
            if code in (0xFF00, 0xFF01):
                if identifier is not None:
                    yield identifier
                continue
            if code == 0x0000:
                got_final = True
                break
            if code == 0xFE00:
                self.truncated = got_final = True
                break
            raise PacsError(
                f"{self._peer.describe()} failed a {level} C-FIND with status 0x{code:04X}"
                + (f": {comment}" if comment else "")
            )
        if not got_final:
            raise PacsError(
                f"{self._peer.describe()} ended a {level} C-FIND without a final status"
            )

    def studies(
        self, *, study_date: str = "", study_uid: str = "", study_time: str = ""
    ) -> list[StudyRecord]:
        """Studies matching; `last_answers` then holds how many answers came (for caps)."""
        keys: dict[str, Any] = {k: "" for k in STUDY_KEYS}
        keys["StudyDate"] = study_date
        keys["StudyTime"] = study_time
        keys["StudyInstanceUID"] = study_uid
        by_uid: dict[str, list[Dataset]] = {}
        self.last_answers = 0
        for ds in self.query("STUDY", keys):
            self.last_answers += 1
            uid = _text(ds, "StudyInstanceUID")
            if uid:
                by_uid.setdefault(uid, []).append(ds)
        records = []
        for uid, rows in by_uid.items():
            first = rows[0]
            pids = sorted({_text(r, "PatientID") for r in rows})
            records.append(
                StudyRecord(
                    study_uid=uid,
                    patient_id=_text(first, "PatientID"),
                    patient_name=_text(first, "PatientName"),
                    birth_date=_text(first, "PatientBirthDate"),
                    sex=_text(first, "PatientSex"),
                    study_date=_text(first, "StudyDate"),
                    study_time=_text(first, "StudyTime"),
                    accession=_text(first, "AccessionNumber"),
                    modalities=tuple(m for m in _text(first, "ModalitiesInStudy").split("\\") if m),
                    description=_text(first, "StudyDescription"),
                    other_patient_ids=tuple(pids) if len(pids) > 1 else (),
                )
            )
        return records

    def series(self, study_uid: str) -> list[SeriesRecord]:
        keys: dict[str, Any] = {k: "" for k in SERIES_KEYS}
        keys["StudyInstanceUID"] = study_uid
        keys["SeriesInstanceUID"] = ""
        # Drain the responses before any follow-up query: DIMSE allows one outstanding
        # operation per association, and interleaving them mixes the answers.
        rows = [ds for ds in self.query("SERIES", keys) if _belongs(ds, study_uid=study_uid)]
        out: dict[str, SeriesRecord] = {}
        for ds in rows:
            uid = _text(ds, "SeriesInstanceUID")
            if not uid:
                continue
            count = _int(ds, "NumberOfSeriesRelatedInstances")
            if count is None:
                # Not every SCP supports the optional count keys (dcmqrscp does not): count.
                count = len(self.instances(study_uid, uid))
            out[uid] = SeriesRecord(
                series_uid=uid,
                modality=_text(ds, "Modality"),
                series_number=_text(ds, "SeriesNumber"),
                description=_text(ds, "SeriesDescription"),
                instance_count=count,
            )
        return sorted(out.values(), key=lambda s: s.series_uid)

    def instances(
        self, study_uid: str, series_uid: str, *, with_class: bool = True
    ) -> list[InstanceRecord]:
        # Without with_class only UIDs are asked: Orthanc then answers from its index alone
        # (SOP Class UID makes it read every instance's tags: ~35% slower, measured).
        keys: dict[str, Any] = {k: "" for k in IMAGE_KEYS} if with_class else {}
        keys["StudyInstanceUID"] = study_uid
        keys["SeriesInstanceUID"] = series_uid
        keys["SOPInstanceUID"] = ""
        out: dict[str, InstanceRecord] = {}
        for ds in self.query("IMAGE", keys):
            if not _belongs(ds, study_uid=study_uid, series_uid=series_uid):
                continue
            uid = _text(ds, "SOPInstanceUID")
            if uid:
                out[uid] = InstanceRecord(
                    sop_uid=uid,
                    series_uid=series_uid,
                    sop_class_uid=_text(ds, "SOPClassUID"),
                    instance_number=_text(ds, "InstanceNumber"),
                )
        return list(out.values())

    def study_instances(self, study_uid: str, *, with_class: bool = True) -> list[InstanceRecord]:
        """Every instance of a study, series by series (hierarchical SCPs require it)."""
        out: list[InstanceRecord] = []
        for series in self.series_uids(study_uid):
            out.extend(self.instances(study_uid, series, with_class=with_class))
        return out

    def study_instance_count(self, study_uid: str) -> int | None:
        """NumberOfStudyRelatedInstances, 0 when the study is unknown; None if not supported."""
        keys = {"StudyInstanceUID": study_uid, "NumberOfStudyRelatedInstances": ""}
        rows = [ds for ds in self.query("STUDY", keys) if _belongs(ds, study_uid=study_uid)]
        if not rows:
            return 0
        return _int(rows[0], "NumberOfStudyRelatedInstances")

    def series_uids(self, study_uid: str) -> list[str]:
        keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": ""}
        rows = [ds for ds in self.query("SERIES", keys) if _belongs(ds, study_uid=study_uid)]
        return sorted({_text(ds, "SeriesInstanceUID") for ds in rows} - {""})


@contextlib.contextmanager
def open_find(calling_ae_title: str, peer: Peer) -> Iterator[FindSession]:
    """One association to peer for a run of C-FIND requests."""
    if wire.enabled():
        # pacsmig's own wire code: through pynetdicom each answer cost about 0.5 ms of CPU,
        # and apply asks the source and the destination for every instance of every study.
        with wire_associate(
            calling_ae_title, peer, [(_FIND, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])]
        ) as wired:
            yield FindSession(wired, peer)
        return
    with associate(calling_ae_title, peer, [build_context(_FIND)]) as assoc:
        if not assoc.accepted_contexts:
            raise PacsError(f"{peer.describe()} does not accept Study Root C-FIND")
        yield FindSession(assoc, peer)
