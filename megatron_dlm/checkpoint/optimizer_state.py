"""The distributed optimizer's state in checkpoints: its two formats, and megatron-core fixes.

``dp_reshardable`` (default, Megatron-LM's): every rank writes its own optimizer shard and reads
it back, with no gather; the DP size may change, TP/PP/EP may not, so the layout a checkpoint was
saved at is recorded (``parallel_layout``) and checked on load. ``fully_reshardable``
(``--dist-ckpt-optim-fully-reshardable``): per-parameter state gathered on DP rank 0 to save;
reloads at any layout.

Without Transformer Engine or apex, megatron-core 0.16.1's DistributedOptimizer wraps
``torch.optim.Adam(W)`` and its checkpoint code mishandles that path in four places (the step is
read from per-parameter state torch creates lazily; the dp_reshardable loader lacks no_grad and
overwrites the steps; the fully_reshardable loader drops ``step`` then copies every key). The
functions below, gated by :func:`wraps_torch_adam`, make both formats resume bit-exactly.
"""

from __future__ import annotations

import contextlib

import torch
from megatron.core import parallel_state
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
from megatron.core.utils import unwrap_model

from megatron_dlm.checkpoint.errors import CheckpointError

DP_RESHARDABLE = "dp_reshardable"
FULLY_RESHARDABLE = "fully_reshardable"


def uses_distributed_optimizer(optimizer) -> bool:
    return any(isinstance(opt, DistributedOptimizer) for opt in _optimizers(optimizer))


def _optimizers(optimizer) -> list:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def wraps_torch_adam(opt) -> bool:
    """A DistributedOptimizer over torch's Adam(W) (no TE/apex FusedAdam), the path megatron-core
    0.16.1's checkpoint code mishandles; with FusedAdam the step lives in the param groups."""
    return (
        isinstance(opt, DistributedOptimizer)
        and isinstance(opt.optimizer, torch.optim.Adam | torch.optim.AdamW)
        and not opt.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8
    )


def materialize_optimizer_state(optimizer) -> None:
    """Give every parameter of a not-yet-stepped torch Adam its (zero) state and step.

    megatron-core's DistributedOptimizer without Transformer Engine or apex wraps
    ``torch.optim.Adam(W)``, and its ``state_dict()`` reads the step from every parameter's
    state (``assert len(steps) == 1``). torch creates that state lazily at the first step, so
    ``sharded_state_dict()`` of a fresh optimizer (every load, and a save before any step)
    failed; with TE/apex the step lives in the param groups instead. Zero moments at step 0
    are what torch would create, so training continues exactly as from a fresh optimizer.
    """
    for opt in _optimizers(optimizer):
        if not wraps_torch_adam(opt):
            continue
        for group in opt.optimizer.param_groups:
            for param in group["params"]:
                if not opt.optimizer.state[param]:
                    opt.optimizer.state[param] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(param),
                        "exp_avg_sq": torch.zeros_like(param),
                    }


@contextlib.contextmanager
def step_kept_while_loading(optimizer):
    """Let megatron-core's fully_reshardable loader skip torch Adam's step, as it means to.

    It leaves ``step`` out of the tensors it restores ("handled separately") but then copies
    every key of the destination state, where torch's Adam keeps ``step`` (KeyError). For the
    load only, a missing key keeps the destination's value; :func:`restore_adam_steps` then
    sets the step.
    """
    patched = []
    for opt in _optimizers(optimizer):
        if not wraps_torch_adam(opt):
            continue
        original = opt._set_main_param_and_optimizer_states

        def set_states(model_param, tensors, _opt=opt, _original=original):
            current = _opt._get_main_param_and_optimizer_states(model_param)
            _original(model_param, {**current, **tensors})

        opt._set_main_param_and_optimizer_states = set_states
        patched.append(opt)
    try:
        yield
    finally:
        for opt in patched:
            del opt._set_main_param_and_optimizer_states  # back to the class's method


def restore_adam_steps(optimizer) -> None:
    """Set each parameter's Adam step to the loaded one, in a tensor of its own.

    Without TE/apex, megatron-core's DistributedOptimizer restores the step into the param
    groups and then puts a single step tensor into every parameter's state, which the
    ``dp_reshardable`` loader overwrites with the step of the state it loads into (0 for a
    fresh optimizer). torch's Adam reads (and increments in place) ``state["step"]`` per
    parameter: a wrong step changes the bias correction, a shared one advances once per
    parameter per step.
    """
    for opt in _optimizers(optimizer):
        if not wraps_torch_adam(opt):
            continue
        for group in opt.optimizer.param_groups:
            if "step" not in group or group["step"] is None:
                continue
            for param in group["params"]:
                state = opt.optimizer.state.get(param)
                if state and isinstance(state.get("step"), torch.Tensor):
                    state["step"] = torch.tensor(float(group["step"]), dtype=state["step"].dtype)


def parallel_layout(model: list[torch.nn.Module]) -> dict[str, int | None]:
    """The layout this rank runs at, by flag name (recorded in every checkpoint).

    ``ddp_bucket_size`` is the gradient bucket size megatron-core's DDP resolved (None: one
    bucket); the ``dp_reshardable`` optimizer format depends on the buckets.
    """
    moe = bool(getattr(unwrap_model(model)[0].config, "num_moe_experts", None))
    return {
        "tensor_model_parallel_size": parallel_state.get_tensor_model_parallel_world_size(),
        "pipeline_model_parallel_size": parallel_state.get_pipeline_model_parallel_world_size(),
        "num_virtual_stages_per_pipeline_rank": len(model) if len(model) > 1 else None,
        "expert_model_parallel_size": (
            parallel_state.get_expert_model_parallel_world_size() if moe else None
        ),
        "expert_tensor_parallel_size": (
            parallel_state.get_expert_tensor_parallel_world_size() if moe else None
        ),
        "context_parallel_size": parallel_state.get_context_parallel_world_size(),
        "data_parallel_size": parallel_state.get_data_parallel_world_size(),
        "ddp_bucket_size": getattr(model[0], "bucket_size", None),
    }


# What the dp_reshardable optimizer format needs to stay the same (the DP and CP sizes may
# change: both only reshard the data-parallel dimension of the optimizer state).
DP_RESHARDABLE_FIXED = (
    "tensor_model_parallel_size",
    "pipeline_model_parallel_size",
    "num_virtual_stages_per_pipeline_rank",
    "expert_model_parallel_size",
    "expert_tensor_parallel_size",
    "ddp_bucket_size",
)


def check_optimizer_layout(saved: dict | None, current: dict, sharding: str | None) -> None:
    """Raise CheckpointError if optimizer state saved as ``sharding`` cannot load here."""
    if sharding != DP_RESHARDABLE or not saved:
        return
    diffs = [
        f"{'--' + key.replace('_', '-')}: checkpoint {saved.get(key)}, now {current.get(key)}"
        for key in DP_RESHARDABLE_FIXED
        if key in saved and saved.get(key) != current.get(key)
    ]
    if diffs:
        raise CheckpointError(
            "the distributed-optimizer state was saved in the dp_reshardable format, which "
            "reloads only at the same TP/PP/EP layout and gradient buckets (the DP size may "
            "change), but " + "; ".join(diffs) + ". Save with "
            "--dist-ckpt-optim-fully-reshardable for runs that change TP/PP/EP, or pass "
            "--no-load-optim to load the model and restart the optimizer"
        )
