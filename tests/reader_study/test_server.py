"""reader-study serve: the routes (Flask test client), bad input and path traversal, resume, the
per-reader order, two readers at once over HTTP, and a server killed mid-answer."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import threading
from datetime import datetime, timedelta

import numpy as np
import pytest

pytest.importorskip("flask", reason="the reader-study server needs Flask: pip install 'synthbrain[reader-study]'")
pytest.importorskip("waitress", reason="the reader-study server needs waitress: pip install 'synthbrain[reader-study]'")

from synthbrain.reader_study.server import LOCAL_HOSTS, create_app, orient_slice  # noqa: E402
from synthbrain.reader_study.store import AnswerStore, reader_order  # noqa: E402
from synthbrain.reader_study.study import load_study  # noqa: E402
from tests.reader_study.live import Client, live_server, serve_in_child  # noqa: E402


def _client(study, name: str | None = None):
    client = create_app(study, trusted_hosts=LOCAL_HOSTS).test_client()
    if name is not None:
        response = client.post("/api/session", json={"name": name})
        assert response.status_code == 200, response.json
    return client


def _answer(client, label="real", confidence=3, **extra):
    case_id = client.get("/api/progress").json["case"]["id"]
    return client.post("/api/answer", json={"case_id": case_id, "label": label, "confidence": confidence, **extra}), case_id


def _key_words(study) -> list[bytes]:
    """Strings that only the key holds: truths next to ids, subject ids, synthetic file names."""
    key = json.loads((study / "key" / "key.json").read_text())
    words = [b"truth", b"sub-synth", b"key.json"]
    words += [c["source"]["subject_id"].encode() for c in key["cases"] if "subject_id" in c["source"]]
    return words


def test_page_and_reading_flow(study):
    client = _client(study)
    page = client.get("/")
    assert page.status_code == 200 and b"answer-form" in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"] and page.headers["X-Frame-Options"] == "DENY"
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/api/study").json["n_cases"] == 8
    assert client.get("/api/progress").status_code == 401  # no session yet
    response = client.post("/api/session", json={"name": "  Zoë   O'Brien-Smith "})
    assert response.status_code == 200 and response.json["reader"] == "Zoë O'Brien-Smith"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    progress = client.get("/api/progress").json
    assert progress["answered"] == 0 and progress["total"] == 8 and progress["case"]["position"] == 1
    assert progress["case"]["views"]["axial"] == {"slices": 16, "width": 16, "height": 16}
    response, first = _answer(client, "synthetic", 4, seconds=12.5)
    assert response.status_code == 201 and response.json["answered"] == 1 and response.json["case"]["id"] != first
    response, _ = _answer(client, "unsure", None)
    assert response.status_code == 201
    rows = AnswerStore(study / "answers.sqlite", load_study(study).study_id, load_study(study).case_ids, 0).answers()
    assert [(r["case_id"], r["label"], r["confidence"], r["seconds"], r["position"]) for r in rows][0] == (first, "synthetic", 4, 12.5, 0)
    assert rows[1]["label"] == "unsure" and rows[1]["confidence"] is None


def test_slices_are_png_of_one_size_for_every_case(study):
    client = _client(study, "Reader")
    case_ids = load_study(study).case_ids
    sizes = set()
    for case_id in case_ids:
        for view in ("axial", "coronal", "sagittal"):
            response = client.get(f"/api/case/{case_id}/{view}/8")
            assert response.status_code == 200 and response.mimetype == "image/png" and response.data[:8] == b"\x89PNG\r\n\x1a\n"
            assert "Last-Modified" not in response.headers and "ETag" not in response.headers
            sizes.add(len(response.data))
    assert len(sizes) == 1  # uncompressed: the transfer size says nothing about the content
    assert client.get(f"/api/case/{case_ids[0]}/axial/16").status_code == 404
    assert client.get(f"/api/case/{case_ids[0]}/oblique/3").status_code == 404
    assert client.get(f"/api/case/{case_ids[0]}/axial/-1").status_code == 404
    assert client.get("/api/case/0000000f/axial/3").status_code == 404
    assert _client(study).get(f"/api/case/{case_ids[0]}/axial/3").status_code == 401  # slices need a reader session


def test_slice_orientation_is_radiological():
    volume = np.zeros((4, 5, 6), np.uint8)
    volume[3, 4, 2] = 255  # the patient's far right (x max), anterior (y max), z = 2
    assert orient_slice(volume, "axial", 2)[0, 0] == 255  # anterior up, patient's right on the left
    assert orient_slice(volume, "coronal", 4)[6 - 1 - 2, 0] == 255  # superior up, right on the left
    assert orient_slice(volume, "sagittal", 3)[6 - 1 - 2, 0] == 255  # superior up, anterior on the left
    assert orient_slice(volume, "axial", 2).shape == (5, 4)
    with pytest.raises(ValueError, match="view='oblique'"):
        orient_slice(volume, "oblique", 0)


def test_no_path_reaches_outside_the_study_and_the_key_is_never_sent(study):
    client = _client(study, "Reader")
    case_id = load_study(study).case_ids[0]
    attempts = [
        "/static/../key/key.json",
        "/static/..%2fkey%2fkey.json",
        "/static/%2e%2e/%2e%2e/study.json",
        "/static/..%5c..%5ckey%5ckey.json",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/key/key.json",
        "/study.json",
        f"/cases/{case_id}.nii",
        "/answers.sqlite",
        "/api/case/..%2fkey%2fkey/axial/0",
        "/api/case/../../key/key.json/axial/0",
        f"/api/case/{case_id}%00/axial/0",
        "/api/case/%2e%2e/axial/0",
    ]
    for url in attempts:
        response = client.get(url, follow_redirects=True)
        assert response.status_code in (400, 404), url
        assert b"study_id" not in response.data and b"root:" not in response.data
    # everything a reader can fetch, crawled: no truth, no subject id, no source file name
    seen = b"".join(client.get(path).data for path in ("/", "/static/app.js", "/api/study", "/api/progress"))
    for _ in range(8):
        response, _ = _answer(client, "real", 2)
        seen += response.data
    for word in _key_words(study):
        assert word not in seen, word


def test_bad_requests_are_refused(study):
    client = _client(study, "Reader")
    case_id = client.get("/api/progress").json["case"]["id"]
    other = next(c for c in load_study(study).case_ids if c != case_id)
    refused = [
        ({"case_id": case_id, "label": "fake", "confidence": 3}, 400),
        ({"case_id": case_id, "label": "real", "confidence": 0}, 400),
        ({"case_id": case_id, "label": "real", "confidence": 6}, 400),
        ({"case_id": case_id, "label": "real", "confidence": "3"}, 400),
        ({"case_id": case_id, "label": "real", "confidence": True}, 400),
        ({"case_id": case_id, "label": "real"}, 400),
        ({"case_id": case_id, "label": "unsure", "confidence": 2}, 400),
        ({"case_id": case_id, "label": "real", "confidence": 3, "seconds": -1}, 400),
        ({"case_id": case_id, "label": "real", "confidence": 3, "truth": "real"}, 400),
        ({"case_id": "ffffffff", "label": "real", "confidence": 3}, 404),
        ({"case_id": ["x"], "label": "real", "confidence": 3}, 404),
        ({"case_id": other, "label": "real", "confidence": 3}, 409),  # not this reader's next case
    ]
    for body, status in refused:
        response = client.post("/api/answer", json=body)
        assert response.status_code == status, (body, response.json)
        assert "error" in response.json
    assert client.post("/api/answer", data="{not json", content_type="application/json").status_code == 400
    assert client.post("/api/answer", data="[1, 2]", content_type="application/json").status_code == 400
    assert client.post("/api/answer", data="label=real", content_type="application/x-www-form-urlencoded").status_code == 415
    assert client.post("/api/answer", json={"case_id": "x" * 10_000}).status_code == 413
    assert client.post("/api/answer", json={"case_id": case_id}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.get("/api/study", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding
    assert client.post("/api/answer", data="NaN", content_type="application/json").status_code == 400
    response = client.post("/api/answer", json={"case_id": case_id, "label": "real", "confidence": 3, "seconds": float("nan")})
    assert response.status_code == 400
    # a name with markup is refused, not stored
    for name in ("<script>alert(1)</script>", "a" * 65, "", "   ", "Dr <b>X</b>", "x\u0000y", 42):
        response = _client(study).post("/api/session", json={"name": name})
        assert response.status_code == 400 and response.json["error"].startswith("name"), name
    assert [r["label"] for r in AnswerStore(study / "answers.sqlite", load_study(study).study_id, [], 0).answers()] == []
    # nothing stored so far; now a good answer, then the same again
    response = client.post("/api/answer", json={"case_id": case_id, "label": "real", "confidence": 3})
    assert response.status_code == 201
    response = client.post("/api/answer", json={"case_id": case_id, "label": "synthetic", "confidence": 5})
    assert response.status_code == 409 and "already answered" in response.json["error"]


def test_answers_after_the_study_closed_are_refused(study):
    client = _client(study, "Reader")
    assert _answer(client)[0].status_code == 201
    app = create_app(study)
    app.extensions["synthbrain_reader_study"]["store"].close()
    response, _ = _answer(client)
    assert response.status_code == 403 and "closed" in response.json["error"]
    assert client.get("/api/progress").json["closed"] is True


def _served_at(study, case_id: str) -> str:
    with sqlite3.connect(study / "answers.sqlite") as db:
        return db.execute("SELECT served_at FROM served WHERE case_id = ?", (case_id,)).fetchone()[0]


def _set_back(study, case_id: str, seconds: float) -> None:
    """Pretend the case was first shown ``seconds`` earlier (a test cannot wait that long)."""
    earlier = (datetime.fromisoformat(_served_at(study, case_id)) - timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
    with sqlite3.connect(study / "answers.sqlite") as db:
        db.execute("UPDATE served SET served_at = ? WHERE case_id = ?", (earlier, case_id))


def test_the_server_measures_the_time_per_case(study):
    client = _client(study, "Timer")
    case_id = client.get("/api/progress").json["case"]["id"]
    _set_back(study, case_id, 30.0)
    first_shown = _served_at(study, case_id)
    client.get("/api/progress")  # a reload: the time runs on from when the case was first shown
    assert _served_at(study, case_id) == first_shown
    response = client.post("/api/answer", json={"case_id": case_id, "label": "real", "confidence": 3, "seconds": 9_999_999})
    assert response.status_code == 201
    with sqlite3.connect(study / "answers.sqlite") as db:
        seconds, server_seconds, answered_at = db.execute(
            "SELECT seconds, server_seconds, answered_at FROM answers WHERE case_id = ?", (case_id,)
        ).fetchone()
    assert seconds == 9_999_999  # the browser's time kept as sent; the server's: from first shown to the recorded answer
    expected = (datetime.fromisoformat(answered_at) - datetime.fromisoformat(first_shown)).total_seconds()
    assert server_seconds == pytest.approx(expected, abs=1e-3) and server_seconds >= 30.0
    following = response.json["case"]["id"]  # shown with the answer's reply
    _set_back(study, following, 3600.0)
    before = _served_at(study, following)
    client.post("/api/logout")
    assert client.post("/api/session", json={"name": "timer"}).status_code == 200  # stopped and continued: the time starts again
    assert _served_at(study, following) > before


def test_a_database_from_before_the_server_time_gains_the_column(study):
    from synthbrain.reader_study.store import SCHEMA

    meta = load_study(study)
    old = SCHEMA.split("CREATE TABLE IF NOT EXISTS served")[0].replace(
        "    server_seconds REAL CHECK (server_seconds IS NULL OR server_seconds >= 0),\n", ""
    )
    with sqlite3.connect(meta.database) as db:
        db.executescript(old)
        assert "server_seconds" not in {row[1] for row in db.execute("PRAGMA table_info(answers)")}
    client = _client(study, "Reader")  # opens the store on the old file
    assert _answer(client)[0].status_code == 201
    rows = AnswerStore(meta.database, meta.study_id, meta.case_ids, meta.order_seed).answers()
    assert len(rows) == 1 and rows[0]["server_seconds"] is not None


def test_an_answer_from_a_page_of_another_reader_is_refused(study):
    client = _client(study, "Dr One")
    case_id = client.get("/api/progress").json["case"]["id"]
    client.post("/api/session", json={"name": "Dr Two"})  # another tab of this browser logged in Dr Two
    response = client.post("/api/answer", json={"case_id": case_id, "label": "real", "confidence": 3, "reader": "Dr One"})
    assert response.status_code == 409
    assert response.json["error"] == (
        "this page is reading as 'Dr One', but this browser is now logged in as 'Dr Two' (in another tab or window); "
        "the answer was not saved"
    )
    case_id = client.get("/api/progress").json["case"]["id"]
    response = client.post("/api/answer", json={"case_id": case_id, "label": "real", "confidence": 3, "reader": "Dr Two"})
    assert response.status_code == 201 and response.json["reader"] == "Dr Two"


def test_resume_with_the_same_name_and_order_per_reader(study):
    first = _client(study, "Ada Lovelace")
    order = []
    for _ in range(3):
        response, case_id = _answer(first)
        order.append(case_id)
    assert first.post("/api/logout").status_code == 200
    assert first.get("/api/progress").status_code == 401
    again = _client(study, "ada   LOVELACE")  # another browser, later: same reader (case and spaces do not matter)
    progress = again.get("/api/progress").json
    assert progress["answered"] == 3 and progress["case"]["position"] == 4
    meta = load_study(study)
    expected = reader_order(meta.case_ids, meta.order_seed, "ada lovelace")
    assert order == expected[:3] and progress["case"]["id"] == expected[3]
    other = reader_order(meta.case_ids, meta.order_seed, "grace hopper")
    assert sorted(other) == sorted(expected) and other != expected  # shuffled per reader
    assert _client(study, "Grace Hopper").get("/api/progress").json["case"]["id"] == other[0]


def test_two_readers_at_once_over_http(study):
    answered: dict[str, list[int]] = {}
    with live_server(create_app(study, trusted_hosts=LOCAL_HOSTS)) as base:
        raw = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        raw.sendall(b"GET /static/../../key/key.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply = b"".join(iter(lambda: raw.recv(65536), b""))
        raw.close()
        assert reply.split(b" ")[1] in (b"400", b"404") and b"study_id" not in reply  # un-normalised path on the wire

        def read(name: str, label: str) -> None:
            client = Client(base)
            assert client.request("POST", "/api/session", {"name": name})[0] == 200
            codes = []
            for _ in range(8):
                status, _, case_id = client.answer_next(label, 4)
                codes.append(status)
                # a double click: the same answer again at once is refused, not stored twice
                codes.append(client.request("POST", "/api/answer", {"case_id": case_id, "label": label, "confidence": 4})[0])
            answered[name] = codes

        threads = [threading.Thread(target=read, args=(name, label)) for name, label in (("Reader A", "real"), ("Reader B", "synthetic"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert answered == {"Reader A": [201, 409] * 8, "Reader B": [201, 409] * 8}
    with sqlite3.connect(study / "answers.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = db.execute("SELECT r.name, a.position, a.label FROM answers a JOIN readers r USING (reader_id) ORDER BY 1, 2").fetchall()
    assert rows == [("Reader A", i, "real") for i in range(8)] + [("Reader B", i, "synthetic") for i in range(8)]


def _answer_all(folder, names: list[str]) -> None:
    meta = load_study(folder)
    store = AnswerStore(meta.database, meta.study_id, meta.case_ids, meta.order_seed)
    for name in names:
        token, reader = store.start_session(name)
        for case_id in reader.case_order:
            store.record_answer(token, case_id, "unsure", None, 0.1)


def test_two_processes_writing_at_once(study):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_answer_all, args=(study, [f"P{i} a", f"P{i} b"])) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    with sqlite3.connect(study / "answers.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT reader_id) FROM answers").fetchone() == (32, 4)


def test_killing_the_server_mid_answer_loses_at_most_that_answer(sources, tmp_path):
    from tests.reader_study.conftest import new_study

    study = new_study(sources, tmp_path / "study", n=14, synthetic_fraction=0.4)
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    server = context.Process(target=serve_in_child, args=(study, child), daemon=True)
    server.start()
    assert parent.poll(30), "the server did not start"
    base = f"http://127.0.0.1:{parent.recv()}"
    acknowledged: dict[str, list[str]] = {}
    count, lock, killed = [0], threading.Lock(), threading.Event()

    def read(name: str) -> None:
        client = Client(base)
        acknowledged[name] = []
        try:
            if client.request("POST", "/api/session", {"name": name})[0] != 200:
                return
        except OSError:  # the server was killed before this reader started
            return
        while not killed.is_set():
            try:
                status, _, case_id = client.answer_next("synthetic", 2)
            except OSError:  # connection refused or reset: the server is gone
                return
            if status != 201:
                return
            acknowledged[name].append(case_id)
            with lock:
                count[0] += 1
                if count[0] == 12:  # the others are mid-request now
                    os.kill(server.pid, signal.SIGKILL)
                    killed.set()

    names = [f"Reader {i}" for i in range(4)]
    threads = [threading.Thread(target=read, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    server.join(10)
    assert killed.is_set() and server.exitcode == -signal.SIGKILL
    with sqlite3.connect(study / "answers.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = db.execute("SELECT r.name, a.case_id FROM answers a JOIN readers r USING (reader_id) ORDER BY a.position").fetchall()
    total = 0
    for name in names:
        mine = [case_id for reader, case_id in stored if reader == name]
        assert mine[: len(acknowledged[name])] == acknowledged[name]  # every acknowledged answer survived
        assert len(mine) - len(acknowledged[name]) <= 1  # at most the one in flight was saved unacknowledged
        total += len(mine)
    assert total < 4 * 14  # killed before the end
    # the next server continues where each reader was
    for name in names:
        again = _client(study, name)
        progress = again.get("/api/progress").json
        assert progress["answered"] == sum(1 for reader, _ in stored if reader == name)
        assert _answer(again)[0].status_code == 201
