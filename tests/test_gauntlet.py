"""The gauntlet: every command against bad inputs, read-only output and a full disk (issue 13).

Each case runs the real console command in a subprocess and checks the three promises of the CLI:
one ``Error:`` line on stderr (click's "Usage:"/"Try" preamble aside, never a traceback), the right
exit code, and nothing else lost (the good file next to the bad one still gets its output, rows
already written stay, an earlier output is not clobbered).

Exit codes: 2 for an error that stops the command (a bad argument, an unreadable checkpoint, an
output that cannot be written); 1 when some of several inputs failed and the others were done
(`probe`, `keyframes`, and `score` when an input does not exist); 0 for `score`, where a bad video
is an error row by design.

Read-only output is a read-only tmpfs when run as root (root ignores file modes) and a 0555 folder
otherwise. A full disk is a small tmpfs, so those cases need root and are skipped without it.
Subprocesses run under an 8 GB address-space limit, so a decoder that tries to allocate a 16000 x
16000 frame fails the test instead of the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vidattn.testing import make_index_video

REPO = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 8 << 30
IS_ROOT = os.geteuid() == 0

#: The bad video inputs. Every video-taking command meets each of them.
BAD_VIDEOS = (
    "zero_bytes",
    "random_bytes",
    "truncated",
    "text",
    "audio_only",
    "directory",
    "broken_link",
    "missing",
    "huge_header",
)


# ------------------------------------------------------------------------------------------------
# Running the command and judging its stderr
# ------------------------------------------------------------------------------------------------
def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def vidattn(*args: str | os.PathLike, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "vidattn.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        preexec_fn=_limit_memory,
    )


def error_lines(stderr: str) -> list[str]:
    """Lines of stderr that say something: click's usage preamble and blank lines left out."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(("Usage: ", "Try '"))]


def assert_one_error(proc: subprocess.CompletedProcess, code: int, *needles: str, summary: bool = False) -> str:
    """Exactly one ``Error:`` line (containing every needle) and exit `code`; returns the line.

    With `summary`, the command's report lines (`score` prints what it did) may stand beside it.
    """
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    if summary:
        lines = [line for line in lines if line.startswith("Error")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[-3000:]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def rows(db: Path) -> dict[str, dict]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return {r["path"]: dict(r) for r in conn.execute("SELECT * FROM videos")}
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
def _jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny baseline JPEG whose frame header (SOF0) claims `width` x `height`."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, format="JPEG", quality=50)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def make_huge_mjpeg(path: Path, side: int = 16000) -> Path:
    """A 1-frame MJPEG AVI whose headers say `side` x `side`, muxed without encoding (a few kB)."""
    import av

    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuvj420p"
        packet = av.Packet(_jpeg_claiming(side, side))
        packet.stream, packet.pts, packet.dts, packet.is_keyframe = stream, 0, 0, True
        out.mux(packet)
    return path


def make_audio_only(path: Path) -> Path:
    """One second of a 440 Hz tone in an MP4 with no video stream."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def make_bad_videos(folder: Path, good: Path) -> dict[str, Path]:
    """name -> path of each of `BAD_VIDEOS` in `folder` (named like videos, so nothing is skipped by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    paths = {name: folder / f"{name}.mp4" for name in BAD_VIDEOS}
    paths["huge_header"] = folder / "huge_header.avi"
    paths["zero_bytes"].write_bytes(b"")
    paths["random_bytes"].write_bytes(os.urandom(20_000))
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["text"].write_text("Meeting notes: the plan for the quarter, item by item.\n" * 60)
    make_audio_only(paths["audio_only"])
    paths["directory"].mkdir()
    paths["broken_link"].symlink_to(folder / "gone.mp4")
    make_huge_mjpeg(paths["huge_header"])
    return paths


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gauntlet")


@pytest.fixture(scope="module")
def good(work) -> Path:
    return make_index_video(work / "good.mp4", 12, height=48, width=64)


@pytest.fixture(scope="module")
def bad(work, good) -> dict[str, Path]:
    return make_bad_videos(work / "bad", good)


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    """A tiny untrained checkpoint (4-frame clips at 32 px) of the synthetic classes."""
    import torch

    from vidattn.config import Config
    from vidattn.data.synthetic import CLASSES
    from vidattn.engine.checkpoint import atomic_save
    from vidattn.models import create_model

    cfg = Config()
    cfg.data.clip_len, cfg.data.stride, cfg.data.size, cfg.data.crop_size = 4, 2, 32, 32
    torch.manual_seed(0)
    model = create_model(cfg.model.name, num_classes=len(CLASSES), attn=cfg.model.attn, head=cfg.model.head)
    path = work / "ckpt" / "tiny.pt"
    path.parent.mkdir()
    atomic_save(
        {
            "format": "vidattn-checkpoint/1",
            "model": model.state_dict(),
            "classes": list(CLASSES),
            "config": cfg.to_dict(),
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def results_db(work, good) -> Path:
    """A results database with one ok row."""
    db = work / "results.sqlite"
    proc = vidattn("score", good, "--out", db, "--workers", "0", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return db


# ------------------------------------------------------------------------------------------------
# Outputs that cannot be written
# ------------------------------------------------------------------------------------------------
def _mount_tmpfs(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True).returncode
        == 0
    )


@contextlib.contextmanager
def mounted_tmpfs(target: Path, options: str) -> Iterator[Path]:
    if not IS_ROOT:
        pytest.skip("a tmpfs needs root")
    if not _mount_tmpfs(target, options):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def read_only(tmp_path) -> Iterator[Path]:
    """An empty folder nobody can write in: a read-only tmpfs as root, a 0555 folder otherwise."""
    folder = tmp_path / "read_only"
    if IS_ROOT:
        with mounted_tmpfs(folder, "ro,size=64k"):
            yield folder
    else:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 128 kB tmpfs (root only): enough for a results database to start, not for 400 rows."""
    with mounted_tmpfs(tmp_path / "small_disk", "size=128k") as folder:
        yield folder


# ------------------------------------------------------------------------------------------------
# probe, keyframes, score over every bad video: one run each, every input named once, checked per kind
# ------------------------------------------------------------------------------------------------
def lines_naming(proc: subprocess.CompletedProcess, path: Path) -> list[str]:
    return [line for line in error_lines(proc.stderr) if f"{path}:" in line or line.endswith(str(path))]


@pytest.fixture(scope="module")
def probe_run(bad, good) -> subprocess.CompletedProcess:
    return vidattn("probe", good, *bad.values())


@pytest.fixture(scope="module")
def keyframes_run(bad, good, work) -> tuple[subprocess.CompletedProcess, Path]:
    out = work / "kf"
    return vidattn("keyframes", *bad.values(), good, "-k", "2", "--out", out), out


@pytest.fixture(scope="module")
def score_run(bad, good, work) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    db = work / "score" / "r.sqlite"
    proc = vidattn("score", good, *bad.values(), "--out", db, "--workers", "0", "--quiet")
    return proc, rows(db)


def test_probe_goes_on_past_bad_files(probe_run, bad, good):
    assert "Traceback" not in probe_run.stderr and probe_run.returncode == 1, probe_run.stderr
    assert all(line.startswith("Error: ") for line in error_lines(probe_run.stderr))
    assert len(error_lines(probe_run.stderr)) == len(bad)
    assert probe_run.stdout.splitlines()[1].startswith(f"{good}\t")  # the good file is still probed


@pytest.mark.parametrize("kind", BAD_VIDEOS)
def test_probe(kind, probe_run, bad):
    (line,) = lines_naming(probe_run, bad[kind])
    assert line.startswith(f"Error: {bad[kind]}: ")


def test_keyframes_goes_on_past_bad_files(keyframes_run, bad):
    proc, out = keyframes_run
    assert "Traceback" not in proc.stderr and proc.returncode == 1, proc.stderr
    assert all(line.startswith("Error: ") for line in error_lines(proc.stderr))
    assert len(error_lines(proc.stderr)) == len(bad)
    assert (out / "good" / "keyframes.json").is_file()  # the good file after the bad ones is done


@pytest.mark.parametrize("kind", BAD_VIDEOS)
def test_keyframes(kind, keyframes_run, bad):
    proc, out = keyframes_run
    (line,) = lines_naming(proc, bad[kind])
    assert line.startswith(f"Error: {bad[kind]}: ")


def test_score_goes_on_past_bad_files(score_run, bad, good):
    proc, got = score_run
    assert got[str(good)]["status"] == "ok"
    assert len(got) == len(bad)  # one row per file; the directory is scanned and holds none
    assert_one_error(proc, 1, "not found", str(bad["missing"]), summary=True)  # and exits 1 for a missing input


@pytest.mark.parametrize("kind", [k for k in BAD_VIDEOS if k != "directory"])
def test_score(kind, score_run, bad):
    _, got = score_run
    row = got[str(bad[kind])]
    assert row["status"] == "error" and row["error"], row
    if kind == "huge_header":
        assert "16000x16000" in row["error"]


def test_score_with_a_checkpoint_over_every_bad_video(bad, good, checkpoint, tmp_path):
    db = tmp_path / "r.sqlite"
    inputs = [good, *(p for k, p in bad.items() if k not in ("missing", "directory"))]
    proc = vidattn("score", *inputs, "--out", db, "--checkpoint", checkpoint, "--workers", "1", "--quiet")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    got = rows(db)
    assert len(got) == len(inputs) and got[str(good)]["top1_label"]
    assert all(got[str(p)]["status"] == "error" for p in inputs[1:])


# ------------------------------------------------------------------------------------------------
# track: one source per run
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", BAD_VIDEOS)
def test_track(kind, bad, tmp_path):
    out = tmp_path / "track"
    proc = vidattn("track", bad[kind], "--box", "2,2,16,16", "--out", out, "--device", "cpu")
    assert_one_error(proc, 2, str(bad[kind]))
    assert not (out / "track.json").exists()


def test_track_box_sticking_out_is_clipped_and_said(good, tmp_path):
    out = tmp_path / "track"
    proc = vidattn("track", good, "--box", "-5,0,20,20", "--out", out, "--device", "cpu")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    notes = [line for line in error_lines(proc.stderr) if "-5" in line]
    assert len(notes) == 1 and not notes[0].startswith("Error"), proc.stderr
    boxes = json.loads((out / "track.json").read_text())["targets"][0]["boxes"]
    assert boxes[0][:3] == [0, 0, 15] and min(b[0] for b in boxes) >= 0


def test_track_box_too_small_names_the_minimum_size(good, tmp_path):
    proc = vidattn("track", good, "--box", "0,0,1,1", "--out", tmp_path / "track", "--device", "cpu")
    assert_one_error(proc, 2, "minimum")


# ------------------------------------------------------------------------------------------------
# eval, train: bad checkpoints and configs
# ------------------------------------------------------------------------------------------------
BAD_FILES = ("zero_bytes", "random_bytes", "truncated", "text", "directory", "broken_link", "missing")


def bad_file(kind: str, folder: Path, real: Path | None = None) -> Path:
    """A bad stand-in for a file argument (`real` is truncated for ``truncated``)."""
    path = folder / f"{kind}{real.suffix if real else '.bin'}"
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "random_bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        data = real.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("not what you think it is\n" * 20)
    elif kind == "directory":
        path.mkdir()
    elif kind == "broken_link":
        path.symlink_to(folder / "gone")
    return path


@pytest.mark.parametrize("kind", BAD_FILES)
def test_eval_bad_checkpoint(kind, checkpoint, tmp_path):
    path = bad_file(kind, tmp_path, checkpoint)
    assert_one_error(vidattn("eval", path, "--out", tmp_path / "eval"), 2, path.name)
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("kind", BAD_FILES)
def test_train_bad_config(kind, tmp_path):
    real = tmp_path / "real.yaml"
    real.write_text("data:\n  clip_len: 8\n  size: 32\n")  # its first half ends inside a key
    path = bad_file(kind, tmp_path / "cfg", real)
    if kind == "zero_bytes":  # an empty YAML file is an empty mapping: the defaults, not an error
        proc = vidattn("train", "-c", path, "--dry-run")
        assert proc.returncode == 0 and "clip_len" in proc.stdout, proc.stderr
        return
    assert_one_error(vidattn("train", "-c", path, "--dry-run"), 2, path.name)


@pytest.mark.parametrize("key", ["train.batch_size=0", "data.clip_len=0", "optim.lr=-1", "train.epochs=0"])
def test_train_dry_run_refuses_out_of_range(key):
    assert_one_error(vidattn("train", "--dry-run", "-o", key), 2, key.split("=")[0])


@pytest.mark.slow
def test_tiny_train_and_eval_skip_every_bad_video(work, bad, tmp_path):
    """One epoch on a tiny dataset with every bad video in it: it trains, and records each bad file."""
    from vidattn.data.synthetic import EVENT_CLASSES, generate_dataset

    root = generate_dataset(tmp_path / "data", per_class=1, val_per_class=1, seed=0, classes=EVENT_CLASSES)
    planted = []
    for split in ("train", "val"):
        for kind, path in bad.items():
            if kind in ("missing", "directory"):
                continue
            target = root / split / "appear" / f"bad_{kind}{path.suffix}"
            if path.is_symlink():
                target.symlink_to(os.readlink(path))
            else:
                shutil.copy(path, target)
            planted.append(str(target))
    run = tmp_path / "run"
    tiny = ["data.clip_len=4", "data.size=32", "data.crop_size=32", "data.num_workers=0", "train.batch_size=8"]
    tiny += ["train.progress=false", "train.threads=1"]
    args = [a for kv in tiny for a in ("-o", kv)]
    # 13 training videos in one batch of 8 and one of 5: none dropped, so every bad one is met
    proc = vidattn("train", "--data-root", root, "--out", run, "--epochs", "1", *args, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    recorded = {json.loads(line)["path"] for line in (run / "errors.jsonl").read_text().splitlines()}
    assert {p for p in planted if "/train/" in p} <= recorded
    assert (run / "checkpoints" / "last.pt").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) == 1
    proc = vidattn("eval", run / "checkpoints" / "last.pt", "--json", timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["num_videos"] == 6 and result["errors"] == len([p for p in planted if "/val/" in p])


# ------------------------------------------------------------------------------------------------
# export: bad databases
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", BAD_FILES)
def test_export_bad_database(kind, results_db, tmp_path):
    path = bad_file(kind, tmp_path / "dbs", results_db)
    out = tmp_path / "all.csv"
    assert_one_error(vidattn("export", results_db, path, out), 2, path.name)
    assert not out.exists() and not list(tmp_path.glob(".all.csv.*"))


# ------------------------------------------------------------------------------------------------
# Read-only output, every command that writes
# ------------------------------------------------------------------------------------------------
def _read_only_cases(good: Path, checkpoint: Path, results_db: Path, out: Path) -> dict[str, list]:
    return {
        "synth": ["synth", out / "data", "--per-class", "1", "--val-per-class", "1"],
        "train": ["train", "--out", out / "run", "--epochs", "1", "-o", "data.num_workers=0"],
        "eval": ["eval", checkpoint, "--data-root", good.parent / "bad", "--out", out / "eval"],
        "keyframes": ["keyframes", good, "--out", out / "kf"],
        "track": ["track", good, "--box", "2,2,16,16", "--out", out / "track", "--device", "cpu"],
        "score": ["score", good, "--out", out / "r.sqlite", "--workers", "0", "--quiet"],
        "export": ["export", results_db, out / "all.csv"],
    }


@pytest.mark.parametrize(
    "command",
    [
        "synth",
        "train",
        "eval",
        "keyframes",
        "track",
        "score",
        "export",
    ],
)
def test_read_only_output(command, read_only, good, bad, checkpoint, results_db):
    args = _read_only_cases(good, checkpoint, results_db, read_only)[command]
    proc = vidattn(*args)
    line = assert_one_error(proc, 2, str(read_only))
    assert "Read-only file system" in line or "Permission denied" in line
    assert list(read_only.iterdir()) == []  # nothing half-written left behind


# ------------------------------------------------------------------------------------------------
# Full disk: score mid-run, export
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def many_inputs(work, good) -> Path:
    """A list file: the good video and 400 missing files with long names (small, fast error rows)."""
    listing = work / "many.txt"
    names = [str(good)] + [f"/nonexistent/{'x' * 180}-{i:03d}.mp4" for i in range(400)]
    listing.write_text("\n".join(names) + "\n")
    return listing


def test_score_disk_full_mid_run_keeps_the_rows_written(many_inputs, small_disk, tmp_path):
    db = small_disk / "r.sqlite"
    proc = vidattn("score", many_inputs, "--out", db, "--workers", "0", "--quiet")
    assert_one_error(proc, 2, str(db), "full")
    partial = rows(db)
    assert 0 < len(partial) < 401 and all(r["status"] in ("ok", "error") for r in partial.values())
    # Move the database (and its WAL) to a disk with room: the rerun skips what was written and does the rest.
    roomy = tmp_path / "roomy.sqlite"
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    dst = sqlite3.connect(roomy)
    src.backup(dst)
    src.close()
    dst.close()
    proc = vidattn("score", many_inputs, "--out", roomy, "--workers", "0", "--quiet")
    assert proc.returncode == 1 and f"{len(partial)} already done" in proc.stderr, proc.stderr  # 1: missing inputs
    assert len(rows(roomy)) == 401


def test_export_disk_full_keeps_the_previous_export(many_inputs, small_disk, work):
    db = work / "many.sqlite"
    if not db.exists():
        vidattn("score", many_inputs, "--out", db, "--workers", "0", "--quiet")
    out = small_disk / "all.jsonl"  # JSON lines repeat the column names: 401 rows need ~250 kB
    out.write_text("previous export\n")
    proc = vidattn("export", db, out)
    assert_one_error(proc, 2, str(out), "No space left on device")
    assert out.read_text() == "previous export\n"
    assert [p.name for p in small_disk.iterdir()] == ["all.jsonl"]  # no temporary file left
