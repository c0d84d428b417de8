"""Quick parts of scoring past one machine: Slurm shard defaults, URL detection, object stamps (no cluster)."""

from __future__ import annotations

import datetime as dt

import pytest

from vidattn.errors import VidattnError
from vidattn.scoring.inputs import resolve_shard
from vidattn.scoring.remote import is_url, object_stamp


def test_slurm_tasks_and_arrays_give_the_shard():
    assert resolve_shard(None, {"SLURM_PROCID": "3", "SLURM_NTASKS": "4"}) == (3, 4)
    assert resolve_shard(None, {"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == (0, 1)
    array = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "16"}
    assert resolve_shard(None, array) == (6, 16)
    both = {**array, "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}
    assert resolve_shard(None, both) == (13, 32)
    # torchrun inside a Slurm job sets its own ranks, and an explicit --shard wins over Slurm.
    assert resolve_shard(None, {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    assert resolve_shard((0, 2), {"SLURM_PROCID": "3", "SLURM_NTASKS": "4"}) == (0, 2)
    with pytest.raises(VidattnError):
        resolve_shard(None, {"SLURM_PROCID": "4", "SLURM_NTASKS": "4"})


def test_is_url():
    for url in ("s3://bucket/prefix/", "gs://b/x.mp4", "https://example.org/a.mp4", "S3://B/k"):
        assert is_url(url)
    for path in ("/data/a.mp4", "relative/a.mp4", "file:///data/a.mp4", "C:/x.mp4", "a::b.mp4"):
        assert not is_url(path)


def test_object_stamp_prefers_mtime_then_a_stable_etag_number():
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert object_stamp({"LastModified": when, "ETag": '"abc"'}) == when.timestamp()
    assert object_stamp({"updated": "2026-01-02T03:04:05Z"}) == when.timestamp()
    assert object_stamp({"Last-Modified": "Fri, 02 Jan 2026 03:04:05 GMT"}) == when.timestamp()
    a, b = object_stamp({"ETag": '"abc"'}), object_stamp({"ETag": '"abd"'})
    assert a == object_stamp({"ETag": '"abc"'}) and a != b and a < 0  # stable, distinct, never a real time
    assert object_stamp({"size": 3}) is None
