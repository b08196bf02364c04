"""Epoch replay costs one epoch: indices on disk and in memory do not grow with epochs."""

from __future__ import annotations

import pytest
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

from tests.data.helpers import SEQ, build, directory_bytes

EPOCHS = 150


def _megatron_cache_bytes(corpus, cache, num_samples: int) -> int:
    """Bytes of megatron-core's own GPTDataset indices for ``num_samples`` samples."""
    config = GPTDatasetConfig(
        random_seed=1,
        sequence_length=SEQ,
        blend=([corpus.a], None),
        split="100,0,0",
        path_to_cache=str(cache),
        tokenizer=corpus.tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
    )
    BlendedMegatronDatasetBuilder(
        GPTDataset, [num_samples, None, None], lambda: True, config
    ).build()
    return directory_bytes(str(cache))


@pytest.mark.parametrize("windows", ["recut", "fixed"])
def test_index_does_not_grow_with_epochs(corpus, tmp_path, windows):
    kwargs = dict(data_path=[corpus.a], split="100,0,0", epoch_windows=windows)
    per_epoch = build(corpus.tokenizer, tmp_path / "probe", **kwargs).info.samples_per_epoch
    one = build(corpus.tokenizer, tmp_path / "one", train_samples=per_epoch, **kwargs).train
    many = build(
        corpus.tokenizer, tmp_path / "many", train_samples=EPOCHS * per_epoch, **kwargs
    ).train
    ours_one, ours_many = directory_bytes(tmp_path / "one"), directory_bytes(tmp_path / "many")
    assert ours_one > 0 and ours_many == ours_one

    # In memory: the replay state after visiting all 150 epochs equals that after one; with
    # re-cut windows it holds one epoch's cut, which for epoch 150 is the size of epoch 1's.
    one[per_epoch - 1]
    first = one.index_nbytes()
    for epoch in range(EPOCHS):
        many[epoch * per_epoch + 7]
        assert many.index_nbytes() == first
    assert many.position(EPOCHS * per_epoch - 1).epoch == EPOCHS - 1
    (component,) = one.components
    documents = len(component.indices)
    if windows == "recut":
        assert many._cuts[0][0] == EPOCHS - 1  # only the current epoch's cut is held
        cut = many.epoch_windows(0, EPOCHS - 1)
        assert len(cut) == per_epoch and len(cut.document_index) == documents
        assert first <= 8 * per_epoch + 4 * documents + 8 * (per_epoch + 1)
    else:
        assert first <= 8 * per_epoch

    # The same measure on megatron-core's multi-epoch index grows with the epochs.
    theirs_one = _megatron_cache_bytes(corpus, tmp_path / "mc_one", per_epoch)
    theirs_many = _megatron_cache_bytes(corpus, tmp_path / "mc_many", EPOCHS * per_epoch)
    assert theirs_many > 100 * theirs_one
