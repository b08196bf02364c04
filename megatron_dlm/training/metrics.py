"""Where metrics go: the console line, a JSONL file per run, Weights & Biases, TensorBoard.

Besides the objective's metrics, MoE runs log megatron-core's router losses (aggregate and per
layer, :func:`moe_metrics`).
"""

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
        ("load balancing loss", "load_balancing_loss", "{:.4f}"),
        ("seq load balancing loss", "seq_load_balancing_loss", "{:.4f}"),
        ("z loss", "z_loss", "{:.4f}"),
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
    """Appends one JSON record per line to ``<run dir>/metrics.jsonl``; mirrors to wandb and
    TensorBoard.

    Only the rank that logs (the last pipeline stage's first rank) creates one.
    ``wandb_run_id`` resumes that Weights & Biases run (a resumed training run passes the id
    saved in its checkpoint).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        wandb_project: str | None = None,
        wandb_exp_name: str | None = None,
        wandb_save_dir: str | None = None,
        wandb_run_id: str | None = None,
        tensorboard_dir: str | None = None,
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
                wandb_project,
                wandb_exp_name,
                wandb_save_dir or str(self.run_dir),
                config,
                run_id=wandb_run_id,
            )
        self._tensorboard = None
        if tensorboard_dir:
            self._tensorboard = tensorboard_writer(tensorboard_dir)

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: _jsonable(v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        if self._wandb is not None:
            prefix = {"valid": "valid/", "tasks": "tasks/"}.get(record.get("split"), "train/")
            numbers = {
                prefix + k: v
                for k, v in clean.items()
                if isinstance(v, (int, float)) and k != "iteration"
            }
            self._wandb.log(numbers, step=int(record["iteration"]))
        if self._tensorboard is not None:
            iteration, samples = int(record["iteration"]), int(record["consumed_samples"])
            for tag, value, vs_samples in megatron_scalars(record):
                self._tensorboard.add_scalar(tag, value, iteration)
                if vs_samples:
                    self._tensorboard.add_scalar(f"{tag} vs samples", value, samples)

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


# Record keys that are not an objective's (or the router's) metric, with Megatron-LM's
# TensorBoard tag where it has one, and whether it also logs "<tag> vs samples".
_RECORD_TAGS = {
    "lr": ("learning-rate", True),
    "global_batch_size": ("batch-size", True),
    "grad_norm": ("grad-norm", True),
    "loss_scale": ("loss-scale", True),
    "iteration_time_ms": ("iteration-time", False),
    "tflops_per_device": ("throughput", False),
    "skipped_iters": ("skipped-iterations", False),
}
_NOT_METRICS = {
    "split",
    "iteration",
    "consumed_samples",
    "consumed_tokens",
    "epoch",
    "epochs_total",
    "tokens_per_s",
    "mfu",
    "mem_gb",
    "eval_time_s",
}


def megatron_scalars(record: dict[str, Any]) -> list[tuple[str, float, bool]]:
    """``(tag, value, also vs samples)`` with Megatron-LM's TensorBoard names for a record.

    The objective's metrics keep their report names (``lm loss``, ``masked ce``, ...),
    validation ones get Megatron's `` validation`` suffix; the router losses and their
    per-layer values (``moe/...``) keep megatron-core's names, as do downstream tasks'
    ``task/metric`` values (``--eval-tasks``).
    """
    valid = record.get("split") == "valid"
    tasks = record.get("split") == "tasks"  # only its "task/metric" values
    out = []
    for key, value in record.items():
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if tasks and "/" not in key:
            continue
        if key == "iteration_time_ms":
            value = value / 1000.0  # Megatron-LM logs seconds
        if key in _RECORD_TAGS:
            if not valid:
                tag, vs_samples = _RECORD_TAGS[key]
                out.append((tag, float(value), vs_samples))
            continue
        tag = "lm loss" if key == "loss" else key if "/" in key else key.replace("_", " ")
        if key.endswith("_loss"):
            tag = key  # megatron-core's router loss names (load_balancing_loss, z_loss)
        out.append((f"{tag} validation" if valid else tag, float(value), "/" not in key))
    return out


def require_tensorboard(tensorboard_dir: str | None) -> None:
    """Raise ConfigError naming --tensorboard-dir if it is set and TensorBoard is missing."""
    if not tensorboard_dir:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        from megatron_dlm.config import ConfigError

        raise ConfigError(
            f"--tensorboard-dir {tensorboard_dir}: needs the tensorboard package "
            "(pip install tensorboard)"
        ) from exc


def tensorboard_writer(tensorboard_dir: str):
    """torch's SummaryWriter (a resumed run appends a new event file to the same directory)."""
    require_tensorboard(tensorboard_dir)
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=tensorboard_dir)


class _ScalarCollector:
    """Stands in for a TensorBoard writer: keeps what megatron-core's loggers write."""

    def __init__(self):
        self.scalars: dict[str, float] = {}

    def add_scalar(self, tag: str, value, step=None) -> None:
        self.scalars[tag] = float(value)


def moe_loss_names(model_cfg) -> list[str]:
    """megatron-core's tracker names of the router losses this MoE model computes."""
    names = []
    if model_cfg.moe_aux_loss_coeff > 0:
        balancing = model_cfg.moe_router_load_balancing_type
        if balancing == "aux_loss":
            names.append("load_balancing_loss")
        elif balancing == "seq_aux_loss":
            names.append("seq_load_balancing_loss")
    if model_cfg.moe_z_loss_coeff:
        names.append("z_loss")
    return names


def moe_metrics(model_cfg, num_microbatches: int, iteration: int) -> dict[str, float]:
    """This step's router losses from megatron-core's tracker, then reset it (collective).

    Uses megatron-core's ``track_moe_metrics`` (reduced over pipeline stages and data-parallel
    ranks as Megatron-LM does, divided by the micro-batches): the mean over MoE layers under
    the loss name (``load_balancing_loss``, ``z_loss``) and each layer's value
    (``moe/load_balancing_loss_layer_3``): how evenly the router spreads tokens, per layer.
    """
    names = moe_loss_names(model_cfg)
    if not names:
        return {}
    from megatron.core.transformer.moe.moe_utils import track_moe_metrics

    collector = _ScalarCollector()
    track_moe_metrics(
        loss_scale=1.0 / num_microbatches,
        iteration=iteration,
        writer=collector,
        per_layer_logging=True,
        force_initialize=True,
        track_names=names,
        num_layers=model_cfg.num_layers,
        moe_layer_freq=model_cfg.moe_layer_freq,
    )
    return collector.scalars


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


def _init_wandb(
    project: str, name: str | None, save_dir: str, config: dict | None, run_id: str | None = None
):
    try:
        import wandb
    except ImportError as exc:  # pragma: no cover - wandb is a dependency
        raise ImportError("--wandb-project needs the wandb package: pip install wandb") from exc
    os.makedirs(save_dir, exist_ok=True)
    return wandb.init(
        project=project,
        name=name,
        dir=save_dir,
        config=config or {},
        id=run_id,
        resume="allow" if run_id else None,
    )


def new_wandb_run_id() -> str:
    """A fresh run id in wandb's alphabet (lower-case letters and digits)."""
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))
