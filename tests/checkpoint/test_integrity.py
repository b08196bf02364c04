"""Checkpoints are complete, verified and finite: damage is found at load, never saved."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_dlm.checkpoint import (
    MANIFEST_FILE,
    CheckpointError,
    read_checkpoint_info,
    read_tracker,
    verify_manifest,
)
from megatron_dlm.checkpoint.saving import remove_old_checkpoints
from megatron_dlm.testing import DistributedTestError, run_distributed
from tests.checkpoint import workers
from tests.training.workers import TINY_MODEL, pretrain_worker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    """A 2-iteration run saved by pretrain (one rank)."""
    root = tmp_path_factory.mktemp("trained")
    argv = [*tiny_data.flags(), *TINY_MODEL, "--train-iters", "2", "--lr-warmup-iters", "0",
            "--save", str(root)]  # fmt: skip
    run_distributed(pretrain_worker, 1, args=(argv, str(root)))
    return root


def _damaged(trained: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / how
    shutil.copytree(trained, copy)
    directory = copy / "iter_0000002"
    shard = sorted(directory.glob("*.distcp"))[0]
    if how == "flipped":
        data = bytearray(shard.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
        shard.write_bytes(bytes(data))
    elif how == "truncated":
        shard.write_bytes(shard.read_bytes()[:1000])
    elif how == "no_metadata":
        (directory / ".metadata").unlink()
    elif how == "common":
        (directory / "common.pt").write_bytes(b"\x00" * 100)
    return copy


def test_the_manifest_covers_every_file(trained):
    directory = trained / "iter_0000002"
    assert verify_manifest(directory, collective=False)
    listed = {p.name for p in directory.iterdir() if p.name != MANIFEST_FILE}
    import json

    assert set(json.loads((directory / MANIFEST_FILE).read_text())["files"]) == listed


@pytest.mark.parametrize("how", ["flipped", "truncated", "no_metadata"])
def test_damaged_shards_are_refused_at_load(trained, tiny_data, tmp_path, how):
    copy = _damaged(trained, tmp_path, how)
    with pytest.raises(CheckpointError, match="iter_0000002: the checkpoint is damaged"):
        verify_manifest(copy / "iter_0000002", collective=False)
    # Resuming through pretrain, and loading for inference/export, refuse it too.
    argv = [*tiny_data.flags(), *TINY_MODEL, "--train-iters", "2", "--lr-warmup-iters", "0",
            "--save", str(copy)]  # fmt: skip
    with pytest.raises(DistributedTestError, match="CheckpointError: .*the checkpoint is damaged"):
        run_distributed(pretrain_worker, 1, args=(argv, str(copy)))
    with pytest.raises(DistributedTestError, match="the checkpoint is damaged"):
        run_distributed(workers.load_weights, 1, args=(str(copy),))
    assert read_tracker(copy) == 2  # nothing was saved over it


def test_a_corrupt_common_file_is_named(trained, tmp_path):
    copy = _damaged(trained, tmp_path, "common")
    with pytest.raises(CheckpointError, match=r"damaged: common.pt has 100 bytes"):
        read_checkpoint_info(copy)


def test_non_finite_weights_are_never_saved(tmp_path):
    (message,) = run_distributed(workers.save_with_a_nan_weight, 1, args=(str(tmp_path),))
    assert "refusing to save" in message and "NaN/Inf" in message, message
    assert read_tracker(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.glob("iter_*")) == ["iter_0000001"]


def test_rotation_never_removes_the_tracked_checkpoint(tmp_path):
    for iteration in (2, 4, 6, 8):
        directory = tmp_path / f"iter_{iteration:07d}"
        directory.mkdir()
        (directory / "metadata.json").write_text("{}")
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("4\n")  # e.g. 6, 8 are foreign
    remove_old_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("iter_*")) == [
        "iter_0000004", "iter_0000006", "iter_0000008",
    ]  # fmt: skip


def test_a_killed_background_save_leaves_the_previous_checkpoint(tmp_path):
    root, flag = tmp_path / "run", tmp_path / "scheduled"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.checkpoint.workers", str(root), str(flag)],
        cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert flag.exists(), proc.communicate(timeout=5)[0].decode()[-2000:]
        assert (root / "iter_0000004.tmp").is_dir()  # the write is in flight
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its writer process
        proc.wait(timeout=30)
    assert read_tracker(root) == 2
    assert not (root / "iter_0000004").exists()
    run_distributed(workers.load_weights, 1, args=(str(root),))  # verified and loadable


def test_a_full_disk_leaves_nothing_behind(tiny_data, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if made.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        argv = [*tiny_data.flags(), *TINY_MODEL, "--train-iters", "2", "--lr-warmup-iters", "0",
                "--save", str(mount / "r")]  # fmt: skip
        with pytest.raises(DistributedTestError, match=r"--save .*writing iter_0000002 failed"):
            run_distributed(pretrain_worker, 1, args=(argv, str(tmp_path / "log")))
        assert not list((mount / "r").glob("iter_*"))
    finally:
        subprocess.run(["umount", str(mount)], check=False)
