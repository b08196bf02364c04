"""The counter-based generator: splitmix64 exactly, independent keyed streams."""

from __future__ import annotations

import numpy as np

from megatron_dlm.objectives.counter_rng import Stream, mix, stream_key, uniforms


def test_mix_is_splitmix64():
    # splitmix64 seeded with 0: its first outputs are mix(k * 0x9E3779B97F4A7C15), k = 1, 2.
    states = np.array([0x9E3779B97F4A7C15, 0x3C6EF372FE94F82A], dtype=np.uint64)
    assert [hex(int(v)) for v in mix(states)] == ["0xe220a8397b1dcdaf", "0x6e789e6aa1b965f4"]


def test_numbers_do_not_depend_on_how_many_are_drawn():
    keys = stream_key(7, Stream.TRAIN_MASK, np.arange(3), np.array([0, 1, 2]))
    full = uniforms(keys, 100)
    np.testing.assert_array_equal(full[:, :10], uniforms(keys, 10))
    np.testing.assert_array_equal(full[:, 40:], uniforms(keys, 60, offset=40))


def test_keys_separate_seeds_streams_and_ids():
    ids = np.arange(2, 1002)  # (id, epoch) pairs below never coincide across the sets
    keys = {
        "base": stream_key(1, Stream.TRAIN_MASK, ids, 0),
        "seed": stream_key(2, Stream.TRAIN_MASK, ids, 0),
        "stream": stream_key(1, Stream.TRAIN_T, ids, 0),
        "epoch": stream_key(1, Stream.TRAIN_MASK, ids, 1),
        "swapped": stream_key(1, Stream.TRAIN_MASK, 0, ids),
    }
    everything = np.concatenate(list(keys.values()))
    assert len(np.unique(everything)) == len(everything)


def test_uniforms_look_uniform_and_independent():
    keys = stream_key(0, Stream.TRAIN_MASK, np.arange(64), 0)
    u = uniforms(keys, 4096)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.002  # sd 0.29 / sqrt(262144) = 0.0006
    assert abs(u.var() - 1 / 12) < 0.001
    # Neighbouring counters and neighbouring sample ids are uncorrelated.
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]) < 0.01
    counts = np.histogram(u, bins=16, range=(0, 1))[0]
    expected = u.size / 16
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 50  # 15 degrees of freedom: p < 1e-5 above 50
