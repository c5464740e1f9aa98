"""DICOM test data: curated real-world samples and deterministic synthetic studies.

Real samples come from pydicom's own test files and the ``pydicom-data``
package, both installed locally.  They exercise what synthetic data cannot:
vendor quirks, compressed transfer syntaxes, non-Latin character sets,
non-image objects.  Synthetic studies provide volume with full control over
the patient/study/series hierarchy.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

__all__ = [
    "SAMPLE_FILE_NAMES",
    "generate_corpus",
    "generate_study",
    "real_sample_files",
]

# Every entry was uploaded to Orthanc 1.10.1 (POST /instances) and accepted.
# SOP Instance UIDs are pairwise distinct: pydicom ships many re-encodings of
# the same instance (MR_small*, rtdose*, emri_small*, ...), and only one of
# each family is listed, otherwise "same UID, different bytes" would make
# every count-based assertion ambiguous.
SAMPLE_FILE_NAMES: tuple[str, ...] = (
    # CT, GE, Explicit VR Little Endian, ISO_IR 100: the baseline case
    "CT_small.dcm",
    # MR, Toshiba, Implicit VR Little Endian: the legacy default encoding
    "MR_small_implicit.dcm",
    # US, GE, Explicit VR *Big* Endian (retired TS) and no PatientID at all
    "ExplVR_BigEnd.dcm",
    # CT (CQ500), JPEG 2000 lossy
    "693_J2KI.dcm",
    # US, GE, JPEG 2000 lossless
    "US1_J2KR.dcm",
    # NM, GE, JPEG Extended (process 2/4, 12-bit lossy)
    "JPEG-lossy.dcm",
    # NM, GE, JPEG Lossless SV1; same patient/study/series as JPEG-lossy.dcm
    "JPEG-LL.dcm",
    # SC RGB written by DCMTK, JPEG Baseline, UTF-8 (ISO_IR 192)
    "SC_rgb_jpeg_dcmtk.dcm",
    # US multi-frame, SonoSite, JPEG Baseline YBR_FULL_422
    "examples_ybr_color.dcm",
    # US, Philips, RLE Lossless
    "OBXXXX1A_rle.dcm",
    # Enhanced MR (multi-frame functional groups), JPEG-LS lossless
    "emri_small_jpeg_ls_lossless.dcm",
    # Enhanced CT, multi-frame, uncompressed
    "eCT_Supplemental.dcm",
    # CR, Fuji, JPEG 2000 lossy, large matrix
    "RG3_J2KI.dcm",
    # MR, Siemens, with overlay planes and private tags
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
    # US, Aloka, Implicit VR, 16-bit
    "gdcm-US-ALOKA-16.dcm",
    # Secondary capture with Deflated Explicit VR Little Endian
    "image_dfl.dcm",
    # RT Dose, multi-frame, Implicit VR
    "rtdose.dcm",
    # RT Plan: non-image object without pixel data
    "rtplan.dcm",
    # Comprehensive SR with empty PatientID
    "test-SR.dcm",
    # Basic Text SR (DCMTK-generated)
    "reportsi.dcm",
    # 12-lead ECG waveform, Mortara
    "waveform_ecg.dcm",
    # Segmentation (binary, single frame), QIICR
    "liver_1frame.dcm",
    # Character sets (pydicom charset_files): Japanese ISO 2022 IR 87 ...
    "chrH31.dcm",
    # ... Cyrillic ISO_IR 144 ...
    "chrRuss.dcm",
    # ... UTF-8 ISO_IR 192 ...
    "chrX1.dcm",
    # ... and Chinese GB18030
    "chrX2.dcm",
)

# Considered and left out (all checked against Orthanc 1.10.1):
# - rejected by Orthanc: MR_truncated.dcm, rtplan_truncated.dcm,
#   emri_small_jpeg_2k_lossless_too_short.dcm, SC_rgb_jpeg.dcm (HTTP 400
#   "Bad file format": deliberately truncated/corrupt); JPEGLSNearLossless_*.dcm
#   and SC_rgb_jls_lossy_*.dcm (HTTP 404 "Inexistent tag": no Study/Series
#   Instance UID or PatientID);
# - deliberately broken although accepted: badVR.dcm, bad_sequence.dcm,
#   JPEG2000-embedded-sequence-delimiter.dcm, J2K_pixelrep_mismatch.dcm,
#   explicit_VR-UN.dcm;
# - no File Meta / not an instance: *NoMeta.dcm, no_meta*.dcm, DICOMDIR*;
# - duplicate SOP Instance UIDs of a listed file (other encodings of it).


def _find_sample(name: str) -> Path | None:
    # download=False: pydicom would otherwise try the network (with retries
    # taking minutes) for names it does not have locally.
    found = get_testdata_file(name, download=False)
    if isinstance(found, str):
        return Path(found)
    charset = get_charset_files(name)
    if charset:
        return Path(charset[0])
    return None


def real_sample_files() -> list[Path]:
    """Paths of the curated real DICOM samples available on this machine.

    Names that neither pydicom nor pydicom-data can supply locally are skipped
    silently, so the list may be shorter on a minimal install.
    """
    return list(_resolved_samples())


@functools.cache
def _resolved_samples() -> tuple[Path, ...]:
    # Cached: pydicom-data verifies a SHA-256 of each file on every lookup.
    found = (_find_sample(name) for name in SAMPLE_FILE_NAMES)
    return tuple(path for path in found if path is not None)


# --------------------------------------------------------------------------- #
# synthetic studies
# --------------------------------------------------------------------------- #

_SOP_CLASS_FOR_MODALITY = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
}


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=["pacsmig.testing.corpus", *map(str, parts)])


def _short_hash(value: str, length: int = 16) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:length]


def _charset_for(*texts: str) -> str:
    try:
        for text in texts:
            text.encode("latin-1")
    except UnicodeEncodeError:
        return "ISO_IR 192"
    return "ISO_IR 100"


def generate_study(
    out_dir: Path,
    *,
    patient_id: str,
    patient_name: str,
    study_uid: str | None = None,
    n_series: int = 2,
    per_series: int = 3,
    modality: str = "CT",
    rows: int = 64,
    cols: int = 64,
    seed: int = 0,
    study_date: str = "20240101",
    accession: str = "",
    study_time: str = "120000",
    study_description: str | None = None,
    birth_date: str = "19700101",
    sex: str = "O",
) -> list[Path]:
    """Write one synthetic study as Part 10 files (Explicit VR Little Endian).

    Everything is a pure function of the arguments: UIDs come from
    ``generate_uid(entropy_srcs=...)`` and pixels from a numpy RNG seeded with
    ``seed``, so re-running produces byte-identical files.  Without
    ``study_uid`` the study UID is derived from patient_id, study date/time,
    accession, modality and seed, so different seeds give different studies;
    pin ``study_uid`` to vary only the pixels.  ``modality`` CT or MR selects
    that image storage class, anything else becomes Secondary Capture with the
    given Modality value.

    Files go to ``out_dir/<hash of study UID>/sNNN_iNNNN.dcm``: names are
    never built from DICOM values, which may contain path separators.
    """
    if n_series < 1 or per_series < 1:
        raise ValueError("n_series and per_series must be >= 1")
    modality = modality.upper()
    sop_class = _SOP_CLASS_FOR_MODALITY.get(modality, SecondaryCaptureImageStorage)
    if study_uid is None:
        study_uid = _uid("study", patient_id, study_date, study_time, accession, modality, seed)
    study_dir = Path(out_dir) / f"study_{_short_hash(study_uid)}"
    study_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, int(_short_hash(study_uid, 8), 16)])
    frame_of_reference = _uid("for", study_uid)
    charset = _charset_for(patient_name, patient_id)
    description = study_description if study_description is not None else f"{modality} study"

    paths: list[Path] = []
    for series_index in range(1, n_series + 1):
        series_uid = _uid("series", study_uid, series_index)
        for instance_index in range(1, per_series + 1):
            sop_uid = _uid("instance", series_uid, instance_index)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = "PACSMIG_TEST"

            path = study_dir / f"s{series_index:03d}_i{instance_index:04d}.dcm"
            ds = FileDataset(str(path), Dataset(), file_meta=meta, preamble=b"\0" * 128)
            ds.SpecificCharacterSet = charset
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = sop_uid
            ds.StudyDate = study_date
            ds.SeriesDate = study_date
            ds.ContentDate = study_date
            ds.StudyTime = study_time
            ds.SeriesTime = study_time
            ds.ContentTime = study_time
            ds.AccessionNumber = accession
            ds.Modality = modality
            ds.Manufacturer = "PACSMIG"
            ds.InstitutionName = "PACSMIG TEST HOSPITAL"
            ds.ReferringPhysicianName = "REFERRER^TEST"
            ds.StudyDescription = description
            ds.SeriesDescription = f"{modality} series {series_index}"
            ds.PatientName = patient_name
            ds.PatientID = patient_id
            ds.PatientBirthDate = birth_date
            ds.PatientSex = sex
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = _short_hash(study_uid, 8).upper()
            ds.SeriesNumber = series_index
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = instance_index
            ds.FrameOfReferenceUID = frame_of_reference
            ds.PositionReferenceIndicator = ""
            ds.ImagePositionPatient = [0.0, 0.0, float(instance_index) * 2.5]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.SliceThickness = 2.5
            ds.SliceLocation = float(instance_index) * 2.5
            ds.PixelSpacing = [0.5, 0.5]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = rows
            ds.Columns = cols
            if sop_class == SecondaryCaptureImageStorage:
                ds.ConversionType = "WSD"
                pixels = rng.integers(0, 256, size=(rows, cols), dtype=np.uint8)
                ds.BitsAllocated = 8
                ds.BitsStored = 8
                ds.HighBit = 7
            else:
                pixels = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16)
                ds.BitsAllocated = 16
                ds.BitsStored = 12
                ds.HighBit = 11
                if modality == "CT":
                    ds.KVP = 120
                    ds.RescaleIntercept = -1024
                    ds.RescaleSlope = 1
                    ds.RescaleType = "HU"
                else:
                    ds.ScanningSequence = "SE"
                    ds.SequenceVariant = "NONE"
                    ds.ScanOptions = ""
                    ds.MRAcquisitionType = "2D"
                    ds.EchoTime = 20
                    ds.RepetitionTime = 500
                    ds.EchoTrainLength = 1
            ds.PixelRepresentation = 0
            # Explicit little-endian dtype: the TS is little endian whatever
            # the host byte order is.
            ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


_SURNAMES = ("DOE", "SMITH", "GARCIA", "NGUYEN", "KOWALSKI", "OKAFOR", "TANAKA", "SILVA")
_VARIED_SURNAMES = ("MÜLLER", "O'BRIEN", "ÅSTRÖM", "DE LA CRUZ")
_MODALITIES = ("CT", "MR", "OT")


def generate_corpus(
    out_dir: Path,
    *,
    studies: int = 5,
    seed: int = 0,
    patients: int | None = None,
    n_series: int = 2,
    per_series: int = 3,
    modalities: Sequence[str] = _MODALITIES,
    rows: int = 64,
    cols: int = 64,
    start_date: str = "20240101",
    varied_names: bool = False,
) -> list[Path]:
    """Write ``studies`` synthetic studies spread over ``patients`` patients.

    Patients default to ``ceil(studies / 2)`` so some have several studies.
    Modalities rotate through ``modalities``; study dates advance one day per
    study from ``start_date``; accession numbers are unique.  With
    ``varied_names`` some patient names contain non-ASCII characters and
    apostrophes (to exercise charset handling and escaping); off by default
    because each server converts C-FIND answers between character sets in
    its own way, which is noise for tests about something else.
    """
    if studies < 0:
        raise ValueError("studies must be >= 0")
    if patients is None:
        patients = max(1, (studies + 1) // 2)
    if patients < 1:
        raise ValueError("patients must be >= 1")
    if not modalities:
        raise ValueError("modalities must not be empty")
    start = np.datetime64(f"{start_date[:4]}-{start_date[4:6]}-{start_date[6:8]}")
    paths: list[Path] = []
    for index in range(studies):
        patient = index % patients
        if varied_names and patient % 2 == 1:
            # Every other patient, so even a two-patient corpus has one.
            surname = _VARIED_SURNAMES[(patient // 2 + seed) % len(_VARIED_SURNAMES)]
        else:
            surname = _SURNAMES[(patient + seed) % len(_SURNAMES)]
        date = str(start + np.timedelta64(index, "D")).replace("-", "")
        paths += generate_study(
            out_dir,
            patient_id=f"PM{seed:04d}{patient:06d}",
            patient_name=f"{surname}^PATIENT{patient}",
            n_series=n_series,
            per_series=per_series,
            modality=modalities[index % len(modalities)],
            rows=rows,
            cols=cols,
            seed=seed * 1_000_003 + index,
            study_date=date,
            accession=f"A{seed:04d}{index:07d}",
            study_time=f"{8 + index % 10:02d}{index % 60:02d}00",
            birth_date=f"{1940 + patient % 60}0{1 + patient % 9}1{patient % 9}",
            sex=("F", "M", "O")[patient % 3],
        )
    return paths
