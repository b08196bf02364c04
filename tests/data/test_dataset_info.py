"""tools/dataset_info.py: counts and the epochs a budget implies."""

from __future__ import annotations

import json

from megatron_dlm.data.indexed import read_index
from tests.data.conftest import run_tool


def test_counts_and_epochs(dataset_prefix):
    summary = read_index(dataset_prefix)
    unique = summary.num_tokens // 4
    result = run_tool(
        "tools/dataset_info.py", dataset_prefix, "--unique-tokens", str(unique),
        "--train-tokens", str(unique * 150),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{summary.num_documents:,} documents, {summary.num_tokens:,} tokens" in out
    assert "tokenizer: SentencePieceTokenizer" in out and "mask 3" in out
    assert "= 150.00 epochs (the budget repeats the unique tokens 150.00 times)" in out


def test_budget_from_iterations_as_json(dataset_prefix):
    summary = read_index(dataset_prefix)
    result = run_tool(
        "tools/dataset_info.py", dataset_prefix, dataset_prefix, "--train-iters", "100",
        "--global-batch-size", "8", "--seq-length", "512", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert [d["documents"] for d in info["datasets"]] == [summary.num_documents] * 2
    plan = info["budget"]
    assert plan["unique_tokens"] == 2 * summary.num_tokens
    assert plan["train_tokens"] == 100 * 8 * 512
    assert abs(plan["epochs"] - 409600 / (2 * summary.num_tokens)) < 1e-9


def test_more_unique_tokens_than_the_data_is_an_error(dataset_prefix):
    total = read_index(dataset_prefix).num_tokens
    result = run_tool("tools/dataset_info.py", dataset_prefix, "--unique-tokens", str(total + 1))
    assert result.returncode == 1
    assert f"--unique-tokens {total + 1:,} is larger than the data: {total:,} tokens" in (
        result.stderr
    )
    usage = run_tool("tools/dataset_info.py", dataset_prefix, "--train-iters", "10")
    assert usage.returncode == 2 and "--global-batch-size" in usage.stderr
