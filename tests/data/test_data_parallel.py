"""Two gloo ranks read disjoint slices whose union is the single-rank stream."""

from __future__ import annotations

from megatron_dlm.testing import run_distributed
from tests.data import workers
from tests.data.helpers import build, read_loader


def test_two_data_parallel_ranks_read_the_single_rank_stream(corpus, tmp_path):
    consumed = 12
    results = run_distributed(
        workers.read_data_parallel_slice,
        2,
        args=(corpus.a, str(corpus.tokenizer_path), str(tmp_path / "dp"), consumed),
    )
    single = read_loader(
        build(
            corpus.tokenizer,
            tmp_path / "single",
            data_path=[corpus.a],
            split="90,10,0",
            unique_tokens=8_000,
            train_samples=240,
            seed=3,
        ).train,
        consumed_samples=consumed,
        micro_batch_size=6,
        data_parallel_rank=0,
        data_parallel_size=1,
        num_workers=0,
    )
    rank0, rank1 = sorted(results, key=lambda r: r["rank"])
    assert len(rank0["ids"]) == len(rank1["ids"]) == len(single) == (240 - consumed) // 6
    for step, batch in enumerate(single):
        expected = list(zip(batch["sample_id"].tolist(), batch["epoch"].tolist()))
        assert rank0["ids"][step] + rank1["ids"][step] == expected
        assert rank0["tokens"][step] + rank1["tokens"][step] == batch["tokens"].tolist()
    epochs = {e for batch in rank0["ids"] + rank1["ids"] for _, e in batch}
    assert len(epochs) > 1
