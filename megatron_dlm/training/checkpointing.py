"""Checkpoints through megatron-core dist_checkpointing (torch_dist format), Megatron's layout.

    <save>/iter_0000500/                      one dist_checkpointing directory per save
    <save>/latest_checkpointed_iteration.txt  the tracker, written last

Every tensor is saved under its global (layout-independent) key, so a checkpoint written at one
TP/PP/EP layout loads at any other: dist_checkpointing reshards on load. A save goes to
``iter_XXXXXXX.tmp`` first and is renamed when every rank has written its shards; the tracker is
replaced atomically after that, so a process killed mid-save leaves the previous checkpoint as
the one that loads.

The distributed optimizer's state is the exception: by default it is saved in megatron-core's
``dp_reshardable`` format (each rank writes and reads its own shard, no gather), which reloads
at any DP size but only at the TP/PP/EP layout it was saved at; the layout is recorded in the
checkpoint (``parallel_layout``) and checked on load. ``fully_reshardable`` (Megatron's
``--dist-ckpt-optim-fully-reshardable``) reloads anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
from megatron.core.utils import unwrap_model

logger = logging.getLogger(__name__)

TRACKER_FILE = "latest_checkpointed_iteration.txt"
CHECKPOINT_VERSION = 1
DP_RESHARDABLE = "dp_reshardable"
FULLY_RESHARDABLE = "fully_reshardable"

# Model fields that must match for a checkpoint to load (parallel layout may differ).
ARCHITECTURE_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "kv_channels",
    "position_embedding_type",
    "normalization",
    "swiglu",
    "qk_layernorm",
    "untie_embeddings_and_output_weights",
    "disable_bias_linear",
    "add_qkv_bias",
    "num_experts",
    "moe_ffn_hidden_size",
    "moe_shared_expert_intermediate_size",
    "moe_layer_freq",
)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model being trained."""


@dataclass
class TrainState:
    """Progress that a resumed run must continue from (saved with every checkpoint)."""

    iteration: int = 0
    consumed_samples: int = 0
    """Global training samples consumed: the data position."""
    skipped_iters: int = 0
    """Total steps skipped for NaN/Inf so far."""
    floating_point_operations: float = 0.0
    wandb_run_id: str | None = None
    """The Weights & Biases run this training run logs to (a resumed run continues it)."""


def checkpoint_name(root: str | Path, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:07d}"


def read_tracker(root: str | Path) -> int | None:
    """The latest complete iteration in ``root``, or None if it has no checkpoint."""
    tracker = Path(root) / TRACKER_FILE
    if not tracker.is_file():
        return None
    text = tracker.read_text().strip()
    try:
        return int(text)
    except ValueError as exc:
        raise CheckpointError(f"{tracker}: expected an iteration number, found {text!r}") from exc


def _is_rank0() -> bool:
    return torch.distributed.get_rank() == 0


def _barrier() -> None:
    torch.distributed.barrier()


def model_sharded_state_dict(model_chunks: list[torch.nn.Module], metadata=None) -> dict:
    """Megatron-LM's layout: ``model`` for one chunk, ``model0``, ``model1``... for several."""
    chunks = unwrap_model(model_chunks)
    kwargs = {"metadata": metadata} if metadata is not None else {}
    if len(chunks) == 1:
        return {"model": chunks[0].sharded_state_dict(**kwargs)}
    return {f"model{i}": chunk.sharded_state_dict(**kwargs) for i, chunk in enumerate(chunks)}


def _load_model_state(model_chunks, state: dict) -> None:
    chunks = unwrap_model(model_chunks)
    if len(chunks) == 1:
        chunks[0].load_state_dict(state["model"])
    else:
        for i, chunk in enumerate(chunks):
            chunk.load_state_dict(state[f"model{i}"])


def _sharded_metadata(optimizer, *, fully_reshardable: bool = False) -> dict:
    """Content metadata of a save: how megatron-core lays out the distributed optimizer.

    ``dp_reshardable`` (default, Megatron-LM's): every rank writes its own optimizer shard and
    reads it back, with no gather; the DP size may change, TP/PP/EP may not.
    ``fully_reshardable`` (``--dist-ckpt-optim-fully-reshardable``): per-parameter state,
    gathered on DP rank 0 to save; reloads at any layout.
    """
    metadata: dict[str, Any] = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}
    if optimizer is not None and _uses_distributed_optimizer(optimizer):
        sharding = FULLY_RESHARDABLE if fully_reshardable else DP_RESHARDABLE
        metadata["distrib_optim_sharding_type"] = sharding
    return metadata


def _uses_distributed_optimizer(optimizer) -> bool:
    return any(isinstance(opt, DistributedOptimizer) for opt in _optimizers(optimizer))


def _optimizers(optimizer) -> list:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def _wraps_torch_adam(opt) -> bool:
    """A DistributedOptimizer over torch's Adam(W) (no TE/apex FusedAdam), the path megatron-core
    0.16.1's checkpoint code mishandles; with FusedAdam the step lives in the param groups."""
    return (
        isinstance(opt, DistributedOptimizer)
        and isinstance(opt.optimizer, torch.optim.Adam | torch.optim.AdamW)
        and not opt.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8
    )


def _materialize_optimizer_state(optimizer) -> None:
    """Give every parameter of a not-yet-stepped torch Adam its (zero) state and step.

    megatron-core's DistributedOptimizer without Transformer Engine or apex wraps
    ``torch.optim.Adam(W)``, and its ``state_dict()`` reads the step from every parameter's
    state (``assert len(steps) == 1``). torch creates that state lazily at the first step, so
    ``sharded_state_dict()`` of a fresh optimizer (every load, and a save before any step)
    failed; with TE/apex the step lives in the param groups instead. Zero moments at step 0
    are what torch would create, so training continues exactly as from a fresh optimizer.
    """
    for opt in _optimizers(optimizer):
        if not _wraps_torch_adam(opt):
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
def _step_kept_while_loading(optimizer):
    """Let megatron-core's fully_reshardable loader skip torch Adam's step, as it means to.

    It leaves ``step`` out of the tensors it restores ("handled separately") but then copies
    every key of the destination state, where torch's Adam keeps ``step`` (KeyError). For the
    load only, a missing key keeps the destination's value; :func:`_restore_adam_steps` then
    sets the step.
    """
    patched = []
    for opt in _optimizers(optimizer):
        if not _wraps_torch_adam(opt):
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


def _restore_adam_steps(optimizer) -> None:
    """Set each parameter's Adam step to the loaded one, in a tensor of its own.

    Without TE/apex, megatron-core's DistributedOptimizer restores the step into the param
    groups and then puts a single step tensor into every parameter's state, which the
    ``dp_reshardable`` loader overwrites with the step of the state it loads into (0 for a
    fresh optimizer). torch's Adam reads (and increments in place) ``state["step"]`` per
    parameter: a wrong step changes the bias correction, a shared one advances once per
    parameter per step.
    """
    for opt in _optimizers(optimizer):
        if not _wraps_torch_adam(opt):
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


def _rng_state() -> ShardedObject:
    """This rank's RNG states; one shard per rank, restored only at the same world size."""
    state = {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    return ShardedObject("rng_state", state, (world,), (rank,), replica_id=0)


def _set_rng_state(state: dict) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _state_dict(model, optimizer, scheduler, metadata, *, with_optimizer: bool, is_loading: bool):
    state = model_sharded_state_dict(model, metadata)
    if with_optimizer and optimizer is not None:
        _materialize_optimizer_state(optimizer)
        state["optimizer"] = optimizer.sharded_state_dict(
            state, is_loading=is_loading, metadata=metadata
        )
        state["opt_param_scheduler"] = scheduler_state(scheduler) if scheduler is not None else None
    state["rng_state"] = _rng_state()
    return state


def save_checkpoint(
    root: str | Path,
    train_state: TrainState,
    model: list[torch.nn.Module],
    optimizer=None,
    scheduler=None,
    *,
    config: dict | None = None,
    tokenizer: dict | None = None,
    keep_last_k: int | None = None,
    fully_reshardable: bool = False,
) -> Path:
    """Save everything a bit-exact resume needs (collective: every rank calls it).

    ``fully_reshardable`` saves the distributed optimizer's state in megatron-core's
    ``fully_reshardable`` format (any TP/PP/EP later) instead of ``dp_reshardable``.
    """
    root = Path(root)
    final = checkpoint_name(root, train_state.iteration)
    tmp = final.with_name(final.name + ".tmp")
    if _is_rank0():
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a save that was killed
        tmp.mkdir()
    _barrier()
    metadata = _sharded_metadata(optimizer, fully_reshardable=fully_reshardable)
    state = _state_dict(
        model, optimizer, scheduler, metadata, with_optimizer=True, is_loading=False
    )
    state.update(
        checkpoint_version=CHECKPOINT_VERSION,
        iteration=train_state.iteration,
        train_state=asdict(train_state),
        config=config,
        tokenizer=tokenizer,
        world_size=torch.distributed.get_world_size(),
        parallel_layout=parallel_layout(model),
    )
    dist_checkpointing.save(state, str(tmp), content_metadata=metadata)
    _barrier()
    if _is_rank0():
        replaced = final.with_name(final.name + ".old")
        if final.exists():  # the same iteration saved again: never delete before replacing
            final.rename(replaced)
        tmp.rename(final)
        shutil.rmtree(replaced, ignore_errors=True)
        tracker_tmp = root / (TRACKER_FILE + ".tmp")
        tracker_tmp.write_text(f"{train_state.iteration}\n")
        tracker_tmp.replace(root / TRACKER_FILE)
        if keep_last_k:
            _remove_old_checkpoints(root, keep_last_k)
    _barrier()
    logger.info("saved checkpoint %s", final)
    return final


def _remove_old_checkpoints(root: Path, keep: int) -> None:
    saved = sorted(
        (p for p in root.glob("iter_*") if p.is_dir() and p.name[5:].isdigit()),
        key=lambda p: p.name,
    )
    for old in saved[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
        logger.info("removed old checkpoint %s (--keep-last-k %d)", old, keep)


def has_checkpoint(path: str | Path) -> bool:
    """A checkpoint root with a tracker, or one ``iter_*`` checkpoint directory."""
    path = Path(path)
    return (path / "metadata.json").is_file() or (path.is_dir() and read_tracker(path) is not None)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a root with a tracker, or an ``iter_*`` directory itself."""
    path = Path(path)
    if (path / "metadata.json").is_file():
        return path
    iteration = read_tracker(path)
    if iteration is None:
        raise CheckpointError(f"{path}: no {TRACKER_FILE} and not a checkpoint directory")
    directory = checkpoint_name(path, iteration)
    if not directory.is_dir():
        raise CheckpointError(f"{path}/{TRACKER_FILE} names iteration {iteration}, "
                              f"but {directory} does not exist")  # fmt: skip
    return directory


def read_checkpoint_info(path: str | Path) -> dict:
    """The common (non-tensor) part of a checkpoint: config, tokenizer, train state."""
    directory = resolve_checkpoint(path)
    try:
        return dist_checkpointing.load_common_state_dict(str(directory))
    except Exception as exc:
        raise CheckpointError(f"{directory}: cannot read checkpoint metadata ({exc})") from exc


def saved_vocab_rows(directory: str | Path) -> int | None:
    """Rows of the saved (padded) word embedding: the padded vocabulary it was trained with.

    Megatron pads the vocabulary to a multiple of ``make_vocab_size_divisible_by`` x TP, so a
    checkpoint saved at one TP may hold more rows than another TP would pad to.
    """
    directory = resolve_checkpoint(directory)
    try:
        metadata = dist_checkpointing.load_tensors_metadata(str(directory))
    except BaseException as exc:  # torch's CheckpointException derives from BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise CheckpointError(f"{directory}: cannot read the tensor metadata ({exc})") from exc
    for key, tensor in metadata.items():
        if key.endswith("embedding.word_embeddings.weight"):
            return int(tensor.global_shape[0])
    return None


def _objective_of(config: dict | None) -> str | None:
    """``--objective`` of a ``DLMConfig.to_dict()`` (None when unknown)."""
    return ((config or {}).get("objective") or {}).get("objective")


def check_compatible(
    info: dict, config: dict | None, tokenizer: dict | None, *, finetune: bool = False
) -> None:
    """Raise CheckpointError if the checkpoint's architecture or tokenizer differs.

    Resuming also needs the same ``--objective``: continuing an AR run as a DLM (or back)
    would silently change what is trained. ``finetune`` (new weights-only run) allows it, for
    adapting an AR checkpoint into a DLM.
    """
    saved_objective, objective = _objective_of(info.get("config")), _objective_of(config)
    if saved_objective and objective and saved_objective != objective:
        if not finetune:
            raise CheckpointError(
                f"--objective: checkpoint {saved_objective!r}, now {objective!r}; resuming must "
                "keep the objective (pass --finetune to start a new run from its weights)"
            )
        logger.info("--finetune: an --objective %s run from %s weights", objective, saved_objective)
    saved_model = (info.get("config") or {}).get("model", {})
    model = (config or {}).get("model", {})
    diffs = [
        f"--{name.replace('_', '-')}: checkpoint {saved_model.get(name)!r}, now {model.get(name)!r}"
        for name in ARCHITECTURE_FIELDS
        if name in saved_model and name in model and saved_model[name] != model[name]
    ]
    if diffs:
        raise CheckpointError("the checkpoint's model does not match: " + "; ".join(diffs))
    saved_tok = info.get("tokenizer")
    if saved_tok and tokenizer:
        tok_diffs = [
            f"{key}: checkpoint {saved_tok.get(key)!r}, now {tokenizer.get(key)!r}"
            for key in ("vocab_size", "mask_id", "eod", "pad", "sha256")
            if saved_tok.get(key) is not None
            and tokenizer.get(key) is not None
            and saved_tok[key] != tokenizer[key]
        ]
        if tok_diffs:
            raise CheckpointError(
                "the checkpoint was trained with another tokenizer: " + "; ".join(tok_diffs)
            )


def load_checkpoint(
    path: str | Path,
    model: list[torch.nn.Module],
    optimizer=None,
    scheduler=None,
    *,
    config: dict | None = None,
    tokenizer: dict | None = None,
    load_optim: bool = True,
    load_rng: bool = True,
    finetune: bool = False,
) -> TrainState:
    """Load a checkpoint saved at any layout into this rank's model (collective).

    Returns the train state to continue from (a fresh one with ``finetune``).
    """
    directory = resolve_checkpoint(path)
    info = read_checkpoint_info(directory)
    check_compatible(info, config, tokenizer, finetune=finetune)
    saved_world = info.get("world_size")
    with_optimizer = load_optim and not finetune and optimizer is not None
    metadata = dist_checkpointing.load_content_metadata(str(directory)) or {}
    if with_optimizer and _uses_distributed_optimizer(optimizer) != (
        "distrib_optim_sharding_type" in metadata
    ):
        raise CheckpointError(
            f"{directory}: optimizer state was saved "
            f"{'with' if 'distrib_optim_sharding_type' in metadata else 'without'} "
            "--use-distributed-optimizer; load it the same way, or pass --no-load-optim"
        )
    if with_optimizer:
        check_schedule(info.get("opt_param_scheduler"), scheduler)
        check_optimizer_layout(
            info.get("parallel_layout"),
            parallel_layout(model),
            metadata.get("distrib_optim_sharding_type"),
        )
    state = _state_dict(
        model, optimizer, scheduler, metadata, with_optimizer=with_optimizer, is_loading=True
    )
    same_world = saved_world in (None, torch.distributed.get_world_size())
    restore_rng = load_rng and not finetune and same_world
    if not restore_rng:
        state.pop("rng_state")
    try:
        loaded = dist_checkpointing.load(state, str(directory))
    except Exception as exc:
        raise CheckpointError(f"{directory}: failed to load ({type(exc).__name__}: {exc})") from exc
    _load_model_state(model, loaded)
    if with_optimizer:
        try:
            # no_grad: megatron-core's dp_reshardable load copies into views of the fp32
            # parameters (leaves that require grad) without it (its other loaders have it).
            with torch.no_grad(), _step_kept_while_loading(optimizer):
                optimizer.load_state_dict(loaded["optimizer"])
        except (AssertionError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"{directory}: the optimizer state does not fit this run "
                f"({type(exc).__name__}: {exc}); pass --no-load-optim to restart the optimizer"
            ) from exc
        _restore_adam_steps(optimizer)
        if scheduler is not None and loaded.get("opt_param_scheduler"):
            load_scheduler_state(scheduler, loaded["opt_param_scheduler"])
    if restore_rng:
        _set_rng_state(loaded["rng_state"])
    elif load_rng and not finetune:
        logger.warning("world size changed since the checkpoint: RNG states start fresh")
    if finetune:
        return TrainState()
    return TrainState(**loaded["train_state"])


def save_model_weights(model_chunks: list[torch.nn.Module], directory: str | Path) -> None:
    """Save only the weights into ``directory`` (collective). For tests and conversions."""
    directory = Path(directory)
    if _is_rank0():
        directory.mkdir(parents=True, exist_ok=True)
    _barrier()
    dist_checkpointing.save(model_sharded_state_dict(model_chunks), str(directory))


def load_model_weights(model_chunks: list[torch.nn.Module], directory: str | Path) -> None:
    """Load weights saved at any layout (by either save function) into this rank's chunks."""
    state = dist_checkpointing.load(model_sharded_state_dict(model_chunks), str(directory))
    _load_model_state(model_chunks, state)
