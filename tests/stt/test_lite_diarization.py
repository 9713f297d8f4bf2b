"""The lite diarizer (LEXIA_DIARIZATION_BACKEND=lite) with real Whisper base, through the API.

Runs in the engines environment (`-m real_engines`) with espeak-ng: the conversations come from
benchmarks/diarization_data.py. Structure and a generous error ceiling on the easy male/female
pair only; quality figures belong to `make bench-diarization`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest

from lexia.engines.base import EngineLoadError
from lexia.engines.registry import open_engines
from lexia.settings import DiarizationSettings, EngineSettings, LLMSettings, STTSettings
from tests.conftest import bearer
from tests.harness import AppFactory, TestApp

pytestmark = pytest.mark.real_engines
ROOT = Path(__file__).resolve().parents[2]
DER_CEILING = 0.2  # the benchmark measures about 0.00 on this pair


@pytest.fixture(scope="module")
def pair() -> tuple[Path, list[tuple[str, float, float]], list[dict[str, Any]]]:
    """en-2-mf: its audio, reference turns and reference words."""
    if shutil.which("espeak-ng") is None or importlib.util.find_spec("resemblyzer") is None:
        pytest.skip("needs espeak-ng and resemblyzer (bin/install-cpu-engines)")
    import json

    from benchmarks.diarization_data import build

    folder = ROOT / "benchmarks" / "data" / "diarization"
    if not (folder / "en-2-mf.wav").exists():
        build(folder, only="en-2-mf")
    turns = []
    for line in (folder / "en-2-mf.rttm").read_text().splitlines():
        parts = line.split()
        turns.append((parts[7], float(parts[3]), float(parts[3]) + float(parts[4])))
    return folder / "en-2-mf.wav", turns, json.loads((folder / "en-2-mf.words.json").read_text())


def der(reference: list[tuple[str, float, float]], segments: list[dict[str, Any]]) -> float:
    """DER (collar 0.25 s) of API segments (ms) against reference turns (s)."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = Annotation(), Annotation()
    for i, (speaker, start, end) in enumerate(reference):
        ref[Segment(start, end), i] = speaker
    for i, seg in enumerate(segments):
        hyp[Segment(seg["start"] / 1000, seg["end"] / 1000), i] = seg["speaker"]
    return float(DiarizationErrorRate(collar=0.25)(ref, hyp))


@pytest.fixture
async def lite_api(serve_app: AppFactory, whisper_base_dir: Path) -> tuple[TestApp, str]:
    api = await serve_app(
        LEXIA_ENGINES="real", LEXIA_LLM_ENABLED="false", LEXIA_STT_MODEL=str(whisper_base_dir),
        LEXIA_STT_DEVICE="cpu", LEXIA_STT_COMPUTE_TYPE="int8", LEXIA_STT_CPU_THREADS="2",
        LEXIA_STT_TEMPERATURE_FALLBACK="false", LEXIA_DIARIZATION_BACKEND="lite",
    )
    _, secret = await api.make_key("*")
    return api, secret


async def _post(api: TestApp, secret: str, route: str, path: Path, **data: str) -> dict[str, Any]:
    content = await asyncio.to_thread(path.read_bytes)
    response = await api.client.post(route, files={"file": (path.name, content, "audio/wav")}, data=data,
                                     headers=bearer(secret))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_the_api_diarizes_transcribes_and_labels_words_with_the_lite_backend(
    lite_api: tuple[TestApp, str], pair: tuple[Path, list[tuple[str, float, float]], list[dict[str, Any]]]
) -> None:
    api, secret = lite_api
    path, reference, ref_words = pair
    assert api.services.engines.diarizer.info().id == "lexia-lite-diarization"

    body = await _post(api, secret, "/v1/diarization/sync", path)
    assert body["status"] == "completed" and body["speaker_count"] == 2
    assert 0.0 <= body["speaker_count_confidence"] <= 1.0
    assert [s["speaker"] for s in body["speakers"]] == ["A", "B"]
    assert der(reference, body["segments"]) < DER_CEILING
    rttm = await api.client.get(f"/v1/diarization/{body['id']}/rttm", headers=bearer(secret))
    assert rttm.status_code == 200 and rttm.text.count("SPEAKER ") == len(body["segments"])
    given = await _post(api, secret, "/v1/diarization/sync", path, speakers_expected="2")
    assert given["speaker_count"] == 2 and given["speaker_count_confidence"] == 1.0

    transcript = await _post(api, secret, "/v1/transcriptions/sync", path, speaker_labels="true")
    words = transcript["words"]
    assert words and {w["speaker"] for w in words} <= {"A", "B", None}
    assert {u["speaker"] for u in transcript["utterances"]} == {"A", "B"}
    assert sum(len(u["words"]) for u in transcript["utterances"]) == len(words)
    # Turn-level agreement: each reference turn's words should mostly share one label, and the two
    # speakers' majority labels differ.
    majority: dict[str, list[str]] = {}
    for word in words:
        mid = (word["start"] + word["end"]) / 2000
        owner = next((s for s, a, b in reference if a - 0.3 <= mid <= b + 0.3), None)
        if owner and word["speaker"]:
            majority.setdefault(owner, []).append(word["speaker"])
    labels = {owner: max(set(seen), key=seen.count) for owner, seen in majority.items()}
    assert len(set(labels.values())) == 2
    agree = sum(label == labels[o] for o, seen in majority.items() for label in seen) / sum(map(len, majority.values()))
    assert agree > 0.8, agree
    assert len(ref_words) > 100

    diarized = await _post(api, secret, "/v1/audio/transcriptions", path, model="whisper-1",
                           response_format="diarized_json")
    assert {s["speaker"] for s in diarized["segments"]} == {"A", "B"}
    assert all(s["start"] <= s["end"] for s in diarized["segments"])
    assert api.leftovers() == []


async def test_the_lite_backend_loads_through_the_registry_and_refuses_a_missing_weights_file(
    tmp_path: Path, pair: Any
) -> None:
    settings = EngineSettings(mode="real", llm=LLMSettings(enabled=False), stt=STTSettings(enabled=False),
                              diarization=DiarizationSettings(backend="lite"))
    async with open_engines(settings) as engines:
        assert type(engines.diarizer).__name__ == "LiteDiarizer"
    missing = DiarizationSettings(backend="lite", model=str(tmp_path / "nope.pt"))
    from lexia.engines.lite import load

    with pytest.raises(EngineLoadError, match="GE2E weights"):
        await load(missing)


async def test_one_voice_alone_is_one_speaker(pair: tuple[Path, list[tuple[str, float, float]], Any]) -> None:
    """The eigengap always separates two groups; one voice's windows must still come out as one speaker."""
    import numpy as np
    import soundfile as sf

    from lexia.engines.base import Audio, DiarizeOptions
    from lexia.engines.lite import load

    path, reference, _ = pair
    samples, rate = sf.read(str(path), dtype="float32")
    pause = np.zeros(rate // 4, dtype=np.float32)
    clip = np.concatenate([np.concatenate([samples[int(a * rate) : int(b * rate)], pause])
                           for speaker, a, b in reference if speaker == "spk1"])
    diarizer = await load(DiarizationSettings(backend="lite"))
    try:
        found = await diarizer.diarize(Audio(clip, rate), DiarizeOptions())
        assert found.turns and {t.speaker for t in found.turns} == {"SPEAKER_00"}
        two = await diarizer.diarize(Audio(samples, rate), DiarizeOptions())  # the conversation itself
        assert len({t.speaker for t in two.turns}) == 2
    finally:
        await diarizer.aclose()
