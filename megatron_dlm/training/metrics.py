"""Where metrics go: the console line, a JSONL file per run, and Weights & Biases."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def format_console_line(record: dict[str, Any], train_iters: int) -> str:
    """Megatron-LM's ``iteration N/ T | key: value | ...`` line."""
    parts = [f"iteration {record['iteration']:8d}/{train_iters:8d}"]
    if record.get("epoch") is not None:  # "epoch: 12.345/150.00" (this epoch / the budget's)
        total = f"/{record['epochs_total']:.2f}" if record.get("epochs_total") else ""
        record = {**record, "epoch": f"{record['epoch']:.3f}{total}"}
    fields = [
        ("consumed samples", "consumed_samples", "{:12d}"),
        ("consumed tokens", "consumed_tokens", "{:14d}"),
        ("epoch", "epoch", "{}"),
        ("elapsed time per iteration (ms)", "iteration_time_ms", "{:.1f}"),
        ("learning rate", "lr", "{:.6E}"),
        ("global batch size", "global_batch_size", "{:5d}"),
        ("lm loss", "loss", "{:.6E}"),
        ("masked ce", "masked_ce", "{:.4f}"),
        ("masked acc", "masked_accuracy", "{:.4f}"),
        ("ce", "ce", "{:.4f}"),
        ("acc", "accuracy", "{:.4f}"),
        ("mean t", "mean_t", "{:.3f}"),
        ("moe aux loss", "moe_aux_loss", "{:.4f}"),
        ("loss scale", "loss_scale", "{:.1f}"),
        ("grad norm", "grad_norm", "{:.3f}"),
        ("skipped iterations", "skipped_iters", "{:3d}"),
        ("tokens/s", "tokens_per_s", "{:.0f}"),
        ("TFLOP/s/device", "tflops_per_device", "{:.2f}"),
        ("MFU", "mfu", "{:.1%}"),
        ("mem (GB)", "mem_gb", "{:.2f}"),
    ]
    for label, key, fmt in fields:
        value = record.get(key)
        if value is None or (
            isinstance(value, float) and not math.isfinite(value) and key != "loss"
        ):
            continue
        try:
            parts.append(f"{label}: {fmt.format(value)}")
        except (ValueError, TypeError):
            parts.append(f"{label}: {value}")
    return " | ".join(parts) + " |"


class MetricsWriter:
    """Appends one JSON record per line to ``<run dir>/metrics.jsonl`` and mirrors to wandb.

    Only the rank that logs (the last pipeline stage's first rank) creates one.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        wandb_project: str | None = None,
        wandb_exp_name: str | None = None,
        wandb_save_dir: str | None = None,
        config: dict | None = None,
        start_iteration: int = 0,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        _truncate_after(self.path, start_iteration)
        self._file = self.path.open("a", buffering=1)
        self._wandb = None
        if wandb_project:
            self._wandb = _init_wandb(
                wandb_project, wandb_exp_name, wandb_save_dir or str(self.run_dir), config
            )

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: _jsonable(v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        if self._wandb is not None:
            prefix = "valid/" if record.get("split") == "valid" else "train/"
            numbers = {
                prefix + k: v
                for k, v in clean.items()
                if isinstance(v, (int, float)) and k != "iteration"
            }
            self._wandb.log(numbers, step=int(record["iteration"]))

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _truncate_after(path: Path, iteration: int) -> None:
    """Drop records past ``iteration``: a resumed run continues the file where its checkpoint
    was taken, and a fresh run (iteration 0) starts a clean file."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("iteration", 0) <= iteration and iteration > 0:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _init_wandb(project: str, name: str | None, save_dir: str, config: dict | None):
    try:
        import wandb
    except ImportError as exc:  # pragma: no cover - wandb is a dependency
        raise ImportError("--wandb-project needs the wandb package: pip install wandb") from exc
    os.makedirs(save_dir, exist_ok=True)
    return wandb.init(project=project, name=name, dir=save_dir, config=config or {})
