"""Text normalisation, spoken-style rendering and similarity features.

Typed chat text and Whisper transcripts say the same thing in different clothes:
"see u at 5 😀" against "See you at five.", "1158 ok" against "One, one, five, eight.".
Everything here exists to compare them in one canonical form, or to dress a typed
candidate the way Whisper would write it before it is scored by likelihood.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import jiwer
from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein
from whisper.normalizers import EnglishTextNormalizer

# Chat shorthand -> what a speaker says. Keys are whole lower-case tokens.
CHAT_ABBREVIATIONS: dict[str, str] = {
    "u": "you", "ya": "you", "yu": "you", "r": "are", "ur": "your", "urs": "yours",
    "pls": "please", "plz": "please", "pleez": "please",
    "tmrw": "tomorrow", "tmr": "tomorrow", "tmw": "tomorrow", "tmrow": "tomorrow",
    "2moro": "tomorrow", "2morrow": "tomorrow", "tomoz": "tomorrow",
    "2nite": "tonight", "tonite": "tonight", "2day": "today", "tdy": "today",
    "thx": "thanks", "thnx": "thanks", "thanx": "thanks", "tks": "thanks", "ty": "thank you",
    "omw": "on my way", "idk": "i do not know", "btw": "by the way", "b4": "before",
    "gr8": "great", "l8r": "later", "l8": "late", "msg": "message", "msgs": "messages",
    "k": "okay", "kk": "okay", "ok": "okay", "okey": "okay", "cya": "see you",
    "c": "see", "cu": "see you", "bc": "because", "cuz": "because", "coz": "because", "cos": "because",
    "ppl": "people", "rn": "right now", "asap": "as soon as possible", "lmk": "let me know",
    "np": "no problem", "nvm": "never mind", "brb": "be right back", "hbu": "how about you",
    "wbu": "what about you", "thru": "through", "y": "why", "pic": "picture", "pics": "pictures",
    "txt": "text", "sec": "second", "min": "minute", "mins": "minutes", "hr": "hour", "hrs": "hours",
    "bday": "birthday", "gf": "girlfriend", "bf": "boyfriend", "w/": "with", "w/o": "without",
    "abt": "about", "wknd": "weekend", "approx": "approximately", "prob": "probably",
    "probs": "probably", "def": "definitely", "sry": "sorry", "soz": "sorry", "luv": "love",
    "nite": "night", "wat": "what", "wot": "what", "dunno": "do not know", "gonna": "going to",
    "wanna": "want to", "gotta": "got to",
    # contractions typed without the apostrophe: said (and written by Whisper) as "I'm", not
    # "I am"; the normaliser still expands both forms alike
    "im": "i'm", "ive": "i've", "dont": "don't", "cant": "can't", "wont": "won't",
    "didnt": "didn't", "isnt": "isn't", "thats": "that's", "doesnt": "doesn't", "youre": "you're",
}

# Words people add when typing what they said, or say without typing; never decisive.
FILLER_WORDS = frozenset("okay ok k kk code um uh hey hi lol haha yeah please pls thanks".split())
# "its 4712" answers "what's the code?" and is said "the code is 4712" or just the number:
# before a number, a leading "it's" is a filler too (as typed, and as normalised).
_ANSWER_PREFIX = re.compile(r"^\s*(?:it'?s|it\u2019s|it is)\s+(?=\d)", re.IGNORECASE)

DIGIT_WORDS = "zero one two three four five six seven eight nine".split()

_normalizer = EnglishTextNormalizer()
_token_re = re.compile(r"[\w'/]+|[^\w\s]", re.UNICODE)
_digit_code_re = re.compile(r"(?<![\d.,:])\d(?:[ -]?\d){2,}(?![\d.,:])")


def strip_symbols(text: str) -> str:
    """Drop emoji, pictographs and other symbol characters, which nobody pronounces."""
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("So", "Sk", "Cs", "Co", "Cn") or ch in "\u200d\ufe0f\ufe0e":
            continue
        if cat.startswith("C") and ch not in "\t\n":
            continue
        kept.append(ch)
    return re.sub(r"\s+", " ", "".join(kept)).strip()


# A kiss typed at the end of a message ("see you soon x", "love you xx") is never said.
_SIGN_OFF_RE = re.compile(r"(?<=\S)\s+x{1,3}[\s.!]*$", re.IGNORECASE)


def without_sign_off(text: str) -> str:
    """`text` without a trailing kiss; a message that is only kisses ("xx") stays as it is."""
    return _SIGN_OFF_RE.sub("", text)


# Units typed short after a number: said in the plural unless the number is 1 ("10 min" is
# said "ten minutes", which is how Whisper writes it).
UNIT_ABBREVIATIONS: dict[str, str] = {
    "min": "minute", "mins": "minute", "sec": "second", "secs": "second", "hr": "hour", "hrs": "hour",
}
_counted_unit_re = re.compile(r"(?<![\w.])(\d+)\s?(" + "|".join(UNIT_ABBREVIATIONS) + r")(?![\w'])", re.IGNORECASE)


def expand_abbreviations(text: str) -> str:
    """Replace chat shorthand tokens ("u", "tmrw", "omw") by the words a speaker says."""

    def counted(match: re.Match) -> str:
        number, unit = match.groups()
        return f"{number} {UNIT_ABBREVIATIONS[unit.lower()]}{'' if number == '1' else 's'}"

    text = _counted_unit_re.sub(counted, text)

    def replace(match: re.Match) -> str:
        word = match.group(0)
        expansion = CHAT_ABBREVIATIONS.get(word.lower())
        if expansion is None:
            return word
        return expansion.capitalize() if word[:1].isupper() and len(word) > 1 else expansion

    return re.sub(r"(?<![\w'])[A-Za-z0-9/]+(?![\w'])", replace, text)


def as_said(text: str) -> str:
    """Typed text with what nobody pronounces taken out (emoji, a trailing kiss) and chat
    shorthand expanded: where both the comparison form and the renderings start."""
    return expand_abbreviations(without_sign_off(strip_symbols(text)))


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """The canonical form both transcripts and typed texts are compared in.

    Lower case, no punctuation or emoji, chat shorthand expanded, numbers as digits
    (Whisper's EnglishTextNormalizer), a standalone "one" mapped back to "1" and runs
    of digits merged so that "1 1 5 8", "one one five eight" and "1158" all agree.
    Applied until nothing changes, so normalize(normalize(x)) == normalize(x).
    """
    for _ in range(4):
        again = _normalize_once(text)
        if again == text:
            break
        text = again
    return text


def _normalize_once(text: str) -> str:
    text = _normalizer(as_said(text))
    merged: list[str] = []
    for tok in ("1" if t == "one" else t for t in text.split()):
        if tok.isdigit() and merged and merged[-1].isdigit():
            merged[-1] += tok
        else:
            merged.append(tok)
    return " ".join(merged)


def without_fillers(text: str) -> str:
    """`text` without filler words and without an answer's leading "it's" before a number."""
    words = [w for w in _ANSWER_PREFIX.sub("", text).split() if w.lower().strip(".,!?") not in FILLER_WORDS]
    return " ".join(words)


def filler_count(text: str) -> int:
    """How many filler words (an answer's leading "it's" counting as one) `text` holds."""
    normalized = normalize(text)
    return sum(w in FILLER_WORDS for w in normalized.split()) + bool(_ANSWER_PREFIX.match(normalized))


def content_words(normalized: str) -> str:
    """The normalised text without filler words; falls back to all words if nothing is left."""
    return without_fillers(normalized) or normalized


def digits_of(normalized: str) -> str:
    return "".join(ch for ch in normalized if ch.isdigit())


# A text opening like a question: Whisper ends what was asked with "?", and typists often
# leave it out ("what do you want for dinner" lost to a neighbour's "What do you want for
# dinner? ok?" on the chat-early-espeak family, its own rendering ending in ".").
_QUESTION_RE = re.compile(
    r"^\s*(?:what|where|when|who|whose|why|how|which"
    r"|(?:are|is|was|were|do|does|did|can|could|will|would|should|shall|have|has|had|may)\s+"
    r"(?:you|u|we|i|he|she|they|it|there|this|that|the|your|my))\b",
    re.IGNORECASE,
)


def render_spoken(text: str) -> list[str]:
    """Spoken-style renderings of a typed candidate (a fresh list; see `_render_spoken`)."""
    return list(_render_spoken(text))


@lru_cache(maxsize=65536)
def _render_spoken(text: str) -> tuple[str, ...]:
    """Spoken-style renderings of a typed candidate, as Whisper would write them.

    The first is the cleaned sentence (emoji gone, shorthand expanded, sentence case,
    final punctuation, a leading "its" written "It's"; a text opening like a question and
    typed without its "?" also gets one, and a trailing kiss "x" is dropped). Texts holding a digit code get the
    code as "1158.", as "1, 1, 5, 8." and as words too, texts with filler words (or an
    answer's "it's" before a number) get a version without them, and texts with a
    misspelt word get a spell-corrected version (a typo splits a word into rare tokens
    the speaker never said): the likelihood keeps the best, since we cannot know which
    the speaker said. Cached: a chat text sits in about
    ten windows.
    """
    base = as_said(text)
    base = re.sub(r"\bi\b", "I", base)
    base = re.sub(r"^(\s*)its\b", r"\1it's", base, flags=re.IGNORECASE)  # a message opens with "it's", not "its"
    trimmed = without_fillers(base)
    bases = [base] + ([trimmed] if trimmed and trimmed != base else [])
    bases += [c for c in (correct_spelling(b) for b in bases) if c not in bases]
    renderings: list[str] = []
    for b in bases:
        renderings.append(_sentence(b))
        if _QUESTION_RE.match(b) and b.rstrip()[-1:] not in ".!?":  # asked, typed without its "?"
            renderings.append(_sentence(b.rstrip() + "?"))
        if _digit_code_re.search(b):
            digits = lambda m: [d for d in m.group(0) if d.isdigit()]  # noqa: E731
            renderings.append(_sentence(_digit_code_re.sub(lambda m: "".join(digits(m)), b)))
            renderings.append(_sentence(_digit_code_re.sub(lambda m: ", ".join(digits(m)), b)))
            renderings.append(
                _sentence(_digit_code_re.sub(lambda m: ", ".join(DIGIT_WORDS[int(d)] for d in digits(m)), b))
            )
    unique = tuple(dict.fromkeys(r for r in renderings if r))
    return unique or ("...",)


@lru_cache(maxsize=1)
def _speller():
    from spellchecker import SpellChecker

    # One edit (a dropped, doubled, swapped or wrong letter) covers most typing slips;
    # two edits cost up to half a second on a word with no near neighbour.
    return SpellChecker(distance=1)


@lru_cache(maxsize=65536)
def correct_spelling(text: str) -> str:
    """`text` with each unknown word of three or more letters replaced by the most
    frequent English word one edit away ("hoome" -> "home"); known words, short words,
    numbers and words with no close neighbour are kept as they are."""
    speller = _speller()

    def fix(match: re.Match) -> str:
        word = match.group(0)
        lower = word.lower()
        if len(lower) < 3 or lower in speller:
            return word
        better = speller.correction(lower)
        if not better or better == lower:
            return word
        return better.capitalize() if word[0].isupper() else better

    return re.sub(r"(?<![\w'])[A-Za-z]+(?:'[A-Za-z]+)?(?![\w'])", fix, text)


def _sentence(text: str) -> str:
    """A rendering punctuated as Whisper writes: no space before a mark, one "!" or "?"
    where the typist hit it twice (a typed "code 255 !!" kept as "Code 255 !!" cost the
    right candidate 8-12 nats on the codes-phone family, its rank among ten candidates
    falling to 5th and 7th), and a full stop when the sentence has no final mark."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+(?=[.,!?;:])", "", text)
    text = re.sub(r"([!?])[!?]+", r"\1", text)
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    if text[-1] not in ".!?":
        text += "."
    return text


TEXT_FEATURES = ("cer", "wer", "ratio", "token_set", "partial", "digit_dist", "len_ratio")


def text_features(transcript: str, candidate: str) -> dict[str, float]:
    """Similarity of one candidate to the transcript, in the canonical form.

    CER/WER take the transcript as reference, so all candidates of a note are measured
    against the same yardstick. Distances are clipped at 2 so one very long candidate
    cannot dominate a linear score.
    """
    t_norm, c_norm = normalize(transcript), normalize(candidate)
    t, c = content_words(t_norm), content_words(c_norm)
    if t:
        cer = min(2.0, jiwer.cer(t, c if c else " "))
        wer = min(2.0, jiwer.wer(t, c if c else "-"))
    else:
        cer = wer = 0.0 if not c else 1.0
    td, cd = digits_of(t_norm), digits_of(c_norm)
    if td or cd:
        digit_dist = Levenshtein.normalized_distance(td, cd)
    else:
        digit_dist = 0.0
    return {
        "cer": float(cer),
        "wer": float(wer),
        "ratio": fuzz.ratio(t_norm, c_norm) / 100.0,
        "token_set": fuzz.token_set_ratio(t_norm, c_norm) / 100.0,
        "partial": fuzz.partial_ratio(t, c) / 100.0 if t and c else 0.0,
        "digit_dist": float(digit_dist),
        "len_ratio": min(2.0, abs((len(c) + 1.0) / (len(t) + 1.0) - 1.0)) if t else 1.0,
    }
