"""Configuration: one dataclass per concern, composed into :class:`DLMConfig`.

Library code receives these objects explicitly; only :mod:`megatron_dlm.config.cli` knows about
argparse and YAML.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from megatron_dlm.config.base import ConfigError, build_section, require
from megatron_dlm.config.data import DataConfig
from megatron_dlm.config.layout import check_layout
from megatron_dlm.config.model import ModelConfig
from megatron_dlm.config.objective import ObjectiveConfig
from megatron_dlm.config.parallel import ParallelConfig
from megatron_dlm.config.precision import PrecisionConfig
from megatron_dlm.config.training import (
    CheckpointConfig,
    LoggingConfig,
    OptimizerConfig,
    TrainingConfig,
)


@dataclass
class DLMConfig:
    """Everything a run needs, section by section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self):
        if self.training.dry_run and getattr(self.model, "_transformer_impl_auto", False):
            # A dry run sizes the GPU job, whatever machine it runs on.
            self.model.transformer_impl = "transformer_engine"
        check_layout(self.model, self.parallel, self.precision, self.objective)
        if self.parallel.num_distributed_optimizer_instances > 1:
            require(
                self.optimizer.use_distributed_optimizer,
                "--num-distributed-optimizer-instances > 1 needs --use-distributed-optimizer",
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (for checkpoints, logs and YAML)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, dict[str, Any]]) -> DLMConfig:
        """Inverse of :meth:`to_dict`; unknown sections are an error."""
        unknown = set(values) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config sections: {', '.join(sorted(unknown))}")
        return cls(
            **{name: build_section(SECTIONS[name], values.get(name, {})) for name in SECTIONS}
        )


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "parallel": ParallelConfig,
    "precision": PrecisionConfig,
    "objective": ObjectiveConfig,
    "data": DataConfig,
    "training": TrainingConfig,
    "optimizer": OptimizerConfig,
    "checkpoint": CheckpointConfig,
    "logging": LoggingConfig,
}

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "LoggingConfig",
    "OptimizerConfig",
    "TrainingConfig",
    "DataConfig",
    "DLMConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "ParallelConfig",
    "PrecisionConfig",
    "SECTIONS",
]
