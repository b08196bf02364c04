"""The crossover study runner: matched configs, crossings, and an end-to-end tiny study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_dlm.eval.crossover import (
    OBJECTIVE_FIELDS,
    ModelSpec,
    StudyError,
    StudySpec,
    check_matched,
    config_differences,
    find_crossings,
    plan_study,
)

REPO = Path(__file__).resolve().parents[2]
TINY = ("--config", str(REPO / "examples/recipes/crossover_cpu.yaml"), "--num-layers", "1",
        "--hidden-size", "32", "--lr-warmup-iters", "0")  # fmt: skip


def _spec(tiny_data, out: Path, **kw) -> StudySpec:
    values = dict(
        output_dir=out,
        data_flags=tuple(tiny_data.flags()),
        models=(ModelSpec("tiny", TINY),),
        unique_tokens=(4000,),
        epochs=(8,),
        objectives=("dlm", "ar", "ar_mask"),
        eval_samples=32,
    )
    values.update(kw)
    return StudySpec(**values)


def test_matched_runs_differ_only_in_objective_fields(tiny_data, tmp_path):
    plans = plan_study(_spec(tiny_data, tmp_path))
    dlm, ar, ar_mask = plans
    assert [p.objective for p in plans] == ["dlm", "ar", "ar_mask"]
    for other in (ar, ar_mask):
        assert config_differences(dlm.config, other.config) == []
        differing = {
            (section, name)
            for section in dlm.config
            for name in dlm.config[section]
            if dlm.config[section][name] != other.config[section][name]
        }
        assert ("objective", "objective") in differing
        assert {d for d in differing if d[0] != "checkpoint"} <= OBJECTIVE_FIELDS
    assert ar_mask.config["objective"]["input_mask_prob"] == 0.3
    assert dlm.train_iters == round(8 * ((4000 - 1) // 128) / 32)


def test_a_mismatched_group_is_refused(tiny_data, tmp_path):
    plans = plan_study(_spec(tiny_data, tmp_path, objectives=("dlm", "ar")))
    plans[1].config["optimizer"]["lr"] = 5e-4
    with pytest.raises(StudyError, match=r"not matched: they differ in optimizer.lr"):
        check_matched(plans)


def _rows(objective, values):
    return [
        {"model": "m", "unique_tokens": 10, "epochs_budget": 5.0, "objective": objective,
         "epoch": float(e), "heldout": v, "flops": 10.0 * e}
        for e, v in enumerate(values, 1)
    ]  # fmt: skip


def test_crossings_are_interpolated_between_evaluations():
    rows = _rows("ar", [5.0, 4.0, 3.5, 3.8, 4.2]) + _rows("dlm", [6.0, 5.0, 4.0, 3.4, 3.3])
    (c,) = find_crossings(rows)
    # diff = dlm - ar: 1.0, 1.0, 0.5, -0.4, -0.9 -> crosses between epochs 3 and 4.
    assert c.epoch == pytest.approx(3 + 0.5 / 0.9)
    assert c.flops == pytest.approx(10 * c.epoch)
    assert (c.ar_best, c.ar_best_epoch, c.ar_turns_up_epoch) == (3.5, 3.0, 3.0)
    assert c.dlm_best == 3.3 and c.best_beats_best
    never = find_crossings(_rows("ar", [5, 4, 3]) + _rows("dlm", [6, 5, 4]))[0]
    assert never.epoch is None and not never.best_beats_best and never.ar_turns_up_epoch is None


def _cli(out: Path, tiny_data) -> list[str]:
    return [sys.executable, "tools/crossover.py", "--output-dir", str(out),
            "--tokenizer-model", str(tiny_data.tokenizer), "--train-data-path", tiny_data.train,
            "--valid-data-path", tiny_data.valid, "--model", "tiny=" + " ".join(TINY),
            "--unique-tokens", "4000", "--epochs", "12", "--eval-every-epochs", "4",
            "--eval-samples", "32", "--save-every-epochs", "1", "--parallel", "2",
            "--threads", "1"]  # fmt: skip


@pytest.mark.slow  # over 60 s on a 2-core machine: make test-slow
def test_the_study_runs_resumes_and_never_repeats_work(tiny_data, tmp_path):
    out = tmp_path / "study"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(_cli(out, tiny_data), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    runs = out / "runs"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (runs / "tiny_u4000_e12_dlm" / "iter_0000003").is_dir():
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its runs, mid-study
    proc.wait(timeout=30)
    first = subprocess.run(_cli(out, tiny_data), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "resume  tiny_u4000_e12_dlm" in first.stdout
    log = (runs / "tiny_u4000_e12_dlm" / "train.log").read_text()
    assert "resumed from" in log
    table = [json.loads(line) for line in (out / "study.jsonl").read_text().splitlines()]
    epochs = sorted({round(r["epoch"]) for r in table if r["objective"] == "dlm"})
    assert len(epochs) >= 2 and {r["objective"] for r in table} == {"dlm", "ar"}
    assert {r["heldout_metric"] for r in table} == {"dlm_bound", "ar_nll"}
    assert all(r["flops"] > 0 and r["heldout"] > 0 for r in table)
    assert (out / "study.csv").read_text().startswith("model,unique_tokens,epochs_budget")
    assert list((out / "plots").glob("*.png")) and (out / "crossings.json").is_file()
    metrics = runs / "tiny_u4000_e12_ar" / "metrics.jsonl"
    before = metrics.stat().st_mtime_ns
    again = subprocess.run(_cli(out, tiny_data), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0
    assert again.stdout.count("(skipped)") == 2 and "start" not in again.stdout
    assert metrics.stat().st_mtime_ns == before


def test_downstream_tasks_reach_every_run_as_pretrain_flags(tiny_data, tmp_path):
    plans = plan_study(_spec(tiny_data, tmp_path, eval_tasks="python_nextline_mc",
                             eval_tasks_every_epochs=4, eval_tasks_limit=5))  # fmt: skip
    for plan in plans:
        training = plan.config["training"]
        assert training["eval_tasks"] == "python_nextline_mc"
        assert training["eval_tasks_limit"] == 5
        assert training["eval_tasks_interval"] == round(4 * ((4000 - 1) // 128) / 32)
    assert config_differences(plans[0].config, plans[1].config) == []
