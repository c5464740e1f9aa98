"""Reading orders (CSV, HL7 v2) and overrides, and the normalisation they rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsmig.errors import InputError, SpecError
from pacsmig.reconcile.normalize import (
    clean,
    id_key,
    modality_key,
    name_key,
    normalize_date,
    normalize_pn,
    normalize_sex,
)
from pacsmig.reconcile.orders import (
    Order,
    RisColumns,
    read_orders_csv,
    read_orders_hl7,
    read_overrides,
)

pytestmark = pytest.mark.unit

SPEC_COLUMNS = {
    "order_id": "ORDER_ID",
    "accession": "ACC_NO",
    "patient_id": "MRN",
    "patient_name": "PAT_NAME",
    "birth_date": "DOB",
    "sex": "SEX",
    "study_date": "EXAM_DATE",
    "modality": "MODALITY",
    "description": "PROC_DESC",
}
HEADER = "ORDER_ID,ACC_NO,MRN,PAT_NAME,DOB,SEX,EXAM_DATE,MODALITY,PROC_DESC"


def write(tmp_path: Path, text: str, name: str = "orders.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# --- normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("20240305", "20240305"),
        ("2024-03-05", "20240305"),
        ("2024/03/05", "20240305"),
        ("05.03.2024", "20240305"),
        (" 2024-03-05 ", "20240305"),
        ("", ""),
        ("NULL", ""),
        ("n/a", ""),
        ("   ", ""),
    ],
)
def test_dates_in_every_accepted_form(raw: str, expected: str) -> None:
    assert normalize_date(raw) == expected


@pytest.mark.parametrize(
    "raw", ["05/03/2024", "2024-3-5", "20240230", "2024-13-01", "5.3.2024", "yesterday", "2024"]
)
def test_other_date_spellings_are_malformed(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_date(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Doe^John", "DOE^JOHN"),
        ("DOE^JOHN^^^", "DOE^JOHN"),
        ("  doe ^  john   albert ", "DOE^JOHN ALBERT"),
        ("Doe, John Albert", "DOE^JOHN^ALBERT"),
        ("Doe,John", "DOE^JOHN"),
        ("van der Berg, Anna", "VAN DER BERG^ANNA"),
        ("Müller^Jürgen", "MÜLLER^JÜRGEN"),
        ("Doe", "DOE"),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "YAMADA^TAROU"),
        ("=山田^太郎", "山田^太郎"),
        ("A^B^C^D^E^F", "A^B^C^D^E F"),
        ("NULL", ""),
        ("", ""),
    ],
)
def test_person_names_to_canonical_pn(raw: str, expected: str) -> None:
    assert normalize_pn(raw) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Müller^Jürgen", "MULLER^JURGEN"),
        ("O'Brien^Seán", "OBRIEN^SEAN"),
        ("Smith-Jones^Mary", "SMITH JONES^MARY"),
        ("Søren^Æsa", "SOREN^AESA"),
        ("Horv?th^Lisa", "HORVTH^LISA"),
    ],
)
def test_name_keys_fold_accents_and_punctuation(a: str, b: str) -> None:
    assert name_key(a) == name_key(b)


def test_name_key_keeps_the_family_given_split() -> None:
    assert name_key("Doe^John") != name_key("John^Doe")
    assert name_key("Doe, John A.") == "DOE^JOHN^A"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("M", "M"),
        ("male", "M"),
        ("F", "F"),
        ("Female", "F"),
        ("O", "O"),
        ("other", "O"),
        ("U", ""),
        ("unknown", ""),
        ("", ""),
        ("N/A", ""),
    ],
)
def test_sex_codes(raw: str, expected: str) -> None:
    assert normalize_sex(raw) == expected


def test_unknown_sex_code_is_malformed() -> None:
    with pytest.raises(ValueError):
        normalize_sex("X")


def test_empty_spellings_and_id_keys() -> None:
    assert clean(" NULL ") == ""
    assert clean("null") == ""
    assert clean("N/A") == ""
    assert clean(None) == ""
    assert clean(" NA ") == "NA"  # not an empty spelling: could be a real value
    assert id_key(" acc 12 ") == "ACC12"


def test_modality_keys() -> None:
    assert modality_key("CR") == modality_key("DX") == modality_key("xr")
    assert modality_key("MRI") == "MR"
    assert modality_key("RAD") == ""  # not a DICOM modality: "not stated"
    assert modality_key(" ct ") == "CT"


# --- CSV -------------------------------------------------------------------------------


def test_csv_with_spec_columns_every_value_form(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "ORDER_ID,ACC_NO,MRN,PAT_NAME,DOB,SEX,EXAM_DATE,MODALITY,PROC_DESC,EXTRA",
            'O1,A1,P1,"Doe, John Albert",1970-01-02,male,20240305,ct,CT  Head,x',
            "O2,,P2,Roe^Jane^^,02.01.1980,F,2024/03/06,MR,,y",
            "O3,NULL,P3,N/A,,U,05.03.2024,,  ,z",
        ]
    )
    orders = read_orders_csv(write(tmp_path, text), SPEC_COLUMNS)
    assert orders == [
        Order(
            order_id="O1",
            accession="A1",
            patient_id="P1",
            patient_name="DOE^JOHN^ALBERT",
            birth_date="19700102",
            sex="M",
            study_date="20240305",
            modality="CT",
            description="CT Head",
            line=2,
        ),
        Order(
            order_id="O2",
            patient_id="P2",
            patient_name="ROE^JANE",
            birth_date="19800102",
            sex="F",
            study_date="20240306",
            modality="MR",
            line=3,
        ),
        Order(order_id="O3", patient_id="P3", study_date="20240305", line=4),
    ]


def test_csv_odd_column_names_semicolons_bom_and_case(tmp_path: Path) -> None:
    text = "\ufeffAuftrag Nr ; Acc#;Patient-ID\r\n 7 ;a-1;X9\r\n\r\n8;a-2;X10\r\n"
    columns = {"order_id": "AUFTRAG NR", "accession": "acc#", "patient_id": "Patient-ID"}
    orders = read_orders_csv(write(tmp_path, text), columns)
    assert [(o.order_id, o.accession, o.patient_id, o.line) for o in orders] == [
        ("7", "a-1", "X9", 2),
        ("8", "a-2", "X10", 4),
    ]


def test_csv_tab_delimited(tmp_path: Path) -> None:
    text = "ID\tWHEN\nA\t2024-01-31\n"
    orders = read_orders_csv(write(tmp_path, text), {"order_id": "ID", "study_date": "WHEN"})
    assert orders[0].study_date == "20240131"


def test_csv_ris_columns_object_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "ID,M\n1,US\n")
    orders = read_orders_csv(path, RisColumns(order_id="ID", modality="M"))
    assert orders[0].modality == "US"


def test_csv_missing_mapped_column_names_it(tmp_path: Path) -> None:
    text = "ORDER_ID,ACC_NO,MRN,PAT_NAME,DOB,SEX,EXAM_DATE,MODALITY\nO1,A,P,N,,,,\n"
    with pytest.raises(InputError, match=r"orders.csv line 1: column 'PROC_DESC' \(description\)"):
        read_orders_csv(write(tmp_path, text), SPEC_COLUMNS)


def test_csv_unknown_mapping_key_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown key 'dob'"):
        read_orders_csv(write(tmp_path, "A\n1\n"), {"order_id": "A", "dob": "B"})


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("O9,A,P,Doe^J,1970-02-30,M,20240101,CT,x", r"line 4: DOB: not a calendar date"),
        ("O9,A,P,Doe^J,01/02/1970,M,20240101,CT,x", r"line 4: DOB: not a date in"),
        ("O9,A,P,Doe^J,19700101,M,2024-1-1,CT,x", r"line 4: EXAM_DATE: not a date"),
        ("O9,A,P,Doe^J,19700101,Q,20240101,CT,x", r"line 4: SEX: unknown sex code"),
        (",A,P,Doe^J,19700101,M,20240101,CT,x", r"line 4: ORDER_ID: missing order id"),
        ("NULL,A,P,Doe^J,19700101,M,20240101,CT,x", r"line 4: ORDER_ID: missing order id"),
        ("O9,A,P,Doe^J,19700101,M,20240101,CT", r"line 4: 8 fields, the header has 9"),
        ("O9,A,P,Doe^J,19700101,M,20240101,CT,x,y", r"line 4: 10 fields, the header has 9"),
        (
            "o1,A,P,Doe^J,19700101,M,20240101,CT,x",
            r"line 4: duplicate order id \(first on line 2\)",
        ),
    ],
)
def test_csv_malformed_rows_name_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    text = f"{HEADER}\nO1,A1,P1,Doe^J,19700101,M,20240101,CT,x\n\n{row}\nO5,A5,P5,X,,,,,\n"
    with pytest.raises(InputError, match=rf"^orders.csv {message}"):
        read_orders_csv(write(tmp_path, text), SPEC_COLUMNS)


def test_csv_errors_do_not_echo_patient_data(tmp_path: Path) -> None:
    text = f"{HEADER}\nO1,A1,P1,Doe^J,1970-02-31,M,20240101,CT,x\n"
    with pytest.raises(InputError) as info:
        read_orders_csv(write(tmp_path, text), SPEC_COLUMNS)
    assert "1970" not in str(info.value)
    assert "Doe" not in str(info.value)


def test_csv_line_numbers_count_quoted_newlines(tmp_path: Path) -> None:
    text = f'{HEADER}\nO1,A1,P1,Doe^J,19700101,M,20240101,CT,"two\nlines"\nO2,A2,P2,X,bad,,,,\n'
    with pytest.raises(InputError, match=r"^orders.csv line 4: DOB"):
        read_orders_csv(write(tmp_path, text), SPEC_COLUMNS)


def test_csv_not_utf8_names_the_line(tmp_path: Path) -> None:
    text = f"{HEADER}\nO1,A1,P1,Müller^J,19700101,M,20240101,CT,x\n"
    with pytest.raises(InputError, match=r"^orders.csv line 2: not valid utf-8-sig"):
        read_orders_csv(write(tmp_path, text, encoding="latin-1"), SPEC_COLUMNS)
    orders = read_orders_csv(
        write(tmp_path, text, encoding="latin-1"), SPEC_COLUMNS, encoding="latin-1"
    )
    assert orders[0].patient_name == "MÜLLER^J"


def test_csv_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty file"):
        read_orders_csv(write(tmp_path, "\n\n"), SPEC_COLUMNS)
    with pytest.raises(InputError, match="nope.csv: cannot read"):
        read_orders_csv(tmp_path / "nope.csv", SPEC_COLUMNS)


# --- HL7 -------------------------------------------------------------------------------


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment with the given 1-based fields set, so positions are not counted by hand."""
    values = [""] * max(fields)
    for i, v in fields.items():
        values[i - 1] = v
    return "|".join([name, *values])


MSH = r"MSH|^~\&|RIS|HOSP|PACS|HOSP|20240301120000||{}|MSG1|P|2.3"
ORM = "\r".join(
    [
        MSH.format("ORM^O01"),
        seg(
            "PID",
            {
                1: "1",
                3: "MRN1^^^HOSP^MR~OLD7^^^HOSP",
                5: "Doe&van^John^Albert^Jr^Dr",
                7: "19700102",
                8: "M",
            },
        ),
        "PV1|1|O",
        seg("ORC", {1: "NW", 2: "PL100^RIS", 3: "FI200^PACS", 5: "SC", 7: "^^^20240305090000"}),
        seg(
            "OBR",
            {
                1: "1",
                2: "PL100^RIS",
                3: "FI200^PACS",
                4: "CT123^CT Head w/o^L",
                18: "ACC900",
                24: "CT",
            },
        ),
        seg("ORC", {1: "NW", 2: "PL101^RIS", 3: "FI201^PACS"}),
        seg(
            "OBR",
            {
                1: "2",
                2: "PL101^RIS",
                3: "FI201^PACS",
                4: "MR77^^L",
                24: "MRI",
                27: "^^^202403061015",
            },
        ),
    ]
)
ORU = "\n".join(
    [
        MSH.format("ORU^R01"),
        'PID|1||MRN2||ROE^JANE||""|F',
        seg("OBR", {1: "1", 3: "FI300", 4: "US1^Abdomen US", 7: "20240307101500+0100", 24: "US"}),
        "OBX|1|TX|||No findings",
    ]
)


def test_hl7_orm_with_two_orders_and_mllp_framing(tmp_path: Path) -> None:
    text = "\x0b" + ORM + "\x1c\r"
    orders = read_orders_hl7(write(tmp_path, text, "feed.hl7"))
    assert orders == [
        Order(
            order_id="PL100",
            accession="ACC900",
            patient_id="MRN1",
            # XPN family^given^middle^suffix^prefix -> PN family^given^middle^prefix^suffix
            patient_name="DOE^JOHN^ALBERT^DR^JR",
            birth_date="19700102",
            sex="M",
            study_date="20240305",  # ORC-7.4 (TQ start): no OBR-7 in an ORM
            modality="CT",
            description="CT Head w/o",
            line=1,
        ),
        Order(
            order_id="PL101",
            accession="FI201",  # no OBR-18: the filler number
            patient_id="MRN1",
            patient_name="DOE^JOHN^ALBERT^DR^JR",
            birth_date="19700102",
            sex="M",
            study_date="20240306",  # OBR-27.4
            modality="MRI",  # as written; matching reads it as MR
            description="MR77",  # no text component: the code
            line=1,
        ),
    ]


def test_hl7_oru_with_lf_segments_and_null_birth_date(tmp_path: Path) -> None:
    orders = read_orders_hl7(write(tmp_path, ORU + "\n", "feed.hl7"))
    assert orders == [
        Order(
            order_id="FI300",  # no placer number: the filler number
            accession="FI300",
            patient_id="MRN2",
            patient_name="ROE^JANE",
            sex="F",
            study_date="20240307",  # OBR-7, time and offset dropped
            modality="US",
            description="Abdomen US",
            line=1,
        )
    ]


@pytest.mark.parametrize("separator", ["\r\n\r\n", "\n", "\r", "\x1c\r\x0b"])
def test_hl7_message_separators_and_line_numbers(tmp_path: Path, separator: str) -> None:
    orm = ORM.replace("\r", "\r\n")
    text = orm + separator + ORU.replace("\n", "\r\n")
    orders = read_orders_hl7(write(tmp_path, text, "feed.hl7"))
    assert [o.order_id for o in orders] == ["PL100", "PL101", "FI300"]
    blank = 1 if separator == "\r\n\r\n" else 0
    assert orders[2].line == 8 + blank


def test_hl7_batch_envelope_is_ignored(tmp_path: Path) -> None:
    text = "FHS|^~\\&\rBHS|^~\\&\r" + ORU + "\rBTS|1\rFTS|1\r"
    assert [o.order_id for o in read_orders_hl7(write(tmp_path, text, "f.hl7"))] == ["FI300"]


def test_hl7_later_messages_update_the_same_order(tmp_path: Path) -> None:
    update = "\r".join(
        [
            MSH.format("ORM^O01"),
            "PID|1||MRN1||DOE^JOHN||19700102|M",
            "ORC|XO|PL100|FI200",
            seg("OBR", {1: "1", 2: "PL100", 3: "FI200", 7: "20240306"}),
        ]
    )
    orders = read_orders_hl7(write(tmp_path, ORM + "\r\r" + update, "f.hl7"))
    first = orders[0]
    assert len(orders) == 2
    assert first.study_date == "20240306"  # updated
    assert first.patient_name == "DOE^JOHN"  # updated
    assert first.accession == "ACC900"  # kept: the update has no OBR-18
    assert first.line == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PID|1||X\r" + ORU, r"f.hl7 line 1: segment outside a message"),
        (ORU + "\n\nOBX|2|TX", r"f.hl7 line 6: segment outside a message"),
        (ORU.replace("ORU^R01", "ADT^A01"), r"f.hl7 line 1: not an order message"),
        (ORU.replace('||""|F', "||1970|F"), r"f.hl7 line 1: PID-7: not an HL7 date"),
        (ORU.replace('||""|F', "||19700231|F"), r"f.hl7 line 1: PID-7: not a calendar date"),
        (ORU.replace("20240307101500", "2024030"), r"f.hl7 line 1: OBR-7"),
        (ORU.replace('PID|1||MRN2||ROE^JANE||""|F\n', ""), r"f.hl7 line 1: 0 PID segments"),
        ("\n".join(ORU.splitlines()[:2]), r"f.hl7 line 1: no ORC or OBR segment"),
        (ORU.replace("OBX|", "obx|"), r"f.hl7 line 1: malformed HL7 segment"),
        (ORU.replace("OBX|", "OBX^"), r"f.hl7 line 1: malformed HL7 segment"),
        (ORU.replace("|FI300|", "||"), r"f.hl7 line 1: ORC-2/OBR-2: missing order id"),
        ("MSH|^~", r"f.hl7 line 1: malformed MSH segment"),
    ],
)
def test_hl7_malformed_messages_name_their_first_line(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(InputError, match=rf"^{message}"):
        read_orders_hl7(write(tmp_path, text, "f.hl7"))


def test_hl7_malformed_second_message_reports_its_own_line(tmp_path: Path) -> None:
    bad = ORU.replace("ORU^R01", "ACK")
    with pytest.raises(InputError, match=r"^f.hl7 line 9: not an order message"):
        read_orders_hl7(write(tmp_path, ORM.replace("\r", "\n") + "\n\n" + bad, "f.hl7"))


# --- overrides -------------------------------------------------------------------------


def test_overrides_with_header_skip_and_comments(tmp_path: Path) -> None:
    text = "study_uid,order_id\n# reviewed by radiology 2024-03-01\n1.2.3,O1\n1.2.4, SKIP \n\n"
    assert read_overrides(write(tmp_path, text, "ov.csv")) == {"1.2.3": "O1", "1.2.4": None}


def test_overrides_without_header(tmp_path: Path) -> None:
    assert read_overrides(write(tmp_path, "1.2.3,O1\n", "ov.csv")) == {"1.2.3": "O1"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("O7,1.2.9", r"line 3: study_uid is not a DICOM UID"),
        ("1.2.9", r"line 3: 1 fields, expected 2"),
        ("1.2.9,O1,extra", r"line 3: 3 fields, expected 2"),
        ("1.2.9,", r"line 3: missing order id"),
        ("1.2.3,O2", r"line 3: study listed twice \(first on line 2\)"),
    ],
)
def test_overrides_errors_have_line_numbers(tmp_path: Path, row: str, message: str) -> None:
    text = f"study_uid,order_id\n1.2.3,O1\n{row}\n"
    with pytest.raises(InputError, match=rf"^ov.csv {message}"):
        read_overrides(write(tmp_path, text, "ov.csv"))
