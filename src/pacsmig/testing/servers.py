"""Real PACS servers (Orthanc, DCMTK) run as child processes.

Integration tests, the demo script and the benchmarks need genuine third-party
DICOM implementations on the other end of the wire: an in-process pynetdicom
peer would share our own bugs and assumptions.  Everything here talks to the
servers the way an operator would: Orthanc through its REST API (``urllib``
only, so no extra dependency), DCMTK through its command-line tools.

Every server lives entirely under a caller-supplied work directory (config,
storage, log), listens on loopback only, runs in its own process group so that
forked children die with it, and is stopped by an ``atexit`` hook if the
owning process exits without cleaning up.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pydicom
from pydicom import uid as _uid
from pydicom.errors import InvalidDicomError

__all__ = [
    "LOOPBACK",
    "DcmqrscpServer",
    "OrthancServer",
    "RestError",
    "StoreSCPServer",
    "dcmtk_findscu",
    "dcmtk_tool",
    "free_port",
    "orthanc_binary",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"

# Servers must never talk to anything but this machine; the tests run offline.
_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_LOG_TAIL_BYTES = 4000


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    There is an unavoidable race between closing the probe socket and the
    server binding the port; in practice the kernel hands out ephemeral ports
    round-robin, so a collision within seconds is very unlikely.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Return True if a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = _STARTUP_TIMEOUT) -> bool:
    """Poll until ``host:port`` accepts TCP connections; return False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(port, host):
            return True
        time.sleep(0.05)
    return False


def orthanc_binary() -> str:
    """Locate the Orthanc executable (``PACSMIG_ORTHANC`` overrides)."""
    override = os.environ.get("PACSMIG_ORTHANC")
    candidates = [override] if override else []
    candidates += ["/usr/sbin/Orthanc", "/usr/local/sbin/Orthanc", "/usr/local/bin/Orthanc"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("Orthanc")
    if found:
        return found
    raise FileNotFoundError("Orthanc executable not found (set PACSMIG_ORTHANC)")


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return True


def dcmtk_tool(name: str) -> str:
    """Return the absolute path of DCMTK command-line tool ``name``.

    pynetdicom installs Python console scripts called ``storescu``,
    ``findscu``, ``storescp`` ... into the virtualenv's ``bin``; when the venv
    is activated those shadow DCMTK on ``PATH`` and accept different options.
    So the system locations are tried first and shebang scripts are refused.
    ``PACSMIG_DCMTK_BIN`` (a directory) overrides the search.
    """
    dirs: list[str] = []
    override = os.environ.get("PACSMIG_DCMTK_BIN")
    if override:
        dirs.append(override)
    dirs += ["/usr/bin", "/usr/local/bin", "/opt/homebrew/bin"]
    for directory in dirs:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and not _is_script(candidate):
            return candidate
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, name)
        if directory and os.access(candidate, os.X_OK) and not _is_script(candidate):
            return candidate
    raise FileNotFoundError(f"DCMTK tool {name!r} not found (set PACSMIG_DCMTK_BIN)")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # DCMTK and Orthanc read TCP_NODELAY; without it small DIMSE PDUs sit in
    # Nagle's buffer and benchmarks measure 40 ms delayed-ACK stalls.
    env["TCP_NODELAY"] = "1"
    return env


def _tail(path: Path, limit: int = _LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<log unavailable: {exc}>"


def _check_aet(aet: str) -> str:
    # AE titles end up in config files and command lines: reject anything that
    # could break their syntax rather than trying to quote it.
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,16}", aet):
        raise ValueError(f"unsupported AE title {aet!r} (1-16 of A-Z a-z 0-9 _ . -)")
    return aet


# --------------------------------------------------------------------------- #
# process lifecycle shared by all servers
# --------------------------------------------------------------------------- #

_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=3.0)


atexit.register(_stop_all_at_exit)


class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    #: file name of the combined stdout/stderr log inside the work directory
    log_name = "server.log"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / self.log_name
        self._proc: subprocess.Popen[bytes] | None = None

    # -- subclass hooks ----------------------------------------------------- #

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write configuration files before (re)starting."""

    def _wait_ready(self, timeout: float) -> None:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------- #

    @property
    def pid(self) -> int | None:
        """PID of the server (also its process-group id), None if never started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = _STARTUP_TIMEOUT) -> Self:
        """Start the server and block until it serves; raises RuntimeError if it cannot."""
        if self.running:
            return self
        self._prepare()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
            log.flush()
            # start_new_session: the server (and anything it forks, e.g.
            # dcmqrscp's per-association children) gets its own process group
            # that stop() can signal as a whole, and Ctrl-C in the terminal
            # running pytest does not reach it before our cleanup does.
            self._proc = subprocess.Popen(
                self._command(),
                cwd=self.workdir,
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _fail(self, reason: str) -> RuntimeError:
        return RuntimeError(
            f"{type(self).__name__} {reason}; log {self.log_path} ends with:\n"
            f"{_tail(self.log_path)}"
        )

    def _ensure_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise self._fail(f"exited during startup (exit code {code})")

    def _leader_exited(self) -> bool:
        """True once the group leader has exited, *without* reaping it.

        Leaving the zombie unreaped keeps its PID (== our process-group id)
        reserved, so a later killpg() cannot hit an unrelated process that
        happened to recycle the number.
        """
        assert self._proc is not None
        if self._proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Terminate the whole process group; SIGKILL after ``timeout`` s. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while not self._leader_exited() and time.monotonic() < deadline:
                time.sleep(0.02)
            # Children (forked association handlers) may outlive the leader;
            # the group id is still ours while the leader is an unreaped zombie.
            self._signal_group(signal.SIGKILL)
            proc.wait()
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (simulates a crash)."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal_group(signal.SIGKILL)
            proc.wait()
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def restart(self, timeout: float = _STARTUP_TIMEOUT) -> Self:
        """Stop and start again with the same configuration and storage."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, limit: int = _LOG_TAIL_BYTES) -> str:
        return _tail(self.log_path, limit)


# --------------------------------------------------------------------------- #
# Orthanc
# --------------------------------------------------------------------------- #


class RestError(RuntimeError):
    """An Orthanc REST call answered with an HTTP error status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:500]}")
        self.method = method
        self.url = url
        self.status = status
        self.body = body


class OrthancServer(ManagedProcess):
    """An Orthanc instance with private config and storage under ``workdir``.

    ``modalities`` maps an Orthanc modality name to ``(AET, host, port)``; these
    are the peers Orthanc may C-MOVE/C-STORE to, and they are explicitly
    allowed every DIMSE service.  Ports are chosen at construction time so two
    servers can be told about each other before either is started.
    """

    log_name = "orthanc.log"

    def __init__(
        self,
        workdir: Path,
        aet: str = "ORTHANC",
        dicom_port: int | None = None,
        http_port: int | None = None,
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        *,
        verbose: bool = False,
        rest_timeout: float = 60.0,
    ) -> None:
        super().__init__(workdir)
        self.aet = _check_aet(aet)
        self.host = LOOPBACK
        self.dicom_port = dicom_port if dicom_port is not None else free_port()
        self.http_port = http_port if http_port is not None else free_port()
        self.modalities: dict[str, tuple[str, str, int]] = dict(modalities or {})
        for name, (peer_aet, _host, _port) in self.modalities.items():
            _check_aet(peer_aet)
            self._check_modality_name(name)
        self.extra_config: dict[str, Any] = dict(extra_config or {})
        self.verbose = verbose
        self.rest_timeout = rest_timeout
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "orthanc.json"

    @staticmethod
    def _check_modality_name(name: str) -> None:
        # The name becomes a URL path segment (/modalities/{name}).
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise ValueError(f"unsupported modality name {name!r}")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def config(self) -> dict[str, Any]:
        """The JSON configuration Orthanc is (or will be) started with."""
        cfg: dict[str, Any] = {
            "Name": f"pacsmig-{self.aet}",
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "DicomServerEnabled": True,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {
                name: {
                    "AET": peer_aet,
                    "Host": host,
                    "Port": port,
                    "AllowEcho": True,
                    "AllowFind": True,
                    "AllowGet": True,
                    "AllowMove": True,
                    "AllowStore": True,
                }
                for name, (peer_aet, host, port) in self.modalities.items()
            },
            "DicomModalitiesInDatabase": False,
            "OverwriteInstances": True,
            "StableAge": 1,
            "SaveJobs": False,
            # Never load the distribution's plugins (/usr/share/orthanc/plugins):
            # they would change behaviour (DICOMweb, GDCM decoding) between hosts.
            "Plugins": [],
            "DicomScuTimeout": 30,
            "HttpTimeout": 30,
            "ConcurrentJobs": 2,
            "DeidentifyLogs": True,
            "TcpNoDelay": True,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "WebDavEnabled": False,
        }
        cfg.update(self.extra_config)
        return cfg

    def _prepare(self) -> None:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")

    def _command(self) -> list[str]:
        cmd = [orthanc_binary()]
        if self.verbose:
            cmd.append("--verbose")
        # SaveJobs is false, but --no-jobs also guards against a stale job
        # table left by an older config in the same storage.
        cmd += ["--no-jobs", str(self.config_path)]
        return cmd

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._ensure_alive()
            try:
                self.rest_get("/system", timeout=2.0)
                break
            except (OSError, RestError):
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"did not answer GET /system within {timeout:.0f} s")
            time.sleep(0.05)
        while not port_accepts(self.dicom_port):
            self._ensure_alive()
            if time.monotonic() > deadline:
                raise self._fail(f"DICOM port {self.dicom_port} not accepting connections")
            time.sleep(0.05)

    # -- modalities --------------------------------------------------------- #

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Register a DICOM peer; takes effect immediately if running and on restart."""
        self._check_modality_name(name)
        _check_aet(aet)
        self.modalities[name] = (aet, host, port)
        if self.running:
            self.rest_put(
                f"/modalities/{name}",
                {
                    "AET": aet,
                    "Host": host,
                    "Port": port,
                    "AllowEcho": True,
                    "AllowFind": True,
                    "AllowGet": True,
                    "AllowMove": True,
                    "AllowStore": True,
                },
            )

    # -- REST --------------------------------------------------------------- #

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        if not path.startswith("/"):
            path = "/" + path
        url = self.url + path
        req = urllib.request.Request(url, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        # Loopback only, so no proxy: an http_proxy in the environment must not
        # swallow requests to 127.0.0.1.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout or self.rest_timeout) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            raise RestError(method, url, exc.code, text) from None

    @staticmethod
    def _decode(data: bytes) -> Any:
        if not data.strip():
            return None
        return json.loads(data)

    def rest_get(self, path: str, *, timeout: float | None = None) -> Any:
        """GET ``path`` and decode the JSON answer."""
        return self._decode(self._request("GET", path, timeout=timeout))

    def rest_get_bytes(self, path: str, *, timeout: float | None = None) -> bytes:
        return self._request("GET", path, timeout=timeout)

    @staticmethod
    def _encode(body: bytes | str | Mapping[str, Any] | Sequence[Any]) -> tuple[bytes, str]:
        if isinstance(body, bytes):
            return body, "application/octet-stream"
        if isinstance(body, str):
            return body.encode("utf-8"), "text/plain"
        return json.dumps(body).encode("utf-8"), "application/json"

    def rest_post(
        self,
        path: str,
        body: bytes | str | Mapping[str, Any] | Sequence[Any] = b"",
        *,
        timeout: float | None = None,
    ) -> Any:
        """POST raw bytes, text, or a JSON-encoded mapping/list; decode the JSON answer."""
        data, ctype = self._encode(body)
        return self._decode(self._request("POST", path, data, ctype, timeout))

    def rest_put(
        self,
        path: str,
        body: bytes | str | Mapping[str, Any] | Sequence[Any] = b"",
        *,
        timeout: float | None = None,
    ) -> Any:
        data, ctype = self._encode(body)
        return self._decode(self._request("PUT", path, data, ctype, timeout))

    def rest_delete(self, path: str, *, timeout: float | None = None) -> Any:
        return self._decode(self._request("DELETE", path, timeout=timeout))

    # -- content helpers ---------------------------------------------------- #

    def upload(self, path_or_bytes: Path | str | bytes) -> str | None:
        """Store one DICOM file through POST /instances.

        Returns the Orthanc instance id, or None if Orthanc refuses the file
        (HTTP 4xx, e.g. not parseable DICOM).  Server errors still raise.
        """
        data = (
            path_or_bytes
            if isinstance(path_or_bytes, bytes)
            else Path(path_or_bytes).read_bytes()
        )
        try:
            answer = self.rest_post("/instances", data)
        except RestError as exc:
            if 400 <= exc.status < 500:
                return None
            raise
        if not isinstance(answer, dict) or answer.get("Status") not in {
            "Success",
            "AlreadyStored",
        }:
            return None
        ident = answer.get("ID")
        return str(ident) if ident else None

    def upload_many(self, files: Iterable[Path | str | bytes]) -> dict[str, str | None]:
        """Upload several files; maps each path (or its index for bytes) to its id."""
        out: dict[str, str | None] = {}
        for index, item in enumerate(files):
            key = f"#{index}" if isinstance(item, bytes) else str(item)
            out[key] = self.upload(item)
        return out

    def _paged(self, level: str, page: int = 1000) -> list[dict[str, Any]]:
        # Paging through /{level}?expand is independent of LimitFind*, which a
        # test may have lowered on purpose to exercise truncated C-FIND.
        items: list[dict[str, Any]] = []
        since = 0
        while True:
            chunk = self.rest_get(f"/{level}?expand&since={since}&limit={page}")
            if not chunk:
                return items
            items.extend(chunk)
            if len(chunk) < page:
                return items
            since += len(chunk)

    def sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of every instance stored in this Orthanc."""
        return {
            str(item["MainDicomTags"]["SOPInstanceUID"])
            for item in self._paged("instances")
            if "SOPInstanceUID" in item.get("MainDicomTags", {})
        }

    def study_instance_uids(self) -> set[str]:
        return {
            str(item["MainDicomTags"]["StudyInstanceUID"])
            for item in self._paged("studies")
            if "StudyInstanceUID" in item.get("MainDicomTags", {})
        }

    def _lookup(self, dicom_uid: str, level: str) -> str | None:
        answer = self.rest_post("/tools/lookup", dicom_uid)
        for hit in answer or []:
            if hit.get("Type") == level:
                return str(hit["ID"])
        return None

    def instance_id_for(self, sop_uid: str) -> str | None:
        """Orthanc id of the instance with this SOP Instance UID, if stored."""
        return self._lookup(sop_uid, "Instance")

    def study_id_for(self, study_uid: str) -> str | None:
        return self._lookup(study_uid, "Study")

    def instance_file(self, sop_uid: str) -> bytes:
        """The stored Part 10 file; KeyError if the instance is not here."""
        ident = self.instance_id_for(sop_uid)
        if ident is None:
            raise KeyError(sop_uid)
        return self.rest_get_bytes(f"/instances/{ident}/file")

    def instance_tags(self, sop_uid: str) -> dict[str, Any]:
        """``/instances/{id}/simplified-tags`` of a stored instance; KeyError if absent."""
        ident = self.instance_id_for(sop_uid)
        if ident is None:
            raise KeyError(sop_uid)
        tags: dict[str, Any] = self.rest_get(f"/instances/{ident}/simplified-tags")
        return tags

    def delete_instance(self, sop_uid: str) -> bool:
        """Delete an instance; returns False if it was not stored."""
        ident = self.instance_id_for(sop_uid)
        if ident is None:
            return False
        self.rest_delete(f"/instances/{ident}")
        return True

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.rest_get("/statistics")
        return stats

    def study_count(self) -> int:
        return int(self.statistics()["CountStudies"])

    def instance_count(self) -> int:
        return int(self.statistics()["CountInstances"])

    def instances_of_study(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs stored under one study (empty if the study is unknown)."""
        ident = self.study_id_for(study_uid)
        if ident is None:
            return set()
        return {
            str(item["MainDicomTags"]["SOPInstanceUID"])
            for item in self.rest_get(f"/studies/{ident}/instances")
        }

    def store_to_modality(
        self, modality: str, resource_ids: Sequence[str], *, timeout: float | None = None
    ) -> Any:
        """C-STORE Orthanc resources (any level) to a configured modality, synchronously."""
        return self.rest_post(
            f"/modalities/{modality}/store",
            {"Resources": list(resource_ids), "Synchronous": True},
            timeout=timeout,
        )

    def clear(self) -> None:
        """Delete every patient (and so everything) stored in this Orthanc."""
        for patient in self.rest_get("/patients") or []:
            self.rest_delete(f"/patients/{patient}")


# --------------------------------------------------------------------------- #
# DCMTK dcmqrscp
# --------------------------------------------------------------------------- #

# Storage SOP classes dcmqrscp is told to accept (and to offer as C-GET/C-MOVE
# sub-operations).  A DICOM association holds at most 128 presentation
# contexts, so this is a curated list rather than every storage class.
_DCMQR_STORAGE_CLASSES: tuple[str, ...] = (
    # cross-sectional and projection imaging
    _uid.CTImageStorage,
    _uid.EnhancedCTImageStorage,
    _uid.LegacyConvertedEnhancedCTImageStorage,
    _uid.MRImageStorage,
    _uid.EnhancedMRImageStorage,
    _uid.EnhancedMRColorImageStorage,
    _uid.LegacyConvertedEnhancedMRImageStorage,
    _uid.MRSpectroscopyStorage,
    _uid.PositronEmissionTomographyImageStorage,
    _uid.EnhancedPETImageStorage,
    _uid.LegacyConvertedEnhancedPETImageStorage,
    _uid.NuclearMedicineImageStorage,
    _uid.ComputedRadiographyImageStorage,
    _uid.DigitalXRayImageStorageForPresentation,
    _uid.DigitalXRayImageStorageForProcessing,
    _uid.DigitalMammographyXRayImageStorageForPresentation,
    _uid.DigitalMammographyXRayImageStorageForProcessing,
    _uid.DigitalIntraOralXRayImageStorageForPresentation,
    _uid.DigitalIntraOralXRayImageStorageForProcessing,
    _uid.BreastTomosynthesisImageStorage,
    _uid.XRayAngiographicImageStorage,
    _uid.EnhancedXAImageStorage,
    _uid.XRayRadiofluoroscopicImageStorage,
    _uid.EnhancedXRFImageStorage,
    _uid.XRay3DAngiographicImageStorage,
    _uid.XRay3DCraniofacialImageStorage,
    _uid.UltrasoundImageStorage,
    _uid.UltrasoundMultiFrameImageStorage,
    _uid.EnhancedUSVolumeStorage,
    # secondary capture and visible light
    _uid.SecondaryCaptureImageStorage,
    _uid.MultiFrameSingleBitSecondaryCaptureImageStorage,
    _uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    _uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    _uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
    _uid.VLEndoscopicImageStorage,
    _uid.VLMicroscopicImageStorage,
    _uid.VLSlideCoordinatesMicroscopicImageStorage,
    _uid.VLPhotographicImageStorage,
    _uid.VLWholeSlideMicroscopyImageStorage,
    _uid.VideoEndoscopicImageStorage,
    _uid.VideoMicroscopicImageStorage,
    _uid.VideoPhotographicImageStorage,
    _uid.OphthalmicPhotography8BitImageStorage,
    _uid.OphthalmicPhotography16BitImageStorage,
    _uid.OphthalmicTomographyImageStorage,
    # radiotherapy
    _uid.RTImageStorage,
    _uid.RTDoseStorage,
    _uid.RTStructureSetStorage,
    _uid.RTPlanStorage,
    _uid.RTIonPlanStorage,
    _uid.RTBeamsTreatmentRecordStorage,
    _uid.RTIonBeamsTreatmentRecordStorage,
    _uid.RTBrachyTreatmentRecordStorage,
    _uid.RTTreatmentSummaryRecordStorage,
    # structured reports, documents, derived objects
    _uid.BasicTextSRStorage,
    _uid.EnhancedSRStorage,
    _uid.ComprehensiveSRStorage,
    _uid.Comprehensive3DSRStorage,
    _uid.ExtensibleSRStorage,
    _uid.KeyObjectSelectionDocumentStorage,
    _uid.XRayRadiationDoseSRStorage,
    _uid.MammographyCADSRStorage,
    _uid.ChestCADSRStorage,
    _uid.EncapsulatedPDFStorage,
    _uid.EncapsulatedCDAStorage,
    _uid.GrayscaleSoftcopyPresentationStateStorage,
    _uid.ColorSoftcopyPresentationStateStorage,
    _uid.PseudoColorSoftcopyPresentationStateStorage,
    _uid.BlendingSoftcopyPresentationStateStorage,
    _uid.SegmentationStorage,
    _uid.SpatialRegistrationStorage,
    _uid.SpatialFiducialsStorage,
    _uid.DeformableSpatialRegistrationStorage,
    _uid.RealWorldValueMappingStorage,
    _uid.ParametricMapStorage,
    _uid.RawDataStorage,
    # waveforms
    _uid.TwelveLeadECGWaveformStorage,
    _uid.GeneralECGWaveformStorage,
    _uid.AmbulatoryECGWaveformStorage,
    _uid.HemodynamicWaveformStorage,
    _uid.CardiacElectrophysiologyWaveformStorage,
    _uid.BasicVoiceAudioWaveformStorage,
)

_VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

_UNCOMPRESSED_TS = (
    _uid.ExplicitVRLittleEndian,
    _uid.ImplicitVRLittleEndian,
    _uid.ExplicitVRBigEndian,
)
# The file is stored as received, so accept every encoding DCMTK can parse.
_ANY_TS = (
    _uid.JPEG2000,
    _uid.JPEG2000Lossless,
    _uid.JPEGExtended12Bit,
    _uid.JPEGBaseline8Bit,
    _uid.JPEGLosslessSV1,
    _uid.JPEGLossless,
    _uid.JPEGLSNearLossless,
    _uid.JPEGLSLossless,
    _uid.RLELossless,
    _uid.DeflatedExplicitVRLittleEndian,
    *_UNCOMPRESSED_TS,
)


def _dcmqrscp_association_profiles() -> str:
    """DCMTK association-negotiation config for dcmqrscp (``-xf``).

    Without a profile dcmqrscp accepts uncompressed transfer syntaxes only and
    *rejects C-GET*: C-GET needs SCP/SCU role selection for every storage
    class, which can only be configured through such a profile.
    """
    lines = ["# generated by pacsmig.testing.servers", "[[TransferSyntaxes]]", "[Uncompressed]"]
    lines += [f"TransferSyntax{i} = {ts}" for i, ts in enumerate(_UNCOMPRESSED_TS, 1)]
    lines.append("[AnyTransferSyntax]")
    lines += [f"TransferSyntax{i} = {ts}" for i, ts in enumerate(_ANY_TS, 1)]

    lines += ["", "[[PresentationContexts]]", "[Incoming]"]
    lines.append(f"PresentationContext1 = {_VERIFICATION_SOP_CLASS}\\Uncompressed")
    for i, sop in enumerate(_DCMQR_STORAGE_CLASSES, 2):
        lines.append(f"PresentationContext{i} = {sop}\\AnyTransferSyntax")
    # Outgoing (C-MOVE sub-associations): dcmqrscp sends files exactly as
    # stored and picks the first accepted context for the SOP class, so one
    # context per class listing every syntax lets the receiver choose.
    lines.append("[Outgoing]")
    for i, sop in enumerate(_DCMQR_STORAGE_CLASSES, 1):
        lines.append(f"PresentationContext{i} = {sop}\\AnyTransferSyntax")

    lines += ["", "[[SCPSCURoleSelection]]", "[BothRoles]"]
    for i, sop in enumerate(_DCMQR_STORAGE_CLASSES, 1):
        lines.append(f"Role{i} = {sop}\\BOTH")

    lines += [
        "",
        "[[Profiles]]",
        "[IncomingProfile]",
        "PresentationContexts = Incoming",
        "SCPSCURoleSelection = BothRoles",
        "[OutgoingProfile]",
        "PresentationContexts = Outgoing",
        "",
    ]
    return "\n".join(lines)


class DcmqrscpServer(ManagedProcess):
    """A DCMTK ``dcmqrscp`` archive: a second, independent Q/R implementation.

    ``peers`` maps AE title -> (host, port) for C-MOVE destinations.  Every
    caller may query, retrieve and store (``ANY`` in the AE table), so the
    loader AET used by :meth:`load` needs no entry.

    dcmqrscp quirks worth knowing: it silently deletes the oldest studies once
    ``max_studies`` (hard-capped at 500 by DCMTK) is exceeded, and it never
    transcodes, so retrieving a compressed file only works if the receiver
    accepts that compressed transfer syntax.
    """

    log_name = "dcmqrscp.log"
    loader_aet = "LOADER"

    def __init__(
        self,
        workdir: Path,
        aet: str = "DCMQRSCP",
        port: int | None = None,
        peers: Mapping[str, tuple[str, int]] | None = None,
        *,
        max_studies: int = 500,
        max_bytes_per_study_mb: int = 1024,
        max_pdu: int = 65536,
        max_associations: int = 16,
        verbose: bool = False,
    ) -> None:
        super().__init__(workdir)
        self.aet = _check_aet(aet)
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self.peers: dict[str, tuple[str, int]] = {}
        for peer_aet, (host, peer_port) in (peers or {}).items():
            self.peers[_check_aet(peer_aet)] = (host, peer_port)
        if not 1 <= max_studies <= 500:
            raise ValueError("dcmqrscp supports 1..500 studies per storage area")
        self.max_studies = max_studies
        self.max_bytes_per_study_mb = max_bytes_per_study_mb
        self.max_pdu = max_pdu
        self.max_associations = max_associations
        self.verbose = verbose
        self.storage_dir = self.workdir / "storage" / self.aet
        self.config_path = self.workdir / "dcmqrscp.cfg"
        self.profile_path = self.workdir / "dcmqrscp-assoc.cfg"

    def config_text(self) -> str:
        host_lines = []
        # HostTable symbolic names must be identifiers, so they are numbered
        # rather than derived from (user-controlled) AE titles.
        for index, (peer_aet, (host, port)) in enumerate(sorted(self.peers.items())):
            host_lines.append(f"peer{index} = ({peer_aet}, {host}, {port})")
        return "\n".join(
            [
                "# generated by pacsmig.testing.servers",
                f"NetworkTCPPort  = {self.port}",
                f"MaxPDUSize      = {self.max_pdu}",
                f"MaxAssociations = {self.max_associations}",
                "",
                "HostTable BEGIN",
                *host_lines,
                "HostTable END",
                "",
                "VendorTable BEGIN",
                "VendorTable END",
                "",
                "AETable BEGIN",
                f"{self.aet} {self.storage_dir} RW "
                f"({self.max_studies}, {self.max_bytes_per_study_mb}mb) ANY",
                "AETable END",
                "",
            ]
        )

    def _prepare(self) -> None:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        self.profile_path.write_text(_dcmqrscp_association_profiles())

    def _command(self) -> list[str]:
        cmd = [
            dcmtk_tool("dcmqrscp"),
            "-c",
            str(self.config_path),
            "-xf",
            str(self.profile_path),
            "IncomingProfile",
            "OutgoingProfile",
            # A test that kills a client mid-association must not leave a
            # forked handler blocked forever on a dead socket.
            "-ta",
            "30",
            "-td",
            "60",
            "-dhl",
        ]
        if self.verbose:
            cmd.append("-v")
        return cmd

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_accepts(self.port):
            self._ensure_alive()
            if time.monotonic() > deadline:
                raise self._fail(f"port {self.port} not accepting connections within {timeout:.0f} s")
            time.sleep(0.05)
        self._ensure_alive()

    def add_peer(self, aet: str, host: str, port: int) -> None:
        """Add a C-MOVE destination; dcmqrscp reads its config only at start, so restart."""
        self.peers[_check_aet(aet)] = (host, port)
        if self.running:
            self.restart()

    def stored_files(self) -> list[Path]:
        return sorted(
            p for p in self.storage_dir.iterdir() if p.is_file() and p.name != "index.dat"
        )

    def sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of the files currently in the storage area."""
        return set(_sop_uids_of(self.stored_files()).values())

    def load(
        self, files: Iterable[Path | str], *, calling_aet: str | None = None
    ) -> set[str]:
        """C-STORE ``files`` into the archive with DCMTK ``storescu``.

        Returns the SOP Instance UIDs (among those sent) now present in the
        storage area, i.e. the ones dcmqrscp really accepted.
        """
        paths = [Path(f) for f in files]
        wanted = set(_sop_uids_of(paths).values())
        aet = _check_aet(calling_aet or self.loader_aet)
        # Command lines have a length limit, and storescu negotiates one
        # association per run, so send in moderate batches.
        for start in range(0, len(paths), 200):
            batch = paths[start : start + 200]
            run_dcmtk(
                "storescu",
                ["-aet", aet, "-aec", self.aet, "-nh", "-R", self.host, str(self.port)]
                + [str(p) for p in batch],
                log_path=self.log_path,
                check=False,
            )
        return wanted & self.sop_instance_uids()

    def findscu(
        self,
        level: str = "STUDY",
        keys: Mapping[str, str] | None = None,
        *,
        calling_aet: str = "FINDSCU",
    ) -> list[pydicom.Dataset]:
        """Study-root C-FIND against this archive using DCMTK ``findscu``."""
        return dcmtk_findscu(self.host, self.port, self.aet, level, keys, calling_aet=calling_aet)


# --------------------------------------------------------------------------- #
# DCMTK storescp
# --------------------------------------------------------------------------- #


class StoreSCPServer(ManagedProcess):
    """A DCMTK ``storescp`` that writes what it receives into ``output_dir``.

    ``ignore=True`` receives but discards data (pure network sink, for
    benchmarks).  ``fork=True`` handles associations concurrently.
    """

    log_name = "storescp.log"

    def __init__(
        self,
        workdir: Path,
        aet: str = "STORESCP",
        port: int | None = None,
        *,
        ignore: bool = False,
        fork: bool = False,
        output_dir: Path | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(workdir)
        self.aet = _check_aet(aet)
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self.ignore = ignore
        self.fork = fork
        self.verbose = verbose
        self.output_dir = Path(output_dir) if output_dir else self.workdir / "received"

    def _prepare(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        cmd = [
            dcmtk_tool("storescp"),
            "-aet",
            self.aet,
            "-od",
            str(self.output_dir),
            # Accept every storage class and transfer syntax DCMTK knows, as a
            # real archive would; "-pm" also takes unknown (private) classes.
            "+xa",
            "-pm",
            "-dhl",
        ]
        if self.ignore:
            cmd.append("--ignore")
        if self.fork:
            cmd.append("--fork")
        if self.verbose:
            cmd.append("-v")
        cmd.append(str(self.port))
        return cmd

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_accepts(self.port):
            self._ensure_alive()
            if time.monotonic() > deadline:
                raise self._fail(f"port {self.port} not accepting connections within {timeout:.0f} s")
            time.sleep(0.05)
        self._ensure_alive()

    def received_files(self) -> list[Path]:
        if not self.output_dir.exists():
            return []
        return sorted(p for p in self.output_dir.iterdir() if p.is_file())

    def received_sop_instance_uids(self) -> set[str]:
        return set(_sop_uids_of(self.received_files()).values())


# --------------------------------------------------------------------------- #
# DCMTK command-line clients
# --------------------------------------------------------------------------- #


def run_dcmtk(
    tool: str,
    args: Sequence[str],
    *,
    log_path: Path | None = None,
    check: bool = True,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; its output is appended to ``log_path`` if given."""
    proc = subprocess.run(
        [dcmtk_tool(tool), *args],
        env=_child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if log_path is not None:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\n===== {tool} exit {proc.returncode} =====\n{proc.stdout}{proc.stderr}")
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{tool} failed with exit code {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc


_QR_LEVELS = {"PATIENT", "STUDY", "SERIES", "IMAGE"}


def dcmtk_findscu(
    host: str,
    port: int,
    called_aet: str,
    level: str = "STUDY",
    keys: Mapping[str, str] | None = None,
    *,
    calling_aet: str = "FINDSCU",
    model: str = "study",
) -> list[pydicom.Dataset]:
    """Run a C-FIND with DCMTK ``findscu`` and return the response identifiers.

    ``keys`` maps DICOM keywords (or ``gggg,eeee``) to match values; an empty
    string requests the attribute as a return key.
    """
    level = level.upper()
    if level not in _QR_LEVELS:
        raise ValueError(f"bad query level {level!r}")
    model_flag = {"study": "-S", "patient": "-P"}[model]
    args = [model_flag, "-aet", _check_aet(calling_aet), "-aec", _check_aet(called_aet)]
    args += ["-k", f"QueryRetrieveLevel={level}"]
    for key, value in (keys or {}).items():
        args += ["-k", f"{key}={value}" if value != "" else key]
    with tempfile.TemporaryDirectory(prefix="findscu-") as out:
        args += ["-X", "-od", out, host, str(port)]
        run_dcmtk("findscu", args)
        responses = []
        for path in sorted(Path(out).glob("rsp*.dcm")):
            responses.append(pydicom.dcmread(path, force=True))
        return responses


def _sop_uids_of(paths: Iterable[Path]) -> dict[Path, str]:
    out: dict[Path, str] = {}
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        sop = ds.get("SOPInstanceUID")
        if sop:
            out[path] = str(sop)
    return out
