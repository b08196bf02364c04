"""Training datasets: unique-token budget, exact epoch replay, blends, splits, sample fields."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_dlm.config import DataConfig
from megatron_dlm.data.budget import budget_document_order, split_document_range
from megatron_dlm.data.plan import plan_datasets
from megatron_dlm.data.replay import epoch_permutation
from tests.data.helpers import SEQ, build, read_loader, stream_ids

BUDGET = 20_000
EPOCHS = 5


def _kept_tokens(raw: IndexedDataset, budget, split_start: int, document: int) -> np.ndarray:
    """A kept document's tokens, read from the raw indexed dataset (cut where the budget cuts)."""
    tokens = np.array(raw.get(document))  # a copy: the read is a view of raw's memory map
    if budget is not None and document == split_start + budget.boundary_document:
        return tokens[: budget.boundary_tokens]
    return tokens


def _epoch_windows(prefix: str, budget, split_start: int, view) -> list[np.ndarray]:
    """The windows of one cut, derived by hand: its documents concatenated in its order and
    cut every ``SEQ`` tokens into ``SEQ + 1``-token windows (the last token is the next
    window's first)."""
    raw = IndexedDataset(prefix)
    stream = np.concatenate(
        [_kept_tokens(raw, budget, split_start, int(d)) for d in view.document_index]
    )
    return [stream[i * SEQ : i * SEQ + SEQ + 1] for i in range(len(view))]


def test_unique_budget_is_exact_and_drawn_at_random(corpus, tmp_path):
    splits = build(corpus.tokenizer, tmp_path, data_path=[corpus.a], split="90,10,0",
                   unique_tokens=BUDGET)  # fmt: skip
    info, (component,) = splits.info, splits.train.components
    (planned,) = info.components["train"]
    budget = planned.budget
    assert info.unique_tokens == component.num_tokens == BUDGET
    assert info.samples_per_epoch == (BUDGET - 1) // SEQ
    assert info.unique_documents == budget.documents == len(component.indices)
    # The documents: the shortest run of the seeded random order holding BUDGET, as built.
    order = budget_document_order(budget.available_documents, sample="random", seed=1)
    assert sorted(order[: budget.documents]) == budget.selected.tolist()
    assert np.array_equal(component.indices, planned.document_ids)
    assert budget.selected.tolist() != list(range(budget.documents))
    # Exactly BUDGET tokens are readable: the boundary document stops at the cut.
    read = [len(component.dataset.get(int(d))) for d in component.indices]
    assert sum(read) == BUDGET and budget.is_cut
    boundary = int(planned.split_documents.start + budget.boundary_document)
    raw = IndexedDataset(corpus.a)
    assert np.array_equal(
        component.dataset.get(boundary), np.array(raw.get(boundary))[: budget.boundary_tokens]
    )

    # --unique-tokens-sample first --unique-tokens-boundary whole: the first documents, the
    # boundary document whole (the rule before re-cut epochs).
    first = build(corpus.tokenizer, tmp_path, data_path=[corpus.a], split="90,10,0",
                  unique_tokens=BUDGET, unique_tokens_sample="first",
                  unique_tokens_boundary="whole").info  # fmt: skip
    cumulative = np.cumsum(corpus.lengths_a)
    k = int(np.argmax(cumulative >= BUDGET)) + 1
    assert first.unique_documents == k and first.unique_tokens == cumulative[k - 1]
    assert cumulative[k - 2] < BUDGET <= first.unique_tokens
    assert first.components["train"][0].document_ids.tolist() == list(range(k))
    cut = build(corpus.tokenizer, tmp_path, data_path=[corpus.a], split="90,10,0",
                unique_tokens=BUDGET, unique_tokens_sample="first").info  # fmt: skip
    assert (cut.unique_documents, cut.unique_tokens) == (k, BUDGET)


@pytest.mark.parametrize("windows", ["recut", "fixed"])
def test_every_epoch_visits_each_of_its_windows_once(corpus, tmp_path, windows):
    kwargs = dict(data_path=[corpus.a], split="90,10,0", unique_tokens=BUDGET)
    per_epoch = build(corpus.tokenizer, tmp_path, **kwargs).info.samples_per_epoch
    total = EPOCHS * per_epoch + per_epoch // 3  # five full epochs and a partial sixth
    splits = build(corpus.tokenizer, tmp_path, train_samples=total, epoch_windows=windows, **kwargs)
    assert splits.info.epochs == pytest.approx(total / per_epoch)
    ids = stream_ids(splits.train)
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
    assert len({tuple(o) for o in orders[:EPOCHS]}) == EPOCHS  # a fresh order every epoch


def test_recut_epochs_cover_the_same_documents_with_new_windows(corpus, tmp_path):
    kwargs = dict(data_path=[corpus.a], split="90,10,0", unique_tokens=BUDGET)
    per_epoch = build(corpus.tokenizer, tmp_path, **kwargs).info.samples_per_epoch
    splits = build(corpus.tokenizer, tmp_path, train_samples=150 * per_epoch, **kwargs)
    train, (planned,) = splits.train, splits.info.components["train"]
    unique = set(planned.document_ids.tolist())
    windows, orders = {}, {}
    for epoch in (0, 1, 149):
        view = train.epoch_windows(0, epoch)
        orders[epoch] = [int(d) for d in view.document_index]
        assert sorted(orders[epoch]) == sorted(unique)  # every epoch cuts the same documents
        expected = _epoch_windows(corpus.a, planned.budget, planned.split_documents.start, view)
        # Every sample of the epoch is one of its windows, each window once: no sample crosses
        # the epoch's end, only the tail of (tokens - 1) % SEQ tokens is not trained on.
        assert len(expected) == per_epoch and (BUDGET - 1) - per_epoch * SEQ < SEQ
        for g in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            sample = train[g]
            window = expected[int(sample["sample_id"])]
            assert int(sample["epoch"]) == epoch
            assert np.array_equal(sample["tokens"].numpy(), window[:-1])
            assert np.array_equal(sample["labels"].numpy(), window[1:])
        windows[epoch] = {tuple(w) for w in expected}
    assert len({tuple(o) for o in orders.values()}) == 3  # a new document order every epoch
    assert len(windows[0] & windows[1]) < per_epoch // 10  # so new windows
    assert len(windows[0] & windows[149]) < per_epoch // 10


def test_fixed_windows_are_megatron_cores_one_epoch_samples_reordered(corpus, tmp_path):
    """--epoch-windows fixed replays megatron-core's own one-epoch GPTDataset, epoch e in the
    order of epoch_permutation(seed, 0, e): the stream before re-cut epochs existed."""
    kwargs = dict(data_path=[corpus.a], split="90,10,0")
    per_epoch = build(corpus.tokenizer, tmp_path, **kwargs).info.samples_per_epoch
    train = build(corpus.tokenizer, tmp_path, train_samples=3 * per_epoch + 5, seed=4,
                  epoch_windows="fixed", **kwargs).train  # fmt: skip
    config = GPTDatasetConfig(
        random_seed=4, sequence_length=SEQ, blend=([corpus.a], None), split="90,10,0",
        path_to_cache=str(tmp_path / "mc"), tokenizer=corpus.tokenizer,
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        create_attention_mask=False,
    )  # fmt: skip
    reference = BlendedMegatronDatasetBuilder(
        GPTDataset, [None, None, None], lambda: True, config
    ).build()[0]
    assert len(reference) == per_epoch
    for g in (0, 1, per_epoch - 1, per_epoch, 2 * per_epoch + 17, 3 * per_epoch + 4):
        epoch, rank = divmod(g, per_epoch)
        index = int(epoch_permutation(4, 0, epoch, per_epoch)[rank])
        sample = train[g]
        assert (int(sample["sample_id"]), int(sample["epoch"])) == (index, epoch)
        assert np.array_equal(sample["tokens"], reference[index]["tokens"])
        assert np.array_equal(sample["labels"], reference[index]["labels"])


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


@pytest.mark.parametrize("windows", ["recut", "fixed"])
def test_sample_fields(corpus, tmp_path, windows):
    splits = build(
        corpus.tokenizer,
        tmp_path,
        data_path=[corpus.a],
        split="90,10,0",
        unique_tokens=BUDGET,
        train_samples=1000,
        valid_samples=2000,
        eod_mask_loss=True,
        epoch_windows=windows,
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
    # (sample_id, epoch) names one window of the run; with fixed windows the sample_id alone
    # names its tokens in every epoch, with re-cut windows it names a new window each epoch.
    assert len(set(stream_ids(splits.train))) == len(splits.train)
    sid = int(sample["sample_id"])
    again = next(
        g for g in range(2 * per_epoch, 3 * per_epoch) if splits.train.position(g).sample_id == sid
    )
    assert int(splits.train[again]["epoch"]) == 2
    same = splits.train[again]["tokens"].tolist() == sample["tokens"].tolist()
    assert same == (windows == "fixed")
    # Validation: epoch 0 always, its own fixed order whatever --epoch-windows says; a stream
    # longer than the split repeats the same samples.
    valid = splits.valid
    n_valid = splits.info.components["valid"][0].samples_per_epoch
    assert n_valid < 1000
    assert stream_ids(valid) == [(g % n_valid, 0) for g in range(2000)]
    (component,) = valid.components
    for g in (0, 5, n_valid + 5):
        assert np.array_equal(valid[g]["tokens"], component[g % n_valid]["tokens"])


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
    # A resumed run builds its datasets anew and starts at the checkpoint's consumed_samples,
    # here mid-epoch: it reads what the straight run read from there on.
    per_epoch = train.samples_per_epoch
    consumed = per_epoch + 4 * (per_epoch // 8)
    assert consumed % per_epoch and consumed % 4 == 0
    fresh = build(
        corpus.tokenizer,
        tmp_path,
        data_path=[corpus.a],
        split="90,10,0",
        unique_tokens=8_000,
        train_samples=480,
    ).train
    resumed = read_loader(
        fresh,
        consumed_samples=consumed,
        micro_batch_size=4,
        data_parallel_rank=0,
        data_parallel_size=1,
        num_workers=num_workers,
    )
    assert ids(resumed) == stream_ids(train)[consumed:]
    assert len(resumed) == len(single) - consumed // 4
    for key in ("tokens", "labels", "loss_mask"):
        assert all(np.array_equal(a[key], b[key]) for a, b in zip(resumed, single[consumed // 4 :]))
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
    assert (
        (budget_a.tokens, budget_b.tokens)
        == (10_000, 30_000)
        == tuple(c.num_tokens for c in train.components)
    )
    assert info.unique_tokens == 40_000
    per_epoch = info.samples_per_epoch
    assert train.sizes == [(10_000 - 1) // SEQ, (30_000 - 1) // SEQ]
    # One epoch of the blend = every window of both components once, in a fresh order; each
    # component cuts new windows every epoch.
    first = [s for s, _ in stream_ids(train, 0, per_epoch)]
    second = [s for s, _ in stream_ids(train, per_epoch, 2 * per_epoch)]
    assert sorted(first) == sorted(second) == list(range(per_epoch)) and first != second
    assert {e for _, e in stream_ids(train, per_epoch, 2 * per_epoch)} == {1}
    for c in (0, 1):
        cuts = [train.epoch_windows(c, e) for e in (0, 1)]
        assert sorted(cuts[0].document_index) == sorted(cuts[1].document_index)
        assert not np.array_equal(cuts[0].document_index, cuts[1].document_index)
        windows = [{tuple(cut[i]["tokens"].tolist()) for i in range(len(cut))} for cut in cuts]
        assert len(windows[0] & windows[1]) < len(cuts[0]) // 10


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
        assert parts[0].split_documents == split_document_range(n, split, name)
        assert np.array_equal(
            getattr(splits, name).components[0].indices, np.arange(n)[parts[0].split_documents]
        )


def test_plan_without_building_matches_the_build(corpus, tmp_path):
    kwargs = dict(data_path=["1", corpus.a, "3", corpus.b], split="90,10,0", unique_tokens=BUDGET)
    built = build(corpus.tokenizer, tmp_path, train_samples=5000, valid_samples=64, **kwargs)
    planned = plan_datasets(
        DataConfig(**kwargs), seq_length=SEQ, train_samples=5000, seed=1, valid_samples=64
    )
    assert planned == built.info
    for ours, theirs in zip(planned.components["train"], built.info.components["train"]):
        assert np.array_equal(ours.document_ids, theirs.document_ids)
    reseeded = plan_datasets(
        DataConfig(**kwargs), seq_length=SEQ, train_samples=5000, seed=2, valid_samples=64
    )
    assert not np.array_equal(
        reseeded.components["train"][0].document_ids, planned.components["train"][0].document_ids
    )
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
    assert splits.info.components["train"][0].split_documents == range(len(corpus.lengths_a))
    assert splits.info.components["valid"][0].split_documents == range(len(corpus.lengths_b))
    assert splits.info.unique_tokens == BUDGET
    assert splits.test is None
