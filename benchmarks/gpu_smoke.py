"""GPU smoke test (run by bin/gpu-smoke on a pod): all three real engines in one process on one card.

Prints the memory plan, each engine's load time, then times a transcription and a diarization of a
generated two-voice conversation (benchmarks/diarization_data.py, espeak-ng) and 64 concurrent
chat streams (time to first token and tokens per second, from the engine's own stream). Settings
come from the environment (bin/gpu-smoke sets the documented 141 GB plan unless overridden).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lexia.engines.base import Audio, DiarizeOptions, LLMRequest, STTOptions  # noqa: E402
from lexia.engines.plan import detect_card_bytes, load_llm_config, plan_for  # noqa: E402
from lexia.engines.registry import load_backend  # noqa: E402
from lexia.settings import environment_with_dotenv, load_settings  # noqa: E402


def conversation() -> Audio:
    from benchmarks.diarization_data import build

    folder = ROOT / "benchmarks" / "data" / "diarization"
    if not (folder / "en-2-mf.wav").exists():
        build(folder, only="en-2-mf")
    samples, rate = sf.read(str(folder / "en-2-mf.wav"), dtype="float32")
    return Audio(np.asarray(samples, dtype=np.float32), rate)


async def chat_stream(llm: object, model: str, i: int, max_tokens: int) -> tuple[float, int, float]:
    """(time to first token, completion tokens, seconds) of one streamed chat."""
    request = LLMRequest(
        request_id=f"smoke-{i}", model=model, max_tokens=max_tokens, temperature=0.7, stream=True,
        messages=[{"role": "user", "content": f"Write a short story about lighthouse number {i}."}],
    )
    started = time.perf_counter()
    first = None
    tokens = 0
    async for chunk in llm.stream(request):  # type: ignore[attr-defined]
        if chunk.text and first is None:
            first = time.perf_counter() - started
        tokens = max(tokens, chunk.completion_tokens)
    return first or 0.0, tokens, time.perf_counter() - started


async def run(streams: int, max_tokens: int) -> None:
    settings = load_settings(environment_with_dotenv()).engines
    card = detect_card_bytes()
    if card is not None:
        plan = plan_for(settings, card, llm_config=load_llm_config(settings.llm.model), workers=0)
        print(plan.table())
        plan.check()
    loaded = {}
    for kind in ("llm", "stt", "diarization"):
        started = time.perf_counter()
        loaded[kind] = await load_backend(kind, getattr(settings, kind))  # type: ignore[arg-type]
        print(f"loaded {kind}: {loaded[kind].info().id} in {time.perf_counter() - started:.1f} s", flush=True)
    audio = conversation()
    rows = []
    started = time.perf_counter()
    transcript = await loaded["stt"].transcribe(audio, STTOptions(language="en"))
    took = time.perf_counter() - started
    words = sum(len(s.words) for s in transcript.segments)
    rows.append(("transcription (Whisper)", f"{audio.duration:.1f} s audio, {words} words", took, audio.duration / took))
    started = time.perf_counter()
    diarized = await loaded["diarization"].diarize(audio, DiarizeOptions())
    took = time.perf_counter() - started
    speakers = len({t.speaker for t in diarized.turns})
    rows.append(("diarization", f"{speakers} speakers, {len(diarized.turns)} turns", took, audio.duration / took))
    model = loaded["llm"].info().id
    started = time.perf_counter()
    results = await asyncio.gather(*(chat_stream(loaded["llm"], model, i, max_tokens) for i in range(streams)))
    took = time.perf_counter() - started
    ttft = sorted(r[0] for r in results)
    total = sum(r[1] for r in results)
    rows.append((f"{streams} concurrent chat streams", f"TTFT median {statistics.median(ttft) * 1000:.0f} ms, "
                 f"p95 {ttft[int(0.95 * (len(ttft) - 1))] * 1000:.0f} ms, {total} tokens", took, total / took))
    print("\n| step | what | seconds | speed (x real time, or tokens/s for chat) |\n|---|---|---|---|")
    for step, what, seconds, speed in rows:
        print(f"| {step} | {what} | {seconds:.2f} | {speed:.1f} |")
    for engine in loaded.values():
        await engine.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    asyncio.run(run(args.streams, args.max_tokens))


if __name__ == "__main__":
    main()
