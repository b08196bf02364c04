"""Rank functions for the trainer tests: the real pretrain() on real data."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.modern import modern_flags

TINY_MODEL = [
    "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
    "--seq-length", "64", "--make-vocab-size-divisible-by", "128",
    "--use-cpu-initialization", "--log-interval", "1", "--eval-iters", "2",
    "--lr", "2e-3", "--lr-warmup-iters", "2", "--min-lr", "2e-4", "--eval-interval", "1000",
    *modern_flags(64),
]  # fmt: skip


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pretrain_worker(argv: list[str], run_dir: str) -> list[dict]:
    """``pretrain_dlm.py argv`` in this rank; returns the run's metrics records."""
    from megatron_dlm.config.cli import parse_config
    from megatron_dlm.training.pretrain import pretrain

    pretrain(parse_config(argv))
    return read_metrics(run_dir)


def pretrain_with_nan_losses(argv: list[str], run_dir: str, bad_calls: list[int]) -> list[dict]:
    """pretrain(), but the objective's loss is NaN on the given (0-based) loss calls."""
    from megatron_dlm.objectives.base import Objective

    calls = {"n": 0}
    original = {}
    for cls in Objective.__subclasses__():
        original[cls] = cls.loss

        def loss(self, logits, prepared, _orig=original[cls]):
            loss_sum, num_tokens, report = _orig(self, logits, prepared)
            calls["n"] += 1
            if calls["n"] - 1 in bad_calls:
                loss_sum = loss_sum * float("nan")
            return loss_sum, num_tokens, report

        cls.loss = loss
    try:
        return pretrain_worker(argv, run_dir)
    finally:
        for cls, fn in original.items():
            cls.loss = fn


def pretrain_killed_during_save(argv: list[str], run_dir: str, kill_at_save: int) -> None:
    """pretrain(), with the process killed (os._exit, like SIGKILL) inside its n-th save."""
    from megatron.core import dist_checkpointing

    calls = {"n": 0}
    original = dist_checkpointing.save

    def save(state, directory, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill_at_save:
            Path(directory, "partial_shard").write_text("half-written")
            os._exit(137)
        return original(state, directory, *args, **kwargs)

    dist_checkpointing.save = save
    pretrain_worker(argv, run_dir)


def pretrain_with_env(argv: list[str], run_dir: str, env: dict[str, str]) -> list[dict]:
    os.environ.update(env)
    try:
        return pretrain_worker(argv, run_dir)
    finally:
        for key in env:
            os.environ.pop(key, None)


def pretrain_without_tensorboard(argv: list[str], run_dir: str) -> list[dict]:
    """pretrain() on a machine without the tensorboard package."""
    import sys

    prefixes = ("tensorboard.", "torch.utils.tensorboard")
    hidden = {
        name: sys.modules.pop(name)
        for name in list(sys.modules)
        if name == "tensorboard" or name.startswith(prefixes)
    }
    sys.modules["tensorboard"] = None  # makes `import tensorboard` raise ImportError
    try:
        return pretrain_worker(argv, run_dir)
    finally:
        del sys.modules["tensorboard"]
        sys.modules.update(hidden)
