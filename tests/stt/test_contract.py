"""One STT engine contract, run on FakeSTT always and on the real WhisperSTT (tiny random model,
CPU) under -m real_engines. Random weights give meaningless text: assert structure, not words."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from lexia.engines.base import Audio, Segment, STTEngine, STTOptions, Transcript
from lexia.engines.fakes import FakeSTT


@pytest.fixture(
    scope="module",
    params=[
        "fake",
        pytest.param("whisper-tiny", marks=pytest.mark.real_engines),
        pytest.param("whisper-base-batched", marks=pytest.mark.real_engines),
    ],
)
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[STTEngine]:
    if request.param == "fake":
        yield FakeSTT(segment_delay=0.01)
        return
    from lexia.engines import whisper

    # The tiny random model's batched decoding yields only empty segments, so the batched
    # pipeline (BatchedInferencePipeline, LEXIA_STT_BATCH_SIZE > 1) is checked on Whisper base.
    batched = request.param.endswith("batched")
    model_dir = request.getfixturevalue("whisper_base_dir" if batched else "tiny_whisper_dir")
    config = whisper.WhisperConfig(
        model=str(model_dir), device="cpu", compute_type="int8", cpu_threads=2, num_workers=2,
        beam_size=1, temperature_fallback=False, aliases=("whisper-1",), batch_size=4 if batched else 1,
    )
    stt = await asyncio.to_thread(whisper.build, config)
    yield stt
    await stt.aclose()


def assert_well_formed(result: Transcript, audio: Audio, engine: STTEngine) -> None:
    assert isinstance(result, Transcript)
    assert result.duration == pytest.approx(audio.duration, abs=1e-6)
    assert result.language in engine.languages()
    assert 0.0 <= result.language_probability <= 1.0
    for index, segment in enumerate(result.segments):
        assert segment.id == index and isinstance(segment.text, str)
        assert 0.0 <= segment.start <= segment.end <= audio.duration + 1e-3
        for word in segment.words:
            assert 0.0 <= word.start <= word.end <= audio.duration + 1e-3, word
            assert 0.0 <= word.probability <= 1.0
            assert isinstance(word.text, str)


async def test_info_names_an_stt_model(engine: STTEngine) -> None:
    info = engine.info()
    assert info.kind == "stt" and info.id in engine.model_ids and "whisper-1" in info.aliases
    assert "en" in engine.languages()
    await engine.check()


async def test_transcribes_with_timed_words_progress_and_segments(engine: STTEngine, speech: Audio) -> None:
    seen: list[float] = []
    streamed: list[Segment] = []
    result = await engine.transcribe(speech, STTOptions(), seen.append, streamed.append)
    assert_well_formed(result, speech, engine)
    assert result.segments, "speech gave no segment"
    assert any(s.words for s in result.segments)
    assert streamed == list(result.segments), "on_segment must see every segment, in order, before returning"
    assert seen == sorted(seen) and all(0.0 <= p <= 1.0 for p in seen) and len(seen) == len(streamed)


async def test_a_given_language_is_kept(engine: STTEngine, speech: Audio) -> None:
    result = await engine.transcribe(speech, STTOptions(language="en"))
    assert result.language == "en" and result.language_probability == 1.0
    assert_well_formed(result, speech, engine)


async def test_options_are_accepted(engine: STTEngine, speech: Audio) -> None:
    options = STTOptions(task="translate", prompt="Lexia test.", hotwords=("Lexia",), temperature=0.2)
    assert_well_formed(await engine.transcribe(speech, options), speech, engine)


async def test_short_audio_and_silence_are_fine(engine: STTEngine) -> None:
    import numpy as np

    for samples in (np.zeros(16_000 * 2, np.float32), np.zeros(800, np.float32)):
        audio = Audio(samples)
        assert_well_formed(await engine.transcribe(audio, STTOptions()), audio, engine)


async def test_concurrent_calls_all_complete(engine: STTEngine, speech: Audio) -> None:
    results = await asyncio.gather(*(engine.transcribe(speech, STTOptions(language="en")) for _ in range(3)))
    for result in results:
        assert_well_formed(result, speech, engine)


async def test_cancel_stops_at_a_segment_boundary(engine: STTEngine, speech: Audio) -> None:
    import numpy as np

    long = Audio(np.concatenate([speech.samples] * 6))
    first = asyncio.Event()
    task = asyncio.create_task(engine.transcribe(long, STTOptions(language="en"), on_segment=lambda _: first.set()))
    await asyncio.wait_for(first.wait(), 60)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 30
    # The engine is free again afterwards.
    assert_well_formed(await engine.transcribe(speech, STTOptions(language="en")), speech, engine)


async def test_fake_stt_delay_is_per_second_of_audio() -> None:
    import time

    import numpy as np

    from lexia.engines.fakes import FakeSTT

    stt = FakeSTT(delay=0.2)
    for seconds, expected in ((1.0, 0.2), (7.0, 1.4)):  # not 5 x 0.2 per segment for a 1 s clip
        started = time.perf_counter()
        await stt.transcribe(Audio(np.zeros(int(seconds * 16_000), np.float32)), STTOptions())
        assert expected - 0.05 < time.perf_counter() - started < expected + 0.25
