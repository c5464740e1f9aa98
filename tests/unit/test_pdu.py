"""pacsmig's own Upper Layer PDUs and DIMSE command sets (``dicomnet/pdu.py``) and the Part 10
head parser of ``dicomnet/wire.py``, checked against independent implementations: pynetdicom's
PDU and DIMSE classes for the wire layout, pydicom's reader for command sets and File Meta.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.data.data_manager import get_charset_files
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pynetdicom import dimse_messages, dimse_primitives
from pynetdicom import pdu as pnd_pdu
from pynetdicom.dsutils import encode as pnd_encode
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    P_DATA,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

from pacsmig.dicomnet import pdu
from pacsmig.dicomnet.pdu import ProtocolError
from pacsmig.dicomnet.wire import normalised_part10, parse_part10

# -- strategies ---------------------------------------------------------------------------------

# AE titles: 1-16 of the default character repertoire without backslash, no leading or
# trailing spaces (they are padding on the wire, PS3.8 9.3.2).
AE_TITLES = (
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\"),
        min_size=1,
        max_size=16,
    )
    .map(str.strip)
    .filter(bool)
)
_COMPONENT = st.one_of(st.just("0"), st.integers(1, 10**9).map(str))
UIDS = st.lists(_COMPONENT, min_size=2, max_size=12).map(".".join).filter(lambda u: len(u) <= 64)
VERSIONS = AE_TITLES  # Implementation Version Name: SH, 1-16 characters
MAX_PDUS = st.integers(0, 2**32 - 1)


@st.composite
def proposed_contexts(draw: st.DrawFn) -> tuple[pdu.ProposedContext, ...]:
    ids = draw(st.lists(st.integers(0, 127), min_size=1, max_size=128, unique=True))
    return tuple(
        pdu.ProposedContext(
            context_id=2 * n + 1,
            abstract_syntax=draw(UIDS),
            transfer_syntaxes=tuple(draw(st.lists(UIDS, min_size=1, max_size=4, unique=True))),
        )
        for n in ids
    )


@st.composite
def requests(draw: st.DrawFn) -> pdu.AssociateRequest:
    return pdu.AssociateRequest(
        called_ae=draw(AE_TITLES),
        calling_ae=draw(AE_TITLES),
        contexts=draw(proposed_contexts()),
        max_pdu=draw(MAX_PDUS),
        implementation_class_uid=draw(UIDS),
        implementation_version=draw(st.one_of(st.just(""), VERSIONS)),
    )


@st.composite
def accepts(draw: st.DrawFn) -> pdu.AssociateAccept:
    ids = draw(st.lists(st.integers(0, 127), min_size=1, max_size=128, unique=True))
    return pdu.AssociateAccept(
        called_ae=draw(AE_TITLES),
        calling_ae=draw(AE_TITLES),
        results=tuple(
            pdu.ContextResult(
                context_id=2 * n + 1,
                result=draw(st.sampled_from([0, 1, 2, 3, 4])),
                transfer_syntax=draw(UIDS),
            )
            for n in ids
        ),
        max_pdu=draw(MAX_PDUS),
        implementation_class_uid=draw(UIDS),
        implementation_version=draw(st.one_of(st.just(""), VERSIONS)),
    )


REJECTS = st.builds(
    pdu.AssociateReject,
    result=st.sampled_from([1, 2]),
    source=st.sampled_from([1, 2, 3]),
    reason=st.integers(0, 255),
)

_ROUND_TRIP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _body(encoded: bytes, kind: int) -> bytes:
    """The PDU's variable part, after checking its 6-byte header."""
    assert encoded[0] == kind and encoded[1] == 0
    (length,) = struct.unpack_from(">I", encoded, 2)
    assert length == len(encoded) - 6
    return encoded[6:]


# -- association PDUs: round trips ---------------------------------------------------------------


@_ROUND_TRIP
@given(requests())
def test_associate_rq_round_trips(rq: pdu.AssociateRequest) -> None:
    assert pdu.decode_associate_rq(_body(pdu.encode_associate_rq(rq), pdu.A_ASSOCIATE_RQ)) == rq


@_ROUND_TRIP
@given(accepts())
def test_associate_ac_round_trips(ac: pdu.AssociateAccept) -> None:
    assert pdu.decode_associate_ac(_body(pdu.encode_associate_ac(ac), pdu.A_ASSOCIATE_AC)) == ac


@given(REJECTS)
def test_associate_rj_round_trips(rj: pdu.AssociateReject) -> None:
    assert pdu.decode_associate_rj(_body(pdu.encode_associate_rj(rj), pdu.A_ASSOCIATE_RJ)) == rj


# -- association PDUs: against pynetdicom --------------------------------------------------------


def _pynetdicom_user_info(max_pdu: int, class_uid: str, version: str) -> list[object]:
    ml = MaximumLengthNotification()
    ml.maximum_length_received = max_pdu
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = class_uid
    items: list[object] = [ml, ic]
    if version:
        iv = ImplementationVersionNameNotification()
        iv.implementation_version_name = version
        items.append(iv)
    return items


def _pynetdicom_rq_primitive(rq: pdu.AssociateRequest) -> A_ASSOCIATE:
    prim = A_ASSOCIATE()
    prim.application_context_name = rq.application_context
    prim.called_ae_title = rq.called_ae
    prim.calling_ae_title = rq.calling_ae
    contexts = []
    for cx in rq.contexts:
        context = PresentationContext()
        context.context_id = cx.context_id
        context.abstract_syntax = cx.abstract_syntax
        context.transfer_syntax = list(cx.transfer_syntaxes)
        contexts.append(context)
    prim.presentation_context_definition_list = contexts
    prim.user_information = _pynetdicom_user_info(
        rq.max_pdu, rq.implementation_class_uid, rq.implementation_version
    )
    return prim


@_ROUND_TRIP
@given(requests())
def test_associate_rq_is_what_pynetdicom_decodes_and_encodes(rq: pdu.AssociateRequest) -> None:
    ours = pdu.encode_associate_rq(rq)
    theirs = pnd_pdu.A_ASSOCIATE_RQ()
    theirs.decode(ours)
    assert theirs.protocol_version == 1
    prim = theirs.to_primitive()
    assert prim.called_ae_title == rq.called_ae
    assert prim.calling_ae_title == rq.calling_ae
    assert str(prim.application_context_name) == pdu.APPLICATION_CONTEXT
    assert [
        (cx.context_id, str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax])
        for cx in prim.presentation_context_definition_list
    ] == [(cx.context_id, cx.abstract_syntax, list(cx.transfer_syntaxes)) for cx in rq.contexts]
    assert prim.maximum_length_received == rq.max_pdu
    assert str(prim.implementation_class_uid) == rq.implementation_class_uid
    versions = [
        str(item.implementation_version_name)
        for item in prim.user_information
        if isinstance(item, ImplementationVersionNameNotification)
    ]
    assert versions == ([rq.implementation_version] if rq.implementation_version else [])

    # The reverse: pynetdicom's encoding of the same request is byte for byte ours.
    encoded = pnd_pdu.A_ASSOCIATE_RQ()
    encoded.from_primitive(_pynetdicom_rq_primitive(rq))
    assert encoded.encode() == ours
    assert pdu.decode_associate_rq(_body(encoded.encode(), pdu.A_ASSOCIATE_RQ)) == rq


def _pynetdicom_ac(ac: pdu.AssociateAccept) -> bytes:
    prim = A_ASSOCIATE()
    prim.application_context_name = pdu.APPLICATION_CONTEXT
    prim.called_ae_title = ac.called_ae
    prim.calling_ae_title = ac.calling_ae
    prim.result = 0
    results = []
    for r in ac.results:
        context = PresentationContext()
        context.context_id = r.context_id
        context.result = r.result
        context.transfer_syntax = [r.transfer_syntax]
        results.append(context)
    prim.presentation_context_definition_results_list = results
    prim.user_information = _pynetdicom_user_info(
        ac.max_pdu, ac.implementation_class_uid, ac.implementation_version
    )
    out = pnd_pdu.A_ASSOCIATE_AC()
    out.from_primitive(prim)
    encoded: bytes = out.encode()
    return encoded


@_ROUND_TRIP
@given(accepts())
def test_associate_ac_from_pynetdicom_decodes_and_matches_ours(ac: pdu.AssociateAccept) -> None:
    theirs = _pynetdicom_ac(ac)
    assert pdu.decode_associate_ac(_body(theirs, pdu.A_ASSOCIATE_AC)) == ac
    assert pdu.encode_associate_ac(ac) == theirs
    # And pynetdicom reads ours back to the same results.
    parsed = pnd_pdu.A_ASSOCIATE_AC()
    parsed.decode(pdu.encode_associate_ac(ac))
    prim = parsed.to_primitive()
    assert [
        (cx.context_id, cx.result, str(cx.transfer_syntax[0]))
        for cx in prim.presentation_context_definition_results_list
    ] == [(r.context_id, r.result, r.transfer_syntax) for r in ac.results]
    assert prim.maximum_length_received == ac.max_pdu


# The (source, reason) pairs PS3.8 9.3.4 defines; pynetdicom refuses others.
VALID_REJECTS = st.builds(
    lambda result, pair: pdu.AssociateReject(result=result, source=pair[0], reason=pair[1]),
    st.sampled_from([1, 2]),
    st.sampled_from([(1, 1), (1, 2), (1, 3), (1, 7), (2, 1), (2, 2), (3, 1), (3, 2)]),
)


@given(VALID_REJECTS)
def test_associate_rj_matches_pynetdicom(rj: pdu.AssociateReject) -> None:
    prim = A_ASSOCIATE()
    prim.result, prim.result_source, prim.diagnostic = rj.result, rj.source, rj.reason
    theirs = pnd_pdu.A_ASSOCIATE_RJ()
    theirs.from_primitive(prim)
    assert pdu.encode_associate_rj(rj) == theirs.encode()
    assert pdu.decode_associate_rj(theirs.encode()[6:]) == rj


def test_release_and_abort_pdus_match_pynetdicom() -> None:
    assert pdu.encode_release_rq() == pnd_pdu.A_RELEASE_RQ().encode()
    assert pdu.encode_release_rp() == pnd_pdu.A_RELEASE_RP().encode()
    for source, reason in ((0, 0), (2, 0), (2, 6)):
        parsed = pnd_pdu.A_ABORT_RQ()
        parsed.decode(pdu.encode_abort(source, reason))
        assert (parsed.source, parsed.reason_diagnostic) == (source, reason)


def test_a_pynetdicom_requestors_rq_decodes() -> None:
    """A request as pynetdicom's AE builds it, with extra user information sub-items."""
    from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

    rq = pdu.AssociateRequest(
        called_ae="ANY-SCP",
        calling_ae="ECHOSCU",
        contexts=(
            pdu.ProposedContext(
                context_id=1,
                abstract_syntax=pdu.VERIFICATION,
                transfer_syntaxes=("1.2.840.10008.1.2",),
            ),
        ),
        max_pdu=16382,
        implementation_class_uid="1.2.826.0.1.3680043.9.3811.3.0.4",
        implementation_version="PYNETDICOM_304",
    )
    prim = _pynetdicom_rq_primitive(rq)
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = pdu.VERIFICATION
    role.scu_role, role.scp_role = True, False
    prim.user_information.append(role)
    encoded = pnd_pdu.A_ASSOCIATE_RQ()
    encoded.from_primitive(prim)
    assert pdu.decode_associate_rq(_body(encoded.encode(), pdu.A_ASSOCIATE_RQ)) == rq


# -- association PDUs: malformed input -----------------------------------------------------------


def test_associate_rq_encodes_the_protocol_version_it_carries() -> None:
    """A-ASSOCIATE-RQ holds protocol_version; the encoder must not drop it for 1."""
    rq = pdu.AssociateRequest(
        called_ae="A",
        calling_ae="B",
        contexts=(
            pdu.ProposedContext(context_id=1, abstract_syntax="1.2", transfer_syntaxes=("1.2",)),
        ),
        protocol_version=3,
    )
    assert pdu.decode_associate_rq(pdu.encode_associate_rq(rq)[6:]).protocol_version == 3


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_after_the_fixed_part_is_a_protocol_error_or_decodes(tail: bytes) -> None:
    body = struct.pack(">HH", 1, 0) + b"CALLED".ljust(16) + b"CALLING".ljust(16) + b"\0" * 32
    for decode in (pdu.decode_associate_rq, pdu.decode_associate_ac):
        try:
            decoded = decode(body + tail)
        except ProtocolError:
            continue
        assert (decoded.called_ae, decoded.calling_ae) == ("CALLED", "CALLING")


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda b: b[:60], "too short"),
        (lambda b: b + b"\x10", "trailing bytes"),
        (lambda b: b + b"\x10\x00\x00\x09abc", "overruns"),
    ],
)
def test_malformed_associate_rq_raises_protocol_error(mangle: object, match: str) -> None:
    rq = pdu.AssociateRequest(
        called_ae="A",
        calling_ae="B",
        contexts=(
            pdu.ProposedContext(context_id=1, abstract_syntax="1.2", transfer_syntaxes=("1.2",)),
        ),
    )
    body = pdu.encode_associate_rq(rq)[6:]
    with pytest.raises(ProtocolError, match=match):
        pdu.decode_associate_rq(mangle(body))  # type: ignore[operator]


def test_short_reject_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        pdu.decode_associate_rj(b"\0\1\1")


# -- reading PDUs from a socket ------------------------------------------------------------------


def _feed(sock: socket.socket, data: bytes, piece: int) -> threading.Thread:
    def run() -> None:
        for i in range(0, len(data), piece):
            sock.sendall(data[i : i + piece])
        sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_read_pdu_joins_a_pdu_sent_a_byte_at_a_time() -> None:
    encoded = pdu.encode_associate_rj(pdu.AssociateReject(result=1, source=1, reason=7))
    encoded += pdu.encode_release_rq()
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    _feed(theirs, encoded, 1).join(5)
    assert pdu.read_pdu(ours) == (pdu.A_ASSOCIATE_RJ, bytearray(b"\0\1\1\7"))
    assert pdu.read_pdu(ours) == (pdu.A_RELEASE_RQ, bytearray(4))
    with pytest.raises(ProtocolError, match="closed"):
        pdu.read_pdu(ours)
    ours.close()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x09\x00\x00\x00\x00\x04\0\0\0\0", "unknown PDU type"),
        (b"\x04\x00\x7f\xff\xff\xff", "not plausible"),
        (b"\x04\x00\x00\x00\x00\x10\0\0", "closed"),
    ],
)
def test_read_pdu_refuses_what_is_not_a_pdu(data: bytes, match: str) -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    _feed(theirs, data, 3).join(5)
    with pytest.raises(ProtocolError, match=match):
        pdu.read_pdu(ours)
    ours.close()


def test_read_pdu_times_out_as_a_protocol_error() -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(0.2)
    theirs.sendall(b"\x04\x00")
    with pytest.raises(ProtocolError, match="timeout"):
        pdu.read_pdu(ours)
    ours.close()
    theirs.close()


# -- P-DATA-TF and PDVs --------------------------------------------------------------------------

PDV_SPECS = st.lists(
    st.tuples(
        st.integers(0, 127).map(lambda n: 2 * n + 1),
        st.booleans(),
        st.booleans(),
        st.binary(max_size=300),
    ),
    min_size=1,
    max_size=6,
)


def _pdata_body(specs: list[tuple[int, bool, bool, bytes]]) -> bytearray:
    """One P-DATA-TF body holding these PDVs, item headers taken from pdv_header."""
    body = bytearray()
    for cid, command, last, data in specs:
        header = pdu.pdv_header(len(data), cid, command=command, last=last)
        body += header[6:] + data
    return body


@given(PDV_SPECS)
def test_pdvs_parse_what_pdv_header_frames(specs: list[tuple[int, bool, bool, bytes]]) -> None:
    parsed = [
        (p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdu.pdvs(_pdata_body(specs))
    ]
    assert parsed == specs


@given(
    st.integers(0, 1 << 20),
    st.integers(0, 127).map(lambda n: 2 * n + 1),
    st.booleans(),
    st.booleans(),
)
def test_pdv_header_lengths(length: int, cid: int, command: bool, last: bool) -> None:
    header = pdu.pdv_header(length, cid, command=command, last=last)
    kind, _, pdu_len, pdv_len, got_cid, control = struct.unpack(">BBIIBB", header)
    assert (kind, pdu_len, pdv_len, got_cid) == (pdu.P_DATA_TF, length + 6, length + 2, cid)
    assert control == (1 if command else 0) | (2 if last else 0)


@given(PDV_SPECS)
def test_pdvs_agree_with_pynetdicom_both_ways(specs: list[tuple[int, bool, bool, bytes]]) -> None:
    body = _pdata_body(specs)
    theirs = pnd_pdu.P_DATA_TF()
    theirs.decode(struct.pack(">BBI", pdu.P_DATA_TF, 0, len(body)) + bytes(body))
    values = theirs.to_primitive().presentation_data_value_list
    # pynetdicom keeps the message control header as the PDV's first byte.
    assert [(cid, bytes(v[1:])) for cid, v in values] == [(cid, data) for cid, _, _, data in specs]
    assert [v[0] & 3 for _, v in values] == [
        (1 if c else 0) | (2 if last else 0) for _, c, last, _ in specs
    ]
    primitive = P_DATA()
    primitive.presentation_data_value_list = [
        [cid, bytes([(1 if c else 0) | (2 if last else 0)]) + data] for cid, c, last, data in specs
    ]
    encoded = pnd_pdu.P_DATA_TF()
    encoded.from_primitive(primitive)
    raw = encoded.encode()
    assert raw[6:] == body
    parsed = [
        (p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdu.pdvs(bytearray(raw[6:]))
    ]
    assert parsed == specs


@pytest.mark.parametrize(
    "body",
    [
        b"\0\0\0\x05\x01\x03ab",  # length 5 runs past the body
        b"\0\0\0\x01\x01",  # length < 2: not even the two header bytes
        b"\0\0\0\x00",  # zero length
        b"\0\0\0\x03\x01\x03a" + b"\0\0\0",  # a valid PDV, then a fragment of a header
        b"\0\0\0\x03\x01\x03a" + b"\0\0\0\x09\x01\x02",  # then one that overruns
    ],
)
def test_malformed_pdv_lengths_raise(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        list(pdu.pdvs(bytearray(body)))


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_random_p_data_bodies_parse_or_raise_protocol_error(body: bytes) -> None:
    try:
        total = sum(len(p.data) + 6 for p in pdu.pdvs(bytearray(body)))
    except ProtocolError:
        return
    assert total == len(body)


@given(st.integers(8, 2**32 - 1))
def test_fragment_size_fits_the_peers_limit(peer_max: int) -> None:
    size = pdu.fragment_size(peer_max)
    assert size % 2 == 0
    assert size + 6 <= peer_max  # the PDV item header takes 6 bytes of the PDU's length
    assert size >= peer_max - 7  # and no smaller than it needs to be


@pytest.mark.parametrize("peer_max", [0, -1])
def test_unlimited_peer_gets_1_mib_fragments(peer_max: int) -> None:
    assert pdu.fragment_size(peer_max) == 1 << 20


# -- command sets --------------------------------------------------------------------------------


def _pydicom_command(raw: bytes) -> dict[str, object]:
    ds = read_dataset(io.BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    return {elem.keyword: elem.value for elem in ds}


def _pynetdicom_store_rq(msg_id: int, sop_class: str, sop_uid: str) -> bytes:
    prim = dimse_primitives.C_STORE()
    prim.MessageID = msg_id
    prim.AffectedSOPClassUID = sop_class
    prim.AffectedSOPInstanceUID = sop_uid
    prim.Priority = 0  # medium, as pacsmig sends
    prim.DataSet = io.BytesIO(b"\0\0")
    msg = dimse_messages.C_STORE_RQ()
    msg.primitive_to_message(prim)
    encoded: bytes = pnd_encode(msg.command_set, True, True)
    return encoded


MSG_IDS = st.integers(1, 65535)
STATUSES = st.sampled_from([0x0000, 0x0001, 0xA700, 0xA900, 0xB000, 0xB007, 0xC000, 0xC211])
COMMENTS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"),
    max_size=64,
)


@given(MSG_IDS, UIDS, UIDS)
def test_store_request_matches_pynetdicoms_command_set(
    msg_id: int, sop_class: str, sop_uid: str
) -> None:
    ours = pdu.store_request(msg_id, sop_class, sop_uid)
    theirs = _pynetdicom_store_rq(msg_id, sop_class, sop_uid)
    got, expected = _pydicom_command(ours), _pydicom_command(theirs)
    # "A data set follows" is any value but 0x0101 (PS3.7 E.1): pynetdicom writes 1, pacsmig 0.
    assert got.pop("CommandDataSetType") != pdu.NO_DATASET
    assert expected.pop("CommandDataSetType") != pdu.NO_DATASET
    assert got == expected
    assert got["CommandGroupLength"] == len(ours) - 12
    # And pynetdicom's own message decoder takes ours as a valid C-STORE-RQ.
    msg = dimse_messages.C_STORE_RQ()
    msg.command_set = read_dataset(io.BytesIO(ours), is_implicit_VR=True, is_little_endian=True)
    prim = msg.message_to_primitive()
    assert prim.is_valid_request
    assert (prim.MessageID, prim.AffectedSOPClassUID, prim.AffectedSOPInstanceUID) == (
        msg_id,
        sop_class,
        sop_uid,
    )


@given(MSG_IDS, UIDS, UIDS, STATUSES, COMMENTS)
def test_response_to_matches_pynetdicoms_c_store_rsp(
    msg_id: int, sop_class: str, sop_uid: str, status: int, comment: str
) -> None:
    request = pdu.decode_command(pdu.store_request(msg_id, sop_class, sop_uid))
    ours = pdu.response_to(request, status, comment)
    prim = dimse_primitives.C_STORE()
    prim.MessageIDBeingRespondedTo = msg_id
    prim.AffectedSOPClassUID = sop_class
    prim.AffectedSOPInstanceUID = sop_uid
    prim.Status = status
    if comment:
        prim.ErrorComment = comment
    msg = dimse_messages.C_STORE_RSP()
    msg.primitive_to_message(prim)
    theirs = pnd_encode(msg.command_set, True, True)
    assert _pydicom_command(ours) == _pydicom_command(theirs)
    decoded = pdu.decode_command(theirs)
    assert decoded.command_field == pdu.C_STORE_RSP
    assert decoded.us(0x0120) == msg_id
    assert decoded.us(0x0900) == status
    assert decoded.text(0x0902) == comment
    assert decoded.text(0x1000) == sop_uid
    assert not decoded.has_dataset


def test_echo_response_answers_the_echo() -> None:
    prim = dimse_primitives.C_ECHO()
    prim.MessageID = 42
    prim.AffectedSOPClassUID = pdu.VERIFICATION
    msg = dimse_messages.C_ECHO_RQ()
    msg.primitive_to_message(prim)
    request = pdu.decode_command(pnd_encode(msg.command_set, True, True))
    assert request.command_field == pdu.C_ECHO_RQ and not request.has_dataset
    response = _pydicom_command(pdu.response_to(request, 0))
    assert response["CommandField"] == pdu.C_ECHO_RSP
    assert response["MessageIDBeingRespondedTo"] == 42
    assert response["Status"] == 0
    assert response["AffectedSOPClassUID"] == pdu.VERIFICATION
    assert "AffectedSOPInstanceUID" not in response


@given(
    st.dictionaries(
        st.sampled_from([0x0002, 0x0100, 0x0110, 0x0120, 0x0600, 0x0700, 0x0800, 0x0900, 0x1000]),
        st.one_of(st.integers(0, 65535), UIDS),
        min_size=1,
    )
)
def test_encode_command_round_trips(fields: dict[int, int | str]) -> None:
    raw = pdu.encode_command(fields)
    assert len(raw) % 2 == 0
    cmd = pdu.decode_command(raw)
    assert cmd.us(0x0000) is not None
    (group_length,) = struct.unpack("<I", cmd.fields[0x0000])
    assert group_length == len(raw) - 12
    for elem, value in fields.items():
        if isinstance(value, int):
            assert cmd.us(elem) == value
        else:
            assert cmd.text(elem) == value
    assert sorted(cmd.fields) == sorted({0x0000, *fields})


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_random_command_bytes_decode_or_raise_protocol_error(raw: bytes) -> None:
    try:
        cmd = pdu.decode_command(raw)
    except ProtocolError:
        return
    # Every byte belongs to an element (a repeated element keeps only its last value).
    assert sum(8 + len(value) for value in cmd.fields.values()) <= len(raw)


def test_truncated_command_set_raises() -> None:
    raw = pdu.store_request(1, "1.2.3", "4.5.6")
    for cut in (len(raw) - 1, len(raw) - 9, 7):
        with pytest.raises(ProtocolError):
            pdu.decode_command(raw[:cut])


# -- Part 10 heads -------------------------------------------------------------------------------

_HEAD = 64 * 1024


@cache
def _test_files() -> tuple[Path, ...]:
    found = {Path(p) for p in get_testdata_files()} | {Path(p) for p in get_charset_files()}
    return tuple(sorted(p for p in found if p.is_file()))


def _pydicom_view(data: bytes) -> tuple[int, dict[str, str]] | None:
    """Where pydicom says the data set starts and its File Meta UIDs; None: no preamble."""
    fp = io.BytesIO(data)
    if read_preamble(fp, False) is None:
        return None
    meta = _read_file_meta_info(fp)
    uids = {
        kw: str(meta.get(kw, "") or "")
        for kw in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
    }
    return fp.tell(), uids


def test_parse_part10_agrees_with_pydicom_on_every_test_file() -> None:
    files = _test_files()
    assert len(files) > 100, "pydicom's test files are not installed"
    parsed = 0
    for path in files:
        with open(path, "rb") as stream:
            head = stream.read(_HEAD)
        try:
            view = _pydicom_view(head)
        except Exception:  # not DICOM at all (e.g. a .json beside the files)
            view = None
        got = parse_part10(head)
        if view is None:
            assert got is None, path.name
            continue
        offset, uids = view
        if offset + 8 > len(head) or not all(uids.values()):
            # File Meta longer than the head, or one that names no instance: left to pydicom.
            assert got is None, path.name
            continue
        assert got is not None, path.name
        assert got.offset == offset, path.name
        assert (got.sop_class_uid, got.sop_uid, got.transfer_syntax) == (
            uids["MediaStorageSOPClassUID"],
            uids["MediaStorageSOPInstanceUID"],
            uids["TransferSyntaxUID"],
        ), path.name
        parsed += 1
    assert parsed > 200


def test_parse_part10_offset_is_where_the_data_set_starts() -> None:
    """The bytes from the offset are a data set pydicom reads to the same elements."""
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "ExplVR_BigEnd.dcm", "rtplan.dcm"):
        path = get_testdata_file(name, download=False)
        assert path is not None
        data = Path(path).read_bytes()
        got = parse_part10(data)
        assert got is not None
        original = dcmread(path)
        implicit = got.transfer_syntax == "1.2.840.10008.1.2"
        little = got.transfer_syntax != "1.2.840.10008.1.2.2"
        rest = read_dataset(io.BytesIO(data[got.offset :]), implicit, little)
        assert [e.tag for e in rest] == [e.tag for e in original]
        assert rest.SOPInstanceUID == original.SOPInstanceUID


def _samples() -> list[bytes]:
    out = []
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "JPEG-LL.dcm", "rtplan.dcm"):
        path = get_testdata_file(name, download=False)
        assert path is not None
        out.append(Path(path).read_bytes()[:2048])
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 3), st.integers(0, 2048))
def test_truncated_heads_give_none_or_the_full_answer(which: int, cut: int) -> None:
    data = _samples()[which]
    full = parse_part10(data)
    assert full is not None
    got = parse_part10(data[:cut])
    if cut >= full.offset + 8:
        assert got == full
    else:
        assert got is None


@settings(max_examples=300)
@given(st.binary(max_size=400), st.booleans())
def test_random_heads_never_raise(tail: bytes, with_prefix: bool) -> None:
    head = (b"\0" * 128 + b"DICM" + tail) if with_prefix else tail
    got = parse_part10(head)
    if got is not None:
        assert 132 <= got.offset <= len(head) - 8


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=64), st.integers(132, 400))
def test_corrupt_file_meta_never_raises(noise: bytes, at: int) -> None:
    data = bytearray(_samples()[0])
    data[at : at + len(noise)] = noise
    got = parse_part10(bytes(data))
    if got is not None:
        assert 132 <= got.offset <= len(data) - 8


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("rtstruct.dcm", "1.2.840.10008.1.2"),
        ("ExplVR_LitEndNoMeta.dcm", "1.2.840.10008.1.2.1"),
        ("ExplVR_BigEndNoMeta.dcm", "1.2.840.10008.1.2.2"),
    ],
)
def test_normalised_part10_gives_a_head_parse_part10_reads(name: str, syntax: str) -> None:
    """A file without preamble becomes Part 10 bytes carrying the same data set."""
    path = get_testdata_file(name, download=False)
    assert path is not None
    assert parse_part10(Path(path).read_bytes()) is None
    original = dcmread(path, force=True)
    data = normalised_part10(Path(path), syntax)
    got = parse_part10(data)
    assert got is not None
    assert got.sop_uid == original.SOPInstanceUID
    assert got.sop_class_uid == original.SOPClassUID
    assert got.transfer_syntax == syntax
    again = dcmread(io.BytesIO(data))
    assert again == original


def test_scp_role_items_are_what_pynetdicom_reads_as_role_selection() -> None:
    """C-GET needs the SCP role proposed per storage class (PS3.7 D.3.3.4): pynetdicom, an
    independent decoder, must read exactly those classes with SCU 0 / SCP 1."""
    classes = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.3.45")
    rq = pdu.AssociateRequest(
        called_ae="SRC",
        calling_ae="PACSMIG",
        contexts=tuple(
            pdu.ProposedContext(
                context_id=2 * n + 1, abstract_syntax=c, transfer_syntaxes=("1.2.840.10008.1.2",)
            )
            for n, c in enumerate(classes)
        ),
        implementation_class_uid="1.2.3",
        implementation_version="V",
        scp_roles=classes,
    )
    decoded = pnd_pdu.A_ASSOCIATE_RQ()
    decoded.decode(pdu.encode_associate_rq(rq))
    prim = decoded.to_primitive()
    roles = {
        str(item.sop_class_uid): (bool(item.scu_role), bool(item.scp_role))
        for item in prim.user_information
        if type(item).__name__ == "SCP_SCU_RoleSelectionNegotiation"
    }
    assert roles == {c: (False, True) for c in classes}
    assert any(
        getattr(i, "implementation_version_name", None) == "V" for i in prim.user_information
    )
    # Decoding here ignores role items (a storage acceptor answers none): the rest round-trips.
    encoded = pdu.encode_associate_rq(rq)
    assert pdu.decode_associate_rq(_body(encoded, pdu.A_ASSOCIATE_RQ)) == rq
