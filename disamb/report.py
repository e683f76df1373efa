"""The evaluation as a reader sees it: tables (rich and HTML), matplotlib plots, the report folder.

Everything here renders the result dicts that evaluate.py and classifier_eval.py
compute; nothing here computes a metric, so the terminal, `--json` and the HTML
report always show the same numbers.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .evaluate import InputError
from .metrics import DEFAULT_BINS

# ---------------------------------------------------------------- tables (shared by rich and HTML)


@dataclass
class Section:
    """A titled table of strings: rendered as a rich table on the terminal and in HTML."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    text_columns: bool = False  # free text in every column: never right-align


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(ci: Sequence[float] | None) -> str:
    return "–" if ci is None else f"{ci[0]:.1%} – {ci[1]:.1%}"


def _short(text: str | None, limit: int = 90) -> str:
    if text is None:
        return "–"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sections(result: dict) -> list[Section]:
    """The evaluation as tables, in the order a reader wants them."""
    g = result["gold"]
    out: list[Section] = []
    rows = [
        ["notes in labels", str(result["notes"])],
        ["labelled / accepted / errors", f"{result['labelled']} / {result['accepted']} / {result['errors']}"],
        ["gold notes", f"{g['notes']} ({g['from_labels']} from labels, {g['from_gold_file']} from gold file)"],
        ["gold with truth in window", str(g["in_window"])],
        ["gold with truth not in window", str(g["not_in_window"])],
        ["  … labelled anyway / accepted anyway", f"{g['not_in_window_labelled']} / {g['not_in_window_accepted']}"],
        ["gold notes with errors (counted wrong)", str(g["errors"])],
        ["gold in window left unlabelled", str(g["in_window_unlabelled"])],
    ]
    acc = result["accuracy"]
    if acc:
        rows.append(["accuracy on gold (truth in window)",
                     f"{acc['value']:.1%} ({acc['correct']}/{acc['n']}), 95% CI {_ci(acc['ci95'])}"])
    thr = result["threshold"]
    rows.append(["threshold", (f"{thr['value']:.4g}" if thr["value"] is not None else "–") + f" ({thr['source']})"])
    cal = result["calibration"]
    if cal:
        ref = cal["ece_if_calibrated"]
        rows.append(["expected calibration error", f"{cal['ece']:.3f} ({cal['bins']} bins, {cal['n']} labelled gold; "
                     f"a perfectly calibrated labeller would show {ref['mean']:.3f}, 90% of the time below {ref['p90']:.3f})"])
    tq = result["transcripts"]
    if tq and tq["n"]:
        kinds = tq["references"]
        rows.append(["transcript WER / CER", f"{tq['wer']:.1%} / {tq['cer']:.1%} on {tq['n']} notes "
                     f"(reference: {kinds['spoken']} spoken, {kinds['typed']} typed)"])
    if g["unmatched_ids"]:
        ids = g["unmatched_ids"]
        rows.append(["gold ids matching no note", ", ".join(ids[:20]) + (f" … ({len(ids)} in all)" if len(ids) > 20 else "")])
    out.append(Section("Summary", ["what", "value"], rows))

    out.append(Section(
        "Precision and coverage by threshold",
        ["threshold", "accepted", "precision", "95% CI", "coverage"],
        [[f"{p['threshold']:.4g}" + (" (chosen)" if p["chosen"] else ""), str(p["accepted"]),
          _pct(p["precision"]), _ci(p["precision_ci95"]), _pct(p["coverage"])] for p in result["operating_points"]],
        note="over all gold notes; coverage = accepted / gold notes; a label on a note whose truth is not in the window is wrong",
    ))
    if cal:
        out.append(Section(
            "Reliability",
            ["confidence", "count", "mean confidence", "accuracy", "gap"],
            [[f"{r['lo']:.2f}–{r['hi']:.2f}", str(r["count"]), _num(r["confidence"]), _num(r["accuracy"]),
              _num(None if r["count"] == 0 else r["accuracy"] - r["confidence"], 3)] for r in cal["table"]],
        ))
    rc = result["risk_coverage"]
    if rc:
        picks = _curve_samples(rc)
        out.append(Section(
            "Risk–coverage (most confident first)",
            ["coverage", "notes", "accuracy", "confidence ≥"],
            [[_pct(p["coverage"]), str(p["k"]), _pct(p["accuracy"]), f"{p['threshold']:.4g}"] for p in picks],
            note="a sample of the curve; --json and the report have every point",
        ))
    if result["worst"]:
        out.append(Section(
            "Most confident mistakes",
            ["note", "conf.", "acc.", "transcript", "chosen", "truth"],
            [[w["id"], f"{w['confidence']:.3f}", "yes" if w["accepted"] else "no", _short(w["transcript"]),
              _short(w["chosen"]), _short(w["true"]) + ("" if w["true_in_window"] else " (not in window)")]
             for w in result["worst"]],
            text_columns=True,
        ))
    if result.get("classifier"):
        out += classifier_sections(result["classifier"])
    return out


def classifier_sections(m: dict) -> list[Section]:
    """Tables for a classifier evaluation (see evaluate_classifier)."""
    rows = [
        ["model", m.get("model_dir", "–")],
        ["evaluated on", m["method"]],
        ["accuracy", f"{m['accuracy']:.1%} ({m['correct']}/{m['n']}), 95% CI {_ci(m['ci95'])}"],
        [f"top-{m['top_k']} accuracy", _pct(m["top_k_accuracy"])],
        ["accuracy within the candidate window", _pct(m.get("window_accuracy"))],
        ["classes", str(len(m["class_names"]))],
        ["gold notes outside the class set / without embedding",
         f"{m['gold_outside_classes']} / {m['gold_without_embedding']}"],
    ]
    per = [[_short(r["class"], 60), str(r["support"]), str(r["predicted"]), _pct(r["precision"]), _pct(r["recall"])]
           for r in m["per_class"]]
    return [
        Section("Classifier on gold", ["what", "value"], rows),
        Section("Per-class precision and recall", ["class", "gold", "predicted", "precision", "recall"], per,
                note="classes that occur among the evaluated notes or their predictions"),
    ]


def _curve_samples(points: list[dict], wanted: Iterable[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)) -> list[dict]:
    """The last curve point at or below each wanted coverage (plus the full curve's end)."""
    picks: list[dict] = []
    for w in wanted:
        below = [p for p in points if p["coverage"] <= w + 1e-12]
        if below and (not picks or picks[-1] is not below[-1]):
            picks.append(below[-1])
    if points and (not picks or picks[-1] is not points[-1]):
        picks.append(points[-1])
    return picks


def rich_tables(result: dict) -> list:
    """The sections as rich Tables for the terminal."""
    from rich.table import Table

    tables = []
    for s in sections(result):
        t = Table(title=s.title, title_justify="left", caption=s.note or None, caption_justify="left")
        for i, c in enumerate(s.columns):
            t.add_column(c, justify="left" if i == 0 or s.text_columns else "right",
                         overflow="fold")
        for row in s.rows:
            t.add_row(*row)
        tables.append(t)
    return tables


# ---------------------------------------------------------------- plots and HTML report


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt, fig, path: Path) -> None:
    import io

    from .files import write_atomic

    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)  # pyplot keeps every open figure alive otherwise
    write_atomic(path, png.getvalue())


def _finish_unit_plot(plt, fig, ax, path: Path, xlabel: str, ylabel: str, bottom: float, legend: str) -> None:
    """Both axes run up to 1 (a share against an accuracy): the calibration plots end alike."""
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=8)
    _save_figure(plt, fig, path)


def plot_risk_coverage(result: dict, path: Path) -> None:
    plt = _pyplot()
    rc = result["risk_coverage"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    if rc:
        cov = [0.0] + [p["coverage"] for p in rc]
        acc = [rc[0]["accuracy"]] + [p["accuracy"] for p in rc]
        ax.step(cov, acc, where="pre", color="tab:blue", label="accuracy of the most confident")
    thr = result["threshold"]["value"]
    for p in result["operating_points"]:
        if p["chosen"] and p["precision"] is not None:
            ax.plot([p["coverage"]], [p["precision"]], "o", color="tab:red", label=f"chosen threshold {thr:.3g}")
    if result["accuracy"]:
        ax.axhline(result["accuracy"]["value"], color="grey", ls="--", lw=1, label="overall accuracy (in window)")
    low = min([p["accuracy"] for p in rc] + ([result["accuracy"]["value"]] if result["accuracy"] else []), default=0.0)
    ax.set_title("Risk–coverage on gold")
    bottom = max(0.0, math.floor((low - 0.05) * 10) / 10)  # zoom: the interesting part is near the top
    _finish_unit_plot(plt, fig, ax, path, "coverage (share of gold notes accepted)", "accuracy of accepted",
                      bottom, "lower left")


def plot_reliability(result: dict, path: Path) -> None:
    plt = _pyplot()
    cal = result["calibration"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    if cal:
        rows = [r for r in cal["table"] if r["count"]]
        width = 1.0 / cal["bins"]
        ax.bar([r["lo"] for r in rows], [r["accuracy"] for r in rows], width=width, align="edge",
               edgecolor="black", color="tab:blue", alpha=0.7, label="accuracy in bin")
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o", color="tab:red",
                ms=4, label="(mean confidence, accuracy) of bin")
        for r in rows:
            ax.annotate(str(r["count"]), (r["lo"] + width / 2, min(r["accuracy"] + 0.02, 0.98)), ha="center", fontsize=7)
        ax.set_title(f"Reliability (ECE {cal['ece']:.3f}, n={cal['n']})")
    _finish_unit_plot(plt, fig, ax, path, "confidence", "accuracy", 0, "upper left")


def plot_confidence_histogram(result: dict, path: Path) -> None:
    plt = _pyplot()
    scored = [s for s in result["scored"] if s["labelled"]]
    bins = result["calibration"]["bins"] if result["calibration"] else DEFAULT_BINS
    edges = np.linspace(0, 1, max(bins, 10) + 1)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    right = [s["confidence"] for s in scored if s["correct"]]
    wrong = [s["confidence"] for s in scored if not s["correct"]]
    ax.hist([right, wrong], bins=edges, stacked=True, color=["tab:green", "tab:red"],
            label=[f"right ({len(right)})", f"wrong ({len(wrong)})"], edgecolor="black")
    thr = result["threshold"]["value"]
    if thr is not None:
        ax.axvline(thr, color="black", ls="--", lw=1, label=f"threshold {thr:.3g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("gold notes")
    ax.set_title("Confidence of labelled gold notes")
    ax.legend(loc="upper left", fontsize=8)
    _save_figure(plt, fig, path)


def plot_confusion(model: dict, path: Path, max_labels: int = 40) -> None:
    """Confusion matrix over the classes that occur (true or predicted) among the scored notes."""
    plt = _pyplot()
    cm = np.asarray(model["confusion"], int)
    used = np.flatnonzero(cm.sum(0) + cm.sum(1))
    cm = cm[np.ix_(used, used)]
    names = [_short(model["class_names"][i], 28) for i in used]
    size = min(14.0, 3.5 + 0.28 * len(used))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if len(used) <= max_labels:
        ax.set_xticks(range(len(used)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(used)), names, fontsize=7)
        if len(used) <= 25:
            for i in range(len(used)):
                for j in range(len(used)):
                    if cm[i, j]:
                        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Classifier confusion matrix (n={model['n']}, accuracy {model['accuracy']:.1%})")
    _save_figure(plt, fig, path)


PLOTS = {
    "risk_coverage.png": (plot_risk_coverage, "Risk–coverage curve"),
    "reliability.png": (plot_reliability, "Reliability diagram"),
    "confidence_hist.png": (plot_confidence_histogram, "Confidence histogram, right vs wrong"),
}


def html_page(title: str, secs: list[Section], images: list[tuple[str, str]], subtitle: str = "") -> str:
    """A self-contained page; every piece of text goes through html.escape (chat text is untrusted)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1150px}"
        "table{border-collapse:collapse;margin:8px 0 4px}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:14px;vertical-align:top}th{background:#f0f0f0}td.n{text-align:right}"
        "p.note{color:#666;font-size:12px;margin:0 0 18px}.plots{display:flex;flex-wrap:wrap;gap:12px}"
        "figure{margin:0}figcaption{font-size:13px;color:#444}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if subtitle:
        parts.append(f"<p>{e(subtitle)}</p>")
    for s in secs:
        parts.append(f"<h2>{e(s.title)}</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in s.columns) + "</tr>")
        for row in s.rows:
            cells = []
            for i, v in enumerate(row):
                cls = ' class="n"' if i > 0 and not s.text_columns and _looks_numeric(v) else ""
                cells.append(f"<td{cls}>{e(v)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
        if s.note:
            parts.append(f'<p class="note">{e(s.note)}</p>')
    if images:
        parts.append('<h2>Plots</h2><div class="plots">')
        for name, caption in images:
            parts.append(f'<figure><img src="{e(name, quote=True)}" alt="{e(caption, quote=True)}" width="600">'
                         f"<figcaption>{e(caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _looks_numeric(v: str) -> bool:
    return bool(v) and (v[0].isdigit() or v[0] == "–") and len(v) < 30


def write_report(result: dict, out_dir: Path, title: str = "disamb eval") -> list[Path]:
    """PNG plots and an index.html showing the tables and the plots together; returns the files written."""
    from .files import write_atomic

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create report folder ({e.strerror or e})") from None
    written = []
    images = []
    for name, (fn, caption) in PLOTS.items():
        fn(result, out_dir / name)
        written.append(out_dir / name)
        images.append((name, caption))
    if result.get("classifier"):
        plot_confusion(result["classifier"], out_dir / "confusion.png")
        written.append(out_dir / "confusion.png")
        images.append(("confusion.png", "Classifier confusion matrix"))
    page = out_dir / "index.html"
    write_atomic(page, html_page(title, sections(result), images, result.get("source", "")))
    written.append(page)
    return written
