"""The event store: one SQLite database (WAL) and the evidence files beside it, under ``storage.path``.

Layout::

    {storage.path}/actions.db             one row per action
    {storage.path}/snapshots/{camera}/{action_id}.jpg
    {storage.path}/clips/{camera}/{action_id}.mp4

One thread writes (every insert, update and deletion goes through :meth:`Store.write`, in order); readers use
their own connections in other threads, which WAL lets run beside the writer. Nothing here runs on the event loop.

A file is written under a temporary name (``NAME.part``) and renamed when complete, and a row names a file only
after the rename: a reader never sees half a file. At :meth:`Store.open` leftover ``.part`` files (a crash while
writing) are deleted, rows whose files are gone lose them, and actions that were open (no ``end_time``: the agent
stopped without ending them) are closed at the time of the store's last write and flagged ``interrupted``.

Retention (:meth:`Store.retain`): actions that started more than ``keep_days`` ago are deleted with their files;
then, while the evidence files add up to more than ``max_gb``, the oldest actions' files are deleted (their rows
stay, without evidence). Actions still open or still being recorded are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.config import StorageConfig
from agent.metrics import Metrics

log = logging.getLogger("actionstream.evidence")
T = TypeVar("T")
DB_NAME = "actions.db"
PART = ".part"
KINDS = ("snapshot", "clip")
SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    action_id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    label TEXT NOT NULL,
    person INTEGER,
    model TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    top_score REAL NOT NULL,
    snapshot TEXT,
    snapshot_bytes INTEGER NOT NULL DEFAULT 0,
    clip TEXT,
    clip_bytes INTEGER NOT NULL DEFAULT 0,
    interrupted INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_by_start ON actions (start_time);
CREATE INDEX IF NOT EXISTS actions_by_camera ON actions (camera, label, start_time);
"""
COLUMNS = (
    "action_id, camera, label, person, model, start_time, end_time, top_score, snapshot, snapshot_bytes, clip, "
    "clip_bytes, interrupted"
)


@dataclass(frozen=True)
class Action:
    """One row of the store. ``snapshot`` and ``clip`` are paths relative to the store's folder, or None."""

    action_id: str
    camera: str
    label: str
    person: int | None
    model: str
    start_time: float
    end_time: float | None
    top_score: float
    snapshot: str | None
    snapshot_bytes: int
    clip: str | None
    clip_bytes: int
    interrupted: bool


@dataclass(frozen=True)
class Recovered:
    """What :meth:`Store.open` found: partial files deleted, actions closed, files missing from their rows."""

    partial_files: int
    closed: int
    missing: int


def evidence_path(kind: str, camera: str, action_id: str) -> str:
    """Where an action's snapshot or clip lives, relative to the store's folder."""
    return f"snapshots/{camera}/{action_id}.jpg" if kind == "snapshot" else f"clips/{camera}/{action_id}.mp4"


def write_file(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` as a whole: under a temporary name, renamed once it is on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + PART)
    with open(part, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


class Store:
    """See the module docstring. :meth:`open` first; :meth:`close` at the end."""

    def __init__(self, config: StorageConfig, metrics: Metrics) -> None:
        self.config, self.metrics = config, metrics
        self.root = Path(config.path)
        self.db = self.root / DB_NAME
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")
        self._local = threading.local()  # each reader thread's connection
        self._connection: sqlite3.Connection | None = None  # the writer's

    # -- life cycle ------------------------------------------------------------------------------------------------

    def open(self) -> Recovered:
        """Creates or opens the store and recovers from a crash (see the module docstring); blocks until done."""
        return self._writer.submit(self._open).result()

    def close(self) -> None:
        self._writer.submit(self._close).result()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)

    def write(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Runs ``fn(connection, *args)`` in the writer thread, after every write submitted before it."""
        return self._writer.submit(self._in_writer, fn, *args)

    def read(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Runs ``fn(connection, *args)`` in a reader thread, on that thread's own connection."""
        return self._readers.submit(self._in_reader, fn, *args)

    def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._connection is not None, "the store is not open"
        with self._connection:  # one transaction
            return fn(self._connection, *args)

    def _in_reader(self, fn: Callable[..., T], *args: Any) -> T:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
            connection.execute("PRAGMA query_only = 1")
        return fn(connection, *args)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db, timeout=30.0)  # transactions: the `with connection` blocks

    def _open(self) -> Recovered:
        for kind in ("snapshots", "clips"):
            (self.root / kind).mkdir(parents=True, exist_ok=True)
        partial = 0
        for part in self.root.rglob(f"*{PART}"):
            with contextlib.suppress(OSError):
                part.unlink()
                partial += 1
        self._connection = connection = self._connect()
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        with connection:
            connection.executescript(SCHEMA)
        with connection:
            last = connection.execute("SELECT MAX(updated) FROM actions").fetchone()[0]
            closed = connection.execute(
                "UPDATE actions SET end_time = MAX(start_time, ?), interrupted = 1, updated = ? WHERE end_time IS NULL",
                (last or 0.0, time.time()),
            ).rowcount
            missing = 0
            for kind in KINDS:
                rows = connection.execute(f"SELECT action_id, {kind} FROM actions WHERE {kind} IS NOT NULL").fetchall()
                for action_id, path in rows:
                    if not (self.root / path).is_file():
                        connection.execute(
                            f"UPDATE actions SET {kind} = NULL, {kind}_bytes = 0 WHERE action_id = ?", (action_id,)
                        )
                        missing += 1
        self.metrics.evidence_bytes.set(_total_bytes(connection))
        found = Recovered(partial, closed, missing)
        if partial or closed or missing:
            log.warning(
                "event store %s: recovered after an unclean stop: %d partial file(s) deleted, %d open action(s) "
                "closed and flagged interrupted, %d missing file(s) forgotten",
                self.db,
                partial,
                closed,
                missing,
            )
        return found

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- writes (the writer thread) --------------------------------------------------------------------------------

    def insert(self, action: Action, now: float | None = None) -> Future[None]:
        return self.write(_insert, action, time.time() if now is None else now)

    def update(self, action_id: str, **fields: Any) -> Future[None]:
        """Sets columns of one action (``end_time``, ``top_score``)."""
        return self.write(_update, action_id, fields, time.time())

    def attach(self, action_id: str, kind: str, path: str, size: int) -> Future[int]:
        """The action's ``snapshot`` or ``clip`` is now the file at ``path`` (relative), ``size`` bytes; returns the
        evidence bytes in the store."""
        assert kind in KINDS
        return self.write(_attach, action_id, kind, path, size, time.time())

    def retain(self, busy: frozenset[str] = frozenset(), now: float | None = None) -> Future[int]:
        """Applies ``keep_days`` and ``max_gb`` (see the module docstring); ``busy``: actions whose evidence is still
        being written. Returns the evidence bytes left."""
        return self.write(self._retain, busy, time.time() if now is None else now)

    def _retain(self, connection: sqlite3.Connection, busy: frozenset[str], now: float) -> int:
        cutoff = now - self.config.keep_days * 86400
        old = connection.execute(
            "SELECT action_id, snapshot, clip FROM actions WHERE start_time < ? AND end_time IS NOT NULL", (cutoff,)
        ).fetchall()
        for action_id, snapshot, clip in old:
            if action_id in busy:
                continue
            self._delete_files(snapshot, clip, "keep_days")
            connection.execute("DELETE FROM actions WHERE action_id = ?", (action_id,))
        total = _total_bytes(connection)
        limit = self.config.max_gb * 1e9
        if total > limit:
            rows = connection.execute(
                "SELECT action_id, snapshot, clip, snapshot_bytes + clip_bytes FROM actions "
                "WHERE end_time IS NOT NULL AND (snapshot IS NOT NULL OR clip IS NOT NULL) ORDER BY start_time"
            )
            for action_id, snapshot, clip, size in rows.fetchall():
                if total <= limit:
                    break
                if action_id in busy:
                    continue
                self._delete_files(snapshot, clip, "max_gb")
                connection.execute(
                    "UPDATE actions SET snapshot = NULL, snapshot_bytes = 0, clip = NULL, clip_bytes = 0 "
                    "WHERE action_id = ?",
                    (action_id,),
                )
                total -= size
        self.metrics.evidence_bytes.set(total)
        return total

    def _delete_files(self, snapshot: str | None, clip: str | None, reason: str) -> None:
        for kind, path in (("snapshot", snapshot), ("clip", clip)):
            if path is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.root / path).unlink()
            self.metrics.evidence_dropped.labels(kind=kind, reason=reason).inc()

    # -- reads (reader threads) ------------------------------------------------------------------------------------

    def actions(
        self,
        *,
        camera: str | None = None,
        label: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> Future[list[Action]]:
        """Actions newest first (by start), filtered; ``since`` / ``until`` bound the start time."""
        return self.read(_select, camera, label, since, until, limit)

    def action(self, action_id: str) -> Future[Action | None]:
        return self.read(_one, action_id)

    def path_of(self, relative: str) -> Path:
        return self.root / relative


def _insert(connection: sqlite3.Connection, a: Action, now: float) -> None:
    connection.execute(
        f"INSERT OR IGNORE INTO actions ({COLUMNS}, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (a.action_id, a.camera, a.label, a.person, a.model, a.start_time, a.end_time, a.top_score, a.snapshot,
         a.snapshot_bytes, a.clip, a.clip_bytes, int(a.interrupted), now),
    )  # fmt: skip


def _update(connection: sqlite3.Connection, action_id: str, fields: dict[str, Any], now: float) -> None:
    allowed = {"end_time", "top_score", "interrupted"}
    assert set(fields) <= allowed, fields
    assignments = ", ".join(f"{key} = ?" for key in fields)
    connection.execute(
        f"UPDATE actions SET {assignments}, updated = ? WHERE action_id = ?", (*fields.values(), now, action_id)
    )


def _attach(connection: sqlite3.Connection, action_id: str, kind: str, path: str, size: int, now: float) -> int:
    connection.execute(
        f"UPDATE actions SET {kind} = ?, {kind}_bytes = ?, updated = ? WHERE action_id = ?",
        (path, size, now, action_id),
    )
    return _total_bytes(connection)


def _total_bytes(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT COALESCE(SUM(snapshot_bytes + clip_bytes), 0) FROM actions").fetchone()[0])


def _row(values: tuple) -> Action:
    fields = dict(zip(COLUMNS.split(", "), values, strict=True))
    fields["interrupted"] = bool(fields["interrupted"])
    return Action(**fields)


def _select(
    connection: sqlite3.Connection,
    camera: str | None,
    label: str | None,
    since: float | None,
    until: float | None,
    limit: int,
) -> list[Action]:
    where, args = _filters(camera=camera, label=label, since=since, until=until)
    query = f"SELECT {COLUMNS} FROM actions {where} ORDER BY start_time DESC, action_id DESC LIMIT ?"
    return [_row(r) for r in connection.execute(query, (*args, limit))]


def _filters(**given: Any) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for key, value in given.items():
        if value is None:
            continue
        clauses.append({"since": "start_time >= ?", "until": "start_time <= ?"}.get(key, f"{key} = ?"))
        args.append(value)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), args


def _one(connection: sqlite3.Connection, action_id: str) -> Action | None:
    found = connection.execute(f"SELECT {COLUMNS} FROM actions WHERE action_id = ?", (action_id,)).fetchone()
    return None if found is None else _row(found)


def iter_files(root: Path) -> Iterator[Path]:
    """Every evidence file under a store's folder (tests and tools)."""
    for kind in ("snapshots", "clips"):
        yield from sorted((root / kind).rglob("*.*"))
