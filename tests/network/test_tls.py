"""DICOM TLS with generated certificates: the right peer associates, every wrong one fails."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.scp import StorageSCP
from pacsmig.dicomnet.store import open_store
from pacsmig.dicomnet.tls import TlsConfig
from pacsmig.errors import PacsError
from pacsmig.testing.corpus import generate_study
from pacsmig.testing.servers import free_port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        cwd=d,
    )


def _leaf(d: Path, name: str, ca: str, san: str) -> None:
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
        cwd=d,
    )
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=d,
    )


@dataclass
class Certs:
    d: Path

    def __getitem__(self, name: str) -> Path:
        return self.d / name


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "otherca")
    _leaf(d, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    _leaf(d, "wrongname", "ca", "DNS:pacs.example.org")
    _leaf(d, "client", "ca", "DNS:pacsmig.local")
    return Certs(d)


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, str]]:
    path = generate_study(
        tmp_path_factory.mktemp("s"), patient_id="P", patient_name="N", n_series=1, per_series=1
    )[0]
    meta = dcmread(path, stop_before_pixels=True).file_meta
    return path, (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))


def _scp(tls: TlsConfig | None) -> StorageSCP:
    scp = StorageSCP(
        ae_title="PACSMIG", port=free_port(), allowed_calling=["LEGACY"], timeout=5, tls=tls
    )
    scp.set_sink(lambda item: True)
    return scp


def _send(
    scp: StorageSCP, client_tls: TlsConfig | None, instance: tuple[Path, tuple[str, str]]
) -> bool:
    path, pair = instance
    peer = Peer(ae_title="PACSMIG", host="127.0.0.1", port=scp.port, timeout=5, tls=client_tls)
    with open_store("LEGACY", peer, [pair]) as session:
        return session.send_file(path, *pair).stored


def test_verified_tls_association_stores(
    certs: Certs, instance: tuple[Path, tuple[str, str]]
) -> None:
    server = TlsConfig(cert=certs["server.pem"], key=certs["server.key"], ca=certs["ca.pem"])
    client = TlsConfig(ca=certs["ca.pem"], cert=certs["client.pem"], key=certs["client.key"])
    with _scp(server) as scp:
        assert _send(scp, client, instance)


def test_wrong_ca_fails(certs: Certs, instance: tuple[Path, tuple[str, str]]) -> None:
    with _scp(TlsConfig(cert=certs["server.pem"], key=certs["server.key"])) as scp:
        with pytest.raises(PacsError, match="over TLS: certificate rejected"):
            _send(scp, TlsConfig(ca=certs["otherca.pem"]), instance)


def test_wrong_hostname_fails(certs: Certs, instance: tuple[Path, tuple[str, str]]) -> None:
    with _scp(TlsConfig(cert=certs["wrongname.pem"], key=certs["wrongname.key"])) as scp:
        with pytest.raises(PacsError, match="certificate rejected: .*mismatch"):
            _send(scp, TlsConfig(ca=certs["ca.pem"]), instance)


def test_plain_text_peer_fails(certs: Certs, instance: tuple[Path, tuple[str, str]]) -> None:
    with _scp(None) as scp:
        with pytest.raises(PacsError, match="over TLS: TLS handshake failed"):
            _send(scp, TlsConfig(ca=certs["ca.pem"]), instance)


def test_plain_text_client_to_tls_scp_fails(
    certs: Certs, instance: tuple[Path, tuple[str, str]]
) -> None:
    with _scp(TlsConfig(cert=certs["server.pem"], key=certs["server.key"])) as scp:
        with pytest.raises(PacsError):
            _send(scp, None, instance)


def test_scp_requires_client_certificate_when_given_a_ca(
    certs: Certs, instance: tuple[Path, tuple[str, str]]
) -> None:
    server = TlsConfig(cert=certs["server.pem"], key=certs["server.key"], ca=certs["ca.pem"])
    with _scp(server) as scp:
        with pytest.raises(PacsError):
            _send(scp, TlsConfig(ca=certs["ca.pem"]), instance)


def test_missing_certificate_file_is_a_one_line_input_error(tmp_path: Path) -> None:
    from pacsmig.dicomnet.tls import client_context
    from pacsmig.errors import InputError

    with pytest.raises(InputError, match="TLS ca: file not found"):
        client_context(TlsConfig(ca=tmp_path / "nope.pem"))
