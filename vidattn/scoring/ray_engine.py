"""The Ray engine of `vidattn score` (``--engine ray``): decode tasks on a cluster, a model actor pool, one writer.

Flow: the driver (the `vidattn score` process) groups the pending inputs into work units (a file, or a
tar shard with its pending members, `make_units`), and keeps a bounded number of decode tasks in flight
(two per cluster CPU). Each task runs the same per-video code as a local DataLoader worker
(`ScoreDataset` over its one unit: decode, frame-count check, uniform views, key frames) on any node.
With a checkpoint, finished decode results are handed by reference, `batch_size` units at a time, to
the least busy model actor (one per GPU in the cluster, else ``--workers`` CPU actors); the model input
tensors move between nodes in Ray's object store and never through the driver. Result rows (no tensors)
stream back to the driver, which writes them into the SQLite store in small transactions as the local
engine does.

Exactly-once: rows are keyed by ``path`` and written by that single writer; a unit's rows are written
when its task's result arrives, once. Ray retries a decode task whose worker process or node died
(``max_retries``) and restarts a dead model actor and retries its call (``max_restarts``,
``max_task_retries``); a retried task produces the same rows and the driver writes each unit once. A
unit whose decode keeps killing its worker (a decoder segfault on that file) becomes error rows after
the retries, as in the local engine. A killed driver loses only rows in flight: the rerun skips what
the store has.

Why plain Ray tasks and an actor pool rather than Ray Data: the job is a stream of independent units
with per-unit error rows, a bounded in-flight window is the whole scheduler, and every row must come
back to one writer keyed by path; Ray Data's streaming executor adds a planning layer, its own CPU
reservations and operator actors on top of the same tasks, which on a 2-core node competes with the
decoders (see the README's benchmark).

Security: a cluster that vidattn starts itself (no ``--ray-address``) runs with token authentication
(``RAY_AUTH_MODE=token``, a fresh random token for the run unless ``RAY_AUTH_TOKEN`` is set). For an
existing cluster set the same variables on every node and on the driver (README).
"""

from __future__ import annotations

import os
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from vidattn.errors import VidattnError
from vidattn.scoring.inputs import InputItem
from vidattn.scoring.pipeline import DecodeSpec, ScoreDataset, WorkUnit, make_units

__all__ = ["RayOptions", "score_with_ray", "connect"]

#: Decode-task retries after its worker process (or node) died; then the unit's rows are errors.
DECODE_RETRIES = 3
#: Model-actor call retries after the actor died (it restarts, on another node if its own is gone).
ACTOR_RETRIES = 3


class RayOptions:
    """How the Ray engine runs.

    Args:
        address: an existing cluster (``ray://...``, ``host:port`` or ``auto``); None starts a local one.
        workers: CPU model actors when the cluster has no GPU (and the CPUs of a local cluster it starts).
        batch_size: decoded units per model call.
        checkpoint: the classifier (None: catalogue only, no actors).
        topk: labels kept per video.
        device: auto | cpu | cuda for the actors (auto: a GPU each where the cluster has GPUs).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int = 2,
        batch_size: int = 8,
        checkpoint: str | os.PathLike | None = None,
        topk: int = 5,
        device: str = "auto",
    ) -> None:
        self.address, self.workers, self.batch_size = address, workers, batch_size
        self.checkpoint = None if checkpoint is None else os.path.abspath(os.fspath(checkpoint))
        self.topk, self.device = topk, device


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise VidattnError('--engine ray needs Ray: pip install "vidattn[ray]"') from None
    return ray


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to `address`, or start a local cluster with token authentication; True if this call started it.

    Raises:
        VidattnError: the cluster cannot be reached (or rejects our token).
    """
    if address is None:
        # A cluster we start runs user code for anyone who reaches it: require a token. Set before Ray is
        # imported: its native token loader reads the environment once.
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if address is not None:
        _probe(address)
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return True
        # No runtime_env: it costs a per-job environment set-up on every node (seconds); the nodes run
        # the vidattn installed there, as they run the same Python.
        ray.init(address=address, log_to_driver=False)
        return False
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        raise VidattnError(f"cannot start or reach Ray at {where}: {' '.join(str(exc).split())[:200]}") from None


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on: Ray itself keeps retrying for minutes."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray://...: Ray resolves those
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise VidattnError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------------------
# Remote work
# ------------------------------------------------------------------------------------------------
def _decode_unit(unit: WorkUnit, spec: DecodeSpec) -> list[dict[str, Any]]:
    """Records of every item of one unit, by the same code as a local DataLoader worker."""
    import torch

    from vidattn.data.decode import silence_ffmpeg_log

    torch.set_num_threads(1)  # one unit per task: parallelism comes from tasks
    silence_ffmpeg_log()
    keyframe_fn = None
    if spec.keyframes_k:
        from vidattn.scoring.pipeline import resolve_keyframe_fn

        keyframe_fn = resolve_keyframe_fn(spec.timeout_s, spec.keyframes_checkpoint)
    return list(ScoreDataset([unit], spec, keyframe_fn))


class _ModelActor:
    """One copy of the classifier; turns decoded records into finished rows (tensors dropped)."""

    def __init__(self, checkpoint: str, device: str, topk: int, threads: int) -> None:
        import torch

        from vidattn.engine.distributed import resolve_device
        from vidattn.scoring.model import load_classifier

        torch.set_num_threads(max(1, threads))
        self.model = load_classifier(checkpoint, resolve_device(device, 0), topk)

    def predict(self, *units: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from vidattn.scoring.runner import predict_rows

        records = [rec for unit in units for rec in unit]
        pending = [(rec, rec.pop("video")) for rec in records if rec.get("video") is not None]
        if pending:
            predict_rows(self.model, pending)
        for rec in records:
            rec.pop("video", None)
        return records


def _crash_rows(unit: WorkUnit, exc: BaseException, spec: DecodeSpec) -> list[dict[str, Any]]:
    kind = type(exc).__name__
    reason = f"decoder crashed its worker process ({kind} after {DECODE_RETRIES} retries)"
    return [
        {"path": it.key, "size": it.size, "mtime": it.mtime, "status": "error", "error": reason}
        | {"keyframes_k": spec.keyframes_k, "elapsed_s": 0.0}
        for it in unit.items
    ]


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------
def score_with_ray(
    todo: Sequence[InputItem],
    write: Callable[[list[dict[str, Any]]], None],
    *,
    spec: DecodeSpec,
    options: RayOptions,
    log: Callable[[str], None] = print,
) -> None:
    """Score `todo` on a Ray cluster; every finished row goes to `write` (the driver's single writer).

    Args:
        todo: items still to score (resume already applied).
        write: called with finished rows, in this process; it owns the store.
        spec: per-video work (as for local workers).
        options: cluster address, actors, batch size, checkpoint.
        log: where engine lines go.
    """
    if not todo:  # a rerun with everything done needs no cluster
        return
    started = connect(options.address, num_cpus=os.cpu_count())  # first: it sets up auth before importing Ray
    ray = _import_ray()
    try:
        _drive(ray, make_units(todo), write, spec, options, log)
    finally:
        if started:
            ray.shutdown()


def _cluster_gpus(ray: Any) -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def _drive(
    ray: Any,
    units: list[WorkUnit],
    write: Callable[[list[dict[str, Any]]], None],
    spec: DecodeSpec,
    options: RayOptions,
    log: Callable[[str], None],
) -> None:
    # retry_exceptions=False: a Python exception is a bug in one unit, not a lost worker; score_source
    # already turns every bad file into an error row, so only process/node deaths are retried.
    decode = ray.remote(num_cpus=1, max_retries=DECODE_RETRIES, retry_exceptions=False)(_decode_unit)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    window = 2 * cpus + options.batch_size  # decode tasks in flight: enough to keep every CPU busy
    actors: list[Any] = []
    if options.checkpoint is not None:
        gpus = _cluster_gpus(ray) if options.device in ("auto", "cuda") else 0
        if options.device == "cuda" and not gpus:
            raise VidattnError("--device cuda: the Ray cluster has no GPU")
        count = gpus or max(1, options.workers)
        # CPU actors reserve no CPU: they would otherwise starve the decode tasks on a small node.
        resources = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 0}
        actor_cls = ray.remote(max_restarts=-1, max_task_retries=ACTOR_RETRIES, **resources)(_ModelActor)
        device = "cuda" if gpus else "cpu"
        threads = 1 if not gpus else 2
        actors = [actor_cls.remote(options.checkpoint, device, options.topk, threads) for _ in range(count)]
        log(f"ray: {len(units)} units on {cpus} CPUs, {count} model actor(s) on {device}")
    else:
        log(f"ray: {len(units)} units on {cpus} CPUs, no model")

    queue = deque(range(len(units)))
    decoding: dict[Any, int] = {}  # decode ref -> unit index
    decoded: list[tuple[Any, int]] = []  # finished decodes waiting for a model actor
    predicting: dict[Any, tuple[int, list[tuple[Any, int]]]] = {}  # actor ref -> (actor, its units)
    load = [0] * len(actors)
    spec_ref = ray.put(spec)

    def submit_predictions(flush: bool) -> None:
        while decoded and (flush or len(decoded) >= options.batch_size):
            batch, decoded[:] = decoded[: options.batch_size], decoded[options.batch_size :]
            a = min(range(len(actors)), key=load.__getitem__)
            load[a] += 1
            predicting[actors[a].predict.remote(*[ref for ref, _ in batch])] = (a, batch)

    while queue or decoding or decoded or predicting:
        while queue and len(decoding) + len(decoded) < window:
            i = queue.popleft()
            decoding[decode.remote(units[i], spec_ref)] = i
        submit_predictions(flush=not queue and not decoding or len(predicting) < len(actors))
        ready, _ = ray.wait(list(decoding) + list(predicting), num_returns=1, timeout=10.0, fetch_local=False)
        for ref in ready:
            if ref in decoding:
                i = decoding.pop(ref)
                if actors:
                    decoded.append((ref, i))
                    continue
                write(_get_rows(ray, ref, units[i], spec))
            else:
                a, batch = predicting.pop(ref)
                load[a] -= 1
                try:
                    write(ray.get(ref))
                except ray.exceptions.RayError:
                    # One of the inputs failed (its decode kept crashing) or the actor is gone for good:
                    # settle unit by unit so one bad file costs its own rows only.
                    for dref, i in batch:
                        rows = _get_rows(ray, dref, units[i], spec)
                        if any("video" in r for r in rows):
                            try:
                                rows = ray.get(actors[a].predict.remote(rows))
                            except ray.exceptions.RayError as exc:
                                rows = [_inference_error(r, exc) for r in rows]
                        write(rows)


def _inference_error(row: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    row.pop("video", None)
    return row | {"status": "error", "error": f"inference failed: {type(exc).__name__} (model actor lost)"}


def _get_rows(ray: Any, ref: Any, unit: WorkUnit, spec: DecodeSpec) -> list[dict[str, Any]]:
    """The unit's records, or its error rows when the decode task failed past its retries."""
    try:
        rows = ray.get(ref)
    except ray.exceptions.RayError as exc:
        return _crash_rows(unit, exc, spec)
    for row in rows:
        if row.get("video") is None:
            row.pop("video", None)
    return rows
