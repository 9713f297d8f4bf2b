"""The real PyannoteDiarizer on CPU with a tiny random-weight pyannote pipeline built offline.

Run in the engines environment:
`HF_HUB_OFFLINE=1 .venv-engines/bin/python -m pytest -q -m real_engines tests/test_diarization_real.py`.
Random weights give meaningless speakers: these tests check structure, not content.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lexia.engines.base import Audio, DiarizeOptions, Diarizer, EngineLoadError, SpeakerTurn
from lexia.engines.pyannote import PyannoteConfig, PyannoteDiarizer, load
from lexia.errors import EngineUnavailable
from lexia.settings import DiarizationSettings

pytestmark = pytest.mark.real_engines
SECONDS = 6.0
RATE = 16_000


def build_tiny_pipeline(workdir: Path) -> Any:
    """pyannote's SpeakerDiarization from random PyanNet, WeSpeakerResNet34, PLDA and VBx."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from pyannote.audio.core.plda import PLDA
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34
    from pyannote.audio.models.segmentation import PyanNet
    from pyannote.audio.pipelines import SpeakerDiarization

    torch.manual_seed(0)
    segmentation = PyanNet(sincnet={"stride": 10}, sample_rate=RATE, num_channels=1)
    segmentation.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=3.0,
        min_duration=3.0,
        warm_up=(0.0, 0.0),
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    segmentation.build()
    segmentation.eval()
    embedding = WeSpeakerResNet34(sample_rate=RATE, num_channels=1)
    embedding.eval()
    dim, lda = 256, 32
    rng = np.random.default_rng(0)
    np.savez(
        workdir / "xvec_transform.npz",
        mean1=rng.normal(size=dim),
        mean2=rng.normal(size=lda),
        lda=rng.normal(size=(dim, lda)),
    )
    q, _ = np.linalg.qr(rng.normal(size=(lda, lda)))
    np.savez(workdir / "plda.npz", mu=rng.normal(size=lda), tr=q, psi=np.abs(rng.normal(size=lda)) + 0.1)
    plda = PLDA(str(workdir / "xvec_transform.npz"), str(workdir / "plda.npz"), lda_dimension=lda)
    pipeline = SpeakerDiarization(
        segmentation=segmentation,
        embedding=embedding,
        plda=plda,
        clustering="VBxClustering",
        embedding_batch_size=8,
        segmentation_batch_size=8,
    )
    pipeline.instantiate(
        {"segmentation": {"min_duration_off": 0.0}, "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}}
    )
    return pipeline


def speech_like(seconds: float = SECONDS) -> Audio:
    """Two alternating 'voices' (different pitch and noise) with a short pause, as float32."""
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * RATE)) / RATE
    low = 0.4 * np.sin(2 * np.pi * 140 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))
    high = 0.3 * np.sin(2 * np.pi * 310 * t) + 0.05 * rng.standard_normal(t.size)
    samples = np.where((t // 1.5) % 2 == 0, low, high)
    samples[(t > 2.8) & (t < 3.2)] = 0.0
    return Audio(samples.astype(np.float32))


@pytest.fixture(scope="module")
async def diarizer(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PyannoteDiarizer]:
    pipeline = build_tiny_pipeline(tmp_path_factory.mktemp("tiny-pyannote"))
    engine = PyannoteDiarizer(pipeline, PyannoteConfig(model="tiny-pyannote", device="cpu"))
    yield engine
    await engine.aclose()


def assert_well_formed(turns: list[SpeakerTurn], duration: float) -> None:
    assert turns == sorted(turns, key=lambda t: t.start)
    for turn in turns:
        assert isinstance(turn, SpeakerTurn)
        assert isinstance(turn.speaker, str) and turn.speaker
        assert 0.0 <= turn.start < turn.end <= duration + 1e-6


async def test_diarizer_meets_the_protocol(diarizer: PyannoteDiarizer) -> None:
    assert isinstance(diarizer, Diarizer)
    info = diarizer.info()
    assert info.kind == "diarization"
    assert info.id == "tiny-pyannote" and tuple(diarizer.model_ids) == ("tiny-pyannote",)
    await diarizer.check()


async def test_turns_are_sorted_within_the_audio_and_respect_speaker_counts(diarizer: PyannoteDiarizer) -> None:
    audio = speech_like()
    turns = await diarizer.diarize(audio, DiarizeOptions())
    assert_well_formed(turns, audio.duration)
    assert turns  # the random segmentation model marks this signal as speech
    one = await diarizer.diarize(audio, DiarizeOptions(num_speakers=1))
    assert_well_formed(one, audio.duration)
    assert len({t.speaker for t in one}) == 1
    bounded = await diarizer.diarize(audio, DiarizeOptions(min_speakers=1, max_speakers=2))
    assert_well_formed(bounded, audio.duration)
    assert len({t.speaker for t in bounded}) <= 2


async def test_silence_and_empty_audio_give_well_formed_results(diarizer: PyannoteDiarizer) -> None:
    assert await diarizer.diarize(Audio(np.zeros(0, dtype=np.float32)), DiarizeOptions()) == []
    silence = Audio(np.zeros(int(2 * RATE), dtype=np.float32))
    assert_well_formed(await diarizer.diarize(silence, DiarizeOptions()), silence.duration)


async def test_concurrent_calls_queue_on_one_pipeline(diarizer: PyannoteDiarizer) -> None:
    audio = speech_like(3.5)
    first, second = await asyncio.gather(
        diarizer.diarize(audio, DiarizeOptions(max_speakers=2)),
        diarizer.diarize(audio, DiarizeOptions(max_speakers=2)),
    )
    assert first == second  # same input, same weights, one at a time
    assert_well_formed(first, audio.duration)


async def test_cancelling_stops_the_pipeline_and_frees_the_engine(diarizer: PyannoteDiarizer) -> None:
    task = asyncio.ensure_future(diarizer.diarize(speech_like(30.0), DiarizeOptions()))
    await asyncio.sleep(0.3)
    task.cancel()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.time() - started < 10  # stopped at a pipeline step, not after the whole run
    audio = speech_like(3.5)
    assert_well_formed(await diarizer.diarize(audio, DiarizeOptions(num_speakers=1)), audio.duration)


async def test_closed_engine_is_unavailable(tmp_path: Path) -> None:
    engine = PyannoteDiarizer(build_tiny_pipeline(tmp_path), PyannoteConfig(model=str(tmp_path), device="cpu"))
    assert engine.info().id == tmp_path.name  # a local path is served under its last part
    await engine.check()
    await engine.aclose()
    with pytest.raises(EngineUnavailable):
        await engine.check()
    with pytest.raises(EngineUnavailable):
        await engine.diarize(speech_like(1.0), DiarizeOptions())


async def test_load_reports_a_missing_pipeline_as_a_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = DiarizationSettings(model=str(tmp_path / "no-such-pipeline"), device="cpu")
    with pytest.raises(EngineLoadError, match="diarization pipeline"):
        await load(missing)


def test_importing_the_engine_module_loads_neither_torch_nor_pyannote() -> None:
    code = (
        "import sys, lexia.engines.pyannote\n"
        "print([m for m in ('torch', 'pyannote', 'pyannote.audio') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == "[]", done.stderr
