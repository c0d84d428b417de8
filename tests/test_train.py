"""Training and evaluation: run directory contract, resume, DDP, bad inputs, eval reproduction."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from vidattn.config import load_config
from vidattn.data import load_annotations
from vidattn.data.synthetic import EVENT_CLASSES, generate_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.clip_len=8",
    "data.size=32",
    "data.crop_size=32",
    "data.num_workers=0",
    "train.batch_size=4",
    "train.eval_batch_size=8",
    "train.progress=false",
    "train.threads=1",
]


def vidattn(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vidattn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def overrides(*extra: str) -> list[str]:
    out = []
    for item in [*TINY, *extra]:
        out += ["-o", item]
    return out


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, per_class=3, val_per_class=2, seed=0, classes=EVENT_CLASSES)  # 18 + 12 videos
    return root


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_error_line(res: subprocess.CompletedProcess) -> str:
    """The single stderr line of a command that failed as a user error (non-zero exit, no traceback)."""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode != 0, res.stderr
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_train_writes_run_directory_and_eval_reproduces(synth_root, tmp_path):
    run = tmp_path / "run"
    res = vidattn("train", "--data-root", str(synth_root), "--out", str(run), "--epochs", "2", *overrides())
    assert res.returncode == 0, res.stderr
    assert f"run directory: {run}" in res.stderr
    for name in ("config.yaml", "classes.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert (run / "errors.jsonl").read_text() == ""  # exists and is empty: nothing failed
    # It says which config it uses and what it derived from the data (stride from the 12 fps videos).
    assert "config: the embedded default" in res.stdout and "data.stride=3" in res.stderr
    assert "optim.lr=0.006 (training from scratch)" in res.stderr
    assert "model.input=diff (training from scratch)" in res.stderr
    assert "model.head=peak (training from scratch)" in res.stderr
    assert "data.hue=1 (model.input=diff" in res.stderr
    assert list((run / "tb").glob("events.out.tfevents.*"))
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert metrics[0]["clips"] == 18  # 18 videos at batch 4: the last, partial batch trains too
    for key in ("loss", "train_top1", "val_top1", "clips_per_s", "data_s", "compute_s", "lr"):
        assert key in metrics[-1]
    assert json.loads((run / "classes.json").read_text())[0] == "appear"
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config", "classes"} <= set(ckpt)

    # Validation after each epoch reads one view; every 3rd frame is read, so evaluation derives 3 views shifted
    # a frame apart, and the run ends by evaluating best.pt on them as `vidattn eval` does.
    assert "data.test_clips=3 (shifted a frame apart, they see every frame" in res.stderr
    # ... and on each view's mirror image (data.test_flip=auto: every class that names a side has its mirror).
    said = "data.test_flip=auto -> best.pt is also evaluated on each view's mirror image; a flipped clip changes class"
    assert f"{said}: move_left <-> move_right" in res.stderr
    tested_on = "best.pt on 12 validation videos, 3 views each (data.test_clips) and their mirror images: top-1"
    assert tested_on in res.stderr
    assert ckpt["config"]["data"]["test_clips"] == 3 and ckpt["config"]["train"]["val_clips"] == 1
    tested = json.loads((run / "eval-val" / "metrics.json").read_text())
    res = vidattn("eval", str(run / "checkpoints" / "best.pt"), "--json")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert set(result) >= {"top1", "top5", "num_videos", "per_class"}
    assert result["num_videos"] == 12
    assert result["top1"] == pytest.approx(tested["top1"], abs=1e-6)
    assert all(v is None or 0.0 <= v <= 1.0 for v in result["per_class"].values())
    assert (run / "eval-val" / "confusion.png").is_file()

    # With the views of validation, `vidattn eval` on the last checkpoint reproduces the last epoch's val_top1.
    one = tmp_path / "one"
    views = overrides("data.test_clips=1", "data.test_flip=false")
    res = vidattn("train", "--data-root", str(synth_root), "--out", str(one), "--epochs", "1", *views)
    assert res.returncode == 0, res.stderr
    assert "data.test_clips" not in res.stderr and "data.test_flip" not in res.stderr
    assert not (one / "eval-val").exists()  # nothing to add to validation
    res = vidattn("eval", str(one / "checkpoints" / "last.pt"), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["top1"] == pytest.approx(read_metrics(one)[-1]["val_top1"], abs=1e-6)


def test_bad_config_key_is_one_line(tmp_path):
    res = vidattn("train", "--out", str(tmp_path / "r"), "-o", "optim.lrr=0.1")
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "optim.lrr" in lines[0] and "optim.lr" in lines[0]

    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  clip_lenn: 8\n")
    res = vidattn("train", "-c", str(bad), "--dry-run")
    assert res.returncode != 0 and "Traceback" not in res.stderr and "data.clip_len" in res.stderr


def test_corrupt_video_is_skipped_and_recorded(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    bad = root / "train" / "appear" / "broken.mp4"
    bad.write_bytes(os.urandom(3000))
    truncated = root / "train" / "move_up" / "truncated.mp4"
    data = (root / "train" / "move_up" / "move_up_0000.mp4").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    run = tmp_path / "run"
    res = vidattn("train", "--data-root", str(root), "--out", str(run), "--epochs", "2", *overrides())
    assert res.returncode == 0, res.stderr
    assert len(read_metrics(run)) == 2
    errors = [json.loads(line) for line in (run / "errors.jsonl").read_text().splitlines()]
    paths = {e["path"] for e in errors}
    assert str(bad) in paths and str(truncated) in paths
    assert all(e["error"] for e in errors)
    assert "skipped" in res.stderr


def test_resume_after_kill_matches_uninterrupted(synth_root, tmp_path):
    args = ["--data-root", str(synth_root), "--epochs", "3", *overrides("train.deterministic=true")]
    full = tmp_path / "full"
    res = vidattn("train", "--out", str(full), *args)
    assert res.returncode == 0, res.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidattn.cli", "train", "--out", str(killed), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    metrics = killed / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            time.sleep(0.3)  # now inside epoch 2
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_metrics(killed))
    assert done < 3
    res = vidattn("train", "--out", str(killed), "--resume", *args)
    assert res.returncode == 0, res.stderr
    a, b = read_metrics(full), read_metrics(killed)
    assert [m["epoch"] for m in b] == [1, 2, 3]
    for key in ("loss", "train_top1", "val_top1"):
        assert b[-1][key] == pytest.approx(a[-1][key], abs=1e-6), key


def test_nan_loss_stops_with_clear_message(synth_root, tmp_path):
    run = tmp_path / "run"
    res = vidattn(
        "train",
        "--data-root",
        str(synth_root),
        "--out",
        str(run),
        "--epochs",
        "3",
        *overrides("optim.lr=1e12", "optim.clip_grad=null", "optim.warmup_epochs=0"),
    )
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "loss became" in res.stderr


@pytest.mark.slow
def test_torchrun_two_processes_gloo(synth_root, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "vidattn.cli",
        "train",
        "--data-root",
        str(synth_root),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--device",
        "cpu",
        *overrides(),
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run / "checkpoints" / "last.pt").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    metrics = read_metrics(run)
    assert len(metrics) == 1
    # Both ranks trained: 18 videos split 9 per rank, full batches of 4 on each -> 2 x 8 clips summed over ranks.
    assert metrics[0]["clips"] == 2 * (9 // 4) * 4


def test_ucf101_config_parses_fake_tree(tmp_path):
    root = tmp_path / "UCF101"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    classes = ["ApplyEyeMakeup", "Basketball", "YoYo"]
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train, test = [], []
    for c in classes:
        (root / c).mkdir()
        for g in (1, 8):
            name = f"{c}/v_{c}_g{g:02d}_c01.avi"
            (root / name).write_bytes(b"")
            (train if g == 8 else test).append(name)
    (lists / "trainlist01.txt").write_text("".join(f"{n} {classes.index(n.split('/')[0]) + 1}\n" for n in train))
    (lists / "testlist01.txt").write_text("".join(f"{n}\n" for n in test))
    cfg = load_config(REPO / "configs" / "ucf101.yaml", [f"data.root={root}"])
    assert cfg.data.format == "ucf101" and cfg.data.split_id == 1
    records, found = load_annotations(cfg.data.root, "train", fmt=cfg.data.format, split_id=cfg.data.split_id)
    assert found == classes
    assert sorted((Path(r.path).name, r.label) for r in records) == sorted(
        (Path(n).name, classes.index(n.split("/")[0])) for n in train
    )
    val, _ = load_annotations(cfg.data.root, "val", fmt=cfg.data.format, split_id=1, classes=found)
    assert len(val) == 3 and {r.label for r in val} == {0, 1, 2}


def test_resume_reconciles_metrics_lines(tmp_path):
    """A kill between the checkpoint and its metrics line, or in the middle of a line, loses nothing."""
    from vidattn.engine.train import _reconcile_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": 1.0}\n{"epoch": 3, "loss": 0.5}\n{"epoch": 2, "lo')
    _reconcile_metrics(path, {"epoch": 2, "loss": 0.7}, epochs_done=2)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"epoch": 1, "loss": 1.0},
        {"epoch": 2, "loss": 0.7},
    ]
    _reconcile_metrics(path, {"epoch": 2, "loss": 0.7}, epochs_done=2)  # nothing doubled
    assert len(path.read_text().splitlines()) == 2


def test_resume_continues_the_run_as_it_was_configured(synth_root, tmp_path, make_read_only):
    """`vidattn train --out RUN --resume`, the README's form, takes the run's config (issue 13).

    It used to overwrite RUN/config.yaml with the built-in default, generate new synthetic data into
    RUN/data and continue the checkpoint on those videos.
    """
    run = tmp_path / "run"
    first = ["--data-root", str(synth_root), "--out", str(run), *overrides("data.clip_len=4")]
    res = vidattn("train", *first, "--epochs", "1")
    assert res.returncode == 0, res.stderr
    saved = (run / "config.yaml").read_text()

    # A resume that would change the data or the model refuses with one line and leaves the run as it was.
    for flags, key in (
        (["-o", "model.attn=none"], "model.attn"),
        (["--data-root", str(tmp_path)], "data.root"),
        (["-o", "data.clip_len=8", "--dry-run"], "data.clip_len"),
    ):
        line = one_error_line(vidattn("train", "--out", str(run), "--resume", *flags))
        assert key in line and str(run) in line, line
    assert (run / "config.yaml").read_text() == saved
    assert len(read_metrics(run)) == 1

    # The README's form, changing only what is safe: the saved config, the difference printed, no new data.
    res = vidattn("train", "--out", str(run), "--resume", "--epochs", "2")
    assert res.returncode == 0, res.stderr
    assert "train.epochs 1 -> 2" in res.stderr
    assert not (run / "data").exists()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["clip_len"] == 4 and config["data"]["root"] == str(synth_root.resolve())
    assert config["train"]["epochs"] == 2
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]

    # Giving the first command's flags again (a relative --data-root included) only repeats the config.
    rel_root = os.path.relpath(synth_root, REPO)
    res = vidattn("train", *first, "--data-root", rel_root, "--epochs", "2", "--resume")
    assert res.returncode == 0, res.stderr
    assert "resume:" not in res.stderr
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]

    # Resuming a run whose folder became read-only: one line naming it, nothing lost.
    make_read_only(run)
    line = one_error_line(vidattn("train", "--out", str(run), "--resume", "--epochs", "3"))
    assert line.startswith(f"Error: cannot write {run}"), line
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize(
    "override",
    ["train.batch_size=0", "train.batch_size=-1", "data.clip_len=0", "optim.lr=-1", "train.epochs=0", "train.amp=fp8"],
)
def test_out_of_range_value_is_one_line(tmp_path, override):
    """Out-of-range numbers are refused when the config is resolved, --dry-run included (issue 13)."""
    key = override.split("=")[0]
    for extra in (["--dry-run"], []):
        line = one_error_line(vidattn("train", "--out", str(tmp_path / "r"), "-o", override, *extra))
        assert line.startswith("Error:") and key in line, line
    assert not (tmp_path / "r").exists()


def test_yaml_words_that_read_as_booleans_keep_their_meaning():
    """YAML 1.1 reads a bare `off` as false: `train.amp=off` still means off; `data.flip` takes true/false/auto."""
    from vidattn.config import load_config
    from vidattn.errors import ConfigError

    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    assert load_config(None, ["data.flip=auto"]).data.flip == "auto"
    assert load_config(None, ["data.flip=false"]).data.flip is False
    assert load_config(None, ["data.test_flip=true"]).data.test_flip is True
    with pytest.raises(ConfigError, match="data.flip must be true, false or auto"):
        load_config(None, ["data.flip=sometimes"])
    with pytest.raises(ConfigError, match="data.test_flip must be true, false or auto"):
        load_config(None, ["data.test_flip=2"])


def test_a_mirror_view_counts_for_the_mirror_class():
    """data.test_flip: a view's mirror image is read through the mirror classes, so a model that tells left
    from right keeps its answer on the flipped view, while a flip that keeps every class would contradict it."""
    from vidattn.engine.modeling import view_probs

    class Side(torch.nn.Module):  # logits: bright on the left, bright on the right, neither
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            half = x.shape[-1] // 2
            left, right = x[..., :half].mean((1, 2, 3, 4)), x[..., half:].mean((1, 2, 3, 4))
            return torch.stack([left - right, right - left, torch.zeros_like(left)], 1) * 10

    x = torch.zeros(2, 3, 1, 4, 4)  # one video, two views, both bright on the left
    x[..., :2] = 1.0
    plain = view_probs(Side(), x, views=2)
    assert plain.shape == (1, 3) and plain[0].argmax() == 0
    assert torch.allclose(view_probs(Side(), x, views=2, mirror=[1, 0, 2]), plain)
    same = view_probs(Side(), x, views=2, mirror=[0, 1, 2])
    assert same[0, 0] == pytest.approx(same[0, 1]) and same.sum().item() == pytest.approx(1.0)


def test_epochs_zero_flag_and_key_are_both_refused():
    res = vidattn("train", "--epochs", "0", "--dry-run")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--epochs" in res.stderr
    assert "train.epochs must be >= 1" in one_error_line(vidattn("train", "-o", "train.epochs=0", "--dry-run"))


def test_config_validation_rules():
    from vidattn.config import Config, apply_overrides, load_config
    from vidattn.errors import ConfigError

    assert load_config(None) == Config()
    for bad, message in (
        ("train.eval_batch_size=null", "train.eval_batch_size needs a value"),
        ("data.scale=[0.9,0.5]", "data.scale must be"),
        ("data.test_crops=2", "data.test_crops must be one of 1, 3"),
        ("optim.lr=.nan", "optim.lr must be > 0"),
        ("optim.ema=1.0", "optim.ema must be in (0, 1)"),
        ("train.device=gpu", "train.device must be"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config(None, [bad])
    # Optional keys accept null; a run's config as the base changes only the keys named.
    cfg = load_config(None, ["optim.clip_grad=null", "train.threads=null", "optim.ema=0.99"])
    assert cfg.optim.clip_grad is None and cfg.optim.ema == 0.99
    base = apply_overrides(Config(), ["data.clip_len=4"])
    assert load_config(None, ["train.epochs=3"], base=base).data.clip_len == 4
    assert base.train.epochs == Config().train.epochs  # the base itself is not modified


def test_batch_size_follows_the_number_of_training_videos():
    from vidattn.engine.train import derive_batch_size

    # 16, or fewer so that an epoch has at least 20 steps, never under 4
    assert [derive_batch_size(n) for n in (0, 45, 100, 160, 320, 560, 10_000)] == [4, 4, 5, 8, 16, 16, 16]


def test_a_run_from_before_hue_jitter_resumes_without_it(synth_root, tmp_path):
    run = tmp_path / "run"
    # (the batch size left to the data too: 18 videos give the smallest batch, 4)
    res = vidattn(
        "train", "--data-root", str(synth_root), "--out", str(run), "--epochs", "1", *overrides("train.batch_size=null")
    )
    assert res.returncode == 0, res.stderr
    assert "train.batch_size=4 (18 training videos per process)" in res.stderr
    last = run / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["config"]["data"]["hue"] == 1.0  # derived: the model sees differences
    del ckpt["config"]["data"]["hue"]  # what a checkpoint written before data.hue holds
    torch.save(ckpt, last)
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["data"]["hue"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    res = vidattn("train", "--out", str(run), "--resume", "--epochs", "2")
    assert res.returncode == 0, res.stderr
    assert "resume: data.hue" not in res.stderr and [m["epoch"] for m in read_metrics(run)] == [1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["hue"] == 0.0  # it trained without, and goes on so


def test_read_only_output_is_one_line(synth_root, tmp_path, make_read_only):
    """synth, train and eval into a read-only folder: one `Error:` line naming the path (issue 13)."""
    from vidattn.config import load_config
    from vidattn.data.synthetic import CLASSES
    from vidattn.engine.checkpoint import FORMAT, atomic_save
    from vidattn.models import create_model

    ro = tmp_path / "ro"
    cfg = load_config(None, [*TINY, f"data.root={synth_root}"])
    model = create_model(cfg.model.name, num_classes=len(CLASSES), attn=cfg.model.attn, head=cfg.model.head)
    ckpt = ro / "checkpoints" / "last.pt"
    atomic_save(
        {"format": FORMAT, "model": model.state_dict(), "classes": list(CLASSES), "config": cfg.to_dict()}, ckpt
    )
    before = sorted(p.relative_to(ro) for p in ro.rglob("*"))
    make_read_only(ro)

    for args, path in (
        (["synth", str(ro / "new"), "--per-class", "1", "--val-per-class", "1"], ro / "new"),
        (["synth", str(ro), "--per-class", "1", "--val-per-class", "1"], ro),
        (["train", "--data-root", str(synth_root), "--out", str(ro / "run"), *overrides()], ro / "run"),
        (["eval", str(ckpt)], ro / "eval-val"),
        (["eval", str(ckpt), "--out", str(ro / "ev")], ro / "ev"),
    ):
        line = one_error_line(vidattn(*args))
        assert line.startswith(f"Error: cannot write {path}: "), (args[0], line)
    assert sorted(p.relative_to(ro) for p in ro.rglob("*")) == before


def test_model_learns_a_tiny_set(tmp_path):
    """Training works, not just runs: the loss falls and the model beats chance on the videos it saw."""
    from vidattn.engine.evaluate import run_eval
    from vidattn.engine.train import train

    root = generate_dataset(
        tmp_path / "data", per_class=4, val_per_class=1, seed=0, classes=("move_left", "move_right")
    )
    # 20 epochs of 2 steps: after 5, BatchNorm's running variance of the frame differences (model.input=diff,
    # the default from scratch) is still twice what it settles at, and eval mode scored chance; with the peak head
    # (the default from scratch) eval mode still scored chance after 10 (train mode 0.875), 0.875 after 20.
    tiny = [*TINY, "data.clip_len=16", "optim.lr=0.02", "train.epochs=20", f"data.root={root}"]
    last = train(load_config(None, tiny), tmp_path / "run")
    metrics = read_metrics(tmp_path / "run")
    assert len(metrics) == 20 and {k: last[k] for k in metrics[-1]} == metrics[-1]
    assert last["test_clips"] == 3 and 0.0 <= last["test_top1"] <= 1.0  # best.pt on the derived views
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    seen = run_eval(tmp_path / "run" / "checkpoints" / "last.pt", split="train", progress=False)
    assert seen["num_videos"] == 8 and seen["top1"] > 0.5  # two classes: chance is 0.5


def test_checkpoint_gives_back_its_config_everywhere(synth_root, tmp_path):
    """Loading a checkpoint gives its Config; eval, key frames and scoring read size and AMP from it alike."""
    from vidattn.config import Config
    from vidattn.data.transforms import mirror_classes
    from vidattn.engine.checkpoint import FORMAT, PREDATED_DATA, atomic_save, load_model
    from vidattn.engine.evaluate import run_eval
    from vidattn.engine.modeling import amp_mode, build_model
    from vidattn.keyframes.model import KeyframeModel
    from vidattn.scoring.model import load_classifier

    cfg = load_config(None, [*TINY, "data.clip_len=4", "train.amp=bf16", f"data.root={synth_root}"])
    classes = load_annotations(synth_root, "train")[1]
    config = cfg.to_dict()
    del config["data"]["size"]  # written before `size` existed: the value of that time, everywhere
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    atomic_save({"format": FORMAT, "model": build_model(cfg, len(classes)).state_dict(), "classes": classes,
                 "config": config}, path)  # fmt: skip

    cpu = torch.device("cpu")
    _, loaded_classes, loaded = load_model(path, cpu)
    assert isinstance(loaded, Config) and loaded_classes == classes
    assert loaded.data.size == PREDATED_DATA["size"] and loaded.data.clip_len == 4
    assert loaded.model.input == "rgb"  # written before model.input existed: its models saw the frames
    assert KeyframeModel.load(path, cpu).size == loaded.data.size
    assert load_classifier(path, cpu, topk=3).data.size == loaded.data.size
    # data.test_flip (auto; not in this config either) gives eval and scoring the same mirror views.
    assert load_classifier(path, cpu).mirror == mirror_classes(classes)[0] != list(range(len(classes)))
    # train.amp is honoured by eval, key frames and scoring (bf16 runs on the CPU too); auto means off on a CPU.
    assert amp_mode("auto", cpu) == "off" and amp_mode("bf16", cpu) == "bf16"
    assert KeyframeModel.load(path, cpu).amp == "bf16"
    result = run_eval(path, progress=False)
    assert result["amp"] == "bf16" and result["num_videos"] == 12
    assert result["views"] == {"clips": 1, "crops": 1, "flip": True}
