"""Training datasets: unique-token budget, exact epoch replay, blends, splits, sample fields."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from megatron_dlm.config import DataConfig
from megatron_dlm.data.budget import split_document_range
from megatron_dlm.data.plan import plan_datasets
from tests.data.helpers import SEQ, build, read_loader, stream_ids

BUDGET = 20_000
EPOCHS = 5


def _concatenated(component) -> tuple[np.ndarray, np.ndarray]:
    """The one-epoch token stream megatron-core cuts into samples (documents in its shuffled
    order), and each document's start offset in it."""
    docs = [np.asarray(component.dataset.get(int(d))) for d in component.document_index]
    starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])[:-1]])
    return np.concatenate(docs), starts


def test_unique_budget_is_replayed_exactly_epoch_by_epoch(corpus, tmp_path):
    kwargs = dict(data_path=[corpus.a], split="90,10,0", unique_tokens=BUDGET)
    per_epoch = build(corpus.tokenizer, tmp_path, **kwargs).info.samples_per_epoch
    total = EPOCHS * per_epoch + per_epoch // 3  # five full epochs and a partial sixth
    splits = build(corpus.tokenizer, tmp_path, train_samples=total, **kwargs)
    train, info = splits.train, splits.info

    # The budget: the first documents of the training split holding BUDGET tokens, boundary
    # document included whole.
    cumulative = np.cumsum(corpus.lengths_a)
    k = int(np.argmax(cumulative >= BUDGET)) + 1
    assert info.unique_documents == k and info.unique_tokens == cumulative[k - 1]
    assert cumulative[k - 2] < BUDGET <= info.unique_tokens
    assert info.samples_per_epoch == (info.unique_tokens - 1) // SEQ
    assert info.epochs == pytest.approx(total / per_epoch)

    ids = stream_ids(train)
    counts = collections.Counter(sample for sample, _ in ids)
    assert set(counts) == set(range(per_epoch))
    orders = []
    for epoch in range(EPOCHS + 1):
        chunk = ids[epoch * per_epoch : (epoch + 1) * per_epoch]
        assert {e for _, e in chunk} == {epoch}
        order = [sample for sample, _ in chunk]
        assert len(set(order)) == len(order)  # nothing twice within an epoch
        orders.append(order)
    assert all(sorted(o) == list(range(per_epoch)) for o in orders[:EPOCHS])
    assert len(orders[EPOCHS]) == per_epoch // 3
    assert sorted(counts.values()) == [EPOCHS] * (per_epoch - per_epoch // 3) + [EPOCHS + 1] * (
        per_epoch // 3
    )
    assert len({tuple(o) for o in orders[:EPOCHS]}) == EPOCHS  # a fresh order every epoch

    # Documents: exactly those the one-epoch stream reaches before its dropped tail, all
    # within the budget; the samples are megatron-core's windows of that stream.
    (component,) = train.components
    stream, starts = _concatenated(component)
    reached = {int(d) for d, s in zip(component.document_index, starts) if s < per_epoch * SEQ + 1}
    seen = set()
    for local in range(per_epoch):
        seen.update(int(d) for d in component.document_ids(local))
    assert seen == reached and seen <= set(range(k)) and len(seen) >= k - 1
    for g in (0, 1, per_epoch, 3 * per_epoch + 7, total - 1):
        sample = train[g]
        row = int(component.shuffle_index[int(sample["sample_id"])])
        window = stream[row * SEQ : row * SEQ + SEQ + 1]
        assert np.array_equal(sample["tokens"].numpy(), window[:-1])
        assert np.array_equal(sample["labels"].numpy(), window[1:])


def test_stream_is_identical_across_builds_and_changes_with_the_seed(corpus, tmp_path):
    kwargs = dict(data_path=[corpus.a], split="90,10,0", unique_tokens=BUDGET, train_samples=2000)
    first = build(corpus.tokenizer, tmp_path, **kwargs).train
    cached = sorted(p.name for p in (tmp_path).rglob("*"))
    second = build(corpus.tokenizer, tmp_path, **kwargs).train  # loads megatron-core's cache
    assert sorted(p.name for p in (tmp_path).rglob("*")) == cached
    assert stream_ids(first) == stream_ids(second)
    for g in (0, 555, 1999):
        a, b = first[g], second[g]
        assert all(np.array_equal(a[key].numpy(), b[key].numpy()) for key in a)
    other = build(corpus.tokenizer, tmp_path, seed=2, **kwargs).train
    assert stream_ids(other) != stream_ids(first)


def test_sample_fields(corpus, tmp_path):
    splits = build(
        corpus.tokenizer,
        tmp_path,
        data_path=[corpus.a],
        split="90,10,0",
        unique_tokens=BUDGET,
        train_samples=1000,
        valid_samples=2000,
        eod_mask_loss=True,
    )
    per_epoch = splits.info.samples_per_epoch
    eod_id = corpus.tokenizer.eod
    sample = next(
        s
        for s in (splits.train[g] for g in range(per_epoch, 2 * per_epoch))
        if (s["tokens"] == eod_id).any()
    )
    assert set(sample) == {"tokens", "labels", "loss_mask", "position_ids", "sample_id", "epoch"}
    for key in ("tokens", "labels", "position_ids"):
        assert sample[key].shape == (SEQ,) and sample[key].dtype.is_floating_point is False
    assert sample["loss_mask"].shape == (SEQ,) and sample["loss_mask"].dtype.is_floating_point
    assert sample["sample_id"].shape == () and int(sample["epoch"]) == 1
    assert sample["tokens"][1:].tolist() == sample["labels"][:-1].tolist()
    assert sample["position_ids"].tolist() == list(range(SEQ))
    eod = sample["tokens"] == eod_id
    assert (sample["loss_mask"][eod] == 0).all() and (sample["loss_mask"][~eod] == 1).all()
    # A sample's identity is its content: the same sample_id in another epoch, same tokens.
    sid = int(sample["sample_id"])
    again = next(
        g for g in range(2 * per_epoch, 3 * per_epoch) if splits.train.position(g).sample_id == sid
    )
    assert splits.train[again]["tokens"].tolist() == sample["tokens"].tolist()
    assert int(splits.train[again]["epoch"]) == 2
    # Validation: epoch 0 always; a stream longer than the split repeats the same samples.
    valid = splits.valid
    n_valid = splits.info.components["valid"][0].samples_per_epoch
    assert n_valid < 1000
    assert stream_ids(valid) == [(g % n_valid, 0) for g in range(2000)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_and_data_parallel_slices_match_the_single_rank_stream(
    corpus, tmp_path, num_workers
):
    train = build(
        corpus.tokenizer,
        tmp_path,
        data_path=[corpus.a],
        split="90,10,0",
        unique_tokens=8_000,
        train_samples=480,
    ).train
    assert train.samples_per_epoch < 200  # the stream spans several epochs

    def ids(batches):
        return [(int(s), int(e)) for b in batches for s, e in zip(b["sample_id"], b["epoch"])]

    single = read_loader(
        train,
        consumed_samples=0,
        micro_batch_size=4,
        data_parallel_rank=0,
        data_parallel_size=1,
        num_workers=num_workers,
    )
    assert ids(single) == stream_ids(train)
    resumed = read_loader(
        train,
        consumed_samples=40,
        micro_batch_size=4,
        data_parallel_rank=0,
        data_parallel_size=1,
        num_workers=num_workers,
    )
    assert ids(resumed) == stream_ids(train)[40:]
    assert all(np.array_equal(a["tokens"], b["tokens"]) for a, b in zip(resumed, single[10:]))
    for consumed in (0, 44):
        ranks = [
            read_loader(
                train,
                consumed_samples=consumed,
                micro_batch_size=2,
                data_parallel_rank=r,
                data_parallel_size=2,
                num_workers=num_workers,
            )
            for r in range(2)
        ]
        assert len(ranks[0]) == len(ranks[1]) == (480 - consumed) // 4
        merged = [x for pair in zip(ids(ranks[0]), ids(ranks[1])) for x in pair]
        interleaved = []
        for b0, b1 in zip(ranks[0], ranks[1]):
            interleaved += ids([b0]) + ids([b1])
        assert interleaved == stream_ids(train)[consumed:]
        assert sorted(merged) == sorted(stream_ids(train)[consumed:])


def test_blend_follows_its_weights(corpus, tmp_path):
    splits = build(
        corpus.tokenizer,
        tmp_path,
        data_path=["0.3", corpus.a, "0.7", corpus.b],
        split="100,0,0",
        train_samples=20_000,
    )
    train, info = splits.train, splits.info
    n_a, n_b = train.sizes
    components = [train.position(g).component for g in range(len(train))]
    assert n_b < n_a  # so the weights, not the sizes, must set the mix
    assert abs(components.count(0) / len(components) - 0.3) < 0.005
    for start in range(0, 20_000, 500):  # the mix holds in every window, not just on average
        window = components[start : start + 500]
        assert abs(window.count(0) / 500 - 0.3) < 0.01
    epochs_a, epochs_b = info.component_epochs()
    assert epochs_b > 1 > epochs_a  # b, the smaller, is replayed more often
    # Each component still visits every sample once per its own epoch; ids never collide.
    draws = [[train.position(g) for g in range(len(train)) if components[g] == c] for c in (0, 1)]
    for c, size in ((0, n_a), (1, n_b)):
        for epoch in range(-(-len(draws[c]) // size)):
            drawn = draws[c][epoch * size : (epoch + 1) * size]
            indices = [p.index for p in drawn]
            assert len(set(indices)) == len(indices)  # never twice within an epoch
            assert len(drawn) < size or sorted(indices) == list(range(size))
            assert {p.epoch for p in drawn} == {epoch}
            assert {p.sample_id - p.index for p in drawn} == {0 if c == 0 else n_a}


def test_blend_with_a_unique_budget_splits_it_by_weight(corpus, tmp_path):
    splits = build(
        corpus.tokenizer,
        tmp_path,
        data_path=["1", corpus.a, "3", corpus.b],
        split="90,10,0",
        unique_tokens=40_000,
        train_samples=3000,
    )
    train, info = splits.train, splits.info
    budget_a, budget_b = (c.budget for c in info.components["train"])
    assert (budget_a.requested_tokens, budget_b.requested_tokens) == (10_000, 30_000)
    assert info.unique_tokens == budget_a.tokens + budget_b.tokens >= 40_000
    per_epoch = info.samples_per_epoch
    assert abs(train.sizes[0] / per_epoch - 0.25) < 0.03
    # One epoch of the blend = every sample of both components once, in a fresh order.
    first = [s for s, _ in stream_ids(train, 0, per_epoch)]
    second = [s for s, _ in stream_ids(train, per_epoch, 2 * per_epoch)]
    assert sorted(first) == sorted(second) == list(range(per_epoch)) and first != second
    assert {e for _, e in stream_ids(train, per_epoch, 2 * per_epoch)} == {1}


@pytest.mark.parametrize("unique_tokens", [None, BUDGET])
def test_validation_never_shares_a_document_with_training(corpus, tmp_path, unique_tokens):
    splits = build(
        corpus.tokenizer,
        tmp_path,
        data_path=[corpus.a, corpus.b],
        split="80,20,0",
        unique_tokens=unique_tokens,
        train_samples=10,
        valid_samples=10,
    )

    def documents(dataset):
        docs = collections.defaultdict(set)
        for component, prefix in zip(dataset.components, (corpus.a, corpus.b)):
            for local in range(len(component)):
                docs[prefix].update(int(d) for d in component.document_ids(local))
        return docs

    train, valid = documents(splits.train), documents(splits.valid)
    for prefix in (corpus.a, corpus.b):
        assert train[prefix] and valid[prefix] and not train[prefix] & valid[prefix]
        assert max(train[prefix]) < min(valid[prefix])


@pytest.mark.parametrize("split", ["969,30,1", "1,1,1", "3,1", "50,50,0"])
def test_split_ranges_agree_with_megatron_core(corpus, tmp_path, split):
    splits = build(
        corpus.tokenizer,
        tmp_path,
        data_path=[corpus.b],
        split=split,
        train_samples=1,
        valid_samples=1 if split != "969,30,1" else 0,
    )
    n = len(corpus.lengths_b)
    for name, parts in splits.info.components.items():
        assert parts[0].documents == split_document_range(n, split, name)
        assert np.array_equal(
            getattr(splits, name).components[0].indices, np.arange(n)[parts[0].documents]
        )


def test_plan_without_building_matches_the_build(corpus, tmp_path):
    kwargs = dict(data_path=["1", corpus.a, "3", corpus.b], split="90,10,0", unique_tokens=BUDGET)
    built = build(corpus.tokenizer, tmp_path, train_samples=5000, valid_samples=64, **kwargs)
    planned = plan_datasets(
        DataConfig(**kwargs), seq_length=SEQ, train_samples=5000, valid_samples=64
    )
    assert planned == built.info
    assert built.train.sizes == [c.samples_per_epoch for c in planned.components["train"]]


def test_separate_train_and_valid_paths(corpus, tmp_path):
    splits = build(
        corpus.tokenizer,
        tmp_path,
        train_data_path=[corpus.a],
        valid_data_path=[corpus.b],
        unique_tokens=BUDGET,
        train_samples=100,
        valid_samples=8,
    )
    assert splits.info.components["train"][0].documents.start == 0
    assert splits.info.components["valid"][0].documents == range(len(corpus.lengths_b))
    assert splits.test is None
