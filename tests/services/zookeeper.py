"""Real ZooKeeper servers for the tests: standalone and 3-node ensembles.

Every server is a private ``QuorumPeerMain`` JVM from Debian's ``zookeeper`` package,
listening on free loopback ports, with its ``dataDir`` and log under a temp directory::

    java -Xmx256m -XX:+UseSerialGC \
         -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
         org.apache.zookeeper.server.quorum.QuorumPeerMain <dir>/zoo.cfg

Classpath: ``zookeeper.jar``'s manifest already names every dependency the server needs
(jute, netty, slf4j-api, jackson, metrics, snappy, commons-*), so only an SLF4J binding
has to be added: without ``slf4j-simple.jar`` the server logs nothing at all. Its log
(stderr) goes to ``<dir>/server.log``; a failed start raises with the log's tail.

Readiness
    ``ruok`` answers ``imok`` before an ensemble has a quorum, so a server is *ready*
    when ``srvr`` prints a ``Mode:`` line (``standalone``, ``leader`` or ``follower``)
    **and** its own JVM is alive and is the process listening on the client port
    (psutil): a second server on a port that is already used exits after a second or
    so, while the probe still reaches the old one. A port clash is retried on new
    ports.

Test settings (never for production): ``forceSync=no`` (halves lock latency on this
disk), a short ``tickTime`` (250 ms: session timeouts from 0.5 s to 60 s are accepted,
and expired sessions are noticed within a tick), ``admin.enableServer=false``,
``4lw.commands.whitelist=ruok,srvr,stat,mntr`` and ``clientPortAddress=127.0.0.1``.

Clean-up: every JVM is started with ``PR_SET_PDEATHSIG`` (it dies with the test
process, even on ``kill -9`` of pytest) and an ``atexit`` hook kills what is left.

``TcpProxy`` puts a controllable "network" between one client and a server, to make
real partitions: ``block()`` drops every connection and refuses new ones until
``unblock()``; ``drop_responses()`` lets requests through but swallows the answers (a
request that the server applied but whose reply was lost).

Run ``python -m tests.services.zookeeper`` to start a standalone server (or
``--ensemble``) by hand; it prints the hosts string and waits for Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.services.aio import wait_until as wait_until  # re-exported for the tests
from tests.services.ci import require

JAVA_DIR = Path(os.environ.get("ZOOKEEPER_JAVA_DIR", "/usr/share/java"))
ZOOKEEPER_JAR = JAVA_DIR / "zookeeper.jar"
SLF4J_BINDING = JAVA_DIR / "slf4j-simple.jar"
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
JVM_OPTIONS = ("-Xmx256m", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true")
APT_HINT = "apt-get install -y zookeeper default-jre-headless"

T = TypeVar("T")

_live: set[ZooKeeperServer] = set()
_live_lock = threading.Lock()
_tempdirs: list[Path] = []  # made here with mkdtemp: removed at exit


# ----------------------------------------------------------------------------- utils


def zookeeper_missing() -> str | None:
    """Why ZooKeeper cannot be started here, or None when it can."""
    if not ZOOKEEPER_JAR.exists():
        return f"ZooKeeper is not installed ({ZOOKEEPER_JAR} missing; {APT_HINT})"
    if shutil.which("java") is None:
        return f"no java on PATH ({APT_HINT})"
    return None


def require_zookeeper() -> None:
    """Skip the calling test when ZooKeeper is missing; fail instead in CI."""
    require(zookeeper_missing())


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while picking)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
    interval: float = 0.01,
) -> Any:
    """``wait_until`` for coroutines: polls ``check`` (sync) on the event loop."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def eventually_async(
    attempt: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
    interval: float = 0.02,
) -> Any:
    """Await ``attempt()`` (a coroutine function) until it returns something truthy."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await attempt()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def expire_session(hosts: str, client_id: tuple[int, bytes]) -> None:
    """Expire a live session at once: attach a second client to it and close that one.

    Blocking (run it in a thread when the session's owner shares the event loop).
    """
    from kazoo.client import KazooClient

    other = KazooClient(hosts=hosts, client_id=client_id, timeout=10)
    other.start(10)
    try:
        other.stop()
    finally:
        other.close()


@contextlib.asynccontextmanager
async def running_coordinator(hosts: str, namespace: str, **options: Any) -> AsyncIterator[Any]:
    """A started :class:`reconciler.locks.ZooKeeperCoordinator`, closed afterwards."""
    from reconciler.locks import ZooKeeperCoordinator

    coordinator = ZooKeeperCoordinator(hosts, namespace=namespace, **options)
    await coordinator.start()
    try:
        yield coordinator
    finally:
        await coordinator.close()


def four_letter(port: int, command: str = "srvr", timeout: float = 0.5) -> str | None:
    """Send a four-letter word to 127.0.0.1:port; the answer, or None when unreachable."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(command.encode())
            chunks = []
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_everything() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.kill()
    for d in _tempdirs:
        shutil.rmtree(d, ignore_errors=True)


def _tempdir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    _tempdirs.append(d)
    return d


atexit.register(_kill_everything)


class ZooKeeperStartError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- server


@dataclass(eq=False)
class ZooKeeperServer:
    """One ``QuorumPeerMain`` JVM. ``peers`` (id -> (quorum port, election port)) makes it
    a member of an ensemble; without it the server is standalone."""

    directory: Path
    client_port: int
    server_id: int = 1
    peers: dict[int, tuple[int, int]] = field(default_factory=dict)
    tick_ms: int = 250
    extra_config: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def __hash__(self) -> int:
        return id(self)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "zoo.cfg"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = {
            "tickTime": str(self.tick_ms),
            "initLimit": "40",
            "syncLimit": "20",
            "dataDir": str(self.data_dir),
            "clientPort": str(self.client_port),
            "clientPortAddress": "127.0.0.1",
            "maxClientCnxns": "0",
            "minSessionTimeout": str(2 * self.tick_ms),
            "maxSessionTimeout": "60000",
            "admin.enableServer": "false",
            "4lw.commands.whitelist": "ruok,srvr,stat,mntr",
            "forceSync": "no",  # tests only: never in production
            "autopurge.purgeInterval": "0",
        }
        if self.peers:
            (self.data_dir / "myid").write_text(f"{self.server_id}\n")
            for sid, (quorum, election) in sorted(self.peers.items()):
                lines[f"server.{sid}"] = f"127.0.0.1:{quorum}:{election}"
            lines["cnxTimeout"] = "1000"
        lines.update(self.extra_config)
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def command(self) -> list[str]:
        classpath = f"{ZOOKEEPER_JAR}:{SLF4J_BINDING}"
        return ["java", *JVM_OPTIONS, "-cp", classpath, MAIN_CLASS, str(self.config_path)]

    def launch(self) -> None:
        """Start the JVM without waiting (see :meth:`wait_ready`)."""
        if self.alive:
            raise RuntimeError(f"server {self.server_id} is already running")
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.directory, preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        with _live_lock:
            _live.add(self)

    def start(self, timeout: float = 30.0) -> ZooKeeperServer:
        self.launch()
        self.wait_ready(timeout)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def srvr(self) -> str | None:
        return four_letter(self.client_port, "srvr")

    def listening(self) -> bool:
        """This JVM (not another process) listens on the client port."""
        if not self.alive:
            return False
        assert self.proc is not None
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil is a dev dependency
            return True
        try:
            conns = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == self.client_port
                   for c in conns)

    def mode(self) -> str | None:
        """``standalone``, ``leader`` or ``follower`` when this JVM serves; else None."""
        if not self.alive:
            return None
        answer = self.srvr()
        if answer is None:
            return None
        for line in answer.splitlines():
            if line.startswith("Mode:"):
                # The answer may come from another server on the same port (a clash):
                # only count it when this very JVM holds the port.
                return line.split(":", 1)[1].strip() if self.listening() else None
        return None

    def zxid(self) -> int | None:
        answer = self.srvr() if self.alive else None
        for line in (answer or "").splitlines():
            if line.startswith("Zxid:"):
                return int(line.split(":", 1)[1].strip(), 16)
        return None

    def wait_ready(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise ZooKeeperStartError(
                    f"ZooKeeper server {self.server_id} (port {self.client_port}) exited "
                    f"with {self.proc.returncode if self.proc else None}:\n{self.log_tail()}"
                )
            mode = self.mode()
            if mode:
                return mode
            if time.monotonic() > deadline:
                raise ZooKeeperStartError(
                    f"ZooKeeper server {self.server_id} (port {self.client_port}) not ready "
                    f"after {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (a clean shutdown); SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        self.resume()
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._forget()

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._forget()

    def pause(self) -> None:
        """SIGSTOP: the JVM keeps its sockets but answers nothing (a stalled server)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self, timeout: float = 30.0) -> ZooKeeperServer:
        self.stop()
        return self.start(timeout)

    def _forget(self) -> None:
        self.proc = None  # stopped on purpose: not a crash for ``wait_ready``
        with _live_lock:
            _live.discard(self)


def start_standalone(
    directory: Path | None = None, *, tick_ms: int = 250, attempts: int = 3,
    timeout: float = 30.0,
) -> ZooKeeperServer:
    """A ready standalone server on a free port (retried on a port clash)."""
    base = Path(directory) if directory else _tempdir("zk-standalone-")
    error: Exception | None = None
    for attempt in range(attempts):
        d = base / f"s{attempt}"
        d.mkdir(parents=True, exist_ok=True)
        server = ZooKeeperServer(d, free_ports(1)[0], tick_ms=tick_ms)
        try:
            return server.start(timeout)
        except ZooKeeperStartError as exc:
            server.kill()
            error = exc
    raise ZooKeeperStartError(f"standalone ZooKeeper did not start: {error}")


# -------------------------------------------------------------------------- ensemble


@dataclass
class ZooKeeperEnsemble:
    servers: list[ZooKeeperServer]

    @property
    def hosts(self) -> str:
        return ",".join(s.address for s in self.servers)

    def modes(self) -> dict[int, str | None]:
        return {s.server_id: s.mode() for s in self.servers}

    def leader(self) -> ZooKeeperServer | None:
        for s in self.servers:
            if s.mode() == "leader":
                return s
        return None

    def followers(self) -> list[ZooKeeperServer]:
        return [s for s in self.servers if s.mode() == "follower"]

    def server(self, server_id: int) -> ZooKeeperServer:
        return next(s for s in self.servers if s.server_id == server_id)

    def wait_ready(self, timeout: float = 30.0) -> ZooKeeperServer:
        """Every running server serves and exactly one of them leads; returns the leader."""
        deadline = time.monotonic() + timeout
        while True:
            for s in self.servers:
                if s.proc is not None and not s.alive:
                    raise ZooKeeperStartError(
                        f"ensemble server {s.server_id} exited:\n{s.log_tail()}"
                    )
            running = [s for s in self.servers if s.alive]
            modes = [s.mode() for s in running]
            if running and all(modes) and modes.count("leader") == 1:
                leader = running[modes.index("leader")]
                return leader
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- server {s.server_id}\n{s.log_tail(10)}"
                                  for s in self.servers)
                raise ZooKeeperStartError(
                    f"no quorum after {timeout}s (modes {self.modes()}):\n{tails}"
                )
            time.sleep(0.05)

    def start(self, timeout: float = 30.0) -> ZooKeeperEnsemble:
        for s in self.servers:
            if not s.alive:
                s.launch()
        self.wait_ready(timeout)
        return self

    def kill_leader(self) -> ZooKeeperServer:
        """SIGKILL the current leader; returns it (restart it with ``start()``)."""
        leader = self.leader()
        if leader is None:
            raise RuntimeError(f"no leader to kill (modes {self.modes()})")
        leader.kill()
        return leader

    def restore(self, timeout: float = 30.0) -> ZooKeeperServer:
        """Restart every stopped server and wait for the quorum; returns the leader."""
        for s in self.servers:
            s.resume()
            if not s.alive:
                s.launch()
        return self.wait_ready(timeout)

    def close(self) -> None:
        for s in self.servers:
            s.kill()


def start_ensemble(
    directory: Path | None = None, *, size: int = 3, tick_ms: int = 250, attempts: int = 3,
    timeout: float = 40.0,
) -> ZooKeeperEnsemble:
    """A ready ``size``-node ensemble on free ports (retried on a port clash)."""
    base = Path(directory) if directory else _tempdir("zk-ensemble-")
    error: Exception | None = None
    for attempt in range(attempts):
        ports = free_ports(3 * size)
        peers = {i + 1: (ports[3 * i + 1], ports[3 * i + 2]) for i in range(size)}
        servers = [
            ZooKeeperServer(base / f"e{attempt}" / f"zk{i + 1}", ports[3 * i], server_id=i + 1,
                            peers=peers, tick_ms=tick_ms)
            for i in range(size)
        ]
        for s in servers:
            s.directory.mkdir(parents=True, exist_ok=True)
        ensemble = ZooKeeperEnsemble(servers)
        try:
            return ensemble.start(timeout)
        except ZooKeeperStartError as exc:
            ensemble.close()
            error = exc
    raise ZooKeeperStartError(f"ZooKeeper ensemble did not start: {error}")


# -------------------------------------------------- shared servers (one per test run)

_shared: dict[str, Any] = {}
_shared_lock = threading.Lock()


def shared_standalone() -> ZooKeeperServer:
    """One standalone server for the whole test run (started on first use).

    Tests sharing it must use their own namespace (a random one). Tests that stop or
    kill a server start a private one instead.
    """
    with _shared_lock:
        server = _shared.get("standalone")
        if server is None or not server.alive:
            server = _shared["standalone"] = start_standalone()
        return server  # type: ignore[no-any-return,unused-ignore]


def shared_ensemble() -> ZooKeeperEnsemble:
    """One 3-node ensemble for the whole run; restored (all servers up) on every call."""
    with _shared_lock:
        ensemble: ZooKeeperEnsemble | None = _shared.get("ensemble")
        if ensemble is None:
            ensemble = _shared["ensemble"] = start_ensemble()
        else:
            ensemble.restore()
        return ensemble


# ----------------------------------------------------------------------------- proxy


class TcpProxy:
    """A loopback TCP forwarder to one upstream port, with partitions on demand."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._blocked = False
        self._drop_responses = False
        self._closed = False
        self._conns: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"proxy-{self.port}")
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def block(self) -> None:
        """Partition: drop every open connection and refuse new ones."""
        self._blocked = True
        self._drop_all()

    def unblock(self) -> None:
        self._blocked = False
        self._drop_responses = False

    def drop_responses(self) -> None:
        """Forward client -> server but swallow server -> client (answers get lost)."""
        self._drop_responses = True

    def _drop_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for a, b in conns:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self._drop_all()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 2)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self._lock:
                self._conns.add(pair)
            threading.Thread(target=self._pump, args=pair, daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while not self._closed:
                readable, _, _ = select.select([client, upstream], [], [], 0.2)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client:
                        upstream.sendall(data)
                    elif not self._drop_responses:
                        client.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard((client, upstream))
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.close()


@contextlib.contextmanager
def proxy_to(server: ZooKeeperServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(server.client_port)
    try:
        yield proxy
    finally:
        proxy.close()


def main() -> None:  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description="start a private ZooKeeper for manual tests")
    parser.add_argument("--ensemble", action="store_true", help="3 nodes instead of one")
    args = parser.parse_args()
    reason = zookeeper_missing()
    if reason:
        raise SystemExit(reason)
    if args.ensemble:
        ens = start_ensemble()
        print(ens.hosts, "leader:", ens.leader().server_id, flush=True)  # type: ignore[union-attr]
    else:
        print(start_standalone().address, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()


if __name__ == "__main__":  # pragma: no cover
    main()
