"""`disamb review` without a browser: the JSON API through Starlette's TestClient,
the gold file on disk, path escapes on the audio route, the host check, refitting."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import struct
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
with warnings.catch_warnings():
    # starlette >= 1.0 prefers httpx2 but still works with httpx
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from typer.testing import CliRunner

from disamb import answers, match, review, review_server
from disamb.chats import Candidate, VoiceNote
from disamb.cli import app
from disamb.answers import GoldFileError, append_answer, apply_gold_file, read_answers
from disamb.review import LabelsFileError, RefitError, Session, queue_order
from disamb.review_server import UnsafeHostError, bind, check_host, create_app

N_NOTES = 14
EVIL = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'


def write_tone(path: Path, seconds: float = 0.6, freq: float = 440.0, rate: int = 16000) -> None:
    """A short 16-bit mono tone: real audio a browser can decode, no speech engine needed."""
    n = int(seconds * rate)
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(n)
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


def make_review_data(folder: Path, n_notes: int = N_NOTES, seed: int = 0) -> dict:
    """recordings/ + labels.jsonl shaped like `disamb label` output.

    Note i's truth is candidate truth[i]; its features favour the truth, and its top
    probability is 0.30 + 0.04 * rank[i] so the uncertainty order is known. Extra
    records: one with a decode error, one already gold, one whose file leaves the
    folder, one through a symlink pointing outside, one whose file is missing.
    """
    rng = np.random.default_rng(seed)
    rec_dir = folder / "recordings"
    rec_dir.mkdir(parents=True)
    rank = rng.permutation(n_notes)
    truth = rng.integers(0, 10, n_notes)
    records, ids = [], []
    for i in range(n_notes):
        nid = f"v{i:02d}"
        write_tone(rec_dir / f"{nid}.wav", freq=300 + 40 * i)
        feats = np.zeros((10, len(match.FEATURES)))  # two informative features, the rest constant
        feats[:, [match.FEATURES.index("lik_per_char"), match.FEATURES.index("cer")]] = rng.normal(0, 1, (10, 2))
        feats[truth[i], match.FEATURES.index("lik_per_char")] += 4.0
        feats[truth[i], match.FEATURES.index("cer")] -= 3.0
        top = 0.30 + 0.04 * rank[i]
        probs = np.full(10, (1 - top) / 10)
        pick = (truth[i] + (1 if i % 3 == 0 else 0)) % 10  # the labeller is wrong on every third note
        probs[pick] = top
        cands = [
            {
                "id": f"m{i:02d}_{j}",
                "text": EVIL if (i == 0 and j == 1) else f"message {j} after note {i}",
                "prob": round(float(probs[j]), 4),
                "features": {f: round(float(feats[j, k]), 4) for k, f in enumerate(match.FEATURES)},
            }
            for j in range(10)
        ]
        records.append(
            {
                "id": nid, "file": f"{nid}.wav", "transcript": f"words of note {i}", "candidates": cands,
                "prob_none": round(float((1 - top) / 10), 4), "label_id": cands[pick]["id"],
                "label": cands[pick]["text"], "confidence": round(float(top), 4), "accepted": False,
                "gold_label_id": None, "duration": 0.6,
            }
        )
        ids.append(nid)
    base = records[1]

    def extra(nid: str, file: str, **kw) -> dict:
        r = json.loads(json.dumps(base))
        r.update(id=nid, file=file, **kw)
        return r

    records.append({"id": "broken", "file": "broken.wav", "transcript": None,
                    "candidates": [{"id": "m_b", "text": "x", "prob": None}], "label_id": None,
                    "label": None, "confidence": 0.0, "accepted": False, "gold_label_id": None,
                    "error": "cannot decode audio"})
    records.append(extra("known", "v01.wav", gold_label_id=base["candidates"][0]["id"], confidence=0.01))
    outside = folder / "secret.wav"
    write_tone(outside)
    records.append(extra("escape", "../secret.wav"))
    (rec_dir / "link.wav").symlink_to(outside)
    records.append(extra("linked", "link.wav"))
    records.append(extra("missing", "gone.wav"))
    labels = folder / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    return {
        "recordings": rec_dir, "labels": labels, "gold": folder / "gold.jsonl", "ids": ids,
        "truth": {nid: f"m{i:02d}_{truth[i]}" for i, nid in enumerate(ids)},
        "labeller": {r["id"]: r["label_id"] for r in records},
        "top": {nid: 0.30 + 0.04 * rank[i] for i, nid in enumerate(ids)},
    }


@pytest.fixture()
def data(tmp_path: Path) -> dict:
    return make_review_data(tmp_path)


def client_for(data: dict, **kw) -> tuple[TestClient, Session]:
    session = Session.open(data["recordings"], data["labels"], data.get("gold_override"), **kw)
    return TestClient(create_app(session), base_url="http://127.0.0.1"), session


# ---------------------------------------------------------------- queue


def test_queue_asks_least_certain_first_and_leaves_out_broken_and_gold_notes(data):
    client, session = client_for(data)
    state = client.get("/api/state").json()
    ids = [n["id"] for n in state["notes"]]
    reviewable = data["ids"] + ["escape", "linked", "missing"]
    assert sorted(ids) == sorted(reviewable)
    assert "broken" not in ids and "known" not in ids
    tops = [max(c["prob"] for c in n["candidates"]) for n in state["notes"]]
    assert tops == sorted(tops)
    assert state["resume"] == 0
    assert state["stats"]["answered"] == 0 and state["stats"]["remaining"] == len(reviewable)
    assert state["stats"]["already_gold"] == 1  # "known"; "broken" has nothing to review at all
    assert session.gold_path == data["labels"].with_name("gold.jsonl")


def test_other_orders(data):
    items = review.load_items(data["labels"])
    notes = [it for it in items if it.id in data["ids"]]
    assert queue_order(notes, set(), "file") == data["ids"]
    margins = [next(it for it in notes if it.id == k).top_margin()[1] for k in queue_order(notes, set(), "margin")]
    assert margins == sorted(margins)
    shuffled = queue_order(notes, set(), "random", seed=3)
    assert sorted(shuffled) == sorted(data["ids"]) and shuffled != data["ids"]
    assert shuffled == queue_order(notes, set(), "random", seed=3)
    assert "v03" not in queue_order(notes, {"v03"}, "uncertain")
    with pytest.raises(review.ReviewError):
        queue_order(notes, set(), "sideways")


def test_disagreement_order_puts_classifier_conflicts_first(data, tmp_path):
    from disamb.textsim import normalize

    items = review.load_items(data["labels"])
    notes = [it for it in items if it.id in data["ids"] and it.label_id in it.cand_ids]
    agree, differ = notes[0], notes[-1]
    chosen = lambda it: it.cand_texts[it.cand_ids.index(it.label_id)]  # noqa: E731
    preds = tmp_path / "predictions.jsonl"
    preds.write_text(
        json.dumps({"id": agree.id, "class": normalize(chosen(agree)), "probability": 0.9}) + "\n"
        + json.dumps({"id": differ.id, "class": "something else entirely", "probability": 0.8}) + "\n"
    )
    assert review.mark_disagreements(notes, preds) == 1
    order = queue_order(notes, set(), "disagree")
    assert order[0] == differ.id and sorted(order) == sorted(it.id for it in notes)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(review.ReviewError, match="bad.jsonl:1"):
        review.mark_disagreements(notes, bad)


# ---------------------------------------------------------------- answers and the gold file


def test_each_answer_is_appended_and_fsynced_at_once(data, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(answers.os, "fsync", spy)
    client, _ = client_for(data)
    r = client.post("/api/answer", json={"id": "v03", "label_id": "m03_2"})
    assert r.status_code == 200 and r.json()["saved"]["label_id"] == "m03_2"
    after_first = len(synced)
    assert after_first >= 1
    lines = data["gold"].read_text("utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["id"] == "v03"

    r = client.post("/api/answer", json={"id": "v04", "label_id": None})
    assert r.status_code == 200
    assert len(synced) > after_first
    rows = [json.loads(line) for line in data["gold"].read_text("utf-8").splitlines()]
    assert [(x["id"], x["label_id"]) for x in rows] == [("v03", "m03_2"), ("v04", None)]
    assert all(set(x) == {"id", "label_id", "ts"} and x["ts"].endswith("+00:00") for x in rows)
    assert r.json()["stats"]["answered"] == 2


def test_last_answer_wins_and_a_restart_resumes_after_the_answered_notes(data):
    client, _ = client_for(data)
    first = [n["id"] for n in client.get("/api/state").json()["notes"]]
    a, b, c = first[:3]
    cand = lambda nid, j: f"m{int(nid[1:]):02d}_{j}"  # noqa: E731
    for nid, label in [(a, cand(a, 0)), (b, cand(b, 5)), (a, None)]:
        assert client.post("/api/answer", json={"id": nid, "label_id": label}).status_code == 200
    assert len(data["gold"].read_text("utf-8").splitlines()) == 3

    client2, session2 = client_for(data)  # a new server on the same files
    assert session2.answers[a].label_id is None and session2.answers[b].label_id == cand(b, 5)
    state = client2.get("/api/state").json()
    ids = [n["id"] for n in state["notes"]]
    assert ids[:2] == [b, a]  # answered, in the order of their last answer
    assert state["resume"] == 2 and ids[2] == c
    assert state["notes"][1]["answered"] and state["notes"][1]["answer"] is None
    assert state["stats"]["answered"] == 2


def test_labeller_accuracy_counts_agreement_with_answers(data):
    client, _ = client_for(data)
    right = [nid for nid in data["ids"] if data["labeller"][nid] == data["truth"][nid]][:2]
    wrong = [nid for nid in data["ids"] if data["labeller"][nid] != data["truth"][nid]][:1]
    for nid in right + wrong:
        stats = client.post("/api/answer", json={"id": nid, "label_id": data["truth"][nid]}).json()["stats"]
    assert stats["labeller_correct"] == 2 and stats["answered"] == 3
    assert stats["labeller_accuracy"] == pytest.approx(2 / 3)


def test_torn_last_line_is_ignored_and_not_glued_to_the_next_answer(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "a", "label_id": "x", "ts": "t"}\n{"id": "b", "lab', "utf-8")
    assert list(read_answers(gold)) == ["a"]
    append_answer(gold, "c", None)
    answers = read_answers(gold)
    assert list(answers) == ["a", "c"] and answers["c"].label_id is None


def test_a_broken_line_in_the_middle_is_an_error_with_its_line_number(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "a", "label_id": null}\nnot json\n{"id": "b", "label_id": null}\n', "utf-8")
    with pytest.raises(GoldFileError, match=r"gold.jsonl:2:"):
        read_answers(gold)
    gold.write_text('{"id": "a", "label_id": 3}\n', "utf-8")
    with pytest.raises(GoldFileError, match=r"label_id"):
        read_answers(gold)


def test_bad_answers_are_refused(data):
    client, _ = client_for(data)
    assert client.post("/api/answer", json={"id": "nope", "label_id": None}).status_code == 404
    assert client.post("/api/answer", json={"id": "v01", "label_id": "m02_1"}).status_code == 400
    assert client.post("/api/answer", json={"id": "v01", "label_id": 3}).status_code == 400
    assert client.post("/api/answer", json=["v01"]).status_code == 400
    # a cross-site form can post text/plain without a preflight: refused
    r = client.post("/api/answer", content='{"id": "v01", "label_id": null}', headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert client.get("/api/answer").status_code == 405
    assert not data["gold"].exists()


# ---------------------------------------------------------------- audio and safety


def test_audio_is_served_by_note_id(data):
    client, _ = client_for(data)
    r = client.get("/audio/v02")
    assert r.status_code == 200
    assert r.headers["content-type"] == "audio/wav"
    assert r.content == (data["recordings"] / "v02.wav").read_bytes()
    partial = client.get("/audio/v02", headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206 and len(partial.content) == 100


@pytest.mark.parametrize(
    "url, status",
    [
        ("/audio/escape", 403),  # labels.jsonl names ../secret.wav
        ("/audio/linked", 403),  # a link inside the folder pointing out of it
        ("/audio/missing", 404),
        ("/audio/unknown-id", 404),
        ("/audio/../secret.wav", 404),
        ("/audio/..%2Fsecret.wav", 404),
        ("/audio/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404),
        ("/audio//etc/passwd", 404),
        ("/audio/v02.wav", 404),  # file names are not ids
        ("/recordings/v02.wav", 404),
    ],
)
def test_audio_route_never_leaves_the_recordings_folder(data, url, status):
    client, _ = client_for(data)
    r = client.get(url)
    assert r.status_code == status
    assert b"RIFF" not in r.content


def test_page_builds_the_dom_from_text_and_locks_scripts_to_its_own(data):
    client, _ = client_for(data)
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script
    csp = r.headers["content-security-policy"]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    # untrusted text travels as JSON data, never as markup in the page
    assert "pwned" not in html
    state = client.get("/api/state")
    assert state.headers["content-type"] == "application/json"
    texts = [c["text"] for n in state.json()["notes"] for c in n["candidates"]]
    assert EVIL in texts


def test_loopback_only_unless_asked(data):
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_host(host, allow_remote=False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(UnsafeHostError):
            check_host(host, allow_remote=False)
    check_host("0.0.0.0", allow_remote=True)
    with pytest.raises(UnsafeHostError):
        bind("0.0.0.0", 0)
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
    finally:
        sock.close()
    # a page reaching the server through a foreign name (DNS rebinding) is refused
    session = Session.open(data["recordings"], data["labels"])
    foreign = TestClient(create_app(session), base_url="http://attacker.example")
    assert foreign.get("/api/state").status_code == 400


# ---------------------------------------------------------------- refit


def test_refit_needs_ten_answers_then_reorders_with_the_new_matcher(data, tmp_path):
    out = tmp_path / "matcher.json"
    client, session = client_for(data, matcher_out=out)
    r = client.post("/api/refit", json={})
    assert r.status_code == 409 and "10" in r.json()["error"]
    answered = data["ids"][:10]
    for nid in answered[:9]:
        client.post("/api/answer", json={"id": nid, "label_id": data["truth"][nid]})
    assert client.get("/api/state").json()["stats"]["can_refit"] is False
    client.post("/api/answer", json={"id": answered[9], "label_id": data["truth"][answered[9]]})
    assert client.get("/api/state").json()["stats"]["can_refit"] is True
    assert client.post("/api/refit", content="{}", headers={"content-type": "text/plain"}).status_code == 415

    before = {n["id"]: n for n in client.get("/api/state").json()["notes"]}
    r = client.post("/api/refit", json={})
    assert r.status_code == 200
    state = r.json()
    assert state["stats"]["matcher"].startswith("fitted on 11")  # 10 answers + the gold note
    assert state["resume"] == 10
    queue = state["notes"][10:]
    assert sorted(n["id"] for n in queue) == sorted(set(before) - set(answered))
    tops = [max(max(c["prob"] for c in n["candidates"]), n["prob_none"]) for n in queue]
    assert tops == sorted(tops)
    # the features favour the truth, so the refitted matcher puts it on top where the old one did not
    for n in queue:
        if n["id"] in data["ids"]:
            best = max(n["candidates"], key=lambda c: c["prob"])
            assert best["id"] == data["truth"][n["id"]]
    assert any(before[n["id"]]["candidates"] != n["candidates"] for n in queue)
    assert match.Matcher.load(out).source.startswith("fitted")


def test_refit_error_when_answers_lack_features(tmp_path):
    d = make_review_data(tmp_path)
    rows = [json.loads(line) for line in d["labels"].read_text().splitlines()]
    for r in rows:
        for c in r["candidates"]:
            c.pop("features", None)
    d["labels"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    session = Session.open(d["recordings"], d["labels"])
    for nid in d["ids"][:10]:
        session.answer(nid, d["truth"][nid])
    with pytest.raises(RefitError, match="features"):
        session.refit()


# ---------------------------------------------------------------- gold for `disamb label --gold`


def test_apply_gold_file_sets_the_gold_fields(tmp_path):
    def note(nid: str) -> VoiceNote:
        return VoiceNote(nid, f"{nid}.wav", tmp_path / f"{nid}.wav", [Candidate(f"{nid}-a", "hello"), Candidate(f"{nid}-b", "bye")])

    notes = [note("p"), note("q"), note("r"), note("s")]
    gold = tmp_path / "gold.jsonl"
    for nid, label in [("p", "p-a"), ("q", None), ("r", "elsewhere"), ("p", "p-b")]:
        append_answer(gold, nid, label)
    assert apply_gold_file(notes, gold) == 3
    p, q, r, s = notes
    assert (p.gold_label_id, p.gold_text, p.gold_in_window) == ("p-b", "bye", True)
    assert (q.gold_label_id, q.gold_in_window) == (None, False) and q.has_gold
    assert (r.gold_label_id, r.gold_in_window) == (None, False)
    assert not s.has_gold
    assert apply_gold_file(notes, tmp_path / "absent.jsonl") == 0


# ---------------------------------------------------------------- CLI refusals


def test_cli_refuses_bad_input_with_a_one_line_message(data, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["review", str(tmp_path / "nowhere"), str(data["labels"])])
    assert r.exit_code == 2 and "not a folder" in r.output
    r = runner.invoke(app, ["review", str(data["recordings"]), str(data["labels"]), "--order", "best"])
    assert r.exit_code == 2 and "--order" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    r = runner.invoke(app, ["review", str(data["recordings"]), str(bad)])
    assert r.exit_code == 2 and "bad.jsonl:1" in r.output
    with pytest.raises(LabelsFileError):
        Session.open(data["recordings"], tmp_path / "absent.jsonl")


def test_notes_without_playable_audio_are_reported(data):
    session = Session.open(data["recordings"], data["labels"])
    assert sorted(session.unplayable()) == ["escape", "linked", "missing"]


# ---------------------------------------------------------------- hostile inputs, round two (issue 19)


def add_record(data: dict, nid: str, file: str) -> None:
    """One more reviewable note in labels.jsonl, shaped like the others."""
    lines = data["labels"].read_text("utf-8").splitlines()
    rec = json.loads(lines[1])
    rec.update(id=nid, file=file)
    data["labels"].write_text("\n".join(lines + [json.dumps(rec)]) + "\n", "utf-8")


def strict_headers(client: TestClient) -> tuple[str, str]:
    page = client.get("/")
    return page.headers["content-security-policy"], page.headers["x-content-type-options"]


def test_a_recording_named_html_is_never_served_as_a_page(data):
    wav = (data["recordings"] / "v02.wav").read_bytes()
    script = b"<html><script>fetch('/api/state')</script></html>"
    for name in ("x.html", "x.svg", "x.xml", "x.js"):
        (data["recordings"] / name).write_bytes(wav + script)  # still a WAV: labelling reads it fine
        add_record(data, f"n-{name}", name)
    client, _ = client_for(data)
    csp, _ = strict_headers(client)
    for name in ("x.html", "x.svg", "x.xml", "x.js"):
        r = client.get(f"/audio/n-{name}")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == csp
    assert client.get("/audio/v02").headers["content-type"] == "audio/wav"  # the audio table still applies


def test_every_response_carries_the_pages_strict_headers(data):
    client, _ = client_for(data)
    csp, _ = strict_headers(client)
    assert "default-src 'none'" in csp
    responses = [
        client.get("/api/state"), client.get("/audio/v02"), client.get("/audio/missing"),
        client.get("/audio/escape"), client.get("/nowhere"),
        client.post("/api/answer", content=b"{", headers={"content-type": "application/json"}),
        client.post("/api/answer", content=b"x", headers={"content-type": "text/plain"}),
        client.post("/api/refit", json={}), client.put("/api/answer"),
        client.get("/", headers={"host": "evil.example"}),
        client.post("/api/answer", content=b"x" * (review_server.MAX_BODY + 1), headers={"content-type": "application/json"}),
    ]
    for r in responses:
        assert r.headers.get("content-security-policy") == csp, (r.request.url, r.status_code)
        assert r.headers.get("x-content-type-options") == "nosniff", (r.request.url, r.status_code)


def test_a_recording_swapped_after_the_check_is_not_served(data, monkeypatch):
    secret = data["recordings"].parent / "secret.wav"
    real = Session.audio_path

    def checked_then_swapped(self, note_id):
        path = real(self, note_id)  # the check passed; now the file becomes a link out
        path.unlink()
        path.symlink_to(secret)
        return path

    monkeypatch.setattr(Session, "audio_path", checked_then_swapped)
    client, _ = client_for(data)
    r = client.get("/audio/v03")
    assert r.status_code == 403 and b"RIFF" not in r.content


def test_request_bodies_are_bounded_and_errors_echo_little(data):
    client, session = client_for(data)
    big = b'{"id": "v02", "label_id": "' + b"x" * (10 * review_server.MAX_BODY) + b'"}'
    r = client.post("/api/answer", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413

    def chunked():  # no Content-Length: the limit must hold while reading
        for _ in range(100):
            yield b"x" * 65536

    r = client.post("/api/answer", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "content-length" not in r.request.headers
    # a body under the limit with a long bad value: refused, and the echo stays short
    r = client.post("/api/answer", json={"id": "v02", "label_id": "y" * 50000})
    assert r.status_code == 400 and len(r.text) < 300 and "is not a candidate" in r.json()["error"]
    assert session.answers == {}
