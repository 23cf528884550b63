"""The answers database: SQLite (standard library ``sqlite3``) in the study folder.

Schema (``answers.sqlite``)::

    study(id = 1, study_id, created_at, closed_at)       one row; closed_at set by close()
    readers(reader_id, name, name_key UNIQUE, order_seed, case_order, created_at)
    sessions(token_sha256 PRIMARY KEY, reader_id, created_at)
    served(reader_id, case_id, session_sha256, served_at, PRIMARY KEY (reader_id, case_id))
    answers(reader_id, case_id, position, label, confidence, seconds, answered_at, server_seconds,
            PRIMARY KEY (reader_id, case_id), UNIQUE (reader_id, position))

``label`` is ``real``, ``synthetic`` or ``unsure`` (CHECK constraint); ``confidence`` 1-5 (NULL
for unsure); ``case_order`` is the reader's shuffled case ids as a JSON list. ``seconds`` is the
time on the case as the reader's browser measured it (sent with the answer, not trusted);
``server_seconds`` the time the server measured: from when it first showed the case to the reader
in the session that answers it (``served``: a reload keeps the time, stopping and continuing
later starts it again) to when the answer arrived. The database is in
WAL mode with ``synchronous=FULL``: every answer is one ``BEGIN IMMEDIATE`` transaction, committed
to disk before the server acknowledges it. Several threads or processes may write at once (SQLite
serialises the writers; ``busy_timeout`` makes them wait instead of failing), and a process killed
mid-answer loses at most that answer: SQLite's commit is atomic, so the file is never corrupted.

A reader's name is the identity: entering the same name again continues where that reader
stopped, with the same case order. The browser holds a random session token (``secrets``, not a
seeded draw: it must not be guessable); only its sha256 is stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

LABELS = ("real", "synthetic", "unsure")
CONFIDENCE = (1, 5)
NAME = re.compile(r"[^\W_][\w .'\-]{0,63}", re.UNICODE)

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    study_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    closed_at TEXT
);
CREATE TABLE IF NOT EXISTS readers (
    reader_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    order_seed INTEGER NOT NULL,
    case_order TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    reader_id INTEGER NOT NULL REFERENCES readers (reader_id),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    reader_id INTEGER NOT NULL REFERENCES readers (reader_id),
    case_id TEXT NOT NULL,
    position INTEGER NOT NULL CHECK (position >= 0),
    label TEXT NOT NULL CHECK (label IN ('real', 'synthetic', 'unsure')),
    confidence INTEGER CHECK (confidence IS NULL OR confidence BETWEEN 1 AND 5),
    seconds REAL CHECK (seconds IS NULL OR seconds >= 0),
    answered_at TEXT NOT NULL,
    server_seconds REAL CHECK (server_seconds IS NULL OR server_seconds >= 0),
    PRIMARY KEY (reader_id, case_id),
    UNIQUE (reader_id, position),
    CHECK ((label = 'unsure') = (confidence IS NULL))
);
CREATE TABLE IF NOT EXISTS served (
    reader_id INTEGER NOT NULL REFERENCES readers (reader_id),
    case_id TEXT NOT NULL,
    session_sha256 TEXT NOT NULL,
    served_at TEXT NOT NULL,
    PRIMARY KEY (reader_id, case_id)
);
"""


class AnswerRefused(Exception):
    """An answer or request the study refuses; ``status`` is the HTTP status the server sends."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Reader:
    """A reader as the database holds them: ``reader_id``, the ``name`` as shown, the reader's
    ``case_order`` (every case id of the study, shuffled for this reader) and how many cases they
    have ``answered`` (always the first ones of ``case_order``)."""

    reader_id: int
    name: str
    case_order: tuple[str, ...]
    answered: int

    @property
    def next_position(self) -> int | None:
        """The 0-based position in ``case_order`` of the case to answer next, or None when all are answered."""
        return self.answered if self.answered < len(self.case_order) else None


def now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and offset (``2024-05-01T12:00:00.000+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def normalise_name(name: object) -> tuple[str, str]:
    """A reader name as (shown, key): spaces collapsed, NFC; ``key`` case-folded. ValueError unless
    it is 1-64 characters of letters, digits, spaces and ``. ' - _``, starting with a letter or
    digit (so no markup can reach a page or a report)."""
    if not isinstance(name, str):
        raise ValueError("name: expected a string")
    shown = " ".join(unicodedata.normalize("NFC", name).split())
    if not NAME.fullmatch(shown):
        raise ValueError(
            f"name {shown[:80]!r}: allowed: 1-64 letters, digits, spaces and . ' - _ (starting with a letter or digit); no markup"
        )
    return shown, shown.casefold()


def reader_order(case_ids: list[str], order_seed: int, name_key: str) -> list[str]:
    """The reader's case order: ``case_ids`` (sorted) permuted by a generator seeded with the
    study's order seed and the reader's name key, so it is reproducible and differs per reader."""
    digest = hashlib.sha256(f"{order_seed}:{name_key}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    ordered = sorted(case_ids)
    return [ordered[i] for i in rng.permutation(len(ordered))]


class AnswerStore:
    """The answers database of one study (see the module docstring).

    ``path``: the SQLite file (created with its schema if absent); ``study_id`` must match the one
    it was created for (ValueError otherwise, so a database is never mixed between studies);
    ``case_ids``: the study's cases. Each call opens its own connection, so one store may be used
    from many threads.
    """

    def __init__(self, path: str | Path, study_id: str, case_ids: list[str], order_seed: int, *, timeout_s: float = 30.0):
        self.path, self.study_id, self.order_seed, self.timeout_s = Path(path), study_id, order_seed, timeout_s
        self.case_ids = sorted(case_ids)
        self._known = frozenset(self.case_ids)
        db = self.connect()
        try:
            db.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nCOMMIT;")  # idempotent: CREATE ... IF NOT EXISTS
            if "server_seconds" not in {row[1] for row in db.execute("PRAGMA table_info(answers)")}:  # made before it was measured
                db.execute("ALTER TABLE answers ADD COLUMN server_seconds REAL CHECK (server_seconds IS NULL OR server_seconds >= 0)")
        finally:
            db.close()
        with self._transaction() as db:
            row = db.execute("SELECT study_id FROM study WHERE id = 1").fetchone()
            if row is None:
                db.execute("INSERT INTO study (id, study_id, created_at) VALUES (1, ?, ?)", (study_id, now()))
            elif row[0] != study_id:
                raise ValueError(f"{self.path}: answers of study {row[0]!r}, not of this study {study_id!r}; move it away or use its study")

    # ------------------------------------------------------------------ connections

    def connect(self) -> sqlite3.Connection:
        """A new autocommit connection (``isolation_level=None``) to the database with the module's settings:
        WAL journal, ``synchronous=FULL``, foreign keys on, ``busy_timeout`` of ``timeout_s``. The caller closes it."""
        db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error)."""
        db = self.connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # ------------------------------------------------------------------ readers

    def start_session(self, name: object) -> tuple[str, Reader]:
        """Start (or continue) reading as ``name``: returns a new session token and the reader.
        ValueError for a name that is not allowed (see :func:`normalise_name`)."""
        shown, key = normalise_name(name)
        token = secrets.token_urlsafe(32)
        with self._transaction() as db:
            row = db.execute("SELECT reader_id FROM readers WHERE name_key = ?", (key,)).fetchone()
            if row is None:
                order = reader_order(self.case_ids, self.order_seed, key)
                cursor = db.execute(
                    "INSERT INTO readers (name, name_key, order_seed, case_order, created_at) VALUES (?, ?, ?, ?, ?)",
                    (shown, key, self.order_seed, json.dumps(order), now()),
                )
                reader_id = cursor.lastrowid
            else:
                reader_id = row[0]
            db.execute("INSERT INTO sessions (token_sha256, reader_id, created_at) VALUES (?, ?, ?)", (_digest(token), reader_id, now()))
            reader = self._reader(db, reader_id)
        return token, reader

    def reader_for(self, token: object) -> Reader:
        """The reader of a session token; AnswerRefused (401) for none or an unknown one."""
        if not (isinstance(token, str) and 0 < len(token) <= 100):
            raise AnswerRefused("no reader session: enter your name first", 401)
        db = self.connect()
        try:
            row = db.execute("SELECT reader_id FROM sessions WHERE token_sha256 = ?", (_digest(token),)).fetchone()
            if row is None:
                raise AnswerRefused("unknown or expired reader session: enter your name again", 401)
            return self._reader(db, row[0])
        finally:
            db.close()

    def end_session(self, token: object) -> None:
        """Forget a session token (log out); an unknown, empty or non-string token is ignored."""
        if isinstance(token, str) and token:
            with self._transaction() as db:
                db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_digest(token),))

    def mark_served(self, token: object, case_id: str) -> None:
        """Record that the session ``token`` is shown ``case_id`` now, unless this session was shown
        it before (a reload keeps the first time; a new session, after stopping, starts it again).
        The time to the answer is then ``server_seconds`` (see :meth:`record_answer`). AnswerRefused
        (401) without a valid session, 404 for an unknown case."""
        if case_id not in self._known:
            raise AnswerRefused(f"unknown case id {str(case_id)[:40]!r}", 404)
        reader = self.reader_for(token)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO served (reader_id, case_id, session_sha256, served_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (reader_id, case_id) DO UPDATE SET session_sha256 = excluded.session_sha256, served_at = excluded.served_at "
                "WHERE session_sha256 != excluded.session_sha256",
                (reader.reader_id, case_id, _digest(token), now()),
            )

    @staticmethod
    def _reader(db: sqlite3.Connection, reader_id: int) -> Reader:
        name, order = db.execute("SELECT name, case_order FROM readers WHERE reader_id = ?", (reader_id,)).fetchone()
        answered = db.execute("SELECT COUNT(*) FROM answers WHERE reader_id = ?", (reader_id,)).fetchone()[0]
        return Reader(reader_id, name, tuple(json.loads(order)), answered)

    # ------------------------------------------------------------------ answers

    def record_answer(self, token: object, case_id: object, label: object, confidence: object, seconds: object = None) -> Reader:
        """Store one answer in one transaction and return the reader after it.

        Refused (:class:`AnswerRefused`): 400 for a malformed value (label not one of
        :data:`LABELS`; confidence not an integer 1-5 for real / synthetic, or given for unsure;
        seconds not a number 0 <= seconds < 1e7), 401 without a valid session, 404 for an unknown case
        id, 403 once the study is closed, 409 for a case already answered or not the reader's next
        case. ``seconds`` (the browser's time, optional) is stored as given; ``server_seconds`` is
        measured from :meth:`mark_served` (None when the case was never marked served, or the
        system clock was set back in between).
        """
        if not isinstance(case_id, str) or case_id not in self._known:
            raise AnswerRefused(f"unknown case id {str(case_id)[:40]!r}", 404)
        if label not in LABELS:
            raise AnswerRefused(f"label {str(label)[:40]!r}; allowed: {', '.join(LABELS)}", 400)
        if label == "unsure":
            if confidence is not None:
                raise AnswerRefused("confidence: give none with 'unsure'", 400)
        elif not (isinstance(confidence, int) and not isinstance(confidence, bool) and CONFIDENCE[0] <= confidence <= CONFIDENCE[1]):
            raise AnswerRefused(f"confidence {str(confidence)[:20]!r}; allowed: an integer {CONFIDENCE[0]}-{CONFIDENCE[1]}", 400)
        if seconds is not None and not (
            isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds < 1e7 and seconds == seconds
        ):
            raise AnswerRefused(f"seconds {str(seconds)[:20]!r}; allowed: a number 0 <= seconds < 1e7", 400)
        reader = self.reader_for(token)
        with self._transaction() as db:
            if db.execute("SELECT closed_at FROM study WHERE id = 1").fetchone()[0] is not None:
                raise AnswerRefused("the study is closed: no more answers are taken", 403)
            reader = self._reader(db, reader.reader_id)  # again inside the transaction: another request may have answered
            if db.execute("SELECT 1 FROM answers WHERE reader_id = ? AND case_id = ?", (reader.reader_id, case_id)).fetchone():
                raise AnswerRefused(f"case {case_id} is already answered by this reader; answers are final", 409)
            position = reader.next_position
            if position is None or reader.case_order[position] != case_id:
                raise AnswerRefused(f"case {case_id} is not this reader's next case", 409)
            answered_at = datetime.now(timezone.utc)
            served = db.execute("SELECT served_at FROM served WHERE reader_id = ? AND case_id = ?", (reader.reader_id, case_id)).fetchone()
            server_seconds = None if served is None else (answered_at - datetime.fromisoformat(served[0])).total_seconds()
            if server_seconds is not None and server_seconds < 0:  # the clock was set back meanwhile: no measure, not a made-up 0
                server_seconds = None
            db.execute(
                "INSERT INTO answers (reader_id, case_id, position, label, confidence, seconds, answered_at, server_seconds) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    reader.reader_id,
                    case_id,
                    position,
                    label,
                    confidence,
                    None if seconds is None else float(seconds),
                    answered_at.isoformat(timespec="milliseconds"),
                    server_seconds,
                ),
            )
            return self._reader(db, reader.reader_id)

    # ------------------------------------------------------------------ study state

    def is_closed(self) -> bool:
        """Whether :meth:`close` has been called (the study takes no more answers)."""
        db = self.connect()
        try:
            return db.execute("SELECT closed_at FROM study WHERE id = 1").fetchone()[0] is not None
        finally:
            db.close()

    def close(self) -> str:
        """Close the study (no more answers); returns when it was closed (the first time)."""
        with self._transaction() as db:
            db.execute("UPDATE study SET closed_at = ? WHERE id = 1 AND closed_at IS NULL", (now(),))
            return db.execute("SELECT closed_at FROM study WHERE id = 1").fetchone()[0]

    def answers(self) -> list[dict]:
        """Every answer with its reader's name, in reader then position order."""
        db = self.connect()
        try:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT r.name AS reader, a.case_id, a.position, a.label, a.confidence, a.seconds, a.server_seconds, a.answered_at "
                "FROM answers a JOIN readers r USING (reader_id) ORDER BY r.reader_id, a.position"
            ).fetchall()
            return [dict(row) for row in rows]
        finally:
            db.close()

    def readers(self) -> list[Reader]:
        """Every reader, in the order they first started."""
        db = self.connect()
        try:
            return [self._reader(db, rid) for (rid,) in db.execute("SELECT reader_id FROM readers ORDER BY reader_id").fetchall()]
        finally:
            db.close()


def open_store(study, *, create: bool = True) -> AnswerStore:
    """The answer store of a :class:`~synthbrain.reader_study.study.Study`; with ``create=False``
    a missing database is a ValueError (nothing has been answered yet)."""
    if not create and not study.database.is_file():
        raise ValueError(f"study={str(study.folder)!r}: no {study.database.name} yet; no reader has answered (run reader-study serve)")
    return AnswerStore(study.database, study.study_id, study.case_ids, study.order_seed)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
