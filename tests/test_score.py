"""`vidattn score` / `vidattn export`: one row per input, resume after SIGKILL, shards, tars, export."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from vidattn.apps.score import run_export, run_score
from vidattn.errors import VidattnError
from vidattn.scoring import pipeline
from vidattn.scoring.inputs import expand_inputs, parse_shard, resolve_shard, shard_of
from vidattn.scoring.store import ResultStore, shard_db_path
from vidattn.testing import make_index_video, shared_dir

REPO = Path(__file__).resolve().parents[1]
NON_ASCII = "vidéo_日本語.mp4"


def rows(db: Path) -> dict[str, dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["path"]: dict(r) for r in conn.execute("SELECT * FROM videos")}
    finally:
        conn.close()


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Eight small good videos, of different lengths, in a nested folder."""
    root = tmp_path_factory.mktemp("clips")
    (root / "sub").mkdir()
    for i in range(8):
        folder = root / "sub" if i % 2 else root
        make_index_video(folder / f"clip{i}.mp4", 10 + 3 * i, height=48, width=64)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained classifier checkpoint (4-frame clips at 32 px)."""
    from vidattn.config import Config
    from vidattn.engine.checkpoint import atomic_save
    from vidattn.models import create_model

    cfg = Config()
    cfg.data.clip_len, cfg.data.stride, cfg.data.size, cfg.data.crop_size = 4, 2, 32, 32
    classes = ["left", "right", "up", "down"]
    torch.manual_seed(0)
    model = create_model(cfg.model.name, num_classes=len(classes), attn=cfg.model.attn, head=cfg.model.head)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    atomic_save(
        {"format": "vidattn-checkpoint/1", "model": model.state_dict(), "classes": classes, "config": cfg.to_dict()},
        path,
    )
    return path


def make_bad_files(folder: Path, good: Path) -> dict[str, str | None]:
    """Bad inputs, name -> expected status ('error', or 'ok' where the OS lets the file be read)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "random.mp4").write_bytes(os.urandom(20_000))
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "text.mp4").write_text("this is not a video\n" * 50)
    (folder / "broken_link.mp4").symlink_to(folder / "does_not_exist.mp4")
    shutil.copy(good, folder / NON_ASCII)
    unreadable = folder / "unreadable.mp4"
    shutil.copy(good, unreadable)
    unreadable.chmod(0)
    os.mkfifo(folder / "fifo.mp4")  # reading it would block forever: must be an error row, not a hang
    expected = {
        "zero.mp4": "error",
        "random.mp4": "error",
        "truncated.mp4": "error",
        "text.mp4": "error",
        "broken_link.mp4": "error",
        NON_ASCII: "ok",
        "fifo.mp4": "error",
        # root reads a chmod-000 file anyway; then the (good) video is honestly scored ok
        "unreadable.mp4": "ok" if os.geteuid() == 0 else "error",
    }
    return expected


# ------------------------------------------------------------------------------------------------
def test_parse_and_resolve_shard():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(VidattnError):
            parse_shard(bad)
    assert resolve_shard(None, {}) == (0, 1)
    assert resolve_shard(None, {"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    assert resolve_shard((2, 3), {}) == (2, 3)
    with pytest.raises(VidattnError, match="torchrun"):
        resolve_shard((0, 2), {"RANK": "0", "WORLD_SIZE": "2"})
    assert shard_db_path("/x/results.sqlite", 0, 2) == Path("/x/results.shard-0-of-2.sqlite")
    assert shard_db_path("/x/results.sqlite", 0, 1) == Path("/x/results.sqlite")


def test_expand_inputs_kinds_and_dedupe(clips, tmp_path, monkeypatch):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n{clips / 'clip0.mp4'}\n\n{clips / 'sub' / 'clip1.mp4'}\n")
    tar = tmp_path / "shard.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(clips / "clip2.mp4", arcname="a/clip2.mp4")
        tf.addfile(tarfile.TarInfo("meta.json"), io.BytesIO(b""))
    monkeypatch.chdir(tmp_path)
    found = expand_inputs([str(clips), f"{clips}/*.mp4", str(listing), "shard.tar", "missing.mp4", "nomatch*.mp4"])
    keys = [it.key for it in found.items]
    assert len(keys) == len(set(keys)) == 8 + 1 + 1  # 8 clips, 1 tar member, 1 missing file
    assert f"{tar}::a/clip2.mp4" in keys and str(tmp_path / "missing.mp4") in keys
    assert found.duplicates == 4 + 2  # the glob's 4 and the list's 2 were already found by the scan
    assert any("matched no files" in w for w in found.warnings)
    shards = [shard_of(it.unit, 3) for it in found.items]
    assert set(shards) <= {0, 1, 2} and shards == [shard_of(it.unit, 3) for it in found.items]


@pytest.mark.realvids
def test_realvids_and_bad_files_one_row_each(clips, tmp_path):
    shared = shared_dir()
    if shared is None or not (shared / "realvids").is_dir():
        pytest.skip("needs ../shared/realvids")
    realvids = shared / "realvids"
    expected = make_bad_files(tmp_path / "bad", clips / "clip0.mp4")
    db = tmp_path / "r.sqlite"
    t0 = time.monotonic()
    summary = run_score([str(realvids), str(tmp_path / "bad")], db, workers=2, timeout_s=30, progress=False, log=quiet)
    assert time.monotonic() - t0 < 240
    got = rows(db)
    real = [p for p in realvids.rglob("*") if p.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov", ".gif")]
    assert len(got) == len(real) + len(expected) == summary.scored
    for p in real:
        row = got[str(p)]
        if p.name == "corrupted.mp4":  # claims 50 frames, 28 decode
            assert row["status"] == "error" and "28 of 50" in row["error"]
        else:
            assert row["status"] == "ok", (p, row["error"])
            assert row["num_frames"] > 0 and row["fps"] > 0 and row["width"] > 0
    for name, status in expected.items():
        row = got[str(tmp_path / "bad" / name)]
        assert row["status"] == status, (name, row["error"])
        if status == "error":
            assert row["error"], name
    bad = {n: got[str(tmp_path / "bad" / n)]["error"] for n in expected}
    assert "empty" in bad["zero.mp4"] and "broken symbolic link" in bad["broken_link.mp4"]
    assert "not a regular file" in bad["fifo.mp4"]


def test_score_with_model_rerun_skips_and_rescores_changed(clips, checkpoint, tmp_path):
    work = tmp_path / "clips"
    shutil.copytree(clips, work)
    db = tmp_path / "r.sqlite"
    first = run_score([str(work)], db, checkpoint=checkpoint, workers=1, keyframes=2, progress=False, log=quiet)
    assert (first.scored, first.ok, first.errors) == (8, 8, 0)
    got = rows(db)
    for row in got.values():
        top = json.loads(row["topk_json"])
        assert row["top1_label"] == top[0]["label"] in ("left", "right", "up", "down")
        assert abs(sum(t["prob"] for t in top) - 1) < 1e-3 and len(top) == 4
        assert row["model"].startswith("r2plus1d_tiny@tiny.pt:")
        assert 1 <= len(json.loads(row["keyframes_json"])) <= 2 and row["keyframes_k"] == 2
    again = run_score([str(work)], db, checkpoint=checkpoint, workers=0, keyframes=2, progress=False, log=quiet)
    assert (again.skipped, again.scored) == (8, 0)
    # Catalogue-only rerun must not strip the predictions.
    assert run_score([str(work)], db, workers=0, progress=False, log=quiet).scored == 0
    changed = work / "sub" / "clip3.mp4"
    os.utime(changed, (time.time() + 10, time.time() + 10))
    third = run_score([str(work)], db, checkpoint=checkpoint, workers=0, keyframes=2, progress=False, log=quiet)
    assert (third.skipped, third.scored) == (7, 1)
    assert len(rows(db)) == 8


def test_score_key_frames_come_from_the_model_like_vidattn_keyframes(clips, checkpoint, tmp_path):
    from vidattn.keyframes.model import KeyframeModel
    from vidattn.keyframes.pipeline import KeyframeOptions, score_video

    video = clips / "clip6.mp4"  # 28 frames
    db = tmp_path / "kf.sqlite"
    run_score([str(video)], db, checkpoint=checkpoint, workers=1, keyframes=2, progress=False, log=quiet)
    got = json.loads(rows(db)[str(video)]["keyframes_json"])
    model = KeyframeModel.load(checkpoint, torch.device("cpu"))
    doc = score_video(video, KeyframeOptions(k=2, device="cpu"), model)
    assert doc["scorer"].startswith("model-evidence")
    assert got == [{key: v for key, v in kf.items() if key != "image"} for kf in doc["keyframes"]]


def test_second_writer_refused(clips, tmp_path):
    db = tmp_path / "r.sqlite"
    with ResultStore(db), pytest.raises(VidattnError, match=f"pid {os.getpid()}"):
        run_score([str(clips)], db, workers=0, progress=False, log=quiet)
    assert run_score([str(clips)], db, workers=0, progress=False, log=quiet).scored == 8  # lock released


def test_cli_second_process_refused(clips, tmp_path):
    db = tmp_path / "r.sqlite"
    with ResultStore(db):
        proc = subprocess.run(
            [sys.executable, "-m", "vidattn.cli", "score", str(clips), "--out", str(db), "--quiet"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
    assert proc.returncode == 2
    assert "being written by another vidattn score" in proc.stderr and "Traceback" not in proc.stderr


def test_tar_shard_scores_like_files_on_disk(clips, checkpoint, tmp_path):
    tar = tmp_path / "shard-000.tar"
    files = sorted(clips.rglob("*.mp4"))
    with tarfile.open(tar, "w") as tf:
        for f in files:
            tf.add(f, arcname=f"videos/{f.name}")
        tf.addfile(tarfile.TarInfo("videos/empty.mp4"), io.BytesIO(b""))
        tf.addfile(tarfile.TarInfo("labels.json"), io.BytesIO(b""))
    kw = dict(checkpoint=checkpoint, workers=1, keyframes=2, progress=False, log=quiet)
    run_score([str(tar)], tmp_path / "tar.sqlite", **kw)
    run_score([str(clips)], tmp_path / "disk.sqlite", **kw)
    from_tar, from_disk = rows(tmp_path / "tar.sqlite"), rows(tmp_path / "disk.sqlite")
    assert len(from_tar) == len(files) + 1
    assert from_tar[f"{tar}::videos/empty.mp4"]["status"] == "error"
    for f in files:
        a, b = from_tar[f"{tar}::videos/{f.name}"], from_disk[str(f)]
        for col in ("status", "num_frames", "fps", "width", "height", "codec", "top1_label", "keyframes_json"):
            assert a[col] == b[col], (f.name, col)
        assert abs(a["top1_prob"] - b["top1_prob"]) < 1e-4


def test_truncated_tar_gives_error_rows(clips, tmp_path):
    tar = tmp_path / "cut.tar"
    with tarfile.open(tar, "w") as tf:
        for f in sorted(clips.glob("*.mp4")):
            tf.add(f, arcname=f.name)
    # Keep the headers readable for the listing, then cut inside the last member's data.
    data = tar.read_bytes()
    listed = expand_inputs([str(tar)]).items
    tar.write_bytes(data[: len(data) - 10_240 - 600])
    summary = run_score([str(tar)], tmp_path / "r.sqlite", workers=0, progress=False, log=quiet)
    got = rows(tmp_path / "r.sqlite")
    assert summary.scored == len(got) >= len(listed) - 1
    assert any(r["status"] == "error" for r in got.values())


def test_worker_crash_costs_one_row(clips, tmp_path, monkeypatch):
    real = pipeline.score_source

    def crashing(source, item, spec, keyframe_fn=None):
        if item.key.endswith("clip2.mp4"):
            os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug in native code does
        return real(source, item, spec, keyframe_fn)

    monkeypatch.setattr(pipeline, "score_source", crashing)  # workers are forked: they inherit it
    summary = run_score([str(clips)], tmp_path / "r.sqlite", workers=2, progress=False, log=quiet)
    got = rows(tmp_path / "r.sqlite")
    assert len(got) == 8 and summary.worker_crashes == 1
    crashed = got[str(clips / "clip2.mp4")]
    assert crashed["status"] == "error" and "crashed its worker" in crashed["error"]
    assert sum(r["status"] == "ok" for r in got.values()) == 7


def test_export_formats_merge_and_errors(clips, tmp_path):
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    run_score([str(clips)], a, shard=(0, 2), workers=0, progress=False, log=quiet)
    run_score([str(clips)], a, shard=(1, 2), workers=0, progress=False, log=quiet)
    shards = [shard_db_path(a, i, 2) for i in range(2)]
    assert all(s.exists() for s in shards) and not a.exists()
    n0, n1 = (len(rows(s)) for s in shards)
    assert n0 + n1 == 8
    run_score([str(clips / "clip0.mp4")], b, workers=0, progress=False, log=quiet)  # overlaps shard rows
    out = tmp_path / "out"
    s = run_export([str(a)], out / "all.csv", log=quiet)  # base name stands for its shard files
    assert s.rows == 8 and (out / "all.csv").read_text().count("\n") == 9
    s = run_export([str(tmp_path / "a.shard-*.sqlite"), str(b)], out / "all.jsonl", log=quiet)
    lines = [json.loads(x) for x in (out / "all.jsonl").read_text().splitlines()]
    assert s.rows == 8 and s.duplicates == 1 and len({r["path"] for r in lines}) == 8
    assert [r["path"] for r in lines] == sorted(r["path"] for r in lines)
    assert sorted(p.name for p in out.iterdir()) == ["all.csv", "all.jsonl"]  # no temporary files left
    with pytest.raises(VidattnError, match="extension"):
        run_export([str(b)], out / "all.xlsx", log=quiet)
    with pytest.raises(VidattnError, match="no such results database"):
        run_export([str(tmp_path / "nope.sqlite")], out / "x.csv", log=quiet)


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vidattn.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.slow
def test_sigkill_midway_then_rerun_equals_uninterrupted(clips, checkpoint, tmp_path):
    work = tmp_path / "many"
    for i in range(3):  # 24 videos: enough for the kill to land mid-run
        shutil.copytree(clips, work / f"copy{i}")
    ref_db, db = tmp_path / "ref.sqlite", tmp_path / "killed.sqlite"
    run_score([str(work)], ref_db, checkpoint=checkpoint, workers=0, progress=False, log=quiet)
    args = ["score", str(work), "--out", str(db), "--checkpoint", str(checkpoint), "--workers", "1", "--quiet"]
    args += ["--batch-size", "2"]
    proc = _cli(*args)
    deadline = time.monotonic() + 180
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                seen = len(rows(db))
            except sqlite3.Error:
                seen = 0
            if seen >= 4:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)  # the worker notices its parent is gone and exits
    proc.wait(timeout=30)
    partial = rows(db)
    assert 4 <= len(partial) < 24
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    rerun = _cli(*args)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"{len(partial)} already done" in err
    ref, got = rows(ref_db), rows(db)
    assert sorted(got) == sorted(ref) and len(got) == 24
    for path, row in ref.items():
        assert got[path]["status"] == row["status"] == "ok"
        assert got[path]["top1_label"] == row["top1_label"]
        assert abs(got[path]["top1_prob"] - row["top1_prob"]) < 1e-4
        assert got[path]["num_frames"] == row["num_frames"]


@pytest.mark.slow
def test_torchrun_two_ranks_then_export_parquet(clips, tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    out = tmp_path / "results.sqlite"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
         "-m", "vidattn.cli", "score", str(clips), "--out", str(out), "--workers", "0", "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    shards = sorted(tmp_path.glob("results.shard-*-of-2.sqlite"))
    assert [s.name for s in shards] == ["results.shard-0-of-2.sqlite", "results.shard-1-of-2.sqlite"]
    per_shard = [set(rows(s)) for s in shards]
    assert not per_shard[0] & per_shard[1] and len(per_shard[0] | per_shard[1]) == 8
    export = subprocess.run(
        [sys.executable, "-m", "vidattn.cli", "export", str(tmp_path / "results.shard-*.sqlite"),
         str(tmp_path / "all.parquet")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    table = pq.read_table(tmp_path / "all.parquet")
    paths = table.column("path").to_pylist()
    assert table.num_rows == 8 == len(set(paths))
    assert set(table.column("status").to_pylist()) == {"ok"}


def test_cli_errors_are_one_line(clips, tmp_path):
    bad_shard = subprocess.run(
        [sys.executable, "-m", "vidattn.cli", "score", str(clips), "--out", str(tmp_path / "r.sqlite"),
         "--shard", "3/2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad_shard.returncode == 2 and "need 0 <= i < n" in bad_shard.stderr
    assert "Traceback" not in bad_shard.stderr
    nothing = subprocess.run(
        [sys.executable, "-m", "vidattn.cli", "export", str(tmp_path / "none.sqlite"), str(tmp_path / "x.parquet")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1 and "Traceback" not in nothing.stderr


def test_model_views_cover_the_whole_video_like_eval():
    """A coverage-trained model's views each span the video; a dense-clip model's uniform clips stay dense."""
    spec = pipeline.DecodeSpec(clip_len=8, stride=2, num_clips=3, sampler="auto")
    views = pipeline.model_views(spec, 400)
    assert len(views) == 3
    assert all(v.frame_indices[0] < 50 and v.frame_indices[-1] >= 349 for v in views)
    dense = pipeline.model_views(pipeline.DecodeSpec(clip_len=8, stride=2, num_clips=3), 400)
    assert all(v.frame_indices[-1] - v.frame_indices[0] == 14 for v in dense)


# ------------------------------------------------------------------------------------------------
# Issue 13: the lock through a symlink, missing inputs, temporaries of a killed export
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("via", ["file link", "folder link"])
def test_same_database_through_a_symlink_is_one_writer(clips, tmp_path, via):
    real = tmp_path / "real" / "r.sqlite"
    real.parent.mkdir()
    if via == "file link":
        other = tmp_path / "link.sqlite"
        other.symlink_to(real)
    else:
        (tmp_path / "alias").symlink_to(real.parent)
        other = tmp_path / "alias" / "r.sqlite"
    args = ["score", str(clips), "--out", str(other), "--quiet", "--workers", "0"]
    with ResultStore(real):
        proc = subprocess.run(
            [sys.executable, "-m", "vidattn.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "being written by another vidattn score" in proc.stderr


def test_missing_input_exits_1_and_the_others_are_scored(clips, tmp_path):
    db, missing = tmp_path / "r.sqlite", tmp_path / "missing.mp4"
    args = ["score", str(clips / "clip0.mp4"), str(missing), str(tmp_path / "nomatch*.mp4"), "--out", str(db)]
    proc = subprocess.run(
        [sys.executable, "-m", "vidattn.cli", *args, "--quiet", "--workers", "0"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: 2 input(s) not found: {missing} and 1 more"]
    got = rows(db)
    assert got[str(clips / "clip0.mp4")]["status"] == "ok" and got[str(missing)]["error"] == "no such file"
    # A rerun skips both rows and still says the input is missing.
    again = run_score([str(clips / "clip0.mp4"), str(missing)], db, workers=0, progress=False, log=quiet)
    assert again.skipped == 2 and again.missing == [str(missing)]


def test_export_removes_only_stale_temporaries_of_its_output(clips, tmp_path):
    import fcntl

    db = tmp_path / "r.sqlite"
    run_score([str(clips / "clip0.mp4")], db, workers=0, progress=False, log=quiet)
    out = tmp_path / "out" / "all.csv"
    out.parent.mkdir()
    stale = out.parent / ".all.csv.k1ll3d_x.tmp"  # what a killed export leaves: unlocked
    busy = out.parent / ".all.csv.running_.tmp"  # a running export holds its lock
    others = [out.parent / ".all.csv.notours.tmp", out.parent / ".other.csv.abcdefgh.tmp", out.parent / "all.csv.tmp"]
    for p in [stale, busy, *others]:
        p.write_text("partial")
    link = out.parent / ".all.csv.linkxxxx.tmp"
    link.symlink_to(tmp_path / "victim")
    (tmp_path / "victim").write_text("not ours")
    with busy.open() as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        summary = run_export([str(db)], out, log=quiet)
    assert summary.stale_removed == 1 and summary.rows == 1
    assert not stale.exists() and busy.exists() and link.is_symlink() and (tmp_path / "victim").exists()
    assert all(p.exists() for p in others)
    assert sorted(p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")) == sorted(
        p.name for p in [busy, link, *others] if p.name.endswith(".tmp")
    )
