"""The crossover study: matched DLM and AR runs over many epochs, one tidy table, plots.

A study is a grid: model configurations x unique-token budgets x epoch budgets x objectives
(``dlm``, ``ar``, and ``ar_mask``: AR with random input masking). Every cell is one
``pretrain_dlm.py`` run in its own directory, evaluated on the held-out split every
``eval_every_epochs`` epochs by the trainer itself (DLM: the ELBO bound and masked CE; AR: the
exact NLL; both in nats per token) and, with ``eval_tasks``, on downstream tasks. Everything the
table needs is then in each run's ``metrics.jsonl``: finished runs and evaluations are never
recomputed, an unfinished run resumes from its checkpoint, and the table and plots are rebuilt
from the files every time.

Runs of one (model, budget, epochs) group must be *strictly matched*: their resolved configs may
differ only in objective-related fields (:data:`OBJECTIVE_FIELDS`) and in where they write.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

OBJECTIVES = {
    "dlm": ["--objective", "dlm"],
    "ar": ["--objective", "ar"],
    "ar_mask": ["--objective", "ar"],  # + --input-mask-prob (StudySpec.ar_input_mask_prob)
}
OBJECTIVE_FIELDS = {("objective", name) for name in (
    "objective", "dlm_eps", "dlm_stratified_t", "dlm_loss_weight", "dlm_at_least_one_mask",
    "dlm_random_length_prob", "input_mask_prob",
)}  # fmt: skip
"""(section, field) pairs a DLM and its matched AR run may differ in."""
WHERE_FIELDS = {
    ("checkpoint", "save"), ("checkpoint", "load"), ("logging", "log_dir"),
    ("logging", "wandb_exp_name"), ("logging", "wandb_save_dir"), ("logging", "tensorboard_dir"),
}  # fmt: skip
"""Output locations: different for every run by construction."""
METRIC_NAMES = {"dlm": "dlm_bound", "ar": "ar_nll"}
"""What the held-out loss of each objective is: an upper bound on the NLL, or the NLL."""


class StudyError(ValueError):
    """A study that cannot run as specified (the message names the option)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model configuration: a name and the pretrain_dlm.py flags that define it."""

    name: str
    flags: tuple[str, ...]


@dataclass(frozen=True)
class StudySpec:
    """The grid and how to run it (see :mod:`megatron_dlm.eval.crossover`)."""

    output_dir: Path
    data_flags: tuple[str, ...]
    """--tokenizer-model, --train-data-path / --data-path, --valid-data-path, ..."""
    models: tuple[ModelSpec, ...]
    unique_tokens: tuple[int, ...]
    epochs: tuple[float, ...]
    objectives: tuple[str, ...] = ("dlm", "ar")
    ar_input_mask_prob: float = 0.3
    eval_every_epochs: float = 1.0
    eval_samples: int | None = None
    """Held-out sequences per evaluation (default: the whole validation split)."""
    eval_tasks: str | None = None
    eval_tasks_every_epochs: float | None = None
    eval_tasks_limit: int | None = None
    save_every_epochs: float | None = None
    launcher: tuple[str, ...] = ("python",)
    world_size: int = 1
    extra_flags: tuple[str, ...] = ()


@dataclass
class RunPlan:
    """One cell of the grid."""

    model: str
    unique_tokens: int
    epochs: float
    objective: str
    directory: Path
    argv: list[str]
    train_iters: int
    samples_per_epoch: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> tuple[str, int, float]:
        return (self.model, self.unique_tokens, self.epochs)

    @property
    def name(self) -> str:
        return self.directory.name

    def command(self, launcher: Sequence[str]) -> list[str]:
        return [*launcher, "pretrain_dlm.py", *self.argv]


def _fmt_epochs(epochs: float) -> str:
    return f"{epochs:g}".replace(".", "p")


def valid_sequences(valid_prefix: str, seq_length: int) -> int:
    """How many held-out windows of ``seq_length`` the validation dataset holds."""
    from megatron_dlm.data.indexed import read_index

    tokens = read_index(valid_prefix).num_tokens
    return max(1, (tokens - 1) // seq_length)


def _flag_value(flags: Sequence[str], name: str) -> str | None:
    value = None
    for i, item in enumerate(flags):
        if item == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif item.startswith(name + "="):
            value = item.split("=", 1)[1]
    return value


def plan_study(spec: StudySpec) -> list[RunPlan]:
    """Every run of the grid, with its flags and resolved config.

    Raises:
        StudyError: unknown objective, a config that does not resolve, or a group whose runs
            differ in more than the objective-related fields.
    """
    from megatron_dlm.config import ConfigError
    from megatron_dlm.config.cli import build_parser, config_from_args

    unknown = set(spec.objectives) - set(OBJECTIVES)
    if unknown:
        raise StudyError(f"--objectives: unknown {sorted(unknown)} (choose from "
                         f"{', '.join(OBJECTIVES)})")  # fmt: skip
    valid = _flag_value(spec.data_flags, "--valid-data-path")
    plans: list[RunPlan] = []
    parser = build_parser()
    for model in spec.models:
        for unique in spec.unique_tokens:
            for epochs in spec.epochs:
                for objective in spec.objectives:
                    directory = (
                        spec.output_dir
                        / "runs"
                        / (f"{model.name}_u{unique}_e{_fmt_epochs(epochs)}_{objective}")
                    )
                    base = [*model.flags, *spec.data_flags, *spec.extra_flags,
                            "--unique-tokens", str(unique), *OBJECTIVES[objective]]  # fmt: skip
                    if objective == "ar_mask":
                        base += ["--input-mask-prob", str(spec.ar_input_mask_prob)]
                    try:
                        cfg = config_from_args(parser.parse_args(base))
                    except (ConfigError, SystemExit) as exc:
                        raise StudyError(f"model {model.name!r}: its flags do not resolve "
                                         f"({exc})") from exc  # fmt: skip
                    seq = cfg.model.seq_length
                    gbs = cfg.training.global_batch_size or (
                        cfg.training.micro_batch_size * spec.world_size
                    )
                    per_epoch = max(1, (unique - 1) // seq)
                    steps_per_epoch = per_epoch / gbs
                    iters = max(1, round(epochs * steps_per_epoch))
                    every = max(1, round(spec.eval_every_epochs * steps_per_epoch))
                    held_out = spec.eval_samples or (valid_sequences(valid, seq) if valid else gbs)
                    argv = [*base, "--train-iters", str(iters), "--eval-interval", str(every),
                            "--eval-iters", str(max(1, math.ceil(held_out / gbs))),
                            "--save", str(directory)]  # fmt: skip
                    save_every = spec.save_every_epochs
                    argv += ["--save-interval",
                             str(max(1, round((save_every or epochs) * steps_per_epoch))),
                             "--keep-last-k", "1"]  # fmt: skip
                    if spec.eval_tasks:
                        task_every = spec.eval_tasks_every_epochs or spec.eval_every_epochs
                        argv += ["--eval-tasks", spec.eval_tasks, "--eval-tasks-interval",
                                 str(max(1, round(task_every * steps_per_epoch)))]  # fmt: skip
                        if spec.eval_tasks_limit:
                            argv += ["--eval-tasks-limit", str(spec.eval_tasks_limit)]
                    resolved = config_from_args(parser.parse_args(argv)).to_dict()
                    plans.append(RunPlan(model.name, unique, epochs, objective, directory, argv,
                                         iters, per_epoch, resolved))  # fmt: skip
    check_matched(plans)
    return plans


def config_differences(a: dict, b: dict) -> list[str]:
    """``section.field`` names where two resolved configs differ, beyond the allowed fields."""
    out = []
    for section in sorted(set(a) | set(b)):
        fa, fb = a.get(section, {}), b.get(section, {})
        for name in sorted(set(fa) | set(fb)):
            key = (section, name)
            if key in OBJECTIVE_FIELDS or key in WHERE_FIELDS:
                continue
            if fa.get(name) != fb.get(name):
                out.append(f"{section}.{name}: {fa.get(name)!r} vs {fb.get(name)!r}")
    return out


def check_matched(plans: list[RunPlan]) -> None:
    """Refuse a group whose runs differ in anything but the objective-related fields."""
    groups: dict[tuple, list[RunPlan]] = {}
    for plan in plans:
        groups.setdefault(plan.group, []).append(plan)
    for runs in groups.values():
        first = runs[0]
        for other in runs[1:]:
            diffs = config_differences(first.config, other.config)
            if diffs:
                raise StudyError(
                    f"{first.name} and {other.name} are not matched: they differ in "
                    + "; ".join(diffs)
                )


# ------------------------------------------------------------------------------ progress
def read_metrics(directory: Path) -> list[dict]:
    path = directory / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: the resumed run rewrites it
        if isinstance(record, dict):
            records.append(record)
    return records


def is_complete(plan: RunPlan) -> bool:
    """The run reached its last iteration and evaluated there."""
    from megatron_dlm.checkpoint import read_tracker

    try:
        saved = read_tracker(plan.directory)
    except Exception:
        return False
    if saved != plan.train_iters:
        return False
    return any(
        r.get("split") == "valid" and r.get("iteration") == plan.train_iters
        for r in read_metrics(plan.directory)
    )


# ------------------------------------------------------------------------------ table
TABLE_COLUMNS = [
    "model", "unique_tokens", "epochs_budget", "objective", "run", "iteration", "epoch",
    "consumed_tokens", "flops", "heldout", "heldout_metric", "loss", "masked_ce",
    "masked_accuracy",
]  # fmt: skip


def study_table(plans: list[RunPlan]) -> list[dict]:
    """One row per evaluation of every run (held-out losses and downstream metrics)."""
    rows = []
    for plan in plans:
        records = read_metrics(plan.directory)
        # A resumed run re-logs from its checkpoint: keep the last record per iteration.
        valid = {r["iteration"]: r for r in records if r.get("split") == "valid"}
        tasks: dict[int, dict] = {}
        for r in records:
            if r.get("split") == "tasks":
                tasks.setdefault(r["iteration"], {}).update(
                    {k: v for k, v in r.items() if "/" in k and isinstance(v, int | float)}
                )
        kind = "dlm" if plan.objective == "dlm" else "ar"
        for iteration in sorted(set(valid) | set(tasks)):
            r = valid.get(iteration, {})
            consumed = r.get("consumed_samples", iteration * _gbs(plan))
            row = {
                "model": plan.model,
                "unique_tokens": plan.unique_tokens,
                "epochs_budget": plan.epochs,
                "objective": plan.objective,
                "run": plan.name,
                "iteration": iteration,
                "epoch": consumed / plan.samples_per_epoch,
                "consumed_tokens": r.get("consumed_tokens"),
                "flops": r.get("floating_point_operations"),
                "heldout": r.get("loss"),
                "heldout_metric": METRIC_NAMES[kind],
                "loss": r.get("loss"),
                "masked_ce": r.get("masked_ce"),
                "masked_accuracy": r.get("masked_accuracy"),
                **tasks.get(iteration, {}),
            }
            rows.append(row)
    return rows


def _gbs(plan: RunPlan) -> int:
    training = plan.config.get("training", {})
    return training.get("global_batch_size") or training.get("micro_batch_size", 1)


def write_table(rows: list[dict], output_dir: Path) -> tuple[Path, Path]:
    """``study.csv`` and ``study.jsonl`` (written atomically)."""
    columns = list(TABLE_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    csv_path, jsonl_path = output_dir / "study.csv", output_dir / "study.jsonl"
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(csv_path)
    tmp = jsonl_path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.replace(jsonl_path)
    return csv_path, jsonl_path


# ------------------------------------------------------------------------------ crossings
@dataclass(frozen=True)
class Crossing:
    """Where the DLM's curve goes below (better than) the AR curve of its group."""

    model: str
    unique_tokens: int
    epochs_budget: float
    versus: str
    """The AR objective compared with (``ar`` or ``ar_mask``)."""
    metric: str
    epoch: float | None
    """First epoch (interpolated) at which the DLM is better; None if it never is."""
    flops: float | None
    dlm_best: float
    ar_best: float
    ar_best_epoch: float
    ar_turns_up_epoch: float | None
    """Epoch of AR's best held-out value when it rises afterwards (overfitting), else None."""

    @property
    def best_beats_best(self) -> bool:
        """A true crossover: the DLM's best beats the AR's best."""
        return self.dlm_best < self.ar_best


def _curve(rows: list[dict], objective: str, metric: str) -> list[tuple[float, float, float]]:
    return sorted(
        (r["epoch"], r[metric], r.get("flops") or math.nan)
        for r in rows
        if r["objective"] == objective and isinstance(r.get(metric), int | float)
    )


def find_crossings(rows: list[dict], metric: str = "heldout") -> list[Crossing]:
    """Compare each group's DLM curve with its AR curves at the same evaluation points.

    ``metric`` ``heldout`` compares the DLM's bound with the AR's NLL (lower is better); a
    downstream metric (``task/acc``, higher is better) is compared with the sign flipped.
    """
    lower_is_better = metric == "heldout" or "loss" in metric or "ce" in metric
    sign = 1.0 if lower_is_better else -1.0
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["unique_tokens"], row["epochs_budget"]), []).append(
            row
        )
    out = []
    for (model, unique, budget), group in sorted(groups.items()):
        dlm = _curve(group, "dlm", metric)
        if not dlm:
            continue
        for versus in ("ar", "ar_mask"):
            ar = _curve(group, versus, metric)
            if not ar:
                continue
            ar_at = {round(e, 9): v for e, v, _ in ar}
            paired = [(e, sign * (v - ar_at[round(e, 9)]), f) for e, v, f in dlm
                      if round(e, 9) in ar_at]  # fmt: skip
            epoch = flops = None
            for (e0, d0, f0), (e1, d1, f1) in zip(paired, paired[1:]):
                if d0 > 0 >= d1:
                    frac = d0 / (d0 - d1) if d0 != d1 else 0.0
                    epoch = e0 + frac * (e1 - e0)
                    flops = f0 + frac * (f1 - f0)
                    break
            if epoch is None and paired and paired[0][1] <= 0:
                epoch, flops = paired[0][0], paired[0][2]  # better from the first evaluation
            best = min if lower_is_better else max
            ar_best_epoch, ar_best = best(((e, v) for e, v, _ in ar), key=lambda p: p[1])
            turns_up = ar_best_epoch if ar_best_epoch < ar[-1][0] else None
            out.append(
                Crossing(model, unique, budget, versus, metric, epoch, flops,
                         best(v for _, v, _ in dlm), ar_best, ar_best_epoch, turns_up)
            )  # fmt: skip
    return out


# ------------------------------------------------------------------------------ plots
def plot_study(rows: list[dict], output_dir: Path) -> list[Path]:
    """One PNG per (model, budget, epochs) group and metric: against epochs and FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["heldout"] + sorted({k for r in rows for k in r if "/" in k})
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["unique_tokens"], row["epochs_budget"]), []).append(
            row
        )
    written = []
    for (model, unique, budget), group in sorted(groups.items()):
        for metric in metrics:
            if not any(isinstance(r.get(metric), int | float) for r in group):
                continue
            crossings = [c for c in find_crossings(group, metric) if c.versus == "ar"]
            fig, axes = plt.subplots(1, 2, figsize=(11, 4))
            for ax, x in zip(axes, ("epoch", "flops")):
                for objective in ("dlm", "ar", "ar_mask"):
                    curve = _curve(group, objective, metric)
                    if not curve:
                        continue
                    xs = [p[0] if x == "epoch" else p[2] for p in curve]
                    label = {"dlm": "DLM (ELBO bound)" if metric == "heldout" else "DLM",
                             "ar": "AR (NLL)" if metric == "heldout" else "AR",
                             "ar_mask": "AR + input masking"}[objective]  # fmt: skip
                    ax.plot(xs, [p[1] for p in curve], marker="o", ms=2, label=label)
                for c in crossings:
                    at = c.epoch if x == "epoch" else c.flops
                    if at is not None and math.isfinite(at):
                        ax.axvline(at, color="k", ls="--", lw=1)
                        ax.annotate(f"crossover\n{at:.3g}", (at, ax.get_ylim()[1]),
                                    fontsize=8, va="top")  # fmt: skip
                ax.set_xlabel("epochs" if x == "epoch" else "training FLOPs")
                if x == "flops":
                    ax.set_xscale("log")
                ax.set_ylabel("held-out nats/token" if metric == "heldout" else metric)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
            fig.suptitle(f"{model}, {unique:,} unique tokens, {budget:g} epochs: {metric}")
            fig.tight_layout()
            safe = metric.replace("/", "_").replace(",", "_")
            path = output_dir / "plots" / f"{model}_u{unique}_e{_fmt_epochs(budget)}_{safe}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def describe(plan: RunPlan, launcher: Sequence[str]) -> str:
    return shlex.join(plan.command(launcher))
