"""Speaker rules of API.md §4.2: word-to-turn assignment, A…Z/AA… labels, utterances."""

from __future__ import annotations

import bisect
import heapq
import itertools
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


class TurnIndex:
    """Diarization turns (ms, sorted by start) indexed for the nearest-turn lookup."""

    def __init__(self, turns: Sequence[SpeakerTurn]) -> None:
        self.turns = sorted((round(t.start * 1000), round(t.end * 1000), t.speaker) for t in turns)
        self.starts = [t[0] for t in self.turns]
        self.reach = list(itertools.accumulate((t[1] for t in self.turns), max))  # max end so far

    def nearest(self, start: int, end: int) -> str | None:
        """The speaker of the turn closest to [start, end] within 1 s (the earliest on a tie), or None."""
        right = bisect.bisect_right(self.starts, end)  # turns[:right] start at or before the word's end
        best, distance = None, NEAREST_TURN_MS + 1
        if right:
            gap = max(start - self.reach[right - 1], 0)
            # The earliest turn reaching within `gap` of the word's start.
            best, distance = bisect.bisect_left(self.reach, start - gap), gap
        if right < len(self.turns) and self.turns[right][0] - end < distance:
            best, distance = right, self.turns[right][0] - end
        return self.turns[best][2] if best is not None and distance <= NEAREST_TURN_MS else None


def assign_speakers(words: list[dict[str, Any]], turns: Sequence[SpeakerTurn]) -> None:
    """Set each word's `speaker` (ms times) from diarization turns, relabelled by first appearance."""
    labels: dict[str, str] = {}
    for word, speaker in zip(words, speakers_for(words, turns), strict=True):
        word["speaker"] = None if speaker is None else labels.setdefault(speaker, speaker_label(len(labels)))


def speakers_for(words: Sequence[dict[str, Any]], turns: Sequence[SpeakerTurn]) -> list[str | None]:
    """Each word's turn speaker (the engine's label): the turn that overlaps it most (the earliest on
    a tie), else the nearest within 1 s, else None.

    One sweep over the words in start order keeping the turns active at each word (a heap by end):
    O((words + turns) log turns), so an hour of speech merges in milliseconds.
    """
    index = TurnIndex(turns)
    order = sorted(range(len(words)), key=lambda i: words[i]["start"])
    active: list[tuple[int, int]] = []  # (end, turn index) of turns started before the word ends
    added = 0
    found: list[str | None] = [None] * len(words)
    for i in order:
        start, end = words[i]["start"], words[i]["end"]
        while added < len(index.turns) and index.turns[added][0] < end:
            heapq.heappush(active, (index.turns[added][1], added))
            added += 1
        while active and active[0][0] <= start:  # ended before this word (and every later one) starts
            heapq.heappop(active)
        best, best_overlap = None, 0
        for t_end, j in active:
            overlap = min(end, t_end) - max(start, index.turns[j][0])
            if overlap > best_overlap or (overlap == best_overlap and best is not None and j < best):
                best, best_overlap = j, overlap
        found[i] = index.turns[best][2] if best is not None else index.nearest(start, end)
    return found


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
