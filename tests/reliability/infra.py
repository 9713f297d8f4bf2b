"""What the reliability run stands on: its own PostgreSQL cluster and Redis on spare ports (so it
may stop and restart them), a Lexia stack started with bin/start from a source tree, a webhook
receiver, and /proc readings (children, RSS, open files). Linux only, like the deploy target.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll `check()` until true or `timeout` seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return True
        time.sleep(interval)
    return False


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


# -- /proc ------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Every descendant of `pid`."""
    parents: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = Path(stat).read_text()
            fields = text[text.rindex(")") + 2:].split()
            parents.setdefault(int(fields[1]), []).append(int(Path(stat).parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_files(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = ""
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


# -- PostgreSQL and Redis -------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found (install PostgreSQL's server binaries)")
    return path


class Postgres:
    """A throw-away cluster on a spare port (run as `postgres` when we are root)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.data = root / "pg"
        self.sock = root / "pgsock"
        self.log = root / "pg.log"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/lexia_reliability"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True)

    def init(self) -> None:
        for path in (self.data, self.sock):
            path.mkdir(parents=True, exist_ok=True)
            if self._as:
                shutil.chown(path, "postgres", "postgres")
        if self._as:
            shutil.chown(self.data.parent, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")


class Redis:
    """redis-server on a spare port, no persistence (a restart loses every message, as in the probe)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.log = root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if not wait_for(lambda: port_open(self.port), 10):
            raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    destroy = stop


# -- the stack ------------------------------------------------------------------------------------


@dataclass
class Stack:
    """bin/start of `source` (API + worker) with `env`; its output goes to `log`."""

    source: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)  # workers started by hand

    @property
    def port(self) -> int:
        return int(self.env["LEXIA_PORT"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [str(self.source / "bin" / "start")], cwd=self.source, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait_for(lambda: port_open(self.port), timeout, 0.25):
            raise RuntimeError(f"the stack did not start: see {self.log}")

    def pids(self) -> list[int]:
        roots = ([self.proc] if self.proc else []) + [p for p in self.extra if p.poll() is None]
        return [pid for proc in roots for pid in (proc.pid, *children(proc.pid))]

    def start_worker(self) -> None:
        """A worker by hand, as an operator would start one (for stacks that do not restart it)."""
        out = self.log.open("ab")
        dramatiq = str(Path(self.env["VENV"]) / "bin" / "dramatiq")
        self.extra.append(subprocess.Popen(
            [dramatiq, "lexia.worker.actors", "--processes", "1", "--threads", "4"], cwd=self.source, env=self.env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        ))

    def worker_pids(self) -> list[int]:
        """Dramatiq's worker processes (not its main process)."""
        found = [p for p in self.pids() if "dramatiq" in cmdline(p)]
        main = {p for p in found if any(c in found for c in children(p))}
        return [p for p in found if p not in main] or found

    def api_pid(self) -> int | None:
        return next((p for p in self.pids() if "lexia.serve" in cmdline(p)), None)

    def stop(self, timeout: float = 60) -> float:
        """SIGTERM the group; seconds until every process is gone (SIGKILL after `timeout`)."""
        if self.proc is None:
            return 0.0
        pids = self.pids()
        started = time.monotonic()
        for proc in [self.proc, *self.extra]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        done = wait_for(lambda: not any(alive(p) for p in pids), timeout, 0.1)
        elapsed = time.monotonic() - started
        if not done:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in [self.proc, *self.extra]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.proc, self.extra = None, []
        return elapsed


# -- the webhook receiver ------------------------------------------------------------------------


@dataclass
class Receiver:
    """Accepts every delivery (200) and remembers (time, webhook-id, payload) of each."""

    deliveries: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with contextlib.suppress(ValueError), receiver.lock:
                    receiver.deliveries.append((time.time(), self.headers.get("webhook-id", ""), json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def by_resource(self) -> dict[str, list[tuple[float, str]]]:
        """resource id -> [(time, webhook id)] of every delivery."""
        out: dict[str, list[tuple[float, str]]] = {}
        with self.lock:
            for at, hook_id, payload in self.deliveries:
                out.setdefault(str(payload.get("job_id", "")), []).append((at, hook_id))
        return out


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A temporary directory readable by the postgres user."""
    root = Path(tempfile.mkdtemp(prefix="lexia-reliability-"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
