"""Every real-world file in shared/realvids decodes with a verified frame count, or raises VideoDecodeError.

The folder (see its README) holds the known traps: a corrupt MP4 that claims 50 frames and decodes
28, rotated MOVs, GIFs, AVIs with unreliable timestamps. Skipped when the folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidattn.data import VideoDecodeError, available_backends, open_video
from vidattn.testing import shared_dir

BACKENDS = available_backends()
_ROOT = (shared_dir() or Path("/nonexistent")) / "realvids"
FILES = sorted(str(p.relative_to(_ROOT)) for p in _ROOT.rglob("*") if p.is_file() and p.suffix.lower() != ".md") or [
    "<realvids absent>"
]
# Frame counts from the folder's README (decoded by PyAV); corrupted.mp4 claims 50.
EXPECTED_FRAMES = {"decord/corrupted.mp4": 28, "decord/flipping_a_pancake.mkv": 310, "mmaction2/test.avi": 164}


def _subset(n: int) -> list[int]:
    """About a dozen indices spread over the video, last frame included, backwards (forces seeks)."""
    step = max(1, n // 12)
    return sorted({*range(0, n, step), n - 1}, reverse=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", FILES)
def test_file_decodes_with_verified_count_or_raises(realvids, name):
    path = realvids / name
    results = {}
    for backend in BACKENDS:
        try:
            reader = open_video(path, backend=backend, timeout_s=60)
        except VideoDecodeError as exc:
            assert str(path) in str(exc)
            results[backend] = None
            continue
        with reader:
            claimed = reader.num_frames
            wanted = set(_subset(claimed))
            kept, count = {}, 0
            try:
                for i, frame in reader.iter_frames():
                    assert i == count
                    if i in wanted:
                        kept[i] = frame.clone()
                    count += 1
            except VideoDecodeError as exc:
                assert str(path) in str(exc)
                assert reader.num_frames == count < claimed  # count corrected to what decodes
            assert count == reader.num_frames > 0
            # Random access returns exactly what in-order decoding returned.
            idx = [i for i in _subset(claimed) if i < count]
            frames = reader.get_frames(idx)
            assert frames.shape == (len(idx), reader.height, reader.width, 3)
            for k, i in enumerate(idx):
                assert torch.equal(frames[k], kept[i]), f"{name} frame {i} ({reader.backend})"
            results[backend] = (count, reader.width, reader.height, frames)
    decoded = [r for r in results.values() if r is not None]
    assert decoded, f"{name}: no backend decodes it"
    if name in EXPECTED_FRAMES:
        assert all(r[0] == EXPECTED_FRAMES[name] for r in decoded)
    if len(decoded) == 2:  # both backends: same count, same size, same pixels (rotation applied by both)
        (n_a, w_a, h_a, f_a), (n_b, w_b, h_b, f_b) = decoded
        assert (n_a, w_a, h_a) == (n_b, w_b, h_b)
        assert torch.equal(f_a, f_b)


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
def test_corrupted_mp4_fails_past_frame_28(realvids, backend):
    path = realvids / "decord" / "corrupted.mp4"
    if not path.exists():
        pytest.skip("corrupted.mp4 not in realvids")
    with open_video(path, backend=backend) as reader:
        assert reader.num_frames == 50  # what the header claims
        assert reader.get_frames([0, 27]).shape[0] == 2
        with pytest.raises(VideoDecodeError, match="only 28 of 50 frames decode") as info:
            reader.get_frames([10, 30])
        assert str(path) in str(info.value)
        assert reader.num_frames == 28
        with pytest.raises(VideoDecodeError):
            reader.get_frames([28])
        assert reader.get_frames(list(range(28))).shape[0] == 28


@pytest.mark.parametrize("name", [n for n in FILES if n.endswith(".gif")] or ["<no gifs>"])
def test_gifs_open_under_auto(realvids, name):
    with open_video(realvids / name) as reader:
        assert reader.codec == "gif" and reader.num_frames > 0
        assert reader.get_frames([reader.num_frames - 1, 0]).shape[-1] == 3
