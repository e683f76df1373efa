"""Hostile inputs, round two (issue 19): classes 1, 2, 3, 5 (text), 7 and 8.

Each test builds the cases of one class and runs them through the real CLI (or the
library where the CLI adds nothing), asserting the one-line message, the exit code and
that the user's files are untouched. The clips are made once and the runs share a cache.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import speak

ROOT = Path(__file__).resolve().parents[1]
CLIPS = {
    "good.wav": "see you at five at the gym",
    "milk.wav": "can you pick up some milk on the way home",
    "meet.wav": "the meeting moved to thursday afternoon",
}


def run_cli(*args, timeout=600):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "disamb.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def strict_loads(line: str):
    def refuse(name):
        raise ValueError(f"{name} is not strict JSON")

    return json.loads(line, parse_constant=refuse)


def read_strict_jsonl(path: Path) -> list[dict]:
    """Every line strict JSON, the file strict UTF-8: what any other JSON reader would accept."""
    return [strict_loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]


def write_jsonl(path: Path, objs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")  # ASCII escapes
    return path


def voice(nid, file, **kw):
    return {"id": nid, "type": "voice", "file": file, **kw}


def text(tid, said, **kw):
    return {"id": tid, "type": "text", "text": said, **kw}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile2")
    rec = d / "rec"
    rec.mkdir()
    for name, said in CLIPS.items():
        speak(said, rec / name)
    return d


def label(world: Path, chats: Path, out: Path, *extra):
    return run_cli("label", world / "rec", chats, "-o", out, "--cache-dir", world / "cache", "-q", *extra)


# ---------------------------------------------------------------- 1. text that reaches a parser as code

SPECIAL = ["<|endoftext|>", "see u at 5 at the gym <|startoftranscript|>", "<|notimestamps|><|en|> hi there"]


def test_special_token_strings_are_tokenized_as_text(tiny_model):
    from disamb.asr import candidate_tokens, is_truncated

    tok = tiny_model.tokenizer
    for said in SPECIAL:
        toks = candidate_tokens(tiny_model, said)
        assert toks and all(t < tok.eot for t in toks), said  # no special token ids
        assert tok.decode(toks) == " " + said.strip()  # the characters, exactly
        assert is_truncated(tiny_model, said * 200)


@pytest.fixture(scope="module")
def markup_run(world):
    """Special tokens in chat text, rich markup in ids, file names and the output path."""
    chats = write_jsonl(world / "chats_code.jsonl", [
        voice("good", "good.wav"),  # 1
        *[text(f"s{i}", s) for i, s in enumerate(SPECIAL)],  # 2-4
        voice("[/x]", "milk.wav"),  # 5
        text("[bold]m", "can u pick up some milk on the way home"),  # 6
        text("t-markup", "[/x] [bold red]not markup[/bold red]"),  # 7
        voice("missing", "[/x]missing.wav"),  # 8
        voice("newline", "new\nline.wav"),  # 9
        text("t-end", "ok"),  # 10
    ])
    out = world / "[bold]out[x]" / "labels.jsonl"
    out.parent.mkdir()
    return label(world, chats, out), chats, out  # with the summary table: the path is printed


def test_markup_and_special_tokens_are_plain_text(markup_run):
    r, chats, out = markup_run
    assert "Traceback" not in r.stderr and "MarkupError" not in r.stderr
    assert r.returncode == 1, r.stderr  # two lines skipped (missing files), reported
    assert f"skipped {chats}:8: audio file not found: [/x]missing.wav" in r.stderr.splitlines()
    assert str(out) in r.stdout  # the summary table names the output as given
    recs = read_strict_jsonl(out)
    assert [x["id"] for x in recs] == ["good", "[/x]"]
    texts = [c["text"] for c in recs[0]["candidates"]]
    assert texts[:3] == SPECIAL and "[/x] [bold red]not markup[/bold red]" in texts
    assert recs[1]["label_id"] == "[bold]m"
    # the text around the special-token string is heard: its likelihood beats every other candidate's
    best = max(recs[0]["candidates"], key=lambda c: c["features"]["lik_prior"])
    assert best["id"] == "s1" and best["features"]["cer"] == 0.0


def test_markup_in_gold_ids_and_paths_in_eval(markup_run, tmp_path):
    r, chats, out = markup_run
    gold = write_jsonl(tmp_path / "gold[red].jsonl", [
        {"id": "[/x]", "label_id": "[bold]m"}, {"id": "[/nope]", "label_id": "[/x]"}])
    r = run_cli("eval", out, "--gold", gold)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 1  # one gold id matches no note
    assert "gold ids matching no note (1): [/nope]" in r.stderr


# ---------------------------------------------------------------- 2 and 5. output that cannot be written, unbounded text

HUGE = "la " * 100_000  # 300k characters: scored on its first 10,000


@pytest.fixture(scope="module")
def odd_text_run(world):
    chats = write_jsonl(world / "chats_odd.jsonl", [
        voice("good", "good.wav", ts=-1.7e308),
        text("t-far", "see u at 5 at the gym", ts=1.7e308),
        text("t-sur", "lone \ud800 half", ts=-1.7e308),
        text("t-huge", HUGE),
        text("t-ok", "ok", ts=0),
    ])
    out = world / "out_odd" / "labels.jsonl"
    out.parent.mkdir()
    return label(world, chats, out, "--json"), chats, out


def test_lone_surrogates_huge_texts_and_extreme_times_write_strict_json(odd_text_run):
    r, chats, out = odd_text_run
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
    remarks = strict_loads(r.stdout)["remarks"]
    assert "1 candidate texts longer than 10,000 characters were cut" in " ".join(remarks)
    (rec,) = read_strict_jsonl(out)
    by_id = {c["id"]: c for c in rec["candidates"]}
    assert by_id["t-sur"]["text"] == "lone \ud800 half"  # kept exactly, as a JSON escape
    assert rec["label_id"] == "t-far"
    huge = by_id["t-huge"]
    assert huge["text"] == HUGE[:10_000] and huge["truncated"] is True and huge["text_chars"] == len(HUGE)
    assert "text_chars" not in by_id["t-ok"]
    for c in rec["candidates"]:
        assert all(np.isfinite(v) for v in c["features"].values())
        assert abs(c["features"].get("gap", 0)) <= 86400


def test_strict_json_writer_refuses_nan(tmp_path):
    from disamb.files import write_jsonl as write

    with pytest.raises(ValueError):
        write(tmp_path / "x.jsonl", [{"p": float("nan")}])
    assert not (tmp_path / "x.jsonl").exists()


# ---------------------------------------------------------------- 3. the user's own files destroyed


def _same_chats(world: Path) -> Path:
    return write_jsonl(world / "chats_same.jsonl", [voice("good", "good.wav"), text("t", "see u at 5")])


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_output_that_is_an_input_is_refused(world, tmp_path, how):
    chats = write_jsonl(tmp_path / "chats.jsonl", [voice("good", "good.wav"), text("t", "see u at 5")])
    before = chats.read_bytes()
    out = chats
    if how == "symlink":
        out = tmp_path / "link.jsonl"
        out.symlink_to(chats)
    elif how == "hardlink":
        out = tmp_path / "hard.jsonl"
        os.link(chats, out)
    r = label(world, chats, out)
    assert "Traceback" not in r.stderr
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {out}: is the input {chats}; write the output elsewhere"]
    assert chats.read_bytes() == before
    r = label(world, chats, tmp_path / "labels.jsonl", "--save-matcher", out)
    assert r.returncode == 2 and "is the input" in r.stderr and chats.read_bytes() == before


def _char_device(path: Path) -> Path:
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a copy of /dev/null
    return path


@pytest.mark.parametrize("kind", ["device", "fifo", "link-to-device", "folder"])
def test_output_that_is_not_a_regular_file_is_refused(world, tmp_path, kind):
    chats = _same_chats(world)
    out = tmp_path / "out"
    if kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        _char_device(out)
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "link-to-device":
        out.symlink_to("/dev/null")
    else:
        out.mkdir()
    before = os.lstat(out)
    r = label(world, chats, out)
    assert "Traceback" not in r.stderr
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {out}: ") and "not a regular file" in line or "is a folder" in line, line
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_import_over_its_own_export_is_refused(tmp_path):
    folder = tmp_path / "WhatsApp Chat"
    folder.mkdir()
    export = folder / "_chat.txt"
    export.write_text("01/03/2024, 12:02 - Bob: see u at 5\n01/03/2024, 12:03 - Ann: ok\n", encoding="utf-8")
    before = export.read_bytes()
    for path in (export, folder):
        r = run_cli("import", "whatsapp", path, "-o", export)
        assert "Traceback" not in r.stderr and r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [f"error: {export}: is the input {export}; write the output elsewhere"]
        assert export.read_bytes() == before


def test_predict_output_over_its_labels_is_refused(world, tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": "v"}\n')
    r = run_cli("predict", world / "rec", "--model", tmp_path / "m", "--labels", labels, "-o", labels)
    assert r.returncode == 2 and "is the input" in r.stderr, r.stderr
    assert labels.read_text() == '{"id": "v"}\n'


def test_one_atomic_writer(tmp_path):
    from disamb.files import OutputPathError, write_atomic

    write_atomic(tmp_path / "a.txt", "é")
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.txt").read_text("utf-8") == "é" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    os.mkfifo(tmp_path / "f")
    with pytest.raises(OutputPathError, match="not a regular file"):
        write_atomic(tmp_path / "f", "x")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "f").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "f"]


# ---------------------------------------------------------------- 7. train, predict and eval files trusted too much


@pytest.fixture(scope="module")
def labelled(world):
    chats = write_jsonl(world / "chats_train.jsonl", [
        voice("v1", "good.wav", label_id="a1"), text("a1", "see u at 5 at the gym"), text("b1", "pick up milk on the way home"),
        voice("v2", "milk.wav", label_id="b2"), text("b2", "pick up milk on the way home"), text("c2", "meeting moved to thursday"),
        voice("v3", "meet.wav"), text("c3", "meeting moved to thursday"), text("a3", "see u at 5 at the gym"),
    ])
    out = world / "out_train" / "labels.jsonl"
    out.parent.mkdir()
    r = label(world, chats, out)
    assert r.returncode == 0, r.stderr
    return chats, out


BAD_LABEL_LINES = [
    ('{"id": "v1", "label": 123}', '"label" must be a string or null, got number'),
    ('{"id": "v2", "candidates": 5}', '"candidates" must be an array, got number'),
    ('{"id": "v3", "confidence": "high"}', '"confidence" must be a number, got string'),
    ('{"id": "v1", "candidates": [{"id": "a1", "text": 7}]}', '"candidates"[0]: "text" must be a string, got number'),
    ('{"id": "v1", "accepted": "yes"}', '"accepted" must be true or false, got string'),
    ("garbage", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got array"),
]


def test_train_reports_wrongly_typed_label_lines(world, labelled, tmp_path):
    chats, good = labelled
    bad = tmp_path / "labels.jsonl"
    lines = good.read_text("utf-8").splitlines() + [b for b, _ in BAD_LABEL_LINES]
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = run_cli("train", world / "rec", chats, bad, "-o", tmp_path / "model", "--cache-dir", world / "cache",
                "-q", "--min-count", "1", "--epochs", "5", "--holdout", "0")
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 1, r.stderr
    skipped = [ln for ln in r.stderr.splitlines() if ln.startswith("skipped ")]
    assert len(skipped) == len(BAD_LABEL_LINES), r.stderr
    for k, (_, reason) in enumerate(BAD_LABEL_LINES):
        assert skipped[k].startswith(f"skipped {bad}:{len(lines) - len(BAD_LABEL_LINES) + k + 1}: {reason}"), skipped[k]
    assert (tmp_path / "model" / "model.json").is_file()
    # eval reads the same file the same way
    r = run_cli("eval", bad, "--json")
    assert "Traceback" not in r.stderr and r.returncode == 1
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("skipped ")]) == len(BAD_LABEL_LINES)


def _small_model(folder: Path) -> Path:
    import torch

    from disamb.train import Classifier, make_head

    dim = 384  # tiny.en's embedding, so `predict` gets as far as the probabilities
    clf = Classifier(classes=["a", "b"], head=make_head(dim, 2, "mlp", 8, 0.0), mean=np.zeros(dim, np.float32),
                     std=np.ones(dim, np.float32), meta={"head": {"kind": "mlp", "hidden": 8, "dropout": 0.0}})
    torch.manual_seed(0)
    clf.save(folder)
    return folder


@pytest.mark.parametrize("change,reason", [
    (lambda m: m.update(head="mlp"), '"head" must be an object'),
    (lambda m: m["head"].update(hidden="big"), '"head"."hidden" must be a positive integer'),
    (lambda m: m["head"].update(kind=5), '"head"."kind" must be linear or mlp'),
    (lambda m: m["head"].update(dropout=[1]), '"head"."dropout" must be a number'),
])
def test_model_json_with_wrong_types_is_refused(tmp_path, change, reason):
    from disamb.train import Classifier, ModelFileError

    folder = _small_model(tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=reason.replace("[", r"\[").replace(".", r"\.")):
        Classifier.load(folder)


@pytest.mark.parametrize("value", [0.0, float("nan"), float("inf"), -1.0])
def test_feature_scale_that_is_not_positive_and_finite_is_refused(world, tmp_path, value):
    import torch
    from safetensors.torch import load_file, save_file

    folder = _small_model(tmp_path / "m")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["feature_std"][1] = value
    save_file(tensors, str(folder / "model.safetensors"))
    r = run_cli("predict", world / "rec", "--model", folder, "-o", tmp_path / "p.jsonl", "-q",
                "--cache-dir", world / "cache")
    assert "Traceback" not in r.stderr
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {folder / 'model.safetensors'}: feature scale must be positive and finite (dimension 1)"]
    assert not (tmp_path / "p.jsonl").exists()


# ---------------------------------------------------------------- 8. a message broken over two lines


def test_names_with_newlines_stay_on_one_line(markup_run, world, tmp_path):
    r, chats, out = markup_run
    assert f"skipped {chats}:9: audio file not found: new\\nline.wav" in r.stderr.splitlines(), r.stderr
    assert not any(ln.startswith("line.wav") for ln in r.stderr.splitlines())
    missing = tmp_path / "no\nsuch\r.jsonl"
    r = run_cli("label", world / "rec", missing, "-o", tmp_path / "labels.jsonl", "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    shown = str(missing).replace("\n", "\\n").replace("\r", "\\r")
    assert r.stderr.strip().splitlines() == [f"error: {shown}: file not found"]


@pytest.mark.parametrize("field,value,reason", [
    ("label_id", 5, '"label_id" must be a string or null, got number'),
    ("confidence", "high", '"confidence" must be a number, got string'),
    ("gold_in_window", "no", '"gold_in_window" must be true or false, got string'),
])
def test_review_refuses_wrongly_typed_label_lines_by_reason(tmp_path, field, value, reason):
    from disamb.review import LabelsFileError, load_items

    rec = {"id": "v", "file": "v.wav", "transcript": "hi", "label_id": "a", "confidence": 0.9,
           "candidates": [{"id": "a", "text": "hi", "prob": 0.9}, {"id": "b", "text": "yo", "prob": 0.1}]}
    labels = write_jsonl(tmp_path / "labels.jsonl", [rec, {**rec, "id": "w", field: value}])
    with pytest.raises(LabelsFileError) as e:
        load_items(labels)
    assert str(e.value) == f"{labels}:2: {reason}"
