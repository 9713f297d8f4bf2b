"""The generated audio set: every broken file answers its documented code, every usable one 200.

Each file goes through POST /v1/transcriptions/sync and POST /v1/audio/transcriptions; after the
whole set the storage directory holds no file and no job row exists for a refused upload.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from lexia.audio import decode_file, probe
from lexia.db.migrations import libpq_dsn
from lexia.errors import AudioDecodeError, AudioTooShort, LexiaError
from tests.conftest import TEST_DB_URL, bearer
from tests.harness import AppFactory
from tests.stt.media import encoded, video_without_audio, wav
from tests.test_auth import assert_error


def _truncated(fraction: float) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        full = encoded(path.with_suffix(".full.mp3"), 3.0)
        data = full.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        full.unlink()
        return path

    return make


# name -> (maker, expected status, expected code or the expected decoded duration)
CASES: dict[str, tuple[Callable[[Path], Path], int, str | float]] = {
    "empty.wav": (lambda p: (p.write_bytes(b""), p)[1], 415, "empty_audio"),
    "zero-length.wav": (lambda p: wav(p, 0.0), 415, "empty_audio"),
    "text-renamed.mp3": (lambda p: (p.write_text("this is not audio at all\n" * 40), p)[1], 415, "audio_decode_failed"),
    "random-bytes.wav": (lambda p: (p.write_bytes(bytes(range(256)) * 64), p)[1], 415, "audio_decode_failed"),
    "video-only.mp4": (video_without_audio, 415, "no_audio_stream"),
    "short-50ms.wav": (lambda p: wav(p, 0.05), 400, "audio_too_short"),
    "truncated-60-bytes.wav": (lambda p: (p.write_bytes(wav(p, 2.0).read_bytes()[:60]), p)[1], 400, "audio_too_short"),
    "truncated-half.mp3": (_truncated(0.5), 200, 1.5),
    "truncated-header.mp3": (_truncated(0.01), 415, "audio_decode_failed"),
    "u8-8k.wav": (lambda p: wav(p, rate=8000, subtype="PCM_U8"), 200, 3.0),
    "s16-11k.wav": (lambda p: wav(p, rate=11025), 200, 3.0),
    "s24-44k-stereo.wav": (lambda p: wav(p, rate=44100, subtype="PCM_24", channels=2), 200, 3.0),
    "s32-32k.wav": (lambda p: wav(p, rate=32000, subtype="PCM_32"), 200, 3.0),
    "float-48k-6ch.wav": (lambda p: wav(p, rate=48000, subtype="FLOAT", channels=6), 200, 3.0),
    "silence.wav": (lambda p: wav(p, silent=True), 200, 3.0),
    "speech.mp3": (lambda p: encoded(p, codec="mp3"), 200, 3.0),
    "speech.m4a": (lambda p: encoded(p, codec="aac"), 200, 3.0),
    "speech.ogg": (lambda p: encoded(p, codec="libopus", rate=48000), 200, 3.0),
    "speech.webm": (lambda p: encoded(p, codec="libopus", rate=48000), 200, 3.0),
    "speech.flac": (lambda p: encoded(p, codec="flac", rate=16000), 200, 3.0),
    "wav-named.mp3": (wav, 200, 3.0),
}


@pytest.fixture(scope="module")
def audio_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-audio")
    return {name: make(folder / name) for name, (make, _, _) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_decoder_maps_each_file_to_its_code(audio_set: dict[str, Path], name: str) -> None:
    _, status, expected = CASES[name]
    if status == 200:
        audio = decode_file(audio_set[name], max_seconds=60)
        assert audio.sample_rate == 16_000 and audio.samples.dtype.name == "float32" and audio.samples.ndim == 1
        assert abs(audio.duration - float(expected)) < 0.1
        assert float(abs(audio.samples).max()) <= 1.0
    else:
        with pytest.raises(LexiaError) as info:
            decode_file(audio_set[name], max_seconds=60)
        assert info.value.code == expected and info.value.status == status


@pytest.mark.parametrize("name", ["short-50ms.wav", "truncated-60-bytes.wav"])
def test_probe_refuses_audio_under_a_tenth_of_a_second(audio_set: dict[str, Path], name: str) -> None:
    with pytest.raises(AudioTooShort) as info:
        probe(audio_set[name])
    assert (info.value.status, info.value.param) == (400, "file")


def test_probe_reads_headers_without_decoding(audio_set: dict[str, Path]) -> None:
    info = probe(audio_set["s24-44k-stereo.wav"])
    assert (info.format, info.codec, info.sample_rate, info.channels) == ("wav", "pcm_s24le", 44100, 2)
    assert info.duration is not None and abs(info.duration - 3.0) < 0.01
    assert probe(audio_set["speech.ogg"]).format == "ogg"
    with pytest.raises(AudioDecodeError):
        probe(audio_set["video-only.mp4"])


def test_stereo_is_the_mean_of_its_channels(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    left = np.full(16000, 0.5, np.float32)
    sf.write(tmp_path / "lr.wav", np.stack([left, -left * 0.5], axis=1), 16000, subtype="PCM_16")
    audio = decode_file(tmp_path / "lr.wav", max_seconds=10)
    assert abs(float(audio.samples[100:-100].mean()) - 0.125) < 0.002


async def test_every_file_answers_its_documented_status(serve_app: AppFactory, audio_set: dict[str, Path]) -> None:
    api = await serve_app()
    _, secret = await api.make_key("stt")
    for name, path in audio_set.items():
        _, status, expected = CASES[name]
        files = {"file": (name, path.read_bytes(), "application/octet-stream")}
        for route, data in (
            ("/v1/transcriptions/sync", {}),
            ("/v1/audio/transcriptions", {"model": "whisper-1", "response_format": "verbose_json"}),
        ):
            response = await api.client.post(route, files=files, data=data, headers=bearer(secret))
            if status == 200:
                assert response.status_code == 200, (name, route, response.text)
                duration = response.json().get("audio_duration") or response.json().get("duration")
                assert abs(duration - float(expected)) < 0.1, (name, route)
            else:
                assert_error(response, status, str(expected), "file")
            assert api.leftovers() == [], (name, route)
    with psycopg.connect(libpq_dsn(TEST_DB_URL)) as conn:
        statuses = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    assert statuses == [("completed", sum(1 for c in CASES.values() if c[1] == 200))]


@pytest.mark.parametrize("name", ["speech.mp3", "speech.m4a", "speech.ogg", "speech.flac", "s16-11k.wav"])
def test_corrupted_files_never_escape_as_other_errors(audio_set: dict[str, Path], name: str, tmp_path: Path) -> None:
    import random

    from lexia.errors import PayloadTooLarge

    rng = random.Random(name)
    original = audio_set[name].read_bytes()
    for i in range(25):
        data = bytearray(original)
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 5 == 0:
            data = data[: rng.randrange(1, len(data))]
        path = tmp_path / f"{i}-{name}"
        path.write_bytes(bytes(data))
        try:
            audio = decode_file(path, max_seconds=60)
        except (AudioDecodeError, PayloadTooLarge, AudioTooShort) as exc:
            assert exc.status in (400, 413, 415)
        else:
            assert audio.samples.ndim == 1 and audio.duration <= 60
