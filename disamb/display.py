"""What the commands show on the terminal: progress bars and the summary tables they end with.

Plain rich objects built from the summary dicts the commands also print with --json, so
the table and the JSON always say the same; cli.py decides where they go.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class Bars:
    """What `progress_bar` yields: call it to advance the main bar; `stage(name, n, total)`
    advances a bar of its own per stage name, opened the first time the stage reports
    (the adaptation's training and rescoring, whose totals are only known as they start).
    rich allows one live display at a time, so the stages share the main bar's."""

    def __init__(self, progress: Progress | None = None, main=None):
        self.progress, self.main, self.stages = progress, main, {}

    def __call__(self, n: int = 1) -> None:
        if self.progress is not None and self.main is not None:
            self._advance(self.main, n)

    def stage(self, name: str, n: int, total: int) -> None:
        if self.progress is None:
            return
        if name not in self.stages:
            self.stages[name] = self.progress.add_task(name, total=total, rate="")
        self._advance(self.stages[name], n)

    def _advance(self, task, n: int) -> None:
        self.progress.advance(task, n)
        t = self.progress.tasks[task]
        speed = t.finished_speed or t.speed
        self.progress.update(task, rate=f"{speed:.2f} clips/s" if speed else "")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
    )


@contextmanager
def progress_bar(total: int, label: str, quiet: bool, console: Console):
    """A rich progress bar with items/s and ETA on stderr (`Bars`); a no-op when quiet."""
    if quiet or total == 0:
        yield Bars()
        return
    with _progress(console) as progress:
        yield Bars(progress, progress.add_task(label, total=total, rate=""))


@contextmanager
def stage_bars(quiet: bool, console: Console):
    """`Bars` with no main bar, only the stages' (`train --adapt`: the adapter's training)."""
    if quiet:
        yield Bars()
        return
    with _progress(console) as progress:
        yield Bars(progress)


def summary_table(title: str) -> Table:
    """The two-column what/value table every command ends with."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    return table


def epoch_progress(total: int, quiet: bool, console: Console):
    """Per-epoch bar for `train`: loss and held-out accuracy as they change."""
    if quiet:
        return None
    return Progress(
        TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TextColumn("held-out acc {task.fields[acc]}"), TimeElapsedColumn(), console=console, transient=False,
    )


def label_table(d: dict) -> Table:
    """The `disamb label` summary (what --json prints as one object)."""
    table = summary_table("disamb label")
    table.add_row("voice notes read", str(d["notes"]))
    table.add_row("labelled", str(d["labelled"]))
    cov = f" ({d['accepted'] / d['notes']:.0%})" if d["notes"] else ""
    table.add_row(f"accepted (confidence ≥ {d['threshold']:.3g})", f"{d['accepted']}{cov}")
    table.add_row("threshold from", d["threshold_source"])
    table.add_row("errors (not labelled)", str(d["errors"]))
    table.add_row("input lines skipped", str(d["skipped_lines"]))
    table.add_row("notes with < window candidates", str(d["short_windows"]))
    table.add_row("matcher", d["matcher"])
    if d["gold"]:
        table.add_row("gold notes", f"{d['gold']} ({d['gold_in_window']} with truth in window)")
        if d["gold_accuracy"] is not None:
            table.add_row("accuracy on gold", f"{d['gold_accuracy']:.3f} ({d['gold_correct']}/{d['gold_in_window']})")
        if d["gold_accepted"]:
            table.add_row(
                "precision of accepted on gold",
                f"{d['gold_accepted_correct'] / d['gold_accepted']:.3f} ({d['gold_accepted_correct']}/{d['gold_accepted']})",
            )
        if d["cv_accuracy"] is not None:
            table.add_row("matcher cross-validated accuracy", f"{d['cv_accuracy']:.3f}")
        if d["matcher_losses"]:
            losses = ", ".join(f"{k} {v:.3f}" for k, v in d["matcher_losses"].items())
            table.add_row("log-loss on gold (cross-validated)", losses)
        if d.get("matcher_errors"):
            wrong = ", ".join(f"{k} {v}" for k, v in d["matcher_errors"].items())
            table.add_row("gold notes wrong (cross-validated)", f"{wrong}; chosen: {d['matcher_choice']}")
    else:
        table.add_row("gold notes", "0 (add label_id to some voice notes to measure accuracy)")
    if d["window_prior"]:
        shares = " ".join(f"{x:.0%}" for x in d["window_prior"]["position"])
        table.add_row("answers by window position (learned)", shares)
    for r in d.get("adapt") or []:
        losses = "; ".join(f"fold {f['fold']}: " + " ".join(f"{x:.3g}" for x in f["epoch_losses"])
                           + (" (reused)" if f["reused"] else "") for f in r["folds"])
        table.add_row(f"adapt round {r['round']}: training loss per epoch", losses)
        if r["gold_accuracy_before"] is not None:
            after = "n/a" if r["gold_accuracy_after"] is None else f"{r['gold_accuracy_after']:.3f}"
            table.add_row(f"adapt round {r['round']}: accuracy on gold", f"{r['gold_accuracy_before']:.3f} → {after}")
        mixed = r.get("unadapted_weight") or 0.0
        table.add_row(f"adapt round {r['round']}: labels from",
                      f"unadapted {mixed:.0%} + adapted {1 - mixed:.0%} of each feature" if mixed else "the adapted model")
        table.add_row(f"adapt round {r['round']}: time", f"{r['seconds']:.0f} s")
    table.add_row("model", f"{d['model']} on {d['device']}")
    table.add_row("written", d["output"])
    return table


def train_table(summary: dict, min_count: int, fixed: list[str] | None) -> Table:
    """The `disamb train` summary table (what --json prints as one object)."""
    table = summary_table("disamb train")
    rows = summary["rows"]
    table.add_row("voice notes read", str(summary["notes"]))
    table.add_row("with embeddings", f"{summary['with_embedding']} ({summary['errors']} failed)")
    table.add_row("classes", f"{summary['classes']} (from {summary['class_source']}, min count {min_count})" if fixed is None
                  else f"{summary['classes']} (from {summary['class_source']})")
    table.add_row("notes outside the class set", str(summary["outside_class_set"]))
    table.add_row("trained on", f"{rows['gold']} gold, {rows['accepted']} accepted, {rows['partial']} candidate sets")
    table.add_row("loss / head", f"{summary['loss']} / {summary['head']}")
    table.add_row("epochs (best)", f"{summary['epochs_run']} ({summary['best_epoch']})")
    if summary["holdout_accuracy"] is not None:
        table.add_row("held-out gold accuracy", f"{summary['holdout_accuracy']:.3f} on {summary['holdout_gold']} notes")
    else:
        table.add_row("held-out gold accuracy", "- (fewer than 2 gold notes in the class set)")
    text = summary.get("text_scoring")
    if text is not None:
        weights = ", ".join(f"{k} {v:.2f}" for k, v in text["weights"].items())
        table.add_row("text scoring", f"{text['classes_scored_per_clip']:g} classes scored per clip; weights {weights}; "
                      f"temperature {text['temperature']:.2f}")
        if text["holdout_accuracy"] is not None:
            table.add_row("  held-out gold accuracy", f"{text['holdout_accuracy']:.3f} on {text['holdout_gold']} notes")
    adapter = summary.get("adapter")
    if adapter:
        losses = " ".join(f"{x:.3g}" for x in adapter["epoch_losses"])
        table.add_row("encoder adapted on", f"{adapter['train_notes']} notes; loss per epoch {losses}"
                      + (" (reused)" if adapter["reused"] else f"; {adapter['train_seconds']:.0f} s"))
    table.add_row("encoder", summary["model"])
    table.add_row("written", summary["output"])
    return table


def predict_table(data: dict, restrict: bool) -> Table:
    """The `disamb predict` summary table (what --json prints as one object)."""
    table = summary_table("disamb predict")
    table.add_row("recordings", str(data["notes"]))
    table.add_row("predicted", f"{data['predicted']} ({data['errors']} failed)")
    table.add_row("classes", str(data["classes"]))
    if restrict:
        table.add_row("restricted to candidates", f"{data['restricted']} ({data['no_candidate_class']} had no known class)")
    if data["labels_agreement"] is not None:
        table.add_row("agreement with labeller", f"{data['labels_agreement']:.3f} ({data['labels_agree']}/{data['labels_compared']})")
    if data["accepted_agreement"] is not None:
        table.add_row("  on accepted labels", f"{data['accepted_agreement']:.3f} ({data['accepted_agree']}/{data['accepted_compared']})")
    if data["gold_accuracy"] is not None:
        table.add_row("accuracy on gold", f"{data['gold_accuracy']:.3f} ({data['gold_correct']}/{data['gold']})")
    if data["holdout_accuracy"] is not None:
        table.add_row("  on gold held out of training", f"{data['holdout_accuracy']:.3f} ({data['holdout_correct']}/{data['holdout_gold']})")
    table.add_row("written", data["output"])
    return table


def import_table(result, kind: str, output: Path) -> Table:
    """What `disamb import` read, left out and wrote."""
    table = summary_table(f"disamb import {kind}")
    table.add_row("messages read", str(result.n_messages))
    table.add_row("voice notes", f"{result.n_voice} ({result.n_voice_present} with audio)")
    table.add_row("text messages", str(result.n_text))
    table.add_row("notices left out", str(result.n_notices))
    table.add_row("placeholders for media not exported", str(result.n_placeholders))
    for what, n in sorted(result.skipped.items()):
        table.add_row(f"skipped: {what}", str(n))
    for what, how in result.assumed.items():
        table.add_row(f"assumed: {what}", how)
    table.add_row("not understood / no media", str(len(result.errors)))
    table.add_row("written", f"{output} ({len(result.records)} records)")
    return table
