"""The GPU memory plan of one card (`bin/lexia-plan`, and the check before real engines load on a
GPU): each part's share from lexia.engines.memory's estimates, the rule that vLLM's share holds the
weights, its overhead and the KV cache while everything else fits beside it, and a refusal that names
the setting to change. See lexia.engines.memory for the formulas and constants.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from lexia.engines.base import EngineLoadError
from lexia.engines.memory import (
    CUDA_CONTEXT_BYTES,
    GIB,
    PYANNOTE_BYTES,
    VLLM_PROFILE_TOKENS,
    LLMEstimate,
    estimate_arch,
    estimate_llm,
    whisper_bytes,
    whisper_size,
)
from lexia.settings import (
    ENV_FIELDS,
    EngineSettings,
    SettingsError,
    environment_with_dotenv,
    load_settings,
)


def _on_this_card(device: str, index: int = 0) -> bool:
    """True for 'auto'/'cuda' on device 0 (the card vLLM uses); False for the CPU or another card."""
    if device == "cpu":
        return False
    if device.startswith("cuda:"):
        return device.removeprefix("cuda:") in ("", "0")
    return index == 0


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the plan: which part, in which process, how many bytes."""

    part: str
    process: str
    bytes: int
    note: str = ""


def process_rows(settings: EngineSettings, process: str, count: int = 1) -> list[Row]:
    """GPU rows of one kind of process (the API, or `count` worker processes): context, Whisper, pyannote."""
    each = "" if count == 1 else f" (each ×{count})"
    rows: list[Row] = []
    stt, diar = settings.stt, settings.diarization
    if stt.enabled and _on_this_card(stt.device, stt.device_index):
        weights, workspace, note = whisper_bytes(stt)
        rows.append(Row(f"Whisper {whisper_size(stt.model)[0]} weights", process, weights * count, note + each))
        rows.append(Row("Whisper workspace", process, workspace * count, "CTranslate2 buffers" + each))
    if diar.enabled and diar.backend != "lite" and _on_this_card(diar.device):
        rows.append(Row("pyannote", process, PYANNOTE_BYTES * count, diar.model + each))
    if rows:
        rows.insert(0, Row("CUDA context", process, CUDA_CONTEXT_BYTES * count, "per process" + each))
    return rows


def beside_vllm_rows(settings: EngineSettings, workers: int) -> list[Row]:
    """Every GPU row outside vLLM's share: the API process and the worker processes."""
    label = "worker" if workers == 1 else f"{workers} workers"
    return process_rows(settings, "API") + (process_rows(settings, label, workers) if workers > 0 else [])


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


@dataclass(slots=True)
class Plan:
    """The GPU memory plan of one card: rows, the vLLM share and what must fit beside it."""

    settings: EngineSettings
    card_bytes: int
    workers: int
    llm: LLMEstimate | None
    rows: list[Row]
    problems: list[str] = field(default_factory=list)

    @property
    def utilization(self) -> float:
        """vLLM's fraction of the card (0 when the LLM is disabled)."""
        return self.settings.llm.gpu_memory_utilization if self.settings.llm.enabled else 0.0

    @property
    def vllm_share(self) -> int:
        """Bytes vLLM takes at start-up."""
        return int(self.utilization * self.card_bytes)

    @property
    def beside_share(self) -> int:
        """Bytes left for everything else."""
        return self.card_bytes - self.vllm_share

    @property
    def beside_needed(self) -> int:
        """Bytes everything outside vLLM needs."""
        return sum(r.bytes for r in self.rows if r.process != "vLLM")

    @property
    def kv_bytes(self) -> int:
        """KV cache vLLM will allocate (0 if weights and overhead already overflow its share)."""
        return max(0, self.vllm_share - self.llm.fixed_bytes) if self.llm else 0

    @property
    def kv_tokens(self) -> int:
        """Tokens the KV cache holds."""
        return self.kv_bytes // self.llm.kv_per_token if self.llm else 0

    @property
    def fits(self) -> bool:
        """True when nothing is refused."""
        return not self.problems

    def check(self) -> None:
        """Raise EngineLoadError naming the settings to change when the plan cannot fit."""
        if self.problems:
            raise EngineLoadError("GPU memory plan refused: " + " ".join(self.problems))

    def table(self) -> str:
        """The plan as a markdown table followed by its totals."""
        lines = ["| part | process | GiB | note |", "|---|---|---:|---|"]
        lines += [f"| {r.part} | {r.process} | {_gib(r.bytes)} | {r.note} |" for r in self.rows]
        lines.append(f"| **vLLM share** | vLLM | {_gib(self.vllm_share)} | {self.utilization:.2f} × card |")
        lines.append(
            f"| **beside vLLM** | API + workers | {_gib(self.beside_needed)} | "
            f"of {_gib(self.beside_share)} GiB left by vLLM |"
        )
        lines.append(f"| **card** | | {_gib(self.card_bytes)} | |")
        return "\n".join(lines)


def _llm_rows(plan: Plan) -> list[Row]:
    est, share = plan.llm, plan.vllm_share
    if est is None:
        return [Row("LLM (vLLM share)", "vLLM", share, "unknown: model config not found locally")]
    full = plan.kv_tokens // est.max_model_len if est.max_model_len else 0
    kv_note = (
        f"{plan.kv_tokens:,} tokens = {full} full sequence(s) of {est.max_model_len:,} "
        f"(needs {est.seqs}: {_gib(est.kv_needed)} GiB)"
    )
    return [
        Row(
            f"LLM weights ({est.arch.name})",
            "vLLM",
            est.weight_bytes,
            f"{est.arch.params() / 1e9:.2f}e9 params, {est.weight_label}",
        ),
        Row(
            "vLLM overhead",
            "vLLM",
            est.overhead_bytes,
            f"context, CUDA graphs, activations of {VLLM_PROFILE_TOKENS} tokens, sampler",
        ),
        Row("KV cache", "vLLM", plan.kv_bytes, kv_note),
    ]


def plan_for(
    engine_settings: EngineSettings,
    card_bytes: int,
    *,
    llm_config: Mapping[str, Any] | None,
    workers: int = 1,
) -> Plan:
    """Estimate every part against a card of `card_bytes`; `workers` worker processes beside the API."""
    llm = engine_settings.llm
    estimate = estimate_llm(llm, llm_config) if llm.enabled and llm_config is not None else None
    plan = Plan(engine_settings, card_bytes, workers, estimate, [])
    plan.rows = (_llm_rows(plan) if llm.enabled else []) + beside_vllm_rows(engine_settings, workers)
    plan.problems = [p for p in (_llm_problem(plan), _beside_problem(plan)) if p]
    return plan


def _util_floor(value: float) -> float:
    return math.floor(value * 100) / 100


def _util_ceil(value: float) -> float:
    return math.ceil(value * 100 - 1e-9) / 100


def _quantized_hint(plan: Plan) -> str | None:
    """Quantized variants of the LLM that would fit (with their weight size), or None if none would."""
    assert plan.llm is not None
    llm, card = plan.settings.llm, plan.card_bytes
    cap = _util_floor(1 - plan.beside_needed / card)
    found = []
    for method, label in (("fp8", "fp8 at load"), ("awq", "a 4-bit AWQ/GPTQ checkpoint")):
        other = estimate_arch(msgspec.structs.replace(llm, quantization=method), plan.llm.arch)
        need = other.fixed_bytes + other.kv_needed
        if other.weight_bytes >= plan.llm.weight_bytes or need > cap * card:
            continue
        fit = "fits" if need <= plan.vllm_share else f"fits at ≥{_util_ceil(need / card):.2f}"
        found.append(f"{label}: weights ≈{_gib(other.weight_bytes)} GiB, {fit}")
    return f"use a quantized model (LEXIA_LLM_QUANTIZATION; {'; '.join(found)})" if found else None


def _llm_problem(plan: Plan) -> str | None:
    """Why the LLM does not fit in vLLM's share, and which settings would make it fit."""
    est = plan.llm
    if est is None or est.fixed_bytes + est.kv_needed <= plan.vllm_share:
        return None
    card = plan.card_bytes
    cap = _util_floor(1 - plan.beside_needed / card)
    what = f"{est.seqs} × {est.max_model_len:,}-token KV cache"
    head = (
        f"the LLM needs {_gib(est.fixed_bytes)} GiB (weights {_gib(est.weight_bytes)} + overhead "
        f"{_gib(est.overhead_bytes)}) + {_gib(est.kv_needed)} GiB for a {what}, but "
        f"LEXIA_LLM_GPU_MEMORY_UTILIZATION={plan.utilization:.2f} gives vLLM {_gib(plan.vllm_share)} GiB"
    )
    hint = _quantized_hint(plan)
    if est.fixed_bytes >= cap * card:
        fallback = "use a quantized model (LEXIA_LLM_QUANTIZATION) or a smaller LEXIA_LLM_MODEL"
        return f"{head}: " + (f"{hint}, or a smaller LEXIA_LLM_MODEL" if hint else fallback) + "."
    options = []
    need = _util_ceil((est.fixed_bytes + est.kv_needed) / card)
    if need <= cap:
        options.append(f"raise LEXIA_LLM_GPU_MEMORY_UTILIZATION to ≥{need:.2f} (≤{cap:.2f} leaves room beside it)")
    tokens = max(0, plan.vllm_share - est.fixed_bytes) // est.kv_per_token
    if tokens // est.seqs >= 1:
        options.append(f"lower LEXIA_LLM_MAX_MODEL_LEN to ≤{tokens // est.seqs:,}")
    if est.seqs > 1 and tokens // est.max_model_len >= 1:
        options.append(f"lower LEXIA_LLM_MAX_NUM_SEQS to ≤{tokens // est.max_model_len}")
    if hint:
        options.append(hint)
    return f"{head}: " + ", or ".join(options) + "."


def _fits_beside(plan: Plan, settings: EngineSettings, workers: int | None = None) -> bool:
    rows = beside_vllm_rows(settings, plan.workers if workers is None else workers)
    return sum(r.bytes for r in rows) <= plan.beside_share


def _stt_options(plan: Plan) -> list[str]:
    """Whisper settings that would make the rest fit at the current utilization."""
    settings, stt = plan.settings, plan.settings.stt

    def with_stt(**changes: Any) -> EngineSettings:
        return msgspec.structs.replace(settings, stt=msgspec.structs.replace(stt, **changes))

    options = []
    if stt.compute_type in ("float16", "bfloat16", "float32", "default", "auto") and _fits_beside(
        plan, with_stt(compute_type="int8_float16")
    ):
        options.append("set LEXIA_STT_COMPUTE_TYPE=int8_float16")
    for name in ("batch_size", "num_workers", "beam_size"):
        current = getattr(stt, name)
        best = next((n for n in range(current - 1, 0, -1) if _fits_beside(plan, with_stt(**{name: n}))), 0)
        if best:
            options.append(f"lower LEXIA_STT_{name.upper()} to ≤{best}")
    if plan.workers > 1:
        best = next((n for n in range(plan.workers - 1, 0, -1) if _fits_beside(plan, settings, n)), 0)
        if best:
            options.append(f"run at most {best} worker process(es)")
    lite = msgspec.structs.replace(settings, diarization=msgspec.structs.replace(settings.diarization, backend="lite"))
    if settings.diarization.backend != "lite" and _fits_beside(plan, lite):
        options.append("set LEXIA_DIARIZATION_BACKEND=lite (CPU)")
    return options


def _beside_problem(plan: Plan) -> str | None:
    """Why Whisper, pyannote and the contexts do not fit beside vLLM, and what would make them fit."""
    need, have = plan.beside_needed, plan.beside_share
    if need <= have:
        return None
    head = (
        f"Whisper, pyannote and CUDA contexts need {_gib(need)} GiB beside vLLM (API + {plan.workers} worker "
        f"process(es)), but LEXIA_LLM_GPU_MEMORY_UTILIZATION={plan.utilization:.2f} leaves {_gib(have)} GiB"
    )
    options = []
    cap = _util_floor(1 - need / plan.card_bytes)
    est = plan.llm
    if cap > 0 and (est is None or est.fixed_bytes + est.kv_needed <= cap * plan.card_bytes):
        unknown = " (the LLM's own needs are unknown)" if est is None and plan.settings.llm.enabled else ""
        options.append(f"lower LEXIA_LLM_GPU_MEMORY_UTILIZATION to ≤{cap:.2f}{unknown}")
    elif est is not None and cap > 0 and est.fixed_bytes < cap * plan.card_bytes:
        tokens = (int(cap * plan.card_bytes) - est.fixed_bytes) // est.kv_per_token // est.seqs
        options.append(f"lower LEXIA_LLM_GPU_MEMORY_UTILIZATION to ≤{cap:.2f} with LEXIA_LLM_MAX_MODEL_LEN ≤{tokens:,}")
    options += _stt_options(plan)
    if not options:
        options.append("use a smaller LEXIA_STT_MODEL, or a smaller or quantized LLM (LEXIA_LLM_QUANTIZATION)")
    return f"{head}: " + ", or ".join(options) + "."


def load_llm_config(model: str) -> dict[str, Any] | None:
    """The model's config.json from a local directory or the Hugging Face cache (never downloads)."""
    if not model:
        return None
    path = Path(model).expanduser()
    candidate: Path | None = path / "config.json" if path.is_dir() else None
    if candidate is None:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        try:
            found = try_to_load_from_cache(model, "config.json")
        except Exception:  # an invalid repo id, an unreadable cache
            return None
        candidate = Path(found) if isinstance(found, str) else None
    if candidate is None or not candidate.is_file():
        return None
    data = json.loads(candidate.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def detect_card_bytes() -> int | None:
    """Total memory of the first GPU from nvidia-smi, or None when there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return int(float(out.strip().splitlines()[0])) * (1 << 20)  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def engine_settings_from(environ: Mapping[str, str]) -> EngineSettings:
    """The engine settings of an environment (the other sections, e.g. the pepper, are not needed here)."""
    engines = {k: v for k, v in environ.items() if ENV_FIELDS.get(k, "").startswith("engines.")}
    placeholder = {"LEXIA_ENV": "test", "LEXIA_KEY_PEPPER": "plan-only-" + "x" * 32}
    return load_settings({**engines, **placeholder}).engines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lexia-plan",
        description="Print the GPU memory plan of the LEXIA_* settings (environment over .env); "
        "exit 1 if it cannot fit.",
    )
    parser.add_argument(
        "--gpu-memory",
        type=float,
        metavar="GB",
        help="the card's memory in GiB as nvidia-smi reports it (24, 48, 80, 141); default: nvidia-smi's first GPU",
    )
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    parser.add_argument(
        "--llm-config",
        type=Path,
        metavar="PATH",
        help="the LLM's config.json (default: LEXIA_LLM_MODEL's, from disk or the HF cache)",
    )
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="the .env file to read (default .env)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """bin/lexia-plan: print the plan table and 'fits' (exit 0) or the refusal (exit 1)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = engine_settings_from(environment_with_dotenv(args.env_file))
    except SettingsError as exc:
        parser.error(str(exc))
    card = int(args.gpu_memory * GIB) if args.gpu_memory else detect_card_bytes()
    if not card:
        parser.error("no GPU found with nvidia-smi: give the card's memory with --gpu-memory GB")
    if args.llm_config is not None:
        try:
            config: dict[str, Any] | None = json.loads(args.llm_config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            parser.error(f"--llm-config {args.llm_config}: {exc}")
    else:
        config = load_llm_config(settings.llm.model)
    try:
        plan = plan_for(settings, card, llm_config=config, workers=max(0, args.workers))
    except (TypeError, ValueError) as exc:
        parser.error(f"cannot read the LLM's architecture: {exc}")
    print(plan.table())
    try:
        plan.check()
    except EngineLoadError as exc:
        print(f"\n{exc}")
        return 1
    print("\nfits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
