"""bin/start: the API and the worker side by side, stopped together, the worker restarted if it dies.

Each child runs in a session of its own, so a terminal's Ctrl-C (SIGINT to the foreground group)
and a SIGTERM to this launcher or to its group reach only the launcher, which sends each child
exactly one SIGTERM: a second signal makes Dramatiq exit before its worker stops, and bash only
runs its traps once its foreground child has exited. The children then have the grace period
(LEXIA_SHUTDOWN_GRACE_SECONDS; the API answers its in-flight requests, the worker finishes or hands
back its jobs) plus a margin, after which whatever is left of either session is killed. A worker
that exits on its own is started again with a growing delay; the API exiting stops everything.
`--worker-only` (make worker) runs the worker alone under the same rules.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from lexia.settings import SettingsError, environment_with_dotenv, load_settings

POLL_SECONDS = 0.2
KILL_MARGIN_SECONDS = 10.0
MAX_RESTART_DELAY = 30.0


def worker_command(grace: float, extra: Sequence[str] = ()) -> list[str]:
    """`dramatiq lexia.worker.actors` with a shutdown timeout beyond the grace period (`extra`:
    more Dramatiq options, e.g. `--queues webhooks`)."""
    dramatiq = str(Path(sys.executable).with_name("dramatiq"))
    timeout_ms = str(int((grace + KILL_MARGIN_SECONDS / 2) * 1000))
    return [
        dramatiq, "lexia.worker.actors", "--processes", "1", "--threads", "4", "--worker-shutdown-timeout", timeout_ms,
        *extra,
    ]


def api_command() -> list[str]:
    """The API server (uvicorn through lexia.serve)."""
    return [sys.executable, "-m", "lexia.serve"]


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, start_new_session=True)


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of a child's session (the child is its session and group leader)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class Launcher:
    """Starts, watches and stops the two processes."""

    def __init__(self, grace: float, *, api: bool = True, worker_args: Sequence[str] = ()) -> None:
        self.grace = grace
        self.stopping = False
        self.worker_args = tuple(worker_args)
        self.api = _spawn(api_command()) if api else None
        self.worker = _spawn(worker_command(grace, self.worker_args))
        self._restart_delay = 1.0
        self._restart_at: float | None = None

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """A stop signal: the first one starts a graceful stop (later ones change nothing)."""
        if not self.stopping:
            self.stopping = True
            print(f"lexia: {signal.Signals(signum).name} received, stopping (grace {self.grace:g} s)", file=sys.stderr)

    def run(self) -> int:
        """Watch until a stop signal or the API's exit; then stop both. The exit status."""
        code = 0
        while not self.stopping:
            time.sleep(POLL_SECONDS)
            if self.api is not None and self.api.poll() is not None:
                code = self.api.returncode or 1
                print(f"lexia: the API exited ({self.api.returncode}); stopping the worker", file=sys.stderr)
                break
            self._watch_worker()
        self.stop()
        return code

    def _watch_worker(self) -> None:
        now = time.monotonic()
        if self._restart_at is not None:
            if now >= self._restart_at:
                self.worker = _spawn(worker_command(self.grace, self.worker_args))
                self._restart_at = None
            return
        if self.worker.poll() is None:
            return
        _kill_session(self.worker)  # its child processes, if any are left
        print(
            f"lexia: the worker exited ({self.worker.returncode}); starting it again in {self._restart_delay:g} s",
            file=sys.stderr,
        )
        self._restart_at = now + self._restart_delay
        self._restart_delay = min(MAX_RESTART_DELAY, self._restart_delay * 2)

    def stop(self) -> None:
        """One SIGTERM to each child, the grace period and a margin, then SIGKILL to what is left."""
        started = [p for p in (self.api, self.worker) if p is not None]
        children = [p for p in started if p.poll() is None]
        for proc in children:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + KILL_MARGIN_SECONDS
        for proc in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in started:
            if proc.poll() is None:
                print(f"lexia: process {proc.pid} did not stop in time; killing it", file=sys.stderr)
            _kill_session(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of bin/start; `--worker-only [DRAMATIQ OPTIONS]` runs the worker alone (make worker)."""
    args = list(sys.argv[1:] if argv is None else argv)
    worker_only = bool(args) and args[0] == "--worker-only"
    try:
        settings = load_settings(environment_with_dotenv())
    except SettingsError as exc:
        print(f"lexia: {exc}", file=sys.stderr)
        return 2
    launcher = Launcher(settings.server.shutdown_grace_seconds, api=not worker_only, worker_args=args[1:])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, launcher.request_stop)
    return launcher.run()


if __name__ == "__main__":
    raise SystemExit(main())
