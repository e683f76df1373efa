"""Memory benchmark: does resident memory stay flat over a long `disamb label` run?

Generates N short voice notes with the synthetic generator (or reuses a folder made
earlier), then runs the label pipeline in-process exactly as the CLI does (read notes,
load the model, `pipeline.label_all` into a fresh cache: priors, per-clip stage,
matching; atomic write), sampling
the process's resident set size (RSS) every 100 notes. Prints the samples and writes
them to benchmarks/results/memory.json.

"Flat" means: after the first 200 notes (model, allocator pools and thread pools warmed
up), RSS grows by less than --flat-mb over the rest of the run. What must grow is only
the per-note results kept for matching (a few KB each).

Usage: python benchmarks/memory.py [--notes 1000] [--data DIR] [--batch-size 8] [--tracemalloc]
Run it alone: it keeps both CPU cores busy for 10-15 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from disamb.chats import read_notes  # noqa: E402
from disamb.clips import ClipOptions, StageTimes  # noqa: E402
from disamb.label import MatchOptions, write_labels  # noqa: E402
from disamb.models import load_model  # noqa: E402
from disamb.pipeline import label_all  # noqa: E402
from benchmarks.synth import SynthConfig, make_dataset  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Current resident set size (not the peak) from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, help="reuse (or create) the synthetic dataset here")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--every", type=int, default=100, help="sample RSS every this many notes")
    ap.add_argument("--flat-mb", type=float, default=60.0, help="allowed RSS growth after warm-up")
    ap.add_argument("--tracemalloc", action="store_true", help="also track Python heap (slower)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="disamb-memory-"))
    data = args.data or work / "data"
    t0 = time.perf_counter()
    if not (data / "chats.jsonl").exists():
        print(f"generating {args.notes} notes in {data} ...", flush=True)
        make_dataset(data, SynthConfig(n_notes=args.notes, seed=args.seed, gold_fraction=0.0))
    gen_seconds = time.perf_counter() - t0

    if args.tracemalloc:
        tracemalloc.start()
    base = rss_mb()
    read = read_notes(data / "chats.jsonl", data / "recordings")
    notes = read.notes[: args.notes]
    lm = load_model("tiny.en", "cpu")
    after_model = rss_mb()
    print(f"{len(notes)} notes; RSS {base:.0f} MB before the model, {after_model:.0f} MB after", flush=True)

    samples: list[dict] = []
    done = 0
    t1 = time.perf_counter()

    def on_done(n: int) -> None:
        nonlocal done
        before = done
        done += n
        if done // args.every > before // args.every or done == len(notes):
            s = {"notes": done, "rss_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1),
                 "seconds": round(time.perf_counter() - t1, 1)}
            if args.tracemalloc:
                cur, peak = tracemalloc.get_traced_memory()
                s["py_heap_mb"] = round(cur / 2**20, 1)
                s["py_heap_peak_mb"] = round(peak / 2**20, 1)
            samples.append(s)
            print("  " + "  ".join(f"{k} {v}" for k, v in s.items()), flush=True)

    times = StageTimes()
    # a fresh cache: every clip is really computed; priors, clips and matching as `disamb label` runs them
    run = label_all(lm, notes, ClipOptions(batch_size=args.batch_size), MatchOptions(), work / "cache",
                    on_done=on_done, times=times)
    records, summary = run.records, run.summary
    write_labels(work / "labels.jsonl", records)
    clip_seconds = time.perf_counter() - t1
    final = {"notes": len(notes), "rss_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1),
             "seconds": round(time.perf_counter() - t1, 1), "stage": "after matching and writing"}
    samples.append(final)

    warm = next((s for s in samples if s["notes"] >= 2 * args.every), samples[0])
    last_clip = [s for s in samples if "stage" not in s][-1]
    growth = last_clip["rss_mb"] - warm["rss_mb"]
    per_100 = growth / max(1, last_clip["notes"] - warm["notes"]) * 100
    result = {
        "notes": len(notes),
        "batch_size": args.batch_size,
        "rss_before_model_mb": round(base, 1),
        "rss_after_model_mb": round(after_model, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_growth_after_warmup_mb": round(growth, 1),
        "rss_growth_per_100_notes_mb": round(per_100, 2),
        "flat": growth < args.flat_mb,
        "flat_threshold_mb": args.flat_mb,
        "clips_computed": times.clips_computed,
        "errors": summary.errors,
        "labelled": summary.labelled,
        "generate_seconds": round(gen_seconds, 1),
        "label_seconds": round(clip_seconds, 1),
        "clips_per_second": round(len(notes) / clip_seconds, 2),
        "samples": samples,
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)  # the cache, labels and (unless --data) the generated notes
    print(f"peak RSS {result['peak_rss_mb']} MB; growth after warm-up {growth:.1f} MB "
          f"({per_100:.2f} MB per 100 notes) -> {'flat' if result['flat'] else 'NOT flat'}; written {args.out}")
    return 0 if result["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
