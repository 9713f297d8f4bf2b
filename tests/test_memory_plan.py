"""GPU memory plan (lexia/engines/memory.py and plan.py, bin/lexia-plan): the README's documented plans are
accepted, impossible ones refused naming the setting to change. No GPU, no torch.

The configs are the public architecture numbers of each model's config.json (only the fields the
estimator reads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lexia.engines.base import EngineLoadError
from lexia.engines.memory import GIB, architecture, estimate_llm, whisper_bytes
from lexia.engines.plan import Plan, load_llm_config, plan_for
from lexia.settings import DiarizationSettings, EngineSettings, LLMSettings, STTSettings

ROOT = Path(__file__).resolve().parents[1]

LLAMA_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
AWQ_4BIT = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
LLAMA_8B_AWQ = {**LLAMA_8B, "torch_dtype": "float16", "quantization_config": AWQ_4BIT}
LLAMA_8B_FP8 = {  # llm-compressor's FP8 (compressed-tensors, lm_head left in bf16)
    **LLAMA_8B,
    "quantization_config": {
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "ignore": ["lm_head"],
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
                "input_activations": {"num_bits": 8, "type": "float", "dynamic": True},
            }
        },
    },
}
LLAMA_70B = {
    **LLAMA_8B,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
}
LLAMA_70B_FP8 = {
    **LLAMA_70B,
    "quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "ignored_layers": ["lm_head"]},
}
QWEN_14B: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 48,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
QWEN_32B = {**QWEN_14B, "intermediate_size": 27648, "num_hidden_layers": 64}
QWEN_32B_AWQ = {**QWEN_32B, "torch_dtype": "float16", "quantization_config": AWQ_4BIT}
MIXTRAL_8X7B = {
    **LLAMA_8B,
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
}


def engines(
    *,
    util: float = 0.6,
    max_model_len: int = 8192,
    max_num_seqs: int = 1,
    quantization: str = "",
    compute_type: str = "float16",
    batch_size: int = 1,
    llm: bool = True,
    diarization: str = "pyannote",
) -> EngineSettings:
    """Engine settings as the LEXIA_* variables of a plan would give them."""
    return EngineSettings(
        llm=LLMSettings(
            enabled=llm,
            model="some/model",
            gpu_memory_utilization=util,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            quantization=quantization,
        ),
        stt=STTSettings(model="large-v3", compute_type=compute_type, batch_size=batch_size),
        diarization=DiarizationSettings(backend=diarization),
    )


def plan(card_gib: float, config: dict[str, Any] | None, workers: int = 1, **settings: Any) -> Plan:
    return plan_for(engines(**settings), int(card_gib * GIB), llm_config=config, workers=workers)


def refusal(p: Plan) -> str:
    with pytest.raises(EngineLoadError) as caught:
        p.check()
    return str(caught.value)


# -- the estimator ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [(LLAMA_8B, 8.0e9), (LLAMA_70B, 70.6e9), (QWEN_14B, 14.8e9), (QWEN_32B, 32.8e9), (MIXTRAL_8X7B, 46.7e9)],
)
def test_parameter_count_matches_the_published_size(config: dict[str, Any], expected: float) -> None:
    assert architecture(config).params() == pytest.approx(expected, rel=0.05)


def test_multimodal_text_config_is_read() -> None:
    nested = {"architectures": ["LlavaForConditionalGeneration"], "text_config": LLAMA_8B}
    assert architecture(nested).params() == architecture(LLAMA_8B).params()


def test_a_config_without_sizes_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks hidden_size"):
        architecture({"architectures": ["WhisperForConditionalGeneration"], "d_model": 1280})


def test_weight_bytes_follow_dtype_and_quantization() -> None:
    params = architecture(LLAMA_8B).params()
    bf16 = estimate_llm(LLMSettings(), LLAMA_8B)
    assert bf16.weight_bytes == 2 * params
    assert estimate_llm(LLMSettings(dtype="float32"), LLAMA_8B).weight_bytes == 4 * params
    # Only the decoder's linear layers are quantized; embeddings and lm_head (1.05e9) stay 16-bit.
    fp8 = estimate_llm(LLMSettings(), LLAMA_8B_FP8).weight_bytes
    assert fp8 == pytest.approx(6.98e9 + 2 * 1.05e9, rel=0.01)
    assert estimate_llm(LLMSettings(quantization="fp8"), LLAMA_8B).weight_bytes == fp8
    awq = estimate_llm(LLMSettings(), LLAMA_8B_AWQ).weight_bytes  # 4 bits + fp16 scale/zero per 128
    assert awq == pytest.approx(6.98e9 * 0.5 * (1 + 20 / 512) + 2 * 1.05e9, rel=0.01)
    assert 5.6e9 < awq < 5.8e9  # the published AWQ-INT4 checkpoint is 5.73 GB


def test_kv_cache_per_token() -> None:
    assert estimate_llm(LLMSettings(), LLAMA_8B).kv_per_token == 2 * 32 * 8 * 128 * 2  # 128 KiB
    assert estimate_llm(LLMSettings(), LLAMA_70B_FP8).kv_per_token == 2 * 80 * 8 * 128 * 2  # 320 KiB
    assert estimate_llm(LLMSettings(tensor_parallel_size=2), LLAMA_70B).kv_per_token == 80 * 8 * 128 * 2


def test_max_model_len_zero_means_the_models_own() -> None:
    est = estimate_llm(LLMSettings(max_model_len=0), LLAMA_8B)
    assert est.max_model_len == 131072 and est.seqs == 1


def test_whisper_by_size_and_compute_type() -> None:
    fp16, workspace, _ = whisper_bytes(STTSettings(model="large-v3", compute_type="float16"))
    int8, same, _ = whisper_bytes(STTSettings(model="Systran/faster-whisper-large-v3", compute_type="int8_float16"))
    assert fp16 == 2 * int8 == int(3.1e9) and workspace == same
    turbo, _, _ = whisper_bytes(STTSettings(model="large-v3-turbo", compute_type="float16"))
    assert turbo == int(2 * 809e6)
    assert whisper_bytes(STTSettings(model="auto"))[0] == fp16  # auto = large-v3 on a GPU
    _, batch16, _ = whisper_bytes(STTSettings(model="large-v3", batch_size=16))
    assert 3 * GIB < batch16 < 5 * GIB  # ≈0.2 GiB per batch item at beam 5


# -- the README's documented plans (README "Run modes and GPU memory") ------------------------

DOCUMENTED = [
    pytest.param(
        24,
        LLAMA_8B_AWQ,
        {"util": 0.55, "max_model_len": 16384, "max_num_seqs": 2, "compute_type": "int8_float16"},
        id="24GB-8B-AWQ",
    ),
    pytest.param(
        24,
        LLAMA_8B_FP8,
        {"util": 0.55, "max_model_len": 8192, "max_num_seqs": 2, "compute_type": "int8_float16"},
        id="24GB-8B-FP8",
    ),
    pytest.param(48, QWEN_14B, {"util": 0.70, "max_model_len": 8192, "max_num_seqs": 2}, id="48GB-14B-FP16"),
    pytest.param(48, QWEN_32B_AWQ, {"util": 0.70, "max_model_len": 16384, "max_num_seqs": 2}, id="48GB-32B-AWQ"),
    pytest.param(
        80,
        QWEN_32B,
        {"util": 0.75, "max_model_len": 16384, "max_num_seqs": 4, "quantization": "fp8", "batch_size": 8},
        id="80GB-32B-FP8",
    ),
    pytest.param(
        141,
        LLAMA_70B_FP8,
        {"util": 0.80, "max_model_len": 32768, "max_num_seqs": 3, "batch_size": 16},
        id="141GB-70B-FP8",
    ),
]


@pytest.mark.parametrize(("card", "config", "settings"), DOCUMENTED)
def test_documented_plan_is_accepted(card: int, config: dict[str, Any], settings: dict[str, Any]) -> None:
    p = plan(card, config, **settings)
    p.check()
    assert p.fits and p.llm is not None
    assert p.kv_tokens >= p.llm.max_model_len * p.llm.seqs
    assert p.beside_needed <= p.beside_share
    parts = {(r.part, r.process) for r in p.rows}
    assert ("pyannote", "API") in parts and ("pyannote", "worker") in parts
    assert ("Whisper large-v3 weights", "worker") in parts and ("KV cache", "vLLM") in parts


@pytest.mark.parametrize(
    ("mib", "card", "config", "settings"),
    [
        (24564, *DOCUMENTED[0].values),
        (49140, *DOCUMENTED[2].values),
        (81559, *DOCUMENTED[4].values),
        (143771, *DOCUMENTED[5].values),
    ],
    ids=["RTX-4090", "RTX-A6000", "H100-80GB", "H200"],
)
def test_documented_plan_fits_the_real_cards(
    mib: int, card: int, config: dict[str, Any], settings: dict[str, Any]
) -> None:
    """nvidia-smi's memory.total of the cards the README's rows stand for."""
    plan_for(engines(**settings), mib << 20, llm_config=config).check()


def test_80gb_32b_in_fp16_does_not_fit() -> None:
    """The README's 80 GB row says 24–32B in FP16/FP8: a 32B in FP16 is 61 GiB of weights alone."""
    message = refusal(plan(80, QWEN_32B, util=0.75, max_model_len=16384, batch_size=8))
    assert "LEXIA_LLM_QUANTIZATION" in message and "fp8 at load" in message


# -- impossible plans are refused, naming the setting ------------------------------------------


def test_70b_fp16_on_80gb_is_refused_for_quantization() -> None:
    message = refusal(plan(80, LLAMA_70B, util=0.75, max_model_len=8192, batch_size=8))
    assert "LEXIA_LLM_QUANTIZATION" in message and "4-bit AWQ/GPTQ checkpoint" in message
    assert "weights 131." in message


def test_utilization_that_leaves_no_room_for_whisper_is_refused() -> None:
    p = plan(141, LLAMA_70B_FP8, util=0.95, max_model_len=32768, max_num_seqs=3, batch_size=16)
    message = refusal(p)
    assert "lower LEXIA_LLM_GPU_MEMORY_UTILIZATION to ≤0.88" in message
    plan(141, LLAMA_70B_FP8, util=0.88, max_model_len=32768, max_num_seqs=3, batch_size=16).check()


def test_kv_cache_that_cannot_fit_is_refused() -> None:
    p = plan(141, LLAMA_70B_FP8, util=0.80, max_model_len=131072, max_num_seqs=4, batch_size=16)
    message = refusal(p)
    assert "LEXIA_LLM_MAX_MODEL_LEN to ≤" in message and "LEXIA_LLM_MAX_NUM_SEQS to ≤1" in message
    assert p.llm is not None and p.kv_tokens // p.llm.max_model_len == 1  # one full-length sequence fits


def test_the_models_full_context_on_24gb_is_refused() -> None:
    """LEXIA_LLM_MAX_MODEL_LEN=0 takes the config's 131072 tokens: 16 GiB of KV cache for an 8B."""
    message = refusal(plan(24, LLAMA_8B_FP8, util=0.55, max_model_len=0, compute_type="int8_float16"))
    assert "131,072-token KV cache" in message and "LEXIA_LLM_MAX_MODEL_LEN to ≤" in message


def test_raising_utilization_is_suggested_when_room_is_left() -> None:
    message = refusal(plan(48, QWEN_14B, util=0.70, max_model_len=16384, max_num_seqs=2))
    assert "raise LEXIA_LLM_GPU_MEMORY_UTILIZATION to ≥0.75" in message


def test_whisper_batch_too_large_is_refused() -> None:
    message = refusal(plan(24, LLAMA_8B_AWQ, util=0.55, max_model_len=8192, batch_size=32))
    assert "LEXIA_STT_BATCH_SIZE to ≤" in message


def test_float16_whisper_beside_a_larger_share_suggests_int8() -> None:
    message = refusal(plan(24, LLAMA_8B_AWQ, util=0.60, max_model_len=8192))
    assert "LEXIA_STT_COMPUTE_TYPE=int8_float16" in message
    assert "lower LEXIA_LLM_GPU_MEMORY_UTILIZATION to ≤0.56" in message


def test_every_worker_process_loads_whisper_and_pyannote() -> None:
    one, three = plan(48, QWEN_14B, util=0.7), plan(48, QWEN_14B, util=0.7, workers=3)
    per_process = one.beside_needed // 2
    assert three.beside_needed == pytest.approx(4 * per_process, abs=4)
    message = refusal(three)
    assert "worker process" in message


# -- what is not on the card -----------------------------------------------------------------


def test_unknown_llm_config_covers_only_the_rest() -> None:
    p = plan(24, None, util=0.55)
    llm_rows = [r for r in p.rows if r.process == "vLLM"]
    assert len(llm_rows) == 1 and llm_rows[0].note == "unknown: model config not found locally"
    assert llm_rows[0].bytes == p.vllm_share
    p.check()
    message = refusal(plan(24, None, util=0.80))
    assert "LEXIA_LLM_GPU_MEMORY_UTILIZATION to ≤" in message and "unknown" in message


def test_lite_diarizer_and_disabled_llm_take_no_gpu_share() -> None:
    p = plan(24, LLAMA_8B, llm=False, diarization="lite", batch_size=8)
    assert p.vllm_share == 0 and not [r for r in p.rows if r.part == "pyannote" or r.process == "vLLM"]
    p.check()


def test_load_llm_config_reads_a_local_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_8B))
    assert load_llm_config(str(tmp_path)) == LLAMA_8B
    assert load_llm_config("lexia-test/no-such-model-anywhere") is None
    assert load_llm_config("") is None


def test_table_lists_every_part() -> None:
    table = plan(141, LLAMA_70B_FP8, util=0.8, max_model_len=32768, max_num_seqs=3, batch_size=16).table()
    assert table.startswith("| part | process | GiB | note |")
    for part in ("LLM weights", "vLLM overhead", "KV cache", "Whisper workspace", "pyannote", "CUDA context"):
        assert f"| {part}" in table
    assert "| **vLLM share** | vLLM | 112.80 |" in table


# -- bin/lexia-plan --------------------------------------------------------------------------


def _plan_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEXIA_")}
    return {**env, "LEXIA_LLM_MODEL": "meta-llama/Llama-3.1-70B-Instruct-FP8", **variables}


PLAN_141 = {
    "LEXIA_LLM_GPU_MEMORY_UTILIZATION": "0.80",
    "LEXIA_LLM_MAX_MODEL_LEN": "32768",
    "LEXIA_LLM_MAX_NUM_SEQS": "4",
    "LEXIA_STT_MODEL": "large-v3",
    "LEXIA_STT_BATCH_SIZE": "16",
}


def _run_plan(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(LLAMA_70B_FP8))
    command = [sys.executable, "-m", "lexia.engines.plan", "--env-file", str(tmp_path / "none.env")]
    return subprocess.run(
        [*command, "--llm-config", str(config), *args],
        env=_plan_env(**variables),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_cli_prints_the_141gb_plan(tmp_path: Path) -> None:
    done = _run_plan(tmp_path, "--gpu-memory", "141", **PLAN_141)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| KV cache | vLLM |" in done.stdout and "4 full sequence(s) of 32,768" in done.stdout
    assert done.stdout.rstrip().endswith("fits")


def test_cli_refuses_with_exit_1(tmp_path: Path) -> None:
    done = _run_plan(tmp_path, "--gpu-memory", "141", **{**PLAN_141, "LEXIA_LLM_GPU_MEMORY_UTILIZATION": "0.95"})
    assert done.returncode == 1
    assert "GPU memory plan refused" in done.stdout and "LEXIA_LLM_GPU_MEMORY_UTILIZATION to ≤0.88" in done.stdout


def test_cli_without_a_gpu_asks_for_the_size(tmp_path: Path) -> None:
    env = {**PLAN_141, "PATH": str(tmp_path)}  # no nvidia-smi
    done = _run_plan(tmp_path, **env)
    assert done.returncode == 2 and "--gpu-memory" in done.stderr


def test_bin_wrapper_runs_with_the_workers_option(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(LLAMA_70B_FP8))
    done = subprocess.run(
        [
            str(ROOT / "bin" / "lexia-plan"),
            "--gpu-memory",
            "141",
            "--workers",
            "2",
            "--llm-config",
            "config.json",
            "--env-file",
            str(tmp_path / "none.env"),
        ],
        env={**_plan_env(**PLAN_141), "VENV": str(Path(sys.executable).parent.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| pyannote | 2 workers | 2.00 |" in done.stdout


async def test_real_engines_on_a_gpu_are_refused_before_loading_when_the_plan_cannot_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lexia.engines import plan, registry

    monkeypatch.setattr(registry, "gpu_available", lambda: True)
    monkeypatch.setattr(plan, "detect_card_bytes", lambda: 8 * GIB)  # far too small for large-v3 twice + pyannote
    loaded: list[str] = []

    async def load_backend(kind: str, section: object) -> object:
        loaded.append(kind)
        raise AssertionError("nothing may load before the plan is checked")

    monkeypatch.setattr(registry, "load_backend", load_backend)
    settings = EngineSettings(mode="real", llm=LLMSettings(enabled=False),
                              stt=STTSettings(compute_type="float16", batch_size=16),
                              diarization=DiarizationSettings())
    with pytest.raises(EngineLoadError, match="LEXIA_"):
        async with registry.open_engines(settings):
            pass
    assert loaded == []
