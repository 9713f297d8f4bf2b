"""Models as a first-class step: which model each engine needs, whether it is on this machine, and
`bin/lexia-models pull|list|verify`.

A model setting (LEXIA_LLM_MODEL, LEXIA_STT_MODEL, LEXIA_DIARIZATION_MODEL) is a local path, used
as is, or a Hugging Face hub id (a Whisper size such as `base` or `large-v3` names the
CTranslate2 conversion listed in WHISPER_REPOS). Start-up never downloads: `locate` only looks in
the local Hugging Face cache (HF_HOME), and a missing model stops a real engine with an
EngineLoadError naming the command that fetches it. `pull` is the one place that downloads
(huggingface_hub's snapshot_download: progress bars, resumable, HF_TOKEN for gated weights,
refused under HF_HUB_OFFLINE=1) and records the commit it got in the lock file
(LEXIA_MODELS_LOCK, default `./data/models.lock.json`); later pulls and look-ups use that commit,
so every process of a deployment serves the same revision until `pull --update`. `verify`
re-hashes every file of a snapshot against the name of its blob in the cache (sha256 for LFS
files, the git blob hash for the rest).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lexia.engines.base import EngineLoadError, ModelKind
from lexia.settings import EngineSettings

# faster-whisper's CTranslate2 conversions on the hub, by the size names LEXIA_STT_MODEL accepts.
WHISPER_REPOS = {
    "tiny": "Systran/faster-whisper-tiny",
    "tiny.en": "Systran/faster-whisper-tiny.en",
    "base": "Systran/faster-whisper-base",
    "base.en": "Systran/faster-whisper-base.en",
    "small": "Systran/faster-whisper-small",
    "small.en": "Systran/faster-whisper-small.en",
    "medium": "Systran/faster-whisper-medium",
    "medium.en": "Systran/faster-whisper-medium.en",
    "large-v1": "Systran/faster-whisper-large-v1",
    "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3",
    "large": "Systran/faster-whisper-large-v3",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}
# The Whisper size used when LEXIA_STT_MODEL is `auto` (its default).
STT_AUTO = {"gpu": "large-v3", "cpu": "base"}
# Backends whose weights ship inside a package: nothing to fetch.
BUNDLED = {("diarization", "lite")}


@dataclass(frozen=True, slots=True)
class Need:
    """One engine's model: a local path or a hub repository."""

    kind: ModelKind
    name: str  # as configured (after `auto`)
    repo: str | None  # hub id; None for a local path
    path: Path | None  # the local path when `name` is one

    @property
    def command(self) -> str:
        """What fetches it."""
        return f"bin/lexia-models pull {self.kind}"


def stt_model(settings: EngineSettings, *, gpu: bool) -> str:
    """LEXIA_STT_MODEL with `auto` resolved for this machine."""
    name = settings.stt.model
    return STT_AUTO["gpu" if gpu else "cpu"] if name in ("", "auto") else name


def need(kind: ModelKind, name: str) -> Need:
    """Where `name` comes from: an existing local path, else a hub id (Whisper sizes mapped)."""
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or path.exists():
        return Need(kind, name, None, path)
    return Need(kind, name, WHISPER_REPOS.get(name, name) if kind == "stt" else name, None)


def needs(settings: EngineSettings, *, gpu: bool) -> list[Need]:
    """The models the enabled engines would load here (none for a bundled backend or an unset LLM)."""
    out = []
    if settings.llm.enabled and settings.llm.model:
        out.append(need("llm", settings.llm.model))
    if settings.stt.enabled:
        out.append(need("stt", stt_model(settings, gpu=gpu)))
    if settings.diarization.enabled and ("diarization", settings.diarization.backend) not in BUNDLED:
        out.append(need("diarization", settings.diarization.model))
    return out


# -- the lock file ---------------------------------------------------------------------------


def lock_path() -> Path:
    """LEXIA_MODELS_LOCK, default ./data/models.lock.json."""
    return Path(os.environ.get("LEXIA_MODELS_LOCK") or EngineSettings().models_lock)


def read_lock() -> dict[str, str]:
    """repo id -> the commit pulled."""
    try:
        data = json.loads(lock_path().read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_lock(repo: str, commit: str) -> None:
    """Record the commit pulled for a repo (atomically)."""
    lock = read_lock() | {repo: commit}
    target = lock_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    partial.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    partial.replace(target)


# -- look-up, pull, verify ---------------------------------------------------------------------


def locate(item: Need) -> Path | None:
    """The model's local directory or file, from its path or the local hub cache; never downloads."""
    if item.path is not None:
        return item.path if item.path.exists() else None
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    assert item.repo is not None
    try:
        return Path(snapshot_download(item.repo, revision=read_lock().get(item.repo), local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def require(kind: ModelKind, name: str) -> Path:
    """The local copy of a model a real engine is about to load, or EngineLoadError naming the fix."""
    item = need(kind, name)
    found = locate(item)
    if found is not None:
        return found
    if item.path is not None:
        raise EngineLoadError(f"LEXIA_{kind.upper()}_MODEL={name!r}: no such file or directory")
    raise EngineLoadError(
        f"the {kind} model {name!r} ({item.repo}) is not on this machine; fetch it with `{item.command}` "
        "(start-up never downloads)"
    )


def pull(item: Need, *, update: bool = False) -> Path:
    """Download (or resume) a hub model into the cache, with progress bars; record its commit."""
    if item.path is not None:
        if not item.path.exists():
            raise EngineLoadError(f"LEXIA_{item.kind.upper()}_MODEL={item.name!r}: no such file or directory")
        return item.path
    from huggingface_hub import snapshot_download

    assert item.repo is not None
    revision = None if update else read_lock().get(item.repo)
    folder = Path(snapshot_download(item.repo, revision=revision, token=os.environ.get("HF_TOKEN") or None))
    write_lock(item.repo, folder.name)
    return folder


def _blob_ok(path: Path) -> bool:
    """Whether a cached file's content matches the hash its blob is named by."""
    blob = path.resolve()
    name = blob.name
    if len(name) == 64:
        digest = hashlib.sha256()
    elif len(name) == 40:
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(b"blob %d\0" % blob.stat().st_size)
    else:
        return True  # not a content-addressed blob (a local copy): nothing to check against
    with blob.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest() == name


def verify(folder: Path) -> list[str]:
    """Files of a snapshot whose content does not match its hash, or that are missing."""
    bad = []
    for path in sorted(p for p in folder.rglob("*") if not p.is_dir()):
        if not path.exists():
            bad.append(f"{path.relative_to(folder)}: missing (a broken link)")
        elif not _blob_ok(path):
            bad.append(f"{path.relative_to(folder)}: content does not match its hash")
    return bad


def size(folder: Path) -> int:
    """Bytes on disk of a model's files."""
    if folder.is_file():
        return folder.stat().st_size
    return sum(p.resolve().stat().st_size for p in folder.rglob("*") if p.is_file())


# -- bin/lexia-models -------------------------------------------------------------------------


def gpu_available() -> bool:
    """True when torch is installed and sees a CUDA device."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _selected(items: Sequence[Need], kinds: Sequence[str]) -> list[Need]:
    return [i for i in items if not kinds or i.kind in kinds]


def main(argv: Sequence[str] | None = None) -> int:
    """bin/lexia-models: pull, list or verify the configured engines' models."""
    from lexia.settings import SettingsError, environment_with_dotenv, load_settings

    parser = argparse.ArgumentParser(prog="lexia-models", description="Fetch and check the engines' models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("pull", "download what is missing (resumable)"), ("list", "where each model is"),
                       ("verify", "re-hash every file of each model")):
        command = sub.add_parser(name, help=text)
        command.add_argument("kinds", nargs="*", metavar="KIND", help="llm, stt or diarization (default: all)")
        if name == "pull":
            command.add_argument("--update", action="store_true", help="take the newest commit, not the locked one")
            command.add_argument("--missing", action="store_true", help="only what is not on this machine yet")
    args = parser.parse_args(argv)
    unknown = [k for k in args.kinds if k not in ("llm", "stt", "diarization")]
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(unknown)}: choose from llm, stt, diarization")
    environ = environment_with_dotenv()
    # Only the engine settings matter here; a machine set up before `make start` has no pepper yet.
    environ.setdefault("LEXIA_KEY_PEPPER", "unused-by-lexia-models-" + "x" * 32)
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        print(f"lexia-models: {exc}", file=sys.stderr)
        return 2
    items = _selected(needs(settings.engines, gpu=gpu_available()), args.kinds)
    if not items:
        print("no model to fetch: the enabled engines need none (a bundled backend, or LEXIA_LLM_MODEL unset)")
        return 0
    return {"pull": _pull, "list": _list, "verify": _verify}[args.command](items, args)


def _pull(items: Sequence[Need], args: Any) -> int:
    status = 0
    for item in items:
        if args.missing and locate(item) is not None:
            continue
        print(f"{item.kind}: {item.name} ({item.repo or 'local path'})", flush=True)
        try:
            folder = pull(item, update=args.update)
        except Exception as exc:  # offline, gated, not found: say which and go on with the others
            print(f"  failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
            if item.repo and "gated" in str(exc).lower():
                print("  accept the model's conditions on the hub and set HF_TOKEN", file=sys.stderr)
            status = 1
            continue
        print(f"  ready: {folder} ({size(folder) / 1e9:.2f} GB)")
    return status


def _list(items: Sequence[Need], _args: Any) -> int:
    lock = read_lock()
    missing = 0
    for item in items:
        found = locate(item)
        where = f"{found} ({size(found) / 1e9:.2f} GB)" if found else f"missing: `{item.command}`"
        pinned = f" @ {lock[item.repo][:12]}" if item.repo and item.repo in lock else ""
        print(f"{item.kind:<12} {item.name} ({item.repo or 'local path'}{pinned}): {where}")
        missing += found is None
    return 1 if missing else 0


def _verify(items: Sequence[Need], _args: Any) -> int:
    status = 0
    for item in items:
        found = locate(item)
        if found is None:
            print(f"{item.kind}: {item.name}: missing: `{item.command}`")
            status = 1
            continue
        bad = verify(found) if found.is_dir() else []
        print(f"{item.kind}: {item.name}: " + ("ok" if not bad else f"{len(bad)} bad file(s)"))
        for line in bad:
            print(f"  {line}")
        status |= bool(bad)
    return status


if __name__ == "__main__":
    sys.exit(main())
