"""A run stopped, preempted, resumed, extended or re-laid-out trains the model a straight run does.

The headline recipe's settings: 2 data-parallel ranks with the distributed optimizer, with and
without overlapped gradient reduction and parameter gathering.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from megatron_dlm.testing import DistributedTestError, run_distributed
from tests.training.workers import TINY_MODEL, pretrain_worker

DIST_OPT = ["--use-distributed-optimizer"]
OVERLAP = [*DIST_OPT, "--overlap-grad-reduce", "--overlap-param-gather"]
BATCH = ["--micro-batch-size", "2", "--global-batch-size", "4"]


def _argv(tiny_data, save: Path, *extra: str) -> list[str]:
    return [*tiny_data.flags(), *TINY_MODEL, *BATCH, "--save", str(save), *extra]


def _fit(tiny_data, world: int, save: Path, *extra: str) -> list[dict]:
    """pretrain() on ``world`` ranks into ``save``; the reporting rank's metrics records."""
    results = run_distributed(
        pretrain_worker, world, args=(_argv(tiny_data, save, *extra), str(save))
    )
    return next(r for r in results if r)


def _split(records: list[dict], split: str = "train") -> list[dict]:
    return [r for r in records if r["split"] == split]


def _losses(records: list[dict]) -> list[tuple[str, int, float]]:
    return [(r["split"], r["iteration"], r["loss"]) for r in records]


def model_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model tensors of a checkpoint directory, read with torch's own DCP reader."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = checkpoint.with_name(checkpoint.name + ".pt")
    dcp_to_torch_save(str(checkpoint), str(out))
    state = torch.load(out, weights_only=False)
    out.unlink()
    return {
        key: value
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
        and not key.startswith(("optimizer", "rng_state"))
        and "_extra_state" not in key
    }


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = model_weights(a), model_weights(b)
    assert wa.keys() == wb.keys() and len(wa) > 5
    different = [key for key in wa if not torch.equal(wa[key], wb[key])]
    assert not different, f"weights differ: {different}"


@pytest.mark.parametrize("flags", [DIST_OPT, OVERLAP], ids=["distopt", "distopt-overlap"])
def test_distributed_optimizer_resume_is_bit_exact(tiny_data, tmp_path, flags):
    """8 steps straight == 4 steps, --exit-interval stop, resume: every loss and the weights.

    Validation every 3 steps exercises the parameter-gather bracket mid-run; the stop at 4 saves
    right after a step (no validation before it).
    """
    common = ("--train-iters", "8", "--eval-interval", "3", *flags)
    straight = _fit(tiny_data, 2, tmp_path / "straight", *common)
    split = tmp_path / "split"
    first = _fit(tiny_data, 2, split, *common, "--exit-interval", "4")
    assert (split / "latest_checkpointed_iteration.txt").read_text().strip() == "4"
    assert [r["iteration"] for r in _split(first)] == [1, 2, 3, 4]
    resumed = _fit(tiny_data, 2, split, *common)
    assert _losses(resumed) == _losses(straight)
    assert [r["grad_norm"] for r in _split(resumed)] == [r["grad_norm"] for r in _split(straight)]
    assert_same_weights(tmp_path / "straight" / "iter_0000008", split / "iter_0000008")


def test_saved_weights_are_the_live_weights_with_overlapped_gathers(tiny_data, tmp_path):
    """With --overlap-param-gather a step leaves other ranks' shards to be gathered in the next
    forward; a save that follows no validation must still write the updated weights: those of
    the same run with the gather done inside the step."""
    common = ("--train-iters", "4", "--save-interval", "2", "--eval-interval", "1000")
    _fit(tiny_data, 2, tmp_path / "gathered", *common, *DIST_OPT)
    _fit(tiny_data, 2, tmp_path / "overlapped", *common, *OVERLAP)
    for iteration in ("iter_0000002", "iter_0000004"):
        assert_same_weights(tmp_path / "gathered" / iteration, tmp_path / "overlapped" / iteration)


def test_resume_at_another_data_parallel_size(tiny_data, tmp_path):
    """The default (dp_reshardable) format: saved at DP=2, resumed at DP=1, the run goes on as
    if uninterrupted (up to the reduction order); at another TP it is a clear error."""
    common = ("--train-iters", "8", "--eval-interval", "1000", *DIST_OPT)
    straight = _split(_fit(tiny_data, 2, tmp_path / "straight", *common))
    run = tmp_path / "run"
    _fit(tiny_data, 2, run, *common, "--exit-interval", "4")
    other_tp = tmp_path / "other_tp"
    shutil.copytree(run, other_tp)
    resumed = _split(_fit(tiny_data, 1, run, *common))
    assert [r["iteration"] for r in resumed] == list(range(1, 9))
    for ref, got in zip(straight[4:], resumed[4:]):
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5), got["iteration"]
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5), got["iteration"]
    with pytest.raises(
        DistributedTestError,
        match=r"dp_reshardable .*--tensor-model-parallel-size: checkpoint 1, now 2.*"
        r"--dist-ckpt-optim-fully-reshardable.*--no-load-optim",
    ):
        _fit(tiny_data, 2, other_tp, *common, "--tensor-model-parallel-size", "2")
    # --no-load-optim: the model loads at TP=2, the optimizer (and its schedule) start afresh.
    fresh = _split(
        _fit(
            tiny_data, 2, other_tp, *common, "--tensor-model-parallel-size", "2", "--no-load-optim"
        )  # fmt: skip
    )
    assert [r["iteration"] for r in fresh][4:] == [5, 6, 7, 8]
    assert fresh[4]["loss"] == pytest.approx(straight[4]["loss"], rel=1e-5)  # the same weights


def test_distributed_optimizer_instances_train_as_one_and_resume_as_one(tiny_data, tmp_path):
    """--num-distributed-optimizer-instances 2 (MegaDLMs' 1.7B launcher: 8, one per node) on 2
    ranks with overlapped gathers: each instance holds the whole optimizer state, gradients are
    reduce-scattered within an instance and all-reduced across them. Every loss and gradient
    norm is that of one instance, also after its checkpoint is resumed with one instance."""
    common = ("--train-iters", "6", "--eval-interval", "1000", *OVERLAP)
    one = _split(_fit(tiny_data, 2, tmp_path / "one", *common))
    run = tmp_path / "run"
    two = ("--num-distributed-optimizer-instances", "2")
    first = _split(_fit(tiny_data, 2, run, *common, *two, "--exit-interval", "3"))
    assert [r["iteration"] for r in first] == [1, 2, 3]
    resumed = _split(_fit(tiny_data, 2, run, *common))
    assert [r["iteration"] for r in resumed] == list(range(1, 7))
    for ref, got in zip(one, resumed):
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-6), got["iteration"]
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-6), got["iteration"]


@pytest.mark.parametrize(
    "layout",
    [["--tensor-model-parallel-size", "2"], ["--pipeline-model-parallel-size", "2"]],
    ids=["tp2", "pp2"],
)
def test_fully_reshardable_resume_at_another_layout(tiny_data, tmp_path, layout):
    """--dist-ckpt-optim-fully-reshardable: saved at DP=2, resumed at TP=2 or PP=2 (DP=1)."""
    common = ("--train-iters", "6", "--eval-interval", "1000", *DIST_OPT)
    straight = _split(_fit(tiny_data, 2, tmp_path / "straight", *common))
    run = tmp_path / "run"
    _fit(tiny_data, 2, run, *common, "--exit-interval", "3", "--dist-ckpt-optim-fully-reshardable")
    resumed = _split(_fit(tiny_data, 2, run, *common, *layout))
    assert [r["iteration"] for r in resumed] == list(range(1, 7))
    for ref, got in zip(straight[3:], resumed[3:]):
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5), got["iteration"]
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5), got["iteration"]


def _cosine_lr(step: int, *, lr: float, min_lr: float, warmup: int, decay: int) -> float:
    """Megatron's warmup + cosine schedule at ``step`` (the LR logged after that step)."""
    if step <= warmup:
        return lr * step / warmup
    if step > decay:
        return min_lr
    ratio = (step - warmup) / (decay - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * ratio))


def test_extending_the_run_needs_a_scheduler_flag(tiny_data, tmp_path):
    """Train 4 steps, resume with --train-iters 6: an error without a flag; with each flag the
    documented schedule (TINY_MODEL: lr 2e-3 -> 2e-4, 2 warmup steps, cosine)."""
    schedule = {"lr": 2e-3, "min_lr": 2e-4, "warmup": 2}
    run = tmp_path / "run"
    _fit(tiny_data, 1, run, "--train-iters", "4", "--eval-interval", "1000")
    copies = {name: tmp_path / name for name in ("override", "keep")}
    for copy in copies.values():
        shutil.copytree(run, copy)
    longer = ("--train-iters", "6", "--eval-interval", "1000")
    with pytest.raises(
        DistributedTestError,
        match=r"CheckpointError: the LR schedule differs from the checkpoint's \(saved at step "
        r"4\): decay steps .*checkpoint 4, now 6\. Pass --override-opt-param-scheduler .* or "
        r"--use-checkpoint-opt-param-scheduler",
    ):
        _fit(tiny_data, 1, run, *longer)
    with pytest.raises(DistributedTestError, match=r"learning rate \(--lr\): checkpoint 0.002"):
        _fit(tiny_data, 1, run, "--train-iters", "4", "--lr", "1e-3")
    # Megatron-LM's spelling of the flag works too.
    override = _split(_fit(tiny_data, 1, copies["override"], *longer,
                           "--override-opt_param-scheduler"))  # fmt: skip
    keep = _split(_fit(tiny_data, 1, copies["keep"], *longer,
                       "--use-checkpoint-opt-param-scheduler"))  # fmt: skip
    assert [r["iteration"] for r in override] == [r["iteration"] for r in keep] == list(range(1, 7))
    for record in override[4:]:  # the 6-step schedule from step 4 on
        expected = _cosine_lr(record["iteration"], **schedule, decay=6)
        assert record["lr"] == pytest.approx(expected, rel=1e-9)
    assert 2e-4 < override[4]["lr"] < 2e-3
    for record in keep[4:]:  # the checkpoint's 4-step schedule has ended: the minimum LR
        assert record["lr"] == pytest.approx(2e-4, rel=1e-9)


def test_exit_duration_saves_and_the_next_job_resumes(tiny_data, tmp_path):
    """--exit-duration-in-mins (agreed across ranks): the run saves after the step that passes
    it and exits; the next job continues exactly."""
    common = ("--train-iters", "4", "--eval-interval", "1000", *DIST_OPT)
    straight = _split(_fit(tiny_data, 2, tmp_path / "straight", *common))
    run = tmp_path / "run"
    # 0.0001 min = 6 ms: over by the end of the first step (setup counts).
    first = _split(_fit(tiny_data, 2, run, *common, "--exit-duration-in-mins", "0.0001"))
    assert [r["iteration"] for r in first] == [1]
    assert (run / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    resumed = _split(_fit(tiny_data, 2, run, *common))
    assert [(r["iteration"], r["loss"]) for r in resumed] == [
        (r["iteration"], r["loss"]) for r in straight
    ]
