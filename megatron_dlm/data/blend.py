"""Which dataset prefixes each split draws from: ``--data-path``/``--split`` or per-split paths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from megatron_dlm.config import ConfigError, DataConfig
from megatron_dlm.data.budget import SPLIT_NAMES
from megatron_dlm.data.dataset_checks import DatasetError


@dataclass(frozen=True)
class Blend:
    """Dataset prefixes of one split, with optional weights (``--data-path 0.7 a 0.3 b``).

    Attributes:
        prefixes: dataset prefixes (``{prefix}.bin/.idx``).
        weights: one positive weight per prefix, or None (mix in proportion to sizes).
        flag: the flag that gave them (for messages).
    """

    prefixes: list[str]
    weights: list[float] | None
    flag: str


def parse_blend(values: Sequence[str], flag: str) -> Blend:
    """``["a", "b"]`` or ``["0.7", "a", "0.3", "b"]`` -> :class:`Blend`.

    Raises:
        ConfigError: weights on some prefixes only, non-positive weights, or no prefix.
    """

    def number(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:
            return None

    values = [v.strip() for v in values if v.strip()]
    if not values:
        raise ConfigError(f"{flag} needs at least one dataset prefix")
    numbers = [number(v) for v in values]
    if all(n is None for n in numbers):
        return Blend(prefixes=values, weights=None, flag=flag)
    weights, prefixes = numbers[0::2], values[1::2]
    if (
        len(values) % 2
        or any(w is None for w in weights)
        or any(n is not None for n in numbers[1::2])
    ):
        raise ConfigError(
            f"{flag}: give prefixes (a b) or weight-prefix pairs (0.7 a 0.3 b), got {values}"
        )
    if any(w <= 0 for w in weights):
        raise ConfigError(f"{flag}: blend weights must be > 0, got {weights}")
    return Blend(prefixes=prefixes, weights=[float(w) for w in weights], flag=flag)


def split_blends(data: DataConfig) -> tuple[dict[str, Blend | None], str | None]:
    """Per split name, the blend it draws from; and ``--split`` (None with per-split paths).

    Raises:
        ConfigError: no training data, or --data-path together with per-split paths.
        DatasetError: a training prefix also given for validation or test.
    """
    if data.data_path:
        if data.train_data_path or data.valid_data_path or data.test_data_path:
            raise ConfigError(
                "--data-path and --train-data-path/--valid-data-path/--test-data-path are "
                "mutually exclusive"
            )
        return dict.fromkeys(SPLIT_NAMES, parse_blend(data.data_path, "--data-path")), data.split
    if not data.train_data_path:
        raise ConfigError("no training data: give --data-path or --train-data-path")
    paths = (data.train_data_path, data.valid_data_path, data.test_data_path)
    blends = {
        name: parse_blend(values, f"--{name}-data-path") if values else None
        for name, values in zip(SPLIT_NAMES, paths)
    }
    train = {os.path.realpath(p) for p in blends["train"].prefixes}
    for name in SPLIT_NAMES[1:]:
        for prefix in blends[name].prefixes if blends[name] else ():
            if os.path.realpath(prefix) in train:
                raise DatasetError(
                    f"{prefix} is in both --train-data-path and --{name}-data-path: {name} data "
                    f"must not overlap the training data (use --data-path with --split to "
                    f"split one dataset by document)"
                )
    return blends, None
