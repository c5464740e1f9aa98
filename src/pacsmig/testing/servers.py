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
import urllib.request
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
    "ManagedProcess",
    "OrthancServer",
    "RestError",
    "StoreSCPServer",
    "dcmtk_findscu",
    "dcmtk_getscu",
    "dcmtk_movescu",
    "dcmtk_storescu",
    "dcmtk_tool",
    "free_port",
    "orthanc_binary",
    "port_accepts",
    "port_accepts_echo",
    "run_dcmtk",
    "stop_servers",
    "wait_for_port",
]

# Servers listen, and are reached, on loopback only: the tests run offline
# and must not expose an unauthenticated PACS to the network.
LOOPBACK = "127.0.0.1"

_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_CHILD_DRAIN_TIMEOUT = 2.5
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


def _process_listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a listening TCP socket on ``port``.

    Linux-only (/proc); returns None when that cannot be determined.
    """
    inodes: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            table_path = Path(table)
            if not table_path.exists():
                continue
            for line in table_path.read_text().splitlines()[1:]:
                fields = line.split()
                # fields: sl local_address rem_address st ... inode (index 9);
                # state 0A is TCP_LISTEN.
                if (
                    len(fields) > 9
                    and fields[3] == "0A"
                    and int(fields[1].rsplit(":", 1)[1], 16) == port
                ):
                    inodes.add(fields[9])
        fd_dir = Path(f"/proc/{pid}/fd")
        if not fd_dir.is_dir():
            return None
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    except (OSError, ValueError):
        return None
    return False


def _process_group_members(pgid: int) -> set[int]:
    """PIDs whose process group is ``pgid`` (Linux /proc; empty elsewhere)."""
    members: set[int] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return members
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid):
            members.add(int(entry.name))
    return members


def _child_env(tcp_nodelay: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    # DCMTK and Orthanc read TCP_NODELAY; without it small DIMSE PDUs sit in
    # Nagle's buffer and benchmarks measure 40 ms delayed-ACK stalls.  "0"
    # rather than unset for Nagle on: a DCMTK built without
    # DONT_DISABLE_NAGLE_ALGORITHM disables Nagle unless told "0".
    env["TCP_NODELAY"] = "1" if tcp_nodelay else "0"
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


def _check_host(host: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.\-:]{1,253}", host):
        raise ValueError(f"unsupported host {host!r}")
    return host


# --------------------------------------------------------------------------- #
# process lifecycle shared by all servers
# --------------------------------------------------------------------------- #

# Strong references on purpose: a server whose owner dropped it without
# stopping must still be reachable by the atexit hook.
_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


def stop_servers(*servers: ManagedProcess, timeout: float = _STOP_TIMEOUT) -> None:
    """Stop several servers concurrently (SIGTERM to all first, then wait)."""
    drain_deadline = time.monotonic() + _CHILD_DRAIN_TIMEOUT
    for server in servers:
        server._signal_children()
    for server in servers:
        server._await_children(drain_deadline)
    for server in servers:
        server._terminate()
    deadline = time.monotonic() + timeout
    for server in servers:
        server._finish_stop(max(0.0, deadline - time.monotonic()))


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    with contextlib.suppress(Exception):
        stop_servers(*servers, timeout=5.0)


atexit.register(_stop_all_at_exit)


class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    #: file name of the combined stdout/stderr log inside the work directory
    log_name = "server.log"

    def __init__(self, workdir: Path, *, tcp_nodelay: bool = True) -> None:
        self.workdir = Path(workdir).resolve()
        #: False starts the server with Nagle's algorithm on (benchmarks only);
        #: read at each (re)start.
        self.tcp_nodelay = tcp_nodelay
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
        return self._proc is not None and self._exit_status() is None

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
                env=_child_env(self.tcp_nodelay),
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
        status = None if self._proc is None else self._exit_status()
        if self._proc is None or status is not None:
            raise self._fail(f"exited during startup (exit status {status})")

    def _exit_status(self) -> int | None:
        """Exit status of the group leader (negative: signal), None while it runs.

        Deliberately does *not* reap the process (no Popen.poll()): the
        unreaped zombie keeps its PID, which is also our process-group id,
        reserved, so stop() can still killpg() leftover children without any
        risk of hitting an unrelated process that recycled the number.
        """
        assert self._proc is not None
        if self._proc.returncode is not None:
            return self._proc.returncode
        try:
            info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self._proc.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def _leader_exited(self) -> bool:
        return self._exit_status() is not None

    def _owns_port(self, port: int) -> bool:
        """False if the listener on ``port`` is provably some other process.

        free_port() can race with another program grabbing the port; then a
        probe would be answered by the squatter and our server, unable to
        bind, would exit a moment later.  Where /proc is unavailable the
        answer is optimistic.
        """
        if self._proc is None:
            return False
        owned = _process_listens_on(self._proc.pid, port)
        return owned is None or owned

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Terminate the whole process group; SIGKILL after ``timeout`` s. Idempotent.

        Orthanc needs about 3.5 s to shut down gracefully; use
        :func:`stop_servers` to stop several servers in parallel.
        """
        self._signal_children()
        self._await_children(time.monotonic() + _CHILD_DRAIN_TIMEOUT)
        self._terminate()
        self._finish_stop(timeout)

    def _children(self) -> set[int]:
        if self._proc is None or self._proc.returncode is not None:
            return set()
        return _process_group_members(self._proc.pid) - {self._proc.pid}

    def _signal_children(self) -> None:
        """SIGTERM the leader's forked helpers, but not the leader yet.

        dcmqrscp (and storescp --fork) reap their association handlers only
        while they are alive (within ~1 s).  Killed together with the parent,
        the handlers are orphaned to PID 1, and a minimal container init may
        never reap them, leaving zombies in our process group.
        """
        for pid in self._children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)

    def _await_children(self, deadline: float) -> None:
        while self._children() and not self._leader_exited() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _terminate(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._signal_group(signal.SIGTERM)

    def _finish_stop(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
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
        tcp_nodelay: bool = True,
    ) -> None:
        super().__init__(workdir, tcp_nodelay=tcp_nodelay)
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
                if self._owns_port(self.http_port):
                    break
            except (OSError, RestError):
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"did not answer GET /system within {timeout:.0f} s")
            time.sleep(0.05)
        while not (port_accepts(self.dicom_port) and self._owns_port(self.dicom_port)):
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
        # S310: the scheme is always http, the host always loopback (self.url).
        req = urllib.request.Request(url, data=body, method=method)  # noqa: S310
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
            path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
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


def _wait_dcmtk_ready(server: ManagedProcess, aet: str, port: int, timeout: float) -> None:
    """Wait until a DCMTK SCP answers C-ECHO.

    A bare TCP connect-and-close, as used for Orthanc, makes DCMTK log a
    scary "DUL Finite State Machine Error" line; a real echo proves more and
    keeps the server log clean.
    """
    deadline = time.monotonic() + timeout
    echoscu = dcmtk_tool("echoscu")
    while True:
        server._ensure_alive()
        if port_accepts_echo(echoscu, aet, port) and server._owns_port(port):
            return
        if time.monotonic() > deadline:
            raise server._fail(f"did not answer C-ECHO on port {port} within {timeout:.0f} s")
        time.sleep(0.05)


def port_accepts_echo(echoscu: str, aet: str, port: int, host: str = LOOPBACK) -> bool:
    """True if a DICOM C-ECHO to ``aet@host:port`` succeeds."""
    try:
        timeouts = ["-to", "2", "-ta", "2", "-td", "2"]
        proc = subprocess.run(
            [echoscu, "-aet", "PROBE", "-aec", aet, *timeouts, host, str(port)],
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


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
# Files are stored exactly as received, so every encoding DCMTK can parse is
# accepted.  Order matters: dcmqrscp accepts the first syntax of this list that
# the peer proposes, and when it later sends an instance (C-GET, C-MOVE) it
# uses the first accepted context of the SOP class *without transcoding
# compressed data*.  Uncompressed first keeps retrieval of uncompressed
# instances working whatever else a retrieving peer proposes.
_ANY_TS = (
    *_UNCOMPRESSED_TS,
    _uid.DeflatedExplicitVRLittleEndian,
    _uid.JPEGBaseline8Bit,
    _uid.JPEGExtended12Bit,
    _uid.JPEGLosslessSV1,
    _uid.JPEGLossless,
    _uid.JPEGLSLossless,
    _uid.JPEGLSNearLossless,
    _uid.JPEG2000Lossless,
    _uid.JPEG2000,
    _uid.RLELossless,
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
    # Outgoing (C-MOVE sub-associations): uncompressed only.  Offering
    # compressed syntaxes lets a receiver such as storescp +xa pick, say,
    # JPEG 2000 for the class, and then every uncompressed instance of that
    # class fails because dcmqrscp cannot compress either.
    lines.append("[Outgoing]")
    for i, sop in enumerate(_DCMQR_STORAGE_CLASSES, 1):
        lines.append(f"PresentationContext{i} = {sop}\\Uncompressed")

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

    dcmqrscp quirks worth knowing:

    * it silently deletes the oldest studies once ``max_studies`` (capped at
      500 by DCMTK) is exceeded;
    * it stores compressed instances fine but never decompresses them, so
      C-MOVE/C-GET of a compressed instance fails unless the first accepted
      presentation context for its SOP class uses that very transfer syntax
      (with Orthanc as C-MOVE destination it never does).  Use uncompressed
      data, e.g. :func:`pacsmig.testing.corpus.generate_study`, as retrieve
      source;
    * C-FIND returns only the attributes of its fixed key list: no
      NumberOf*Related*, ModalitiesInStudy or SOPClassUID, even if requested;
    * without the association profile written here it refuses C-GET.
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
        tcp_nodelay: bool = True,
    ) -> None:
        super().__init__(workdir, tcp_nodelay=tcp_nodelay)
        self.aet = _check_aet(aet)
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self.peers: dict[str, tuple[str, int]] = {}
        for peer_aet, (host, peer_port) in (peers or {}).items():
            self.peers[_check_aet(peer_aet)] = (_check_host(host), peer_port)
        # DCMTK clamps larger quotas silently (DB_UpperMaxStudies = 500,
        # DB_UpperMaxBytesPerStudy = 1 GiB); refuse instead of surprising.
        if not 1 <= max_studies <= 500:
            raise ValueError("dcmqrscp supports 1..500 studies per storage area")
        if not 1 <= max_bytes_per_study_mb <= 1024:
            raise ValueError("dcmqrscp supports at most 1024 MB per study")
        self.max_studies = max_studies
        self.max_bytes_per_study_mb = max_bytes_per_study_mb
        self.max_pdu = max_pdu
        self.max_associations = max_associations
        self.verbose = verbose
        self.storage_dir = self.workdir / "storage" / self.aet
        if re.search(r"\s", str(self.storage_dir)):
            # The AETable line is whitespace-separated and has no quoting.
            raise ValueError(f"dcmqrscp cannot use a storage path with spaces: {self.storage_dir}")
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
        _wait_dcmtk_ready(self, self.aet, self.port, timeout)

    def add_peer(self, aet: str, host: str, port: int) -> None:
        """Add a C-MOVE destination; dcmqrscp reads its config only at start, so restart."""
        self.peers[_check_aet(aet)] = (_check_host(host), port)
        if self.running:
            self.restart()

    def stored_files(self) -> list[Path]:
        """Instance files in the storage area (dcmqrscp names them by modality + hash)."""
        if not self.storage_dir.is_dir():
            return []
        return sorted(
            p for p in self.storage_dir.iterdir() if p.is_file() and p.name != "index.dat"
        )

    def sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of the files currently in the storage area."""
        return set(_sop_uids_of(self.stored_files()).values())

    def load(self, files: Iterable[Path | str], *, calling_aet: str | None = None) -> set[str]:
        """C-STORE ``files`` into the archive with DCMTK ``storescu``.

        Returns the SOP Instance UIDs (among those sent) now present in the
        storage area, i.e. the ones dcmqrscp really accepted.
        """
        paths = [Path(f) for f in files]
        wanted = set(_sop_uids_of(paths).values())
        dcmtk_storescu(
            self.host,
            self.port,
            self.aet,
            paths,
            calling_aet=calling_aet or self.loader_aet,
            log_path=self.log_path,
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
        tcp_nodelay: bool = True,
    ) -> None:
        super().__init__(workdir, tcp_nodelay=tcp_nodelay)
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
        _wait_dcmtk_ready(self, self.aet, self.port, timeout)

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
    tcp_nodelay: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; its output is appended to ``log_path`` if given.

    ``tcp_nodelay=False`` runs it with Nagle's algorithm on (benchmarks only).
    """
    proc = subprocess.run(
        [dcmtk_tool(tool), *args],
        env=_child_env(tcp_nodelay),
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


# storescu proposes only uncompressed syntaxes unless told otherwise, and
# DCMTK will not decompress on the fly, so each compressed file must travel in
# an association that proposes its own transfer syntax.
_STORESCU_TS_FLAGS: dict[str, list[str]] = {
    _uid.ExplicitVRLittleEndian: [],
    _uid.ImplicitVRLittleEndian: [],
    _uid.ExplicitVRBigEndian: [],
    _uid.DeflatedExplicitVRLittleEndian: ["-xd"],
    _uid.JPEGBaseline8Bit: ["-xy"],
    _uid.JPEGExtended12Bit: ["-xx"],
    _uid.JPEGLosslessSV1: ["-xs"],
    _uid.JPEG2000Lossless: ["-xv"],
    _uid.JPEG2000: ["-xw"],
    _uid.JPEGLSLossless: ["-xt"],
    _uid.JPEGLSNearLossless: ["-xu"],
    _uid.RLELossless: ["-xr"],
    _uid.MPEG2MPML: ["-xm"],
    _uid.MPEG2MPHL: ["-xh"],
    _uid.MPEG4HP41: ["-xn"],
    _uid.MPEG4HP41BD: ["-xl"],
    _uid.MPEG4HP422D: ["-x2"],
    _uid.MPEG4HP423D: ["-x3"],
    _uid.MPEG4HP42STEREO: ["-xo"],
    _uid.HEVCMP51: ["-x4"],
    _uid.HEVCM10P51: ["-x5"],
}


def dcmtk_storescu(
    host: str,
    port: int,
    called_aet: str,
    files: Iterable[Path | str],
    *,
    calling_aet: str = "STORESCU",
    log_path: Path | None = None,
    batch_size: int = 200,
    tcp_nodelay: bool = True,
) -> list[subprocess.CompletedProcess[str]]:
    """C-STORE files with DCMTK ``storescu``, one run per transfer syntax.

    Failures do not raise (``--no-halt``): callers check what arrived, which
    is the only reliable signal anyway.  Files whose transfer syntax DCMTK
    cannot propose are still attempted with the default (uncompressed)
    proposal and will fail.
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for path in files:
        try:
            ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
            ts = ""
        flags = tuple(_STORESCU_TS_FLAGS.get(ts, []))
        groups.setdefault(flags, []).append(str(path))
    results = []
    for flags, paths in groups.items():
        # Command lines have a length limit, and storescu negotiates a single
        # association per run, so send in moderate batches.
        for start in range(0, len(paths), batch_size):
            args = [*flags, "-R", "-nh", "-aet", _check_aet(calling_aet)]
            args += ["-aec", _check_aet(called_aet), host, str(port)]
            args += paths[start : start + batch_size]
            results.append(
                run_dcmtk("storescu", args, log_path=log_path, check=False, tcp_nodelay=tcp_nodelay)
            )
    return results


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
    args = _qr_args(called_aet, calling_aet, level, keys, model)
    with tempfile.TemporaryDirectory(prefix="findscu-") as out:
        args += ["-X", "-od", out, host, str(port)]
        run_dcmtk("findscu", args)
        # rsp0001.dcm ... rsp10000.dcm: sort numerically, not lexically.
        paths = sorted(Path(out).glob("rsp*.dcm"), key=lambda p: int(p.stem[3:] or 0))
        return [pydicom.dcmread(path, force=True) for path in paths]


def _qr_args(
    called_aet: str,
    calling_aet: str,
    level: str,
    keys: Mapping[str, str] | None,
    model: str,
) -> list[str]:
    level = level.upper()
    if level not in _QR_LEVELS:
        raise ValueError(f"bad query level {level!r}")
    flags = {"study": "-S", "patient": "-P"}
    if model not in flags:
        raise ValueError(f"bad information model {model!r}")
    args = [flags[model], "-aet", _check_aet(calling_aet), "-aec", _check_aet(called_aet)]
    args += ["-k", f"QueryRetrieveLevel={level}"]
    for key, value in (keys or {}).items():
        args += ["-k", f"{key}={value}" if value != "" else key]
    return args


def dcmtk_movescu(
    host: str,
    port: int,
    called_aet: str,
    destination: str,
    level: str = "STUDY",
    keys: Mapping[str, str] | None = None,
    *,
    calling_aet: str = "MOVESCU",
    model: str = "study",
    check: bool = True,
    tcp_nodelay: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Ask ``called_aet`` to C-MOVE the matching instances to AE ``destination``."""
    args = _qr_args(called_aet, calling_aet, level, keys, model)
    args += ["-aem", _check_aet(destination), host, str(port)]
    return run_dcmtk("movescu", args, check=check, tcp_nodelay=tcp_nodelay)


def dcmtk_getscu(
    host: str,
    port: int,
    called_aet: str,
    out_dir: Path,
    level: str = "STUDY",
    keys: Mapping[str, str] | None = None,
    *,
    calling_aet: str = "GETSCU",
    model: str = "study",
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """C-GET the matching instances from ``called_aet`` into ``out_dir``."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    args = _qr_args(called_aet, calling_aet, level, keys, model)
    args += ["-od", str(out_dir), host, str(port)]
    return run_dcmtk("getscu", args, check=check)


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
