"""Megatron's directory layout: ``iter_XXXXXXX/`` directories and the tracker file.

    <save>/iter_0000500/                      one dist_checkpointing directory per save
    <save>/latest_checkpointed_iteration.txt  the tracker: the newest complete checkpoint

The tracker is replaced atomically and only after the checkpoint it names is complete, so it
always names a checkpoint that loads.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from megatron_dlm.checkpoint.errors import CheckpointError

TRACKER_FILE = "latest_checkpointed_iteration.txt"
COMMON_FILE = "common.pt"
"""dist_checkpointing's file for the non-tensor part of a checkpoint."""
_ITER_DIR = re.compile(r"iter_(\d{7,})")


def checkpoint_name(root: str | Path, iteration: int) -> Path:
    """``root/iter_XXXXXXX`` (Megatron-LM's name for iteration ``iteration``)."""
    if iteration < 0:
        raise ValueError(f"a checkpoint iteration cannot be negative, got {iteration}")
    return Path(root) / f"iter_{iteration:07d}"


def iteration_of(directory: str | Path) -> int | None:
    """The iteration of an ``iter_XXXXXXX`` directory name, or None for other names."""
    match = _ITER_DIR.fullmatch(Path(directory).name)
    return int(match.group(1)) if match else None


def is_checkpoint_dir(path: str | Path) -> bool:
    """A complete dist_checkpointing directory (its metadata written)."""
    return (Path(path) / "metadata.json").is_file()


def list_checkpoints(root: str | Path) -> list[Path]:
    """The complete ``iter_*`` directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(iteration_of(p), p) for p in root.iterdir() if p.is_dir()]
    return [p for it, p in sorted((it, p) for it, p in found if it is not None)
            if is_checkpoint_dir(p)]  # fmt: skip


def read_tracker(root: str | Path) -> int | None:
    """The latest complete iteration in ``root``, or None if it has no tracker."""
    tracker = Path(root) / TRACKER_FILE
    if not tracker.is_file():
        return None
    text = tracker.read_text(errors="replace").strip()
    if not text.isdigit():
        raise CheckpointError(f"{tracker}: expected an iteration number, found {text[:40]!r}")
    return int(text)


def write_tracker(root: str | Path, iteration: int) -> None:
    """Point the tracker at ``iteration`` atomically (write, fsync, rename)."""
    root = Path(root)
    tmp = root / f"{TRACKER_FILE}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{iteration}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / TRACKER_FILE)


def has_checkpoint(path: str | Path) -> bool:
    """A checkpoint root with a tracker, or one ``iter_*`` checkpoint directory."""
    path = Path(path)
    return is_checkpoint_dir(path) or (path.is_dir() and read_tracker(path) is not None)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a root with a tracker, or an ``iter_*`` directory itself.

    Raises:
        CheckpointError: ``path`` does not exist, or holds no (complete) checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory")
    if is_checkpoint_dir(path):
        return path
    iteration = read_tracker(path)
    if iteration is None:
        raise CheckpointError(f"{path}: no checkpoint there (no {TRACKER_FILE} and not a "
                              "checkpoint directory)")  # fmt: skip
    directory = checkpoint_name(path, iteration)
    if not is_checkpoint_dir(directory):
        raise CheckpointError(f"{path}/{TRACKER_FILE} names iteration {iteration}, "
                              f"but {directory} is missing or incomplete")  # fmt: skip
    return directory
