"""Parallel layout: tensor, pipeline, expert, context and (derived) data parallelism."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from megatron_dlm.config.base import ConfigError, require

logger = logging.getLogger(__name__)


@dataclass
class ParallelConfig:
    """Process layout; the data-parallel size is derived from the world size."""

    tensor_model_parallel_size: int = 1
    """Tensor-parallel size (TP)."""
    pipeline_model_parallel_size: int = 1
    """Pipeline-parallel size (PP)."""
    num_virtual_stages_per_pipeline_rank: int | None = None
    """Model chunks per pipeline rank for the interleaved schedule (virtual pipeline)."""
    expert_model_parallel_size: int = 1
    """Expert-parallel size (EP) for MoE layers."""
    expert_tensor_parallel_size: int | None = None
    """Tensor-parallel size inside each expert (ETP). Default: --tensor-model-parallel-size."""
    context_parallel_size: int = 1
    """Context-parallel size (CP): splits each sequence across ranks (Transformer Engine)."""
    sequence_parallel: bool = False
    """Shard norms, dropout and residuals along the sequence across the TP group (turned off,
    with a warning, at --tensor-model-parallel-size 1, as in Megatron-LM)."""
    num_distributed_optimizer_instances: int = 1
    """Megatron-LM's partial distributed optimizer: the data-parallel ranks form this many
    instances, each holding a whole copy of the optimizer state sharded over its own ranks;
    gradients are reduce-scattered within an instance and all-reduced across instances
    (megatron-core's DDP and process groups; needs --use-distributed-optimizer). MegaDLMs' 1.7B
    launcher uses 8 (one instance per node)."""
    distributed_backend: Literal["auto", "nccl", "gloo"] = "auto"
    """torch.distributed backend: 'auto' is NCCL with CUDA and gloo without."""
    distributed_timeout_minutes: int = 10
    """Timeout of collective operations."""

    def __post_init__(self):
        for name in (
            "tensor_model_parallel_size",
            "pipeline_model_parallel_size",
            "expert_model_parallel_size",
            "context_parallel_size",
        ):
            require(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be at least 1")
        if self.expert_tensor_parallel_size is None:
            self.expert_tensor_parallel_size = self.tensor_model_parallel_size
        require(self.expert_tensor_parallel_size >= 1, "--expert-tensor-parallel-size must be >= 1")
        require(
            self.num_distributed_optimizer_instances >= 1,
            "--num-distributed-optimizer-instances must be >= 1",
        )
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            logger.warning(
                "--sequence-parallel is turned off: --tensor-model-parallel-size is 1 "
                "(as Megatron-LM does)"
            )
            self.sequence_parallel = False
        if self.num_virtual_stages_per_pipeline_rank is not None:
            require(
                self.pipeline_model_parallel_size > 1,
                "--num-virtual-stages-per-pipeline-rank needs --pipeline-model-parallel-size > 1",
            )
            require(
                self.num_virtual_stages_per_pipeline_rank >= 1,
                "--num-virtual-stages-per-pipeline-rank must be at least 1",
            )
            if self.num_virtual_stages_per_pipeline_rank == 1:
                self.num_virtual_stages_per_pipeline_rank = None

    @property
    def model_parallel_size(self) -> int:
        """Ranks holding one replica of the dense model: TP x PP x CP."""
        return (
            self.tensor_model_parallel_size
            * self.pipeline_model_parallel_size
            * self.context_parallel_size
        )

    def data_parallel_size(self, world_size: int) -> int:
        """DP for ``world_size`` ranks; raises :class:`ConfigError` if the layout does not fit."""
        tp, pp, cp = (
            self.tensor_model_parallel_size,
            self.pipeline_model_parallel_size,
            self.context_parallel_size,
        )
        if world_size % self.model_parallel_size:
            raise ConfigError(
                f"world size {world_size} is not divisible by --tensor-model-parallel-size ({tp}) "
                f"x --pipeline-model-parallel-size ({pp}) x --context-parallel-size ({cp}) "
                f"= {self.model_parallel_size}"
            )
        expert_mp = self.expert_model_parallel_size * self.expert_tensor_parallel_size
        if (world_size // pp) % expert_mp:
            raise ConfigError(
                f"world size {world_size} / --pipeline-model-parallel-size ({pp}) is not "
                f"divisible by --expert-model-parallel-size ({self.expert_model_parallel_size}) "
                f"x --expert-tensor-parallel-size ({self.expert_tensor_parallel_size})"
            )
        dp = world_size // self.model_parallel_size
        instances = self.num_distributed_optimizer_instances
        if (dp * self.context_parallel_size) % instances:
            raise ConfigError(
                f"the data-parallel size ({dp}) x --context-parallel-size "
                f"({self.context_parallel_size}) is not divisible by "
                f"--num-distributed-optimizer-instances ({instances})"
            )
        expert_dp = world_size // pp // expert_mp
        if self.expert_model_parallel_size > 1 and expert_dp % instances:
            raise ConfigError(
                f"the expert data-parallel size ({expert_dp} = world {world_size} / PP {pp} / "
                f"EP x ETP {expert_mp}) is not divisible by --num-distributed-optimizer-instances "
                f"({instances})"
            )
        return dp
