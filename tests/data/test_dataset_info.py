"""tools/dataset_info.py: counts and the epochs a budget implies."""

from __future__ import annotations

import json

import pytest

from megatron_dlm.config import DataConfig
from megatron_dlm.data.indexed import read_index
from megatron_dlm.data.plan import plan_datasets
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


@pytest.mark.parametrize(
    "flags", [[], ["--unique-tokens-sample", "first", "--unique-tokens-boundary", "whole"]]
)
def test_unique_tokens_agree_with_training(dataset_prefix, flags):
    """The tool reports the unique set that training draws with the same flags and --seed."""
    summary = read_index(dataset_prefix)
    unique = summary.num_tokens // 5
    result = run_tool(
        "tools/dataset_info.py", dataset_prefix, "--split", "90,10,0", "--seed", "7",
        "--unique-tokens", str(unique), "--json", *flags,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout)["budget"]
    options = dict(zip(flags[::2], flags[1::2]))
    data = DataConfig(
        data_path=[dataset_prefix],
        split="90,10,0",
        unique_tokens=unique,
        unique_tokens_sample=options.get("--unique-tokens-sample", "random"),
        unique_tokens_boundary=options.get("--unique-tokens-boundary", "cut"),
    )
    planned = plan_datasets(data, seq_length=64, train_samples=1, seed=7)
    assert (reported["unique_tokens"], reported["unique_documents"]) == (
        planned.unique_tokens,
        planned.unique_documents,
    )
    assert (reported["unique_tokens"] == unique) == (not flags)  # exact unless kept whole
    text = run_tool(
        "tools/dataset_info.py", dataset_prefix, "--split", "90,10,0", "--seed", "7",
        "--unique-tokens", str(unique), *flags,
    ).stdout  # fmt: skip
    how = "the first ones" if flags else "drawn at random with --seed 7"
    assert (
        f"unique tokens: {planned.unique_tokens:,} in {planned.unique_documents:,} documents "
        f"({how}; "
    ) in text
