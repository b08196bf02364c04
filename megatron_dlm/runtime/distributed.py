"""Process groups and seeding: torch.distributed + megatron-core parallel state.

Works under ``torchrun`` (env:// rendezvous) and in a plain single process, with NCCL on GPUs
and gloo on CPUs. On a machine without CUDA the CPU shim is applied first.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from megatron_dlm.config import ParallelConfig
from megatron_dlm.runtime import cpu_shim

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the layout (read once after initialisation)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    data_parallel_size: int
    tensor_model_parallel_rank: int
    pipeline_model_parallel_rank: int
    data_parallel_rank: int
    expert_model_parallel_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _resolve_backend(requested: str) -> str:
    if requested == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if requested == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("--distributed-backend nccl needs CUDA; use gloo (or auto) on CPUs")
    return requested


def init_distributed(parallel: ParallelConfig, seed: int = 1234) -> DistributedContext:
    """Initialise torch.distributed and megatron-core's parallel state, then seed all RNGs.

    Outside torchrun (no ``RANK``/``WORLD_SIZE`` in the environment) this sets up a world of
    one process. Raises :class:`~megatron_dlm.config.ConfigError` if the world size does not
    fit the layout.
    """
    from megatron.core import parallel_state

    cpu_shim.apply()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    world_size = int(os.environ["WORLD_SIZE"])
    dp = parallel.data_parallel_size(world_size)  # validates before any process group exists

    backend = _resolve_backend(parallel.distributed_backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend=backend,
            init_method="env://",
            timeout=datetime.timedelta(minutes=parallel.distributed_timeout_minutes),
            **({"device_id": device} if backend == "nccl" else {}),
        )
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=parallel.tensor_model_parallel_size,
            pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
            virtual_pipeline_model_parallel_size=parallel.num_virtual_stages_per_pipeline_rank,
            context_parallel_size=parallel.context_parallel_size,
            expert_model_parallel_size=parallel.expert_model_parallel_size,
            expert_tensor_parallel_size=parallel.expert_tensor_parallel_size,
            distributed_timeout_minutes=parallel.distributed_timeout_minutes,
            num_distributed_optimizer_instances=parallel.num_distributed_optimizer_instances,
        )
    set_seed(seed)
    ctx = DistributedContext(
        rank=torch.distributed.get_rank(),
        world_size=world_size,
        local_rank=local_rank,
        device=device,
        backend=backend,
        data_parallel_size=dp,
        tensor_model_parallel_rank=parallel_state.get_tensor_model_parallel_rank(),
        pipeline_model_parallel_rank=parallel_state.get_pipeline_model_parallel_rank(),
        data_parallel_rank=parallel_state.get_data_parallel_rank(),
        expert_model_parallel_rank=parallel_state.get_expert_model_parallel_rank(),
    )
    logger.info(
        "initialised %s: world %d = TP %d x PP %d x CP %d x DP %d (EP %d, ETP %d)",
        backend,
        world_size,
        parallel.tensor_model_parallel_size,
        parallel.pipeline_model_parallel_size,
        parallel.context_parallel_size,
        dp,
        parallel.expert_model_parallel_size,
        parallel.expert_tensor_parallel_size,
    )
    return ctx


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch, and megatron-core's tensor/expert-parallel RNG tracker.

    As Megatron-LM: each pipeline stage offsets the seed by 100 x its rank; the tracker gives
    tensor-parallel ranks distinct streams for dropout inside TP regions.
    """
    from megatron.core import parallel_state, tensor_parallel

    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed % 2**32)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed, force_reset_rng=True)


def destroy_distributed(barrier: bool = True) -> None:
    """Tear down megatron-core's groups and the default process group (safe to call twice).

    Args:
        barrier: wait for every rank first (the normal end of a run). Pass False after an
            error: the other ranks may be inside a collective this rank will never join.
    """
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if barrier:
            with contextlib.suppress(Exception):
                torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    # The groups' C++ objects (and gloo's I/O threads, which spin once their peers are gone)
    # live until the last Python reference, often in a cycle through the model or optimizer:
    # collect now, so a process that builds several runs (tests, tools) does not accumulate them.
    gc.collect()


@contextlib.contextmanager
def distributed(parallel: ParallelConfig, seed: int = 1234) -> Iterator[DistributedContext]:
    """``with distributed(cfg.parallel) as ctx:`` initialise, run, always tear down."""
    ctx = init_distributed(parallel, seed)
    try:
        yield ctx
    finally:
        destroy_distributed()


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Run inside a one-process torch.distributed world at TP=PP=EP=1 (made here unless one
    exists; then the caller owns it).

    Tools that reshard any saved layout into one process (export, import, verification) use it.

    Raises:
        RuntimeError: a world of more than one process already exists (launched with torchrun).
    """
    from megatron.core import parallel_state

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_world_size() != 1:
            raise RuntimeError(
                "this tool runs in a single process (it reshards any saved layout to "
                "TP=PP=EP=1); launch it with python, not torchrun"
            )
        if not parallel_state.model_parallel_is_initialized():
            init_distributed(ParallelConfig())
        yield
        return
    init_distributed(ParallelConfig())
    try:
        yield
    finally:
        destroy_distributed()
