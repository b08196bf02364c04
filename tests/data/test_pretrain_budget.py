"""pretrain_dlm.py --unique-tokens: the exact budget is logged; re-cut epochs resume exactly."""

from __future__ import annotations

import json

import pytest

from tests.data.conftest import run_tool
from tests.training.workers import TINY_MODEL

UNIQUE = 3_000  # (3000 - 1) // 64 = 46 samples per epoch
ITERS, BATCH = 12, 8  # 96 samples: epochs 0, 1 and part of 2


def _pretrain(tiny_data, save, *extra: str):
    result = run_tool(
        "pretrain_dlm.py", *tiny_data.flags(), *TINY_MODEL, "--save", str(save),
        "--unique-tokens", str(UNIQUE), "--train-iters", str(ITERS),
        "--micro-batch-size", str(BATCH), "--eval-interval", "100", *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _train_records(save) -> list[dict]:
    lines = (save / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, filter(None, lines)) if r["split"] == "train"]


@pytest.mark.slow
def test_exact_budget_is_logged_and_a_mid_epoch_stop_resumes_exactly(tiny_data, tmp_path):
    straight = _pretrain(tiny_data, tmp_path / "straight")
    log = straight.stdout + straight.stderr
    assert f"unique set: --unique-tokens {UNIQUE:,} -> {UNIQUE:,} tokens in " in log
    assert "drawn at random (seed 1234)" in log and "windows re-cut every epoch" in log
    assert log.count("unique set:") == 1

    split = tmp_path / "split"
    _pretrain(tiny_data, split, "--exit-interval", "7")  # 56 samples: 10 into epoch 1
    assert (split / "latest_checkpointed_iteration.txt").read_text().strip() == "7"
    _pretrain(tiny_data, split)

    a, b = _train_records(tmp_path / "straight"), _train_records(split)
    assert [r["iteration"] for r in b] == list(range(1, ITERS + 1))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["grad_norm"] for r in a] == [r["grad_norm"] for r in b]
    per_epoch = (UNIQUE - 1) // 64
    assert [r["epoch"] for r in a] == pytest.approx(
        [i * BATCH / per_epoch for i in range(1, ITERS + 1)]
    )
    assert a[-1]["epochs_total"] == pytest.approx(ITERS * BATCH / per_epoch)
