"""HumanEval execution sandbox: passes, failures, timeouts, memory bombs, writes outside."""

from __future__ import annotations

import time

import pytest

from megatron_dlm.eval.humaneval import (
    check_completion,
    evaluate_completions,
    load_problems,
    pass_at_k,
    truncate_completion,
)
from megatron_dlm.eval.sandbox import run_program


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def test_all_164_problems_ship_with_the_package(problems):
    assert len(problems) == 164
    assert {"prompt", "test", "entry_point", "canonical_solution"} <= set(problems["HumanEval/0"])


def test_correct_completion_passes_and_wrong_one_fails(problems):
    problem = problems["HumanEval/0"]
    assert check_completion(problem, problem["canonical_solution"]).passed
    result = check_completion(problem, "    return False\n")
    assert not result.passed and result.status == "failed" and "AssertionError" in result.detail


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_program("while True:\n    pass\n", timeout_s=2)
    assert result.status == "timeout" and time.monotonic() - start < 10


def test_memory_bomb_is_stopped():
    result = run_program("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))\n",
                         timeout_s=20, memory_mb=256)  # fmt: skip
    assert result.status == "memory"


@pytest.mark.parametrize(
    "code",
    [
        "open({target!r}, 'w').write('escaped')",
        "import os\nos.chdir({parent!r})\nopen({name!r}, 'w').write('escaped')",
        "import pathlib\npathlib.Path({target!r}).write_text('escaped')",
        "import os\nos.rename('a.txt', {target!r})",
        "import subprocess\nsubprocess.run(['touch', {target!r}])",
        "import shutil\nshutil.copy(__file__, {target!r})",
    ],
)
def test_nothing_is_written_outside_the_working_directory(tmp_path, code):
    target = tmp_path / "outside.txt"
    program = "open('a.txt', 'w').write('inside')\n" + code.format(
        target=str(target), parent=str(tmp_path), name=target.name
    )
    result = run_program(program, timeout_s=5)
    assert not result.passed and "sandbox" in result.detail
    assert not target.exists()


def test_writes_inside_the_working_directory_are_allowed():
    assert run_program("open('x.txt', 'w').write('1')\nassert open('x.txt').read() == '1'").passed


def test_no_network():
    result = run_program("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)")
    assert not result.passed and "socket.connect is not allowed" in result.detail


def test_pass_at_k_and_truncation(problems):
    assert truncate_completion("    return 1\ndef other():\n    pass") == "    return 1"
    assert pass_at_k([10, 10], [10, 0], 1) == pytest.approx(0.5)
    assert pass_at_k([5], [1], 5) == pytest.approx(1.0)
    problem_ids = ["HumanEval/2", "HumanEval/3"]
    samples = {
        "HumanEval/2": [problems["HumanEval/2"]["canonical_solution"], "    return None\n"],
        "HumanEval/3": ["    return True\n", "    return True\n"],
    }
    scores = evaluate_completions({k: problems[k] for k in problem_ids}, samples, ks=(1, 2))
    assert scores == {"pass@1": pytest.approx(0.25), "pass@2": pytest.approx(0.5)}


def test_lm_eval_hook_scores_pass_at_1_and_10(problems):
    from megatron_dlm.eval.humaneval import process_results

    problem = problems["HumanEval/4"]
    samples = [problem["canonical_solution"]] + ["    return 0.0\n"] * 9
    scores = process_results(problem, samples)
    assert scores == {"pass@1": pytest.approx(0.1), "pass@10": pytest.approx(1.0)}
    assert process_results(problem, samples[:2]) == {"pass@1": pytest.approx(0.5)}


def test_offline_task_configs_load_in_lm_eval(tmp_path):
    from lm_eval.tasks import TaskManager

    from megatron_dlm.eval.tasks import TASKS, write_task_configs

    manager = TaskManager(include_path=str(write_task_configs(tmp_path)), include_defaults=False)
    tasks = manager.load_task_or_group(list(TASKS))
    assert set(tasks) == set(TASKS)
    assert len(tasks["humaneval_offline_pass10"].eval_docs) == 164
