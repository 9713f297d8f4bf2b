"""GPU memory plan: estimate every engine's share of one card before anything is loaded.

Pure Python (json and the settings only; no torch, no vllm), so `bin/lexia-plan` and the tests run
anywhere. The rule the plan checks:

- vLLM takes `LEXIA_LLM_GPU_MEMORY_UTILIZATION × card` at start-up. Inside that share go the weights,
  vLLM's overhead and the KV cache, which must hold `LEXIA_LLM_MAX_MODEL_LEN` tokens for each of
  `LEXIA_LLM_MAX_NUM_SEQS` sequences (one when 0; the plan reports how many full-length ones fit).
- Everything else must fit in the remaining `(1 − utilization) × card`: a CUDA context, Whisper
  (weights + workspace) and pyannote in every process that loads them. The API process loads all
  three engine kinds (vLLM's engine core is its child, counted in the vLLM share); each worker
  process loads Whisper and pyannote again.

Constants and formulas (GiB = 2**30 bytes; card sizes are GiB as nvidia-smi reports them):

- LLM parameters (gated-MLP decoder: Llama, Qwen, Mistral, Gemma; MoE via num_experts /
  num_local_experts / n_routed_experts and moe_intermediate_size, shared experts and dense first
  layers; multi-head latent attention and sliding windows are not modelled, which overestimates
  their KV cache): embeddings + per layer (q, k, v, o + 3 MLP matrices + 2 norms) + lm_head unless
  tied + a vision tower when the config has one. Quantization (AWQ, GPTQ, FP8, compressed-tensors,
  bitsandbytes, MXFP4/NVFP4) applies to the decoder's linear layers only; embeddings, lm_head, norms,
  routers and vision towers stay in the model dtype, as the published checkpoints do. Group-wise
  integer formats add an fp16 scale and a zero point per group (4-bit, group 128: +3.9 %).
- KV cache per token = 2 × layers × kv_heads × head_dim × dtype bytes (2 for fp16/bf16 and for
  quantized weights, 4 for fp32), divided by the tensor-parallel size.
- vLLM overhead = 1 GiB (engine-core CUDA context + non-torch allocations) + 0.5 GiB CUDA graphs
  (0 with LEXIA_LLM_ENFORCE_EAGER) + the profiling run's activations, 8192 tokens × (3 × active MLP
  width + 4 × hidden) × 2 bytes + sampler logits, sequences (256 when unset) × vocab × 4 bytes × 2.
  For Llama-3.1-8B that is 2.65 GiB, for a 70B 3.56 GiB (the order of the activation peak and graph
  pool vLLM's start-up log reports for such models; not measured here). The share is counted whole
  even where a vLLM version captures graphs outside it. max_model_len 0 = the config's
  max_position_embeddings (2048 when absent, as vLLM).
- Whisper (CTranslate2): parameters by size × compute-type bytes (float32 4, float16/bfloat16 2,
  int8* 1); weights are shared by CTranslate2's workers in a process. Workspace = 0.65 GiB +
  num_workers × batch × (0.11 GiB + beam × 0.02 GiB), the per-item part scaled by model width (and
  decoder depth for the beam part). Calibrated on faster-whisper's published large-v2 benchmark
  (beam 5: 4525 MB at batch 1, 6090 MB at batch 8 in float16; 2926 / 4500 MB in int8): ≈1.42 GB
  beyond the weights at batch 1 and ≈0.21 GiB per extra batch item, less the 0.5 GiB context.
- pyannote: 1 GiB per process that loads it on the GPU; the `lite` diarizer runs on the CPU.
- CUDA context: 0.5 GiB per process that puts anything on the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lexia.engines.models import STT_AUTO
from lexia.settings import (
    LLMSettings,
    STTSettings,
)

GIB = 1 << 30
CUDA_CONTEXT_BYTES = GIB // 2
PYANNOTE_BYTES = GIB
VLLM_FIXED_BYTES = GIB
VLLM_CUDA_GRAPH_BYTES = GIB // 2
VLLM_PROFILE_TOKENS = 8192
VLLM_DEFAULT_SEQS = 256
WHISPER_BASE_WORKSPACE = int(0.65 * GIB)
WHISPER_ENCODER_PER_ITEM = 0.11 * GIB  # large width (1280); scales with d_model
WHISPER_DECODER_PER_BEAM = 0.02 * GIB  # large width and 32 decoder layers
DTYPE_BYTES = {"float16": 2, "half": 2, "bfloat16": 2, "float32": 4, "float": 4}
# Whisper size -> (parameters, d_model, decoder layers); the longest matching name wins.
WHISPER_SIZES: dict[str, tuple[float, int, int]] = {
    "tiny": (39e6, 384, 4),
    "base": (74e6, 512, 6),
    "small": (244e6, 768, 12),
    "medium": (769e6, 1024, 24),
    "large-v1": (1550e6, 1280, 32),
    "large-v2": (1550e6, 1280, 32),
    "large-v3": (1550e6, 1280, 32),
    "large": (1550e6, 1280, 32),
    "turbo": (809e6, 1280, 4),
    "large-v3-turbo": (809e6, 1280, 4),
    "distil-small.en": (166e6, 768, 2),
    "distil-medium.en": (394e6, 1024, 2),
    "distil-large-v2": (756e6, 1280, 2),
    "distil-large-v3": (756e6, 1280, 2),
    "distil-large-v3.5": (756e6, 1280, 2),
}
# LEXIA_STT_MODEL=auto (its default) on a GPU.
WHISPER_GPU_AUTO = STT_AUTO["gpu"]
_FOUR_BIT = ("awq", "gptq", "marlin", "bitsandbytes", "mxfp4", "nvfp4", "modelopt_fp4")
_EIGHT_BIT = ("fp8", "fbgemm_fp8", "ptpc_fp8", "modelopt", "experts_int8")


@dataclass(frozen=True, slots=True)
class Architecture:
    """What the memory plan needs from an LLM's config.json."""

    name: str
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    max_positions: int
    dtype: str
    quant_method: str = ""
    quant: Mapping[str, Any] = field(default_factory=dict)
    qkv_bias: bool = False
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    shared_intermediate: int = 0
    dense_layers: int = 0
    vision_params: int = 0

    def _attention(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return 2 * self.hidden * q + 2 * self.hidden * kv

    def _mlp(self, moe: bool) -> int:
        if not moe:
            return 3 * self.hidden * self.intermediate
        return 3 * self.hidden * (self.experts * self.moe_intermediate + self.shared_intermediate)

    def split_params(self) -> tuple[int, int]:
        """(parameters of the decoder's linear layers, all other parameters)."""
        moe_layers = self.layers - self.dense_layers if self.experts else 0
        linear = self.layers * self._attention()
        linear += (self.layers - moe_layers) * self._mlp(False) + moe_layers * self._mlp(True)
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        per_layer = 2 * self.hidden + bias + (self.hidden * self.experts if self.experts else 0)
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return linear, embeddings + self.layers * per_layer + self.hidden + self.vision_params

    def params(self) -> int:
        """Estimated parameter count."""
        linear, other = self.split_params()
        return linear + other

    def active_mlp_width(self) -> int:
        """MLP width one token passes through (the routed experts' and shared width for MoE)."""
        if self.experts:
            return max(1, self.experts_per_token) * self.moe_intermediate + self.shared_intermediate
        return self.intermediate


def _text_part(config: Mapping[str, Any]) -> Mapping[str, Any]:
    text = config.get("text_config")
    if isinstance(text, Mapping) and "hidden_size" in text:
        return text
    return config


def _vision_params(config: Mapping[str, Any]) -> int:
    """A rough vision-tower size: layers × (4 h² attention + 2 h × intermediate MLP)."""
    vision = config.get("vision_config")
    if not isinstance(vision, Mapping):
        return 0
    hidden = int(vision.get("hidden_size") or vision.get("embed_dim") or 0)
    layers = int(vision.get("num_hidden_layers") or vision.get("depth") or 0)
    inner = int(vision.get("intermediate_size") or 4 * hidden)
    return layers * (4 * hidden * hidden + 2 * hidden * inner)


_REQUIRED = ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "num_attention_heads")


def architecture(config: Mapping[str, Any]) -> Architecture:
    """Read an LLM's architecture from its Hugging Face config.json (ValueError if a size is missing)."""
    text = _text_part(config)
    missing = [k for k in _REQUIRED if not text.get(k)]
    if missing:
        raise ValueError(f"the LLM's config.json lacks {', '.join(missing)}")
    hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
    names = config.get("architectures") or [config.get("model_type") or "LLM"]
    experts = int(text.get("num_experts") or text.get("num_local_experts") or text.get("n_routed_experts") or 0)
    moe_inner = int(text.get("moe_intermediate_size") or (text["intermediate_size"] if experts else 0))
    shared = int(text.get("shared_expert_intermediate_size") or 0)
    shared = shared or int(text.get("n_shared_experts") or 0) * moe_inner
    quant = config.get("quantization_config") or text.get("quantization_config") or {}
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    return Architecture(
        name=str(names[0]),
        hidden=hidden,
        layers=int(text["num_hidden_layers"]),
        intermediate=int(text["intermediate_size"]),
        vocab=int(text["vocab_size"]),
        heads=heads,
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        tied=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        max_positions=int(text.get("max_position_embeddings") or 0),
        dtype=str(text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype") or "bfloat16"),
        quant_method=str(quant.get("quant_method") or ""),
        quant=quant,
        qkv_bias=bool(text.get("attention_bias") or model_type.startswith("qwen2")),
        experts=experts,
        experts_per_token=int(text.get("num_experts_per_tok") or 0),
        moe_intermediate=moe_inner,
        shared_intermediate=shared,
        dense_layers=int(text.get("first_k_dense_replace") or 0) if experts else 0,
        vision_params=_vision_params(config),
    )


def _quant_bits(method: str, quant: Mapping[str, Any]) -> float | None:
    """Stored bits per quantized weight (scales included), or None for unquantized/unknown."""
    name = method.lower().replace("-", "_")
    if not name:
        return None
    if name == "compressed_tensors":
        groups = quant.get("config_groups") or {}
        found = [g.get("weights", {}).get("num_bits") for g in groups.values() if isinstance(g, Mapping)]
        bits = max((int(b) for b in found if b), default=8)
    elif name == "bitsandbytes":
        bits = 8 if quant.get("load_in_8bit") else 4
    elif name.startswith(_FOUR_BIT):
        bits = int(quant.get("bits") or quant.get("w_bit") or 4)
    elif name.startswith(_EIGHT_BIT):
        algo = str(quant.get("quant_algo") or "")
        bits = 4 if "FP4" in algo.upper() else 8
    else:
        return None
    if name.startswith(("mxfp4", "nvfp4", "modelopt_fp4")):
        return bits + 8 / 32  # one 8-bit scale per 32 weights
    if bits >= 8 or not name.startswith(("awq", "gptq", "marlin", "compressed")):
        return float(bits)
    group = int(quant.get("group_size") or quant.get("q_group_size") or 128)
    if group <= 0:
        return float(bits)
    return bits + (16 + bits) / group  # an fp16 scale and a zero point per group


@dataclass(frozen=True, slots=True)
class LLMEstimate:
    """The LLM's part of the plan, per card."""

    arch: Architecture
    weight_label: str
    weight_bytes: int
    overhead_bytes: int
    kv_per_token: int
    max_model_len: int
    seqs: int

    @property
    def fixed_bytes(self) -> int:
        """Weights and overhead: what vLLM needs before any KV cache."""
        return self.weight_bytes + self.overhead_bytes

    @property
    def kv_needed(self) -> int:
        """KV cache for `seqs` sequences of `max_model_len` tokens."""
        return self.kv_per_token * self.max_model_len * self.seqs


def _dtype_bytes(settings: LLMSettings, arch: Architecture) -> tuple[str, int]:
    name = settings.dtype if settings.dtype not in ("", "auto") else arch.dtype
    name = {"half": "float16", "float": "float32"}.get(name, name)
    return name, DTYPE_BYTES.get(name, 2)


def _weights(settings: LLMSettings, arch: Architecture) -> tuple[int, str]:
    """Weight bytes on one card and a label such as 'awq 4-bit (+scales), rest bfloat16'."""
    dtype, size = _dtype_bytes(settings, arch)
    method = settings.quantization or arch.quant_method
    same = method.split("_")[0] == arch.quant_method.split("_")[0]
    bits = _quant_bits(method, arch.quant if same else {})
    linear, other = arch.split_params()
    tp = max(1, settings.tensor_parallel_size)
    if bits is None:
        note = f"{dtype}" + (f" (quantization {method!r} not modelled)" if method else "")
        return math.ceil((linear + other) * size / tp), note
    total = linear * bits / 8 + other * size
    return math.ceil(total / tp), f"{method} {bits:.2f} bits/weight, embeddings etc. {dtype}"


def estimate_llm(settings: LLMSettings, config: Mapping[str, Any]) -> LLMEstimate:
    """Weights, vLLM overhead and KV cache size of the configured LLM on one card."""
    return estimate_arch(settings, architecture(config))


def estimate_arch(settings: LLMSettings, arch: Architecture) -> LLMEstimate:
    """estimate_llm for an architecture already read."""
    _, size = _dtype_bytes(settings, arch)
    tp = max(1, settings.tensor_parallel_size)
    weights, label = _weights(settings, arch)
    kv_heads = max(1, math.ceil(arch.kv_heads / tp))
    kv_per_token = 2 * arch.layers * kv_heads * arch.head_dim * size
    activations = VLLM_PROFILE_TOKENS * (3 * arch.active_mlp_width() // tp + 4 * arch.hidden) * 2
    sampler = (settings.max_num_seqs or VLLM_DEFAULT_SEQS) * arch.vocab * 4 * 2
    graphs = 0 if settings.enforce_eager else VLLM_CUDA_GRAPH_BYTES
    return LLMEstimate(
        arch=arch,
        weight_label=label,
        weight_bytes=weights,
        overhead_bytes=VLLM_FIXED_BYTES + graphs + activations + sampler,
        kv_per_token=kv_per_token,
        max_model_len=settings.max_model_len or arch.max_positions or 2048,  # vLLM's fallback
        seqs=max(1, settings.max_num_seqs),
    )


def whisper_size(model: str) -> tuple[str, tuple[float, int, int], bool]:
    """(size name, (params, d_model, decoder layers), recognised) for a Whisper name or path."""
    name = model.rstrip("/").rsplit("/", 1)[-1].lower()
    if name in ("", "auto"):
        name = WHISPER_GPU_AUTO
    for key in sorted(WHISPER_SIZES, key=len, reverse=True):
        if key in name:
            return key, WHISPER_SIZES[key], True
    return "large", WHISPER_SIZES["large"], False


def whisper_bytes(stt: STTSettings) -> tuple[int, int, str]:
    """(weight bytes, workspace bytes, note) of one process's Whisper on the GPU."""
    size, (params, width, dec_layers), known = whisper_size(stt.model)
    compute = stt.compute_type.lower()
    per_param = 4 if compute == "float32" else 1 if compute.startswith("int8") else 2
    scale = width / 1280
    item = WHISPER_ENCODER_PER_ITEM * scale + stt.beam_size * WHISPER_DECODER_PER_BEAM * scale * dec_layers / 32
    streams = max(1, stt.num_workers) * max(1, stt.batch_size)
    workspace = WHISPER_BASE_WORKSPACE + math.ceil(streams * item)
    note = f"{size} {params / 1e9:.2f}e9 params × {per_param} B ({stt.compute_type})"
    note += f", batch {max(1, stt.batch_size)} × beam {stt.beam_size} × {max(1, stt.num_workers)} worker(s)"
    if not known:
        note += f"; size of {stt.model!r} not recognised, assumed large"
    return math.ceil(params * per_param), workspace, note
