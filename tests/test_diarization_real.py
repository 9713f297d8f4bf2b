"""The diarization contract, held by every backend (FakeDiarizer, PyannoteDiarizer on a tiny
random-weight pipeline built offline, LiteDiarizer on its bundled weights), and pyannote's own
loading rules.

Run in the engines environment:
`HF_HUB_OFFLINE=1 .venv-engines/bin/python -m pytest -q -m real_engines tests/test_diarization_real.py`.
Random weights give meaningless speakers: these tests check structure, not content.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from lexia.engines.base import Audio, Diarized, DiarizeOptions, Diarizer, EngineLoadError, SpeakerTurn
from lexia.engines.fakes import FakeDiarizer
from lexia.engines.lite import LiteDiarizer
from lexia.engines.lite import load as load_lite
from lexia.engines.pyannote import PyannoteConfig, PyannoteDiarizer, load
from lexia.errors import EngineUnavailable
from lexia.settings import DiarizationSettings

pytestmark = pytest.mark.real_engines
ROOT = Path(__file__).resolve().parents[1]
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


def conversation(seconds: float) -> Audio:
    """The first seconds of the generated two-voice espeak-ng conversation (en-2-mf), else speech_like."""
    if shutil.which("espeak-ng") is None:
        return speech_like(seconds)
    from benchmarks.diarization_data import build

    folder = ROOT / "benchmarks" / "data" / "diarization"
    if not (folder / "en-2-mf.wav").exists():
        build(folder, only="en-2-mf")
    samples, _ = sf.read(str(folder / "en-2-mf.wav"), dtype="float32")
    reps = int(np.ceil(seconds * RATE / len(samples)))
    return Audio(np.tile(samples, reps)[: int(seconds * RATE)])


@pytest.fixture(scope="module", params=["fake", "pyannote", "lite"])
async def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Diarizer]:
    """Every diarization backend behind the one Protocol (the contract below holds for each)."""
    if request.param == "fake":
        yield FakeDiarizer(delay=0.05)
    elif request.param == "pyannote":
        pipeline = build_tiny_pipeline(tmp_path_factory.mktemp("tiny-pyannote"))
        tiny = PyannoteDiarizer(pipeline, PyannoteConfig(model="tiny-pyannote", device="cpu"))
        yield tiny
        await tiny.aclose()
    else:
        if importlib.util.find_spec("resemblyzer") is None:
            pytest.skip("the lite backend needs resemblyzer (bin/install-cpu-engines)")
        lite = await load_lite(DiarizationSettings(backend="lite", model="bundled"))
        yield lite
        await lite.aclose()


def assert_well_formed(turns: list[SpeakerTurn], duration: float) -> None:
    assert turns == sorted(turns, key=lambda t: t.start)
    for turn in turns:
        assert isinstance(turn, SpeakerTurn)
        assert isinstance(turn.speaker, str) and turn.speaker
        assert 0.0 <= turn.start < turn.end <= duration + 1e-6


async def test_diarizer_meets_the_protocol(engine: Diarizer) -> None:
    assert isinstance(engine, Diarizer)
    info = engine.info()
    assert info.kind == "diarization" and tuple(engine.model_ids) == (info.id,)
    served = {FakeDiarizer: "lexia-fake-diarization", PyannoteDiarizer: "tiny-pyannote", LiteDiarizer: "lexia-lite-diarization"}
    assert info.id == served[type(engine)]
    await engine.check()


async def test_turns_are_sorted_within_the_audio_and_respect_speaker_counts(engine: Diarizer) -> None:
    audio = conversation(SECONDS * 2)
    free = await engine.diarize(audio, DiarizeOptions())
    assert isinstance(free, Diarized)
    assert_well_formed(free.turns, audio.duration)
    assert free.turns  # every backend hears speech here (pyannote's random model marks it all)
    assert free.count_confidence is None or 0.0 <= free.count_confidence <= 1.0
    one = await engine.diarize(audio, DiarizeOptions(num_speakers=1))
    assert_well_formed(one.turns, audio.duration)
    assert len({t.speaker for t in one.turns}) == 1 and one.count_confidence == 1.0
    bounded = await engine.diarize(audio, DiarizeOptions(min_speakers=1, max_speakers=2))
    assert_well_formed(bounded.turns, audio.duration)
    assert len({t.speaker for t in bounded.turns}) <= 2


async def test_silence_and_empty_audio_give_well_formed_results(engine: Diarizer) -> None:
    assert (await engine.diarize(Audio(np.zeros(0, dtype=np.float32)), DiarizeOptions())).turns == []
    silence = Audio(np.zeros(int(2 * RATE), dtype=np.float32))
    assert_well_formed((await engine.diarize(silence, DiarizeOptions())).turns, silence.duration)


async def test_concurrent_calls_queue_on_one_pipeline(engine: Diarizer) -> None:
    audio = conversation(3.5)
    first, second = await asyncio.gather(
        engine.diarize(audio, DiarizeOptions(max_speakers=2)),
        engine.diarize(audio, DiarizeOptions(max_speakers=2)),
    )
    assert first == second  # same input, same weights, one at a time
    assert_well_formed(first.turns, audio.duration)


async def test_cancelling_stops_the_engine_and_frees_it(engine: Diarizer) -> None:
    long = 600.0 if isinstance(engine, LiteDiarizer) else 30.0  # still running 0.3 s in
    task = asyncio.ensure_future(engine.diarize(conversation(long), DiarizeOptions()))
    await asyncio.sleep(0.3)
    task.cancel()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.time() - started < 10  # stopped at a step, not after the whole run
    audio = conversation(3.5)
    assert_well_formed((await engine.diarize(audio, DiarizeOptions(num_speakers=1))).turns, audio.duration)


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
    with pytest.raises(EngineLoadError, match=r"LEXIA_DIARIZATION_MODEL=.*no such file or directory"):
        await load(missing)
    monkeypatch.setenv("LEXIA_MODELS_LOCK", str(tmp_path / "lock.json"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    not_pulled = DiarizationSettings(model="pyannote/speaker-diarization-community-1", device="cpu")
    with pytest.raises(EngineLoadError, match="fetch it with `bin/lexia-models pull diarization`"):
        await load(not_pulled)  # never a silent download


@pytest.mark.parametrize(("module", "heavy"), [
    ("lexia.engines.pyannote", ("torch", "pyannote", "pyannote.audio")),
    ("lexia.engines.lite", ("torch", "resemblyzer", "librosa", "faster_whisper")),
])
def test_importing_a_backend_module_loads_no_model_library(module: str, heavy: tuple[str, ...]) -> None:
    code = f"import sys, {module}\nprint([m for m in {heavy!r} if m in sys.modules])\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == "[]", done.stderr
