"""``pretrain_dlm.py --eval-tasks``: lm-eval tasks on the live model during training.

Through the CLI: the in-training numbers are those of ``tools/evaluate.py --load`` on the
checkpoint of that iteration; training (and a resumed run) is bit-identical with and without
the evaluations; two data-parallel ranks give the numbers of one; bad flags exit 2 naming them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.workers import TINY_MODEL, read_metrics

REPO = Path(__file__).resolve().parents[2]
TASK = "python_nextline_mc"
# 4 steps; tasks at iterations 2 and 4 on 3 documents (12 requests), 8 Monte Carlo masks each.
TASK_FLAGS = [
    "--eval-tasks", TASK, "--eval-tasks-interval", "2", "--eval-tasks-limit", "3",
    "--eval-tasks-model-args", "mc_num=8,mc_batch_size=16",
]  # fmt: skip
TRAIN = ["--train-iters", "4", "--eval-interval", "2", "--save-interval", "2"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                HF_DATASETS_OFFLINE="1", PYTHONWARNINGS="ignore")  # fmt: skip


def _run(*args: str, ranks: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    return subprocess.run(
        [*launcher, *args], cwd=REPO, env=_env(), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def _pretrain(tiny_data, save: Path, *extra: str, ranks: int = 1) -> list[dict]:
    proc = _run("pretrain_dlm.py", *tiny_data.flags(), *TINY_MODEL, *TRAIN, "--save", str(save),
                *extra, ranks=ranks)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return read_metrics(save)


def _split(records: list[dict], split: str) -> dict[int, dict]:
    return {r["iteration"]: r for r in records if r["split"] == split}


def _tasks(records: list[dict]) -> dict[int, dict[str, float]]:
    return {
        i: {k: v for k, v in r.items() if k.startswith(f"{TASK}/")}
        for i, r in _split(records, "tasks").items()
    }


@pytest.fixture(scope="module")
def with_tasks(tiny_data, tmp_path_factory) -> tuple[Path, list[dict]]:
    """One rank, 4 steps, tasks at 2 and 4, checkpoints at 2 and 4."""
    save = tmp_path_factory.mktemp("with_tasks") / "run"
    return save, _pretrain(tiny_data, save, *TASK_FLAGS)


@pytest.mark.slow  # a training run and tools/evaluate.py: ~60 s on a loaded 2-core machine
def test_in_training_numbers_are_those_of_evaluating_the_checkpoint(with_tasks, tmp_path):
    save, records = with_tasks
    tasks = _tasks(records)
    assert sorted(tasks) == [2, 4]
    assert set(tasks[4]) == {f"{TASK}/acc", f"{TASK}/acc_stderr", f"{TASK}/acc_norm",
                             f"{TASK}/acc_norm_stderr"}  # fmt: skip
    proc = _run(
        "tools/evaluate.py", "--load", str(save), "--tasks", TASK, "--limit", "3",
        "--model_args", "mc_num=8,mc_batch_size=16", "--batch_size", "8",
        "--output_path", str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    (path,) = (tmp_path / "out").rglob("results*.json")
    results = json.loads(path.read_text())
    assert results["n-samples"][TASK]["effective"] == 3
    expected = {f"{TASK}/{k.split(',')[0]}": v for k, v in results["results"][TASK].items()
                if "," in k and isinstance(v, float)}  # fmt: skip
    assert tasks[4] == expected  # the checkpoint of iteration 4 (the latest)


@pytest.mark.slow  # four training runs: ~90 s on a loaded 2-core machine
def test_training_and_its_resume_are_unchanged_by_the_evaluations(with_tasks, tiny_data, tmp_path):
    _, records = with_tasks
    plain = _pretrain(tiny_data, tmp_path / "plain")
    assert not _split(plain, "tasks")
    for split in ("train", "valid"):
        ours, theirs = _split(records, split), _split(plain, split)
        assert sorted(ours) == sorted(theirs) and ours
        for iteration in ours:  # bit-identical: the same floats, printed the same
            assert ours[iteration]["loss"] == theirs[iteration]["loss"], (split, iteration)
            assert ours[iteration]["grad_norm" if split == "train" else "masked_ce"] == theirs[
                iteration]["grad_norm" if split == "train" else "masked_ce"]  # fmt: skip
    # Stopped after the evaluation of iteration 2, resumed from its checkpoint.
    resumed = tmp_path / "resumed"
    _pretrain(tiny_data, resumed, *TASK_FLAGS, "--exit-interval", "2")
    again = _pretrain(tiny_data, resumed, *TASK_FLAGS)
    straight = _split(records, "train")
    for iteration, record in _split(again, "train").items():
        assert record["loss"] == straight[iteration]["loss"], iteration
    assert _tasks(again) == _tasks(records)


@pytest.mark.slow  # a 2-rank torchrun training run: ~60 s on a loaded 2-core machine
def test_two_data_parallel_ranks_give_the_numbers_of_one(with_tasks, tiny_data, tmp_path):
    _, records = with_tasks
    two = _pretrain(tiny_data, tmp_path / "two", *TASK_FLAGS, "--micro-batch-size", "2",
                    "--global-batch-size", "4", ranks=2)  # fmt: skip
    one_tasks, two_tasks = _tasks(records), _tasks(two)
    assert sorted(two_tasks) == [2, 4]
    # The gradients of 2 x 2 sequences are summed in another order than 4 on one rank.
    for iteration in (2, 4):
        assert two_tasks[iteration] == pytest.approx(one_tasks[iteration], rel=1e-6, abs=1e-9)


@pytest.mark.slow  # a 2-rank torchrun training run: ~60 s on a loaded 2-core machine
def test_tensor_parallel_ranks_evaluate_together(with_tasks, tiny_data, tmp_path):
    _, records = with_tasks
    two = _pretrain(tiny_data, tmp_path / "tp2", *TASK_FLAGS, "--tensor-model-parallel-size",
                    "2", ranks=2)  # fmt: skip
    one_tasks, two_tasks = _tasks(records), _tasks(two)
    assert sorted(two_tasks) == [2, 4]
    for iteration in (2, 4):  # TP splits the matrix products: equal up to float rounding
        assert two_tasks[iteration] == pytest.approx(one_tasks[iteration], rel=1e-6, abs=1e-9)


def _error(*flags: str) -> subprocess.CompletedProcess:
    return _run("pretrain_dlm.py", *TINY_MODEL, "--tokenizer-model", "no.model",
                "--train-data-path", "x", "--train-iters", "1", *flags, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--eval-tasks", "no_such_task_xyz"], r"--eval-tasks: unknown lm-eval task\(s\) no_such"),
        pytest.param(
            ["--eval-tasks", TASK, "--eval-tasks-interval", "0"],
            r"--eval-tasks-interval must be",
            marks=pytest.mark.slow,
        ),
        (
            ["--eval-tasks", TASK, "--eval-tasks-model-args", "mc_num=abc"],
            r"--eval-tasks-model-args mc_num=abc: expected an integer",
        ),
        pytest.param(
            ["--eval-tasks", TASK, "--pipeline-model-parallel-size", "2"],
            r"--eval-tasks .*not with --pipeline-model-parallel-size > 1",
            marks=pytest.mark.slow,
        ),
    ],
    ids=["unknown_task", "interval_zero", "model_args_not_a_number", "pipeline_parallel"],
)
def test_bad_eval_task_flags_exit_2_naming_the_flag(flags, message):
    from tests.test_cli_errors import assert_one_clear_error

    proc = _error(*flags)
    assert_one_clear_error(proc, 2, message)


def test_results_flatten_to_task_slash_metric_and_reach_tensorboard_by_that_name():
    from megatron_dlm.eval.training_tasks import flatten_results
    from megatron_dlm.training.metrics import megatron_scalars

    results = {"results": {TASK: {"alias": TASK, "acc,none": 0.5, "acc_stderr,none": "N/A",
                                  "pass@1,create_test": 0.25}}}  # fmt: skip
    metrics = flatten_results(results)
    assert metrics == {f"{TASK}/acc": 0.5, f"{TASK}/create_test/pass@1": 0.25}
    record = {"split": "tasks", "iteration": 4, "consumed_samples": 16, "epoch": 0.1,
              "floating_point_operations": 1e9, **metrics, "eval_time_s": 3.0}  # fmt: skip
    assert megatron_scalars(record) == [(f"{TASK}/acc", 0.5, False),
                                        (f"{TASK}/create_test/pass@1", 0.25, False)]  # fmt: skip
