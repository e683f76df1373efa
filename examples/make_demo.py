"""Build the demo dataset: a few dozen espeak-ng voice notes inside a realistic chat log.

Usage: python examples/make_demo.py [OUT_DIR]     (default: demo/)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# The generator is benchmark tooling kept outside the installed package: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.synth import DEMO, make_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="demo", type=Path, help="where to write (default: demo/)")
    args = parser.parse_args()

    info = make_dataset(args.out_dir, DEMO)
    events = [json.loads(line) for line in info.chats.read_text(encoding="utf-8").splitlines()]
    truth = [json.loads(line) for line in info.truth.read_text(encoding="utf-8").splitlines()]
    n_text = sum(e["type"] == "text" for e in events)
    n_gold = sum("label_id" in e for e in events)
    formats = Counter(t["format"] for t in truth)
    print(f"wrote {info.n_notes} voice notes and {n_text} text messages to {info.folder}/ "
          f"in {info.seconds:.1f} s ({info.seconds_per_note * 1000:.0f} ms per note)")
    print(f"  {info.chats}     chat stream; {n_gold} notes carry a gold label_id")
    print(f"  {info.manifest}  same notes, explicit-candidates format")
    print(f"  {info.truth}     ground truth for every note (for evaluation only)")
    print(f"  {info.recordings}/  audio: " + ", ".join(f"{n} {f}" for f, n in sorted(formats.items())))


if __name__ == "__main__":
    main()
