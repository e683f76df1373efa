"""The Ray engine on a local 2-CPU Ray instance: same labels as the local run, a worker
killed mid-run loses and repeats nothing, and the CLI path with sharded output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'disamb[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'disamb[ray]')")

from disamb import match  # noqa: E402
from disamb.chats import read_notes  # noqa: E402
from disamb.clips import ClipOptions  # noqa: E402
from disamb.distributed import (  # noqa: E402
    RayOptions,
    label_on_ray,
    plan_tasks,
    run_clips_ray,
    shard_paths,
    write_shards,
)
from disamb.label import MatchOptions  # noqa: E402
from disamb.pipeline import label_all  # noqa: E402
from benchmarks.synth import SynthConfig, make_dataset  # noqa: E402

pytestmark = pytest.mark.slow

N_SPOKEN = 7  # plus one undecodable note at the end: 8 clips
BATCH = 4


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Seven espeak-ng notes from the generator plus one broken clip at the end of the log."""
    root = tmp_path_factory.mktemp("raydata")
    info = make_dataset(root / "ds", SynthConfig(n_notes=N_SPOKEN, seed=3, workers=1))
    (info.recordings / "broken.wav").write_bytes(b"RIFF\0\0\0\0WAVEfmt not audio at all")
    lines = info.chats.read_text("utf-8").splitlines()
    lines.append(json.dumps({"id": "vbroken", "type": "voice", "file": "broken.wav"}))
    lines += [json.dumps({"id": f"mtail{i}", "type": "text", "text": f"see you at {i}"}) for i in range(3)]
    info.chats.write_text("\n".join(lines) + "\n", "utf-8")
    # Hand-set weights over the current features: the engines are compared, not the
    # matcher, so the test does not depend on the shipped default weights.
    w = {"lik_per_char": 1.0, "lik_sum": 1.0, "cer": -1.0, "token_set": 0.5, "digit_dist": -0.5}
    f = list(match.FEATURES)
    matcher = match.Matcher(f, np.zeros(len(f)), np.ones(len(f)), np.array([w.get(k, 0.0) for k in f]), -1e3)
    matcher.save(root / "matcher.json")
    read = read_notes(info.chats, info.recordings)
    assert len(read.notes) == N_SPOKEN + 1
    return root, info, read.notes


def options(batch_size: int = 1) -> ClipOptions:
    """One clip per model batch by default: the decoder's float32 sums depend on the
    shapes of a batch, so only batches of the same clips give the same bits."""
    return ClipOptions(batch_size=batch_size, audio_ctx="auto")


def match_options(root: Path) -> MatchOptions:
    return MatchOptions(matcher=root / "matcher.json")


@pytest.fixture(scope="module")
def local_run(dataset, tiny_model):
    root, _, notes = dataset
    return label_all(tiny_model, notes, options(), match_options(root), root / "cache-local")


@pytest.fixture(scope="module")
def ray_run(dataset, tiny_model, local_run, ray_instance):
    root, _, notes = dataset
    done: list[int] = []
    run = label_on_ray(
        tiny_model, notes, options(), match_options(root), root / "cache-ray",
        RayOptions(workers=2, max_notes_per_task=3), on_done=done.append, device="cpu",
    )
    return run, done


def same_labels(a: list[dict], b: list[dict], tol: float = 2e-3) -> None:
    """Same notes, order, transcripts and decisions; numbers equal up to float32 noise."""
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(a, b):
        for key in ("label_id", "label", "accepted", "transcript", "error", "gold_label_id"):
            assert x.get(key) == y.get(key), (x["id"], key)
        assert x["confidence"] == pytest.approx(y["confidence"], abs=tol)
        assert [c["id"] for c in x["candidates"]] == [c["id"] for c in y["candidates"]]
        for cx, cy in zip(x["candidates"], y["candidates"]):
            assert cx["prob"] == pytest.approx(cy["prob"], abs=tol)
            fx, fy = cx.get("features", {}), cy.get("features", {})
            assert fx.keys() == fy.keys()
            for k in fx:
                assert fx[k] == pytest.approx(fy[k], abs=tol), (x["id"], k)


def test_tasks_keep_blocks_whole_and_cover_every_note_once(dataset):
    _, _, notes = dataset
    blocks = match._blocks([[c.id for c in n.candidates] for n in notes])
    for limit in (1, 3, BATCH, 400):
        rows = plan_tasks(notes, limit)
        assert sorted(i for r in rows for i in r) == list(range(len(notes)))
        assert all(1 <= len(r) <= limit for r in rows)
        row_of = {i: k for k, r in enumerate(rows) for i in r}
        for block in blocks:
            # a block spreads over exactly as many rows as its length needs
            assert len({row_of[i] for i in block}) == -(-len(block) // limit)
    with pytest.raises(ValueError):
        plan_tasks(notes, 0)


def test_ray_labels_equal_local_labels(dataset, local_run, ray_run):
    _, _, notes = dataset
    run, done = ray_run
    assert sum(done) == len(notes)
    assert run.times.clips_computed == N_SPOKEN and run.times.clips_cached == 0
    # Same clips in each model batch as the local run: every number is the same bit for bit.
    assert run.records == local_run.records
    assert run.summary.as_dict() == local_run.summary.as_dict()
    assert run.records[-1]["label_id"] is None and run.records[-1]["error"]
    assert sum(r["label_id"] is not None for r in run.records) >= N_SPOKEN - 2


def test_other_batches_give_the_same_bytes(dataset, tiny_model, local_run, ray_instance):
    """Batches of 4 cut at row ends, on two workers, against the local run's batches of 1,
    with int8 weights: every number that reaches the matcher (transcripts included) is
    computed one clip and one text at a time, so the records are the same bit for bit."""
    root, _, notes = dataset
    run = label_on_ray(
        tiny_model, notes, options(BATCH), match_options(root), root / "cache-ray-4",
        RayOptions(workers=2, max_notes_per_task=BATCH), device="cpu",
    )
    assert run.records == local_run.records


def _clip_entries(cache: Path) -> int:
    return len(list(cache.glob("*/*.json")))


def _worker_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ClipWorker" in cmd:
                pids.append(int(proc.name))
    return pids


def test_killed_worker_is_retried_and_no_note_is_lost_or_repeated(dataset, tiny_model, local_run, ray_instance):
    root, _, notes = dataset
    cache = root / "cache-kill"
    killed: dict = {}
    stop = threading.Event()
    stale = set(_worker_pids())  # actors of earlier datasets that may still be exiting

    def killer() -> None:
        """SIGKILL the actor once its first batch is cached, while it works on the rest."""
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            entries = _clip_entries(cache) if cache.exists() else 0
            pids = [p for p in _worker_pids() if p not in stale]
            if entries >= 1 and pids:
                killed["entries"] = entries
                killed["pid"] = pids[0]
                os.kill(pids[0], signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        run = label_on_ray(
            tiny_model, notes, options(), match_options(root), cache,
            RayOptions(workers=1, max_notes_per_task=len(notes)), device="cpu",
        )
    finally:
        stop.set()
        thread.join()
    assert "pid" in killed, "the actor finished before it could be killed"
    assert killed["entries"] < N_SPOKEN, "killed too late: every clip was already done"
    assert not Path(f"/proc/{killed['pid']}").exists() or killed["pid"] not in _worker_pids()
    # The retried call ran on a new actor, found what the dead one cached and did the rest.
    assert run.times.clips_cached >= killed["entries"]
    assert run.times.clips_cached + run.times.clips_computed == N_SPOKEN
    assert _clip_entries(cache) == N_SPOKEN
    assert [r["id"] for r in run.records] == [n.id for n in notes]
    same_labels(run.records, local_run.records)


def test_cache_shared_by_a_restarted_job_skips_done_clips(dataset, tiny_model, ray_run, ray_instance):
    """A second job on the cache the first one filled computes nothing."""
    from disamb.clips import StageTimes

    root, _, notes = dataset
    times = StageTimes()
    outcomes = run_clips_ray(
        notes, "tiny.en", "cpu", options(), root / "cache-ray", RayOptions(workers=1), times=times,
        model_key=tiny_model.key,
    )
    assert times.clips_computed == 0 and times.clips_cached == N_SPOKEN
    assert list(outcomes) == [n.id for n in notes]
    assert outcomes["vbroken"].result is None and outcomes["vbroken"].error
    first, _ = ray_run
    assert all(outcomes[n.id].result.transcript == first.outcomes[n.id].result.transcript for n in notes[:N_SPOKEN])


def test_a_worker_with_another_model_is_refused(dataset, ray_instance):
    from disamb.distributed import RayEngineError

    root, _, notes = dataset
    with pytest.raises(RayEngineError, match="another|driver"):
        run_clips_ray(
            notes[:1], "tiny.en", "cpu", options(), root / "cache-ray", RayOptions(workers=1),
            model_key="some-other-model",
        )


def test_shards_concatenate_to_the_labels(tmp_path):
    records = [{"id": f"v{i}", "label_id": None} for i in range(7)]
    paths = write_shards(tmp_path / "labels.jsonl", records, 3)
    assert [p.name for p in paths] == [f"labels-0000{i}-of-00003.jsonl" for i in range(3)]
    assert paths == shard_paths(tmp_path / "labels.jsonl", 3)
    lines = [json.loads(line) for p in paths for line in p.read_text().splitlines()]
    assert lines == records
    assert all(p.read_text() for p in paths)


def test_cli_engine_ray_matches_the_library_run(dataset, ray_run, ray_instance, tmp_path):
    """`disamb label --engine ray` joins the test's Ray instance; the cache is warm."""
    root, info, notes = dataset
    run, _ = ray_run
    out = tmp_path / "labels.jsonl"
    env = dict(os.environ, COLUMNS="120")
    proc = subprocess.run(
        [sys.executable, "-m", "disamb.cli", "label", str(info.recordings), str(info.chats), "-o", str(out),
         "--engine", "ray", "--address", ray_instance, "--workers", "1", "--shards", "3",
         "--batch-size", str(BATCH), "--audio-ctx", "auto", "--device", "cpu",
         "--matcher", str(root / "matcher.json"), "--cache-dir", str(root / "cache-ray"), "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 1, proc.stderr  # the broken clip is reported, as in a local run
    summary = json.loads(proc.stdout)
    assert summary["engine"] == "ray" and summary["clips_cached"] == N_SPOKEN and summary["clips_computed"] == 0
    assert summary["notes"] == len(notes) and summary["errors"] == 1
    records = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert records == run.records
    shards = shard_paths(out, 3)
    assert summary["shards"] == [str(p) for p in shards]
    assert [json.loads(line) for p in shards for line in p.read_text("utf-8").splitlines()] == records


def test_cli_refuses_ray_options_with_the_local_engine(dataset, tmp_path):
    _, info, _ = dataset
    proc = subprocess.run(
        [sys.executable, "-m", "disamb.cli", "label", str(info.recordings), str(info.chats),
         "-o", str(tmp_path / "l.jsonl"), "--workers", "2"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "--engine ray" in proc.stderr


def test_the_local_engine_never_imports_ray():
    code = (
        "import sys, disamb.cli, disamb.pipeline, disamb.distributed; "
        "print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_score_mode_priors_from_workers_equal_the_local_ones(dataset, tiny_model, ray_instance):
    """In score mode each worker computes the priors of its own notes into the shared
    cache and the driver reads them: a text's prior must not depend on which notes it
    was computed with (issue 19: a near-tie flipped between Ray and local)."""
    from dataclasses import replace

    root, _, notes = dataset
    opts = replace(options(), mode="score")
    local = label_all(tiny_model, notes, opts, match_options(root), root / "cache-local-score")
    run = label_on_ray(
        tiny_model, notes, opts, match_options(root), root / "cache-ray-score",
        RayOptions(workers=2, max_notes_per_task=3), device="cpu",
    )
    assert run.records == local.records
