"""The lite diarizer (LEXIA_DIARIZATION_BACKEND=lite): offline, on CPU, from weights that ship on PyPI.

- **Speech regions** come from the Silero VAD model bundled with faster-whisper.
- **Speaker embeddings** come from the pretrained GE2E voice encoder bundled with `resemblyzer`
  (Apache-2.0, 17 MB, a 3-layer LSTM over 40-band mel frames), on sliding windows inside speech
  regions (LiteConfig.window_seconds / hop_seconds); a region shorter than a window is embedded
  whole.
- **Clustering and boundaries** are lexia.engines.clustering: spectral clustering with the count
  from the eigengap (bounded by the request's hints, exact when given), then frame-level
  re-segmentation with a Viterbi pass, same-speaker turns joined across short pauses, and
  overlapped speech where a second speaker's posterior stays high.

Each run takes the decoded audio in memory, runs in a worker thread under a limiter of one, and
stops at its next batch when cancelled. `LEXIA_DIARIZATION_MODEL` may name another GE2E weights
file (resemblyzer's checkpoint format); anything else uses the bundled one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt

from lexia.engines.base import Audio, Diarized, DiarizeOptions, EngineLoadError, ModelInfo, SpeakerTurn
from lexia.engines.clustering import Bounds, Resegmenter, Window, cluster, unit
from lexia.engines.threads import Stopped, run_stoppable
from lexia.errors import EngineUnavailable
from lexia.settings import DiarizationSettings

SERVED_ID = "lexia-lite-diarization"
SAMPLE_RATE = 16_000
GRID = 0.1  # seconds per re-segmentation frame
MEL_PER_GRID = 10  # the encoder's mel frames are 10 ms
BATCH = 64  # windows per encoder call (and per cancellation check)


@dataclass(frozen=True, slots=True)
class LiteConfig:
    """Tuning of the lite pipeline (the defaults are what benchmarks/diarization.py measured)."""

    window_seconds: float = 1.5
    hop_seconds: float = 0.3
    min_cluster_seconds: float = 0.9  # shorter windows are scored, not clustered
    max_cluster_windows: int = 1200  # more are subsampled evenly for the spectral step
    join_gap_seconds: float = 0.3  # one speaker's turns closer than this become one
    min_turn_seconds: float = 0.2
    merge_threshold: float = 0.90
    # Without a request's bound, the eigengap is searched up to this many speakers: a wider search
    # finds spurious gaps among the near-zero eigenvalues of sparse graphs (12 "speakers" out of 2).
    max_speakers: int = 10
    vad_threshold: float = 0.5
    reseg: Resegmenter = field(default_factory=Resegmenter)


@dataclass(frozen=True, slots=True)
class Region:
    """A speech region in grid frames (end exclusive) and in seconds."""

    first: int
    last: int
    start: float
    end: float


class LiteDiarizer:
    """Diarizer over Silero VAD + a GE2E encoder + spectral clustering (see the module docstring)."""

    def __init__(self, encoder: Any, config: LiteConfig, *, served: str = SERVED_ID) -> None:
        self._encoder: Any = encoder
        self.config = config
        self.model_ids: Sequence[str] = (served,)
        self._info = ModelInfo(id=served, kind="diarization", created=int(time.time()))
        self._limiter = anyio.CapacityLimiter(1)

    def info(self) -> ModelInfo:
        """The served pipeline."""
        return self._info

    async def diarize(self, audio: Audio, options: DiarizeOptions) -> Diarized:
        """Speaker turns sorted by start and the count's confidence; cancelling stops the run at its
        next batch."""
        await self.check()
        if len(audio.samples) == 0:
            return Diarized([], 1.0 if options.num_speakers else None)
        return await run_stoppable(self._limiter, self.run_blocking, audio, options)

    def run_blocking(self, audio: Audio, options: DiarizeOptions, stop: threading.Event) -> Diarized:
        """The whole pipeline on the calling thread (the benchmark calls it directly)."""
        if self._encoder is None:
            raise EngineUnavailable("The diarization engine is closed")
        samples = np.ascontiguousarray(audio.samples, dtype=np.float32).reshape(-1)
        regions = self._regions(samples)
        if not regions:
            return Diarized([], 1.0 if options.num_speakers else None)
        windows, embeddings = self._embed(samples, regions, stop)
        bounds = Bounds(
            exact=options.num_speakers,
            minimum=options.min_speakers or 1,
            maximum=max(options.max_speakers or self.config.max_speakers, options.min_speakers or 1),
        )
        found = cluster(self._for_clustering(windows, embeddings), bounds, merge_threshold=self.config.merge_threshold)
        similarity = unit(embeddings) @ found.centroids.T
        return Diarized(self._turns(regions, windows, similarity, found.centroids, audio.duration), found.confidence)

    # -- steps ------------------------------------------------------------------------------

    def _regions(self, samples: npt.NDArray[np.float32]) -> list[Region]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        options = VadOptions(
            threshold=self.config.vad_threshold, min_speech_duration_ms=150,
            min_silence_duration_ms=150, speech_pad_ms=30,
        )
        regions = []
        for span in get_speech_timestamps(samples, options):
            start, end = span["start"] / SAMPLE_RATE, span["end"] / SAMPLE_RATE
            first, last = int(start / GRID), max(int(start / GRID) + 1, int(np.ceil(end / GRID)))
            regions.append(Region(first, last, start, end))
        return regions

    def _embed(
        self, samples: npt.NDArray[np.float32], regions: Sequence[Region], stop: threading.Event
    ) -> tuple[list[Window], npt.NDArray[np.float64]]:
        from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

        mel = wav_to_mel_spectrogram(normalize_volume(samples, -30, increase_only=True))
        # Regions end on the 0.1 s grid, which may reach a few frames past the last mel frame.
        mel = np.pad(mel, ((0, 2 * MEL_PER_GRID), (0, 0)))
        width = max(1, round(self.config.window_seconds / GRID))
        hop = max(1, round(self.config.hop_seconds / GRID))
        windows: list[Window] = []
        for region in regions:
            if region.last - region.first <= width:
                windows.append(Window(region.first, region.last))
                continue
            starts = list(range(region.first, region.last - width + 1, hop))
            if starts[-1] != region.last - width:
                starts.append(region.last - width)
            windows.extend(Window(s, s + width) for s in starts)
        vectors = np.zeros((len(windows), 256))
        full = [i for i, w in enumerate(windows) if w.end - w.start == width]
        for chunk in (full[i : i + BATCH] for i in range(0, len(full), BATCH)):
            self._check(stop)
            batch = np.stack([mel[windows[i].start * MEL_PER_GRID : windows[i].end * MEL_PER_GRID] for i in chunk])
            vectors[chunk] = self._encode(batch)
        for i, w in enumerate(windows):
            if w.end - w.start != width:  # a short region, embedded whole
                self._check(stop)
                vectors[i] = self._encode(mel[None, w.start * MEL_PER_GRID : w.end * MEL_PER_GRID])[0]
        return windows, vectors

    def _encode(self, mels: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        import torch

        with torch.inference_mode():
            out = self._encoder(torch.from_numpy(np.ascontiguousarray(mels, dtype=np.float32)))
        return np.asarray(out.cpu().numpy(), dtype=np.float64)

    def _for_clustering(
        self, windows: Sequence[Window], embeddings: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        minimum = round(self.config.min_cluster_seconds / GRID)
        long = np.array([w.end - w.start >= minimum for w in windows])
        chosen = embeddings[long] if long.sum() >= 3 else embeddings
        if len(chosen) > self.config.max_cluster_windows:
            chosen = chosen[np.linspace(0, len(chosen) - 1, self.config.max_cluster_windows).astype(int)]
        return chosen

    def _turns(
        self,
        regions: Sequence[Region],
        windows: Sequence[Window],
        similarity: npt.NDArray[np.float64],
        centroids: npt.NDArray[np.float64],
        duration: float,
    ) -> list[SpeakerTurn]:
        reseg = self.config.reseg
        frames = max(r.last for r in regions)
        scores = reseg.scores(windows, similarity, frames)
        turns: list[tuple[int, float, float]] = []
        for region in regions:
            block = scores[region.first : region.last]
            if np.isnan(block).any():
                block = np.where(np.isnan(block), np.nanmean(block, 0) if not np.isnan(block).all() else 0.0, block)
            posteriors = reseg.posteriors(block)
            path = reseg.viterbi(posteriors)
            turns.extend(_runs(path, region))
            second = reseg.overlaps(posteriors, path, centroids)
            turns.extend(_runs(second, region, skip=-1))
        return _tidy(turns, self.config, duration)

    @staticmethod
    def _check(stop: threading.Event) -> None:
        if stop.is_set():
            raise Stopped

    async def check(self) -> None:
        """Raise EngineUnavailable when not loaded or closed."""
        if self._encoder is None:
            raise EngineUnavailable("The diarization engine is not loaded")

    async def aclose(self) -> None:
        """Drop the encoder."""
        self._encoder = None


def _runs(path: npt.NDArray[np.int64], region: Region, *, skip: int | None = None) -> list[tuple[int, float, float]]:
    """(speaker, start, end) for each run of equal labels on a region's frames (seconds, clamped)."""
    out = []
    start = 0
    for t in range(1, len(path) + 1):
        if t == len(path) or path[t] != path[start]:
            if path[start] != skip:
                begin = max(region.start, (region.first + start) * GRID)
                finish = min(region.end, (region.first + t) * GRID)
                if finish > begin:
                    out.append((int(path[start]), begin, finish))
            start = t
    return out


def _tidy(turns: list[tuple[int, float, float]], config: LiteConfig, duration: float) -> list[SpeakerTurn]:
    """Join one speaker's turns across short pauses, drop slivers, label, clamp and sort."""
    joined: dict[int, list[list[float]]] = {}
    for speaker, start, end in sorted(turns, key=lambda t: (t[0], t[1])):
        spans = joined.setdefault(speaker, [])
        if spans and start - spans[-1][1] <= config.join_gap_seconds:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    out = [
        SpeakerTurn(f"SPEAKER_{speaker:02d}", round(max(0.0, start), 3), round(min(duration, end), 3))
        for speaker, spans in joined.items()
        for start, end in spans
        if end - start >= config.min_turn_seconds
    ]
    out.sort(key=lambda t: (t.start, t.end, t.speaker))
    return out


def build(settings: DiarizationSettings) -> LiteDiarizer:
    """Load the encoder and check the VAD model (blocking; call it in a thread)."""
    try:
        from faster_whisper.vad import get_vad_model
        from resemblyzer import VoiceEncoder

        weights = Path(settings.model) if settings.model.endswith(".pt") else None
        if weights is not None and not weights.is_file():
            raise EngineLoadError(f"LEXIA_DIARIZATION_MODEL={settings.model!r}: no such GE2E weights file")
        encoder = VoiceEncoder("cpu", verbose=False, weights_fpath=weights)
        encoder.eval()
        get_vad_model()
    except EngineLoadError:
        raise
    except Exception as exc:
        raise EngineLoadError(f"cannot load the lite diarizer: {exc} (install the cpu-engines set)") from exc
    config = LiteConfig(max_speakers=min(settings.max_speakers, 10) if settings.max_speakers > 0 else 10)
    return LiteDiarizer(encoder, config, served=weights.stem if weights else SERVED_ID)


async def load(settings: DiarizationSettings) -> LiteDiarizer:
    """open_engines' entry point: load off the event loop."""
    return await anyio.to_thread.run_sync(build, settings)
