"""Synthetic speaker-diarization evaluation set, generated deterministically with espeak-ng.

Eight short conversations (English and French) are scripted here and rendered with espeak-ng voice
variants (``en+m3``, ``fr+f3``, ...), one set of espeak settings (variant, pitch, speed, amplitude)
per speaker:

==============  ====  ========  ======================================================================
name            lang  speakers  what it tests
==============  ====  ========  ======================================================================
en-2-mf         en    2         a male and a female voice, clearly different pitch
fr-2-mf         fr    2         the same in French
en-2-same       en    2         two male voices with close pitch (<= 10) and speed (<= 15 wpm)
fr-2-same       fr    2         the same in French
en-3            en    3         three speakers, mixed genders and variants
en-4-once       en    4         four speakers, one of whom speaks exactly once
en-overlap      en    2         next turn starts 0.3-0.8 s early; back-channels "yes"/"right"/"okay"
fr-overlap      fr    2         the same in French, back-channels "oui"/"d'accord"/"ah bon"
==============  ====  ========  ======================================================================

Each turn is synthesised at espeak-ng's native 22050 Hz, trimmed to where its speech energy starts
and ends (20 ms frames, -40 dB below the turn's loudest frame), resampled to 16 kHz with a
Kaiser-windowed-sinc polyphase filter and laid on a timeline with 0.15-0.8 s of silence between
turns (or, for the overlap sets, every other turn starting 0.3-0.8 s before the previous one ends;
back-channels are placed inside the other speaker's turn). The mix is summed and peak-normalised to
-1 dBFS. Gaps, overlaps and back-channel positions come from ``random.Random(name)``, so every run
produces byte-identical files (for a given espeak-ng build).

For each conversation ``NAME`` the output directory gets:

* ``NAME.wav``: 16 kHz mono PCM_16;
* ``NAME.rttm``: ``SPEAKER NAME 1 <start> <dur> <NA> <NA> <spk> <NA> <NA>``, one line per turn and
  per back-channel, to the millisecond (the audio was cut at the trimmed bounds);
* ``NAME.words.json``: ``[{"word", "start", "end", "speaker"}, ...]`` in time order, back-channels
  included;

plus one ``manifest.json`` describing all conversations (speakers and their espeak settings,
duration, turns, words, overlap seconds).

Word timings are APPROXIMATE. espeak-ng does not report word boundaries on its command line, but it
is deterministic, so boundaries are estimated from extra renderings with the same settings, each
trimmed like the full utterance (against the full utterance's loudest frame):

* ``prefix`` (``--word-timing prefix``): the end of word k of ``w1 ... wn`` is the trimmed duration of rendering
  ``w1 ... wk``, measured from the full utterance's onset;
* ``suffix`` (the default): the start of word k+1 is the utterance's duration minus the
  trimmed duration of rendering ``wk+1 ... wn``.

Either way the boundaries are clamped to be non-decreasing, within the utterance and (where the
utterance is long enough) at least MIN_WORD_S apart; word k starts where word k-1 ends, the first
word starts at the utterance onset and the last ends at its end, so a pause inside a turn (at a
comma, say) is counted in the word after it (prefix) or before it (suffix). A prefix ends with
sentence-final lengthening that the full sentence lacks, so prefix boundaries come out late: measured
against the word-start positions libespeak-ng reports through its API, over this set's utterances,
prefix boundaries are off by a median 133 ms (mean +112 ms, 90th percentile 274 ms), suffix
boundaries by a median 14 ms (mean +7 ms, 90th percentile 42 ms). Turn (RTTM) boundaries are exact:
the audio is cut where the RTTM says.

Usage::

    python benchmarks/diarization_data.py [--out DIR] [--only NAME] [--word-timing {prefix,suffix}]

Needs espeak-ng on PATH, numpy and soundfile.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import soundfile as sf

FloatArray = npt.NDArray[np.float64]
WordTiming = Literal["prefix", "suffix"]
WORD_TIMINGS: tuple[WordTiming, ...] = ("prefix", "suffix")

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "diarization"
SAMPLE_RATE = 16_000
PEAK_DBFS = -1.0
FRAME_S = 0.020  # energy-trim frame length
TRIM_DB = 40.0  # a frame is speech when within this many dB of the utterance's loudest frame
FADE_S = 0.005  # raised-cosine fade applied at the cut points
EDGE_SILENCE_S = 0.5  # silence before the first and after the last turn
GAP_S = (0.15, 0.8)  # silence between consecutive turns
OVERLAP_S = (0.3, 0.8)  # how early an overlapping turn starts before the previous one ends
BACKCHANNEL_CLEARANCE_S = 0.2  # min distance between a back-channel and its speaker's own turns
BACKCHANNEL_MARGIN_S = 0.5  # min distance between a back-channel and the host turn's edges
MIN_WORD_S = 0.03  # word timings are spread so that each word lasts at least this long
WORD_RE = re.compile(r"\w(?:[\w'’-]*\w)?")


# --------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class Voice:
    """One speaker's espeak-ng settings (the language comes from the conversation)."""

    variant: str  # a file under espeak-ng-data/voices/!v, e.g. "m3" or "f2"
    gender: str  # "male" / "female", as declared by the variant
    pitch: int  # -p, 0..99
    speed: int  # -s, words per minute
    amplitude: int = 100  # -a, 0..200

    def espeak_voice(self, language: str) -> str:
        return f"{language}+{self.variant}"

    def args(self, language: str) -> tuple[str, ...]:
        return (
            "-v",
            self.espeak_voice(language),
            "-p",
            str(self.pitch),
            "-s",
            str(self.speed),
            "-a",
            str(self.amplitude),
        )


@dataclass(frozen=True)
class Conversation:
    name: str
    language: str  # espeak-ng language code
    description: str
    voices: Mapping[str, Voice]  # speaker label -> voice, in speaker order
    turns: tuple[tuple[str, str], ...]  # (speaker, text)
    overlap_every: int = 0  # if > 0, turn i starts before turn i-1 ends when i % overlap_every == 1
    backchannels: tuple[tuple[int, str], ...] = ()  # (host turn index, word(s)) said by another speaker


def _turns(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(pairs)


CONVERSATIONS: tuple[Conversation, ...] = (
    Conversation(
        name="en-2-mf",
        language="en",
        description="English, male and female speaker, clearly different pitch",
        voices={"spk1": Voice("m3", "male", 40, 160), "spk2": Voice("f2", "female", 60, 170)},
        turns=_turns(
            ("spk1", "Morning! Did you manage to sleep with all that rain last night?"),
            ("spk2", "Barely. The wind kept rattling the bedroom window until three."),
            ("spk1", "Same here. I think a branch came down near the garage."),
            ("spk2", "Oh no, is the car all right?"),
            ("spk1", "It's fine, but the recycling bins ended up across the street."),
            ("spk2", "We should really trim that old oak tree before winter."),
            ("spk1", "Agreed. My brother has a ladder we could borrow."),
            ("spk2", "Great. I'll pick up gloves and a saw from the hardware store."),
            ("spk1", "Could you also grab a box of screws for the fence?"),
            ("spk2", "Sure, what size do you need?"),
            ("spk1", "The long ones, about the length of your thumb."),
            ("spk2", "Got it. Are we still having lunch with your parents on Sunday?"),
            ("spk1", "Yes, around noon, and my mum is baking a pie."),
            ("spk2", "Lovely. Then let's do the tree on Saturday morning."),
            ("spk1", "Sounds like a plan. I'll call my brother tonight."),
            ("spk2", "Thanks. I'm off to work, see you this evening."),
        ),
    ),
    Conversation(
        name="fr-2-mf",
        language="fr",
        description="French, male and female speaker, clearly different pitch",
        voices={"spk1": Voice("m1", "male", 40, 155), "spk2": Voice("f3", "female", 60, 165)},
        turns=_turns(
            ("spk1", "Salut, tu as passé une bonne soirée hier ?"),
            ("spk2", "Oui, très bonne, on est allés au cinéma avec ma sœur."),
            ("spk1", "Ah bon, vous avez vu quel film ?"),
            ("spk2", "Une comédie française, mais la fin était un peu décevante."),
            ("spk1", "C'est dommage. Moi, je suis resté à la maison pour cuisiner."),
            ("spk2", "Tu as préparé quoi de bon pour le dîner ?"),
            ("spk1", "Une soupe de légumes et une tarte aux pommes."),
            ("spk2", "Tu m'en as gardé un morceau, j'espère ?"),
            ("spk1", "Bien sûr, elle est dans le frigo, sur l'étagère du haut."),
            ("spk2", "Merci, je la goûterai ce midi avec un café."),
            ("spk1", "Au fait, ta voiture est réparée ?"),
            ("spk2", "Pas encore, le garage attend une pièce depuis lundi."),
            ("spk1", "Si tu veux, je peux te déposer au bureau demain matin."),
            ("spk2", "Ce serait génial, je commence à huit heures."),
            ("spk1", "Pas de problème, on part vers sept heures et quart."),
            ("spk2", "Parfait, je t'attendrai devant la boulangerie."),
            ("spk1", "Entendu, et n'oublie pas ton parapluie, il va pleuvoir."),
            ("spk2", "Bonne idée, merci, à demain matin alors !"),
        ),
    ),
    Conversation(
        name="en-2-same",
        language="en",
        description="English, two male speakers with close pitch (5) and speed (12 wpm)",
        voices={"spk1": Voice("m3", "male", 45, 160), "spk2": Voice("m6", "male", 50, 172)},
        turns=_turns(
            ("spk1", "Hey, are you taking the early train to the conference?"),
            ("spk2", "I was planning to, unless the strike is still on."),
            ("spk1", "The news said the drivers reached an agreement yesterday."),
            ("spk2", "That's a relief. Where are you staying?"),
            ("spk1", "A small hotel near the river, close to the main hall."),
            ("spk2", "Nice. My company booked me something by the airport."),
            ("spk1", "That sounds like a long ride every morning."),
            ("spk2", "It is, but at least they serve breakfast early."),
            ("spk1", "Are you presenting anything this year?"),
            ("spk2", "Just a short talk about our new billing system."),
            ("spk1", "I'd love to see it. Which day is it on?"),
            ("spk2", "The second afternoon, right after the coffee break."),
            ("spk1", "I'll be there. Do you want to grab dinner one night?"),
            ("spk2", "Sure, there's a good noodle place behind the station."),
            ("spk1", "Perfect, I'll send you my phone number tonight."),
            ("spk2", "Great, and good luck with your own workshop."),
            ("spk1", "Thanks, I still have to finish the slides."),
        ),
    ),
    Conversation(
        name="fr-2-same",
        language="fr",
        description="French, two male speakers with close pitch (6) and speed (10 wpm)",
        voices={"spk1": Voice("m4", "male", 48, 158), "spk2": Voice("m6", "male", 54, 168)},
        turns=_turns(
            ("spk1", "Tu as regardé le match de foot samedi soir ?"),
            ("spk2", "Seulement la deuxième mi-temps, j'étais chez mes beaux-parents."),
            ("spk1", "Tu as raté le plus beau but de la saison."),
            ("spk2", "Mon voisin me l'a montré sur son téléphone, c'était incroyable."),
            ("spk1", "Le gardien n'a même pas eu le temps de bouger."),
            ("spk2", "Et l'arbitre, tu en as pensé quoi ?"),
            ("spk1", "Franchement, il a été assez sévère avec les deux équipes."),
            ("spk2", "Je trouve aussi. Le carton rouge était exagéré."),
            ("spk1", "Tu vas au stade pour le prochain match ?"),
            ("spk2", "J'aimerais bien, mais les billets sont déjà très chers."),
            ("spk1", "Mon cousin en a peut-être deux en trop."),
            ("spk2", "Ce serait formidable, tu peux lui demander ?"),
            ("spk1", "Je l'appelle ce soir après le travail."),
            ("spk2", "Merci beaucoup, je t'offrirai une bière au stade."),
            ("spk1", "Avec plaisir, mais on prend le métro, pas la voiture."),
            ("spk2", "Évidemment, il est impossible de se garer là-bas."),
            ("spk1", "Bon, je te tiens au courant demain."),
        ),
    ),
    Conversation(
        name="en-3",
        language="en",
        description="English, three speakers (two male variants, one female)",
        voices={
            "spk1": Voice("m1", "male", 35, 155),
            "spk2": Voice("f4", "female", 65, 170),
            "spk3": Voice("m7", "male", 55, 180),
        },
        turns=_turns(
            ("spk1", "So, we need a plan for Maria's birthday next Friday."),
            ("spk2", "How about a surprise lunch in the meeting room?"),
            ("spk3", "I like that, but she usually works from home on Fridays."),
            ("spk1", "Good point. Maybe we move it to Thursday instead."),
            ("spk2", "Thursday works for me. Who's ordering the cake?"),
            ("spk3", "I can do that, there's a bakery right next to my flat."),
            ("spk2", "Does anyone know which flavour she likes?"),
            ("spk1", "Chocolate, definitely. She talks about it all the time."),
            ("spk3", "Then a chocolate cake with raspberries on top."),
            ("spk1", "And we should get a card that everyone can sign."),
            ("spk2", "I'll buy one tomorrow and pass it around quietly."),
            ("spk3", "What about a present? She mentioned wanting a plant."),
            ("spk1", "A plant is a lovely idea, it lasts longer than flowers."),
            ("spk2", "There's a garden centre on the way to the station."),
            ("spk3", "I'll pick one up on Wednesday after work."),
            ("spk1", "Perfect. I'll book the room and send a secret invite."),
            ("spk2", "Remember not to add her to the email by accident."),
            ("spk3", "Ha, that happened last year, didn't it?"),
        ),
    ),
    Conversation(
        name="en-4-once",
        language="en",
        description="English, four speakers; spk4 speaks exactly once",
        voices={
            "spk1": Voice("m2", "male", 45, 165),
            "spk2": Voice("f1", "female", 55, 160),
            "spk3": Voice("f5", "female", 62, 175),
            "spk4": Voice("m4", "male", 38, 150),
        },
        turns=_turns(
            ("spk1", "Right, let's sort out the cleaning rota before anyone leaves."),
            ("spk2", "I'm happy to take the kitchen if someone does the bathroom."),
            ("spk3", "I did the bathroom last month, so it's not my turn."),
            ("spk1", "Fair enough, I'll take the bathroom this time."),
            ("spk2", "What about the rubbish? The bins go out on Tuesday night."),
            ("spk3", "I can handle the bins, I'm always home on Tuesdays."),
            ("spk4", "Sorry to interrupt, the engineer comes on Monday morning."),
            ("spk3", "I work from home on Mondays, so that's fine."),
            ("spk1", "Thanks. Is the boiler still making that clicking sound?"),
            ("spk2", "Only in the mornings, when the hot water comes on."),
            ("spk1", "Good. Next, we should talk about the shared shopping."),
            ("spk2", "Could we use one app to split the costs?"),
            ("spk3", "I already use one with my sister, I'll send you the link."),
            ("spk1", "Great, then we just add the receipts after each trip."),
            ("spk2", "And no more buying six kinds of cereal, please."),
            ("spk3", "That was one time, and they were on offer!"),
            ("spk1", "All right, I think that covers everything for tonight."),
        ),
    ),
    Conversation(
        name="en-overlap",
        language="en",
        description="English, two speakers, overlapping turn starts and back-channels",
        voices={"spk1": Voice("m6", "male", 40, 165), "spk2": Voice("f3", "female", 62, 172)},
        turns=_turns(
            ("spk1", "You won't believe what happened on my trip to Scotland last week."),
            ("spk2", "Go on, tell me, was it the weather again?"),
            ("spk1", "No, the weather was lovely. It was the hire car that broke down."),
            ("spk2", "Oh dear, where were you when it happened?"),
            ("spk1", "Right in the middle of the highlands, with no phone signal at all."),
            ("spk2", "That sounds terrifying. What did you do?"),
            ("spk1", "We walked to a farm and an old man let us use his phone."),
            ("spk2", "How kind of him. Did the rental company send someone?"),
            ("spk1", "Eventually, but it took nearly four hours to get a mechanic there."),
            ("spk2", "Four hours! I hope the farmer at least offered you some tea."),
            ("spk1", "He did, and his wife made us the best scones I have ever had."),
            ("spk2", "So the breakdown turned into the highlight of the whole trip."),
            ("spk1", "Exactly. We're even going back next summer to visit them."),
            ("spk2", "You'll have to bring them something nice from home."),
            ("spk1", "I was thinking of a box of good chocolates and some wine."),
            ("spk2", "Perfect. Send me some photos when you go."),
        ),
        overlap_every=2,
        backchannels=((2, "okay"), (4, "right"), (6, "yes"), (9, "yes"), (10, "right"), (11, "okay")),
    ),
    Conversation(
        name="fr-overlap",
        language="fr",
        description="French, two speakers, overlapping turn starts and back-channels",
        voices={"spk1": Voice("m3", "male", 42, 158), "spk2": Voice("f4", "female", 60, 168)},
        turns=_turns(
            ("spk1", "Tu sais ce qui m'est arrivé en rentrant du travail hier soir ?"),
            ("spk2", "Non, raconte-moi, tu as encore raté ton bus ?"),
            ("spk1", "Pire que ça, je suis resté coincé dans l'ascenseur pendant une heure."),
            ("spk2", "Une heure entière ? Tu devais être complètement paniqué."),
            ("spk1", "Au début oui, surtout que mon téléphone n'avait presque plus de batterie."),
            ("spk2", "Et personne ne t'a entendu appeler à l'aide ?"),
            ("spk1", "Si, heureusement, la gardienne passait dans le couloir à ce moment-là."),
            ("spk2", "Elle a pu ouvrir la porte toute seule ?"),
            ("spk1", "Non, elle a dû appeler un technicien qui habitait loin."),
            ("spk2", "Quelle histoire ! Tu as pu dîner correctement après tout ça ?"),
            ("spk1", "J'ai commandé une pizza et je me suis couché tout de suite."),
            ("spk2", "À ta place, je prendrais les escaliers pendant quelques semaines."),
            ("spk1", "C'est exactement ce que je fais depuis ce matin, les six étages."),
            ("spk2", "Au moins, ça te fera un peu de sport gratuitement."),
            ("spk1", "Tu as raison, je vais voir le bon côté des choses."),
            ("spk2", "Allez, viens, je t'offre un café pour te remonter le moral."),
        ),
        overlap_every=2,
        backchannels=((2, "ah bon"), (4, "oui"), (6, "d'accord"), (8, "ah bon"), (9, "oui"), (11, "d'accord")),
    ),
)

CONVERSATION_NAMES: tuple[str, ...] = tuple(c.name for c in CONVERSATIONS)


# ----------------------------------------------------------------------------------- signal helpers


def resample(x: FloatArray, sr_in: int, sr_out: int, half_width: int = 32, beta: float = 8.0) -> FloatArray:
    """Polyphase resampling with a Kaiser-windowed sinc low-pass (cutoff 0.94 x the lower Nyquist)."""
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    if up == down:
        return x.astype(np.float64)
    fc = 0.5 * min(1.0, up / down) * 0.94  # cycles per input sample
    taps = np.arange(-half_width + 1, half_width + 1)
    dist = taps[None, :] - (np.arange(up) / up)[:, None]  # (phase, tap): input offset from output time
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (dist / half_width) ** 2, 0.0, None))) / np.i0(beta)
    table = 2 * fc * np.sinc(2 * fc * dist) * window
    table /= table.sum(axis=1, keepdims=True)  # unity DC gain for every phase
    padded = np.pad(x.astype(np.float64), (half_width, half_width + 1))
    n_out = len(x) * up // down
    out = np.empty(n_out, dtype=np.float64)
    for lo in range(0, n_out, 32_768):
        m = np.arange(lo, min(lo + 32_768, n_out))
        base, phase = np.divmod(m * down, up)
        out[m] = np.einsum("ij,ij->i", padded[base[:, None] + taps[None, :] + half_width], table[phase])
    return out


def frame_db(x: FloatArray, frame: int) -> FloatArray:
    """RMS level in dB of consecutive frames (the last one zero-padded)."""
    n = -(-len(x) // frame)
    frames = np.pad(x, (0, n * frame - len(x))).reshape(n, frame)
    levels: FloatArray = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12)
    return levels


def speech_bounds(x: FloatArray, sr: int, ref_db: float | None = None) -> tuple[int, int, float]:
    """(first, end) sample of the frames within TRIM_DB of ref_db (default: the loudest frame), and ref_db."""
    frame = round(FRAME_S * sr)
    levels = frame_db(x, frame)
    ref = float(levels.max()) if ref_db is None else ref_db
    active = np.flatnonzero(levels >= ref - TRIM_DB)
    if len(active) == 0:
        return 0, 0, ref
    return int(active[0]) * frame, min(len(x), (int(active[-1]) + 1) * frame), ref


def fade(x: FloatArray, sr: int) -> FloatArray:
    n = min(round(FADE_S * sr), len(x) // 2)
    if n == 0:
        return x
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    y = x.copy()
    y[:n] *= ramp
    y[len(y) - n :] *= ramp[::-1]
    return y


# ------------------------------------------------------------------------------------------ espeak


SynthKey = tuple[tuple[str, ...], str]  # (espeak args, text)


def espeak_version() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", out)
    return match.group(1) if match else out.strip()


def synthesize(key: SynthKey, workdir: Path) -> tuple[FloatArray, int]:
    args, text = key
    path = workdir / (hashlib.sha1(repr(key).encode()).hexdigest() + ".wav")
    subprocess.run(["espeak-ng", *args, "-b", "1", "-w", str(path), text], check=True, capture_output=True)
    audio, sr = sf.read(str(path), dtype="float64", always_2d=False)
    path.unlink()
    return np.asarray(audio, dtype=np.float64), int(sr)


def synthesize_all(keys: Iterable[SynthKey], workdir: Path) -> dict[SynthKey, tuple[FloatArray, int]]:
    unique = sorted(set(keys))
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        results = list(pool.map(lambda k: synthesize(k, workdir), unique))
    return dict(zip(unique, results, strict=True))


# ------------------------------------------------------------------------------------- utterances


@dataclass
class Utterance:
    speaker: str
    text: str
    audio: FloatArray  # trimmed, 16 kHz
    words: list[tuple[str, int, int]]  # (word, start, end) in samples from the utterance onset
    backchannel: bool
    start: int = 0  # sample offset on the conversation timeline

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


def words_of(text: str) -> list[tuple[str, int, int]]:
    """The words of text with where each starts and ends in text."""
    return [(m.group(), m.start(), m.end()) for m in WORD_RE.finditer(text)]


def partial_texts(text: str, word_timing: WordTiming) -> list[str]:
    """For each boundary between consecutive words, the text espeak-ng renders to estimate it."""
    words = words_of(text)
    if word_timing == "prefix":
        return [text[:stop] for _, _, stop in words[:-1]]
    return [text[start:] for _, start, _ in words[1:]]


def synth_keys(conv: Conversation, speaker: str, text: str, word_timing: WordTiming) -> list[SynthKey]:
    args = conv.voices[speaker].args(conv.language)
    return [(args, t) for t in [text, *partial_texts(text, word_timing)]]


def clamp_boundaries(estimates: Sequence[int], total: int) -> list[int]:
    """0, the estimates made non-decreasing with >= MIN_WORD_S per word where possible, total."""
    n = len(estimates) + 1  # words
    gap = min(round(MIN_WORD_S * SAMPLE_RATE), total // n)
    bounds = [0, *(min(max(e, 0), total) for e in estimates), total]
    for k in range(1, n):
        bounds[k] = max(bounds[k], bounds[k - 1] + gap)
    for k in range(n - 1, 0, -1):
        bounds[k] = min(bounds[k], bounds[k + 1] - gap)
    return bounds


def make_utterance(
    conv: Conversation,
    speaker: str,
    text: str,
    backchannel: bool,
    synth: Mapping[SynthKey, tuple[FloatArray, int]],
    word_timing: WordTiming,
) -> Utterance:
    args = conv.voices[speaker].args(conv.language)
    raw, sr = synth[(args, text)]
    first, end, ref_db = speech_bounds(raw, sr)
    if end <= first:
        raise RuntimeError(f"{conv.name}: espeak-ng produced silence for {text!r}")
    audio = resample(fade(raw[first:end], sr), sr, SAMPLE_RATE)
    estimates: list[int] = []  # end of each word but the last, in output samples from the onset
    for partial in partial_texts(text, word_timing):
        part_raw, _ = synth[(args, partial)]
        part_first, part_end, _ = speech_bounds(part_raw, sr, ref_db)
        if word_timing == "prefix":
            estimate = (part_end - first) / sr
        else:  # the rest of the utterance starts where the suffix's duration before its end says
            estimate = (end - first) / sr - (part_end - part_first) / sr
        estimates.append(round(estimate * SAMPLE_RATE))
    bounds = clamp_boundaries(estimates, len(audio))
    words = [(w, bounds[k], bounds[k + 1]) for k, (w, _, _) in enumerate(words_of(text))]
    return Utterance(speaker, text, audio, words, backchannel)


# ----------------------------------------------------------------------------------------- layout


def seconds(samples: int) -> float:
    return samples / SAMPLE_RATE


def to_samples(secs: float) -> int:
    return round(secs * SAMPLE_RATE)


def lay_out_turns(conv: Conversation, turns: list[Utterance], rng: random.Random) -> None:
    cursor = to_samples(EDGE_SILENCE_S)  # end of the latest turn so far
    for i, utt in enumerate(turns):
        if i == 0:
            utt.start = cursor
        elif conv.overlap_every and i % conv.overlap_every == 1:
            utt.start = turns[i - 1].end - to_samples(rng.uniform(*OVERLAP_S))
        else:
            utt.start = cursor + to_samples(rng.uniform(*GAP_S))
        cursor = max(cursor, utt.end)


def place_backchannel(conv: Conversation, host: int, bc: Utterance, turns: list[Utterance], rng: random.Random) -> None:
    """Put bc inside turn host, clear of the host's edges and of bc's speaker's own turns."""
    lo = turns[host].start + to_samples(BACKCHANNEL_MARGIN_S)
    hi = turns[host].end - to_samples(BACKCHANNEL_MARGIN_S) - len(bc.audio)
    clearance = to_samples(BACKCHANNEL_CLEARANCE_S)
    for other in turns:
        if other.speaker != bc.speaker:
            continue
        if other.end <= turns[host].start + (turns[host].end - turns[host].start) // 2:
            lo = max(lo, other.end + clearance)
        else:
            hi = min(hi, other.start - clearance - len(bc.audio))
    if hi < lo:
        raise RuntimeError(f"{conv.name}: no room for back-channel {bc.text!r} in turn {host}")
    bc.start = lo + round(rng.uniform(0.25, 0.75) * (hi - lo))


def listener_of(conv: Conversation, speaker: str) -> str:
    return next(s for s in conv.voices if s != speaker)


# ----------------------------------------------------------------------------------------- output


def fmt(x: float) -> str:
    return f"{x:.3f}"


def overlap_seconds(utterances: Sequence[Utterance], n: int) -> float:
    active = np.zeros(n, dtype=np.int16)
    for utt in utterances:
        active[utt.start : utt.end] += 1
    return seconds(int(np.count_nonzero(active >= 2)))


def check(conv: Conversation, utterances: Sequence[Utterance]) -> None:
    for spk in conv.voices:
        own = sorted((u for u in utterances if u.speaker == spk), key=lambda u: u.start)
        if not own:
            raise RuntimeError(f"{conv.name}: {spk} never speaks")
        for a, b in itertools.pairwise(own):
            if b.start < a.end:
                raise RuntimeError(f"{conv.name}: {spk} overlaps itself at {seconds(b.start):.2f}s")


def render(
    conv: Conversation, synth: Mapping[SynthKey, tuple[FloatArray, int]], out: Path, word_timing: WordTiming
) -> tuple[list[Path], dict[str, Any]]:
    rng = random.Random(conv.name)
    turns = [make_utterance(conv, spk, text, False, synth, word_timing) for spk, text in conv.turns]
    lay_out_turns(conv, turns, rng)
    backchannels: list[Utterance] = []
    for host, text in conv.backchannels:
        bc = make_utterance(conv, listener_of(conv, turns[host].speaker), text, True, synth, word_timing)
        place_backchannel(conv, host, bc, turns, rng)
        backchannels.append(bc)
    utterances = sorted(turns + backchannels, key=lambda u: (u.start, u.end, u.speaker))
    check(conv, utterances)

    n = max(u.end for u in utterances) + to_samples(EDGE_SILENCE_S)
    mix = np.zeros(n, dtype=np.float64)
    for utt in utterances:
        mix[utt.start : utt.end] += utt.audio
    mix *= 10 ** (PEAK_DBFS / 20) / np.max(np.abs(mix))
    pcm = np.round(np.clip(mix, -1.0, 1.0) * 32767).astype(np.int16)

    wav_path, rttm_path, words_path = (out / f"{conv.name}{ext}" for ext in (".wav", ".rttm", ".words.json"))
    sf.write(str(wav_path), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    rttm = "".join(
        f"SPEAKER {conv.name} 1 {fmt(seconds(u.start))} {fmt(round(seconds(u.end), 3) - round(seconds(u.start), 3))} "
        f"<NA> <NA> {u.speaker} <NA> <NA>\n"
        for u in utterances
    )
    rttm_path.write_text(rttm, encoding="utf-8")
    words = sorted(
        (
            {
                "word": w,
                "start": round(seconds(u.start + s), 3),
                "end": round(seconds(u.start + e), 3),
                "speaker": u.speaker,
            }
            for u in utterances
            for w, s, e in u.words
        ),
        key=lambda d: (d["start"], d["end"], d["speaker"]),
    )
    words_path.write_text(
        "[\n" + ",\n".join(json.dumps(w, ensure_ascii=False) for w in words) + "\n]\n", encoding="utf-8"
    )

    entry: dict[str, Any] = {
        "language": conv.language,
        "description": conv.description,
        "num_speakers": len(conv.voices),
        "speakers": [
            {
                "label": spk,
                "espeak_voice": v.espeak_voice(conv.language),
                "gender": v.gender,
                "pitch": v.pitch,
                "speed": v.speed,
                "amplitude": v.amplitude,
                "turns": sum(1 for u in turns if u.speaker == spk),
                "backchannels": sum(1 for u in backchannels if u.speaker == spk),
            }
            for spk, v in conv.voices.items()
        ],
        "duration": round(seconds(n), 3),
        "sample_rate": SAMPLE_RATE,
        "turns": len(turns),
        "backchannels": len(backchannels),
        "words": len(words),
        "overlap_seconds": round(overlap_seconds(utterances, n), 3),
        "word_timing": word_timing,
        "files": {"audio": wav_path.name, "rttm": rttm_path.name, "words": words_path.name},
    }
    return [wav_path, rttm_path, words_path], entry


def write_manifest(out: Path, entries: Mapping[str, dict[str, Any]], version: str) -> Path:
    path = out / "manifest.json"
    merged: dict[str, Any] = {}
    if path.exists():  # keep the entries of conversations not rebuilt this time (--only)
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("conversations", {})
            merged = {k: v for k, v in old.items() if k in CONVERSATION_NAMES} if isinstance(old, dict) else {}
        except (ValueError, AttributeError):
            merged = {}
    merged.update(entries)
    manifest = {
        "generator": "benchmarks/diarization_data.py",
        "espeak_ng": version,
        "sample_rate": SAMPLE_RATE,
        "note": "word timings are approximate (see word_timing and the generator's docstring); turn boundaries are exact",
        "conversations": {name: merged[name] for name in CONVERSATION_NAMES if name in merged},
    }
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def build(out: Path, only: str | None = None, word_timing: WordTiming = "suffix") -> list[Path]:
    """Generate the set (or just conversation only) into out; returns the files written.

    word_timing picks how word boundaries are estimated (see the module docstring).
    """
    if only is not None and only not in CONVERSATION_NAMES:
        raise ValueError(f"unknown conversation {only!r}; choose from {', '.join(CONVERSATION_NAMES)}")
    version = espeak_version()
    selected = [c for c in CONVERSATIONS if only is None or c.name == only]
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    entries: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="diarization-") as tmp:
        for conv in selected:
            keys = [k for spk, text in conv.turns for k in synth_keys(conv, spk, text, word_timing)]
            for host, text in conv.backchannels:
                keys += synth_keys(conv, listener_of(conv, conv.turns[host][0]), text, word_timing)
            files, entry = render(conv, synthesize_all(keys, Path(tmp)), out, word_timing)
            written += files
            entries[conv.name] = entry
            print(
                f"{conv.name:<10} {entry['duration']:6.2f} s  speakers={entry['num_speakers']}  "
                f"turns={entry['turns']}"
                + (f" (+{entry['backchannels']} back-channels)" if entry["backchannels"] else "")
                + f"  words={entry['words']}  overlap={entry['overlap_seconds']:.2f} s",
                flush=True,
            )
    written.append(write_manifest(out, entries, version))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--only", choices=CONVERSATION_NAMES, help="build just this conversation")
    parser.add_argument(
        "--word-timing",
        choices=WORD_TIMINGS,
        default="suffix",
        help="estimate word boundaries from prefix (default) or suffix renderings; see the module docstring",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    files = build(args.out, args.only, args.word_timing)
    print(f"wrote {len(files)} files to {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
