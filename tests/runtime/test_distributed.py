"""Process-group setup and the multi-rank harness itself."""

from __future__ import annotations

import os
import time

import pytest

from megatron_dlm.testing import DistributedTestError, run_distributed
from tests.runtime import workers


def test_init_distributed_derives_data_parallel_size():
    results = run_distributed(workers.init_and_report, 2, args=({"tensor_model_parallel_size": 2},))
    assert [r["rank"] for r in results] == [0, 1]
    assert {r["dp"] for r in results} == {1}
    assert [r["tp_rank"] for r in results] == [0, 1]
    assert {r["backend"] for r in results} == {"gloo"}
    (single,) = run_distributed(workers.init_and_report, 1, args=({},))
    assert single["world"] == 1 and single["dp"] == 1


def test_world_size_that_does_not_fit_is_a_config_error():
    with pytest.raises(DistributedTestError, match=r"ConfigError: world size 2 is not divisible"):
        run_distributed(workers.init_and_report, 2, args=({"pipeline_model_parallel_size": 4},))


def test_harness_shows_the_failing_rank_traceback():
    with pytest.raises(DistributedTestError) as info:
        run_distributed(workers.raise_on_rank_one, 2)
    text = str(info.value)
    assert "failed on rank(s) [1] of 2" in text
    assert "ValueError: rank one is broken" in text and "raise_on_rank_one" in text
    # The workers survive a Python exception and run the next call.
    assert [r["rank"] for r in run_distributed(workers.init_and_report, 2, args=({},))] == [0, 1]


def test_harness_times_out_and_recovers():
    with pytest.raises(
        DistributedTestError, match=r"did not finish within 3 s; ranks still running"
    ):
        run_distributed(workers.sleep_forever, 2, timeout=3)
    results = run_distributed(workers.init_and_report, 2, args=({},))
    assert [r["rank"] for r in results] == [0, 1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of an exited worker is reaped by init; until then it is a zombie.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_processes_started_by_a_crashed_worker_end_with_it():
    pids = run_distributed(workers.start_a_manager, 2)
    assert all(_alive(pid) for pid in pids)
    with pytest.raises(DistributedTestError, match="died"):
        run_distributed(workers.die, 2)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
