"""The LR schedule in checkpoints, and Megatron-LM's two flags for a schedule that changed.

Resuming with another ``--train-iters``/``--train-tokens``, LR, warmup or decay is refused unless
``--override-opt-param-scheduler`` (this command line's schedule from the saved step) or
``--use-checkpoint-opt-param-scheduler`` (the checkpoint's) says which one to follow.
"""

from __future__ import annotations

import logging

from megatron_dlm.checkpoint.errors import CheckpointError

logger = logging.getLogger(__name__)


# The LR schedule as saved: megatron-core's scheduler state plus what it leaves out.
SCHEDULE_EXTRAS = ("init_lr", "wsd_decay_steps", "lr_wsd_decay_style")
SCHEDULE_FIELDS = {  # saved key -> (what it is, the flags that set it)
    "max_lr": ("learning rate", "--lr"),
    "min_lr": ("minimum learning rate", "--min-lr"),
    "init_lr": ("warmup start", "--lr-warmup-init"),
    "lr_warmup_steps": ("warmup steps", "--lr-warmup-iters/--lr-warmup-fraction"),
    "lr_decay_steps": (
        "decay steps",
        "--lr-decay-iters, default --train-iters/--train-tokens",
    ),
    "lr_decay_style": ("decay style", "--lr-decay-style"),
    "wsd_decay_steps": ("WSD decay steps", "--lr-wsd-decay-iters/--lr-wsd-decay-fraction"),
    "lr_wsd_decay_style": ("WSD decay style", "--lr-wsd-decay-style"),
    "start_wd": ("weight decay", "--weight-decay"),
    "end_wd": ("final weight decay", "--weight-decay"),
}


def scheduler_state(scheduler) -> dict:
    """megatron-core's ``OptimizerParamScheduler.state_dict()`` plus the warmup start and the
    WSD decay, which it does not save (its ``load_state_dict`` ignores the extra keys)."""
    return {**scheduler.state_dict(), **{key: getattr(scheduler, key) for key in SCHEDULE_EXTRAS}}


def schedule_differences(saved: dict, scheduler) -> list[str]:
    """What differs between a saved schedule and ``scheduler`` (this command line's)."""
    current = scheduler_state(scheduler)
    wsd = current.get("lr_decay_style") == "WSD" or saved.get("lr_decay_style") == "WSD"
    diffs = []
    for key, (what, flags) in SCHEDULE_FIELDS.items():
        if key not in saved or (key in ("wsd_decay_steps", "lr_wsd_decay_style") and not wsd):
            continue
        if saved[key] != current[key]:
            diffs.append(f"{what} ({flags}): checkpoint {saved[key]}, now {current[key]}")
    return diffs


def describe_schedule(values: dict) -> str:
    """One line for the log: ``cosine, lr 0.002 -> 0.0002, warmup 2, decay to step 8``."""
    text = (
        f"{values.get('lr_decay_style')}, lr {values.get('max_lr')} -> {values.get('min_lr')}, "
        f"warmup {values.get('lr_warmup_steps')}, decay to step {values.get('lr_decay_steps')}"
    )
    if values.get("lr_decay_style") == "WSD":
        text += f" (last {values.get('wsd_decay_steps')}: {values.get('lr_wsd_decay_style')})"
    return text


def check_schedule(saved: dict | None, scheduler) -> None:
    """Raise CheckpointError if the saved schedule differs and no scheduler flag says which
    one to follow (megatron-core's own check is an assertion after everything has loaded)."""
    if not saved or scheduler is None:
        return
    if scheduler.override_opt_param_scheduler or scheduler.use_checkpoint_opt_param_scheduler:
        return
    diffs = schedule_differences(saved, scheduler)
    if diffs:
        step = saved.get("num_steps", 0)
        raise CheckpointError(
            f"the LR schedule differs from the checkpoint's (saved at step {step}): "
            + "; ".join(diffs)
            + ". Pass --override-opt-param-scheduler to follow this command line's schedule "
            f"from step {step}, or --use-checkpoint-opt-param-scheduler to keep the checkpoint's"
        )


def load_scheduler_state(scheduler, saved: dict) -> None:
    """Restore the schedule at the saved step, as Megatron-LM's flags on ``scheduler`` say.

    ``override_opt_param_scheduler``: this command line's schedule from the saved step;
    ``use_checkpoint_opt_param_scheduler``: the checkpoint's; neither: the two must agree
    (:func:`check_schedule`).
    """
    check_schedule(saved, scheduler)
    override = scheduler.override_opt_param_scheduler
    keep = scheduler.use_checkpoint_opt_param_scheduler
    step = saved.get("num_steps", 0)
    saved = dict(saved)
    if keep:
        for key in SCHEDULE_EXTRAS:
            if key in saved:
                setattr(scheduler, key, saved[key])
    elif saved.get("wd_incr_style") == scheduler.wd_incr_style == "constant":
        saved["wd_incr_steps"] = scheduler.wd_incr_steps  # unused by a constant weight decay
    scheduler.load_state_dict(saved)
    # The optimizer's param groups carry max_lr/min_lr (restored from the checkpoint with the
    # optimizer), and megatron-core's get_lr prefers them: make them the schedule's.
    for group in scheduler.optimizer.param_groups:
        if group.get("default_config", True):
            group["max_lr"], group["min_lr"] = scheduler.max_lr, scheduler.min_lr
    scheduler.step(0)
    which = (
        "this command line's (--override-opt-param-scheduler)"
        if override
        else "the checkpoint's (--use-checkpoint-opt-param-scheduler)"
        if keep
        else "unchanged"
    )
    lr = scheduler.get_lr(scheduler.optimizer.param_groups[0])
    logger.info(
        "LR schedule: %s: %s; resuming at step %d with lr %.6E",
        which,
        describe_schedule(scheduler_state(scheduler)),
        step,
        lr,
    )
