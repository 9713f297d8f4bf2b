"""`make daemon|stop|restart|status|logs`: the API and the worker under supervisord, as a daemon.

`make start` runs both in the foreground under lexia.launcher; a deployment that must outlive its
terminal runs them under supervisord (PyPI `supervisor`), configured here from the settings:

- the API (`python -m lexia.serve`) and the worker (`dramatiq lexia.worker.actors`) restarted
  when they die, with supervisord's growing delay between tries (`startretries`);
- stopping sends each program one SIGTERM — to the Dramatiq main process only, which passes it
  on to its worker process (a second signal would make Dramatiq exit before its worker stops);
  the API answers its in-flight requests and the worker finishes or hands back its running jobs
  within LEXIA_SHUTDOWN_GRACE_SECONDS; whatever is left of a program's process group after the
  grace period and a margin is killed;
- logs in rotating files under `$LEXIA_DATA_DIR/logs` (api.log, worker.log, supervisord.log;
  20 MB × 5 each); the control socket and pid file under `$LEXIA_DATA_DIR/run`.

`stop` shuts supervisord down (programs first) and waits for it, so nothing of Lexia is left;
`restart` is stop then start, which is what `git pull && make restart` relies on: the new code
starts once the old worker has handed its jobs back.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lexia.launcher import KILL_MARGIN_SECONDS, api_command, worker_command
from lexia.settings import Settings, SettingsError, environment_with_dotenv, load_settings

ROOT = Path(__file__).resolve().parents[1]


def paths(settings: Settings) -> tuple[Path, Path]:
    """(logs folder, run folder) under the data dir."""
    data = Path(settings.server.data_dir).expanduser().resolve()
    return data / "logs", data / "run"


def config(settings: Settings, *, foreground: bool = False) -> str:
    """supervisord.conf for this deployment (`foreground`: supervisord stays in front, as a
    container's main process)."""
    logs, run = paths(settings)
    grace = settings.server.shutdown_grace_seconds
    programs = {"api": api_command(), "worker": worker_command(grace)}
    sections = [
        f"[supervisord]\nlogfile={logs / 'supervisord.log'}\nlogfile_maxbytes=20MB\nlogfile_backups=5\n"
        f"pidfile={run / 'supervisord.pid'}\nchildlogdir={logs}\ndirectory={ROOT}\n"
        f"nodaemon={'true' if foreground else 'false'}\n",
        f"[unix_http_server]\nfile={run / 'supervisor.sock'}\nchmod=0700\n",
        f"[supervisorctl]\nserverurl=unix://{run / 'supervisor.sock'}\n",
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
    ]
    for name, command in programs.items():
        sections.append(
            f"[program:{name}]\ncommand={shlex.join(command)}\ndirectory={ROOT}\nautostart=true\nautorestart=true\n"
            f"startsecs=3\nstartretries=20\nstopsignal=TERM\nstopwaitsecs={int(grace + KILL_MARGIN_SECONDS)}\n"
            "stopasgroup=false\nkillasgroup=true\nredirect_stderr=true\n"
            f"stdout_logfile={logs / (name + '.log')}\nstdout_logfile_maxbytes=20MB\nstdout_logfile_backups=5\n"
        )
    return "\n".join(sections)


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _conf(settings: Settings) -> Path:
    return paths(settings)[1] / "supervisord.conf"


def _pid(settings: Settings) -> int | None:
    try:
        pid = int((paths(settings)[1] / "supervisord.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start(settings: Settings, *, foreground: bool = False) -> int:
    """Write the configuration and start supervisord in the background (a no-op if it runs), or
    in the foreground until it is stopped (a container's main process)."""
    if _pid(settings) is not None:
        print("lexia: already running (make status)")
        return 0
    logs, run = paths(settings)
    logs.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    conf = _conf(settings)
    conf.write_text(config(settings, foreground=foreground))
    if foreground:
        return _in_front(conf, logs)
    done = subprocess.run([_bin("supervisord"), "-c", str(conf)], check=False)
    if done.returncode == 0:
        print(f"lexia: started under supervisord; logs in {logs} (make logs), stop with make stop")
    return done.returncode


def _in_front(conf: Path, logs: Path) -> int:
    """supervisord in the foreground, its programs' logs followed onto this process's stdout (a
    container's log) as well as kept in the rotating files: a non-root process cannot reopen a
    stdout it did not create, so supervisord cannot write there itself. SIGTERM reaches supervisord."""
    files = [logs / f"{name}.log" for name in ("api", "worker")]
    for path in files:
        path.touch()
    follow = subprocess.Popen(["tail", "-n", "0", "-q", "-F", *map(str, files)])
    server = subprocess.Popen([_bin("supervisord"), "-c", str(conf)])
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: server.send_signal(signum))
    try:
        return server.wait()
    finally:
        follow.terminate()


def stop(settings: Settings) -> int:
    """Stop both programs (the grace period) and supervisord; wait until it is gone."""
    pid = _pid(settings)
    if pid is None:
        print("lexia: not running")
        return 0
    os.kill(pid, signal.SIGTERM)  # supervisord stops its programs (one SIGTERM each), then exits
    deadline = time.monotonic() + 2 * (settings.server.shutdown_grace_seconds + KILL_MARGIN_SECONDS)
    while _pid(settings) == pid and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid(settings) == pid:
        print(f"lexia: supervisord {pid} did not stop in time", file=sys.stderr)
        return 1
    print("lexia: stopped")
    return 0


def ctl(settings: Settings, *args: str) -> int:
    """supervisorctl against this deployment's socket."""
    if _pid(settings) is None:
        print("lexia: not running")
        return 3
    return subprocess.run([_bin("supervisorctl"), "-c", str(_conf(settings)), *args], check=False).returncode


def logs(settings: Settings) -> int:
    """Follow the API's and the worker's logs."""
    folder = paths(settings)[0]
    files = [str(folder / f"{name}.log") for name in ("api", "worker")]
    tail = shutil.which("tail")
    if tail is None:
        print("\n".join(files))
        return 1
    try:
        return subprocess.run([tail, "-n", "50", "-F", *files], check=False).returncode
    except KeyboardInterrupt:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """python -m lexia.supervise start|stop|restart|status|logs."""
    parser = argparse.ArgumentParser(prog="lexia-supervise", description="Lexia under supervisord.")
    parser.add_argument("command", choices=["start", "foreground", "stop", "restart", "status", "logs", "config"])
    args = parser.parse_args(argv)
    try:
        settings = load_settings(environment_with_dotenv())
    except SettingsError as exc:
        print(f"lexia: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(config(settings))
        return 0
    if args.command == "foreground":
        return start(settings, foreground=True)
    if args.command == "restart":
        return stop(settings) or start(settings)
    if args.command == "status":
        return ctl(settings, "status")
    return {"start": start, "stop": stop, "logs": logs}[args.command](settings)


if __name__ == "__main__":
    raise SystemExit(main())
