"""vidattn._io: atomic writes keep the umask's mode, leave no temporaries and never tear the target."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from vidattn._io import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text, temp_name_pattern

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and umask")


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_with_each(folder: Path) -> list[Path]:
    """One file through every entry point."""
    atomic_write_bytes(folder / "a.bin", b"\x00\x01")
    atomic_write_text(folder / "b.json", "{}\n")
    with atomic_open(folder / "c.csv", "w", newline="") as f:
        f.write("x,y\n")
    with atomic_path(folder / "d.parquet") as tmp:
        tmp.write_bytes(b"PAR1")
    return [folder / n for n in ("a.bin", "b.json", "c.csv", "d.parquet")]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_mode_follows_umask(tmp_path, umask, mask):
    umask(mask)
    for path in _write_with_each(tmp_path):
        assert _mode(path) == 0o666 & ~mask, path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json", "c.csv", "d.parquet"]


def test_replacing_gives_umask_mode_and_new_content(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "keyframes.json"
    target.write_text("old")
    target.chmod(0o600)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert _mode(target) == 0o644


def test_checkpoint_mode_follows_umask(tmp_path, umask):
    """The issue-13 case: checkpoints were 0600 whatever the umask."""
    from vidattn.engine.checkpoint import atomic_save, load_checkpoint

    umask(0o022)
    atomic_save({"model": {}}, tmp_path / "ckpt" / "last.pt")
    assert _mode(tmp_path / "ckpt" / "last.pt") == 0o644
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt") == {"model": {}}


class _Boom(Exception):
    pass


@pytest.mark.parametrize("entry", ["open_bytes", "open_text", "path"])
def test_failure_leaves_target_untouched_and_no_temporary(tmp_path, entry):
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"original\n")
    with pytest.raises(_Boom):
        if entry == "path":
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"half")
                raise _Boom
        else:
            with atomic_open(target, "wb" if entry == "open_bytes" else "w") as f:
                f.write(b"half" if entry == "open_bytes" else "half")
                raise _Boom
    assert target.read_bytes() == b"original\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_failure_without_target_creates_nothing(tmp_path):
    # BaseException too: a Ctrl-C must not leave a temporary
    with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "new.bin") as f:
        f.write(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_temporary_is_in_target_folder_and_matches_pattern(tmp_path):
    target = tmp_path / "sub" / "results.parquet"
    with atomic_path(target, suffix=".tmp.mp4") as tmp:
        assert tmp.parent == target.parent  # same file system, so the rename is atomic
        assert tmp.suffix == ".mp4"
        assert tmp.match(temp_name_pattern(target, ".tmp.mp4"))
        assert tmp.exists() and not target.exists()
    assert target.exists() and not tmp.exists()
    with atomic_open(target):
        assert len(list(target.parent.glob(temp_name_pattern(target)))) == 1


def test_rejects_read_and_append_modes(tmp_path):
    for mode in ("r", "ab", "r+b"):
        with pytest.raises(ValueError, match="mode must be"), atomic_open(tmp_path / "x", mode):
            pass


def test_failed_write_is_an_output_error_naming_the_target(tmp_path, make_read_only):
    from vidattn._io import ensure_output_dir, writing_to
    from vidattn.errors import OutputError

    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("old\n")
    make_read_only(out)
    with pytest.raises(OutputError, match=rf"^cannot write {out / 'config.yaml'}: \S"), writing_to(out):
        atomic_write_text(out / "config.yaml", "new\n")
    assert (out / "config.yaml").read_text() == "old\n"
    with pytest.raises(OutputError, match=rf"^cannot write {out}: "):
        ensure_output_dir(out)
    with pytest.raises(OutputError, match=rf"^cannot write {out / 'sub'}: "):
        ensure_output_dir(out / "sub")
