"""lm-eval across data-parallel ranks: each rank evaluates its share, rank 0 reports the same
numbers as one process."""

from __future__ import annotations

import pytest

from megatron_dlm.testing import run_distributed
from tests.eval import workers

# multiple choice, LAMBADA-style greedy match, generate_until
TASKS = ["python_nextline_mc", "python_lastword_greedy", "python_lastword_generate"]


def _metrics(results: dict) -> dict[str, float]:
    # perplexity_stderr is a bootstrap over the documents in the order the ranks gathered them:
    # another order draws other resamples (lm-eval's own data parallelism does the same).
    return {
        f"{task}/{name}": value
        for task, values in results["results"].items()
        for name, value in values.items()
        if isinstance(value, float) and not name.startswith("perplexity_stderr")
    }


def test_two_gloo_ranks_give_the_numbers_of_one_process(trained, tmp_path):
    include = workers.write_greedy_task(str(tmp_path / "tasks"))
    args = (str(trained / "ckpt"), TASKS, 5, include)
    # Generous timeouts: the machine may be shared; a normal run takes well under a minute.
    ((_, alone),) = run_distributed(workers.evaluate_worker, 1, args=args, timeout=900)
    split = sorted(run_distributed(workers.evaluate_worker, 2, args=args, timeout=900))
    assert [rank for rank, _ in split] == [0, 1]
    assert split[1][1] is None  # only rank 0 reports
    one, two = _metrics(alone), _metrics(split[0][1])
    assert set(one) == set(two) and len(one) >= 6
    # Equal up to float32 rounding: a request's forward passes share a batch with other
    # requests, which differ between the layouts.
    assert two == pytest.approx(one, rel=1e-6, abs=1e-9)
    for task in TASKS:  # every document was evaluated once, by one of the ranks
        assert split[0][1]["n-samples"][task] == alone["n-samples"][task]
