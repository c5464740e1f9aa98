"""DICOM TLS (PS3.15 B.1): contexts that verify the peer's certificate and host name."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from pacsmig.errors import InputError


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def _load(action: str, path: Path | None, load: object) -> None:
    try:
        load()  # type: ignore[operator]
    except FileNotFoundError:
        raise InputError(f"TLS {action}: file not found: {path}") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise InputError(f"TLS {action}: cannot load {path}: {exc}") from None


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    """For associations we open: the peer must present a certificate for its host name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED on
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca is not None:
        _load("ca", tls.ca, lambda: ctx.load_verify_locations(cafile=str(tls.ca)))
    else:
        ctx.load_default_certs()
    if tls.cert is not None:
        _load("cert", tls.cert, lambda: ctx.load_cert_chain(str(tls.cert), str(tls.key)))
    return ctx


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """For pacsmig's Storage SCP; with a ca, the source must present a certificate it signed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load("cert", tls.cert, lambda: ctx.load_cert_chain(str(tls.cert), str(tls.key)))
    if tls.ca is not None:
        _load("ca", tls.ca, lambda: ctx.load_verify_locations(cafile=str(tls.ca)))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def handshake_error(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> str:
    """Why a TLS handshake with host:port fails, in a few words ('' when it succeeds)."""
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            return ""
    except OSError as exc:
        return describe_tls_error(exc)


def describe_tls_error(exc: OSError) -> str:
    """A failed TLS handshake, in a few words."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate rejected: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return f"TLS handshake failed: {type(exc).__name__} (is the peer speaking TLS?)"
    return f"TLS handshake failed: {(exc.strerror or str(exc)).lower()}"
