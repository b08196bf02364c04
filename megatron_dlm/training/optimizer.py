"""megatron-core optimizer and LR schedule from our config, and a step that skips NaN/Inf."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from megatron.core.optimizer import OptimizerConfig as MCoreOptimizerConfig
from megatron.core.optimizer import clip_grads, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from megatron_dlm.config import ConfigError, DLMConfig
from megatron_dlm.config.translate import matching_fields


def build_optimizer(cfg: DLMConfig, model: list[torch.nn.Module]):
    """megatron-core's optimizer (fp32 main weights for bf16/fp16; ZeRO-1 if distributed).

    Its OptimizerConfig takes every field of the optimizer and precision sections with the same
    name (lr, min_lr, decoupled_lr, adam_beta2, use_distributed_optimizer, ...).
    """
    opt, precision = cfg.optimizer, cfg.precision
    kwargs = matching_fields(MCoreOptimizerConfig, (opt, precision), exclude=("fp8_recipe",))
    mcore_cfg = MCoreOptimizerConfig(**kwargs, params_dtype=precision.params_dtype)
    return get_megatron_optimizer(mcore_cfg, model)


@dataclass(frozen=True)
class ScheduleSteps:
    """Resolved step counts of the LR schedule (in optimizer steps)."""

    warmup: int
    decay: int
    wsd_decay: int | None


def schedule_steps(
    cfg: DLMConfig, train_iters: int, global_batch_size: int | None = None
) -> ScheduleSteps:
    """Warmup, decay and WSD-decay steps; Megatron-LM's ``--lr-*-samples`` are divided by the
    global batch size (rounded to the nearest step)."""
    opt = cfg.optimizer

    def steps(samples: int) -> int:
        gbs = global_batch_size or cfg.training.global_batch_size or 1
        return max(1, round(samples / gbs))

    if opt.lr_decay_iters is not None:
        decay = opt.lr_decay_iters
    elif opt.lr_decay_samples is not None:
        decay = steps(opt.lr_decay_samples)
    else:
        decay = train_iters
    decay = max(decay, 1)
    if opt.lr_warmup_fraction is not None:
        warmup = int(opt.lr_warmup_fraction * decay)
    elif opt.lr_warmup_samples:
        warmup = steps(opt.lr_warmup_samples)
    else:
        warmup = opt.lr_warmup_iters
    if warmup >= decay:
        raise ConfigError(
            f"the warmup ({warmup} steps: --lr-warmup-iters/--lr-warmup-fraction) must be "
            f"shorter than the decay ({decay} steps: --lr-decay-iters, default --train-iters)"
        )
    wsd = None
    if opt.lr_decay_style == "WSD":
        if opt.lr_wsd_decay_iters is not None:
            wsd = opt.lr_wsd_decay_iters
        elif opt.lr_wsd_decay_samples is not None:
            wsd = steps(opt.lr_wsd_decay_samples)
        else:
            wsd = max(1, round((opt.lr_wsd_decay_fraction or 0.1) * decay))
    return ScheduleSteps(warmup=warmup, decay=decay, wsd_decay=wsd)


def build_scheduler(
    cfg: DLMConfig, optimizer, train_iters: int, global_batch_size: int | None = None
) -> OptimizerParamScheduler:
    """megatron-core's OptimizerParamScheduler stepped once per optimizer step.

    A resumed run restores it at the saved step; ``--override-opt-param-scheduler`` and
    ``--use-checkpoint-opt-param-scheduler`` (Megatron-LM's flags, set on the scheduler) say
    whose schedule wins when the command line's differs from the checkpoint's.
    """
    steps = schedule_steps(cfg, train_iters, global_batch_size)
    opt = cfg.optimizer
    return OptimizerParamScheduler(
        optimizer,
        init_lr=opt.lr_warmup_init,
        max_lr=opt.lr,
        min_lr=opt.min_lr,
        lr_warmup_steps=steps.warmup,
        lr_decay_steps=steps.decay,
        lr_decay_style=opt.lr_decay_style,
        start_wd=opt.weight_decay,
        end_wd=opt.weight_decay,
        # Unused by a constant weight decay; the decay steps, so that it is not a schedule
        # difference of its own when --train-iters changes and --lr-decay-iters does not.
        wd_incr_steps=steps.decay,
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=opt.use_checkpoint_opt_param_scheduler,
        override_opt_param_scheduler=opt.override_opt_param_scheduler,
        wsd_decay_steps=steps.wsd_decay,
        lr_wsd_decay_style=opt.lr_wsd_decay_style if steps.wsd_decay else None,
    )


@dataclass(frozen=True)
class StepResult:
    """What happened in one optimizer step (the same on every rank)."""

    stepped: bool
    grad_norm: float
    reason: str | None  # "nan/inf loss", "nan/inf grad norm", "fp16 overflow" when skipped


@torch.no_grad()
def guarded_step(optimizer, clip_grad: float, loss_is_finite: bool = True) -> StepResult:
    """``optimizer.step()``, but a NaN/Inf loss or gradient norm skips the update.

    megatron-core's own step clips with ``max_norm / (norm + eps)``, which is NaN for a NaN norm
    and silently applies the NaN gradients; the DDP NaN check raises instead. Both lose the run,
    so we compute the norm first (the same collective the step does) and step only if finite.
    ``loss_is_finite`` must already agree across ranks.
    """
    if optimizer.prepare_grads():  # fp16: the loss scaler saw an overflow and backed off
        return StepResult(False, float("nan"), "fp16 overflow")
    grad_norm = float(optimizer.get_grad_norm())
    if not loss_is_finite:
        return StepResult(False, grad_norm, "nan/inf loss")
    if not math.isfinite(grad_norm):
        return StepResult(False, grad_norm, "nan/inf grad norm")
    if clip_grad > 0.0:
        for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
            params = opt.get_parameters()
            if params and not getattr(opt, "is_stub_optimizer", False):
                # Looked up at call time: the CPU shim may have wrapped it.
                clip_grads.clip_grad_by_total_norm_fp32(
                    params,
                    max_norm=clip_grad,
                    total_norm=grad_norm,
                    use_decoupled_grad=opt.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8,
                )
    stepped = optimizer.step_with_ready_grads()
    return StepResult(bool(stepped), grad_norm, None if stepped else "optimizer refused the step")
