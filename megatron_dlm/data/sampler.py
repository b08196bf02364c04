"""Megatron's pretraining batch sampler: the global sample stream cut into micro-batches.

Micro-step ``m`` (counting from the start of the stream) consumes the ``micro_batch_size x
data_parallel_size`` samples ``[m * G, (m + 1) * G)`` of the stream, ``G = mbs x dp``; data-
parallel rank ``r`` takes ``[m * G + r * mbs, m * G + (r + 1) * mbs)``. A run resumed at
``consumed_samples`` (the global count its checkpoint stores) continues with the next sample,
whatever the data-parallel size before and after.
"""

from __future__ import annotations

from collections.abc import Iterator


class PretrainingSampler:
    """Batch sampler (``DataLoader(batch_sampler=...)``) over positions of the global stream.

    Args:
        total_samples: length of the stream.
        consumed_samples: global samples already consumed (where to start).
        micro_batch_size: samples per micro-batch on each rank.
        data_parallel_rank: this rank's index in the data-parallel group.
        data_parallel_size: ranks in the data-parallel group.
        drop_last: drop a final global micro-batch that is incomplete (Megatron's default);
            otherwise each rank gets its part of it (possibly fewer samples, or none).
    """

    def __init__(
        self,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        data_parallel_rank: int,
        data_parallel_size: int,
        drop_last: bool = True,
    ) -> None:
        if micro_batch_size <= 0:
            raise ValueError(f"--micro-batch-size must be > 0, got {micro_batch_size}")
        if not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(
                f"data-parallel rank {data_parallel_rank} is outside [0, {data_parallel_size})"
            )
        if not 0 <= consumed_samples <= total_samples:
            raise ValueError(
                f"consumed_samples {consumed_samples} is outside the stream of {total_samples} "
                f"samples: the data position does not belong to this dataset"
            )
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size
        self.drop_last = drop_last

    @property
    def global_micro_batch_size(self) -> int:
        return self.micro_batch_size * self.data_parallel_size

    def __len__(self) -> int:
        remaining = self.total_samples - self.consumed_samples
        full, rest = divmod(remaining, self.global_micro_batch_size)
        if self.drop_last:
            return full
        return full + int(rest > self.data_parallel_rank * self.micro_batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.global_micro_batch_size
        offset = self.data_parallel_rank * self.micro_batch_size
        for start in range(self.consumed_samples, self.total_samples, step):
            if start + step > self.total_samples and self.drop_last:
                return
            first = start + offset
            last = min(first + self.micro_batch_size, self.total_samples)
            if first < last:
                yield list(range(first, last))
