"""The main loop of `vidattn score`: workers decode, the main process batches the model and writes rows.

`ScoreRun` takes the items still to score, hands them to DataLoader workers (`ScoreDataset`), batches
the decoded views through the `Classifier`, and writes every record to the `ResultStore`. Every item
gets exactly one row, even when a decoder kills its worker process: the loader error names the dead
worker's pid, the dataset knows what that worker was decoding (`crashed_items`), that item gets an
error row, and the loader restarts on the items that have no row yet.
"""

from __future__ import annotations

import collections
import datetime as dt
import gc
import inspect
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from vidattn.data.decode import silence_ffmpeg_log
from vidattn.scoring.inputs import InputItem
from vidattn.scoring.model import Classifier
from vidattn.scoring.pipeline import (
    DecodeSpec,
    KeyframeFn,
    ScoreDataset,
    error_record,
    make_units,
)
from vidattn.scoring.store import ResultStore

__all__ = ["ScoreSummary", "ScoreRun", "RemoteEngine", "crashed_items", "now_utc", "predict_rows"]

#: ``engine(items, write)``: scores `items` elsewhere and calls ``write(records)`` with finished records.
RemoteEngine = Callable[[list[InputItem], Callable[[list[dict[str, Any]]], None]], None]

#: A run that loses more worker processes than this stops: something is wrong beyond one bad file.
MAX_WORKER_CRASHES = 100


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


def now_utc() -> str:
    """The time stamp of rows and run metadata: UTC ISO-8601 with milliseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class ScoreRun:
    """Score items into a store: one row per item, model calls in batches, progress on a bar.

    Args:
        store: the open results store.
        spec: per-video work of the workers.
        summary: filled in as rows are written.
        model: the classifier (None: catalogue only).
        keyframe_fn: key-frame scorer when ``spec.keyframes_k`` is set.
        workers: decoding processes (0: decode in this process).
        batch_size: videos per model call.
        progress: show a progress bar.
    """

    def __init__(
        self,
        store: ResultStore,
        spec: DecodeSpec,
        summary: ScoreSummary,
        *,
        model: Classifier | None = None,
        keyframe_fn: KeyframeFn | None = None,
        workers: int = 2,
        batch_size: int = 8,
        progress: bool = True,
    ) -> None:
        self.store, self.spec, self.summary = store, spec, summary
        self.model, self.keyframe_fn = model, keyframe_fn
        self.workers, self.batch_size, self.progress = workers, batch_size, progress
        self.pin = model is not None and model.device.type == "cuda"
        self._reasons: collections.Counter[str] = collections.Counter()
        self._pending: list[tuple[dict[str, Any], torch.Tensor]] = []  # records waiting for a model batch
        self._remaining: dict[str, InputItem] = {}  # items without a row yet
        self._bar: Any = None

    def run(self, todo: Sequence[InputItem], remote: RemoteEngine | None = None) -> None:
        """Score `todo`; returns when every item has its row.

        Args:
            todo: the items without a done row.
            remote: another engine that decodes and infers (`vidattn.scoring.ray_engine`); it hands back
                finished records, and this process stays the one writer.
        """
        from tqdm import tqdm

        self._remaining = {it.key: it for it in todo}
        self._bar = tqdm(
            total=len(todo), unit="video", disable=not self.progress or not todo, dynamic_ncols=True, smoothing=0.05
        )
        try:
            if remote is not None:
                remote(list(todo), self._write)
            while remote is None and self._remaining:
                if self._one_pass():
                    break
        finally:
            self._bar.close()
        self.summary.top_errors = self._reasons.most_common(5)

    def _one_pass(self) -> bool:
        """One DataLoader over the items left; False when a worker crashed and a new pass must start."""
        # Free garbage before forking workers: a PyAV frame left over from decoding in this process
        # (workers=0 earlier) would be finalised in the child, whose copy of its swscale threads
        # does not exist, and sws_freeContext would wait for them forever.
        gc.collect()
        dataset = ScoreDataset(make_units(list(self._remaining.values())), self.spec, self.keyframe_fn)
        try:
            for record in _make_loader(dataset, self.workers, self.pin):
                self._handle(record)
            self._infer()
            return True
        except RuntimeError as exc:
            culprits = crashed_items(exc, dataset, self.workers)
            if not culprits or self.summary.worker_crashes >= MAX_WORKER_CRASHES:
                raise
            self._infer()  # records that arrived before the crash are good
            self.summary.worker_crashes += 1
            reason = f"decoder crashed its worker process ({_short_crash(exc)})"
            self._write([error_record(item, reason, self.spec.keyframes_k) for item in culprits])
            return False

    def _handle(self, record: dict[str, Any]) -> None:
        video = record.pop("video", None)
        if self.model is not None and video is not None:
            self._pending.append((record, video))
            if len(self._pending) >= self.batch_size:
                self._infer()
        else:
            self._write([record])

    def _infer(self) -> None:
        if not self._pending:
            return
        t0 = time.perf_counter()
        records = [rec for rec, _ in self._pending]
        predict_rows(self.model, self._pending)
        self._pending.clear()
        self.summary.infer_s += time.perf_counter() - t0
        self._write(records)

    def _write(self, records: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        stamp = now_utc()
        summary = self.summary
        for row in records:
            row.setdefault("scored_at", stamp)
            row["model"] = summary.model
            self._remaining.pop(row["path"], None)
            summary.decode_s += row.get("elapsed_s") or 0.0
            if row["status"] == "ok":
                summary.ok += 1
            else:
                summary.errors += 1
                self._reasons[_reason_class(row["error"] or "")] += 1
        self.store.put(records)
        summary.scored += len(records)
        summary.write_s += time.perf_counter() - t0
        self._bar.update(len(records))
        self._bar.set_postfix_str(f"errors={summary.errors}", refresh=False)


def predict_rows(model: Classifier, pending: Sequence[tuple[dict[str, Any], torch.Tensor]]) -> None:
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


# ------------------------------------------------------------------------------------------------
# The loader and crash attribution
# ------------------------------------------------------------------------------------------------
def _score_worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # one video per worker; the decoder's own threads are enough
    silence_ffmpeg_log()


def _identity(x: Any) -> Any:
    return x


def _make_loader(dataset: ScoreDataset, workers: int, pin: bool) -> torch.utils.data.DataLoader:
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(prefetch_factor=4, worker_init_fn=_score_worker_init, persistent_workers=False)
        if "in_order" in inspect.signature(torch.utils.data.DataLoader).parameters:
            kwargs["in_order"] = False  # a slow video in one worker must not hold back the others
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, collate_fn=_identity, pin_memory=pin, **kwargs
    )


def crashed_items(exc: RuntimeError, dataset: ScoreDataset, workers: int) -> list[InputItem]:
    """Items the dead worker(s) named in a DataLoader error were decoding (empty: not a worker crash)."""
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


def _reason_class(reason: str) -> str:
    """Group error reasons for the summary: numbers and quoted paths vary per file."""
    return re.sub(r"\d+", "N", reason)[:90]
