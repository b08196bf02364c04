"""The denoising sampler on synthetic logits functions with known distributions."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_dlm.config import ConfigError
from megatron_dlm.config.sampling import SamplingConfig
from megatron_dlm.sampling import autoregressive_generate, diffusion_generate
from megatron_dlm.sampling.diffusion import transfer_schedule

V, MASK, PAD, EOS = 16, 15, 0, 1


class FixedLogits:
    """Returns the same per-position logits for the generation region; records every input."""

    def __init__(self, region_logits: torch.Tensor, prompt_len: int):
        self.region = region_logits  # [G, V]
        self.prompt_len = prompt_len
        self.calls: list[torch.Tensor] = []

    def __call__(self, tokens, valid):
        self.calls.append(tokens.clone())
        b, length = tokens.shape
        logits = torch.zeros(b, length, V)
        logits[:, length - self.region.shape[0] :] = self.region
        return logits


def _probs_to_logits(rows: list[list[float]]) -> torch.Tensor:
    out = torch.full((len(rows), V), -30.0)
    for i, probs in enumerate(rows):
        for token, p in enumerate(probs, start=2):
            out[i, token] = math.log(p)
    return out


def _generate(fn, prompt=(3,), **options):
    return diffusion_generate(
        fn, [list(prompt)], mask_id=MASK, pad_id=PAD, eos_id=EOS, options=SamplingConfig(**options)
    )


def _committed_after_first_step(fn: FixedLogits, start: int) -> list[int]:
    second = fn.calls[1][0, start:]
    return [i for i, t in enumerate(second.tolist()) if t != MASK]


def test_transfer_schedule_is_an_equal_split():
    assert transfer_schedule(8, 3) == [3, 3, 2]
    assert transfer_schedule(8, 8) == [1] * 8
    assert sum(transfer_schedule(37, 5)) == 37


def test_each_step_commits_the_scheduled_count():
    fn = FixedLogits(torch.randn(12, V, generator=torch.Generator().manual_seed(0)), 2)
    opts = SamplingConfig(gen_length=12, block_length=6, steps=6)  # 3 steps per block: 2 each
    out = diffusion_generate(fn, [[4, 5]], mask_id=MASK, pad_id=PAD, options=opts)
    masked_per_call = [int((c[0, 2:] == MASK).sum()) for c in fn.calls]
    assert masked_per_call == [12, 10, 8, 6, 4, 2]
    assert out.forward_passes == [6] and MASK not in out.sequences[0]


@pytest.mark.parametrize(
    "strategy, expected",
    [("low_confidence", 0), ("margin", 1), ("entropy", 2), ("random", None)],
)
def test_remasking_commits_the_position_its_definition_picks(strategy, expected):
    # Three positions on which the strategies disagree: the highest top-1 probability (0),
    # the largest top-1 minus top-2 margin (1), the lowest entropy (2).
    region = _probs_to_logits([[0.55, 0.44, 0.01], [0.50] + [0.05] * 10, [0.52, 0.48]])
    fn = FixedLogits(region, 1)
    opts = SamplingConfig(gen_length=3, block_length=3, steps=3, remasking=strategy, seed=5)
    diffusion_generate(fn, [[3]], mask_id=MASK, pad_id=PAD, options=opts)
    if expected is None:  # random: the generator's first draw over the three positions
        draws = torch.rand(3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        expected = int(draws.argmax())
    assert _committed_after_first_step(fn, 1) == [expected]


def test_threshold_commits_every_position_above_it():
    region = _probs_to_logits(
        [[0.95, 0.05], [0.3, 0.3, 0.4], [0.97, 0.03], [0.99, 0.01], [0.5, 0.5]]
    )
    fn = FixedLogits(region, 1)
    opts = SamplingConfig(gen_length=5, block_length=5, steps=5, threshold=0.9)
    out = diffusion_generate(fn, [[3]], mask_id=MASK, pad_id=PAD, options=opts)
    assert _committed_after_first_step(fn, 1) == [0, 2, 3]
    assert out.forward_passes == [3]  # 3 at once, then one per step for the uncertain two


class RowCachedLogits:
    """A caching logits function: a sequence whose prompt starts with token 3 is sure of token 2
    everywhere (p > 0.999), any other is unsure of everything (p < 0.2). Records every call's
    block (its logits columns), whether it stored, and its cache rows."""

    def __init__(self):
        self.calls: list[tuple[int, bool, list[int]]] = []

    def __call__(self, tokens, valid):
        raise AssertionError("a cached run makes only cached passes")

    def init_cache(self, batch_size, length):
        return {}

    def logits_with_cache(self, cache, rows, tokens, valid, start, *, store, logits_columns=None):
        lo, hi = logits_columns or (start, start + tokens.shape[1])
        self.calls.append((lo, store, rows.tolist()))
        if store:  # a refresh: every column, so the prompt's first token is in view
            for row, row_tokens, row_valid in zip(rows.tolist(), tokens, valid):
                cache[row] = int(row_tokens[row_valid][0])
        out = torch.zeros(len(rows), hi - lo, V)
        for k, row in enumerate(rows.tolist()):
            out[k, :, 2 if cache[row] == 3 else 4] = 10.0 if cache[row] == 3 else 1.0
        return out


def test_cached_threshold_decoding_keeps_the_batch_on_one_block():
    # The sure row finishes each block in its first pass; it waits for the unsure one instead of
    # running alone on the next block, so each step is one batched call.
    opts = SamplingConfig(gen_length=16, block_length=8, steps=16, threshold=0.9, cache="dual")
    prompts = [[3, 5], [6, 5]]
    fn = RowCachedLogits()
    out = diffusion_generate(fn, prompts, mask_id=MASK, pad_id=PAD, options=opts)
    assert out.forward_passes == [2, 16]
    blocks = [lo for lo, _, _ in fn.calls]
    assert blocks == sorted(blocks) and len(fn.calls) == 16
    assert [rows for _, store, rows in fn.calls if store] == [[0, 1], [0, 1]]
    single = [
        diffusion_generate(RowCachedLogits(), [p], mask_id=MASK, pad_id=PAD, options=opts)
        for p in prompts
    ]
    assert out.sequences == [s.sequences[0] for s in single]
    assert out.forward_passes == [s.forward_passes[0] for s in single]
    assert out.sequences[0] == [2] * 16 and out.sequences[1] == [4] * 16


def test_greedy_is_deterministic_and_sampling_respects_top_k_and_top_p():
    region = torch.randn(64, V, generator=torch.Generator().manual_seed(2))
    opts = SamplingConfig(gen_length=64, block_length=64, steps=64, temperature=0.0)
    first = diffusion_generate(
        FixedLogits(region, 1), [[3]], mask_id=MASK, pad_id=PAD, options=opts
    )
    again = diffusion_generate(
        FixedLogits(region, 1), [[3]], mask_id=MASK, pad_id=PAD, options=opts
    )
    assert first.sequences == again.sequences
    logits = region.clone()
    logits[:, MASK] = float("-inf")
    top3 = logits.topk(3, -1).indices
    for seed in range(3):
        opts = SamplingConfig(
            gen_length=64, block_length=64, steps=64, temperature=2.0, top_k=3, seed=seed
        )
        out = diffusion_generate(
            FixedLogits(region, 1), [[3]], mask_id=MASK, pad_id=PAD, options=opts
        )
        assert all(t in top3[i].tolist() for i, t in enumerate(out.sequences[0]))
    probs = torch.softmax(logits, -1)
    sorted_probs, order = probs.sort(-1, descending=True)
    nucleus = [set(order[i, : int((sorted_probs[i].cumsum(0) < 0.5).sum()) + 1].tolist())
               for i in range(64)]  # fmt: skip
    for seed in range(3):
        opts = SamplingConfig(
            gen_length=64, block_length=64, steps=64, temperature=2.0, top_p=0.5, seed=seed
        )
        out = diffusion_generate(
            FixedLogits(region, 1), [[3]], mask_id=MASK, pad_id=PAD, options=opts
        )
        assert all(t in nucleus[i] for i, t in enumerate(out.sequences[0]))


def test_stop_at_eos_and_truncation():
    rows = [[0.9, 0.1]] * 8
    region = _probs_to_logits(rows)
    region[2] = -30.0
    region[2, EOS] = 0.0  # position 2 is surely EOS
    fn = FixedLogits(region, 1)
    opts = SamplingConfig(gen_length=8, block_length=4, steps=8)
    out = diffusion_generate(fn, [[3]], mask_id=MASK, pad_id=PAD, eos_id=EOS, options=opts)
    assert out.stopped_at_eos == [True]
    assert out.forward_passes == [4]  # the first block only
    assert out.sequences == [[2, 2]]
    opts = SamplingConfig(gen_length=8, block_length=4, steps=8, stop_at_eos=False,
                          truncate_after_eos=False)  # fmt: skip
    out = diffusion_generate(FixedLogits(region, 1), [[3]], mask_id=MASK, pad_id=PAD, eos_id=EOS,
                             options=opts)  # fmt: skip
    assert out.forward_passes == [8] and out.sequences[0][2] == EOS and len(out.sequences[0]) == 8


def test_suppress_early_eos_defers_eos_until_the_last_block():
    region = _probs_to_logits([[0.6, 0.4]] * 8)
    region[0] = -30.0
    region[0, EOS] = 0.0  # the most confident prediction of block 1 is an EOS
    base = dict(gen_length=8, block_length=4, steps=8, stop_at_eos=False, truncate_after_eos=False)
    fn = FixedLogits(region, 1)
    diffusion_generate(
        fn, [[3]], mask_id=MASK, pad_id=PAD, eos_id=EOS, options=SamplingConfig(**base)
    )
    assert _committed_after_first_step(fn, 1) == [0]
    fn = FixedLogits(region, 1)
    opts = SamplingConfig(**base, suppress_early_eos=True)
    diffusion_generate(fn, [[3]], mask_id=MASK, pad_id=PAD, eos_id=EOS, options=opts)
    assert _committed_after_first_step(fn, 1) == [1]


def test_classifier_free_guidance_masks_the_prompt_in_the_unconditional_branch():
    fn = FixedLogits(torch.randn(4, V, generator=torch.Generator().manual_seed(3)), 3)
    opts = SamplingConfig(gen_length=4, block_length=4, steps=4, cfg_scale=1.5)
    out = diffusion_generate(fn, [[3, 4, 5]], mask_id=MASK, pad_id=PAD, options=opts)
    first = fn.calls[0]
    assert first.shape[0] == 2
    assert first[0, :3].tolist() == [3, 4, 5] and first[1, :3].tolist() == [MASK] * 3
    assert out.forward_passes == [8]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gen_length=10, block_length=4), "divisible by --block-length"),
        (dict(gen_length=8, block_length=4, steps=3), "multiple of the number of blocks"),
        (dict(threshold=1.5), "--threshold"),
        (dict(top_p=0.0), "--top-p"),
    ],
)
def test_invalid_options_are_clear_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SamplingConfig(**kwargs)


def test_prompt_longer_than_the_model_is_an_error():
    fn = FixedLogits(torch.zeros(8, V), 1)
    with pytest.raises(ValueError, match="maximum sequence length 10"):
        diffusion_generate(fn, [[3] * 5], mask_id=MASK, pad_id=PAD,
                           options=SamplingConfig(gen_length=8, block_length=8, steps=8),
                           max_length=10)  # fmt: skip


def test_autoregressive_sampling_is_left_to_right_and_stops_at_eos():
    def fn(tokens, valid):
        logits = torch.full((*tokens.shape, V), -10.0)
        nxt = (tokens + 1).clamp(max=EOS + 5)
        nxt[tokens == 5] = EOS
        logits.scatter_(-1, nxt[..., None], 10.0)
        return logits

    opts = SamplingConfig(gen_length=10, block_length=10, steps=10)
    out = autoregressive_generate(fn, [[2], [4, 3]], pad_id=PAD, eos_id=EOS, options=opts)
    assert out.sequences == [[3, 4, 5], [4, 5]]
    assert out.stopped_at_eos == [True, True] and out.forward_passes == [4, 3]
