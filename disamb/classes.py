"""The class set a classifier chooses from: one class per spoken intent, however it was typed.

"i'm at the gym", "im at the gym" and "I am at the gym" are one thing said; a class is
keyed by its spoken form (`class_key`: shorthand expanded, misspelt words corrected as
labelling's renderings correct them, then the `textsim.normalize` form labelling compares
texts in), named by the form people typed most often, and it keeps its typed variants
(typos included, since a speaker says the word, not the slip): the decoder scores each
variant's spoken renderings (`textsim.render_spoken`, as labelling does) and the best
counts, since we cannot know which wording the speaker used.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from functools import lru_cache

from .inputs import read_text_bytes
from .textsim import content_words, correct_spelling, expand_abbreviations, normalize


# 2: apostrophes are dropped before keying; 3: a unit typed short after a number is said in
# the plural ("10 min" keys as "10 minutes"); 4: a trailing kiss is dropped ("see you x" keys as
# "see you"). Models saved before are re-keyed on load.
KEY_VERSION = 4
_APOSTROPHES = str.maketrans("", "", "'\u2019\u02bc")


@lru_cache(maxsize=65536)
def class_key(text: str) -> str:
    """The spoken form a class is keyed by: "runing late", "Running late!" and "running late"
    are one class, and so are "happy birthday" and "happy birthday okay".

    Apostrophes go first, because chat typists drop them. Keyed with its apostrophe,
    "I'll call you back" became "i will call you back" while the "ill call you back"
    typed beside it stayed a class of its own. On the classifier benchmark the
    classifier lost two held-out recordings of one fold to that twin. "its"/"it's",
    "were"/"we're" and "lets"/"let's" are one class for the same reason, and a curly
    "I’ll" no longer splits into "i ll".

    In the closed-class benchmark's chat, 15% of typed truths normalised differently from their
    phrase, mostly typos ("loev you", "meetnig is canceled") that one spelling fix brings
    back; filler words a typist adds ("ok", "pls", "code": `textsim.FILLER_WORDS`, the ones
    labelling's renderings may drop) made classes of their own, and the classifier then
    lost recordings to its own near-copies of the right class. A word with no dictionary
    entry may be "fixed" too ("farid" -> "arid"): harmless, as every text is keyed the same way."""
    return content_words(normalize(correct_spelling(expand_abbreviations(text.translate(_APOSTROPHES)))))


def rekeyed(meta: dict) -> dict:
    """A saved model's description with its classes keyed by today's `class_key`.

    Models saved before KEY_VERSION keyed "I'll ..." as "i will ..." (version 1), "10 min"
    as "10 minute" (version 2) or kept a trailing kiss (version 3); predict, eval and review look candidates up by today's
    key, so an old model's class is re-keyed
    from the typed form it is named by. Where two old classes now share a key, the second
    keeps its old one: it can still be predicted, it is only not found from a chat's text.
    """
    if not isinstance(meta, dict) or meta.get("class_key_version") == KEY_VERSION or not isinstance(meta.get("classes"), list):
        return meta
    names = meta.get("class_names") if isinstance(meta.get("class_names"), dict) else {}
    new: dict[str, str] = {}
    taken: set[str] = set()
    for old in map(str, meta["classes"]):
        key = class_key(str(names.get(old) or old)) or old
        new[old] = old if key in taken else key
        taken.add(new[old])
    out = dict(meta, classes=[new[str(c)] for c in meta["classes"]], class_key_version=KEY_VERSION)
    for name in ("class_counts", "class_names", "class_variants"):
        if isinstance(meta.get(name), dict):
            out[name] = {new.get(k, k): v for k, v in meta[name].items()}
    ts = meta.get("text_scoring")
    if isinstance(ts, dict) and isinstance(ts.get("variants"), dict):
        out["text_scoring"] = dict(ts, variants={new.get(k, k): v for k, v in ts["variants"].items()})
    return out


class ClassFileError(Exception):
    """A --classes file is unreadable or lists no class."""


@dataclass
class ClassSet:
    classes: list[str]  # class keys: the normalised spoken form
    counts: dict[str, int]  # examples per kept class
    dropped: dict[str, int]  # label texts below --min-count (or not in --classes)
    source: str  # "labels" or the --classes file
    names: dict[str, str] = field(default_factory=dict)  # key -> its most common typed form
    variants: dict[str, dict[str, int]] = field(default_factory=dict)  # key -> typed form -> times seen

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def name(self, key: str) -> str:
        return self.names.get(key) or key

    def typed(self, key: str) -> list[str]:
        """The class's typed variants, most common first (the key itself when none was seen)."""
        got = self.variants.get(key) or {}
        return [v for v, _ in sorted(got.items(), key=lambda kv: -kv[1])] or [key]


def _typed_form(text: str) -> str:
    return " ".join(text.split())


def read_class_file(path: Path) -> list[str]:
    """One class per line as typed (blank lines and # comments skipped, exact repeats dropped).

    Lines that normalise alike become one class in `build_classes`, named by the first.
    """
    try:
        text = read_text_bytes(Path(path)).decode("utf-8")
    except UnicodeDecodeError:
        raise ClassFileError(f"{path}: not UTF-8 text") from None
    except Exception as e:  # InputFileError carries the one-line reason
        raise ClassFileError(str(e)) from None
    lines: dict[str, None] = {}
    for line in text.splitlines():
        line = _typed_form(line)
        if line and not line.startswith("#") and class_key(line):
            lines.setdefault(line)
    if not lines:
        raise ClassFileError(f"{path}: lists no class")
    return list(lines)


def build_classes(label_texts: list[str], min_count: int = 2, fixed: list[str] | None = None,
                  source: str = "labels") -> ClassSet:
    """Classes from label texts: typed variants merged by their normalised form, kept when
    the class was seen at least `min_count` times.

    With `fixed` (typed lines), those classes in that order are the class set whatever the
    counts; label texts of a fixed class join its variants.
    """
    typed: dict[str, Counter] = {}
    for t in label_texts:
        key = class_key(t)
        if key:
            typed.setdefault(key, Counter())[_typed_form(t)] += 1
    counts = {k: sum(v.values()) for k, v in typed.items()}
    names: dict[str, str] = {}
    variants: dict[str, dict[str, int]] = {}
    if fixed is not None:
        kept: list[str] = []
        for line in fixed:
            key = class_key(line)
            if not key:
                continue
            if key not in names:
                kept.append(key)
                names[key] = _typed_form(line)
                variants[key] = {}
            variants[key].setdefault(_typed_form(line), 0)
        for key in kept:
            for form, n in typed.get(key, Counter()).items():
                variants[key][form] = variants[key].get(form, 0) + n
    else:
        kept = sorted(c for c, k in counts.items() if k >= max(1, min_count))
        for key in kept:
            names[key] = typed[key].most_common(1)[0][0]
            variants[key] = dict(typed[key].most_common())
    kept_set = set(kept)
    return ClassSet(
        classes=kept,
        counts={c: counts.get(c, 0) for c in kept},
        dropped={c: k for c, k in counts.items() if c not in kept_set},
        source=source,
        names=names,
        variants=variants,
    )
