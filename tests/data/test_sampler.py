"""Megatron's pretraining sampler: global micro-batches, rank slices, resume."""

from __future__ import annotations

import pytest

from megatron_dlm.data.sampler import PretrainingSampler


def test_ranks_take_their_slice_of_each_global_micro_batch():
    ranks = [list(PretrainingSampler(20, 2, 3, r, 2)) for r in range(2)]
    assert ranks[0] == [[2, 3, 4], [8, 9, 10], [14, 15, 16]]
    assert ranks[1] == [[5, 6, 7], [11, 12, 13], [17, 18, 19]]
    assert len(PretrainingSampler(20, 2, 3, 0, 2)) == 3


def test_last_incomplete_global_batch():
    assert list(PretrainingSampler(10, 0, 4, 1, 2)) == [[4, 5, 6, 7]]  # 8, 9 dropped
    kept = [list(PretrainingSampler(10, 0, 4, r, 2, drop_last=False)) for r in range(2)]
    assert kept == [[[0, 1, 2, 3], [8, 9]], [[4, 5, 6, 7]]]
    assert [len(PretrainingSampler(10, 0, 4, r, 2, drop_last=False)) for r in range(2)] == [2, 1]


def test_a_finished_stream_is_empty_and_a_foreign_position_is_an_error():
    assert list(PretrainingSampler(8, 8, 2, 0, 1)) == []
    with pytest.raises(ValueError, match="consumed_samples 9 is outside the stream of 8"):
        PretrainingSampler(8, 9, 2, 0, 1)
    with pytest.raises(ValueError, match="data-parallel rank 2 is outside"):
        PretrainingSampler(8, 0, 2, 2, 2)
