"""Audio decoding with PyAV (FFmpeg's libraries, no ffmpeg binary) to 16 kHz mono float32.

Formats are detected from the content, never from a file name. Decoding follows
faster-whisper's own loader exactly (16-bit mono resampling by FFmpeg's swresample, which
averages stereo channels, then float32 in [-1, 1)), so a transcript served by Lexia equals what
faster-whisper produces when it is given the same file. Failures map to the 415 codes of
API.md §4.1 and duration limits to 413 audio_too_long. The blocking work runs in a worker
thread under a capacity limiter, never on the event loop.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt

from lexia.engines.base import Audio
from lexia.errors import AudioDecodeError, AudioTooShort, PayloadTooLarge

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.1  # as OpenAI's audio API: shorter audio is refused with 400 audio_too_short
_GROUP_SAMPLES = 500_000  # as faster_whisper.audio.decode_audio


@dataclass(frozen=True, slots=True)
class AudioProbe:
    """What the container says about its first audio stream (duration may be an estimate)."""

    format: str
    codec: str
    duration: float | None
    sample_rate: int
    channels: int


def _too_long(duration: float, max_seconds: float, param: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"audio_duration {duration:.1f} s exceeds the limit of {max_seconds:g} s",
        param=param,
        code="audio_too_long",
    )


def _open(path: Path, param: str) -> Any:
    import av

    if not path.is_file() or path.stat().st_size == 0:
        raise AudioDecodeError("The audio file is empty", param=param, code="empty_audio")
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError):
        raise AudioDecodeError(
            "The file is not a readable audio or video container", param=param, code="audio_decode_failed"
        ) from None


def _declared_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000.0
    return None


def _too_short(param: str) -> AudioTooShort:
    return AudioTooShort(
        f"The audio is too short: the minimum audio length is {MIN_SECONDS:g} seconds", param=param
    )


def _first_audio(container: Any, param: str) -> Any:
    if not container.streams.audio:
        raise AudioDecodeError("The file contains no audio stream", param=param, code="no_audio_stream")
    return container.streams.audio[0]


def _decoded_seconds(container: Any, stream: Any) -> float | None:
    """Seconds the first frames decode to, counted up to MIN_SECONDS (a header may claim more than
    the file holds); None when decoding fails first."""
    import av

    seconds = 0.0
    try:
        for frame in _valid_frames(container.decode(stream)):
            seconds += frame.samples / float(frame.sample_rate or SAMPLE_RATE)
            if seconds >= MIN_SECONDS:
                break
    except (av.error.FFmpegError, ValueError):
        return None
    return seconds


def probe(path: str | Path, *, max_seconds: float | None = None, param: str = "file") -> AudioProbe:
    """Open the container, read its first audio stream's header and decode its first 0.1 s
    (415/413 as §4.1; 400 audio_too_short below 0.1 s)."""
    with _open(Path(path), param) as container:
        stream = _first_audio(container, param)
        duration = _declared_duration(container, stream)
        info = AudioProbe(
            format=str(container.format.name),
            codec=str(stream.codec_context.name),
            duration=duration,
            sample_rate=int(stream.codec_context.sample_rate or 0),
            channels=int(stream.codec_context.channels or 0),
        )
        if duration == 0:
            raise AudioDecodeError("The audio has zero duration", param=param, code="empty_audio")
        if max_seconds is not None and duration is not None and duration > max_seconds:
            raise _too_long(duration, max_seconds, param)
        decoded = _decoded_seconds(container, stream)
        if decoded == 0:  # a stream with no samples at all, as decode_file judges it
            raise AudioDecodeError("The audio contains no samples", param=param, code="empty_audio")
        if (duration is not None and duration < MIN_SECONDS) or decoded is None or decoded < MIN_SECONDS:
            raise _too_short(param)
    return info


def _valid_frames(frames: Iterator[Any]) -> Iterator[Any]:
    import av

    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue


def _grouped(frames: Iterator[Any]) -> Iterator[Any]:
    import av

    fifo = av.audio.fifo.AudioFifo()
    for frame in frames:
        frame.pts = None
        fifo.write(frame)
        if fifo.samples >= _GROUP_SAMPLES:
            yield fifo.read()
    if fifo.samples > 0:
        yield fifo.read()


def decode_file(path: str | Path, *, max_seconds: float, param: str = "file") -> Audio:
    """Decode the first audio stream to 16 kHz mono float32, enforcing max_seconds (blocking)."""
    import av

    limit = int(max_seconds * SAMPLE_RATE)
    parts: list[npt.NDArray[np.int16]] = []
    total = 0
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    try:
        with _open(Path(path), param) as container:
            stream = _first_audio(container, param)
            declared = _declared_duration(container, stream)
            if declared is not None and declared > max_seconds:
                raise _too_long(declared, max_seconds, param)
            frames = _grouped(_valid_frames(container.decode(stream)))
            for frame in itertools.chain(frames, [None]):
                for out in resampler.resample(frame):
                    array = out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
                    total += array.size
                    if total > limit:
                        raise _too_long(total / SAMPLE_RATE, max_seconds, param)
                    parts.append(array)
    except (av.error.FFmpegError, ValueError):
        raise AudioDecodeError(
            "The audio could not be decoded", param=param, code="audio_decode_failed"
        ) from None
    finally:
        # PyAV keeps resampler buffers alive until a collection (faster-whisper issue 390).
        del resampler
        gc.collect()
    if total == 0:
        raise AudioDecodeError("The audio contains no samples", param=param, code="empty_audio")
    if total < MIN_SECONDS * SAMPLE_RATE:
        raise _too_short(param)
    samples = np.concatenate(parts).astype(np.float32) / np.float32(32768.0)
    return Audio(samples=samples, sample_rate=SAMPLE_RATE)


async def decode(
    path: str | Path,
    *,
    max_seconds: float,
    param: str = "file",
    limiter: anyio.CapacityLimiter | None = None,
) -> Audio:
    """decode_file in a worker thread."""
    return await anyio.to_thread.run_sync(
        lambda: decode_file(path, max_seconds=max_seconds, param=param), limiter=limiter
    )
