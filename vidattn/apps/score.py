"""`vidattn score` and `vidattn export`: batch scoring of video archives into SQLite, then one table.

This module wires the parts in `vidattn.scoring`: inputs are expanded and deduplicated (`inputs`),
this shard's share is kept, rows already done are skipped (`ResultStore.todo`: the file is unchanged
and its row has what this run asks for), workers decode (`pipeline`), the main process batches the
classifier (`model`) and writes rows (`runner`, `store`). Every input gets exactly one row, ``ok`` or
``error`` with the reason, and a run killed at any point reruns with the same command.

Shards: ``--shard i/n`` (or torchrun's RANK / WORLD_SIZE) scores the units whose key hashes to `i`
into ``<out stem>.shard-i-of-n<suffix>``; ranks never talk to each other; `vidattn export` merges.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vidattn.errors import VidattnError
from vidattn.scoring.export import ExportSummary, export_results

if TYPE_CHECKING:  # `vidattn export` must not import torch and the decoders: `run_score` imports them
    from vidattn.scoring.inputs import InputItem
    from vidattn.scoring.pipeline import DecodeSpec, KeyframeFn
    from vidattn.scoring.ray_engine import RayOptions
    from vidattn.scoring.runner import ScoreSummary

__all__ = ["run_score", "run_export"]


def run_score(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    workers: int = 2,
    keyframes: int | None = None,
    shard: tuple[int, int] | None = None,
    batch_size: int = 8,
    clips: int = 3,
    topk: int = 5,
    device: str = "auto",
    backend: str = "auto",
    timeout_s: float | None = 60.0,
    retry_errors: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    keyframe_fn: KeyframeFn | None = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> ScoreSummary:
    """Score `inputs` into the results database `out` (this shard's file); see the module docstring.

    Args:
        inputs: files, directories, globs, list files, tar shards (mixed).
        out: results database; with n > 1 shards each writes ``<stem>.shard-i-of-n<suffix>``.
        checkpoint: a `vidattn train` checkpoint; None catalogues (metadata, integrity, key frames).
        workers: decoding worker processes (0 decodes in this process).
        keyframes: key frames per video (None: none); with `checkpoint` its model scores them (on the CPU of the
            decoding workers), as `vidattn keyframes --checkpoint` does.
        shard: ``(i, n)``; None takes torchrun's RANK / WORLD_SIZE when set.
        batch_size: videos per model call.
        clips: uniform temporal views per video, their class probabilities averaged.
        topk: labels kept in ``topk_json``.
        device: auto | cpu | cuda.
        backend: decoder backend.
        timeout_s: per decode call; a stuck decoder becomes an error row.
        retry_errors: score rows that are errors again.
        progress: show a progress bar (videos/s, ETA, errors).
        log: where summary lines go.
        keyframe_fn: override the key-frame scorer (default: `resolve_keyframe_fn`).
        engine: ``local`` (DataLoader workers here) or ``ray`` (`vidattn.scoring.ray_engine`; this process
            stays the one writer).
        ray_address: the Ray cluster for ``engine="ray"``; None starts a local one (token authentication).

    Returns:
        The run's `ScoreSummary`; its ``missing`` lists inputs that do not exist (each has an error row).

    Raises:
        VidattnError: no videos in the inputs, another writer holds the database, or (`OutputError`) the
            database cannot be written; rows committed before stay.
    """
    from vidattn.data.decode import silence_ffmpeg_log
    from vidattn.engine.distributed import resolve_device
    from vidattn.scoring.inputs import expand_inputs, resolve_shard, shard_of
    from vidattn.scoring.model import load_classifier
    from vidattn.scoring.pipeline import DecodeSpec, resolve_keyframe_fn
    from vidattn.scoring.runner import ScoreRun, ScoreSummary, now_utc
    from vidattn.scoring.store import ResultStore, shard_db_path

    t_start = time.perf_counter()
    silence_ffmpeg_log()
    index, num_shards = resolve_shard(shard)
    db = shard_db_path(out, index, num_shards)
    summary = ScoreSummary(db=str(db), shard=index, num_shards=num_shards)
    expanded = expand_inputs(inputs)
    summary.inputs, summary.duplicates, summary.warnings = len(expanded.items), expanded.duplicates, expanded.warnings
    for warning in expanded.warnings:
        log(f"warning: {warning}")
    if not expanded.items:
        raise VidattnError("no videos found in the inputs")
    mine = [it for it in expanded.items if shard_of(it.unit, num_shards) == index]
    summary.in_shard = len(mine)
    summary.missing = [it.key for it in mine if it.missing] + expanded.unmatched

    if engine not in ("local", "ray"):
        raise VidattnError(f"engine {engine!r}: use local or ray")
    # Under Ray the model runs in the actors; the driver loads it on the CPU only for its tag and clip spec.
    dev = resolve_device(device if engine == "local" else "cpu", int(os.environ.get("LOCAL_RANK", "0")))
    model = load_classifier(checkpoint, dev, topk) if checkpoint is not None else None
    summary.model = model.tag if model else None
    kf_checkpoint = os.fspath(checkpoint) if checkpoint is not None and keyframes else None
    spec = DecodeSpec(
        backend=backend, timeout_s=timeout_s, keyframes_k=keyframes or None, keyframes_checkpoint=kf_checkpoint
    )
    if model is not None:
        spec = spec.for_model(model.data, clips)
    kf_fn = keyframe_fn or (resolve_keyframe_fn(timeout_s, kf_checkpoint) if keyframes else None)

    with ResultStore(db) as store:
        todo = store.todo(mine, model=summary.model, keyframes_k=keyframes, retry_errors=retry_errors)
        summary.skipped = len(mine) - len(todo)
        store.set_meta({"last_run_started": now_utc(), "shard": f"{index}/{num_shards}", "model": summary.model})
        run = ScoreRun(
            store,
            spec,
            summary,
            model=model,
            keyframe_fn=kf_fn,
            workers=workers,
            batch_size=batch_size,
            progress=progress,
        )
        remote = None
        if engine == "ray":
            from vidattn.scoring.ray_engine import RayOptions

            options = RayOptions(
                address=ray_address,
                workers=workers,
                batch_size=batch_size,
                checkpoint=checkpoint,
                topk=topk,
                device=device,
            )
            remote = _ray_remote(spec, options, log)
        run.run(todo, remote)
        store.set_meta({"last_run_finished": now_utc()})
    summary.wall_s = time.perf_counter() - t_start
    _log_summary(summary, log)
    return summary


def _ray_remote(
    spec: DecodeSpec, options: RayOptions, log: Callable[[str], None]
) -> Callable[[list[InputItem], Callable[[list[dict[str, Any]]], None]], None]:
    """The `ScoreRun` hook that hands the items to the Ray engine; this process stays the one writer."""
    from vidattn.scoring.ray_engine import score_with_ray

    def remote(items: list[InputItem], write: Callable[[list[dict[str, Any]]], None]) -> None:
        score_with_ray(items, write, spec=spec, options=options, log=log)

    return remote


def _log_summary(s: ScoreSummary, log: Callable[[str], None]) -> None:
    where = f" (shard {s.shard}/{s.num_shards}: {s.in_shard})" if s.num_shards > 1 else ""
    log(
        f"score: {s.inputs} inputs{where}, {s.skipped} already done; scored {s.scored} in {s.wall_s:.1f} s "
        f"({s.videos_per_s:.2f} videos/s): {s.ok} ok, {s.errors} errors -> {s.db}"
    )
    if s.scored:
        log(f"time: decode {s.decode_s:.1f} s (summed over workers), model {s.infer_s:.1f} s, db {s.write_s:.1f} s")
    for reason, count in s.top_errors:
        log(f"  {count:>6} x {reason}")
    if s.worker_crashes:
        log(f"warning: {s.worker_crashes} decoder crash(es) recorded as error rows")
    if s.missing:
        more = f" and {len(s.missing) - 1} more" if len(s.missing) > 1 else ""
        log(f"Error: {len(s.missing)} input(s) not found: {s.missing[0]}{more}")


def run_export(
    databases: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    fmt: str | None = None,
    log: Callable[[str], None] = print,
) -> ExportSummary:
    """Merge results databases into one Parquet / CSV / JSONL file (see `vidattn.scoring.export`)."""
    summary = export_results(databases, out, fmt=fmt)
    if summary.stale_removed:
        log(f"export: removed {summary.stale_removed} temporary file(s) left by an interrupted export")
    dup = f", {summary.duplicates} duplicate path(s) merged" if summary.duplicates else ""
    log(
        f"export: {summary.rows} rows ({summary.ok} ok, {summary.errors} errors) from {len(summary.databases)} "
        f"database(s){dup} -> {summary.out}"
    )
    return summary
