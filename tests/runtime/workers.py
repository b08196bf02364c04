"""Rank functions for the runtime tests."""

from __future__ import annotations

import os
import time


def init_and_report(parallel_dict: dict) -> dict:
    from megatron_dlm.config import ParallelConfig
    from megatron_dlm.runtime.distributed import init_distributed

    ctx = init_distributed(ParallelConfig(**parallel_dict), seed=7)
    return {
        "rank": ctx.rank,
        "world": ctx.world_size,
        "dp": ctx.data_parallel_size,
        "tp_rank": ctx.tensor_model_parallel_rank,
        "pp_rank": ctx.pipeline_model_parallel_rank,
        "backend": ctx.backend,
    }


def raise_on_rank_one() -> int:
    import torch

    rank = int(os.environ["RANK"])
    if rank == 1:
        raise ValueError("rank one is broken")
    return rank + torch.zeros(1).numel()


def sleep_forever() -> None:
    time.sleep(3600)


def start_a_manager() -> int:
    """Start a multiprocessing Manager server and leave it running (as megatron-core's async
    checkpoint writer does); returns its pid."""
    import multiprocessing

    manager = multiprocessing.get_context("spawn").Manager()
    _LEFT_RUNNING.append(manager)
    return manager._process.pid


def die() -> None:
    """End the worker process at once (no cleanup, like a crash)."""
    import os

    os._exit(1)


_LEFT_RUNNING: list = []


def shim_scope() -> dict:
    """Which torch.cuda do megatron-core modules and everyone else see once the shim is on?"""
    import torch

    from megatron_dlm.runtime import cpu_shim

    active = cpu_shim.apply()
    from megatron.core.tensor_parallel import layers, random
    from megatron.core.transformer.moe import moe_utils

    try:
        torch.cuda.current_device()
        global_cuda = "works"
    except (RuntimeError, AssertionError, AttributeError) as exc:
        global_cuda = type(exc).__name__
    return {
        "active": active,
        "megatron_current_device": str(layers.torch.cuda.current_device()),
        "megatron_zeros_device": str(layers.torch.zeros(2, device="cuda").device),
        "megatron_device_is_cpu": str(random.torch.device("cuda", 0)),
        "isinstance_device": isinstance(torch.device("cpu"), layers.torch.device),
        "global_torch_untouched": layers.torch is not torch
        and torch.zeros is not layers.torch.zeros,
        "global_cuda": global_cuda,
        "te_names_defined": moe_utils.te_general_gemm is None,
        "rng_tracker_fork": _rng_tracker_forks(),
    }


def _rng_tracker_forks() -> bool:
    """The TP RNG tracker gives a distinct, reproducible stream inside fork()."""
    import torch
    from megatron.core import tensor_parallel

    tensor_parallel.model_parallel_cuda_manual_seed(
        123, tp_rank=0, ep_rank=0, etp_rank=0, force_reset_rng=True
    )
    tracker = tensor_parallel.get_cuda_rng_tracker()
    torch.manual_seed(5)
    outside = torch.rand(3)
    torch.manual_seed(5)
    with tracker.fork():
        inside = torch.rand(3)
    after = torch.rand(3)  # the default stream continues as if the fork never happened
    return bool(not torch.equal(outside, inside) and torch.equal(after, outside))


def report_the_same_error() -> tuple[bool, int | None, int | None]:
    """Every rank reports an error: (printed here, code known before, code known after)."""
    import torch

    from megatron_dlm.config import ParallelConfig
    from megatron_dlm.runtime.distributed import init_distributed
    from megatron_dlm.runtime.error_report import exit_code_reported, report_error

    init_distributed(ParallelConfig(), seed=7)
    before = exit_code_reported(wait_s=0)
    torch.distributed.barrier()  # nobody has reported yet
    printed = report_error("tool: error: the same bad input on every rank", 2)
    torch.distributed.barrier()
    return printed, before, exit_code_reported()
