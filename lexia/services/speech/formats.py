"""Transcript renderings: §4.5 exports (captions, SRT, VTT, sentences, paragraphs) and §4.6 shapes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lexia.services.speech.speakers import join_words, mean_confidence

CAPTION_PAUSE_MS = 1000
PARAGRAPH_PAUSE_MS = 1500
SENTENCE_END = (".", "?", "!", "…")
DEFAULT_CHARS_PER_CAPTION = 42


@dataclass(frozen=True, slots=True)
class Cue:
    """One subtitle cue, times in ms."""

    start: int
    end: int
    text: str
    speaker: str | None = None


def captions(words: Sequence[dict[str, Any]], chars_per_caption: int, with_speakers: bool) -> list[Cue]:
    """Cues per §4.5: split at a speaker change, a pause ≥ 1 s, or before passing the width."""
    cues: list[Cue] = []
    group: list[dict[str, Any]] = []
    width = 0

    def close() -> None:
        if group:
            speaker = group[0]["speaker"] if with_speakers else None
            cues.append(Cue(group[0]["start"], group[-1]["end"], join_words(group), speaker))

    for word in words:
        if group:
            pause = word["start"] - group[-1]["end"]
            new_speaker = with_speakers and word.get("speaker") != group[-1].get("speaker")
            too_wide = width + 1 + len(word["text"]) > chars_per_caption
            if new_speaker or pause >= CAPTION_PAUSE_MS or too_wide:
                close()
                group, width = [], 0
        width = len(word["text"]) if not group else width + 1 + len(word["text"])
        group.append(word)
    close()
    return cues


def _clock(ms: int, separator: str) -> str:
    ms = max(0, int(ms))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def srt(cues: Sequence[Cue]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm`, speaker as a `[A] ` prefix."""
    blocks = []
    for number, cue in enumerate(cues, 1):
        prefix = f"[{cue.speaker}] " if cue.speaker else ""
        blocks.append(
            f"{number}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n{prefix}{cue.text}\n"
        )
    return "\n".join(blocks)


def vtt(cues: Sequence[Cue]) -> str:
    """WebVTT: `HH:MM:SS.mmm`, speaker as a `<v A>` voice tag."""
    blocks = ["WEBVTT\n"]
    for cue in cues:
        voice = f"<v {cue.speaker}>" if cue.speaker else ""
        blocks.append(f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n{voice}{cue.text}\n")
    return "\n".join(blocks)


def _block(words: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "text": join_words(words),
        "start": words[0]["start"],
        "end": words[-1]["end"],
        "confidence": mean_confidence(words),
        "speaker": words[0].get("speaker"),
        "words": words,
    }


def sentences(words: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A sentence ends after a word ending in . ? ! … or at a speaker change."""
    groups: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for word in words:
        if current and word.get("speaker") != current[-1].get("speaker"):
            groups.append(current)
            current = []
        current.append(word)
        if word["text"].rstrip("\"'”»)]").endswith(SENTENCE_END):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return [_block(g) for g in groups]


def paragraphs(words: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sentences grouped until a speaker change or a pause ≥ 1.5 s between sentences."""
    groups: list[list[dict[str, Any]]] = []
    for sentence in sentences(words):
        if groups:
            last = groups[-1][-1]
            if (
                sentence["speaker"] == last.get("speaker")
                and sentence["start"] - last["end"] < PARAGRAPH_PAUSE_MS
            ):
                groups[-1].extend(sentence["words"])
                continue
        groups.append(list(sentence["words"]))
    return [_block(g) for g in groups]


# -- OpenAI audio shapes (§4.6): seconds, one cue per Whisper segment -------------------------


def usage_seconds(duration: float) -> dict[str, Any]:
    """The `usage` object: audio duration rounded up to whole seconds."""
    return {"type": "duration", "seconds": math.ceil(duration) if duration > 0 else 0}


def seconds(ms: int) -> float:
    """Milliseconds to seconds (3 decimals)."""
    return round(ms / 1000.0, 3)


def segment_cues(segments: Sequence[dict[str, Any]], with_speakers: bool) -> list[Cue]:
    """One cue per segment (segments carry ms `start`/`end`, `text` and `speaker`)."""
    return [
        Cue(s["start"], s["end"], s["text"].strip(), s.get("speaker") if with_speakers else None)
        for s in segments
        if s["text"].strip()
    ]
