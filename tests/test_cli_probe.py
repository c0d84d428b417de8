"""`vidattn probe`: a table row or JSON object per good file, one error line per bad file, exit 1, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vidattn import __version__


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vidattn.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def bad_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "bad clip é.mp4"
    path.write_text("not a video")
    return path


def test_probe_subprocess_bad_file_among_good_ones(index_videos, bad_video, tmp_path):
    """The real console entry point: errors on stderr (one line each, nothing from the decoders), exit 1."""
    missing = tmp_path / "missing.mp4"
    good = [str(index_videos["h264.mp4"]), str(index_videos["anim.gif"])]
    result = run_cli("probe", good[0], str(bad_video), str(missing), good[1])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    err = result.stderr.strip().splitlines()
    assert len(err) == 2, err
    assert err[0].startswith(f"Error: {bad_video}: ") and "cannot open" in err[0]
    assert err[1] == f"Error: {missing}: no such file"
    lines = result.stdout.strip().splitlines()
    header = lines[0].split("\t")
    assert header[:3] == ["path", "container", "codec"] and "num_frames" in header and "backend" in header
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert [r["path"] for r in rows] == good  # the others are still printed
    assert rows[0]["codec"] == "h264" and rows[0]["num_frames"] == "60" and rows[0]["width"] == "96"
    assert rows[1]["codec"] == "gif" and rows[1]["num_frames"] == "30"


def test_version_and_help():
    result = run_cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout
    result = run_cli("probe", "--help")
    assert result.returncode == 0 and "--json" in result.stdout


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """`vidattn.cli.main` in this process (no interpreter start-up per call)."""
    from vidattn.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_probe_json(index_videos, capsys):
    code, out, err = run_main(capsys, "probe", "--json", str(index_videos["h264.mp4"]), "--backend", "pyav")
    assert code == 0 and err == ""
    (line,) = out.strip().splitlines()
    info = json.loads(line)
    assert info["path"] == str(index_videos["h264.mp4"])
    assert {k: info[k] for k in ("container", "codec", "width", "height", "num_frames", "fps", "backend")} == {
        "container": "mov",
        "codec": "h264",
        "width": 96,
        "height": 64,
        "num_frames": 60,
        "fps": 25.0,
        "backend": "pyav",
    }
    assert info["duration_s"] == pytest.approx(2.4)


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_probe_json_with_bad_files(index_videos, bad_video, tmp_path, capsys, backend):
    missing = tmp_path / "missing.mp4"
    paths = [str(index_videos["h264.mp4"]), str(bad_video), str(missing), str(index_videos["short.mp4"])]
    code, out, err = run_main(capsys, "probe", "--json", "--backend", backend, *paths)
    assert code == 1
    objs = [json.loads(line) for line in out.strip().splitlines()]
    assert [o["path"] for o in objs] == paths
    assert "cannot open" in objs[1]["error"] and objs[2]["error"] == "no such file"
    assert objs[0]["num_frames"] == 60 and objs[3]["num_frames"] == 5
    assert err.strip().splitlines() == [f"Error: {bad_video}: {objs[1]['error']}", f"Error: {missing}: no such file"]


def test_probe_table_in_process(index_videos, bad_video, capsys):
    code, out, err = run_main(capsys, "probe", str(index_videos["one_frame.mp4"]), str(bad_video))
    assert code == 1
    assert "one_frame.mp4\tmov\th264\t96\t64\t1\t" in out
    assert err.startswith(f"Error: {bad_video}:") and "Traceback" not in err


def test_probe_needs_a_path(capsys):
    code, _, err = run_main(capsys, "probe")
    assert code == 2 and "Traceback" not in err


def test_probe_reports_a_directory_and_probes_the_rest(index_videos, tmp_path):
    good = str(index_videos["h264.mp4"])
    result = run_cli("probe", str(tmp_path), good)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"Error: {tmp_path}: is a directory, not a video file"]
    assert result.stdout.strip().splitlines()[1].startswith(f"{good}\t")
