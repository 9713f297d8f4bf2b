"""Speaker rules of API.md §4.2: word-to-turn assignment, A…Z/AA… labels, utterances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lexia.engines.base import SpeakerTurn

NEAREST_TURN_MS = 1000


def speaker_label(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA, 27 → AB, … (spreadsheet-column style)."""
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = chr(ord("A") + rest) + label
    return label


def _turn_for(start: int, end: int, turns: Sequence[tuple[int, int, str]]) -> str | None:
    best, best_overlap = None, 0
    for t_start, t_end, speaker in turns:
        overlap = min(end, t_end) - max(start, t_start)
        if overlap > best_overlap:
            best, best_overlap = speaker, overlap
    if best is not None:
        return best
    # No overlap (or a zero-length word): the nearest turn within 1 s, if any.
    nearest, distance = None, NEAREST_TURN_MS + 1
    for t_start, t_end, speaker in turns:
        gap = max(t_start - end, start - t_end, 0)
        if gap < distance:
            nearest, distance = speaker, gap
    return nearest if distance <= NEAREST_TURN_MS else None


def assign_speakers(words: list[dict[str, Any]], turns: Sequence[SpeakerTurn]) -> None:
    """Set each word's `speaker` (ms times) from diarization turns, relabelled by first appearance."""
    ms_turns = sorted((round(t.start * 1000), round(t.end * 1000), t.speaker) for t in turns)
    labels: dict[str, str] = {}
    for word in words:
        raw = _turn_for(word["start"], word["end"], ms_turns)
        if raw is None:
            word["speaker"] = None
            continue
        if raw not in labels:
            labels[raw] = speaker_label(len(labels))
        word["speaker"] = labels[raw]


def mean_confidence(words: Sequence[dict[str, Any]]) -> float | None:
    """Mean word confidence, 3 decimals (None without words)."""
    if not words:
        return None
    return round(sum(float(w["confidence"]) for w in words) / len(words), 3)


def join_words(words: Sequence[dict[str, Any]]) -> str:
    """Word texts separated by single spaces."""
    return " ".join(w["text"] for w in words)


def utterances(words: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Maximal runs of consecutive words with the same speaker; every word is in exactly one."""
    runs: list[list[dict[str, Any]]] = []
    for word in words:
        if runs and runs[-1][-1]["speaker"] == word["speaker"]:
            runs[-1].append(word)
        else:
            runs.append([word])
    return [
        {
            "speaker": run[0]["speaker"],
            "text": join_words(run),
            "start": run[0]["start"],
            "end": run[-1]["end"],
            "confidence": mean_confidence(run),
            "words": run,
        }
        for run in runs
    ]
