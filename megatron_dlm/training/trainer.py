"""The training loop: steps, skips, evaluation, logging, checkpoints, preemption."""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from megatron.core import parallel_state
from megatron.core.utils import unwrap_model

from megatron_dlm.checkpoint import CheckpointSaver, TokenizerRecord, TrainState, read_tracker
from megatron_dlm.config import DLMConfig
from megatron_dlm.data.tokenizer import DLMTokenizer
from megatron_dlm.models.vocab import Vocab
from megatron_dlm.runtime.rng import preserved_rng_states
from megatron_dlm.training.batching import BatchLayout
from megatron_dlm.training.metrics import (
    MetricsWriter,
    format_console_line,
    moe_metrics,
    new_wandb_run_id,
)
from megatron_dlm.training.optimizer import guarded_step
from megatron_dlm.training.signals import ExitSignalHandler
from megatron_dlm.training.step import StepContext, reduce_reports, run_global_batch

logger = logging.getLogger(__name__)
NAN_REASONS = ("nan/inf loss", "nan/inf grad norm")
"""Skip reasons of :func:`guarded_step` that --check-for-nan-in-loss-and-grad turns into a stop."""
# The console line comes from the last pipeline stage (where the loss is), not rank 0.
progress = logging.getLogger("megatron_dlm.progress")

DataSource = Callable[[int], Iterator[dict] | None]
"""consumed_samples -> this rank's micro-batches in order (None on ranks that read no data)."""


class TrainingAborted(RuntimeError):
    """Too many consecutive steps were skipped for NaN/Inf."""


@dataclass(frozen=True)
class LiveModel:
    """The model being trained, as a downstream evaluation between steps sees it.

    ``module`` is the unwrapped megatron-core GPTModel of this rank (one pipeline stage), in
    eval mode with its parameters up to date; every rank of the run gets the call.
    """

    module: torch.nn.Module
    bidirectional: bool
    tokenizer: DLMTokenizer
    vocab: Vocab
    max_length: int
    iteration: int


TaskEvaluator = Callable[[LiveModel], dict[str, float]]
"""Downstream evaluation of the live model (``--eval-tasks``): called on every rank, returns
``{"task/metric": value}`` (the same on every rank). Training does not know lm-eval: the
caller (``pretrain_dlm.py``) injects one built by :mod:`megatron_dlm.eval.training_tasks`."""


def reports_here() -> bool:
    """The rank that prints and writes metrics: first TP/DP rank of the last pipeline stage."""
    return (
        parallel_state.is_pipeline_last_stage(ignore_virtual=True)
        and parallel_state.get_tensor_model_parallel_rank() == 0
        and parallel_state.get_data_parallel_rank(with_context_parallel=True) == 0
    )


def _peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _agree(
    loss: float | None, stop_requested: bool, time_up: bool = False
) -> tuple[bool, bool, bool]:
    """One all-reduce per step: was the loss finite everywhere (only the last stage has it), did
    any rank receive a stop signal, and has any rank run past --exit-duration-in-mins?"""
    flags = torch.tensor(
        [
            0.0 if loss is None or math.isfinite(loss) else 1.0,
            1.0 if stop_requested else 0.0,
            1.0 if time_up else 0.0,
        ]
    )
    if torch.distributed.get_backend() == "nccl":
        flags = flags.cuda()
    torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    bad_loss, stop, late = flags.tolist()
    return bad_loss == 0.0, stop > 0.0, late > 0.0


def _shared_run_id() -> str:
    """A new wandb run id drawn on rank 0, the same on every rank (collective)."""
    ids = [new_wandb_run_id() if torch.distributed.get_rank() == 0 else None]
    torch.distributed.broadcast_object_list(ids, src=0)
    return ids[0]


class Trainer:
    """Runs ``cfg.training`` steps of megatron-core forward/backward + optimizer on ``model``."""

    def __init__(
        self,
        cfg: DLMConfig,
        *,
        model: list[torch.nn.Module],
        optimizer,
        scheduler,
        objective,
        layout: BatchLayout,
        train_data: DataSource,
        valid_data: DataSource | None = None,
        state: TrainState | None = None,
        flops_per_sequence: float = 0.0,
        peak_tflops: float | None = None,
        samples_per_epoch: int | None = None,
        tokenizer: TokenizerRecord | None = None,
        run_dir: str | None = None,
        start_time: float | None = None,
        task_evaluator: TaskEvaluator | None = None,
        text_tokenizer: DLMTokenizer | None = None,
        vocab: Vocab | None = None,
    ):
        self.cfg = cfg
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.objective = objective
        self.layout = layout
        self.train_data = train_data
        self.valid_data = valid_data
        self.state = state or TrainState()
        self.flops_per_sequence = flops_per_sequence
        self.peak_tflops = peak_tflops
        self.samples_per_epoch = samples_per_epoch
        self.tokenizer = tokenizer
        if task_evaluator is not None and (text_tokenizer is None or vocab is None):
            raise ValueError("a task_evaluator needs the text_tokenizer and the vocab")
        self.task_evaluator = task_evaluator
        self.text_tokenizer = text_tokenizer
        self.vocab = vocab
        ckpt = cfg.checkpoint
        self.saver = (
            CheckpointSaver(
                ckpt.save,
                keep_last_k=ckpt.keep_last_k,
                async_save=ckpt.async_save,
                fully_reshardable=ckpt.dist_ckpt_optim_fully_reshardable,
            )
            if ckpt.save
            else None
        )
        self.start_time = time.time() if start_time is None else start_time
        """When the run started (``time.time()``): --exit-duration-in-mins counts from it."""
        log = cfg.logging
        if log.wandb_project and not self.state.wandb_run_id:
            self.state.wandb_run_id = _shared_run_id()  # saved with every checkpoint
        self.writer = None
        if reports_here() and run_dir is not None:
            self.writer = MetricsWriter(
                run_dir,
                wandb_project=log.wandb_project,
                wandb_exp_name=log.wandb_exp_name,
                wandb_save_dir=log.wandb_save_dir,
                wandb_run_id=self.state.wandb_run_id,
                tensorboard_dir=log.tensorboard_dir,
                config=cfg.to_dict(),
                start_iteration=self.state.iteration,
            )
        self.history: list[dict] = []
        """Every record logged (train and valid), on the reporting rank; for tests and tools."""

    # ------------------------------------------------------------------ helpers
    def _context(self, iteration: int, training: bool) -> StepContext:
        return StepContext(
            objective=self.objective,
            iteration=iteration,
            training=training,
            micro_batch_size=self.layout.micro_batch_size,
            data_parallel_rank=parallel_state.get_data_parallel_rank(),
            data_parallel_size=self.layout.data_parallel_size,
            global_batch_size=self.layout.global_batch_size,
            context_parallel_size=parallel_state.get_context_parallel_world_size(),
            device=torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu"),
        )

    def _position(self) -> dict:
        """Where the run stands, for every evaluation record (valid, tasks)."""
        return {
            "iteration": self.state.iteration,
            "consumed_samples": self.state.consumed_samples,
            "consumed_tokens": self.state.consumed_samples * self.layout.seq_length,
            "epoch": self._epoch(),
            "floating_point_operations": self.state.floating_point_operations,
        }

    def _epoch(self) -> float | None:
        if not self.samples_per_epoch:
            return None
        return self.state.consumed_samples / self.samples_per_epoch

    def _emit(self, record: dict) -> None:
        if not reports_here():
            return
        self.history.append(record)
        if self.writer is not None:
            self.writer.write(record)

    @property
    def _deferred_param_gather(self) -> bool:
        """With --overlap-param-gather the distributed optimizer's step leaves each rank's
        replicas of the other ranks' parameter shards stale until the next forward pass."""
        opt = self.cfg.optimizer
        return opt.use_distributed_optimizer and opt.overlap_param_gather

    def sync_params(self) -> None:
        """Finish the pending parameter all-gather before anything reads the weights.

        Megatron-LM's ``force_param_sync``: a checkpoint (or anything else reading the
        parameters) right after a step would otherwise see about half of them one step old.
        The next forward's pre-hooks then find the gather done and wait for nothing.
        """
        if self._deferred_param_gather:
            for chunk in self.model:
                chunk.start_param_sync(force_sync=True)

    @contextlib.contextmanager
    def _params_gathered(self):
        """Megatron-LM's evaluation bracket: forward pre-hooks off with the gather finished,
        back on afterwards."""
        if not self._deferred_param_gather:
            yield
            return
        for chunk in self.model:
            chunk.disable_forward_pre_hook(param_sync=True)
        try:
            yield
        finally:
            for chunk in self.model:
                chunk.enable_forward_pre_hook()

    def save(self) -> None:
        if self.saver is None:
            return
        self.sync_params()
        self.saver.save(
            self.state,
            self.model,
            self.optimizer,
            self.scheduler,
            config=self.cfg,
            tokenizer=self.tokenizer,
        )

    # ------------------------------------------------------------------ train
    def _time_up(self) -> bool:
        limit = self.cfg.training.exit_duration_in_mins
        return limit is not None and (time.time() - self.start_time) / 60.0 > limit

    def train_step(
        self, data: Iterator[dict] | None, stop_requested: bool = False
    ) -> tuple[dict[str, float], object, str | None]:
        """One optimizer step; returns the reduced metrics, the step result, and why every
        rank stops after it: ``"signal"`` (any rank's ``stop_requested``, its signal flag),
        ``"time"`` (--exit-duration-in-mins on any rank) or None."""
        for chunk in self.model:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        reports = run_global_batch(
            self.model,
            self._context(self.state.iteration, training=True),
            data,
            self.layout.num_microbatches,
            self.layout.seq_length,
            forward_only=False,
        )
        metrics = reduce_reports(reports) if reports else {}
        if self.cfg.model.is_moe:
            metrics.update(
                moe_metrics(self.cfg.model, self.layout.num_microbatches, self.state.iteration + 1)
            )
        finite, signal, late = _agree(metrics.get("loss"), stop_requested, self._time_up())
        training = self.cfg.training
        check = training.check_for_nan_in_loss_and_grad or training.skip_nan_steps
        result = guarded_step(self.optimizer, self.cfg.optimizer.clip_grad, finite or not check)
        if result.stepped:
            self.scheduler.step(1)
        return metrics, result, "signal" if signal else "time" if late else None

    def train(self) -> TrainState:
        """Train until the budget, a stop signal, --exit-interval or --exit-duration-in-mins;
        returns the final state."""
        cfg, layout, state = self.cfg, self.layout, self.state
        data = self.train_data(state.consumed_samples)
        for chunk in self.model:
            chunk.train()
        logger.info(
            "training from iteration %d to %d (%d micro-batches of %d per step on each of %d "
            "data-parallel ranks)",
            state.iteration,
            layout.train_iters,
            layout.num_microbatches,
            layout.micro_batch_size,
            layout.data_parallel_size,
        )
        sched = self.scheduler
        if (
            state.iteration < layout.train_iters
            and sched.lr_decay_style != "constant"
            and sched.num_steps >= sched.lr_decay_steps
        ):
            logger.warning(
                "the LR schedule in force ended at step %d: iterations %d-%d train at the "
                "minimum LR %s. To train longer on a new schedule, resume with "
                "--override-opt-param-scheduler (docs/checkpoints.md)",
                sched.lr_decay_steps,
                state.iteration + 1,
                layout.train_iters,
                sched.min_lr,
            )
        if self.saver is not None:
            self.saver.prepare()  # before the signal handlers: its helper ignores SIGTERM
        # The handlers stay installed through the last save: a job-wide SIGTERM then only sets
        # the flag.
        with ExitSignalHandler(enabled=cfg.checkpoint.exit_signal_handler) as signals:
            self._train_loop(data, signals)
            if self.saver is not None:
                self.saver.close()  # a background save completes before the run ends
        self.sync_params()  # the caller gets the trained weights, not half of the previous step's
        return state

    def _saved_this_iteration(self) -> bool:
        every = self.cfg.checkpoint.save_interval
        return bool(every) and self.state.iteration % every == 0

    def _train_loop(self, data, signals) -> None:
        cfg, layout, state = self.cfg, self.layout, self.state
        consecutive_skips = 0
        window: list[tuple[dict[str, float], object]] = []
        window_start = time.perf_counter()
        while state.iteration < layout.train_iters:
            metrics, result, stop = self.train_step(data, signals.received is not None)
            if self.saver is not None:
                self.saver.finalize()  # completes a background save that has finished
            state.iteration += 1
            state.consumed_samples += layout.global_batch_size
            state.floating_point_operations += self.flops_per_sequence * layout.global_batch_size
            if result.stepped:
                consecutive_skips = 0
            elif result.reason in NAN_REASONS and (
                cfg.training.check_for_nan_in_loss_and_grad and not cfg.training.skip_nan_steps
            ):
                raise TrainingAborted(
                    self._abort_message(
                        f"iteration {state.iteration}: {result.reason} "
                        "(--check-for-nan-in-loss-and-grad stops the run, as in Megatron-LM; "
                        "--skip-nan-steps skips such steps instead); the update was not "
                        "applied."
                    )
                )
            else:
                state.skipped_iters += 1
                # fp16 overflows are the loss scaler finding its scale, not a failure.
                consecutive_skips += result.reason != "fp16 overflow"
                log = logger.info if result.reason == "fp16 overflow" else logger.warning
                log("iteration %d: skipped the update (%s)", state.iteration, result.reason)
            window.append((metrics, result))
            if state.iteration % cfg.logging.log_interval == 0 or (
                state.iteration == layout.train_iters
            ):
                self._log_train(window, time.perf_counter() - window_start)
                window, window_start = [], time.perf_counter()
            if consecutive_skips >= cfg.training.max_skipped_iters:
                raise TrainingAborted(
                    self._abort_message(
                        f"{consecutive_skips} consecutive steps had NaN/Inf loss or gradients "
                        f"(--max-skipped-iters {cfg.training.max_skipped_iters}); stopping at "
                        f"iteration {state.iteration}."
                    )
                )
            interval = cfg.training.eval_interval
            if interval and state.iteration % interval == 0 and self.valid_data is not None:
                self.evaluate()
            if self._tasks_due():
                self.evaluate_tasks()
            if self._saved_this_iteration():
                self.save()
            if stop:
                signals.latch()  # a signal reaching this rank late must not kill the save
                if stop == "signal":
                    logger.warning("stopping at iteration %d on a signal", state.iteration)
                else:
                    logger.warning(
                        "stopping at iteration %d: --exit-duration-in-mins %s reached",
                        state.iteration,
                        cfg.training.exit_duration_in_mins,
                    )
                if not self._saved_this_iteration():
                    self.save()
                return
            exit_every = cfg.training.exit_interval
            if exit_every and state.iteration % exit_every == 0:
                if not self._saved_this_iteration():
                    self.save()
                logger.info("--exit-interval reached at iteration %d", state.iteration)
                return
        # Still under the handler: a signal now is noted, and the final save completes.
        interval = cfg.training.eval_interval
        if self.valid_data is not None and not (interval and state.iteration % interval == 0):
            self.evaluate()
        if self.task_evaluator is not None and not self._tasks_due():
            self.evaluate_tasks()
        if not self._saved_this_iteration():
            self.save()

    def _abort_message(self, text: str) -> str:
        cfg = self.cfg
        if self.saver is not None:
            self.saver.close()
        saved = read_tracker(cfg.checkpoint.save) if cfg.checkpoint.save else None
        if saved is not None:
            return text + (
                f" Skipped steps leave the weights unchanged, so the checkpoint of iteration "
                f"{saved} in {cfg.checkpoint.save} holds weights from before the problem."
            )
        return (
            text
            + " No checkpoint was saved ("
            + ("none yet in --save)" if cfg.checkpoint.save else "no --save)")
        )

    def _log_train(self, window: list, elapsed: float) -> None:
        steps = len(window)
        if not reports_here():
            return
        layout, state = self.layout, self.state
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for metrics, _ in window:
            for key, value in metrics.items():
                if key.endswith("__count") or not math.isfinite(value):
                    continue
                count = metrics.get(f"{key}__count", 1.0)
                sums[key] = sums.get(key, 0.0) + value * count
                counts[key] = counts.get(key, 0.0) + count
        norms = [r.grad_norm for _, r in window if r.stepped]
        per_iter = elapsed / steps
        tokens_per_s = layout.tokens_per_step / per_iter
        world = torch.distributed.get_world_size()
        tflops = self.flops_per_sequence * layout.global_batch_size / per_iter / world / 1e12
        record = {
            "split": "train",
            "iteration": state.iteration,
            "consumed_samples": state.consumed_samples,
            "consumed_tokens": state.consumed_samples * layout.seq_length,
            "epoch": self._epoch(),
            "epochs_total": (
                layout.train_iters * layout.global_batch_size / self.samples_per_epoch
                if self.samples_per_epoch
                else None
            ),
            "iteration_time_ms": per_iter * 1000,
            "lr": self.scheduler.get_lr(self.optimizer.param_groups[0]),
            "global_batch_size": layout.global_batch_size,
            **{key: sums[key] / counts[key] for key in sums if counts[key]},
            "grad_norm": norms[-1] if norms else float("nan"),
            "skipped_iters": state.skipped_iters,
            "tokens_per_s": tokens_per_s,
            "tflops_per_device": tflops,
            "mfu": tflops / self.peak_tflops if self.peak_tflops else None,
            "mem_gb": _peak_memory_gb(),
        }
        if self.cfg.precision.fp16:
            record["loss_scale"] = float(self.optimizer.get_loss_scale())
        if "loss" not in record:
            record["loss"] = float("nan")
        self._emit(record)
        progress.info(format_console_line(record, layout.train_iters), extra={"all_ranks": True})

    # ------------------------------------------------------------------ evaluate
    def evaluate(self) -> dict[str, float]:
        """Loss on the same validation samples (and masks) every time: comparable over a run."""
        if self.valid_data is None or self.cfg.training.eval_iters == 0:
            return {}
        with self._params_gathered(), torch.no_grad():
            return self._evaluate()

    def _evaluate(self) -> dict[str, float]:
        for chunk in self.model:
            chunk.eval()
        data = self.valid_data(0)
        reports: list[dict] = []
        start = time.perf_counter()
        for index in range(self.cfg.training.eval_iters):
            reports += run_global_batch(
                self.model,
                self._context(index, training=False),
                data,
                self.layout.num_microbatches,
                self.layout.seq_length,
                forward_only=True,
            )
        for chunk in self.model:
            chunk.train()
        if not reports_here() and not reports:
            return {}
        metrics = reduce_reports(reports) if reports else {}
        if not reports_here():
            return metrics
        record = {
            "split": "valid",
            **self._position(),
            **{k: v for k, v in metrics.items() if not k.endswith("__count")},
            "eval_time_s": time.perf_counter() - start,
        }
        self._emit(record)
        shown = " | ".join(
            f"{k}: {v:.6E}" if k == "loss" else f"{k}: {v:.4f}"
            for k, v in record.items()
            if k
            not in (
                "split",
                "iteration",
                "consumed_samples",
                "consumed_tokens",
                "epoch",
                "floating_point_operations",
            )
            and isinstance(v, float)
        )
        progress.info(
            f"validation at iteration {self.state.iteration} | {shown} |",
            extra={"all_ranks": True},
        )
        return metrics

    # ------------------------------------------------------------------ downstream tasks
    def _tasks_due(self) -> bool:
        every = self.cfg.training.eval_tasks_interval
        return self.task_evaluator is not None and bool(every) and self.state.iteration % every == 0

    def evaluate_tasks(self) -> dict[str, float]:
        """``--eval-tasks`` on the live model: every RNG as it was afterwards (the next step
        draws what it would have without this), the weights synchronised first and the model
        back in training mode after; logs a ``tasks`` record."""
        if self.task_evaluator is None:
            return {}
        start = time.perf_counter()
        (module,) = unwrap_model(self.model)  # one pipeline stage (checked at preflight)
        live = LiveModel(
            module=module,
            bidirectional=self.cfg.objective.bidirectional,
            tokenizer=self.text_tokenizer,
            vocab=self.vocab,
            max_length=self.cfg.model.max_position_embeddings,
            iteration=self.state.iteration,
        )
        with self._params_gathered(), torch.no_grad(), preserved_rng_states():
            for chunk in self.model:
                chunk.eval()
            try:
                metrics = self.task_evaluator(live)
            finally:
                for chunk in self.model:
                    chunk.train()
        if not reports_here():
            return metrics
        record = {
            "split": "tasks",
            **self._position(),
            **metrics,
            "eval_time_s": time.perf_counter() - start,
        }
        self._emit(record)
        shown = " | ".join(f"{k}: {v:.4f}" for k, v in metrics.items())
        progress.info(
            f"tasks at iteration {self.state.iteration} | {shown} | "
            f"eval_time_s: {record['eval_time_s']:.1f} |",
            extra={"all_ranks": True},
        )
        return metrics

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
