"""`vidattn export`: merge one or many results databases into one Parquet, CSV or JSONL file.

Databases are read in ``path`` order (the primary-key index) and merged with a streaming k-way
merge, so memory stays flat for millions of rows. A path found in several databases (e.g. the shard
count changed between runs) is written once: the row scored last wins. The output is written to a
temporary file in the same folder and renamed over the target, so readers never see half a file.
"""

from __future__ import annotations

import csv
import glob
import heapq
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidattn._io import atomic_path
from vidattn.errors import VidattnError
from vidattn.scoring.store import COLUMNS, connect_readonly

__all__ = ["FORMATS", "ExportSummary", "resolve_databases", "iter_merged_rows", "export_results"]

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
    out.parent.mkdir(parents=True, exist_ok=True)
    counter: dict[str, int] = {}
    stats = {"rows": 0, "ok": 0}

    def rows() -> Iterator[dict[str, Any]]:
        for row in iter_merged_rows(dbs, counter):
            stats["rows"] += 1
            stats["ok"] += row["status"] == "ok"
            yield row

    with atomic_path(out) as tmp:
        {"parquet": _write_parquet, "csv": _write_csv, "jsonl": _write_jsonl}[fmt](rows(), tmp)
    return ExportSummary(
        out, fmt, stats["rows"], stats["ok"], stats["rows"] - stats["ok"], dbs, counter.get("duplicates", 0)
    )


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
