"""Shared fixtures. Other test modules may append fixtures here; keep the existing ones.

Index videos are tiny (96x64, tens of frames) so the whole set is written in well under a second;
each frame encodes its own index (`vidattn.testing.index_frame`), so a test can check which frame a
decoder really returned with `read_index`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vidattn.data import available_backends
from vidattn.testing import make_index_video, shared_dir

#: Backends every decode test runs on (decord is skipped where decord2 has no wheel).
BACKENDS = available_backends()

# name -> (frames, make_index_video keyword arguments). B-frames make presentation order differ
# from decode order, which is what breaks naive frame counting and decord's HEVC seeking.
INDEX_VIDEOS = {
    "h264.mp4": (60, {"codec": "libx264", "gop": 12, "bframes": 2}),
    # gop 12 + 3 B-frames reproduces decord's HEVC random-access bug (neighbouring frames).
    "hevc.mp4": (60, {"codec": "libx265", "gop": 12, "bframes": 3}),
    "mpeg4.avi": (60, {"codec": "mpeg4", "gop": 12, "bframes": 2}),
    "anim.gif": (30, {"codec": "gif", "gop": None}),
    "h264.mkv": (40, {"codec": "libx264", "gop": 10, "bframes": 2}),
    "one_frame.mp4": (1, {"codec": "libx264"}),
    "short.mp4": (5, {"codec": "libx264", "bframes": 2}),
    # Square frames: a centre crop at the short side keeps the whole index band (dataset tests).
    "square.mp4": (48, {"codec": "libx264", "gop": 12, "bframes": 2, "width": 96, "height": 96}),
}


@pytest.fixture(scope="session")
def index_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> path of small index-encoded videos (see `INDEX_VIDEOS`), written once per session."""
    root = tmp_path_factory.mktemp("index_videos")
    out = {}
    for name, (frames, kwargs) in INDEX_VIDEOS.items():
        out[name] = make_index_video(root / name, frames, **kwargs)
    return out


@pytest.fixture(scope="session")
def index_video_frames() -> dict[str, int]:
    """name -> true frame count of each `index_videos` file."""
    return {name: frames for name, (frames, _) in INDEX_VIDEOS.items()}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each available decoder backend in turn."""
    return request.param


@pytest.fixture(scope="session")
def shared() -> Path:
    """The read-only shared folder (real-world test videos); skips the test when absent."""
    path = shared_dir()
    if path is None:
        pytest.skip("shared/ folder not present (set VIDATTN_SHARED)")
    return path


@pytest.fixture(scope="session")
def realvids(shared: Path) -> Path:
    """``shared/realvids``: real files with known traps (corrupt, rotated, GIF, bad AVI timestamps)."""
    path = shared / "realvids"
    if not path.is_dir():
        pytest.skip("shared/realvids not present")
    return path


@pytest.fixture
def make_read_only():
    """``make_read_only(path)`` makes the folder `path` read-only until the test ends.

    Root ignores file modes, so as root the folder is bind-mounted read-only over itself (writes fail
    with "Read-only file system"); otherwise its write bits are cleared. Skips when neither works.
    """
    import os
    import stat
    import subprocess

    undo = []

    def make(path: Path) -> Path:
        if os.geteuid() != 0:
            mode = path.stat().st_mode
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            undo.append(lambda: path.chmod(mode))
            return path
        for cmd in (["mount", "--bind", str(path), str(path)], ["mount", "-o", "remount,ro,bind", str(path)]):
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                if cmd[1] != "--bind":
                    subprocess.run(["umount", str(path)], capture_output=True)
                pytest.skip("cannot make a read-only folder here (bind mount refused)")
        undo.append(lambda: subprocess.run(["umount", str(path)], capture_output=True))
        return path

    yield make
    for step in reversed(undo):
        step()


@pytest.fixture(scope="session", autouse=True)
def _decode_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Per-file decode verdicts go to a fresh folder, not the user's ~/.cache (also for CLI subprocesses)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIDATTN_CACHE_DIR", str(tmp_path_factory.mktemp("vidattn_cache")))
        yield
