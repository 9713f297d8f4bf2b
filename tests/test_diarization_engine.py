"""PyannoteDiarizer's pure parts with a stand-in pipeline: runs without torch or pyannote."""

from __future__ import annotations

from dataclasses import dataclass

from lexia.engines.base import DiarizeOptions, SpeakerTurn
from lexia.engines.pyannote import PyannoteConfig, speaker_kwargs, to_turns
from lexia.settings import DiarizationSettings


@dataclass
class _Segment:
    start: float
    end: float


class _Annotation:
    """The part of pyannote.core.Annotation that to_turns reads."""

    def __init__(self, *tracks: tuple[float, float, object]) -> None:
        self.tracks = tracks

    def itertracks(self, yield_label: bool = False) -> list[tuple[_Segment, str, object]]:
        assert yield_label
        return [(_Segment(s, e), f"t{i}", label) for i, (s, e, label) in enumerate(self.tracks)]


@dataclass
class _Output:
    speaker_diarization: _Annotation


def test_speaker_kwargs_prefer_the_exact_count_and_cap_the_maximum() -> None:
    assert speaker_kwargs(DiarizeOptions(num_speakers=3, min_speakers=1, max_speakers=9), 20) == {"num_speakers": 3}
    assert speaker_kwargs(DiarizeOptions(), 20) == {"max_speakers": 20}
    assert speaker_kwargs(DiarizeOptions()) == {}
    assert speaker_kwargs(DiarizeOptions(min_speakers=2, max_speakers=4), 20) == {"min_speakers": 2, "max_speakers": 4}
    assert speaker_kwargs(DiarizeOptions(min_speakers=25), 20) == {"min_speakers": 25, "max_speakers": 25}


def test_to_turns_reads_both_output_shapes_clamps_and_sorts() -> None:
    annotation = _Annotation(
        (3.0, 4.5, "B"), (-0.2, 1.0, 0), (4.0, 9.0, "A"), (2.0, 2.0, "A"), (1.0, float("nan"), "C")
    )
    expected = [SpeakerTurn("0", 0.0, 1.0), SpeakerTurn("B", 3.0, 4.5), SpeakerTurn("A", 4.0, 5.0)]
    assert to_turns(annotation, 5.0) == expected
    assert to_turns(_Output(annotation), 5.0) == expected


def test_config_reads_the_diarization_settings() -> None:
    settings = DiarizationSettings(model="/models/pya", device="cuda:1", max_speakers=8)
    assert PyannoteConfig.from_settings(settings) == PyannoteConfig("/models/pya", "cuda:1", 8)
