"""Pure STT rules: SSRF vetting, speaker assignment, exports, word repair, options."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lexia.engines.base import Segment, SpeakerTurn, STTOptions, Transcript, Word
from lexia.engines.whisper import WhisperConfig, repair_words, temperatures, transcribe_kwargs
from lexia.errors import InvalidURL, UnsupportedLanguage, UrlNotAllowed, ValidationFailed
from lexia.netguard import NetGuard, is_public
from lexia.services.speech import formats
from lexia.services.speech.speakers import assign_speakers, speaker_label, utterances
from lexia.services.speech.transcription import build_words, check_speakers, normalise_language, strip_punctuation


def w(text: str, start: int, end: int, speaker: str | None = None, confidence: float = 0.9) -> dict:
    return {"text": text, "start": start, "end": end, "confidence": confidence, "speaker": speaker}


# -- netguard ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
        "224.0.0.1", "255.255.255.255", "192.0.2.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
        "::ffff:10.0.0.1", "2002:7f00:1::1", "ff02::1", "::",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a.wav", "file:///etc/passwd", "http://user:pw@example.com/a", "http:///nohost",
     "https://example.com/" + "a" * 2100, "not a url", ""],
)
def test_malformed_urls_are_invalid_url(url: str) -> None:
    with pytest.raises(InvalidURL) as info:
        NetGuard().parse(url, param="audio_url")
    assert info.value.code == "invalid_url" and info.value.param == "audio_url"


async def test_vet_refuses_when_any_resolved_address_is_private() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(UrlNotAllowed):
        await NetGuard(resolver=resolver).vet("https://media.example.com/a.wav", param="audio_url")


async def test_vet_pins_the_first_vetted_address_and_keeps_the_name() -> None:
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["93.184.216.34"]

    guard = NetGuard(resolver=resolver)
    target = await guard.vet("https://media.example.com:8443/x.wav?sig=1", param="audio_url")
    assert (target.host, target.port, target.address) == ("media.example.com", 8443, "93.184.216.34")
    assert calls == ["media.example.com"]
    import httpx

    async with httpx.AsyncClient() as client:
        request = guard.build_request(client, "GET", target)
    assert request.url.host == "93.184.216.34" and request.url.port == 8443
    assert request.headers["host"] == "media.example.com:8443"
    assert request.extensions["sni_hostname"] == "media.example.com"


async def test_allowlist_accepts_cidrs_addresses_names_and_wildcards() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return {"internal.corp": ["10.9.8.7"], "a.media.corp": ["10.1.1.1"], "other.corp": ["10.2.2.2"]}[host]

    guard = NetGuard(["127.0.0.1", "192.168.0.0/16", "internal.corp", "*.media.corp"], resolver=resolver)
    for url in ("http://127.0.0.1:9/a", "http://192.168.4.4/a", "http://internal.corp/a", "http://a.media.corp/a"):
        await guard.vet(url, param="audio_url")
    for url in ("http://127.0.0.2/a", "http://other.corp/a", "http://[::1]/a"):
        with pytest.raises(UrlNotAllowed):
            await guard.vet(url, param="audio_url")


# -- speakers ------------------------------------------------------------------------------


def test_speaker_labels_follow_spreadsheet_order() -> None:
    assert [speaker_label(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"
    ]


def test_each_word_takes_the_turn_it_overlaps_most() -> None:
    words = [w("a", 0, 1000), w("b", 1800, 2600), w("c", 3000, 3500)]
    turns = [SpeakerTurn("S9", 0.0, 2.0), SpeakerTurn("S3", 2.0, 4.0)]
    assign_speakers(words, turns)
    # "b" overlaps S9 by 200 ms and S3 by 600 ms; labels are by first appearance.
    assert [x["speaker"] for x in words] == ["A", "B", "B"]


def test_word_without_overlap_takes_nearest_turn_within_one_second() -> None:
    words = [w("near", 2500, 2900), w("far", 9000, 9200)]
    assign_speakers(words, [SpeakerTurn("X", 0.0, 2.0)])
    assert [x["speaker"] for x in words] == ["A", None]


def _reference_speaker(start: int, end: int, turns: list[tuple[int, int, str]]) -> str | None:
    """The documented rule, written the slow obvious way: most overlap, else nearest within 1 s."""
    best, best_overlap = None, 0
    for t_start, t_end, speaker in turns:
        if min(end, t_end) - max(start, t_start) > best_overlap:
            best, best_overlap = speaker, min(end, t_end) - max(start, t_start)
    if best is not None:
        return best
    nearest, distance = None, 1001
    for t_start, t_end, speaker in turns:
        if max(t_start - end, start - t_end, 0) < distance:
            nearest, distance = speaker, max(t_start - end, start - t_end, 0)
    return nearest if distance <= 1000 else None


turn_st = st.tuples(st.integers(0, 20_000), st.integers(0, 4_000), st.sampled_from("PQRS"))
word_st = st.tuples(st.integers(0, 22_000), st.integers(0, 1_500))


@settings(max_examples=300, deadline=None)
@given(st.lists(turn_st, max_size=12), st.lists(word_st, max_size=25))
def test_word_assignment_matches_the_documented_rule(raw_turns: list, raw_words: list) -> None:
    turns = [SpeakerTurn(s, a / 1000, (a + d) / 1000) for a, d, s in raw_turns]
    words = [w(str(i), a, a + d) for i, (a, d) in enumerate(raw_words)]
    assign_speakers(words, turns)
    ms = sorted((round(t.start * 1000), round(t.end * 1000), t.speaker) for t in turns)
    expected = [_reference_speaker(x["start"], x["end"], ms) for x in words]
    labels: dict[str, str] = {}
    relabelled = [None if e is None else labels.setdefault(e, speaker_label(len(labels))) for e in expected]
    assert [x["speaker"] for x in words] == relabelled
    # Invariants of API.md §4.2: labels by first appearance, every word in exactly one utterance.
    seen = [x["speaker"] for x in words if x["speaker"] is not None]
    assert list(dict.fromkeys(seen)) == [speaker_label(i) for i in range(len(set(seen)))]
    assert sum(len(u["words"]) for u in utterances(words)) == len(words)


def test_an_hour_of_words_merges_with_a_thousand_turns() -> None:
    turns = [SpeakerTurn(f"S{i % 3}", i * 3.6, i * 3.6 + 3.5) for i in range(1000)]
    words = [w(str(i), i * 360, i * 360 + 300) for i in range(10_000)]
    assign_speakers(words, turns)
    assert [x["speaker"] for x in words[:30:10]] == ["A", "B", "C"] and words[-1]["speaker"] == "A"


def test_utterances_are_maximal_runs_and_cover_every_word() -> None:
    words = [w("Hi.", 0, 100, "A", 0.9), w("Yes", 200, 300, "B", 0.8), w("no.", 300, 400, "B", 0.6),
             w("Ok.", 500, 600, "A", 1.0)]
    result = utterances(words)
    assert [(u["speaker"], u["text"], u["start"], u["end"], u["confidence"]) for u in result] == [
        ("A", "Hi.", 0, 100, 0.9), ("B", "Yes no.", 200, 400, 0.7), ("A", "Ok.", 500, 600, 1.0)
    ]
    assert sum(len(u["words"]) for u in result) == len(words)


# -- exports ---------------------------------------------------------------------------------


EXAMPLE = [w("Bonjour,", 240, 610, "A", 0.97), w("ici", 650, 820, "A", 0.96), w("Lexia.", 860, 1530, "A", 0.91),
           w("Oui,", 1900, 2150, "B", 0.95), w("bonjour.", 2200, 2800, "B", 0.96)]


def test_srt_matches_the_documented_example() -> None:
    assert formats.srt(formats.captions(EXAMPLE, 42, True)) == (
        "1\n00:00:00,240 --> 00:00:01,530\n[A] Bonjour, ici Lexia.\n\n"
        "2\n00:00:01,900 --> 00:00:02,800\n[B] Oui, bonjour.\n"
    )


def test_vtt_matches_the_documented_example() -> None:
    assert formats.vtt(formats.captions(EXAMPLE, 42, True)) == (
        "WEBVTT\n\n00:00:00.240 --> 00:00:01.530\n<v A>Bonjour, ici Lexia.\n\n"
        "00:00:01.900 --> 00:00:02.800\n<v B>Oui, bonjour.\n"
    )


def test_captions_split_at_width_pause_and_speaker() -> None:
    words = [w("aaaa", 0, 100), w("bbbb", 100, 200), w("cccc", 200, 300), w("dddd", 1400, 1500)]
    cues = formats.captions(words, 10, False)
    assert [(c.text, c.start, c.end) for c in cues] == [("aaaa bbbb", 0, 200), ("cccc", 200, 300), ("dddd", 1400, 1500)]
    assert all(c.speaker is None for c in cues)


def test_caption_clock_passes_an_hour() -> None:
    cue = formats.Cue(3_723_004, 3_723_999, "x")
    assert "01:02:03,004 --> 01:02:03,999" in formats.srt([cue])


def test_sentences_end_at_terminal_punctuation_or_speaker_change() -> None:
    words = [w("Hello", 0, 100, "A"), w("there!", 100, 200, "A"), w("Really", 300, 400, "A"),
             w("yes…", 400, 500, "B"), w("Fine", 600, 700, "B")]
    result = formats.sentences(words)
    assert [(s["text"], s["speaker"]) for s in result] == [
        ("Hello there!", "A"), ("Really", "A"), ("yes…", "B"), ("Fine", "B")
    ]


def test_paragraphs_break_on_pause_or_speaker() -> None:
    words = [w("One.", 0, 100), w("Two.", 500, 600), w("Three.", 2200, 2300), w("Four.", 2400, 2500, "B")]
    result = formats.paragraphs(words)
    assert [p["text"] for p in result] == ["One. Two.", "Three.", "Four."]
    assert result[0]["start"] == 0 and result[0]["end"] == 600


def test_usage_rounds_duration_up() -> None:
    assert formats.usage_seconds(3.12) == {"type": "duration", "seconds": 4}
    assert formats.usage_seconds(3.0)["seconds"] == 3


# -- engine-side rules -----------------------------------------------------------------------


def test_untimed_words_are_interpolated_and_never_dropped() -> None:
    raw = [(" One", 0.0, 0.5, 0.9), (" two", None, None, 0.8), (" three", 1.0, 1.0, 0.7),
           (" four", 1.5, 2.0, float("nan"))]
    words = repair_words(raw, 0.0, 2.0)
    assert [x.text for x in words] == [" One", " two", " three", " four"]
    assert [x.interpolated for x in words] == [False, True, True, False]
    assert words[1].start == 0.5 and words[2].end == 1.5
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(words))
    assert words[3].probability == 0.0


def test_segment_text_without_words_becomes_interpolated_words() -> None:
    words = repair_words([], 2.0, 4.0, " Hello big world")
    assert [(x.text.strip(), x.start, x.end, x.interpolated) for x in words] == [
        ("Hello", 2.0, 2.667, True), ("big", 2.667, 3.333, True), ("world", 3.333, 4.0, True)
    ]


def test_temperature_schedule() -> None:
    assert temperatures(0.0, True) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperatures(0.5, True) == (0.5, 0.7, 0.9)
    assert temperatures(0.3, False) == (0.3,)


def test_hallucination_guards_are_on_by_default() -> None:
    kwargs = transcribe_kwargs(WhisperConfig(model="m"), STTOptions(hotwords=("Lexia", "GPU"), prompt="Hi"))
    assert kwargs["vad_filter"] is True and kwargs["condition_on_previous_text"] is False
    assert kwargs["compression_ratio_threshold"] == 2.4 and kwargs["log_prob_threshold"] == -1.0
    assert kwargs["no_speech_threshold"] == 0.6 and kwargs["word_timestamps"] is True
    assert kwargs["hotwords"] == "Lexia GPU" and kwargs["initial_prompt"] == "Hi"


def test_punctuate_false_keeps_inner_apostrophes_and_hyphens() -> None:
    assert strip_punctuation("don't,") == "don't"
    assert strip_punctuation("well-known.") == "well-known"
    assert strip_punctuation("«Oui!»") == "Oui"
    assert strip_punctuation("—") == ""


def test_build_words_applies_punctuate_and_format_text() -> None:
    seg = Segment(0, 0.0, 1.0, " Hello, World!", (Word(" Hello,", 0.0, 0.4, 0.91), Word(" World!", 0.5, 0.9, 0.8)))
    transcript = Transcript("en", 0.9, 1.0, (seg,))
    words, origin, interpolated = build_words(transcript, punctuate=False, format_text=False)
    assert [x["text"] for x in words] == ["hello", "world"] and origin == [0, 0] and interpolated == 0
    assert words[0] == {"text": "hello", "start": 0, "end": 400, "confidence": 0.91, "speaker": None}


def test_language_codes_are_normalised() -> None:
    supported = frozenset({"en", "fr"})
    assert normalise_language("en_us", param="language_code", supported=supported) == "en"
    assert normalise_language("FR", param="language_code", supported=supported) == "fr"
    assert normalise_language("auto", param="language_code", supported=supported) is None
    with pytest.raises(UnsupportedLanguage):
        normalise_language("de", param="language_code", supported=supported)
    with pytest.raises(UnsupportedLanguage):
        normalise_language("klingon", param="language_code", supported=supported)


def test_speaker_hints_are_checked() -> None:
    check_speakers(speakers_expected=2, min_speakers=None, max_speakers=None, max_allowed=20)
    for kwargs, param in (
        ({"speakers_expected": 0, "min_speakers": None, "max_speakers": None}, "speakers_expected"),
        ({"speakers_expected": None, "min_speakers": 3, "max_speakers": 2}, "min_speakers_expected"),
        ({"speakers_expected": 2, "min_speakers": 1, "max_speakers": None}, "speakers_expected"),
        ({"speakers_expected": None, "min_speakers": None, "max_speakers": 21}, "max_speakers_expected"),
    ):
        with pytest.raises(ValidationFailed) as info:
            check_speakers(max_allowed=20, **kwargs)
        assert info.value.param == param


def test_stt_modules_import_no_heavy_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, lexia.app, lexia.engines.whisper, lexia.audio, lexia.intake, lexia.api.audio\n"
        "print([m for m in ('faster_whisper', 'ctranslate2', 'av', 'onnxruntime', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _fake_cublas(tmp_path, monkeypatch, names):  # type: ignore[no-untyped-def]
    lib = tmp_path / "site" / "nvidia" / "cublas" / "lib"
    lib.mkdir(parents=True)
    for name in names:
        (lib / name).write_bytes(b"\x7fELF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    import importlib

    importlib.invalidate_caches()
    return lib


def test_the_cublas12_preload_finds_the_wheels_libraries_in_load_order(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lexia.engines.whisper import cublas12_files

    lib = _fake_cublas(tmp_path, monkeypatch, ["libcublas.so.12", "libcublasLt.so.12", "libcublas.so.13"])
    assert cublas12_files() == [lib / "libcublasLt.so.12", lib / "libcublas.so.12"]


def test_a_gpu_without_cuda12_cublas_stops_the_start_instead_of_falling_back(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import ctypes

    from lexia.engines import whisper
    from lexia.engines.base import EngineLoadError

    def refuse(name: str, mode: int = 0) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", refuse)
    with pytest.raises(EngineLoadError, match=r"libcublas.so.12.*gpu extra.*nvidia-cublas-cu12"):
        whisper._preload_cublas12()


@pytest.mark.gpu
def test_the_gpu_environment_has_the_cuda12_cublas_files_the_preload_loads() -> None:
    """Run in the gpu extra's environment (bin/gpu-smoke): the wheel's files are where the preload looks."""
    from lexia.engines.whisper import CUBLAS12, cublas12_files

    assert [p.name for p in cublas12_files()] == list(CUBLAS12)
