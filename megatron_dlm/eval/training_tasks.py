"""Downstream lm-eval tasks on the live model during training (``pretrain_dlm.py --eval-tasks``).

    python pretrain_dlm.py ... --eval-tasks python_nextline_mc,humaneval_offline \\
        --eval-tasks-interval 500 --eval-tasks-limit 100

Training does not import lm-eval (packages import only downward: eval sits above training), so
``pretrain_dlm.py`` builds a :class:`TrainingTaskEvaluator` before the process group starts
(unknown task names fail there, naming ``--eval-tasks``) and hands it to
:func:`megatron_dlm.training.pretrain.pretrain`. The trainer calls it between steps with the
:class:`~megatron_dlm.training.trainer.LiveModel` (weights synchronised, eval mode, every RNG
saved and restored around the call). Each call wraps the unwrapped GPTModel in the same
:class:`~megatron_dlm.inference.InferenceModel` that ``tools/evaluate.py --load CKPT`` builds
from the saved checkpoint, so the numbers are those of evaluating that checkpoint with the same
``--limit`` (and lm-eval's default seeds): the data-parallel replicas split the requests as
under ``torchrun tools/evaluate.py``, the tensor-parallel ranks of a replica run together.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from megatron.core import parallel_state

from megatron_dlm.config import ConfigError, DLMConfig
from megatron_dlm.eval.tasks import TASKS
from megatron_dlm.inference import DataParallel, InferenceModel
from megatron_dlm.inference.megatron import megatron_logits_fn
from megatron_dlm.training.trainer import LiveModel

logger = logging.getLogger(__name__)

BATCH_SIZE = 8
"""Prompts / requests per batch: the adapter's default, as ``tools/evaluate.py`` without
``--batch_size`` would use through ``evaluate()`` (results do not depend on it)."""


def task_manager_for(names: list[str]):
    """An ``lm_eval.tasks.TaskManager`` that knows ``names``, checked before anything starts.

    Only our offline tasks: their folder alone (fast); any other name: lm-eval's whole task
    index as well (tens of seconds, once per run).

    Raises:
        ConfigError: naming --eval-tasks and the tasks lm-eval does not know.
    """
    from lm_eval.tasks import TaskManager

    from megatron_dlm.eval.cli import offline_tasks_dir

    offline_only = all(name in TASKS for name in names)
    unknown = [n for n in names if n not in TASKS and not _mentioned_by_lm_eval(n)]
    if unknown:
        raise ConfigError(
            f"--eval-tasks: unknown lm-eval task(s) {', '.join(unknown)} (ours: "
            f"{', '.join(TASKS)}; `lm-eval ls tasks` lists the others)"
        )
    manager = TaskManager(include_path=str(offline_tasks_dir()), include_defaults=not offline_only)
    known = set(manager.all_tasks)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(
            f"--eval-tasks: unknown lm-eval task(s) {', '.join(unknown)} (ours: "
            f"{', '.join(TASKS)}; `lm-eval ls tasks` lists the others)"
        )
    return manager


_NOT_TRAINING_ARGS = {
    "pretrained", "inference_model", "device", "dtype", "tokenizer_model", "max_batch_size",
    "tensor_model_parallel_size", "expert_model_parallel_size",
}  # fmt: skip
"""Adapter arguments that choose or load a model: the live model is given."""


def parse_model_args(text: str | None) -> dict[str, str]:
    """``--eval-tasks-model-args key=value,...`` checked against the adapter's arguments.

    Raises:
        ConfigError: an unknown key, one that loads a model, or a number that does not parse.
    """
    import typing

    from megatron_dlm.eval.cli import _numeric_kind
    from megatron_dlm.eval.lm_eval_adapter import MegatronDLMEvalModel

    if not text:
        return {}
    hints = typing.get_type_hints(MegatronDLMEvalModel.__init__)
    allowed = set(hints) - _NOT_TRAINING_ARGS - {"return", "unknown"}
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key not in allowed:
            raise ConfigError(
                f"--eval-tasks-model-args {key}: not an option of the live model (choose from "
                f"{', '.join(sorted(allowed))})"
            )
        kind = _numeric_kind(hints[key])
        if kind is not None and value not in ("None", ""):
            try:
                kind(value)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ConfigError(
                    f"--eval-tasks-model-args {key}={value}: expected {what}"
                ) from None
        pairs[key] = value
    return pairs


def _mentioned_by_lm_eval(name: str) -> bool:
    """Whether any of lm-eval's task YAML files contains ``name`` at all: a quick necessary
    condition for a task, group or tag lm-eval knows (its full index takes tens of seconds)."""
    from pathlib import Path

    import lm_eval.tasks

    needle = name.encode()
    root = Path(lm_eval.tasks.__file__).parent
    return any(needle in path.read_bytes() for path in root.rglob("*.yaml"))


def flatten_results(results: dict) -> dict[str, float]:
    """lm-eval's ``results`` -> ``{"task/metric": value}`` (numbers only; a filter other than
    ``none`` is kept: ``task/filter/metric``)."""
    out: dict[str, float] = {}
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            metric, _, filtered = key.partition(",")
            name = f"{task}/{metric}" if filtered == "none" else f"{task}/{filtered}/{metric}"
            out[name] = float(value)
    return out


class TrainingTaskEvaluator:
    """``--eval-tasks`` as the trainer's :data:`~megatron_dlm.training.trainer.TaskEvaluator`.

    Args:
        cfg: the run (``--eval-tasks``, ``--eval-tasks-limit``, ``--eval-tasks-model-args``).

    Raises:
        ConfigError: a task lm-eval does not know or a bad model option (construct it before
            the process group).
    """

    def __init__(self, cfg: DLMConfig):
        if not cfg.training.eval_tasks:
            raise ConfigError("--eval-tasks: no tasks given")
        self.tasks = cfg.training.eval_tasks.split(",")
        self.limit = cfg.training.eval_tasks_limit
        self.model_args = {"batch_size": str(BATCH_SIZE)}
        self.model_args.update(parse_model_args(cfg.training.eval_tasks_model_args))
        self.task_manager = task_manager_for(self.tasks)

    def inference_model(self, live: LiveModel) -> InferenceModel:
        """The live model as ``tools/evaluate.py --load`` sees the saved checkpoint."""
        world = torch.distributed.get_world_size()
        data_parallel = DataParallel(
            rank=parallel_state.get_data_parallel_rank(),
            size=parallel_state.get_data_parallel_world_size(),
            group=parallel_state.get_data_parallel_group() if world > 1 else None,
            is_main=torch.distributed.get_rank() == 0,
        )
        logits_fn = megatron_logits_fn(live.module, bidirectional=live.bidirectional)
        vocab = live.vocab
        return InferenceModel(
            logits_fn=logits_fn,
            tokenizer=live.tokenizer,
            bidirectional=live.bidirectional,
            mask_id=vocab.mask_id,
            eos_id=vocab.eod_id,
            pad_id=vocab.pad_id,
            vocab_size=vocab.size,
            max_length=live.max_length,
            device=logits_fn.device,
            source="megatron",
            path=f"iteration {live.iteration}",
            data_parallel=data_parallel,
        )

    def __call__(self, live: LiveModel) -> dict[str, float]:
        """Every task on the live model; the metrics on every rank (rank 0's, broadcast)."""
        from megatron_dlm.eval.cli import evaluate

        results = evaluate(
            self.inference_model(live),
            self.tasks,
            model_args=dict(self.model_args),
            task_manager=self.task_manager,
            limit=self.limit,
            log_samples=False,
        )
        metrics: list[Any] = [flatten_results(results) if results else None]
        if torch.distributed.get_world_size() > 1:
            torch.distributed.broadcast_object_list(metrics, src=0)
        return metrics[0] or {}
