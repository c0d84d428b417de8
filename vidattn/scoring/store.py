"""The results store of `vidattn score`: one SQLite file per shard, one row per video.

Safety properties, and how they hold:

- **One row per path**: ``path`` is the primary key and rows are written with an upsert, so a
  rerun replaces a row instead of adding one.
- **A failed write loses only rows in flight**: a full disk or a read-only folder ends the run with one
  `OutputError` naming the database; the open transaction is rolled back, committed rows stay.
- **kill -9 loses only rows in flight**: WAL journal, rows committed in small transactions
  (`ResultStore.put` commits every `commit_every` rows or `commit_interval_s` seconds). A killed
  process leaves a WAL that the next open replays; ``synchronous=NORMAL`` is durable across a
  process crash (an OS crash may drop the last transactions, never corrupt the file).
- **One writer per database**: `ResultStore` holds an exclusive lock (`fcntl.lockf`) on ``<db>.lock`` (with
  the PID and host in it) for its lifetime, next to the database's real path (symlinks resolved, so the
  same file reached through a link is the same lock). A second `vidattn score` on the same file refuses with
  a message naming that PID. The kernel drops the lock when the holder dies, even by SIGKILL, so
  a stale lock file never blocks a rerun. Readers (`vidattn export`) need no lock (WAL).

SQLite files must stay on a local disk: its locking is unreliable on network filesystems, which
is why each shard of a multi-machine run writes its own file (`shard_db_path`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidattn.errors import OutputError, VidattnError

if TYPE_CHECKING:  # the store stays light: `vidattn export` reads it without the decoders
    from vidattn.scoring.inputs import InputItem

__all__ = ["COLUMNS", "SCHEMA_VERSION", "DatabaseLock", "ResultStore", "shard_db_path", "connect_readonly"]

SCHEMA_VERSION = 1

#: Column name -> SQLite type, in table (and export) order.
COLUMNS: dict[str, str] = {
    "path": "TEXT PRIMARY KEY",  # absolute path; a tar member is /abs/shard.tar::member/name.mp4
    "status": "TEXT NOT NULL CHECK (status IN ('ok', 'error'))",
    "error": "TEXT",  # why the row is an error (None when ok)
    "size": "INTEGER",  # bytes of the file (or tar member) when scored
    "mtime": "REAL",  # its modification time, seconds since the epoch
    "container": "TEXT",
    "codec": "TEXT",
    "width": "INTEGER",  # displayed size (after rotation)
    "height": "INTEGER",
    "num_frames": "INTEGER",
    "fps": "REAL",
    "duration_s": "REAL",
    "rotation": "INTEGER",
    "backend": "TEXT",  # decoder that read it: decord | pyav
    "top1_label": "TEXT",
    "top1_prob": "REAL",
    "topk_json": "TEXT",  # [{"label", "prob"}, ...], best first
    "keyframes_json": "TEXT",  # [{"rank", "frame_index", "time_s", "score"}, ...]
    "keyframes_k": "INTEGER",  # K asked for (None: key frames not requested)
    "model": "TEXT",  # "<model name>@<checkpoint file>:<sha256 prefix>", None without a checkpoint
    "scored_at": "TEXT",  # UTC ISO-8601 time the row was written
    "elapsed_s": "REAL",  # decode (+ key frame) seconds spent on this video in its worker
}


def shard_db_path(out: str | os.PathLike, shard: int, num_shards: int) -> Path:
    """Database file of one shard: ``results.sqlite`` -> ``results.shard-0-of-2.sqlite`` (unchanged if n=1)."""
    out = Path(out)
    if num_shards <= 1:
        return out
    return out.with_name(f"{out.stem}.shard-{shard}-of-{num_shards}{out.suffix}")


def connect_readonly(path: str | os.PathLike) -> sqlite3.Connection:
    """Open a results database for reading (works while a scorer is writing it)."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30)
        conn.execute("SELECT 1 FROM videos LIMIT 1")
    except sqlite3.Error as exc:
        raise VidattnError(f"{path}: not a vidattn results database ({exc})") from None
    conn.row_factory = sqlite3.Row
    return conn


def _same_mtime(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) < 1e-6  # REAL round trip through SQLite


_HELD: set[str] = set()  # lock files this process holds (POSIX locks do not conflict within a process)


class DatabaseLock:
    """An exclusive, non-blocking lock on ``<db>.lock``, released by the kernel if the holder dies.

    A POSIX record lock (`fcntl.lockf`), not `flock`: forked DataLoader workers do not inherit it, so a
    killed scorer's orphaned workers cannot keep a rerun out.
    """

    def __init__(self, db_path: str | os.PathLike) -> None:
        self.db = os.fspath(db_path)  # as the user named it, for messages
        # Keyed on the real path: the same database through a symlink (to it or to a folder above) is one lock.
        self.path = Path(f"{os.path.realpath(db_path)}.lock")
        self._fd: int | None = None

    def _refuse(self, holder: str) -> VidattnError:
        return VidattnError(
            f"{self.db} is being written by another vidattn score ({holder}); wait for it to finish, "
            "or give this run another --out (or another --shard)"
        )

    def acquire(self) -> None:
        """Take the lock or raise: `VidattnError` when another writer holds it, `OutputError` when it cannot be made."""
        import fcntl

        key = os.fspath(self.path)
        if key in _HELD:
            raise self._refuse(f"pid {os.getpid()} on {socket.gethostname()}, this process")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(self.db, exc.strerror or str(exc)) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise self._refuse(holder) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError as exc:  # a full disk: the lock is held, only the note of who holds it is missing
            os.close(fd)
            raise OutputError(self.db, exc.strerror or str(exc)) from None
        self._fd = fd
        _HELD.add(key)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays (unlinking would race a waiter)
            self._fd = None
            _HELD.discard(os.fspath(self.path))


class ResultStore:
    """Writer for a results database. Use as a context manager; it holds the database lock.

    Args:
        path: the SQLite file (created with its folder if missing).
        commit_every: rows per transaction at most.
        commit_interval_s: commit pending rows at least this often.
    """

    def __init__(self, path: str | os.PathLike, *, commit_every: int = 16, commit_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.commit_every, self.commit_interval_s = commit_every, commit_interval_s
        self._lock = DatabaseLock(self.path)
        self._conn: sqlite3.Connection | None = None
        self._pending = 0
        self._last_commit = time.monotonic()
        self._failed = False

    # -- lifecycle ----------------------------------------------------------------------------------
    def open(self) -> ResultStore:
        self._lock.acquire()
        try:
            # The real path: SQLite names its -wal and -shm files after the path it is given.
            self._conn = sqlite3.connect(os.path.realpath(self.path), timeout=30, isolation_level=None)
            with self._writing():
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._create()
        except sqlite3.DatabaseError as exc:  # not a database at all (an OperationalError is an OutputError)
            self.close()
            raise VidattnError(f"{self.path}: cannot open results database ({exc})") from None
        except BaseException:
            self.close()
            raise
        return self

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a failed write (full disk, read-only file, I/O error) into one `OutputError`, rolled back.

        Rows of earlier transactions are committed and stay; the store refuses further writes.
        """
        try:
            yield
        except (sqlite3.OperationalError, OSError) as exc:
            self._failed = True
            if self._conn is not None and self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise OutputError(self.path, (exc.strerror if isinstance(exc, OSError) else None) or str(exc)) from None

    def _create(self) -> None:
        conn = self._conn
        cols = ",\n  ".join(f"{name} {decl}" for name, decl in COLUMNS.items())
        conn.execute(f"CREATE TABLE IF NOT EXISTS videos (\n  {cols}\n) WITHOUT ROWID")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        have = {row[1] for row in conn.execute("PRAGMA table_info(videos)")}
        if "status" not in have:
            raise VidattnError(f"{self.path}: has a 'videos' table that is not a vidattn results table")
        for name, decl in COLUMNS.items():  # forward-compatible: add columns a newer version introduced
            if name not in have:
                conn.execute(f"ALTER TABLE videos ADD COLUMN {name} {decl.split()[0]}")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        if self._conn is not None:
            try:
                if not self._failed:
                    self.commit()
            finally:
                self._conn.close()
                self._conn = None
        self._lock.release()

    def __enter__(self) -> ResultStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------------------
    def done_map(self) -> dict[str, tuple[Any, ...]]:
        """path -> (status, size, mtime, model, keyframes_k) for every row, to decide what a rerun skips."""
        cur = self._conn.execute("SELECT path, status, size, mtime, model, keyframes_k FROM videos")
        return {row[0]: tuple(row[1:]) for row in cur}

    def todo(
        self, items: Iterable[InputItem], *, model: str | None, keyframes_k: int | None, retry_errors: bool = False
    ) -> list[InputItem]:
        """The items a run must score: those without a row that `is_done` accepts.

        Args:
            items: this run's inputs.
            model: the run's `checkpoint_tag` (None: catalogue only).
            keyframes_k: key frames asked for (None or 0: none).
            retry_errors: error rows are scored again.
        """
        done = self.done_map()
        return [it for it in items if not self.is_done(done.get(it.key), it, model, keyframes_k, retry_errors)]

    @staticmethod
    def is_done(
        row: tuple[Any, ...] | None, item: InputItem, model: str | None, keyframes_k: int | None, retry_errors: bool
    ) -> bool:
        """The resume rule: the file is unchanged (size, mtime) and its row has what this run asks for.

        An error row is done unless `retry_errors`; an ok row is done if it was scored by the same model
        with the same number of key frames. A run without a checkpoint never strips predictions.
        """
        if row is None:
            return False
        status, size, mtime, row_model, row_k = row
        if size != item.size or not _same_mtime(mtime, item.mtime):
            return False  # the file changed
        if status == "error":
            return not retry_errors
        return (model is None or row_model == model) and (not keyframes_k or row_k == keyframes_k)

    def set_meta(self, values: Mapping[str, Any]) -> None:
        with self._writing():
            self._begin()
            self._conn.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in values.items()],
            )
        self.commit()

    # -- writing --------------------------------------------------------------------------------------
    def _begin(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN")

    def put(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Upsert rows (dicts keyed by column name); commits when the batch or the interval is reached."""
        names = list(COLUMNS)
        sql = (
            f"INSERT INTO videos ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT(path) DO UPDATE SET {', '.join(f'{n}=excluded.{n}' for n in names[1:])}"
        )
        values = [tuple(row.get(n) for n in names) for row in rows]
        if not values:
            return 0
        with self._writing():
            self._begin()
            self._conn.executemany(sql, values)
        self._pending += len(values)
        if self._pending >= self.commit_every or time.monotonic() - self._last_commit >= self.commit_interval_s:
            self.commit()
        return len(values)

    def commit(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            with self._writing():
                self._conn.execute("COMMIT")
        self._pending = 0
        self._last_commit = time.monotonic()
