"""The `vidattn` command line. Thin by design: parse, build a config, call one function.

Every error a user can cause is a `VidattnError` (or a `click.ClickException`) and ends
as one line on stderr with a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from vidattn import __version__
from vidattn.errors import VidattnError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vidattn")
def cli() -> None:
    """Video understanding with attention: train, key frames, tracking and archive scoring."""


# Commands are added below, one section each. Keep them thin: logic lives in vidattn.apps / vidattn.engine.
# An argument is checked in one layer: click types here, everything else in the app or the domain code.


# --- options shared by several commands -----------------------------------------------------------
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "decord", "pyav", "torchcodec")


def device_option(default: str | None = "auto", help: str = "Where the model runs (auto: a GPU when there is one)."):
    """``--device auto|cpu|cuda`` (`default` None: the command takes it from its config)."""
    return click.option(
        "--device", type=click.Choice(DEVICES), default=default, show_default=default is not None, help=help
    )


def backend_option():
    """``--backend auto|decord|pyav|torchcodec``: the video decoder (auto picks per file; torchcodec is an extra)."""
    return click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default="auto",
        show_default=True,
        help="Video decoder (auto: decord where it reads the file exactly, else PyAV).",
    )


# --- score / export -----------------------------------------------------------------------------
class ShardParam(click.ParamType):
    """``i/n``: this process scores shard i of n (0-based)."""

    name = "i/n"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from vidattn.scoring.inputs import parse_shard

        try:
            return parse_shard(value)
        except VidattnError as exc:
            self.fail(str(exc), param, ctx)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=str)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Results database (SQLite).")
# Model and key frames
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Classify with this checkpoint; without it the archive is catalogued (metadata, integrity).",
)
@click.option("--keyframes", type=click.IntRange(1), default=None, help="Also store K key frames per video.")
@click.option("--clips", type=click.IntRange(1), default=3, show_default=True, help="Uniform views per video.")
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True, help="Labels kept per video.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Videos per model call.")
@device_option()
# Decoding and scale-out
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Decoding processes.")
@click.option(
    "--shard",
    type=ShardParam(),
    default=None,
    help="Score shard i of n into OUT's .shard-i-of-n file [default: torchrun RANK/WORLD_SIZE].",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: decoding processes here; ray: decode tasks and model actors on a Ray cluster.",
)
@click.option(
    "--ray-address",
    default=None,
    help="Existing Ray cluster (host:port, ray://..., auto) [default: start a local one, token auth].",
)
@backend_option()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds a decode call may block before the video becomes an error row.",
)
@click.option("--retry-errors", is_flag=True, help="Score again the rows that are errors.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def score(
    inputs,
    out,
    checkpoint,
    keyframes,
    clips,
    topk,
    batch_size,
    device,
    workers,
    shard,
    engine,
    ray_address,
    backend,
    timeout,
    retry_errors,
    quiet,
) -> int:
    """Score every video of an archive into a SQLite database, one row per file; reruns resume.

    INPUT: video files, directories (recursive), quoted globs, list files (.txt/.lst or @FILE, one path
    per line), tar shards (members decoded from memory) and s3:// gs:// https:// URLs (prefixes listed
    recursively). Bad files get an error row, not a crash.

    \b
    Examples:
      vidattn score /data/archive --out results.sqlite --workers 8
      vidattn score "shards/*.tar" list.txt --checkpoint best.pt --out results.sqlite --keyframes 5
      vidattn score /data/archive --out results.sqlite --shard 0/4      # -> results.shard-0-of-4.sqlite
      torchrun --nproc_per_node 4 -m vidattn.cli score /data/archive --checkpoint best.pt --out r.sqlite
      vidattn score s3://bucket/clips/ --checkpoint best.pt --out r.sqlite --engine ray --ray-address auto
    """
    from vidattn.apps.score import run_score

    summary = run_score(
        inputs,
        out,
        checkpoint=checkpoint,
        workers=workers,
        keyframes=keyframes,
        shard=shard,
        batch_size=batch_size,
        clips=clips,
        topk=topk,
        device=device,
        backend=backend,
        timeout_s=timeout,
        retry_errors=retry_errors,
        progress=not quiet,
        log=lambda line: click.echo(line, err=True),
        engine=engine,
        ray_address=ray_address,
    )
    return 1 if summary.missing else 0  # every other input has its row; a missing one is likely a typo


@cli.command()
@click.argument("databases", nargs=-1, required=True, type=str)
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    default=None,
    help="Output format [default: from OUT's extension].",
)
def export(databases, out, fmt) -> int:
    """Merge results databases (files or quoted globs) into one Parquet, CSV or JSONL file, atomically.

    \b
    Examples:
      vidattn export results.sqlite results.parquet
      vidattn export "results.shard-*-of-4.sqlite" all.csv
    """
    from vidattn.apps.score import run_export

    run_export(databases, out, fmt=fmt, log=lambda line: click.echo(line, err=True))
    return 0


# --- keyframes ----------------------------------------------------------------------------------
@cli.command()
@click.argument("videos", nargs=-1, required=True, type=str)
# Scoring
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Score with a trained model's temporal attention (default: training-free scorer).",
)
@click.option(
    "--sample-fps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Frames per second scored [default: 4, or the model's training stride].",
)
@device_option(help="Where the --checkpoint model runs (the training-free scorer runs on the CPU).")
@backend_option()
@click.option(
    "--decoders",
    type=click.IntRange(1, 2),
    default=2,
    show_default=True,
    help="Decoders of the training-free pass: 2 reads a long file's two halves at once (same result).",
)
# Selection
@click.option("-k", "k", type=click.IntRange(1), default=None, help="Number of key frames [default: 8].")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Keep every frame scoring at least this (scores are in [0, 1]); no -k limit unless given.",
)
@click.option(
    "--min-gap",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Minimum seconds between two key frames.",
)
@click.option(
    "--min-shot",
    type=click.FloatRange(min=0),
    default=0.25,
    show_default=True,
    help="Minimum seconds between two cuts (a shorter shot joins the one before it).",
)
# Output
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write OUT/<video stem>/keyframes.json, JPEGs, contact sheet and score plot.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document per video on stdout.")
@click.option("--csv", "csv_out", is_flag=True, help="Also write OUT/<video stem>/scores.csv (needs --out).")
@click.option(
    "--image-size", type=click.IntRange(16), default=None, help="Short side of the key-frame JPEGs [default: native]."
)
def keyframes(
    videos,
    checkpoint,
    sample_fps,
    device,
    backend,
    decoders,
    k,
    threshold,
    min_gap,
    min_shot,
    out_dir,
    as_json,
    csv_out,
    image_size,
) -> int:
    """Score every frame of each video and pick the key frames.

    VIDEO may be a quoted glob ("clips/*.mp4"). A bad file gets one error line on stderr, the
    others go on, and the exit code is 1.

    \b
    Examples:
      vidattn keyframes talk.mp4 -k 6 --out kf/
      vidattn keyframes "clips/*.mp4" --json > keyframes.jsonl
      vidattn keyframes match.mp4 --checkpoint runs/x/checkpoints/best.pt --out kf/ --csv
    """
    import os

    from vidattn.keyframes.stream import KeyframeOptions, open_frames

    if k is None and threshold is None:
        k = 8
    opts = KeyframeOptions(
        k=k,
        threshold=threshold,
        sample_fps=sample_fps,
        min_gap_s=min_gap,
        min_shot_s=min_shot,
        image_size=image_size,
        device=device,
        backend=backend,
        decoders=decoders,
    )
    started = None
    if checkpoint is None and os.path.isfile(videos[0]):
        # Start decoding the first video now, in a child process: it overlaps with importing the app and
        # with scoring the frames already decoded, which a thread would not (PyAV holds the GIL).
        started = (videos[0], open_frames(videos[0], opts, process=True))
    from vidattn.apps.keyframes import run_keyframes

    failures = run_keyframes(
        videos,
        options=opts,
        checkpoint=checkpoint,
        out_dir=out_dir,
        as_json=as_json,
        csv_out=csv_out,
        out=click.echo,
        err=lambda line: click.echo(line, err=True),
        started=started,
    )
    return 1 if failures else 0


# --- explain ------------------------------------------------------------------------------------
@cli.command()
@click.argument("videos", nargs=-1, required=True, type=str)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="A `vidattn train` checkpoint (its model's attention is what is shown) [required].",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write OUT/<video stem>/explain.json, overlay.mp4, contact_sheet.png, attention.png, maps.npz.",
)
@click.option(
    "--layers",
    multiple=True,
    metavar="NAME",
    help="Map layers to show (module names, or a prefix such as layer2; repeatable) [default: all spatial ones].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document per video on stdout.")
# Prediction and pictures
@click.option("--clips", type=click.IntRange(1), default=3, show_default=True, help="Views of the prediction.")
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True, help="Labels in the prediction.")
@click.option("--top-frames", type=click.IntRange(1), default=6, show_default=True, help="Frames on the sheet.")
@device_option()
@backend_option()
def explain(videos, checkpoint, out_dir, layers, as_json, clips, topk, top_frames, device, backend) -> int:
    """Show where and when a trained model looks: prediction, temporal weights, attention maps, glimpses.

    VIDEO may be a quoted glob. A bad file gets one error line on stderr, the others go on, and the exit
    code is 1.

    \b
    Examples:
      vidattn explain clip.mp4 --checkpoint runs/x/checkpoints/best.pt --out explain/
      vidattn explain "clips/*.mp4" --checkpoint best.pt --layers layer1 --json > explain.jsonl
    """
    if checkpoint is None:  # checked here, not by click, so the user gets one line, not the usage text
        raise VidattnError("--checkpoint is required: explain shows a trained model's attention (see vidattn train)")
    from vidattn.apps.explain import run_explain
    from vidattn.explainer.video import ExplainOptions

    opts = ExplainOptions(
        layers=tuple(layers), clips=clips, topk=topk, top_frames=top_frames, device=device, backend=backend
    )
    failures = run_explain(
        videos,
        checkpoint=checkpoint,
        out_dir=out_dir,
        options=opts,
        as_json=as_json,
        out=click.echo,
        err=lambda line: click.echo(line, err=True),
    )
    return 1 if failures else 0


# --- track --------------------------------------------------------------------------------------
class BoxParam(click.ParamType):
    """``x,y,w,h`` in pixels (top-left origin) -> a 4-tuple of floats."""

    name = "x,y,w,h"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from vidattn.tracking.otb import BoxError, parse_box

        try:
            return parse_box(value)
        except BoxError as exc:
            self.fail(str(exc), param, ctx)


@cli.command()
@click.argument("source", metavar="VIDEO_OR_FRAME_DIR", type=click.Path(exists=True, path_type=str))
# Initial boxes: one --box per target, or a file
@click.option(
    "--box",
    "boxes",
    type=BoxParam(),
    multiple=True,
    help="Initial box of one target in the first frame, pixels, top-left origin (repeatable).",
)
@click.option(
    "--init",
    "init_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Initial boxes from an OTB groundtruth_rect.txt (first line) or a JSON file.",
)
# Outputs and device
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder for track.json and target_<id>.txt. Default: ./track_<stem>.",
)
@device_option(help="Where the tracker runs (auto: a GPU when there is one).")
@click.option("--render", is_flag=True, help="Also write DIR/overlay.mp4 with boxes, ids and confidences.")
def track(source, boxes, init_file, out_dir, device, render) -> None:
    """Track objects from their first-frame boxes through a video or an OTB frame folder.

    Writes DIR/track.json (one box, confidence and lost flag per frame per target) and DIR/target_<id>.txt
    (OTB format). Target ids are 0, 1, ... in the order the boxes are given.

    \b
    Examples:
      vidattn track clip.mp4 --box 120,80,40,60 --box 300,90,30,50 --out tracks --render
      vidattn track ../shared/tracking/Crossing --init ../shared/tracking/Crossing/groundtruth_rect.txt
    """
    from vidattn.apps.track import run_track

    res = run_track(
        source,
        boxes=list(boxes) or None,
        init_file=init_file,
        out_dir=out_dir,
        device=device,
        render=render,
        progress=True,
    )
    for note in res["notes"]:
        click.echo(f"note: {note}", err=True)
    fps = f"{res['tracking_fps']:.0f} fps" if res["tracking_fps"] else "1 frame"
    click.echo(
        f"tracked {len(res['targets'])} target(s) over {res['num_frames']} frames ({fps}, {res['device']})"
        f" -> {res['out_dir']}/track.json"
    )
    for t in res["targets"]:
        lost = sum(t["lost"])
        if lost:
            click.echo(f"  target {t['id']}: lost in {lost} of {res['num_frames']} frames")
    if res["overlay"]:
        click.echo(f"overlay: {res['overlay']}")


# --- synth / train / eval -----------------------------------------------------------------------
class FrameRangeParam(click.ParamType):
    """``N`` or ``MIN-MAX`` (inclusive) -> ``(min, max)``."""

    name = "N|MIN-MAX"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        parts = str(value).split("-")
        try:
            lo, hi = (int(parts[0]), int(parts[-1])) if 1 <= len(parts) <= 2 else (0, -1)
        except ValueError:
            lo, hi = 0, -1
        if not 1 <= lo <= hi:
            self.fail(f"{value!r} is not N or MIN-MAX with 1 <= MIN <= MAX", param, ctx)
        return lo, hi


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--per-class", type=click.IntRange(1), default=80, show_default=True, help="Training videos per class.")
@click.option("--val-per-class", type=click.IntRange(1), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
# How hard (the preset, then any of these)
@click.option(
    "--preset",
    type=click.Choice(["default", "hard"]),
    default="default",
    show_default=True,
    help="default: 24-160 frames, 6-12-frame event; hard: 96-384 frames, 6-frame event, 4 distractors, 2 decoys.",
)
@click.option("--frames", type=FrameRangeParam(), default=None, help="Video length in frames, e.g. 48-192.")
@click.option("--event-frames", type=FrameRangeParam(), default=None, help="Event length in frames, e.g. 6 or 6-12.")
@click.option("--distractors", type=click.IntRange(0), default=None, help="Jittering distractors per video.")
@click.option("--decoys", type=click.IntRange(0), default=None, help="Target look-alikes with a symmetric burst.")
@click.option("--size", type=click.IntRange(16), default=None, help="Frame height = width in pixels (default 32).")
@click.option(
    "--classes",
    default=None,
    metavar="A,B,...",
    help="Only these classes (default all seven), e.g. move_left,move_right,move_up,move_down.",
)
def synth(
    out_dir, per_class, val_per_class, seed, preset, frames, event_frames, distractors, decoys, size, classes
) -> None:
    """Generate the synthetic motion dataset (classes told apart only by frame order).

    Writes OUT_DIR/{train,val}/<class>/*.mp4 and OUT_DIR/{train,val}/events.csv.

    \b
    Examples:
      vidattn synth data/synth
      vidattn synth data/long --frames 48-192 --event-frames 6
      vidattn synth data/hard --preset hard
      vidattn synth data/dirs --frames 48-192 --event-frames 6 --per-class 40 --val-per-class 12 \\
          --classes move_left,move_right,move_up,move_down
    """
    import dataclasses

    from vidattn.data.synthetic import CLASSES, PRESETS, generate_dataset

    chosen = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes is not None else CLASSES
    unknown = [c for c in chosen if c not in CLASSES]
    if unknown or len(set(chosen)) < 2 or len(set(chosen)) != len(chosen):
        raise click.BadParameter(
            f"need two or more different classes out of {', '.join(CLASSES)}; got {classes!r}", param_hint="--classes"
        )

    changes: dict[str, Any] = {}
    if frames:
        changes.update(min_frames=frames[0], max_frames=frames[1])
    if event_frames:
        changes.update(min_event=event_frames[0], max_event=event_frames[1])
    if distractors is not None:
        changes["num_distractors"] = distractors
    if decoys is not None:
        changes["num_decoys"] = decoys
    if size is not None:
        changes.update(height=size, width=size)
    try:
        spec = dataclasses.replace(PRESETS[preset], **changes)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    out = generate_dataset(
        out_dir, per_class=per_class, val_per_class=val_per_class, seed=seed, spec=spec, classes=chosen
    )
    click.echo(f"wrote synthetic dataset to {out}")


@cli.command()
# What to train
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML experiment config (see configs/). Default: the embedded synthetic demo.",
)
@click.option("--data-root", type=click.Path(exists=True, file_okay=False), default=None, help="Dataset root.")
@click.option(
    "-o",
    "--override",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. -o optim.lr=0.01 (repeatable).",
)
# Where and how
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory. Default: runs/train-<timestamp>.",
)
@click.option("--epochs", type=click.IntRange(1), default=None)
@device_option(default=None, help="Where training runs [default: the config's train.device].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/last.pt.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
def train(config_path, data_root, overrides, out_dir, epochs, device, resume, dry_run) -> None:
    """Train an attention video model; with no arguments, the embedded synthetic default.

    \b
    Examples:
      vidattn train
      vidattn train -c configs/ucf101.yaml --data-root /data/UCF101 --out runs/ucf
      torchrun --nproc_per_node 2 -m vidattn.cli train --out runs/ddp
      vidattn train --out runs/ucf --resume
    """
    from vidattn.config import dump_config, load_config, resume_changes

    if resume and out_dir is None:
        raise click.UsageError("--resume needs --out RUN_DIR")
    flags = [f"data.root={data_root}"] if data_root else []
    flags += [f"train.epochs={epochs}"] if epochs else []
    flags += [f"train.device={device}"] if device else []
    base = None
    if resume:  # the run's own config is the base: flags and -o change only the keys they name
        from vidattn.engine.train import saved_config

        base = saved_config(out_dir)
    cfg = load_config(config_path, flags + list(overrides), base=base)
    if base is not None:
        resume_changes(base, cfg, run=out_dir)  # refused here too, so --dry-run says so; train() prints the changes
    if dry_run:
        click.echo(dump_config(cfg), nl=False)
        return
    # On stdout: stderr stays one line when the run fails.
    click.echo(f"config: {config_path or 'the embedded default (vidattn/config.py; configs/synthetic.yaml)'}")
    from vidattn.engine import train as engine

    engine.train(cfg, out_dir or engine.default_run_dir(), resume=resume)


@cli.command(name="eval")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Dataset root (default: the one recorded in the checkpoint).",
)
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@device_option()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where metrics.json, confusion.png and errors.jsonl go (default: RUN_DIR/eval-SPLIT).",
)
@click.option("--json", "as_json", is_flag=True, help="Print {top1, top5, num_videos, per_class} as JSON.")
def eval_cmd(checkpoint, data_root, split, device, out_dir, as_json) -> None:
    """Evaluate a checkpoint with multi-view testing: top-1/top-5, per-class accuracy, confusion matrix."""
    import json

    from vidattn.engine.evaluate import run_eval

    metrics = run_eval(
        checkpoint, data_root=data_root, split=split, device=device, out_dir=out_dir, progress=not as_json
    )
    if as_json:
        keys = ("top1", "top5", "num_videos", "per_class", "errors")
        click.echo(json.dumps({k: metrics[k] for k in keys}))
    else:
        click.echo(
            f"top1 {metrics['top1']:.4f}  top5 {metrics['top5']:.4f}  videos {metrics['num_videos']}  "
            f"unreadable {metrics['errors']}  -> {metrics['out_dir']}"
        )


# --- probe --------------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, required=True, type=str)  # checked per file by the app: one bad path is one line
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@backend_option()
def probe(paths: tuple[str, ...], as_json: bool, backend: str) -> int:
    """Print container, codec, size, frames, fps, duration and backend of each video.

    A bad file gets one error line on stderr; the others are still probed, and the exit code is 1.

    \b
    Examples:
      vidattn probe clip.mp4
      vidattn probe videos/*.mp4 --json
    """
    from vidattn.apps.probe import run_probe

    failures = run_probe(
        paths, as_json=as_json, backend=backend, out=click.echo, err=lambda line: click.echo(line, err=True)
    )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the click group and turn user errors into one line."""
    try:
        rv = cli.main(args=argv, prog_name="vidattn", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VidattnError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    # In non-standalone mode click returns the exit code of ctx.exit(); commands may return one too.
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
