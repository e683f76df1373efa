"""Seeded synthetic voice-note datasets: synthetic speech (espeak-ng, festival, flite) inside a realistic chat stream.

Why this exists: the matcher, the tests, the demo and the benchmarks need data with
the hard cases measured on real chats (see docs: "Pitfalls measured on realistic
data") - spoken codes typed as digits, chat-style abbreviations and typos,
near-duplicate distractors, overlapping windows, noisy and 8 kHz telephone audio,
notes whose typed message never shows up. Everything random is drawn up front from
one seeded generator, so the same config writes byte-identical ``chats.jsonl``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from scipy.signal import butter, resample_poly, sosfiltfilt

from benchmarks.synth_phrases import (
    ABBREVIATIONS,
    CHAT_TEMPLATES,
    CHATTER,
    CLASS_PHRASES,
    CODE_TEMPLATES,
    EMOJI,
    NAMES,
    SLOTS,
    SPOKEN_FILLERS,
    SWAPS,
    TAILS,
)

__all__ = [
    "SynthConfig",
    "SynthInfo",
    "SynthError",
    "make_dataset",
    "plan_dataset",
    "SynthPlan",
    "closed_class_dataset",
    "speak",
    "spoken_form",
    "engine_of",
    "DEMO",
    "HARD",
    "CLASS_PHRASES",
]

ESPEAK_RATE = 22050
TELEPHONE_RATE = 8000
FLAT_RATE = 16000  # where pitch-shifted HTS speech is resampled to

# Engines besides espeak-ng, so data is not shaped by one synthesiser: a voice
# "festival:<name>" runs text2wave (Debian festival + festvox-* voices), "flite:<name>"
# runs flite with a built-in voice (`flite -lv`). Tool and Debian package per engine:
ENGINE_TOOLS: dict[str, tuple[str, str]] = {
    "espeak-ng": ("espeak-ng", "espeak-ng"),
    "festival": ("text2wave", "festival"),
    "flite": ("flite", "flite"),
}
REFERENCE_WPM = 165  # the speed at which festival and flite voices keep their own pace
FLITE_F0 = {"slt": 172.0, "kal": 98.0, "kal16": 99.0, "awb": 132.0, "awb_time": 132.0, "rms": 100.0}  # measured
AUDIO_FORMATS = ("wav", "ogg", "mp3", "m4a", "flac", "webm")

# Voice + variant pairs that exist in a stock espeak-ng install (no mbrola needed).
# Measured with tiny.en on clean speech at 160 wpm (WER against the spoken text, which
# counts "four fifteen" vs "4:15" as errors): en-us, en-gb-x-rp, en-us+m7 ~0.1-0.15;
# en-gb+f3/+m5/+Alicia, klatt ~0.23; +f2, +steph ~0.3; the regional accents
# (scotland, nyc, caribbean, west midlands, lancaster) 0.43-0.64. The default mix keeps
# two accents; WIDE_VOICES (HARD, closed-class) has all of them.
DEFAULT_VOICES: tuple[str, ...] = (
    "en-us",
    "en-us+f2",
    "en-gb+f3",
    "en-gb-x-rp",
    "en-gb+m5",
    "en-us+steph",
    "en-us+m7",
    "en-gb+Alicia",
    "en-us-nyc+Andy",
    "en-gb-scotland+m3",
)
WIDE_VOICES: tuple[str, ...] = DEFAULT_VOICES + (
    "en-029+f4",
    "en-gb-x-gbcwmd+Annie",
    "en-gb-x-gbclan+f5",
    "en-us+klatt",
    "en-gb-x-rp+f1",
    "en-029+Michael",
    "en-us-nyc+belinda",
    "en-gb-scotland+Andrea",
)


# Where the typed message sits in its note's window under position="early": a sender who
# types right after speaking, as the first generator assumed (28% first, 1% last).
_EARLY_WEIGHTS = np.array([0.28, 0.24, 0.17, 0.12, 0.08, 0.06, 0.02, 0.01, 0.01, 0.01])
BUSY_GAP = 4  # position="busy": a note at most this many texts after the previous one is "busy"
POSITIONS = ("early", "uniform", "late", "busy")
CONTENTS = ("chat", "codes", "closed")
BARE_CODE = -1  # code template index of a code said with nothing before it


class SynthError(RuntimeError):
    """A tool needed for synthesis is missing or failed on a clip."""


@dataclass
class SynthConfig:
    """What kind of dataset to generate; every field has a realistic default."""

    n_notes: int = 40
    seed: int = 0
    window: int = 10
    gold_fraction: float = 0.3
    missing_truth_fraction: float = 0.0
    noise_snr_db: tuple[float, float] | None = None
    noisy_fraction: float = 0.0
    telephone_fraction: float = 0.0
    formats: tuple[str, ...] = ("wav",)
    near_duplicates: bool = True
    typed_style: float = 0.6
    codes: float = 0.15
    voices: tuple[str, ...] = DEFAULT_VOICES
    speeds: tuple[int, int] = (130, 185)
    typo_rate: float = 0.12          # share of chat-style typed messages with one typo
    spoken_filler: float = 0.08      # share of notes that open with "hey,"/"so," (spoken only)
    workers: int = 0                 # audio threads; 0 = one per CPU core
    # Where the right message sits in the window of 10 (its 1-based position):
    #   "early"   - today's habit: 28% first, 24% second, ... 1% last (default);
    #   "uniform" - any position equally likely, as in the held-out logs users brought;
    #   "late"    - the mirror of early: 28% last, 1% first;
    #   "busy"    - depends on how busy the chat is: a note that comes at most BUSY_GAP
    #               text messages after the previous note (about a third of notes) draws
    #               from "late" (others talk in between), every other note from "early".
    position: str = "early"
    # What is said and typed:
    #   "chat"   - free chat; a share `codes` of notes are spoken codes (default);
    #   "codes"  - every note a bare 3-4 digit code read digit by digit, typed "583",
    #              "5 8 3", "code 583" or "583 ok"; every other text is a code too, half of
    #              them one digit off (or two swapped) a code nearby, so digits must decide;
    #   "closed" - a closed set of phrases (CLASS_PHRASES), spread evenly over the notes,
    #              as closed_class_dataset makes; truth.jsonl gains "class".
    content: str = "chat"

    def validate(self) -> None:
        """Reject configs that would silently produce a broken dataset."""
        if self.n_notes < 1 or self.window < 1:
            raise ValueError("n_notes and window must be at least 1")
        for name in ("gold_fraction", "missing_truth_fraction", "noisy_fraction",
                     "telephone_fraction", "typed_style", "codes", "typo_rate", "spoken_filler"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        bad = [f for f in self.formats if f not in AUDIO_FORMATS]
        if bad or not self.formats:
            raise ValueError(f"formats must be drawn from {AUDIO_FORMATS}, got {self.formats}")
        if not self.voices:
            raise ValueError("at least one voice is needed")
        for voice in self.voices:
            engine_of(voice)
        if self.noisy_fraction > 0 and self.noise_snr_db is None:
            raise ValueError("noisy_fraction > 0 needs noise_snr_db=(low, high)")
        if self.content not in CONTENTS:
            raise ValueError(f"content must be one of {CONTENTS}, got {self.content!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.speeds[0] > self.speeds[1] or self.speeds[0] < 60:
            raise ValueError(f"speeds must be an increasing (low, high) pair >= 60, got {self.speeds}")


@dataclass
class SynthInfo:
    """Where a generated dataset lives."""

    folder: Path
    chats: Path
    manifest: Path
    truth: Path
    recordings: Path
    n_notes: int
    seconds: float = 0.0  # wall time of the whole generation

    @property
    def seconds_per_note(self) -> float:
        return self.seconds / max(self.n_notes, 1)


# --------------------------------------------------------------------------- numbers as words

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
        "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> str:
    """Spell out 0..999999 the way people say it ("one hundred and five")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    joiner = " and " if 0 < rest < 100 else " "
    return f"{number_words(thousands)} thousand" + (joiner + number_words(rest) if rest else "")


def ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    if last in _ORD:
        words[-1] = _ORD[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _time_words(hour: str, minute: str | None, ampm: str | None) -> str:
    out = number_words(int(hour))
    if minute is not None and int(minute) != 0:
        m = int(minute)
        out += " " + (f"oh {number_words(m)}" if m < 10 else number_words(m))
    if ampm:
        out += " " + " ".join(ampm.lower())
    return out


def digit_words(digits: str, rng: np.random.Generator | None = None) -> str:
    """Say a code digit by digit; zero is "zero" or "oh" like people do."""
    words = []
    for d in digits:
        if d == "0" and rng is not None and rng.random() < 0.4:
            words.append("oh")
        else:
            words.append(_ONES[int(d)])
    return " ".join(words)


def spoken_form(text: str) -> str:
    """Turn a written message into what a speaker says: numbers, times, prices as words."""
    s = text
    s = re.sub(r"(\d{1,2}):(\d{2})\s*(am|pm)?\b",
               lambda m: _time_words(m.group(1), m.group(2), m.group(3)), s)
    s = re.sub(r"\b(\d{1,2})\s*(am|pm)\b", lambda m: _time_words(m.group(1), None, m.group(2)), s)
    s = re.sub(r"\$(\d+)", lambda m: number_words(int(m.group(1))) + " dollars", s)
    s = re.sub(r"£(\d+)", lambda m: number_words(int(m.group(1))) + " pounds", s)
    s = re.sub(r"(\d+)%", lambda m: number_words(int(m.group(1))) + " percent", s)
    s = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: ordinal_words(int(m.group(1))), s)
    s = re.sub(r"\d+", lambda m: number_words(int(m.group(0))), s)
    return re.sub(r"\s+", " ", s).strip()


# --------------------------------------------------------------------------- messages


@dataclass
class _Message:
    """One thing a person means to say, before it is spoken or typed."""

    template: str
    values: dict[str, str] = field(default_factory=dict)
    code: tuple[int, str, str] | None = None  # (CODE_TEMPLATES index, digits, typed prefix)
    tail: str = ""

    def canonical(self) -> str:
        if self.code is not None:
            return f"{_said_prefix(self.code[0])} {self.code[1]}".strip()
        text = self.template.format(**self.values)
        if not self.tail:
            return text
        if text.endswith("?") and not self.tail.endswith("?"):
            return f"{text[:-1]} {self.tail}?"  # "lunch at 1 too?", not "lunch at 1? too"
        return f"{text} {self.tail}"

    def key(self) -> str:
        """Meaning-level identity, so two messages that mean the same are never both candidates."""
        return _norm(self.canonical())


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _choice(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _fill(template: str, rng: np.random.Generator) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in re.findall(r"{(\w+)}", template):
        pool = SLOTS[name.rstrip("0123456789")]
        taken = {v for k, v in values.items() if k.rstrip("0123456789") == name.rstrip("0123456789")}
        values[name] = _choice(rng, [v for v in pool if v not in taken])
    return values


def _said_prefix(index: int) -> str:
    """What is said before a code's digits ("the door code is"); nothing for a bare code."""
    return "" if index == BARE_CODE else CODE_TEMPLATES[index][0]


def _bare_code(rng: np.random.Generator) -> _Message:
    """A 3-4 digit code said on its own, typed "583", "5 8 3", "code 583" or "583 ok"."""
    first = str(int(rng.integers(1, 10)))
    digits = first + "".join(str(int(d)) for d in rng.integers(0, 10, int(rng.integers(2, 4))))
    return _Message(template="", code=(BARE_CODE, digits, "code"))


def _new_code(rng: np.random.Generator, index: int | None = None) -> _Message:
    index = int(rng.integers(len(CODE_TEMPLATES))) if index is None else index
    _, prefixes, n_digits = CODE_TEMPLATES[index]
    first = str(int(rng.integers(1, 10)))
    digits = first + "".join(str(int(d)) for d in rng.integers(0, 10, n_digits - 1))
    return _Message(template="", code=(index, digits, _choice(rng, prefixes)))


def _code_spoken(msg: _Message, rng: np.random.Generator) -> str:
    assert msg.code is not None
    prefix = _said_prefix(msg.code[0])
    digits = msg.code[1]
    if len(digits) == 4 and digits[2] != "0" and rng.random() < 0.25:
        said = f"{number_words(int(digits[:2]))} {number_words(int(digits[2:]))}"  # "eleven fifty eight"
    else:
        said = digit_words(digits, rng)
    return f"{prefix} {said}".strip()


def _code_typed(msg: _Message, rng: np.random.Generator) -> str:
    assert msg.code is not None
    _, digits, prefix = msg.code
    body = " ".join(digits) if rng.random() < 0.2 else digits
    r = rng.random()
    if r < 0.3:
        out = body
    elif r < 0.75:
        out = f"{prefix} {body}".strip()
    elif r < 0.9:
        out = f"{body} ok"
    else:
        out = f"its {body}"
    if rng.random() < 0.15:
        out += " " + _choice(rng, ("thx", "👍", "x", "!!"))
    return out


def _typo(word: str, rng: np.random.Generator) -> str:
    """One realistic slip: doubled, dropped, swapped or neighbouring key."""
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(4))
    if kind == 0:
        return word[:i] + word[i] + word[i:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    neighbours = {"a": "s", "s": "d", "e": "r", "r": "e", "i": "o", "o": "i", "n": "m", "m": "n",
                  "t": "y", "u": "i", "l": "k", "h": "j", "c": "v", "b": "n", "g": "h", "d": "f"}
    if word[i] not in neighbours:
        return word[:i] + word[i] + word[i:]
    return word[:i] + neighbours[word[i]] + word[i + 1:]


def _typed_form(msg: _Message, cfg: SynthConfig, rng: np.random.Generator) -> tuple[str, bool]:
    """What the sender types for this message; returns (text, has_typo)."""
    if msg.code is not None:
        return _code_typed(msg, rng), False
    text = msg.canonical()
    if rng.random() >= cfg.typed_style:
        text = text[0].upper() + text[1:]
        text = re.sub(r"\bi\b", "I", text)
        if not re.search(r"[?!.]$", text) and rng.random() < 0.5:
            text += "."
        return text, False
    text = text.lower()
    for pattern, options in ABBREVIATIONS:
        if re.search(pattern, text) and rng.random() < 0.65:
            text = re.sub(pattern, _choice(rng, options), text)
    text = re.sub(r"(\d+)pm\b", lambda m: m.group(1) + _choice(rng, ("pm", " pm", "")), text)
    if rng.random() < 0.8:
        text = re.sub(r"[,.;]", "", text)
    if rng.random() < 0.5:
        text = text.rstrip("?!.")
    typo = False
    if rng.random() < cfg.typo_rate:
        words = text.split(" ")
        long = [k for k, w in enumerate(words) if re.fullmatch(r"[a-z]{4,}", w)]
        if long:
            k = _choice(rng, long)
            words[k] = _typo(words[k], rng)
            text, typo = " ".join(words), True
    if rng.random() < 0.2:
        text += " " + _choice(rng, EMOJI)
    return re.sub(r"\s+", " ", text).strip(), typo


def _near_duplicate(msg: _Message, rng: np.random.Generator) -> _Message:
    """A message that differs from msg by a word or a number: the hardest distractor."""
    if msg.code is not None:
        idx, digits, prefix = msg.code
        chars = list(digits)
        if len(chars) > 1 and rng.random() < 0.4:
            k = int(rng.integers(len(chars) - 1))
            if chars[k] != chars[k + 1]:
                chars[k], chars[k + 1] = chars[k + 1], chars[k]
                return _Message("", code=(idx, "".join(chars), prefix))
        k = int(rng.integers(len(chars)))
        chars[k] = _choice(rng, [d for d in "0123456789" if d != chars[k] and (k or d != "0")])
        return _Message("", code=(idx, "".join(chars), prefix))
    options = []
    if msg.values:
        options.append("slot")
    words = msg.canonical().lower().split()
    if any(w.strip("?,.!") in SWAPS for w in words):
        options.append("swap")
    options.append("tail")
    how = _choice(rng, options)
    if how == "slot":
        name = _choice(rng, sorted(msg.values))
        pool = [v for v in SLOTS[name.rstrip("0123456789")] if v not in msg.values.values()]
        values = dict(msg.values)
        values[name] = _choice(rng, pool)
        tail = _choice(rng, TAILS) if rng.random() < 0.3 else msg.tail
        return _Message(msg.template, values, tail=tail)
    if how == "swap":
        template = msg.template
        for w in re.findall(r"[a-z]+", template.lower()):
            if w in SWAPS:
                template = re.sub(rf"\b{w}\b", _choice(rng, SWAPS[w]), template, count=1)
                break
        return _Message(template, dict(msg.values), tail=msg.tail)
    tail = _choice(rng, [t for t in TAILS if t != msg.tail])
    return _Message(msg.template, dict(msg.values), tail=tail)


# --------------------------------------------------------------------------- chat layout


@dataclass
class _NotePlan:
    """Everything decided for one voice note before any audio is made."""

    index: int
    note_id: str
    sender: str
    msg: _Message
    typed: str
    spoken: str
    typo: bool
    missing: bool
    voice: str
    speed: int
    pitch: int
    fmt: str
    snr_db: float | None
    noise_kind: str | None
    telephone: bool
    audio_seed: int
    klass: int | None = None
    start: int = 0          # number of text messages before this note
    slot: int | None = None  # global text index of the typed message (None: never typed)


def _pick_messages(cfg: SynthConfig, rng: np.random.Generator) -> list[_Message]:
    """Draw note messages, avoiding a template reused within the last few notes."""
    recent: list[str] = []
    out: list[_Message] = []
    for _ in range(cfg.n_notes):
        if cfg.content == "codes":
            msg, ident = _bare_code(rng), "code"
        elif rng.random() < cfg.codes:
            msg = _new_code(rng)
            ident = f"code{msg.code[0]}"  # type: ignore[index]
        else:
            choices = [t for t in CHAT_TEMPLATES if t not in recent]
            template = _choice(rng, choices)
            msg = _Message(template, _fill(template, rng))
            ident = template
        out.append(msg)
        recent = (recent + [ident])[-40:]
    return out


def _plan_notes(cfg: SynthConfig, messages: list[_Message], rng: np.random.Generator,
                classes: list[int] | None = None) -> list[_NotePlan]:
    plans = []
    n = len(messages)
    n_missing = round(cfg.missing_truth_fraction * n)
    missing = set(rng.choice(n, size=n_missing, replace=False).tolist()) if n_missing else set()
    for i, msg in enumerate(messages):
        typed, typo = _typed_form(msg, cfg, rng)
        spoken = _code_spoken(msg, rng) if msg.code is not None else spoken_form(msg.canonical())
        if rng.random() < cfg.spoken_filler:
            spoken = f"{_choice(rng, SPOKEN_FILLERS)} {spoken}"
        noisy = cfg.noise_snr_db is not None and rng.random() < cfg.noisy_fraction
        snr = round(float(rng.uniform(*cfg.noise_snr_db)), 1) if noisy else None  # type: ignore[misc]
        plans.append(_NotePlan(
            index=i, note_id=f"v{i + 1:04d}", sender=_choice(rng, NAMES[:6]), msg=msg,
            typed=typed, spoken=spoken, typo=typo, missing=i in missing,
            voice=_choice(rng, cfg.voices), speed=int(rng.integers(cfg.speeds[0], cfg.speeds[1] + 1)),
            pitch=int(rng.integers(30, 71)), fmt=_choice(rng, cfg.formats), snr_db=snr,
            noise_kind=_choice(rng, ("white", "pink", "babble")) if noisy else None,
            telephone=bool(rng.random() < cfg.telephone_fraction),
            audio_seed=int(rng.integers(2**31)), klass=None if classes is None else classes[i],
        ))
    return plans


def _layout(cfg: SynthConfig, plans: list[_NotePlan], rng: np.random.Generator) -> int:
    """Place voice notes and their typed messages on the text-message axis; returns #texts.

    Each note's typed message draws its window position from the weights cfg.position
    names (all modes draw the same random numbers, so "early" reproduces old datasets).
    """
    w = cfg.window
    taken: set[int] = set()
    start = int(rng.integers(0, 3))
    early = _EARLY_WEIGHTS[:w] / _EARLY_WEIGHTS[:w].sum()
    weights = {"early": early, "uniform": np.full(w, 1.0 / w), "late": early[::-1].copy()}
    gap: int | None = None
    for p in plans:
        if p.index:
            r = rng.random()
            gap = int(rng.integers(1, 5)) if r < 0.35 else int(rng.integers(5, 11)) if r < 0.85 \
                else int(rng.integers(11, 21))
            start += gap
        if cfg.position == "busy":
            position_weights = weights["late" if gap is not None and gap <= BUSY_GAP else "early"]
        else:
            position_weights = weights[cfg.position]
        while True:
            free = [k for k in range(w) if start + k not in taken]
            if free or p.missing:
                break
            start += 1
        p.start = start
        if p.missing:
            # never typed, or typed only after `window` other messages
            late = start + w + int(rng.integers(0, 4))
            p.slot = late if rng.random() < 0.5 and late not in taken else None
        else:
            order = rng.choice(w, size=w, replace=False, p=position_weights)
            p.slot = start + next(int(k) for k in order if start + int(k) not in taken)
        if p.slot is not None:
            taken.add(p.slot)
    last = max([p.start + w for p in plans] + [p.slot + 1 for p in plans if p.slot is not None])
    return last + int(rng.integers(0, 3))


def _fallback_chatter(rng: np.random.Generator, avoid: set[str]) -> str:
    """Two chatter lines run together; used only when every single line would clash."""
    while True:
        text = f"{_choice(rng, CHATTER)} {_choice(rng, CHATTER)}"
        if text not in avoid and _norm(text) not in avoid:
            return text


def _fill_code(slot: int, who: str, covering: list[_NotePlan], put, rng: np.random.Generator) -> bool:
    """Codes-only logs: a free slot gets another code, half the time one digit off the code
    of a note whose window holds the slot (put() refuses a second right answer)."""
    for _ in range(8):
        if covering and rng.random() < 0.5:
            msg = _near_duplicate(_choice(rng, covering).msg, rng)
        else:
            msg = _bare_code(rng)
        if put(slot, who, msg):
            return True
    return False


def _build_stream(cfg: SynthConfig, plans: list[_NotePlan], n_texts: int,
                  rng: np.random.Generator, avoid: set[str]) -> tuple[list[dict], dict[str, str]]:
    """Fill every text slot (truths, near-duplicates, chatter) and interleave the voice notes.

    Returns the chat events and, per note id, the id of the message its sender typed.
    Chatter whose meaning contains a phrase in `avoid` is never used (closed-class data).
    """
    w = cfg.window
    texts: list[tuple[str, str, str | None] | None] = [None] * n_texts  # (from, text, meaning key)
    keys_in_window: list[set[str]] = [set() for _ in range(n_texts)]
    for p in plans:
        if p.slot is not None:
            texts[p.slot] = (p.sender, p.typed, p.msg.key())
        for s in range(p.start, min(p.start + w, n_texts)):  # missing notes too: no stand-ins
            keys_in_window[s].add(p.msg.key())

    def free_in(p: _NotePlan) -> list[int]:
        return [s for s in range(p.start, min(p.start + w, n_texts)) if texts[s] is None]

    def put(slot: int, who: str, msg: _Message) -> bool:
        key = msg.key()
        if key in keys_in_window[slot]:  # would be a second right answer for some note
            return False
        typed, _ = _typed_form(msg, cfg, rng)
        texts[slot] = (who, typed, key)
        return True

    def clashes(text: str) -> bool:
        padded = f" {_norm(text)} "
        return any(f" {a} " in padded or padded.strip() in f" {a} " for a in avoid)

    others = {p.sender: [n for n in NAMES[:6] if n != p.sender] for p in plans}
    if cfg.near_duplicates:
        for i, p in enumerate(plans):
            n_dups = int(rng.choice([0, 1, 2], p=[0.1, 0.6, 0.3]))
            sources = [p] * n_dups
            if rng.random() < 0.3:
                sources.append(plans[min(len(plans) - 1, i + 1)] if rng.random() < 0.5 else plans[max(0, i - 1)])
            for src in sources:
                free = free_in(p)
                if not free:
                    break
                slot = _choice(rng, free)
                who = p.sender if rng.random() < 0.15 else _choice(rng, others[p.sender])
                for _ in range(4):
                    if put(slot, who, _near_duplicate(src.msg, rng)):
                        break

    recent_templates = {p.msg.template for p in plans}
    covering: dict[int, list[_NotePlan]] = {}  # slot -> notes whose window holds it (codes only)
    if cfg.content == "codes":
        for p in plans:
            for s in range(p.start, p.start + w):
                covering.setdefault(s, []).append(p)
    for s in range(n_texts):
        if texts[s] is not None:
            continue
        who = _choice(rng, NAMES[:6])
        if cfg.content == "codes" and _fill_code(s, who, covering.get(s, []), put, rng):
            continue
        nearby = {_norm(t[1]) for t in texts[max(0, s - w):s + w] if t is not None}
        for _ in range(20):
            if rng.random() < 0.55:
                line = _choice(rng, CHATTER)
                if _norm(line) not in nearby and _norm(line) not in keys_in_window[s] \
                        and not clashes(line):
                    texts[s] = (who, line, None)
                    break
            else:
                template = _choice(rng, CHAT_TEMPLATES)
                if template in recent_templates and rng.random() < 0.8:
                    continue
                filler = _Message(template, _fill(template, rng))
                if clashes(filler.canonical()) or clashes(spoken_form(filler.canonical())):
                    continue
                if put(s, who, filler):
                    break
        if texts[s] is None:
            texts[s] = (who, _fallback_chatter(rng, nearby | keys_in_window[s]), None)

    # A typed string may occur once per window, or the manifest's text label would be ambiguous.
    truth_slots = {p.slot for p in plans if p.slot is not None}
    for p in plans:
        if p.slot is None:
            continue
        for s in range(p.start, min(p.start + w, n_texts)):
            entry = texts[s]
            if s not in truth_slots and entry is not None and entry[1] == p.typed:
                texts[s] = (entry[0], _fallback_chatter(rng, {p.typed}), None)

    # Interleave: a voice note goes right before its first candidate.
    events: list[dict] = []
    by_start: dict[int, list[_NotePlan]] = {}
    for p in plans:
        by_start.setdefault(p.start, []).append(p)
    clock = datetime(2024, 3, 2, 8, 30, tzinfo=timezone.utc) + timedelta(
        days=int(rng.integers(0, 300)), minutes=int(rng.integers(0, 240)))
    slot_owner = {p.slot: p.note_id for p in plans if p.slot is not None}
    typed_ids: dict[str, str] = {}
    msg_no = 0

    busy_until = 0  # while an earlier note still waits for its typed text, the chat is lively

    def tick(kind: str, s: int) -> str:
        nonlocal clock
        r = rng.random()
        if kind == "voice" and s < busy_until:
            step = rng.uniform(3, 25)
        elif kind == "voice":
            step = rng.uniform(20, 90) if r < 0.6 else rng.uniform(90, 1800)
        else:
            step = rng.uniform(2, 12) if r < 0.8 else rng.uniform(12, 40)
        clock += timedelta(seconds=round(float(step)))
        return clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    for s in range(n_texts):
        for p in by_start.get(s, []):
            events.append({"id": p.note_id, "ts": tick("voice", s), "from": p.sender, "type": "voice",
                           "file": f"{p.note_id}.{p.fmt}"})
            busy_until = max(busy_until, (p.slot if p.slot is not None else p.start) + 1)
        who, text, _ = texts[s]  # type: ignore[misc]
        msg_no += 1
        mid = f"m{msg_no:05d}"
        events.append({"id": mid, "ts": tick("text", s), "from": who, "type": "text", "text": text})
        if s in slot_owner:
            typed_ids[slot_owner[s]] = mid
    return events, typed_ids


# --------------------------------------------------------------------------- audio


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise SynthError(f"{tool} is not on PATH; install it (e.g. `apt-get install {package}`)")


def _run(args: list[str], data: bytes | None = None) -> bytes:
    """Run a tool without a shell; a non-zero exit becomes a SynthError with its stderr."""
    try:
        proc = subprocess.run(args, input=data, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise SynthError(f"{args[0]} is not installed") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", errors="replace").strip()[-600:]
        raise SynthError(f"{args[0]} failed with exit code {proc.returncode}: {err}")
    return proc.stdout


def _espeak_args(voice: str, speed: int, pitch: int) -> list[str]:
    return ["espeak-ng", "-v", voice, "-s", str(int(speed)), "-p", str(int(pitch)), "--stdin"]


def engine_of(voice: str) -> tuple[str, str]:
    """Split an engine-qualified voice: "festival:kal_diphone" -> ("festival", "kal_diphone").

    A bare name is an espeak-ng voice, so every config written before engines existed
    keeps its meaning.
    """
    engine, sep, name = voice.partition(":")
    if not sep:
        return "espeak-ng", voice
    if engine not in ENGINE_TOOLS or engine == "espeak-ng":
        raise ValueError(f"unknown speech engine {engine!r} in voice {voice!r}; use festival: or flite:")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):  # festival voices become Scheme code
        raise ValueError(f"bad voice name {name!r} in {voice!r}")
    return engine, name


def _pitch_factor(pitch: int) -> float:
    """espeak-ng's pitch (0-99, 50 neutral) as a frequency ratio: 30..70 is about -2..+2 semitones."""
    return 2.0 ** ((pitch - 50) / 120)


def _parse_wav(raw: bytes, who: str, text: str) -> tuple[np.ndarray, int]:
    """16-bit mono wav bytes to float32; streamed headers carry bogus sizes, so find "data" by hand."""
    if raw[:4] != b"RIFF" or raw.find(b"data") < 0:
        raise SynthError(f"{who} produced no wav for {text!r}")
    rate = int.from_bytes(raw[24:28], "little")
    pcm = raw[raw.find(b"data") + 8:]
    pcm = pcm[: len(pcm) // 2 * 2]
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    if x.size < rate // 10:
        raise SynthError(f"{who} produced almost no audio for {text!r}")
    return x, rate


def _festival(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """text2wave with speed and pitch mapped onto the voice's own controls.

    Diphone/cluster voices take Duration_Stretch and a scaled target_f0_mean. HTS voices
    ignore both: speed goes to hts_engine's rate (-r), and pitch is made by synthesizing
    k times longer and playing back k times faster (a shorter or longer vocal tract too,
    which is speaker variation all the same).
    """
    stretch = REFERENCE_WPM / speed
    k = _pitch_factor(pitch)
    evals = [f"(voice_{voice})"]
    if voice.endswith("_hts"):
        evals.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {1 / (k * stretch):.4f}))))')
    else:
        evals.append(f"(Parameter.set 'Duration_Stretch {stretch:.4f})")
        evals.append("(set! int_lr_params (cons (list 'target_f0_mean (* "
                     f"{k:.4f} (car (cdr (assoc 'target_f0_mean int_lr_params))))) int_lr_params))")
    args = ["text2wave"] + [a for e in evals for a in ("-eval", e)] + ["-o", "/dev/stdout"]
    x, rate = _parse_wav(_run(args, text.encode("utf-8")), f"festival voice {voice!r}", text)
    if voice.endswith("_hts"):
        played = int(round(rate * k / 10)) * 10
        g = math.gcd(FLAT_RATE, played)
        x, rate = resample_poly(x, FLAT_RATE // g, played // g).astype(np.float32), FLAT_RATE
    return x, rate


def _flite(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """flite with duration_stretch and a target mean F0 scaled from the voice's own (rms ignores it)."""
    f0 = FLITE_F0.get(voice, 120.0) * _pitch_factor(pitch)
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        out = Path(tmp) / "clip.wav"
        _run(["flite", "-voice", voice, "--setf", f"duration_stretch={REFERENCE_WPM / speed:.4f}",
              "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(out)])
        return _parse_wav(out.read_bytes(), f"flite voice {voice!r}", text)


def speak(text: str, out_wav: Path, *, voice: str, speed: int, pitch: int = 50) -> None:
    """Say text into a 16-bit wav (text goes through stdin or argv, never a shell).

    espeak-ng voices write 22.05 kHz; festival and flite voices their own rate.
    """
    engine, _ = engine_of(voice)
    _require(*ENGINE_TOOLS[engine])
    out_wav = Path(out_wav)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    if engine == "espeak-ng":
        _run(_espeak_args(voice, speed, pitch) + ["-w", str(out_wav)], text.encode("utf-8"))
        return
    x, rate = _synthesize(text, voice, speed, pitch)
    out_wav.write_bytes(_wav_bytes(x, rate))


def _synthesize(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """Speech straight to memory with the voice's engine."""
    engine, name = engine_of(voice)
    if engine == "festival":
        return _festival(text, name, speed, pitch)
    if engine == "flite":
        return _flite(text, name, speed, pitch)
    raw = _run(_espeak_args(voice, speed, pitch) + ["--stdout"], text.encode("utf-8"))
    return _parse_wav(raw, f"espeak-ng voice {voice!r}", text)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n).astype(np.float32)


def _speech_power(x: np.ndarray) -> float:
    """Power over the voiced part only, so padding silence does not make the noise quieter than stated."""
    active = x[np.abs(x) > 0.05 * float(np.max(np.abs(x)))]
    return float(np.mean(active**2)) if active.size else float(np.mean(x**2)) + 1e-12


def _add_noise(x: np.ndarray, snr_db: float, kind: str, rng: np.random.Generator,
               babble: np.ndarray | None) -> np.ndarray:
    n = x.size
    if kind == "babble" and babble is not None and babble.size:
        reps = int(math.ceil((n + babble.size) / babble.size))
        start = int(rng.integers(babble.size))
        noise = np.tile(babble, reps)[start:start + n].copy()
    elif kind == "pink":
        noise = _pink(n, rng)
    else:
        noise = rng.standard_normal(n).astype(np.float32)
    noise_power = float(np.mean(noise**2)) + 1e-12
    scale = math.sqrt(_speech_power(x) / (noise_power * 10 ** (snr_db / 10)))
    return x + scale * noise


def _telephone(x: np.ndarray, rate: int) -> np.ndarray:
    """Phone channel: down to 8 kHz, 300-3400 Hz band, a touch of soft clipping."""
    g = math.gcd(rate, TELEPHONE_RATE)
    y = resample_poly(x, TELEPHONE_RATE // g, rate // g)
    sos = butter(4, [300, 3400], btype="bandpass", fs=TELEPHONE_RATE, output="sos")
    y = sosfiltfilt(sos, y)
    peak = float(np.max(np.abs(y))) + 1e-9
    return (np.tanh(1.2 * y / peak) * peak / math.tanh(1.2)).astype(np.float32)


def _wav_bytes(x: np.ndarray, rate: int) -> bytes:
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


_CODEC_ARGS: dict[str, list[str]] = {
    # Opus at 16 kHz like messenger voice notes; compression level 5 is ~3x faster than 10.
    "ogg": ["-c:a", "libopus", "-b:a", "24k", "-compression_level", "5", "-application", "voip", "-f", "ogg"],
    "webm": ["-c:a", "libopus", "-b:a", "32k", "-compression_level", "5", "-f", "webm"],
    "mp3": ["-c:a", "libmp3lame", "-q:a", "5", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "48k", "-f", "ipod"],
    "flac": ["-c:a", "flac", "-f", "flac"],
}
_ENCODE_BATCH = 24  # ffmpeg costs ~0.2 s just to start here, so encode many clips per process


@dataclass
class _Encode:
    """One clip waiting for ffmpeg: a temporary wav and where its encoded version goes."""

    wav: Path
    out: Path
    fmt: str
    rate: int


def _encode_batch(items: list[_Encode]) -> None:
    """Encode several wavs with one ffmpeg process (one input and one output per clip)."""
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    for it in items:
        args += ["-i", str(it.wav)]
    for k, it in enumerate(items):
        args += ["-map", f"{k}:a", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact"]
        if it.fmt in ("ogg", "webm") and it.rate not in (8000, 12000, 16000, 24000, 48000):
            args += ["-ar", "16000"]
        args += [*_CODEC_ARGS[it.fmt], str(it.out.with_name(it.out.name + ".part"))]
    _run(args)
    for it in items:
        os.replace(it.out.with_name(it.out.name + ".part"), it.out)
        it.wav.unlink(missing_ok=True)


def _render(plan: _NotePlan, path: Path, tmp_dir: Path, babble: np.ndarray | None) -> tuple[float, _Encode | None]:
    """Make one clip (a pure function of the plan); wav is final, other formats wait for ffmpeg."""
    rng = np.random.default_rng(plan.audio_seed)
    x, rate = _synthesize(plan.spoken, plan.voice, plan.speed, plan.pitch)
    lead = np.zeros(int(rate * rng.uniform(0.1, 0.5)), np.float32)
    tail = np.zeros(int(rate * rng.uniform(0.1, 0.4)), np.float32)
    x = np.concatenate([lead, x, tail])
    if plan.snr_db is not None:
        x = _add_noise(x, plan.snr_db, plan.noise_kind or "white", rng, babble)
    if plan.telephone:
        x = _telephone(x, rate)
        rate = TELEPHONE_RATE
    x = x * (rng.uniform(0.35, 0.9) / (float(np.max(np.abs(x))) + 1e-9))
    duration = x.size / rate
    if plan.fmt == "wav":
        part = path.with_name(path.name + ".part")
        part.write_bytes(_wav_bytes(x, rate))
        os.replace(part, path)
        return duration, None
    wav = tmp_dir / f"{plan.note_id}.wav"
    wav.write_bytes(_wav_bytes(x, rate))
    return duration, _Encode(wav=wav, out=path, fmt=plan.fmt, rate=rate)


def _render_all(plans: list[_NotePlan], rec: Path, babble: np.ndarray | None, workers: int) -> list[float]:
    """Synthesize every clip in threads, then encode per format in batched ffmpeg runs."""
    tmp_dir = Path(tempfile.mkdtemp(prefix=".synth-", dir=rec))
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda p: _render(p, rec / f"{p.note_id}.{p.fmt}", tmp_dir, babble), plans))
            pending = [enc for _, enc in results if enc is not None]
            batches: list[list[_Encode]] = []
            for fmt in AUDIO_FORMATS:
                group = [e for e in pending if e.fmt == fmt]
                size = max(1, min(_ENCODE_BATCH, math.ceil(len(group) / workers)))
                batches += [group[i:i + size] for i in range(0, len(group), size)]
            list(pool.map(_encode_batch, batches))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return [d for d, _ in results]


def _babble_bank(seed: int, voices: tuple[str, ...]) -> np.ndarray:
    """Several voices talking over each other, as a loop of babble noise."""
    rng = np.random.default_rng(seed)
    templates = [_choice(rng, CHAT_TEMPLATES) for _ in range(6)]
    jobs = [(spoken_form(t.format(**_fill(t, rng))), _choice(rng, voices), int(rng.integers(140, 190)))
            for t in templates]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        clips = list(pool.map(lambda j: _synthesize(j[0], j[1], j[2], 50)[0], jobs))
    length = 2 * max(c.size for c in clips)
    bank = np.zeros(length, np.float32)
    for c in clips:  # each line twice at random places, so about three talk at once
        c = c / (float(np.sqrt(np.mean(c**2))) + 1e-9)
        for _ in range(2):
            start = int(rng.integers(length - c.size + 1))
            bank[start:start + c.size] += c
    return bank


# --------------------------------------------------------------------------- datasets


def _check_windows(events: list[dict], plans: list[_NotePlan], typed_ids: dict[str, str],
                   window: int) -> dict[str, list[dict]]:
    """Recompute every note's candidate window from the stream and verify the ground truth."""
    windows: dict[str, list[dict]] = {}
    for i, ev in enumerate(events):
        if ev["type"] == "voice":
            windows[ev["id"]] = [e for e in events[i + 1:] if e["type"] == "text"][:window]
    for p in plans:
        cands = windows[p.note_id]
        ids = [c["id"] for c in cands]
        tid = typed_ids.get(p.note_id)
        if p.missing:
            if tid in ids:
                raise SynthError(f"internal: missing-truth note {p.note_id} has its message in window")
            continue
        if tid not in ids:
            raise SynthError(f"internal: note {p.note_id} lost its message from the window")
        truth_text = next(c["text"] for c in cands if c["id"] == tid)
        if sum(c["text"] == truth_text for c in cands) != 1:
            raise SynthError(f"internal: note {p.note_id} has a duplicate of its text in window")
    return windows


@dataclass
class SynthPlan:
    """A dataset decided down to every text and truth, before any audio is made."""

    plans: list[_NotePlan]
    events: list[dict]              # chats.jsonl rows, gold label_ids included
    typed_ids: dict[str, str]       # note id -> id of the message its sender typed
    windows: dict[str, list[dict]]  # note id -> its candidate text events
    gold: set[str]
    babble_seed: int
    class_names: tuple[str, ...] | None = None  # closed-phrase data: the phrases, by class index

    def positions(self) -> list[int | None]:
        """1-based window position of each note's right message (None: not in its window)."""
        return [None if p.missing else [c["id"] for c in self.windows[p.note_id]].index(self.typed_ids[p.note_id]) + 1
                for p in self.plans]

    def chats_text(self) -> str:
        """Exactly what make_dataset writes to chats.jsonl."""
        return _jsonl_text(self.events)


def _plan_stream(cfg: SynthConfig, plans: list[_NotePlan], rng: np.random.Generator,
                 avoid: set[str]) -> SynthPlan:
    n_texts = _layout(cfg, plans, rng)
    events, typed_ids = _build_stream(cfg, plans, n_texts, rng, avoid)
    windows = _check_windows(events, plans, typed_ids, cfg.window)

    eligible = [p.note_id for p in plans if not p.missing]
    n_gold = min(len(eligible), round(cfg.gold_fraction * len(plans)))
    gold = set(np.array(eligible)[rng.choice(len(eligible), n_gold, replace=False)].tolist()) \
        if n_gold else set()
    for ev in events:
        if ev["type"] == "voice" and ev["id"] in gold:
            ev["label_id"] = typed_ids[ev["id"]]
    return SynthPlan(plans, events, typed_ids, windows, gold, babble_seed=int(rng.integers(2**31)))


def _generate(out_dir: Path, cfg: SynthConfig, plan: SynthPlan) -> SynthInfo:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    rec = out_dir / "recordings"
    rec.mkdir(parents=True, exist_ok=True)
    plans, events, typed_ids, windows, gold = plan.plans, plan.events, plan.typed_ids, plan.windows, plan.gold
    babble_seed, class_names = plan.babble_seed, plan.class_names

    # Audio: the only slow part, and a pure function of each plan -> threads.
    babble = _babble_bank(babble_seed, cfg.voices) if any(p.noise_kind == "babble" for p in plans) else None
    durations = _render_all(plans, rec, babble, cfg.workers or os.cpu_count() or 2)
    wanted = {f"{p.note_id}.{p.fmt}" for p in plans}
    for old in rec.iterdir():  # clips left over from an earlier run with other formats
        if re.fullmatch(r"v\d{4,}\.(" + "|".join(AUDIO_FORMATS) + ")", old.name) and old.name not in wanted:
            old.unlink()

    chats = out_dir / "chats.jsonl"
    _write_jsonl(chats, events)
    texts = {e["id"]: e["text"] for e in events if e["type"] == "text"}
    manifest_rows, truth_rows = [], []
    for p, dur in zip(plans, durations):
        cands = windows[p.note_id]
        row = {"id": p.note_id, "audio": f"{p.note_id}.{p.fmt}", "candidates": [c["text"] for c in cands]}
        if p.note_id in gold:
            row["label"] = texts[typed_ids[p.note_id]]
        manifest_rows.append(row)
        tid = typed_ids.get(p.note_id)
        truth = {
            "id": p.note_id, "label_id": None if p.missing else tid, "text": p.typed,
            "spoken": p.spoken, "voice": p.voice, "speed": p.speed, "pitch": p.pitch,
            "snr_db": p.snr_db, "noise": p.noise_kind, "telephone": p.telephone, "format": p.fmt,
            "in_window": not p.missing, "typed_id": tid,
            "position": None if p.missing else [c["id"] for c in cands].index(tid) + 1,
            "gold": p.note_id in gold, "sender": p.sender,
            "kind": "code" if p.msg.code is not None else "chat", "typo": p.typo,
            "duration_s": round(dur, 3),
        }
        if class_names is not None and p.klass is not None:
            truth["class"] = class_names[p.klass]
            truth["class_index"] = p.klass
        truth_rows.append(truth)
    manifest = out_dir / "manifest.jsonl"
    truth_path = out_dir / "truth.jsonl"
    _write_jsonl(manifest, manifest_rows)
    _write_jsonl(truth_path, truth_rows)
    return SynthInfo(folder=out_dir, chats=chats, manifest=manifest, truth=truth_path,
                     recordings=rec, n_notes=len(plans), seconds=time.perf_counter() - t0)


def _jsonl_text(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(_jsonl_text(rows), encoding="utf-8")
    os.replace(tmp, path)


def _check_tools(cfg: SynthConfig) -> None:
    for engine in sorted({engine_of(v)[0] for v in cfg.voices}):
        _require(*ENGINE_TOOLS[engine])
    if any(f != "wav" for f in cfg.formats):
        _require("ffmpeg", "ffmpeg")


def make_dataset(out_dir: Path, config: SynthConfig | None = None) -> SynthInfo:
    """Write recordings/, chats.jsonl, manifest.jsonl and truth.jsonl for a seeded dataset."""
    cfg = config or SynthConfig()
    cfg.validate()
    _check_tools(cfg)
    return _generate(Path(out_dir), cfg, plan_dataset(cfg))


def plan_dataset(config: SynthConfig | None = None) -> SynthPlan:
    """Decide everything make_dataset would write except the audio (fast: no speech engine)."""
    cfg = config or SynthConfig()
    cfg.validate()
    if cfg.content == "closed":  # as even as n_notes allows: the first n % k phrases once more
        k = len(CLASS_PHRASES)
        counts = np.array([cfg.n_notes // k + (i < cfg.n_notes % k) for i in range(k)])
        return _plan_closed(cfg, counts, CLASS_PHRASES)
    rng = np.random.default_rng(cfg.seed)
    plans = _plan_notes(cfg, _pick_messages(cfg, rng), rng)
    return _plan_stream(cfg, plans, rng, avoid=set())


def _class_message(phrase: str, rng: np.random.Generator) -> _Message:
    m = re.fullmatch(r"the code is (\d+)", phrase)
    if m:
        return _Message("", code=(0, m.group(1), _choice(rng, CODE_TEMPLATES[0][1])))
    return _Message(phrase.replace("{", "{{").replace("}", "}}"))


def _class_order(counts: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Interleave counts[k] notes of each class, never one class twice within 8 notes when avoidable."""
    remaining = counts.copy()
    order: list[int] = []
    for _ in range(int(counts.sum())):
        recent = set(order[-8:])
        ok = [k for k in range(len(counts)) if remaining[k] > 0 and k not in recent]
        if not ok:
            ok = [k for k in range(len(counts)) if remaining[k] > 0]
        weights = remaining[ok] / remaining[ok].sum()
        k = int(rng.choice(ok, p=weights))
        remaining[k] -= 1
        order.append(k)
    return order


def _plan_closed(cfg: SynthConfig, counts: np.ndarray, phrases: tuple[str, ...]) -> SynthPlan:
    """A chat whose notes say phrases[k] counts[k] times; chatter never contains a phrase."""
    rng = np.random.default_rng(cfg.seed)
    order = _class_order(counts, rng)
    messages = [_class_message(phrases[k], rng) for k in order]
    plans = _plan_notes(cfg, messages, rng, classes=order)
    avoid = {_norm(spoken_form(p)) for p in phrases} | {_norm(p) for p in phrases}
    plan = _plan_stream(cfg, plans, rng, avoid)
    plan.class_names = tuple(phrases)
    return plan


def closed_class_dataset(out_dir: Path, n_per_class: int = 8, seed: int = 0,
                         config: SynthConfig | None = None,
                         phrases: tuple[str, ...] = CLASS_PHRASES) -> SynthInfo:
    """Fixed phrases as classes, each said n_per_class times by varied voices, in a chat stream.

    truth.jsonl gains "class" (the phrase) and "class_index"; "voice" allows a held-out
    split by speaker. The same class never recurs within a few notes, so a window holds
    one typed version of a class at most from its own note.
    """
    base = config or SynthConfig(
        gold_fraction=0.3, noise_snr_db=(5.0, 25.0), noisy_fraction=0.4, telephone_fraction=0.15,
        formats=("wav", "ogg"), typed_style=0.7, codes=0.0, voices=WIDE_VOICES, speeds=(120, 195))
    cfg = replace(base, n_notes=n_per_class * len(phrases), seed=seed)
    cfg.validate()
    _check_tools(cfg)
    return _generate(Path(out_dir), cfg, _plan_closed(cfg, np.full(len(phrases), n_per_class), phrases))


# --------------------------------------------------------------------------- presets

DEMO = SynthConfig(
    n_notes=36, seed=7, gold_fraction=0.35, noise_snr_db=(15.0, 30.0), noisy_fraction=0.25,
    formats=("ogg", "ogg", "wav", "mp3", "m4a"), near_duplicates=True, typed_style=0.6,
    typo_rate=0.15, codes=0.15, voices=DEFAULT_VOICES, speeds=(135, 180),
)

HARD = SynthConfig(
    n_notes=300, seed=1, gold_fraction=0.3, missing_truth_fraction=0.05,
    noise_snr_db=(5.0, 20.0), noisy_fraction=0.5, telephone_fraction=0.25,
    formats=AUDIO_FORMATS, near_duplicates=True, typed_style=0.75, typo_rate=0.15, codes=0.3,
    voices=WIDE_VOICES, speeds=(125, 190), spoken_filler=0.15,
)
