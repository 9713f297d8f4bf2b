"""The bad-input corpus: audio files, JSON/multipart request cases and raw HTTP header cases.

Run `python -m tests.corpus.build` from the repository root to (re)write `tests/corpus/audio/`,
`tests/corpus/json/` and `tests/corpus/headers/`; `--check` rebuilds into a temporary directory and
fails if the committed cases or the audio manifest differ from what this script makes. Everything
is deterministic (fixed signals, a seeded RNG, bit-exact muxing).

Each case carries its expectation: `status` (an int, a list of acceptable ints, or null for
"anything but a 5xx"), `code` and `param` of the error envelope (null: not checked). Audio files
carry one expectation for the sync routes and one for the async routes (`job`: the state the job
must end in).
"""

from __future__ import annotations

import argparse
import base64
import filecmp
import io
import json
import random
import re
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent
RATE = 16_000
SECONDS = 0.5

# -- audio ------------------------------------------------------------------------------------------


def _signal(seconds: float, rate: int, channels: int = 1, *, silent: bool = False) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    mono = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    # Each channel a little different, so channel handling is exercised (not one signal copied).
    return np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


def wav_data(seconds: float = SECONDS, *, rate: int = RATE, channels: int = 1, subtype: str = "PCM_16",
             silent: bool = False) -> bytes:
    """A WAV file's bytes (the time stamp libsndfile puts in the PEAK chunk of float files zeroed)."""
    buffer = io.BytesIO()
    sf.write(buffer, _signal(seconds, rate, channels, silent=silent), rate, subtype=subtype, format="WAV")
    data = bytearray(buffer.getvalue())
    peak = data.find(b"PEAK", 12, 128)
    if peak > 0:
        data[peak + 12:peak + 16] = bytes(4)  # "PEAK", size, version, then the time stamp
    return bytes(data)


def _bitexact(path: Path, fmt: str | None = None) -> Any:
    import av

    return av.open(str(path), "w", format=fmt, container_options={"fflags": "+bitexact"})


def _add_audio(out: Any, codec: str, rate: int) -> Any:
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "mono"
    stream.codec_context.options = {"flags": "+bitexact"}
    return stream


def _encode_audio(out: Any, stream: Any, seconds: float, rate: int) -> None:
    from tests.stt.media import encode_samples

    encode_samples(out, stream, _signal(seconds, rate)[:, 0], rate)


def _video_frames(out: Any, stream: Any, frames: int) -> None:
    import av

    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 20 % 255, np.uint8), format="rgb24")
        frame.pts = i
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def encoded(path: Path, codec: str = "libmp3lame", *, rate: int = 44_100, fmt: str | None = None,
            seconds: float = SECONDS) -> None:
    """A compressed audio file (PyAV's FFmpeg)."""
    with _bitexact(path, fmt) as out:
        _encode_audio(out, _add_audio(out, codec, rate), seconds, rate)


def video(path: Path, *, audio_codec: str | None, fmt: str, frames: int = 5) -> None:
    """A tiny video (a few 32x32 frames at 10 fps), with one audio track or none."""
    with _bitexact(path, fmt) as out:
        vstream = out.add_stream("mpeg4", rate=10)
        vstream.width, vstream.height, vstream.pix_fmt = 32, 32, "yuv420p"
        vstream.codec_context.options = {"flags": "+bitexact"}
        astream = _add_audio(out, audio_codec, 44_100 if audio_codec != "libopus" else 48_000) if audio_codec else None
        _video_frames(out, vstream, frames)
        if astream is not None:
            _encode_audio(out, astream, frames / 10, astream.codec_context.sample_rate)


def png() -> bytes:
    """A valid 8x8 grey PNG image (FFmpeg opens it: an image, no audio stream)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes([128] * 8) for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def claiming(seconds_claimed: float | None, real_seconds: float = SECONDS) -> bytes:
    """A 16 kHz mono 16-bit WAV holding `real_seconds` whose RIFF and data sizes claim
    `seconds_claimed` (None: 0xFFFFFFFF, the 'unknown size' of streamed WAVs)."""
    data = bytearray(wav_data(real_seconds))
    assert data[36:40] == b"data"
    size = 0xFFFFFFFF if seconds_claimed is None else int(seconds_claimed * RATE * 2)
    data[40:44] = struct.pack("<I", min(size, 0xFFFFFFFF))
    data[4:8] = struct.pack("<I", min(size + 36, 0xFFFFFFFF))
    return bytes(data)


def lying_flac(path: Path, seconds_claimed: int) -> None:
    """A 0.5 s FLAC whose STREAMINFO claims `seconds_claimed` of audio (its 36-bit sample count)."""
    encoded(path, "flac", rate=RATE, fmt="flac")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO is the first metadata block
    packed = int.from_bytes(data[18:26], "big")  # rate (20 bits), channels (3), depth (5), samples (36)
    packed = (packed & ~((1 << 36) - 1)) | (seconds_claimed * RATE)
    data[18:26] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))


def lying_mp3(path: Path, seconds_claimed: int) -> None:
    """A 0.5 s MP3 whose Xing/Info header claims `seconds_claimed` of frames."""
    encoded(path, "libmp3lame", rate=44_100)
    data = bytearray(path.read_bytes())
    tag = max(data.find(b"Xing"), data.find(b"Info"))
    assert tag > 0 and struct.unpack(">I", data[tag + 4:tag + 8])[0] & 1  # the frame count is present
    data[tag + 8:tag + 12] = struct.pack(">I", seconds_claimed * 44_100 // 1152)
    path.write_bytes(bytes(data))


def _writer(data: Callable[[], bytes]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data())


def ok(duration: float | None = SECONDS) -> dict[str, Any]:
    """Accepted: 200 on sync routes (the decoded duration within 0.05 s), `completed` as a job."""
    return {"status": 200, "duration": duration}


def refused(status: int, code: str) -> dict[str, Any]:
    """Refused at submit on every route with this status and code, `param: file`."""
    return {"status": status, "code": code, "param": "file"}


def job(state: str, error_code: str | None = None, duration: float | None = SECONDS) -> dict[str, Any]:
    """Accepted by an async route (202); the job ends in `state` (with `error_code`)."""
    return {"status": 202, "job": state, "error_code": error_code, "duration": duration}


def _async_of(sync: dict[str, Any]) -> dict[str, Any]:
    if sync["status"] == 200:
        return job("completed", duration=sync["duration"])
    return dict(sync)


# name -> (writer, expectation on sync routes, expectation on async routes or None = same as sync)
AudioCase = tuple[Callable[[Path], None], dict[str, Any], dict[str, Any] | None]


def audio_cases() -> dict[str, AudioCase]:
    """Every audio file of the corpus with its expectations."""
    cases: dict[str, AudioCase] = {
        "empty.wav": (_writer(lambda: b""), refused(415, "empty_audio"), None),
        "header-only.wav": (_writer(lambda: wav_data(0.0)), refused(415, "empty_audio"), None),
        "truncated-in-header.wav": (_writer(lambda: wav_data(1.0)[:30]), refused(415, "audio_decode_failed"), None),
        "truncated-after-header.wav": (_writer(lambda: wav_data(1.0)[:48]), refused(400, "audio_too_short"), None),
        "truncated-half.wav": (_writer(lambda: wav_data(1.0)[: 44 + RATE]), ok(0.5), None),
        "lying-mp3-named.wav": (lambda p: encoded(p, "libmp3lame"), ok(None), None),
        "lying-flac-named.m4a": (lambda p: encoded(p, "flac", rate=RATE, fmt="flac"), ok(), None),
        "lying-wav-named.mp4": (_writer(wav_data), ok(), None),
        "lying-text-named.wav": (_writer(lambda: b"this is not audio, only text\n" * 20),
                                 refused(415, "audio_decode_failed"), None),
        "lying-json-named.mp3": (_writer(lambda: b'{"audio": false}\n'), refused(415, "audio_decode_failed"), None),
        "lying-png-named.wav": (_writer(png), refused(415, "no_audio_stream"), None),
        "random-bytes.wav": (_writer(lambda: random.Random(7).randbytes(4096)), refused(415, "audio_decode_failed"),
                             None),
        "silence.wav": (_writer(lambda: wav_data(1.0, silent=True)), ok(1.0), None),
        "silence-8ch-96k.wav": (_writer(lambda: wav_data(0.15, rate=96_000, channels=8, silent=True)), ok(0.15), None),
        "pcm-u8.wav": (_writer(lambda: wav_data(subtype="PCM_U8")), ok(), None),
        "pcm-24.wav": (_writer(lambda: wav_data(subtype="PCM_24")), ok(), None),
        "pcm-32.wav": (_writer(lambda: wav_data(subtype="PCM_32")), ok(), None),
        "float32.wav": (_writer(lambda: wav_data(subtype="FLOAT")), ok(), None),
        "float64.wav": (_writer(lambda: wav_data(subtype="DOUBLE")), ok(), None),
        "pcm-24-48k-stereo.wav": (_writer(lambda: wav_data(0.25, rate=48_000, channels=2, subtype="PCM_24")),
                                  ok(0.25), None),
        "float32-44k-6ch.wav": (_writer(lambda: wav_data(0.15, rate=44_100, channels=6, subtype="FLOAT")), ok(0.15),
                                None),
        "video-with-aac.mp4": (lambda p: video(p, audio_codec="aac", fmt="mp4"), ok(None), None),
        "video-with-flac.mkv": (lambda p: video(p, audio_codec="flac", fmt="matroska"), ok(None), None),
        "video-with-opus.mkv": (lambda p: video(p, audio_codec="libopus", fmt="matroska"), ok(None), None),
        "video-only.mp4": (lambda p: video(p, audio_codec=None, fmt="mp4"), refused(415, "no_audio_stream"), None),
        "video-only.mkv": (lambda p: video(p, audio_codec=None, fmt="matroska"), refused(415, "no_audio_stream"),
                           None),
        # Headers that claim far more audio than the file holds. A WAV's RIFF sizes are bounded by
        # the file's size (FFmpeg), so the real length counts. FLAC's STREAMINFO and MP3's Xing
        # frame count are believed: over a route's limit the claim is refused at submit (413,
        # nothing decoded); under it the job decodes the real length.
        "claims-5-hours-riff.wav": (_writer(lambda: claiming(5 * 3600)), ok(), None),
        "claims-unknown-size-riff.wav": (_writer(lambda: claiming(None)), ok(), None),
        "claims-5-hours-streaminfo.flac": (lambda p: lying_flac(p, 5 * 3600), refused(413, "audio_too_long"), None),
        "claims-1-hour-streaminfo.flac": (lambda p: lying_flac(p, 3600), refused(413, "audio_too_long"),
                                          job("completed")),
        "claims-5-hours-xing.mp3": (lambda p: lying_mp3(p, 5 * 3600), refused(413, "audio_too_long"), None),
        "claims-10-minutes-xing.mp3": (lambda p: lying_mp3(p, 600), ok(None), None),
    }
    for rate in (8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 88_200, 96_000):
        cases[f"rate-{rate}.wav"] = (_writer(lambda rate=rate: wav_data(0.25, rate=rate)), ok(0.25), None)  # type: ignore[misc]
    for channels in range(1, 9):
        cases[f"channels-{channels}.wav"] = (
            _writer(lambda channels=channels: wav_data(0.25, channels=channels)), ok(0.25), None,  # type: ignore[misc]
        )
    return cases


def build_audio(folder: Path) -> dict[str, Any]:
    """Write every audio file and `manifest.json` (name -> sync and async expectations)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {}
    for name, (write, sync, asynchronous) in sorted(audio_cases().items()):
        write(folder / name)
        manifest[name] = {"sync": sync, "async": asynchronous or _async_of(sync)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


# -- JSON and multipart request cases ---------------------------------------------------------------

JSON = "application/json"
MODEL = "lexia-fake-llm"
AUDIO_URL = "http://127.0.0.1:9/a.wav"  # allow-listed in the test settings; nothing listens there
# Long repetitions are stored as placeholders: `expand` = [[placeholder, unit, count], ...].
UNITS = (b'{"a":', b'{"role":"user","content":"a"},', b'"stt",', b"[", b"]", b"}")
MIN_RUN = 400
SENTINEL = "@@VALUE@@"
DEPTH = 10_000
NEAR_LIMIT = 990  # about the interpreter's recursion limit: parsed or refused, never a 500

# route group -> (method, path, a valid body)
ROUTES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "chat": ("POST", "/v1/chat/completions",
             {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    "completions": ("POST", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 4}),
    "keys_create": ("POST", "/v1/admin/keys", {"name": "corpus", "scopes": ["stt"]}),
    "keys_patch": ("PATCH", "/v1/admin/keys/{key_id}", {"name": "corpus"}),
    "tenant_patch": ("PATCH", "/v1/admin/tenant", {"audio_retention_hours": 0}),
    "transcriptions": ("POST", "/v1/transcriptions", {"audio_url": AUDIO_URL}),
    "transcriptions_sync": ("POST", "/v1/transcriptions/sync", {"audio_url": AUDIO_URL}),
    "diarization": ("POST", "/v1/diarization", {"audio_url": AUDIO_URL}),
    "diarization_sync": ("POST", "/v1/diarization/sync", {"audio_url": AUDIO_URL}),
}
NATIVE = {"keys_create", "keys_patch", "tenant_patch", "transcriptions", "transcriptions_sync", "diarization",
          "diarization_sync"}  # Lexia-native bodies: unknown fields and NUL characters are refused
MULTIPART_ONLY = {"audio_transcriptions": "/v1/audio/transcriptions", "audio_translations": "/v1/audio/translations"}
JOB_ROUTES = {"transcriptions": "/v1/transcriptions", "transcriptions_sync": "/v1/transcriptions/sync",
              "diarization": "/v1/diarization", "diarization_sync": "/v1/diarization/sync"}


def expect(status: int | list[int] | None, code: str | None = None,
           param: str | list[str] | None = None) -> dict[str, Any]:
    return {"status": status, "code": code, "param": param}


ANY = expect(None)  # anything but a 5xx (an error must still be a 4xx in the envelope)
BAD_JSON = expect(400, "invalid_json")


def _raw(base: dict[str, Any], path: str, literal: bytes) -> bytes:
    """`base` with the field at dotted `path` replaced by a raw JSON literal (any bytes)."""
    body: Any = json.loads(json.dumps(base))
    node = body
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = SENTINEL
    else:
        node[last] = SENTINEL
    return json.dumps(body, separators=(",", ":")).encode().replace(json.dumps(SENTINEL).encode(), literal)


def _case(group: str, name: str, body: bytes, expected: dict[str, Any], *, content_type: str | None = JSON,
          route: str | None = None, method: str | None = None) -> dict[str, Any]:
    default_method, default_route, _ = ROUTES.get(group, ("POST", MULTIPART_ONLY.get(group, ""), {}))
    case: dict[str, Any] = {"id": f"{group}:{name}", "method": method or default_method,
                            "route": route or default_route, "content_type": content_type}
    body, expand = compact(body)
    try:
        case["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        case["body_b64"] = base64.b64encode(body).decode()
    if expand:
        case["expand"] = expand
    case["expect"] = expected
    return case


def compact(data: bytes) -> tuple[bytes, list[list[Any]]]:
    """`data` with every run of MIN_RUN or more repeats of one byte or one of UNITS replaced by a
    placeholder, and the expansions (see `expanded`)."""
    expand: list[list[Any]] = []

    def replace(start: int, unit: bytes) -> None:
        nonlocal data
        run = re.compile(b"(?:" + re.escape(unit) + b")+").match(data, start)
        assert run is not None
        end = run.end()
        placeholder = f"@@R{len(expand)}@@".encode()
        expand.append([placeholder.decode(), unit.decode("latin-1"), (end - start) // len(unit)])
        data = data[:start] + placeholder + data[end:]

    for unit in UNITS:
        while (start := data.find(unit * MIN_RUN)) >= 0:
            replace(start, unit)
    while match := re.search(rb"(.)\1{%d}" % (MIN_RUN - 1), data, re.DOTALL):
        replace(match.start(), match.group(1))
    return data, expand


def expanded(data: bytes, expand: list[list[Any]]) -> bytes:
    """Undo `compact`."""
    for placeholder, unit, count in reversed(expand):
        data = data.replace(placeholder.encode(), unit.encode("latin-1") * count, 1)
    return data


def _deep(kind: str, depth: int) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _body_level(group: str) -> Iterator[dict[str, Any]]:
    """Cases about the body as a whole: syntax, encoding, size, nesting, content type."""
    _, _, base = ROUTES[group]
    valid = json.dumps(base).encode()
    nonobject = expect(422, "validation_error")
    yield _case(group, "empty-body", b"", BAD_JSON)
    yield _case(group, "whitespace-body", b" \r\n\t ", BAD_JSON)
    for literal in (b"null", b"[]", b"123", b'"text"', b"true"):
        yield _case(group, f"top-level-{literal.decode().strip(chr(34))}", literal, nonobject)
    yield _case(group, "trailing-garbage", valid + b"x", BAD_JSON)
    yield _case(group, "two-objects", valid + valid, BAD_JSON)
    yield _case(group, "truncated", valid[:-1], BAD_JSON)
    yield _case(group, "utf8-bom", b"\xef\xbb\xbf" + valid, BAD_JSON)
    yield _case(group, "utf16-body", json.dumps(base).encode("utf-16"), BAD_JSON)
    yield _case(group, "single-quotes", valid.replace(b'"', b"'"), BAD_JSON)
    yield _case(group, "comment", b"/* c */" + valid, BAD_JSON)
    yield _case(group, "nan-literal", valid[:-1] + b',"zz":NaN}', BAD_JSON)
    yield _case(group, "infinity-literal", valid[:-1] + b',"zz":Infinity}', BAD_JSON)
    yield _case(group, "raw-nul-byte-in-string", valid[:-1] + b',"zz":"a\x00b"}', BAD_JSON)
    yield _case(group, "raw-control-char-in-string", valid[:-1] + b',"zz":"a\x01b"}', BAD_JSON)
    # The OpenAI routes ignore unknown fields without reading their text (msgspec skips them), so
    # bytes that are not UTF-8 inside an ignored field are tolerated there; anywhere else: 400.
    ignored_text = BAD_JSON if group in NATIVE else ANY
    yield _case(group, "invalid-utf8-in-ignored-string", valid[:-1] + b',"zz":"\xff\xfe"}', ignored_text)
    yield _case(group, "overlong-utf8-in-ignored-string", valid[:-1] + b',"zz":"\xc0\xaf"}', ignored_text)
    yield _case(group, "utf8-surrogate-in-ignored-string", valid[:-1] + b',"zz":"\xed\xa0\x80"}', ignored_text)
    text_field = next((k for k, v in base.items() if isinstance(v, str)), None)
    if text_field is not None:
        for name, raw in (("invalid-utf8", b"\xff\xfe"), ("overlong-utf8", b"\xc0\xaf"),
                          ("utf8-surrogate", b"\xed\xa0\x80"), ("truncated-utf8", "\u00e9".encode()[:1])):
            yield _case(group, f"{name}-in-{text_field}", _raw(base, text_field, b'"a' + raw + b'"'), BAD_JSON)
    yield _case(group, "lone-surrogate-escape", valid[:-1] + b',"zz":"\\ud800"}', BAD_JSON)
    yield _case(group, "invalid-utf8-in-ignored-key", valid[:-1] + b',"\xff":1}', ignored_text)
    for kind in ("array", "object"):
        # Refused as unparseable (400), or as the wrong type before the depth matters (422).
        yield _case(group, f"top-level-{kind}-nested-{DEPTH}", _deep(kind, DEPTH), expect([400, 422]))
        yield _case(group, f"field-{kind}-nested-{DEPTH}", valid[:-1] + b',"zz":' + _deep(kind, DEPTH) + b"}",
                    BAD_JSON)
        yield _case(group, f"field-{kind}-nested-{NEAR_LIMIT}", valid[:-1] + b',"zz":' + _deep(kind, NEAR_LIMIT) + b"}",
                    ANY)
    yield _case(group, "over-max-json-bytes", valid[:-1] + b',"zz":"' + b"a" * ((16 << 20) + 1) + b'"}',
                expect(413, "request_too_large"))
    yield _case(group, "content-type-text-plain", valid, expect(415, "unsupported_content_type"),
                content_type="text/plain")
    yield _case(group, "content-type-missing", valid, expect(415, "unsupported_content_type"), content_type=None)
    yield _case(group, "content-type-form-urlencoded", b"a=1&b=2", expect(415, "unsupported_content_type"),
                content_type="application/x-www-form-urlencoded")
    yield _case(group, "content-type-json-latin1-charset", valid, ANY, content_type="application/json; charset=latin-1")
    yield _case(group, "content-type-vendor-json", valid, ANY, content_type="application/vnd.lexia+json")
    # Duplicate keys: JSON leaves them to the parser (the last one wins here); never a 500.
    first_key = next(iter(base))
    dup = b"{" + json.dumps(first_key).encode() + b":" + json.dumps(base[first_key]).encode() + b"," + valid[1:]
    yield _case(group, "duplicate-key", dup, ANY)
    yield _case(group, "unknown-field-nul-name", valid[:-1] + b',"z\\u0000z":1}',
                expect(422, "unknown_parameter") if group in NATIVE else ANY)


INF = float("inf")
# Field specs: dotted path -> (type, (min, max) or None, whether null is allowed, maximum string length)
Spec = tuple[str, tuple[float, float] | None, bool, int | None]

FIELDS: dict[str, dict[str, Spec]] = {
    "chat": {
        "model": ("str", None, False, None),
        "messages": ("messages", None, False, None),
        "messages.0.content": ("text", None, True, None),
        "messages.0.role": ("role", None, False, None),
        "max_tokens": ("int", (1, INF), True, None),  # too large: 400 context_length_exceeded
        "max_completion_tokens": ("int", (1, INF), True, None),
        "temperature": ("float", (0, 2), True, None),
        "top_p": ("float", (0, 1), True, None),
        "presence_penalty": ("float", (-2, 2), True, None),
        "frequency_penalty": ("float", (-2, 2), True, None),
        "n": ("int", (1, 8), True, None),
        "top_logprobs": ("int", (0, 20), True, None),
        "seed": ("int", (-(2**63), 2**63 - 1), True, None),  # int64, as vLLM's own OpenAI server
        "top_k": ("int", (-1, INF), True, None),  # the engine clamps it to the vocabulary
        "min_p": ("float", (0, 1), True, None),
        "repetition_penalty": ("float", (1e-9, 2), True, None),
        "min_tokens": ("int", (0, 4), True, None),
        "stop": ("stop", None, True, None),
        "user": ("text", None, True, None),
        "stream": ("bool", None, True, None),
    },
    "completions": {
        "model": ("str", None, False, None),
        "prompt": ("prompt", None, True, None),
        "max_tokens": ("int", (1, INF), True, None),
        "temperature": ("float", (0, 2), True, None),
        "top_p": ("float", (0, 1), True, None),
        "n": ("int", (1, 8), True, None),
        "logprobs": ("int", (0, 5), True, None),
        "echo": ("bool", None, True, None),
        "seed": ("int", (-(2**63), 2**63 - 1), True, None),
    },
    "keys_create": {
        "name": ("str", None, False, 100),
        "scopes": ("scopes", None, False, None),
        "limits.requests_per_minute": ("int", (0, 2_000_000_000), True, None),
        "limits.tokens_per_minute": ("int", (0, 2_000_000_000), True, None),
        "limits.audio_seconds_per_hour": ("int", (0, 2_000_000_000), True, None),
        "limits.max_concurrent_jobs": ("int", (0, 2_000_000_000), True, None),
        "expires_at": ("date", None, True, None),
    },
    "keys_patch": {
        "name": ("str", None, False, 100),
        "scopes": ("scopes", None, False, None),
        "limits.requests_per_minute": ("int", (0, 2_000_000_000), True, None),
        "expires_at": ("date", None, True, None),
    },
    "tenant_patch": {
        "audio_retention_hours": ("int", (0, 8760), True, None),
        "result_retention_days": ("int", (0, 3650), True, None),
    },
    "transcriptions": {
        "audio_url": ("url", None, True, 2048),
        "language_code": ("language", None, True, None),
        "keyterms_prompt": ("keyterms", None, True, None),
        "prompt": ("str", None, True, 1000),
        "speakers_expected": ("int", (1, 20), True, None),
        "speaker_options.min_speakers_expected": ("int", (1, 20), True, None),
        "speaker_options.max_speakers_expected": ("int", (1, 20), True, None),
        "punctuate": ("bool", None, False, None),
        "webhook_url": ("url", None, True, 2048),
        "audio_retention_hours": ("int", (0, 8760), True, None),
        "result_retention_days": ("int", (0, 3650), True, None),
        "metadata": ("metadata", None, True, None),
    },
    "diarization": {
        "audio_url": ("url", None, True, 2048),
        "speakers_expected": ("int", (1, 20), True, None),
        "num_speakers": ("int", (1, 20), True, None),
        "min_speakers": ("int", (1, 20), True, None),
        "max_speakers_expected": ("int", (1, 20), True, None),
        "audio_retention_hours": ("int", (0, 8760), True, None),
        "result_retention_days": ("int", (0, 3650), True, None),
        "metadata": ("metadata", None, True, None),
    },
}
FIELDS["transcriptions_sync"] = {k: v for k, v in FIELDS["transcriptions"].items() if k != "webhook_url"}
FIELDS["diarization_sync"] = dict(FIELDS["diarization"])

# An alias may be named as sent or under its canonical name.
PARAM_ALIASES = {"num_speakers": "speakers_expected", "min_speakers": "min_speakers_expected"}

NUMBERS: dict[str, tuple[bytes, float | None]] = {  # label -> (literal, numeric value or None: not a number)
    "1e309": (b"1e309", None),
    "-1e309": (b"-1e309", None),
    "minus-one": (b"-1", -1),
    "zero": (b"0", 0),
    "2pow63": (str(2**63).encode(), 2**63),
    "2pow64": (str(2**64).encode(), 2**64),
    "2pow70": (str(2**70).encode(), 2**70),
    "minus-2pow70": (str(-(2**70)).encode(), -(2**70)),
    "400-digits": (b"9" * 400, 10**400 - 1),
    "1e-400": (b"1e-400", 0.0),
    "one-point-five": (b"1.5", 1.5),
    "exponent-int": (b"1e2", 100.0),
    "negative-zero": (b"-0.0", 0.0),
}
WRONG_TYPES: dict[str, bytes] = {
    "string": b'"1"', "bool": b"true", "array": b"[1]", "object": b'{"a":1}', "empty-string": b'""',
}


def _number_expectation(kind: str, bounds: tuple[float, float], literal: bytes, value: float | None,
                        param: str | list[str]) -> dict[str, Any]:
    invalid = expect(422, "validation_error", param)
    if value is None:
        return invalid  # out of any representable range
    low, high = bounds
    if not low <= value <= high:
        return invalid
    if kind == "int" and (b"." in literal or b"e" in literal):
        if not float(value).is_integer():
            return invalid
        # A whole number written as a float (1e2, -0.0): JSON Schema's "integer" admits it and
        # strict decoding does not; either answer is right, an error must name the field.
        return expect(None, "validation_error", param)
    return ANY


def _field_cases(group: str) -> Iterator[dict[str, Any]]:
    _, _, base = ROUTES[group]
    native = group in NATIVE
    if group == "chat":  # free-form JSON the engine receives: nested near and far past the parser's limit
        for depth, expected in ((NEAR_LIMIT, ANY), (DEPTH, BAD_JSON)):
            deep = _deep("object", depth)
            tools = b'[{"type":"function","function":{"name":"f","parameters":' + deep + b"}}]"
            yield _case(group, f"tools.0.function.parameters=nested-{depth}", _raw(base, "tools", tools), expected)
            schema = b'{"type":"json_schema","json_schema":{"name":"x","schema":' + deep + b"}}"
            yield _case(group, f"response_format.json_schema.schema=nested-{depth}",
                        _raw(base, "response_format", schema), expected)
    for path, (kind, bounds, nullable, max_length) in FIELDS[group].items():
        param: str | list[str] = [path, PARAM_ALIASES[path]] if path in PARAM_ALIASES else path
        invalid = expect(422, "validation_error", param)
        label = path
        if kind in ("int", "float"):
            assert bounds is not None
            for name, (literal, value) in NUMBERS.items():
                yield _case(group, f"{label}={name}", _raw(base, path, literal),
                            _number_expectation(kind, bounds, literal, value, param))
            for name, literal in WRONG_TYPES.items():
                yield _case(group, f"{label}=wrong-type-{name}", _raw(base, path, literal), invalid)
        elif kind in ("str", "text", "url", "language"):
            for name, literal in {"number": b"1", "bool": b"false", "array": b'["a"]', "object": b'{"a":"b"}'}.items():
                wrong = invalid
                if path == "messages.0.content" and name == "array":  # an array of parts: part 0 is at fault
                    wrong = expect(422, "validation_error", "messages.0.content.0")
                yield _case(group, f"{label}=wrong-type-{name}", _raw(base, path, literal), wrong)
            nul = invalid if native else ANY
            if kind != "language" or native:
                yield _case(group, f"{label}=nul", _raw(base, path, b'"a\\u0000b"'), nul)
                yield _case(group, f"{label}=only-nul", _raw(base, path, b'"\\u0000"'), nul)
            yield _case(group, f"{label}=control-chars", _raw(base, path, b'"a\\u0001\\u001f\\u007fb"'), ANY)
            yield _case(group, f"{label}=rtl-and-zero-width", _raw(base, path, '"\u202e\u200bx"'.encode()), ANY)
            huge = expect(422, "validation_error", param) if max_length else ANY
            if kind == "url":
                huge = expect(422, "invalid_url", param)
            if group in ("chat", "completions") and path == "model":
                huge = expect(404, "model_not_found", "model")
            yield _case(group, f"{label}=huge-1MiB", _raw(base, path, b'"' + b"x" * (1 << 20) + b'"'), huge)
            if max_length:
                yield _case(group, f"{label}=one-over-max", _raw(base, path, json.dumps("y" * (max_length + 1)).encode()),
                            huge)
        elif kind == "bool":
            for name, literal in {"string": b'"true"', "int": b"1", "float": b"0.0", "array": b"[]"}.items():
                yield _case(group, f"{label}=wrong-type-{name}", _raw(base, path, literal), invalid)
        elif kind == "date":
            for name, literal in {
                "year-0": b'"0000-01-01T00:00:00Z"', "year-10000": b'"10000-01-01T00:00:00Z"',
                "year-9999-end": b'"9999-12-31T23:59:59.999999Z"', "garbage": b'"garbage"', "empty": b'""',
                "feb-30": b'"2031-02-30T00:00:00Z"', "hour-25": b'"2031-01-01T25:00:00Z"',
                "no-zone": b'"2031-01-01T00:00:00"', "past": b'"1970-01-01T00:00:00Z"',
                "date-only": b'"2031-01-01"', "offset-99h": b'"2031-01-01T00:00:00+99:00"',
                "unix-number": b"1924992000", "huge-number": str(2**70).encode(), "nul": b'"2031\\u0000"',
                "array": b'["2031-01-01T00:00:00Z"]',
            }.items():
                yield _case(group, f"{label}={name}", _raw(base, path, literal), invalid)
            yield _case(group, f"{label}=huge-1MiB", _raw(base, path, b'"' + b"9" * (1 << 20) + b'"'), invalid)
        elif kind == "scopes":
            for name, literal in {"empty": b"[]", "string": b'"stt"', "nested": b'[["stt"]]', "number": b"[1]",
                                  "nul": b'["st\\u0000t"]', "unknown": b'["nope"]',
                                  "huge-list": b"[" + b'"stt",' * 20_000 + b'"stt"]'}.items():
                yield _case(group, f"{label}={name}", _raw(base, path, literal),
                            ANY if name == "huge-list" else expect(422, "validation_error"))
        elif kind == "metadata":
            for name, (literal, param_of) in {
                "array": (b'["a"]', "metadata"), "string": (b'"a"', "metadata"),
                "int-value": (b'{"a":1}', "metadata"), "nested": (b'{"a":{"b":"c"}}', "metadata"),
                "long-key": (json.dumps({"k" * 65: "v"}).encode(), "metadata"),
                "long-value": (json.dumps({"k": "v" * 513}).encode(), "metadata"),
                "17-keys": (json.dumps({f"k{i}": "v" for i in range(17)}).encode(), "metadata"),
                "nul-value": (b'{"k":"a\\u0000"}', "metadata.k"), "nul-key": (b'{"\\u0000":"v"}', "metadata"),
            }.items():
                yield _case(group, f"{label}={name}", _raw(base, path, literal), expect(422, "validation_error",
                                                                                        param_of))
        elif kind == "keyterms":
            for name, literal in {"string": b'"a"', "numbers": b"[1]", "101-items": json.dumps(["a"] * 101).encode(),
                                  "over-1000-chars": json.dumps(["a" * 600, "b" * 600]).encode(),
                                  "nul": b'["a\\u0000"]'}.items():
                param_of = "keyterms_prompt.0" if name == "nul" else None
                yield _case(group, f"{label}={name}", _raw(base, path, literal),
                            expect(422, "validation_error", param_of))
        elif kind in ("messages", "role", "stop", "prompt"):
            specials: dict[str, tuple[bytes, dict[str, Any]]] = {
                "messages": {
                    "empty": (b"[]", invalid), "object": (b'{"role":"user"}', invalid),
                    "null-item": (b"[null]", expect(422, "validation_error", "messages.0")),
                    "100k-messages": (b"[" + b'{"role":"user","content":"a"},' * 99_999
                                      + b'{"role":"user","content":"a"}]', ANY),
                },
                "role": {"unknown": (b'"wizard"', invalid), "number": (b"1", invalid), "nul": (b'"us\\u0000er"', invalid)},
                "stop": {"five": (b'["a","b","c","d","e"]', expect(422, "validation_error", "stop")),
                         "number": (b"1", invalid), "nested": (b'[["a"]]', expect(422, "validation_error"))},
                "prompt": {"empty-list": (b"[]", expect(422, "validation_error", "prompt")),
                           "numbers": (b"[1,2]", expect(422, "validation_error")),
                           "object": (b'{"a":"b"}', invalid)},
            }[kind]
            for name, (literal, expected) in specials.items():
                yield _case(group, f"{label}={name}", _raw(base, path, literal), expected)


def _multipart(fields: list[tuple[str, str]], file: bytes | None, boundary: str = "corpusboundary") -> bytes:
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode("utf-8", "surrogatepass") + b"\r\n")
    if file is not None:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                  "Content-Type: audio/wav\r\n\r\n".encode())
        out.write(file + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


MULTIPART = "multipart/form-data; boundary=corpusboundary"
FILE = "@@FILE@@"  # replaced by a valid 0.5 s WAV at load time


def _form(group: str, name: str, fields: list[tuple[str, str]], expected: dict[str, Any], *, file: bool = True,
          route: str | None = None) -> dict[str, Any]:
    body = _multipart(fields, FILE.encode() if file else None)
    return _case(group, name, body, expected, content_type=MULTIPART,
                 route=route or JOB_ROUTES.get(group) or MULTIPART_ONLY[group], method="POST")


def _multipart_cases() -> Iterator[dict[str, Any]]:
    """Multipart bodies: structure, encoding and field values (lax: every value is text)."""
    groups = [*JOB_ROUTES, *MULTIPART_ONLY]
    for group in groups:
        route = JOB_ROUTES.get(group) or MULTIPART_ONLY[group]
        model = [("model", "whisper-1")] if group in MULTIPART_ONLY else []
        malformed = expect(400, "malformed_request")
        yield _case(group, "mp-no-boundary", _multipart(model, b"RIFF"), malformed, content_type="multipart/form-data",
                    route=route, method="POST")
        yield _case(group, "mp-wrong-boundary", _multipart(model, b"RIFF", boundary="other"), malformed,
                    content_type=MULTIPART, route=route, method="POST")
        yield _case(group, "mp-empty-body", b"", malformed, content_type=MULTIPART, route=route, method="POST")
        yield _case(group, "mp-truncated", _multipart(model, FILE.encode())[:-20], malformed, content_type=MULTIPART,
                    route=route, method="POST")
        yield _case(group, "mp-garbage", random.Random(group).randbytes(2000), malformed, content_type=MULTIPART,
                    route=route, method="POST")
        yield _form(group, "mp-no-file", model, expect(422, "validation_error", "file"), file=False)
        two = _multipart(model, FILE.encode()).replace(b"--corpusboundary--", _multipart([], FILE.encode())[:-2])
        yield _case(group, "mp-two-files", two, expect(422, "validation_error", "file"), content_type=MULTIPART,
                    route=route, method="POST")
        yield _case(group, "mp-field-invalid-utf8",
                    _multipart(model, FILE.encode()).replace(b"--corpusboundary\r\nContent-Disposition: form-data;"
                                                             b' name="file"',
                                                             b'--corpusboundary\r\nContent-Disposition: form-data; '
                                                             b'name="prompt"\r\n\r\n\xff\xfe\r\n--corpusboundary\r\n'
                                                             b'Content-Disposition: form-data; name="file"'),
                    expect(400, "malformed_request", "prompt"), content_type=MULTIPART, route=route, method="POST")
        yield _form(group, "mp-field-over-64KiB", [*model, ("prompt", "p" * 70_000)],
                    expect(413, "request_too_large", "prompt"))
        yield _form(group, "mp-300-fields", [*model, *[("zz", "1")] * 300], expect(400, "malformed_request"))
        yield _form(group, "mp-field-name-nul", [*model, ("z\x00z", "1")],
                    expect(422, "unknown_parameter") if group in JOB_ROUTES else ANY)
        yield _case(group, "mp-json-body", b'{"audio_url": "' + AUDIO_URL.encode() + b'"}',
                    ANY if group in JOB_ROUTES else expect(415, "unsupported_content_type"), content_type=JSON,
                    route=route, method="POST")
    for group in JOB_ROUTES:
        native = [
            ("speakers_expected", "1e309", "speakers_expected"), ("speakers_expected", str(2**70), "speakers_expected"),
            ("speakers_expected", "-1", "speakers_expected"), ("speakers_expected", "nan", "speakers_expected"),
            ("speakers_expected", "", "speakers_expected"), ("audio_retention_hours", "8761", "audio_retention_hours"),
            ("audio_retention_hours", "1.5", "audio_retention_hours"),
            ("result_retention_days", "-1", "result_retention_days"),
            ("metadata", '{"a": 1}', "metadata"), ("metadata", "[1]", "metadata"), ("metadata", "{", "metadata"),
            ("metadata", '{"a":"\\u0000"}', "metadata.a"), ("metadata", '{"a":"b"}x', "metadata"),
            ("metadata", '{"a":' * DEPTH + '"b"' + "}" * DEPTH, "metadata"),
            ("metadata", "[" * DEPTH + "]" * DEPTH, "metadata"),
            ("webhook_url", "http://\x00/", "webhook_url"),
        ]
        if group.startswith("transcriptions"):
            native += [
                ("prompt", "a\x00b", "prompt"), ("prompt", "p" * 1001, "prompt"), ("punctuate", "maybe", "punctuate"),
                ("keyterms_prompt", "a\x00", "keyterms_prompt.0"),
                ("speaker_options", '{"min_speakers_expected": 1e309}', "speaker_options.min_speakers_expected"),
                ("speaker_options", '{"a":' * DEPTH + "1" + "}" * DEPTH, "speaker_options"),
                ("speaker_options", '{"min_speakers_expected": 5, "max_speakers_expected": 2}', None),
            ]
        else:
            native += [("num_speakers", "0", "speakers_expected"), ("min_speakers", "21", "min_speakers_expected")]
        for field, value, param in native:
            if group.endswith("_sync") and field == "webhook_url":
                continue
            label = value if len(value) <= 24 and value.isprintable() else f"{value[:8]!r}...len{len(value)}"
            yield _form(group, f"mp-{field}={label}", [(field, value)], expect(422, None, param))
    for group in MULTIPART_ONLY:
        audio_fields = [
            ("temperature", "1e309", "temperature"), ("temperature", "-1", "temperature"),
            ("temperature", "nan", "temperature"), ("temperature", "inf", "temperature"),
            ("temperature", "1.0000001", "temperature"), ("response_format", "bogus", "response_format"),
            ("response_format", "json\x00", "response_format"), ("prompt", "p" * 1001, "prompt"),
        ]
        if group == "audio_transcriptions":
            audio_fields += [
                ("timestamp_granularities[]", "bogus", "timestamp_granularities.0"),
                ("stream", "maybe", "stream"), ("speakers_expected", str(2**70), "speakers_expected"),
                ("language", "zz", "language"), ("language", "\x00", "language"),
            ]
        for field, value, param in audio_fields:
            label = value if value.isprintable() and len(value) < 24 else f"{value[:8]!r}...len{len(value)}"
            yield _form(group, f"mp-{field}={label}", [("model", "whisper-1"), (field, value)], expect(422, None, param))
        yield _form(group, "mp-model-missing", [], expect(422, "validation_error", "model"))
        yield _form(group, "mp-model-nul", [("model", "whisper\x00")], expect(404, "model_not_found", "model"))
        yield _form(group, "mp-model-60KiB", [("model", "m" * 60_000)], expect(404, "model_not_found", "model"))


def _query_cases() -> Iterator[dict[str, Any]]:
    """Query strings and path ids (no body): numbers, dates and text out of every range."""
    invalid = expect([400, 404, 422])
    tid = "tr_01JDX8Q6ZK3M4N5P6Q7R8S9T0V"
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "limit-2pow70": (f"/v1/transcriptions?limit={2**70}", expect(422, None, "limit")),
        "limit-400-digits": ("/v1/transcriptions?limit=" + "9" * 400, expect(422, None, "limit")),
        "limit-minus-one": ("/v1/jobs?limit=-1", expect(422, None, "limit")),
        "limit-float": ("/v1/jobs?limit=1.5", expect(422, None, "limit")),
        "limit-1e309": ("/v1/admin/keys?limit=1e309", expect(422, None, "limit")),
        "limit-nul": ("/v1/diarization?limit=%00", expect(422, None, "limit")),
        "limit-twice": ("/v1/jobs?limit=1&limit=2", ANY),
        "after-nul": ("/v1/transcriptions?after=%00", invalid),
        "after-8KiB": ("/v1/transcriptions?after=" + "a" * 8192, invalid),
        "after-invalid-utf8": ("/v1/jobs?after=%ff%fe", invalid),
        "status-nul": ("/v1/transcriptions?status=%00", invalid),
        "status-8KiB": ("/v1/jobs?status=" + "s" * 8192, invalid),
        "kind-nul": ("/v1/jobs?kind=%00", invalid),
        "include-revoked-maybe": ("/v1/admin/keys?include_revoked=maybe", expect(422, None, "include_revoked")),
        "deliveries-resource-nul": ("/v1/webhooks/deliveries?resource_id=%00", expect(None, "validation_error",
                                                                                 "resource_id")),
        "usage-start-year-0": ("/v1/usage?start=0000-01-01", expect(422)),
        "usage-start-year-10000": ("/v1/usage?start=10000-01-01", expect(422)),
        "usage-start-garbage": ("/v1/usage?start=garbage", expect(422)),
        "usage-start-feb-30": ("/v1/usage?start=2031-02-30", expect(422)),
        "usage-start-nul": ("/v1/usage?start=2031%0001-01", expect(422)),
        "usage-end-before-start": ("/v1/usage?start=2031-01-02&end=2031-01-01", expect(422)),
        "usage-range-over-366-days": ("/v1/usage?start=2020-01-01&end=2031-01-01", expect(422)),
        "usage-end-year-9999": ("/v1/usage?start=9999-12-01&end=9999-12-31", ANY),
        "usage-end-year-0001": ("/v1/usage?end=0001-01-01", ANY),
        "usage-range-year-0001": ("/v1/usage?start=0001-01-01&end=0001-01-02", ANY),
        "usage-key-id-nul": ("/v1/usage?key_id=%00", invalid),
        "usage-kind-bogus": ("/v1/usage?kind=bogus", expect(422)),
        "id-nul": ("/v1/transcriptions/tr_%00", expect(404, "not_found")),
        "id-8KiB": ("/v1/jobs/tr_" + "A" * 8192, expect(404, "not_found")),
        "id-invalid-utf8": ("/v1/diarization/dz_%ff", expect(404, "not_found")),
        "id-other-prefix": (f"/v1/diarization/{tid}", expect(404, "not_found")),
        "srt-chars-1e309": (f"/v1/transcriptions/{tid}/srt?chars_per_caption=1e309", invalid),
        "srt-chars-2pow70": (f"/v1/transcriptions/{tid}/srt?chars_per_caption={2**70}", invalid),
        "vtt-speaker-labels-maybe": (f"/v1/transcriptions/{tid}/vtt?speaker_labels=maybe", invalid),
    }
    for name, (route, expected) in cases.items():
        yield _case("query", name, b"", expected, content_type=None, route=route, method="GET")
    deep = _deep("object", DEPTH)
    bodyless = {  # routes that read no body, sent one anyway
        "rotate-secret-deep-json": ("POST", "/v1/webhooks/secret/rotate", deep, JSON, ANY),
        "rotate-secret-garbage": ("POST", "/v1/webhooks/secret/rotate", random.Random(1).randbytes(512), JSON, ANY),
        "rotate-secret-over-max-json": ("POST", "/v1/webhooks/secret/rotate", b"a" * ((16 << 20) + 1), JSON, ANY),
        "redeliver-garbage": ("POST", "/v1/webhooks/deliveries/whd_01JDX8R0A1B2C3D4E5F6G7H8J9/redeliver",
                              b"\xff\x00", JSON, expect(404, "not_found")),
        "models-with-deep-body": ("GET", "/v1/models", deep, JSON, ANY),
        "cancel-with-garbage": ("DELETE", f"/v1/jobs/{tid}", b"\x00" * 64, "text/plain", expect(404, "not_found")),
        "revoke-with-deep-body": ("DELETE", "/v1/admin/keys/key_01JDX7Z9Y8X7W6V5T4S3R2Q1P0", deep, JSON,
                                  expect(404, "not_found")),
    }
    for name, (method, route, body, content_type, expected) in bodyless.items():
        yield _case("query", name, body, expected, content_type=content_type, route=route, method=method)


def json_cases() -> dict[str, list[dict[str, Any]]]:
    """Every request case, by route group."""
    out: dict[str, list[dict[str, Any]]] = {}
    for group in ROUTES:
        out[group] = [*_body_level(group), *_field_cases(group)]
    out["query"] = list(_query_cases())
    for case in _multipart_cases():
        out.setdefault(case["id"].split(":", 1)[0], []).append(case)
    for group, cases in out.items():
        seen: set[str] = set()
        for case in cases:
            assert case["id"] not in seen, case["id"]
            seen.add(case["id"])
        out[group] = cases
    return out


def build_json(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Write `<group>.jsonl`, one case per line."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = json_cases()
    for group, items in cases.items():
        with (folder / f"{group}.jsonl").open("w") as out:
            for case in items:
                out.write(json.dumps(case, sort_keys=True, ensure_ascii=True) + "\n")
    return cases


# -- raw HTTP header cases --------------------------------------------------------------------------

KEY = "@@KEY@@"  # replaced by the test's API key


def _request(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def header_cases() -> list[dict[str, Any]]:
    """Raw requests (bytes) with odd or malformed headers; `expect.ok` true means a 2xx is required,
    false a 4xx in the envelope, null either."""
    auth = (b"Authorization", b"Bearer " + KEY.encode())
    job_body = json.dumps({"audio_url": AUDIO_URL}).encode()
    ctype = (b"Content-Type", b"application/json")

    def submit(*headers: tuple[bytes, bytes]) -> bytes:
        return _request("POST", "/v1/transcriptions", [auth, ctype, *headers], job_body)

    def models(*headers: tuple[bytes, bytes]) -> bytes:
        return _request("GET", "/v1/models", list(headers))

    bad = {"ok": False, "status": None, "code": None}
    bad400 = {"ok": False, "status": 400, "code": "malformed_request"}
    good = {"ok": True, "status": None, "code": None}
    either = {"ok": None, "status": None, "code": None}
    unauthorized = {"ok": False, "status": 401, "code": None}
    too_large = {"ok": False, "status": 431, "code": "request_headers_too_large"}  # over 64 KiB in all
    cases: list[tuple[str, bytes, dict[str, Any]]] = [
        ("control-baseline", submit(), {"ok": True, "status": 202, "code": None}),
        ("idempotency-key-ctl-01", submit((b"Idempotency-Key", b"abc\x01def")), bad400),
        ("idempotency-key-nul", submit((b"Idempotency-Key", b"abc\x00def")), bad400),
        ("idempotency-key-del", submit((b"Idempotency-Key", b"abc\x7fdef")), bad400),
        ("idempotency-key-tab", submit((b"Idempotency-Key", b"abc\tdef")), bad400),
        ("idempotency-key-escape", submit((b"Idempotency-Key", b"abc\x1b[31mdef")), bad400),
        ("idempotency-key-bare-cr", submit((b"Idempotency-Key", b"abc\rdef")), bad400),
        ("idempotency-key-latin1", submit((b"Idempotency-Key", b"caf\xe9")), bad400),
        ("idempotency-key-utf8", submit((b"Idempotency-Key", "clé-ü".encode())), bad400),
        ("idempotency-key-empty", submit((b"Idempotency-Key", b"")), bad400),
        ("idempotency-key-256", submit((b"Idempotency-Key", b"k" * 256)), bad400),
        ("idempotency-key-64KiB", submit((b"Idempotency-Key", b"k" * 65_536)), too_large),
        ("idempotency-key-twice", submit((b"Idempotency-Key", b"one"), (b"Idempotency-Key", b"two")), either),
        ("authorization-ctl-01", models((b"Authorization", b"Bearer lx_\x01" + KEY.encode()[3:])), bad400),
        ("authorization-nul", models((b"Authorization", b"Bearer \x00" + KEY.encode())), bad400),
        ("authorization-del", models((b"Authorization", b"Bearer " + KEY.encode() + b"\x7f")), bad),
        ("authorization-latin1", models((b"Authorization", b"Bearer lx_\xe9\xe9\xe9")), unauthorized),
        ("authorization-64KiB", models((b"Authorization", b"Bearer lx_" + b"A" * 65_536)), too_large),
        ("authorization-empty", models((b"Authorization", b"")), unauthorized),
        ("authorization-bearer-only", models((b"Authorization", b"Bearer")), unauthorized),
        ("authorization-twice", models((b"Authorization", b"Bearer lx_" + b"A" * 43), auth), either),
        ("x-api-key-ctl", models((b"x-api-key", b"lx_\x02" + KEY.encode()[3:])), bad400),
        ("request-id-ctl-01", models(auth, (b"X-Request-ID", b"req\x01id")), bad400),
        ("request-id-nul", models(auth, (b"X-Request-ID", b"req\x00id")), bad400),
        ("request-id-latin1", models(auth, (b"X-Request-ID", b"req-\xe9")), good),
        ("request-id-space", models(auth, (b"X-Request-ID", b"req id")), good),
        ("request-id-129", models(auth, (b"X-Request-ID", b"r" * 129)), good),
        ("request-id-64KiB", models(auth, (b"X-Request-ID", b"r" * 65_536)), too_large),
        ("request-id-log-injection", models(auth, (b"X-Request-ID", b'a", "level": "ERROR')), good),
        ("custom-header-64KiB", models(auth, (b"X-Pad", b"p" * 65_536)), too_large),
        ("custom-header-1MiB", models(auth, (b"X-Pad", b"p" * (1 << 20))), too_large),
        ("many-headers-2000", models(auth, *[(f"X-H{i}".encode(), b"v") for i in range(2000)]), either),
        ("header-name-space", models(auth, (b"X Bad", b"1")), bad400),
        ("header-name-ctl", models(auth, (b"X-Bad\x01", b"1")), bad400),
        ("header-name-nonascii", models(auth, (b"X-B\xe9d", b"1")), bad400),
        ("header-name-empty", models(auth, (b"", b"1")), bad400),
        ("header-no-colon", models(auth, (b"X-NoColon", b"")).replace(b"X-NoColon: ", b"X-NoColon"), bad400),
        ("header-obs-fold", models(auth, (b"X-Fold", b"a\r\n folded")), either),
        ("content-length-garbage", _request("POST", "/v1/transcriptions", [auth, ctype])
         .replace(b"Content-Length: 0", b"Content-Length: abc"), bad400),
        ("content-length-negative", _request("POST", "/v1/transcriptions", [auth, ctype])
         .replace(b"Content-Length: 0", b"Content-Length: -5"), bad400),
        ("content-length-twice-different", _request("POST", "/v1/transcriptions", [auth, ctype,
                                                    (b"Content-Length", b"5")], job_body), bad400),
        ("content-length-and-chunked", _request("POST", "/v1/transcriptions", [auth, ctype,
                                                (b"Transfer-Encoding", b"chunked")], b"0\r\n\r\n"), bad400),
        ("chunked-bad-size", _request("POST", "/v1/transcriptions", [auth, ctype, (b"Transfer-Encoding", b"chunked")])
         .replace(b"Content-Length: 0\r\n", b"") + b"zz\r\nabc\r\n0\r\n\r\n", bad400),
        ("request-line-garbage", b"GARBAGE\r\n\r\n", bad400),
        ("request-line-bad-method", b"G\x01T /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", bad400),
        ("request-line-bad-version", b"GET /v1/models HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n", either),
        ("request-target-ctl", b"GET /v1/mo\x01dels HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", bad400),
        ("request-target-nonascii", b"GET /v1/mod\xe9ls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", bad),
        ("request-target-64KiB", b"GET /v1/models?" + b"q" * 65_536 + b" HTTP/1.1\r\nHost: x\r\n"
         b"Connection: close\r\n\r\n", bad),
        ("bare-lf-line-endings", models(auth).replace(b"\r\n", b"\n"), either),
    ]
    out = []
    for name, request, expected in cases:
        raw, expand = compact(request)
        case: dict[str, Any] = {"id": name, "request_b64": base64.b64encode(raw).decode(), "expect": expected}
        if expand:
            case["expand"] = expand
        out.append(case)
    return out


def build_headers(folder: Path) -> list[dict[str, Any]]:
    """Write `cases.jsonl`."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = header_cases()
    with (folder / "cases.jsonl").open("w") as out:
        for case in cases:
            out.write(json.dumps(case, sort_keys=True) + "\n")
    return cases


# -- loading (used by tests/test_corpus.py) ---------------------------------------------------------


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def body_of(case: dict[str, Any], file: bytes | None = None) -> bytes:
    """A case's body bytes, placeholders expanded."""
    body = expanded(base64.b64decode(case["body_b64"]) if "body_b64" in case else case["body"].encode("utf-8"),
                    case.get("expand", []))
    if file is not None:
        body = body.replace(FILE.encode(), file)
    return body


def request_of(case: dict[str, Any], key: str) -> bytes:
    """A header case's raw request bytes, placeholders expanded and the API key put in."""
    return expanded(base64.b64decode(case["request_b64"]), case.get("expand", [])).replace(KEY.encode(), key.encode())


def build(root: Path = ROOT) -> None:
    """Write the whole corpus under `root`."""
    build_audio(root / "audio")
    build_json(root / "json")
    build_headers(root / "headers")


def check(root: Path = ROOT) -> list[str]:
    """Paths under `root` that differ from a fresh build (request cases and the audio manifest
    byte for byte, audio files by name: codec output may differ across FFmpeg versions)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        build(fresh)
        differ = []
        for path in sorted(fresh.rglob("*")):
            if path.is_dir():
                continue
            rel = path.relative_to(fresh)
            mine = root / rel
            if not mine.exists():
                differ.append(f"missing {rel}")
            elif path.suffix in (".jsonl", ".json") and not filecmp.cmp(path, mine, shallow=False):
                differ.append(f"differs {rel}")
        for sub in ("audio", "json", "headers"):
            for path in sorted((root / sub).glob("*")):
                if not (fresh / sub / path.name).exists():
                    differ.append(f"extra {sub}/{path.name}")
        return differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare the committed corpus with a fresh build")
    parser.add_argument("--out", type=Path, default=ROOT, help="where to write (default: tests/corpus)")
    args = parser.parse_args(argv)
    if args.check:
        differ = check(args.out)
        for line in differ:
            print(line, file=sys.stderr)
        return 1 if differ else 0
    build(args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file() and p.suffix != ".py")
    print(f"corpus written to {args.out} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
