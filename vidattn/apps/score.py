"""`vidattn score` and `vidattn export`: batch scoring of video archives into SQLite, then one table.

Pipeline: inputs are expanded and deduplicated (`vidattn.scoring.inputs`), this shard's share is
kept, rows already done are skipped, DataLoader workers decode (`vidattn.scoring.pipeline`), the
main process batches the model on the device and writes rows in small transactions
(`vidattn.scoring.store`). Every input gets exactly one row: ``ok``, or ``error`` with the reason.

Resume: a row is done when the file's size and mtime are unchanged and the row already has what this
run asks for (the same model, the same number of key frames); error rows are done unless
``retry_errors``. A run killed at any point reruns with the same command.

Shards: ``--shard i/n`` (or torchrun's RANK / WORLD_SIZE) scores the units whose key hashes to `i`
and writes ``<out stem>.shard-i-of-n<suffix>``. Ranks never talk to each other, so one failing rank
does not stall the others; `vidattn export` merges the shard files.

A decoder that crashes its worker process (a segfault in native code) costs one error row for the
file it was decoding; the loader restarts on the rest.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import gc
import hashlib
import inspect
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vidattn.errors import VidattnError
from vidattn.scoring.export import ExportSummary, export_results
from vidattn.scoring.inputs import InputItem, expand_inputs, shard_of
from vidattn.scoring.pipeline import DecodeSpec, KeyframeFn, ScoreDataset, make_units, no_ffmpeg_log_callback
from vidattn.scoring.store import ResultStore, shard_db_path

__all__ = [
    "ScoreSummary",
    "parse_shard",
    "resolve_shard",
    "run_score",
    "run_export",
    "resolve_keyframe_fn",
    "shard_db_path",
]

_MAX_WORKER_CRASHES = 100


@dataclass
class ScoreSummary:
    """What a scoring run did (also printed at the end, and returned for scripts and benchmarks)."""

    db: str
    shard: int
    num_shards: int
    inputs: int = 0  # unique inputs, all shards
    in_shard: int = 0
    skipped: int = 0  # already done
    scored: int = 0
    ok: int = 0
    errors: int = 0
    wall_s: float = 0.0
    decode_s: float = 0.0  # summed worker seconds spent decoding (and key frames)
    infer_s: float = 0.0  # main-process seconds in the model (incl. the device transform)
    write_s: float = 0.0
    worker_crashes: int = 0
    duplicates: int = 0
    model: str | None = None
    missing: list[str] = field(default_factory=list)  # inputs of this shard not found, and patterns matching nothing
    top_errors: list[tuple[str, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def videos_per_s(self) -> float:
        return self.scored / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "videos_per_s": round(self.videos_per_s, 3)}


# ------------------------------------------------------------------------------------------------
# Shards
# ------------------------------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise VidattnError(f"shard {text!r} is not i/n (e.g. 0/4)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise VidattnError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def resolve_shard(shard: tuple[int, int] | None, env: dict[str, str] | None = None) -> tuple[int, int]:
    """The explicit ``--shard``, else torchrun's RANK / WORLD_SIZE, else Slurm's task and array ids, else ``(0, 1)``.

    Slurm: ``srun -n N`` gives SLURM_PROCID / SLURM_NTASKS; an ``sbatch --array`` job gives
    SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_COUNT; both together make
    ``array_index * ntasks + procid`` of ``count * ntasks``. torchrun wins over Slurm: torchrun started
    inside a Slurm job sets its own ranks.
    """
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if shard is not None:
        if world > 1:
            raise VidattnError("--shard given under torchrun (WORLD_SIZE > 1): use one or the other")
        return shard
    if world > 1:
        return int(env.get("RANK", "0")), world
    tasks = int(env.get("SLURM_NTASKS", "1") or 1)
    procid = int(env.get("SLURM_PROCID", "0") or 0) if tasks > 1 else 0
    count = int(env.get("SLURM_ARRAY_TASK_COUNT", "1") or 1)
    array = int(env.get("SLURM_ARRAY_TASK_ID", "0") or 0) - int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
    if tasks > 1 or count > 1:
        return parse_shard(f"{(array if count > 1 else 0) * tasks + procid}/{count * tasks}")
    return 0, 1


# ------------------------------------------------------------------------------------------------
# Key frames: the seam to the key-frame pipeline
# ------------------------------------------------------------------------------------------------
def resolve_keyframe_fn(timeout_s: float | None = 60.0) -> KeyframeFn:
    """The key-frame scorer for ``--keyframes``: `vidattn.keyframes.pipeline.score_video` (training-free).

    Contract of the seam: ``fn(source, reader, k) -> [{"rank", "frame_index", "time_s", "score", ...}]``,
    best first.
    """
    from vidattn.keyframes.pipeline import KeyframeOptions, score_video

    options = KeyframeOptions(k=None, device="cpu", timeout_s=timeout_s)

    def app_keyframes(source: Any, reader: Any, k: int) -> list[dict[str, Any]]:
        # `score_video` opens its own small reader; it takes a path or, for a tar member, the bytes.
        opts = KeyframeOptions(**{**options.__dict__, "k": k})
        doc = score_video(source, opts)
        return [{key: v for key, v in kf.items() if key != "image"} for kf in doc["keyframes"]]

    return app_keyframes


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------
def _same_mtime(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) < 1e-6


def _is_done(row: tuple | None, item: InputItem, model: str | None, k: int | None, retry_errors: bool) -> bool:
    if row is None:
        return False
    status, size, mtime, row_model, row_k = row
    if size != item.size or not _same_mtime(mtime, item.mtime):
        return False  # the file changed
    if status == "error":
        return not retry_errors
    # Done if the row has what this run asks for; a run without a checkpoint never strips predictions.
    return (model is None or row_model == model) and (not k or row_k == k)


def _checkpoint_tag(path: Path, model_name: str) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{model_name}@{path.name}:{digest.hexdigest()[:12]}"


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # one video per worker; the decoder's own threads are enough
    no_ffmpeg_log_callback()


def _identity(x: Any) -> Any:
    return x


def _make_loader(dataset: ScoreDataset, workers: int, pin: bool) -> torch.utils.data.DataLoader:
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(prefetch_factor=4, worker_init_fn=_worker_init, persistent_workers=False)
        if "in_order" in inspect.signature(torch.utils.data.DataLoader).parameters:
            kwargs["in_order"] = False  # a slow video in one worker must not hold back the others
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, collate_fn=_identity, pin_memory=pin, **kwargs
    )


class _Model:
    """The checkpoint's classifier, batched: uint8 views in, averaged class probabilities out."""

    def __init__(self, checkpoint: str | os.PathLike, device: torch.device, topk: int) -> None:
        from vidattn.data.transforms import VideoTransform
        from vidattn.engine.checkpoint import load_model
        from vidattn.engine.modeling import amp_mode, autocast_for

        path = Path(checkpoint)
        self.net, self.classes, cfg = load_model(path, device)
        self.data = cfg.data
        self.autocast = functools.partial(autocast_for, device, amp_mode(cfg.train.amp, device))  # as in training
        self.tag = _checkpoint_tag(path, cfg.model.name)
        self.device = device
        self.topk = max(1, min(topk, len(self.classes)))
        self.transform = VideoTransform(cfg.data.crop_size, train=False).to(device)

    @torch.inference_mode()
    def __call__(self, videos: list[torch.Tensor]) -> list[list[tuple[str, float]]]:
        batch = torch.stack(videos).to(self.device, non_blocking=True)  # (B, V, T, S, S, C) uint8
        b, v = batch.shape[:2]
        x = self.transform(batch).flatten(0, 1)  # (B*V, C, T, S, S)
        with self.autocast():
            logits = self.net(x)
        probs = logits.float().softmax(-1).view(b, v, -1).mean(1)  # views averaged
        top = probs.topk(self.topk, dim=-1)
        return [
            [(self.classes[int(i)], round(float(p), 6)) for p, i in zip(ps, idx, strict=True)]
            for ps, idx in zip(top.values.cpu(), top.indices.cpu(), strict=True)
        ]


def predict_rows(model: _Model, pending: Sequence[tuple[dict[str, Any], torch.Tensor]]) -> None:
    """Fill ``top1_label``, ``top1_prob`` and ``topk_json`` of each record from one batched model call.

    Shared by the local engine and the Ray engine's model actors. A batch that fails (e.g. out of
    memory) is retried one video at a time, so a failure costs one row (an error), never the batch.
    """
    try:
        results = model([v for _, v in pending])
    except RuntimeError:
        results = []
        for rec, video in pending:
            try:
                results.extend(model([video]))
            except RuntimeError as exc:
                results.append(None)
                rec.update(status="error", error=f"inference failed: {' '.join(str(exc).split())[:200]}")
    for (rec, _), top in zip(pending, results, strict=True):
        if top:
            rec.update(
                top1_label=top[0][0],
                top1_prob=top[0][1],
                topk_json=json.dumps([{"label": c, "prob": p} for c, p in top], ensure_ascii=False),
            )


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


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
        keyframes: key frames per video (None: none).
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
        The run's `ScoreSummary`.
    """
    from vidattn.engine.distributed import resolve_device

    t_start = time.perf_counter()
    no_ffmpeg_log_callback()
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
    model = _Model(checkpoint, dev, topk) if checkpoint is not None else None
    summary.model = model.tag if model else None
    spec = DecodeSpec(backend=backend, timeout_s=timeout_s, keyframes_k=keyframes or None)
    if model is not None:
        spec = DecodeSpec(
            backend=backend,
            timeout_s=timeout_s,
            keyframes_k=keyframes or None,
            clip_len=model.data.clip_len,
            stride=model.data.stride,
            num_clips=clips,
            size=model.data.size,
            sampler=model.data.sampler,
            snippet=model.data.snippet,
        )
    kf_fn = keyframe_fn or (resolve_keyframe_fn(timeout_s) if keyframes else None)

    with ResultStore(db) as store:
        done = store.done_map()
        todo = [it for it in mine if not _is_done(done.get(it.key), it, summary.model, keyframes, retry_errors)]
        del done
        summary.skipped = len(mine) - len(todo)
        store.set_meta({"last_run_started": _now(), "shard": f"{index}/{num_shards}", "model": summary.model})
        remote = None
        if engine == "ray":
            from vidattn.scoring.ray_engine import RayOptions, score_with_ray

            options = RayOptions(
                address=ray_address,
                workers=workers,
                batch_size=batch_size,
                checkpoint=checkpoint,
                topk=topk,
                device=device,
            )

            def remote(items: list[InputItem], write: Callable[[list[dict[str, Any]]], None]) -> None:
                score_with_ray(items, write, spec=spec, options=options, log=log)

        _score_items(todo, store, spec, kf_fn, model, workers, batch_size, progress, summary, dev, remote)
        store.set_meta({"last_run_finished": _now()})
    summary.wall_s = time.perf_counter() - t_start
    _log_summary(summary, log)
    return summary


def _score_items(
    todo: list[InputItem],
    store: ResultStore,
    spec: DecodeSpec,
    kf_fn: KeyframeFn | None,
    model: _Model | None,
    workers: int,
    batch_size: int,
    progress: bool,
    summary: ScoreSummary,
    dev: torch.device,
    remote: Callable[[list[InputItem], Callable[[list[dict[str, Any]]], None]], None] | None = None,
) -> None:
    from tqdm import tqdm

    reasons: collections.Counter[str] = collections.Counter()
    pending: list[tuple[dict[str, Any], torch.Tensor]] = []
    remaining = {it.key: it for it in todo}
    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo, dynamic_ncols=True, smoothing=0.05)

    def write(rows: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        stamp = _now()
        for row in rows:
            row.setdefault("scored_at", stamp)
            row["model"] = summary.model
            remaining.pop(row["path"], None)
            summary.decode_s += row.get("elapsed_s") or 0.0
            if row["status"] == "ok":
                summary.ok += 1
            else:
                summary.errors += 1
                reasons[_reason_class(row["error"] or "")] += 1
        store.put(rows)
        summary.scored += len(rows)
        summary.write_s += time.perf_counter() - t0
        bar.update(len(rows))
        bar.set_postfix_str(f"errors={summary.errors}", refresh=False)

    def infer() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        rows = [rec for rec, _ in pending]
        predict_rows(model, pending)
        pending.clear()
        summary.infer_s += time.perf_counter() - t0
        write(rows)

    def handle(rec: dict[str, Any]) -> None:
        video = rec.pop("video", None)
        if model is not None and video is not None:
            pending.append((rec, video))
            if len(pending) >= batch_size:
                infer()
        else:
            write([rec])

    if remote is not None:  # another engine decodes and infers; this process stays the one writer
        try:
            remote(todo, write)
        finally:
            bar.close()
        summary.top_errors = reasons.most_common(5)
        return

    try:
        while remaining:
            # Free garbage before forking workers: a PyAV frame left over from decoding in this process
            # (workers=0 earlier) would be finalised in the child, whose copy of its swscale threads
            # does not exist, and sws_freeContext would wait for them forever.
            gc.collect()
            dataset = ScoreDataset(make_units(list(remaining.values())), spec, kf_fn)
            loader = _make_loader(dataset, workers, pin=dev.type == "cuda")
            try:
                for rec in loader:
                    handle(rec)
                infer()
                break
            except RuntimeError as exc:
                culprits = _crashed_items(exc, dataset, workers)
                if not culprits or summary.worker_crashes >= _MAX_WORKER_CRASHES:
                    raise
                infer()  # records that arrived before the crash are good
                summary.worker_crashes += 1
                reason = f"decoder crashed its worker process ({_short_crash(exc)})"
                write([{**_crash_row(it, reason), "keyframes_k": spec.keyframes_k} for it in culprits])
    finally:
        bar.close()
    summary.top_errors = reasons.most_common(5)


def _crashed_items(exc: RuntimeError, dataset: ScoreDataset, workers: int) -> list[InputItem]:
    """Items the dead worker(s) named in a DataLoader error were decoding."""
    text = str(exc)
    if workers == 0 or "DataLoader worker" not in text:
        return []
    m = re.search(r"pid(?:\(s\))?\s*([\d,\s]+)", text)  # "(pid 12)" or "(pid(s) 12, 13)"
    pids = {int(p) for p in re.findall(r"\d+", m.group(1))} if m else set()
    found = []
    for worker_id in range(workers):
        if dataset.worker_pid(worker_id) in pids:
            item = dataset.in_flight(worker_id)
            if item is not None:
                found.append(item)
    return found


def _short_crash(exc: BaseException) -> str:
    m = re.search(r"killed by signal: ([^.]+)", str(exc))
    return f"killed by signal: {m.group(1)}" if m else "exited unexpectedly"


def _crash_row(item: InputItem, reason: str) -> dict[str, Any]:
    return {"path": item.key, "size": item.size, "mtime": item.mtime, "status": "error", "error": reason}


def _reason_class(reason: str) -> str:
    """Group error reasons for the summary: numbers and quoted paths vary per file."""
    return re.sub(r"\d+", "N", reason)[:90]


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


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------
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
