"""`vidattn export`: merge one or many results databases into one Parquet, CSV or JSONL file.

Databases are read in ``path`` order (the primary-key index) and merged with a streaming k-way
merge, so memory stays flat for millions of rows. A path found in several databases (e.g. the shard
count changed between runs) is written once: the row scored last wins. The output is written to a
temporary file in the same folder and renamed over the target, so readers never see half a file.

The temporary file (``.<out name>.<random>.tmp``) is `flock`-ed while it is written. An export that
was killed leaves it behind unlocked; the next export to the same output removes such files, and only
those: a name of that exact form whose lock is free (a running export holds its own).
"""

from __future__ import annotations

import csv
import fcntl
import glob
import heapq
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidattn._io import atomic_path, writing_to
from vidattn.errors import VidattnError
from vidattn.scoring.store import COLUMNS, connect_readonly

__all__ = [
    "FORMATS",
    "ExportSummary",
    "resolve_databases",
    "iter_merged_rows",
    "export_results",
    "remove_stale_temporaries",
]

FORMATS = ("parquet", "csv", "jsonl")
_CHUNK = 10_000


@dataclass
class ExportSummary:
    out: Path
    format: str
    rows: int
    ok: int
    errors: int
    databases: list[Path]
    duplicates: int
    stale_removed: int = 0  # temporary files of killed exports removed


def resolve_databases(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand database arguments: files, glob patterns, and a base name whose shard files exist.

    ``results.sqlite`` that does not exist but has ``results.shard-*-of-*.sqlite`` siblings stands for them.
    """
    found: list[Path] = []
    for spec in specs:
        text = os.fspath(spec)
        if os.path.isfile(text):
            found.append(Path(text))
            continue
        if os.path.isdir(text):
            raise VidattnError(f"{text}: is a directory, not a results database")
        if set("*?[") & set(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise VidattnError(f"{text}: pattern matched no databases")
            found.extend(Path(m) for m in matches)
            continue
        base = Path(text)
        shards = sorted(base.parent.glob(f"{glob.escape(base.stem)}.shard-*-of-*{glob.escape(base.suffix)}"))
        if not shards:
            pattern = f"{base.stem}.shard-*-of-*{base.suffix}"
            raise VidattnError(f"{text}: no such results database (nor shard files {pattern})")
        found.extend(shards)
    unique: dict[str, Path] = {}
    for p in found:
        if p.name.endswith((".lock", "-wal", "-shm")):
            continue
        unique.setdefault(os.path.realpath(p), p)
    if not unique:
        raise VidattnError("no results databases given")
    return list(unique.values())


def _iter_db(path: Path) -> Iterator[dict[str, Any]]:
    conn = connect_readonly(path)
    try:
        have = {row[1] for row in conn.execute("PRAGMA table_info(videos)")}
        select = ", ".join(name if name in have else f"NULL AS {name}" for name in COLUMNS)
        cur = conn.execute(f"SELECT {select} FROM videos ORDER BY path")
        while rows := cur.fetchmany(_CHUNK):
            for row in rows:
                yield dict(zip(COLUMNS, tuple(row), strict=True))
    finally:
        conn.close()


def iter_merged_rows(databases: Sequence[Path], counter: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of all databases in path order, one per path (the latest ``scored_at`` wins)."""
    streams = [_iter_db(Path(p)) for p in databases]
    merged = heapq.merge(*streams, key=lambda r: r["path"]) if len(streams) > 1 else streams[0]
    pending: dict[str, Any] | None = None
    for row in merged:
        if pending is not None and row["path"] == pending["path"]:
            if counter is not None:
                counter["duplicates"] = counter.get("duplicates", 0) + 1
            if (row["scored_at"] or "") >= (pending["scored_at"] or ""):
                pending = row
            continue
        if pending is not None:
            yield pending
        pending = row
    if pending is not None:
        yield pending


def _arrow_schema() -> Any:
    import pyarrow as pa

    kinds = {"TEXT": pa.string(), "INTEGER": pa.int64(), "REAL": pa.float64()}
    return pa.schema([(name, kinds[decl.split()[0]]) for name, decl in COLUMNS.items()])


def _format_of(out: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise VidattnError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
        return fmt
    suffix = out.suffix.lower().lstrip(".")
    suffix = {"pq": "parquet", "ndjson": "jsonl"}.get(suffix, suffix)
    if suffix not in FORMATS:
        raise VidattnError(f"{out}: cannot tell the format from the extension; use .parquet, .csv or .jsonl")
    return suffix


def export_results(
    databases: Sequence[str | os.PathLike], out: str | os.PathLike, *, fmt: str | None = None
) -> ExportSummary:
    """Merge results databases into `out` (Parquet, CSV or JSONL by extension or `fmt`), atomically.

    Raises:
        VidattnError: no database, unknown format, or pyarrow missing for Parquet.
        OutputError: `out` cannot be written (read-only folder, full disk); nothing is left behind.
    """
    out = Path(out)
    fmt = _format_of(out, fmt)
    dbs = resolve_databases(databases)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            msg = "Parquet export needs pyarrow: pip install pyarrow (or export to .csv / .jsonl)"
            raise VidattnError(msg) from None
    if any(os.path.realpath(out) == os.path.realpath(d) for d in dbs):
        raise VidattnError(f"{out}: the output would overwrite an input database")
    counter: dict[str, int] = {}
    stats = {"rows": 0, "ok": 0}

    def rows() -> Iterator[dict[str, Any]]:
        for row in iter_merged_rows(dbs, counter):
            stats["rows"] += 1
            stats["ok"] += row["status"] == "ok"
            yield row

    with writing_to(out):  # a read-only folder or a full disk: one line, and the temporary file is gone
        stale = remove_stale_temporaries(out)
        lock_fd = None
        try:
            with atomic_path(out) as tmp:
                lock_fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                fcntl.flock(lock_fd, fcntl.LOCK_EX)  # held past the rename: a later export sees it is in use
                {"parquet": _write_parquet, "csv": _write_csv, "jsonl": _write_jsonl}[fmt](rows(), tmp)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
    return ExportSummary(
        out, fmt, stats["rows"], stats["ok"], stats["rows"] - stats["ok"], dbs, counter.get("duplicates", 0), stale
    )


def remove_stale_temporaries(out: str | os.PathLike) -> int:
    """Remove what killed exports to `out` left: ``.<name>.<8 random>.tmp`` (`vidattn._io` names) nobody holds locked.

    Returns:
        How many files were removed.
    """
    out = Path(out)
    pattern = re.compile(rf"\.{re.escape(out.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    removed = 0
    try:
        names = [name for name in os.listdir(out.parent) if pattern.fullmatch(name)]
    except OSError:
        return 0
    for name in names:
        path = out.parent / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue  # a link, gone, or not ours to open
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a running export is writing it
            path.unlink(missing_ok=True)
            removed += 1
        finally:
            os.close(fd)
    return removed


def _write_parquet(rows: Iterator[dict[str, Any]], tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= _CHUNK:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                chunk = []
        writer.write_table(pa.Table.from_pylist(chunk, schema=schema))  # also writes the schema when empty


def _write_csv(rows: Iterator[dict[str, Any]], tmp: Path) -> None:
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


def _write_jsonl(rows: Iterator[dict[str, Any]], tmp: Path) -> None:
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
