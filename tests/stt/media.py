"""Test media made on the fly: WAVs of every PCM kind with soundfile, compressed formats with PyAV."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf


def signal(seconds: float, rate: int = 16_000, channels: int = 1, *, silent: bool = False) -> np.ndarray:
    """A speech-like test signal (amplitude-modulated tones), float32 in [-0.5, 0.5], shape (n, channels)."""
    t = np.arange(int(seconds * rate)) / rate
    if silent:
        mono = np.zeros_like(t)
    else:
        mono = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def wav(path: Path, seconds: float = 3.0, *, rate: int = 16_000, channels: int = 1,
        subtype: str = "PCM_16", silent: bool = False) -> Path:
    """A WAV file: subtype PCM_U8, PCM_16, PCM_24, PCM_32 or FLOAT."""
    sf.write(path, signal(seconds, rate, channels, silent=silent), rate, subtype=subtype, format="WAV")
    return path


def encoded(path: Path, seconds: float = 3.0, *, codec: str = "mp3", rate: int = 44_100,
            container: str | None = None) -> Path:
    """An audio file compressed with PyAV's bundled FFmpeg (mp3, aac, libopus, flac)."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        encode_samples(out, stream, signal(seconds, rate, 1)[:, 0], rate)
    return path


def video_without_audio(path: Path, seconds: float = 1.0) -> Path:
    """An MP4 with one video stream and no audio stream."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(int(25 * seconds)):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 5 % 255, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def espeak(path: Path, text: str, voice: str = "en") -> Path:
    """Speech by Debian's espeak-ng (22.05 kHz mono 16-bit WAV)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run([exe, "-v", voice, "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    return path


def files_under(directory: Path) -> list[Path]:
    """Every regular file below a directory (none if it does not exist)."""
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def encode_samples(out: Any, stream: Any, data: np.ndarray, rate: int) -> None:
    """Encode mono float samples into an open PyAV stream (in the codec's sample format) and flush it."""
    fmt = stream.codec_context.format.name
    frame_size = stream.codec_context.frame_size or 1024
    pts = 0
    for start in range(0, len(data), frame_size):
        chunk = data[start:start + frame_size]
        if fmt.startswith("s16"):
            array = (chunk * 32767).astype(np.int16)[None, :]
        elif fmt.startswith("s32"):
            array = (chunk * 2147483647).astype(np.int32)[None, :]
        else:
            array = chunk[None, :]
        frame = av.AudioFrame.from_ndarray(array, format=fmt, layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
        pts += len(chunk)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
