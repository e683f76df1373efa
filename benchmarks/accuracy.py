"""Accuracy benchmark across a family of data shapes, and the fit of the shipped matcher.

The shipped weights were once fitted on one generator's data and judged on more of
the same; they learned its habits (where the right message sits) and lost points on
every log shaped otherwise. So here every figure for the shipped weights is measured
on a family they were NOT fitted on (leave one family out), and the worst family is
the one quoted. Families: benchmarks/families.py; the old hard set (benchmarks/synth.py
HARD, seed 1) is scored too, never fitted on.

Per set, accuracy on the notes that are not gold and whose truth is in the window, and
the calibration (ECE) of every labelled note that is not gold (a label for a note whose
truth is not in its window is a wrong label with a confidence like any other):

    defaults (held out)   weights fitted on the other families, no gold used; window
                          prior learned from the run; one-to-one assignment
    default run           the same start, then what `disamb label` does with the set's
                          own gold (the gold chooses defaults / refit / minimal model)
    own-gold logit        a plain conditional logit fitted on the set's own gold,
                          argmax, no prior, no assignment (the reference to be near;
                          shown when the set has at least 10 gold notes)
    evidence ceiling      the same logit fitted with full truth on the set's other
                          notes (5-fold): what the evidence supports on this audio
    previous release      the weights shipped before (15 features, position and gap
                          among them), with assignment, no refit

Usage: python benchmarks/accuracy.py [--sets a,b] [--out benchmarks/results/accuracy.json]
       (--sets chooses the sets reported; every family is prepared, as each set's held-out
       weights are fitted on all the others)
       python benchmarks/accuracy.py --fit-default   # choose and write disamb/default_matcher.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.families import FAMILIES, build  # noqa: E402
from benchmarks.synth import HARD, make_dataset  # noqa: E402
from disamb import match, window_prior  # noqa: E402
from disamb.chats import read_notes  # noqa: E402
from disamb.metrics import ece_if_calibrated, expected_calibration_error  # noqa: E402
from disamb.features import FEATURES, candidate_features, slots  # noqa: E402
from disamb.label import MatchOptions  # noqa: E402
from disamb.models import load_model  # noqa: E402
from disamb.pipeline import label_all  # noqa: E402

PREVIOUS = ROOT / "benchmarks" / "results" / "previous_default_matcher.json"
HARD_NAME = "hard-s1"
# Feature sets and penalties --fit-default chooses among, by the worst held-out family.
CANDIDATE_SETS = {
    "lik+pmi+text": ("lik_sum", "lik_per_char", "lik_prior", "cer", "token_set", "digit_dist"),
    "minimal": ("lik_sum", "lik_prior", "cer", "digit_dist"),
    "pmi+text": ("lik_prior", "cer", "token_set", "digit_dist"),
    "wide": ("lik_sum", "lik_per_char", "lik_prior", "pmi_per_char", "cer", "wer", "ratio", "token_set",
             "partial", "digit_dist", "len_ratio"),
}
PENALTIES = (0.001, 0.01)


@dataclass
class Prepared:
    """One benchmark set with everything the matcher sees, computed once."""

    name: str
    notes: list  # VoiceNotes with a clip result and candidates
    outcomes: dict
    truth: list  # per note: index of the truth in its window, or len(candidates)
    dicts: list  # per note: the feature dicts of its candidates
    slots: list
    lm: object  # the Whisper model, for relabelling through label_all with other weights
    cache_root: Path

    def X(self, features=FEATURES) -> list[np.ndarray]:
        return [np.array([[c[f] for f in features] for c in d], float) for d in self.dicts]

    @property
    def gold(self) -> list[int]:
        return [i for i, n in enumerate(self.notes) if n.has_gold]

    @property
    def scored(self) -> list[int]:
        """Notes the table scores: not gold, truth in the window."""
        return [i for i, n in enumerate(self.notes) if not n.has_gold and self.truth[i] < len(n.candidates)]


def prepare(name: str, folder: Path, lm, cache_root: Path, limit: int | None = None) -> Prepared:
    """The set's notes (the first `limit` voice notes when given) with their features.

    Labelled once through `label_all`, as `disamb label` would; the features are computed
    from its clip results and priors for every note with a clip result, also the notes
    the run found silent (their records carry no features, and the fits see them too).
    """
    read = read_notes(folder / "chats.jsonl", folder / "recordings")
    read.notes = read.notes[:limit]
    run = label_all(lm, read.notes, cache_root=cache_root)
    outcomes, prior = run.outcomes, run.prior
    truth_ids = truth_of(folder)
    notes = [n for n in read.notes if outcomes[n.id].result is not None and n.candidates]
    truth, dicts, sl = [], [], []
    for n in notes:
        ids = [c.id for c in n.candidates]
        t = truth_ids.get(n.id)
        truth.append(ids.index(t) if t in ids else len(ids))
        dicts.append(candidate_features(n, outcomes[n.id].result, prior)[1])
        sl.append(slots(n))
    return Prepared(name, notes, outcomes, truth, dicts, sl, lm, cache_root)


def in_window(t: dict) -> bool:
    """Whether a truth record's message is among its note's candidates."""
    return t.get("in_window", t["label_id"] is not None)


def truth_of(folder: Path) -> dict[str, str | None]:
    """The right message id of every note of a generated set, None when it is not in the window."""
    truth = {}
    for line in (folder / "truth.jsonl").read_text().splitlines():
        t = json.loads(line)
        truth[t["id"]] = t["label_id"] if in_window(t) else None
    return truth


def prepare_all(names: list[str], data: Path, model: str, limit: int | None = None) -> list[Prepared]:
    lm = load_model(model, "auto")
    out = []
    for name in names:
        t = time.perf_counter()
        if name == HARD_NAME:
            folder = data / "hard-n300-s1"
            if not (folder / "truth.jsonl").exists():
                make_dataset(folder, HARD)
        else:
            folder = build(name, data / "families")
        out.append(prepare(name, folder, lm, data / "cache", limit))
        print(f"{name}: {len(out[-1].notes)} notes ready in {time.perf_counter() - t:.0f} s", flush=True)
    return out


# ---------------------------------------------------------------- scoring


def metrics(p: Prepared, choice: list[int | None], conf: list[float]) -> dict:
    idx = p.scored
    right = [choice[i] == p.truth[i] for i in idx]
    return summarise(right, *labelled_pairs(p, choice, conf))


def labelled_pairs(p: Prepared, choice: list[int | None], conf: list[float]) -> tuple[list[float], list[bool]]:
    """Confidence and correctness of every labelled note that is not gold. A note whose
    truth is not in its window is wrong whatever it is labelled: its confidence is a
    claim like any other (before 2026-12-07 these notes were left out, which made every
    labeller look under-confident in the middle range)."""
    labelled = [i for i, n in enumerate(p.notes) if not n.has_gold and choice[i] is not None]
    return [conf[i] for i in labelled], [choice[i] == p.truth[i] for i in labelled]


def summarise(right: list[bool], conf: list[float], conf_right: list[bool]) -> dict:
    """Accuracy, ECE, and the ECE a perfectly calibrated labeller would show with these
    confidences: on ~100 notes that reference is about 0.045, so per-set ECE below it
    cannot be told from noise; the pooled row is where calibration can be read."""
    ece = expected_calibration_error(conf, conf_right)
    floor = ece_if_calibrated(conf, draws=500)
    return {"accuracy": round(float(np.mean(right)), 4), "ece": round(float(ece), 4), "n": len(right),
            "ece_if_calibrated": round(floor["mean"], 4)}


def decide(p: Prepared, probs: list[np.ndarray], platt=(1.0, 0.0)) -> tuple[list, list]:
    ids = [[c.id for c in n.candidates] for n in p.notes]
    decisions = match.assign(probs, ids)
    choice = [d.index for d in decisions]
    conf = [match.apply_platt(d.confidence, platt) if d.index is not None else 0.0 for d in decisions]
    return choice, conf


def no_gold_probs(p: Prepared, m: match.Matcher, features=FEATURES) -> list[np.ndarray]:
    """What `disamb label` computes without gold: evidence, plus the window prior from the run."""
    X = p.X(features)
    logits = [m.logits(x) for x in X]
    best = [match.dominant(x, features) for x in X]
    prior = window_prior.fit_window_prior(logits, p.slots, best=best)
    return [match.softmax(window_prior.with_prior(z, s, prior, b)) for z, s, b in zip(logits, p.slots, best)]


def defaults_alone(p: Prepared, m: match.Matcher, features=FEATURES) -> dict:
    """No gold used: the matcher's evidence, the window prior from the run, assignment."""
    return metrics(p, *decide(p, no_gold_probs(p, m, features), m.platt))


def default_run(p: Prepared, m: match.Matcher) -> tuple[dict, dict, tuple[list, list]]:
    """What `disamb label` does, starting from matcher m."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.json"
        m.save(path)
        run = label_all(p.lm, p.notes, match_options=MatchOptions(matcher=path), cache_root=p.cache_root,
                        outcomes=p.outcomes)
    records, summary, used = run.records, run.summary, run.matcher
    choice, conf = [], []
    for n, r in zip(p.notes, records):
        ids = [c.id for c in n.candidates]
        choice.append(ids.index(r["label_id"]) if r["label_id"] in ids else None)
        conf.append(r["confidence"])
    how = {"chosen": used.source, "losses": summary.matcher_losses, "window_prior": summary.window_prior}
    return metrics(p, choice, conf), how, (choice, conf)


def own_gold_logit(p: Prepared) -> dict | None:
    gold = [i for i in p.gold if p.truth[i] <= len(p.notes[i].candidates)]
    if len(gold) < 10:
        return None
    X = p.X()
    m = match.fit([X[i] for i in gold], [p.truth[i] for i in gold])
    probs = [m.probs(x) for x in X]
    choice = [int(np.argmax(q[:-1])) for q in probs]
    return metrics(p, choice, [float(q[c]) for q, c in zip(probs, choice)])


def evidence_ceiling(p: Prepared, folds: int = 5) -> dict:
    """A conditional logit fitted with full truth on the set's other notes (k-fold), argmax:
    about what a linear matcher over these features can reach on this audio. A family far
    below the others here is limited by what Whisper heard, not by the matcher."""
    X = p.X()
    order = np.random.default_rng(0).permutation(len(X))
    choice, conf = [None] * len(X), [0.0] * len(X)
    for k in range(folds):
        test = set(order[k::folds].tolist())
        train = [i for i in range(len(X)) if i not in test]
        m = match.fit([X[i] for i in train], [p.truth[i] for i in train])
        for i in test:
            q = m.probs(X[i])
            choice[i] = int(np.argmax(q[:-1]))
            conf[i] = float(q[choice[i]])
    return metrics(p, choice, conf)


def previous_release(p: Prepared) -> dict | None:
    """The weights shipped before this change, on the features they were fitted with."""
    if not PREVIOUS.exists():
        return None
    data = json.loads(PREVIOUS.read_text())
    names, mean, scale, w = data["features"], np.array(data["mean"]), np.array(data["scale"]), np.array(data["weights"])
    probs = []
    for d in p.dicts:
        rows = []
        for c in d:
            old = dict(c, position=c["position"] / 10.0,
                       gap=math.log1p(max(0.0, c["gap"])) / 5.0 if c.get("gap") is not None else 0.0)
            rows.append([old[f] for f in names])
        z = ((np.array(rows) - mean) / scale) @ w
        probs.append(match.softmax(np.append(z, data["none_bias"]) / data["temperature"]))
    return metrics(p, *decide(p, probs, tuple(data["platt"])))


# ---------------------------------------------------------------- fitting the defaults


def fit_on(sets: list[Prepared], features, l2: float) -> match.Matcher:
    """Weights fitted on every note of `sets` (full truth), temperature on the same notes,
    and the confidence map after prior and assignment (Platt), which is what a run
    without 30 gold notes reports: a linear score is under-confident on its top choice
    (0.85 claimed for 0.92 right on the hard set before this map)."""
    Xs, ys = [], []
    for p in sets:
        Xs += p.X(features)
        ys += p.truth
    m = match.fit(Xs, ys, features=features, l2=l2)
    m.temperature = match.fit_temperature([m.logits(x) for x in Xs], ys)
    m.source = "default"
    conf, correct = [], []
    for p in sets:
        choice, c = decide(p, no_gold_probs(p, m, features))
        labelled = [i for i, ch in enumerate(choice) if ch is not None]
        conf += [c[i] for i in labelled]
        correct += [choice[i] == p.truth[i] for i in labelled]
    m.platt = match.fit_platt(np.array(conf), np.array(correct, float))
    return m


def leave_one_out(sets: list[Prepared], features, l2: float) -> dict[str, dict]:
    return {p.name: defaults_alone(p, fit_on([q for q in sets if q is not p], features, l2), features) for p in sets}


def fit_default(sets: list[Prepared]) -> None:
    """Choose the feature set and penalty by the worst held-out family, then fit on all."""
    families = [p for p in sets if p.name != HARD_NAME]
    grid = {}
    for set_name, features in CANDIDATE_SETS.items():
        for l2 in PENALTIES:
            table = leave_one_out(families, features, l2)
            worst = min(table.values(), key=lambda r: r["accuracy"])
            grid[f"{set_name} l2={l2}"] = {"features": features, "l2": l2, "held_out": table, "worst": worst}
            print(f"{set_name:14s} l2={l2:<6} worst {worst['accuracy']:.3f}  " +
                  " ".join(f"{k}={v['accuracy']:.3f}" for k, v in table.items()), flush=True)
    best = max(grid.values(), key=lambda g: (g["worst"]["accuracy"], -g["worst"]["ece"]))
    print(f"chosen: {best['features']} l2={best['l2']} (worst held-out family {best['worst']['accuracy']:.3f})")
    if tuple(best["features"]) != FEATURES:
        print(f"set disamb/features.py FEATURES = {tuple(best['features'])} and rerun --fit-default")
        return
    m = fit_on(families, FEATURES, best["l2"])
    m.info = {"fitted_on": f"{sum(len(p.notes) for p in families)} notes of families {[p.name for p in families]}",
              "l2": best["l2"], "chosen_by": "worst held-out family (leave one family out)",
              "grid": {k: {"worst": g["worst"]["accuracy"]} for k, g in grid.items()}}
    m.save(match.DEFAULT_MATCHER)
    print(f"wrote {match.DEFAULT_MATCHER}: " + ", ".join(f"{f} {w:+.2f}" for f, w in zip(FEATURES, m.weights)))


# ---------------------------------------------------------------- the shift table


def shift_table(sets: list[Prepared], report: list[str]) -> dict:
    """The table for the sets named in `report`; each one's held-out weights are fitted on
    every family in `sets` but itself, whichever sets are reported."""
    shipped = match.default_matcher()
    l2 = float(shipped.info.get("l2", 0.001))
    families = [p for p in sets if p.name != HARD_NAME]
    rows = {}
    pooled = ([], [], [])  # over the families reported: right, confidences of labelled notes, their correctness
    for p in (p for p in sets if p.name in report):
        others = [q for q in families if q is not p]
        held_out = fit_on(others, FEATURES, l2)
        run, how, (choice, conf) = default_run(p, held_out)
        if p.name != HARD_NAME:
            pooled[0].extend(choice[i] == p.truth[i] for i in p.scored)
            for part, values in zip(pooled[1:], labelled_pairs(p, choice, conf)):
                part.extend(values)
        rows[p.name] = {
            "notes": len(p.notes), "gold": len(p.gold), "scored": len(p.scored),
            "defaults_held_out": defaults_alone(p, held_out),
            "default_run": run, "default_run_detail": how,
            "own_gold_logit": own_gold_logit(p),
            "evidence_ceiling": evidence_ceiling(p),
            "previous_release": previous_release(p),
        }
    reported = [r for n, r in rows.items() if n != HARD_NAME]
    worst = min(reported, key=lambda r: r["default_run"]["accuracy"])["default_run"] if reported else None
    return {"sets": rows, "worst_family_default_run": worst,
            "families_pooled_default_run": summarise(*pooled) if reported else None}


def print_table(result: dict) -> None:
    cols = ("defaults_held_out", "default_run", "own_gold_logit", "evidence_ceiling", "previous_release")
    print(f"{'set':26s} {'gold':>5s} " + " ".join(f"{c:>22s}" for c in cols))
    for name, r in result["sets"].items():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v['accuracy']:.3f} (ECE {v['ece']:.3f})" if v else "-")
        print(f"{name:26s} {r['gold']:5d} " + " ".join(f"{x:>22s}" for x in cells))
    w = result["worst_family_default_run"]
    if w:
        print(f"worst family, default run: {w['accuracy']:.3f} (ECE {w['ece']:.3f})")
    for name, r in result["sets"].items():
        v = r["default_run"]
        print(f"  {name}: default-run ECE {v['ece']:.3f}; a calibrated labeller would show {v['ece_if_calibrated']:.3f}")
    pl = result["families_pooled_default_run"]
    if pl:
        print(f"families pooled ({pl['n']} notes), default run: {pl['accuracy']:.3f} (ECE {pl['ece']:.3f}; "
              f"calibrated would show {pl['ece_if_calibrated']:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join([*FAMILIES, HARD_NAME]), help="comma-separated family names")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--data", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "accuracy.json")
    ap.add_argument("--notes", type=int, default=None, help="only the first N voice notes of each set")
    ap.add_argument("--fit-default", action="store_true")
    args = ap.parse_args()
    report = [n for n in args.sets.split(",") if n]
    unknown = [n for n in report if n not in FAMILIES and n != HARD_NAME]
    if unknown:
        sys.exit(f"unknown set: {', '.join(unknown)}; sets: {', '.join([*FAMILIES, HARD_NAME])}")
    # every family is prepared: the held-out weights of a set are fitted on all the others
    sets = prepare_all(list(dict.fromkeys([*FAMILIES, *report])), args.data, args.model, args.notes)
    if args.fit_default:
        fit_default(sets)
        return
    result = shift_table(sets, report)
    result["model"] = args.model
    result["notes_per_set"] = args.notes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
