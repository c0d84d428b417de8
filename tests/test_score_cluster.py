"""`vidattn score --engine ray` on a real two-node Ray cluster, and inputs from a real S3 endpoint (moto).

Everything here runs inside a private network namespace that the module creates (``unshare -n``, then
``ip link set lo up``): Ray advertises the machine's own address even when told 127.0.0.1, and inside
the namespace loopback is the only interface, so no test traffic can leave 127.0.0.1. Commands enter
the namespace with ``nsenter -n``. The cluster (a head and a second worker node, one CPU each, token
authentication) and the S3 server are started once for the module; at the end every process in the
namespace is killed by its PID. Skips with the reason when not root, or when unshare/nsenter/ip, Ray,
moto or s3fs are missing.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vidattn.apps.score import run_score
from vidattn.testing import make_tiny_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HEAD_PORT, NODE2_MANAGER_PORT, S3_PORT = 6391, 6401, 5123
BUCKET = "vidattn-test"
WAIT_S = 240  # the longest any single wait may take (a scoring run on 2 shared cores)


def _rows(db: Path) -> dict[str, dict]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(db, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return {r["path"]: dict(r) for r in conn.execute("SELECT * FROM videos")}
    except sqlite3.OperationalError:  # the table does not exist yet
        return {}
    finally:
        conn.close()


def _essence(row: dict) -> tuple:
    """What must match between engines: status, frame count, top-1 label."""
    return row["status"], row["num_frames"], row["top1_label"]


# ------------------------------------------------------------------------------------------------
# The namespace
# ------------------------------------------------------------------------------------------------
class Netns:
    """A private network namespace held open by a sleeping process; commands enter it with nsenter."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 3600"],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        mine = os.readlink("/proc/self/ns/net")
        while True:
            try:
                self.link = os.readlink(f"/proc/{self.holder.pid}/ns/net")
            except OSError:
                self.link = mine
            probe = subprocess.run(self.cmd(["ip", "-o", "link", "show", "up"]), capture_output=True, text=True)
            if self.link != mine and "lo" in probe.stdout:
                break
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cannot create a network namespace: {probe.stderr.strip()}")
            time.sleep(0.1)

    def cmd(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n", "--", *argv]

    def pids(self) -> dict[int, str]:
        """PID -> command line of every process inside the namespace."""
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/net") != self.link:
                    continue
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            found[int(entry)] = cmdline
        return found

    def close(self) -> None:
        """Kill every process in the namespace (by PID), the holder last."""
        for _ in range(3):
            pids = [p for p in self.pids() if p != self.holder.pid]
            for pid in pids:
                with contextlib.suppress(OSError):  # already gone
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                break
            time.sleep(0.5)
        self.holder.kill()
        self.holder.wait(timeout=10)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a private network namespace (unshare -n)"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"needs {tool} (util-linux / iproute2) for the loopback-only namespace"
    for module in ("ray", "moto", "s3fs"):
        try:
            __import__(module)
        except ImportError:
            return f'needs {module}: pip install -e ".[dev]"'
    return None


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict]:
    """The namespace, a two-node Ray cluster with token auth, and a moto S3 server, all on its loopback."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        ns = Netns()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no private network namespace here: {exc}")
    tmp = tmp_path_factory.mktemp("cluster")
    ray_tmp = Path(f"/tmp/vr{os.getpid()}")  # short: Ray's unix socket paths must stay under 107 bytes
    variables = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
        "NO_PROXY": "*",
        # Notice a dead node in about 2 s instead of Ray's default of about 15 s.
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        variables.pop(key, None)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--temp-dir", str(ray_tmp)]
    state = {"ns": ns, "env": variables, "tmp": tmp, "ray_bin": ray_bin, "common": common}
    try:
        moto = ns.cmd(
            [
                sys.executable,
                "-c",
                "import time; from moto.server import ThreadedMotoServer; "
                f"ThreadedMotoServer(ip_address='127.0.0.1', port={S3_PORT}).start(); time.sleep(3600)",
            ]
        )
        state["moto"] = subprocess.Popen(moto, env=variables, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        head = [ray_bin, "start", "--head", "--port", str(HEAD_PORT), "--include-dashboard=false", *common]
        subprocess.run(ns.cmd(head), env=variables, check=True, capture_output=True, timeout=WAIT_S)
        start_node2(state)
        yield state
    finally:
        ns.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def start_node2(state: dict) -> None:
    """The second worker node (its raylet on a known port, so a test can kill that node)."""
    argv = [state["ray_bin"], "start", "--address", f"127.0.0.1:{HEAD_PORT}", *state["common"]]
    argv += ["--node-manager-port", str(NODE2_MANAGER_PORT)]
    subprocess.run(state["ns"].cmd(argv), env=state["env"], check=True, capture_output=True, timeout=WAIT_S)
    probe = (
        f"import ray, time; ray.init(address='127.0.0.1:{HEAD_PORT}'); t = time.monotonic()\n"
        "while sum(n['Alive'] for n in ray.nodes()) < 2 and time.monotonic() - t < 60: time.sleep(0.5)\n"
        "assert sum(n['Alive'] for n in ray.nodes()) >= 2, ray.nodes()"
    )
    subprocess.run(state["ns"].cmd([sys.executable, "-c", probe]), env=state["env"], check=True, timeout=WAIT_S)


@pytest.fixture(scope="module")
def archive(env, realvids, tmp_path_factory) -> Path:
    """../shared/realvids and the generated bad files, in one folder (links to the real clips)."""
    from test_score import make_bad_files

    root = tmp_path_factory.mktemp("archive")
    shutil.copytree(realvids, root / "realvids", symlinks=False)
    good = next(p for p in sorted((root / "realvids").rglob("*.mp4")))
    make_bad_files(root / "bad", good)
    return root


@pytest.fixture(scope="module")
def baseline(archive, checkpoint_tiny, tmp_path_factory) -> dict[str, dict]:
    """Rows of the local engine (two DataLoader workers) over the archive: what Ray must reproduce."""
    db = tmp_path_factory.mktemp("local") / "local.sqlite"
    run_score([str(archive)], db, checkpoint=checkpoint_tiny, workers=2, timeout_s=60, progress=False, log=lambda _: 0)
    return _rows(db)


@pytest.fixture(scope="module")
def checkpoint_tiny(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def quick(baseline) -> list[str]:
    """The inputs for the kill tests: the bad files and the real clips but the 3 slowest (CI time)."""
    slowest = sorted(baseline, key=lambda p: baseline[p]["elapsed_s"] or 0.0)[-3:]
    return sorted(p for p in baseline if p not in slowest)


def score_cmd(env: dict, inputs: list[str], db: Path, checkpoint: Path) -> list[str]:
    argv = [sys.executable, "-m", "vidattn.cli", "score", *inputs, "--out", str(db), "--checkpoint", str(checkpoint)]
    argv += ["--engine", "ray", "--ray-address", f"127.0.0.1:{HEAD_PORT}", "--workers", "2", "--quiet"]
    return env["ns"].cmd(argv)


def run_ray(env: dict, inputs: list[str], db: Path, checkpoint: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        score_cmd(env, inputs, db, checkpoint), env=env["env"], capture_output=True, text=True, timeout=WAIT_S
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def wait_rows(db: Path, at_least: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while len(_rows(db)) < at_least:
        assert proc.poll() is None, "the run ended before the kill"
        assert time.monotonic() < deadline, f"fewer than {at_least} rows after {WAIT_S} s"
        time.sleep(0.2)


def finish(proc: subprocess.Popen) -> str:
    try:
        _, err = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the run did not finish in {WAIT_S} s: {err[-2000:]}")
    assert proc.returncode == 0, err[-3000:]
    return err


def assert_same_rows(got: dict[str, dict], want: dict[str, dict]) -> None:
    assert sorted(got) == sorted(want)
    diffs = {p: (_essence(got[p]), _essence(want[p])) for p in want if _essence(got[p]) != _essence(want[p])}
    assert not diffs


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------
def test_ray_engine_gives_the_local_engines_rows(env, archive, checkpoint_tiny, baseline, tmp_path):
    assert sum(r["status"] == "error" for r in baseline.values()) >= 5  # the bad files are in
    db = tmp_path / "ray.sqlite"
    proc = run_ray(env, [str(archive)], db, checkpoint_tiny)
    assert "Traceback" not in proc.stderr
    assert_same_rows(_rows(db), baseline)
    again = run_ray(env, [str(archive)], db, checkpoint_tiny)  # a rerun skips everything
    assert f"{len(baseline)} already done; scored 0" in again.stderr


def test_s3_bucket_gives_the_same_rows(env, archive, checkpoint_tiny, baseline, tmp_path):
    # Upload the regular files (links, fifos and unreadable files have no object form) and a tar shard.
    tar = tmp_path / "shard.tar"
    clips = sorted((archive / "realvids").rglob("*.mp4"))[:3]
    with tarfile.open(tar, "w") as tf:
        for i, clip in enumerate(clips):
            tf.add(clip, arcname=f"m{i}/{clip.name}")
        info = tarfile.TarInfo("m9/not_really.mp4")
        data = b"not a video" * 10
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    upload = (
        "import os, sys, s3fs\n"
        "fs = s3fs.S3FileSystem()\n"
        f"fs.mkdir('{BUCKET}')\n"
        "root, tar = sys.argv[1], sys.argv[2]\n"
        "for dirpath, _, names in os.walk(root):\n"
        "    for name in names:\n"
        "        p = os.path.join(dirpath, name)\n"
        "        if os.path.isfile(p) and not os.path.islink(p) and name != 'unreadable.mp4':\n"
        f"            fs.put_file(p, '{BUCKET}/archive/' + os.path.relpath(p, root))\n"
        f"fs.put_file(tar, '{BUCKET}/shards/shard.tar')\n"
    )
    subprocess.run(
        env["ns"].cmd([sys.executable, "-c", upload, str(archive), str(tar)]),
        env=env["env"],
        check=True,
        timeout=WAIT_S,
        capture_output=True,
    )
    db = tmp_path / "s3.sqlite"
    run_ray(env, [f"s3://{BUCKET}/archive/", f"s3://{BUCKET}/shards/"], db, checkpoint_tiny)
    got = _rows(db)
    prefix = f"s3://{BUCKET}/archive/"
    local = {p: r for p, r in baseline.items() if not p.endswith(("fifo.mp4", "broken_link.mp4", "unreadable.mp4"))}
    from_s3 = {str(archive / p[len(prefix) :]): r for p, r in got.items() if p.startswith(prefix)}
    assert_same_rows(from_s3, local)
    members = {p: r for p, r in got.items() if p.startswith(f"s3://{BUCKET}/shards/shard.tar::")}
    assert len(members) == 4
    for i, clip in enumerate(clips):
        row = members[f"s3://{BUCKET}/shards/shard.tar::m{i}/{clip.name}"]
        assert _essence(row) == _essence(baseline[str(clip)])
    assert members[f"s3://{BUCKET}/shards/shard.tar::m9/not_really.mp4"]["status"] == "error"
    assert all(r["size"] is not None and r["mtime"] is not None for r in got.values())  # from object metadata
    # The rerun resumes from the bucket's metadata: nothing is scored twice.
    again = run_ray(env, [f"s3://{BUCKET}/archive/", f"s3://{BUCKET}/shards/"], db, checkpoint_tiny)
    assert f"{len(got)} already done; scored 0" in again.stderr


def test_killed_ray_worker_process_loses_and_duplicates_nothing(env, checkpoint_tiny, baseline, quick, tmp_path):
    db = tmp_path / "ray.sqlite"
    proc = subprocess.Popen(
        score_cmd(env, quick, db, checkpoint_tiny), env=env["env"], stderr=subprocess.PIPE, text=True
    )
    wait_rows(db, 3, proc)
    deadline = time.monotonic() + WAIT_S
    while not (victims := [p for p, c in env["ns"].pids().items() if c.startswith("ray::_decode_unit")]):
        assert proc.poll() is None and time.monotonic() < deadline, "no decode worker seen"
        time.sleep(0.05)
    os.kill(victims[0], signal.SIGKILL)
    finish(proc)
    assert_same_rows(_rows(db), {p: baseline[p] for p in quick})


def test_sigkill_driver_then_rerun_gives_the_same_rows(env, checkpoint_tiny, baseline, quick, tmp_path):
    db = tmp_path / "ray.sqlite"
    proc = subprocess.Popen(score_cmd(env, quick, db, checkpoint_tiny), env=env["env"])
    wait_rows(db, 5, proc)
    proc.send_signal(signal.SIGKILL)  # nsenter -n execs the driver itself: this is the driver's PID
    proc.wait(timeout=30)
    assert 5 <= len(_rows(db)) < len(quick)
    run_ray(env, quick, db, checkpoint_tiny)
    assert_same_rows(_rows(db), {p: baseline[p] for p in quick})


def test_dead_node_is_not_a_lost_shard(env, checkpoint_tiny, baseline, quick, tmp_path):
    db = tmp_path / "ray.sqlite"
    proc = subprocess.Popen(
        score_cmd(env, quick, db, checkpoint_tiny), env=env["env"], stderr=subprocess.PIPE, text=True
    )
    wait_rows(db, 3, proc)
    raylets = [
        p for p, c in env["ns"].pids().items() if "raylet" in c and f"--node_manager_port={NODE2_MANAGER_PORT}" in c
    ]
    assert len(raylets) == 1, "the second node's raylet"
    os.kill(raylets[0], signal.SIGKILL)
    finish(proc)
    assert_same_rows(_rows(db), {p: baseline[p] for p in quick})


def test_unreachable_cluster_is_one_error_line(env, tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"")
    argv = [sys.executable, "-m", "vidattn.cli", "score", str(clip), "--out", str(tmp_path / "r.sqlite")]
    argv += ["--engine", "ray", "--ray-address", "127.0.0.1:1", "--quiet"]  # nothing listens on port 1
    proc = subprocess.run(env["ns"].cmd(argv), env=env["env"], capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "Error: cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
