"""pretrain() end to end on real standard-library data: learning, resume, robustness, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_dlm.testing import DistributedTestError, run_distributed
from tests.training.workers import (
    TINY_MODEL,
    pretrain_killed_during_save,
    pretrain_with_nan_losses,
    pretrain_worker,
    read_metrics,
)

REPO = Path(__file__).resolve().parents[2]


def _train(records):
    return [r for r in records if r["split"] == "train"]


def _argv(tiny_data, save: Path, *extra: str) -> list[str]:
    return [*tiny_data.flags(), *TINY_MODEL, "--save", str(save), *extra]


def _fit(tiny_data, save: Path, *extra: str) -> list[dict]:
    """pretrain on one rank into ``save``; its metrics records."""
    return run_distributed(pretrain_worker, 1, args=(_argv(tiny_data, save, *extra), str(save)))[0]


@pytest.mark.parametrize(
    "objective, moe",
    [("dlm", False), ("ar", False), ("dlm", True), ("ar", True)],
    ids=["dlm", "ar", "dlm-moe", "ar-moe"],
)
def test_loss_falls_on_real_data(tiny_data, tmp_path, objective, moe):
    extra = ["--num-experts", "4", "--moe-aux-loss-coeff", "1e-2"] if moe else []
    argv = _argv(
        tiny_data, tmp_path, "--objective", objective, "--train-iters", "30",
        "--micro-batch-size", "8", "--eval-interval", "30", *extra,
    )  # fmt: skip
    (records,) = run_distributed(pretrain_worker, 1, args=(argv, str(tmp_path)))
    losses = [r["loss"] for r in _train(records)]
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, f"{objective}: loss went from {first:.3f} to {last:.3f}"
    valid = [r for r in records if r["split"] == "valid"]
    assert valid and valid[-1]["loss"] < first
    if objective == "dlm":
        assert {"masked_ce", "masked_accuracy", "mean_t"} <= set(records[-2])
    if moe:  # megatron-core's router loss, over the MoE layers and per layer
        layers = [f"moe/load_balancing_loss_layer_{i}" for i in range(2)]
        for record in _train(records):
            assert all(0 < record[key] < 10 for key in ["load_balancing_loss", *layers])
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text().strip() == "30"


def test_resume_is_bit_exact(tiny_data, tmp_path):
    common = ("--train-iters", "8", "--hidden-dropout", "0.1", "--dlm-random-length-prob", "0.3")
    a = _fit(tiny_data, tmp_path / "straight", *common)
    split = tmp_path / "split"
    _fit(tiny_data, split, *common, "--exit-interval", "4")
    assert (split / "latest_checkpointed_iteration.txt").read_text().strip() == "4"
    b = _fit(tiny_data, split, *common)
    assert [r["loss"] for r in _train(a)] == [r["loss"] for r in _train(b)]
    assert [r["grad_norm"] for r in _train(a)] == [r["grad_norm"] for r in _train(b)]
    fresh = tmp_path / "fresh_optimizer"
    _fit(tiny_data, fresh, *common, "--exit-interval", "4")
    c = _fit(tiny_data, fresh, *common, "--no-load-optim", "--no-load-rng")
    losses_a, losses_c = [r["loss"] for r in _train(a)], [r["loss"] for r in _train(c)]
    assert losses_c[:4] == losses_a[:4] and losses_c[4] != losses_a[4]  # new Adam state


@pytest.mark.parametrize("precision", ["--bf16", "--fp16"])
def test_mixed_precision_trains_on_cpu(tiny_data, tmp_path, precision):
    records = _fit(tiny_data, tmp_path, precision, "--train-iters", "20", "--initial-loss-scale",
                   "65536", "--eval-interval", "20")  # fmt: skip
    losses = [r["loss"] for r in _train(records) if isinstance(r["loss"], float)]
    assert len(losses) == 20 and sum(losses[-3:]) < sum(losses[:3])


def test_activation_recompute_matches(tiny_data, tmp_path):
    base = ("--train-iters", "3")
    plain = _fit(tiny_data, tmp_path / "plain", *base)
    full = _fit(tiny_data, tmp_path / "full", *base, "--recompute-granularity", "full",
                "--recompute-method", "uniform", "--recompute-num-layers", "1")  # fmt: skip
    selective = _fit(tiny_data, tmp_path / "sel", *base, "--recompute-granularity", "selective")
    expected = [r["loss"] for r in _train(plain)]
    assert [r["loss"] for r in _train(full)] == pytest.approx(expected, rel=1e-6)
    assert [r["loss"] for r in _train(selective)] == pytest.approx(expected, rel=1e-6)


def test_wandb_offline_run(tiny_data, tmp_path):
    from tests.training.workers import pretrain_with_env

    argv = _argv(tiny_data, tmp_path, "--train-iters", "2", "--lr-warmup-iters", "0",
                 "--wandb-project", "megatron-dlm-test", "--wandb-exp-name", "offline",
                 "--wandb-save-dir", str(tmp_path / "wb"))  # fmt: skip
    run_distributed(pretrain_with_env, 1, args=(argv, str(tmp_path), {"WANDB_MODE": "offline"}))
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_sigterm_saves_and_the_resumed_run_matches(tiny_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    reference = tmp_path / "reference"
    argv = _argv(tiny_data, reference, "--train-iters", "40")
    (full,) = run_distributed(pretrain_worker, 1, args=(argv, str(reference)))
    run = tmp_path / "preempted"
    cmd = [
        sys.executable,
        str(REPO / "pretrain_dlm.py"),
        *_argv(tiny_data, run, "--train-iters", "40"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while len(read_metrics(run)) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output.decode()[-3000:]
    stopped = int((run / "latest_checkpointed_iteration.txt").read_text())
    assert 3 <= stopped < 40, "the signal should stop the run early"
    resumed = _fit(tiny_data, run, "--train-iters", "40")
    assert [r["loss"] for r in _train(resumed)] == [r["loss"] for r in _train(full)]


def test_killed_mid_save_leaves_the_previous_checkpoint_loadable(tiny_data, tmp_path):
    argv = _argv(tiny_data, tmp_path, "--train-iters", "6", "--save-interval", "2")
    with pytest.raises(DistributedTestError, match="died"):
        run_distributed(pretrain_killed_during_save, 1, args=(argv, str(tmp_path), 2))
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert (tmp_path / "iter_0000004.tmp" / "partial_shard").exists()
    (records,) = run_distributed(pretrain_worker, 1, args=(argv, str(tmp_path)))
    assert [r["iteration"] for r in _train(records)] == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / "iter_0000004.tmp").exists()
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text().strip() == "6"


def test_keep_last_k(tiny_data, tmp_path):
    argv = _argv(tiny_data, tmp_path, "--train-iters", "6", "--save-interval", "1",
                 "--keep-last-k", "2")  # fmt: skip
    run_distributed(pretrain_worker, 1, args=(argv, str(tmp_path)))
    assert sorted(p.name for p in tmp_path.glob("iter_*")) == ["iter_0000005", "iter_0000006"]


def test_nan_steps_are_skipped_and_counted(tiny_data, tmp_path):
    # 2 micro-batches per step: loss calls 4-5 are step 3.
    argv = _argv(tiny_data, tmp_path, "--train-iters", "6", "--micro-batch-size", "2",
                 "--global-batch-size", "4")  # fmt: skip
    (records,) = run_distributed(pretrain_with_nan_losses, 1, args=(argv, str(tmp_path), [4]))
    train = _train(records)
    assert [r["skipped_iters"] for r in train] == [0, 0, 1, 1, 1, 1]
    assert all(json.dumps(r["loss"]) != "NaN" for i, r in enumerate(train) if i != 2)


def test_a_nan_step_stops_the_run_as_in_megatron_lm(tiny_data, tmp_path):
    """--check-for-nan-in-loss-and-grad (the default, without --skip-nan-steps) stops at the
    first NaN loss; the checkpoint before it stays the newest."""
    argv = [a for a in _argv(tiny_data, tmp_path, "--train-iters", "6", "--save-interval", "2",
                             "--micro-batch-size", "4", "--global-batch-size", "4")
            if a != "--skip-nan-steps"]  # fmt: skip
    with pytest.raises(
        DistributedTestError,
        match=r"iteration 3: nan/inf (loss|grad norm) \(--check-for-nan-in-loss-and-grad stops",
    ):
        run_distributed(pretrain_with_nan_losses, 1, args=(argv, str(tmp_path), [2]))
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text().strip() == "2"


def test_too_many_consecutive_nan_steps_stop_the_run(tiny_data, tmp_path):
    argv = _argv(
        tiny_data, tmp_path, "--train-iters", "10", "--max-skipped-iters", "3",
        "--save-interval", "2", "--micro-batch-size", "4", "--global-batch-size", "4",
    )  # fmt: skip
    with pytest.raises(
        DistributedTestError, match=r"3 consecutive steps had NaN/Inf .* iteration 5"
    ):
        run_distributed(pretrain_with_nan_losses, 1, args=(argv, str(tmp_path), [2, 3, 4, 5, 6]))
    # Skipped steps never change the weights: the checkpoint at 4 holds those of step 2.
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text().strip() == "4"


def test_incompatible_checkpoint_and_tokenizer_are_clear_errors(tiny_data, tmp_path):
    first = _argv(tiny_data, tmp_path, "--train-iters", "1", "--lr-warmup-iters", "0")
    run_distributed(pretrain_worker, 1, args=(first, str(tmp_path)))
    wider = _argv(tiny_data, tmp_path, "--train-iters", "3", "--hidden-size", "96")
    with pytest.raises(DistributedTestError, match=r"--hidden-size: checkpoint 64, now 96"):
        run_distributed(pretrain_worker, 1, args=(wider, str(tmp_path)))
    as_ar = _argv(tiny_data, tmp_path, "--train-iters", "3", "--objective", "ar")
    with pytest.raises(DistributedTestError, match=r"--objective: checkpoint 'dlm', now 'ar'.*"
                       "--finetune"):  # fmt: skip
        run_distributed(pretrain_worker, 1, args=(as_ar, str(tmp_path)))
    # --finetune starts a new run from the weights, so changing the objective is allowed.
    adapted = [*_argv(tiny_data, tmp_path / "adapted", "--train-iters", "1", "--objective", "ar",
                      "--lr-warmup-iters", "0"),
               "--load", str(tmp_path), "--finetune"]  # fmt: skip
    (records,) = run_distributed(pretrain_worker, 1, args=(adapted, str(tmp_path / "adapted")))
    assert [r["iteration"] for r in _train(records)] == [1]
    other = _other_tokenizer(tmp_path)
    # Data written by another tokenizer is refused before anything is built (or loaded).
    fresh = [*_argv(tiny_data, tmp_path / "fresh", "--train-iters", "3"),
             "--tokenizer-model", str(other)]  # fmt: skip
    with pytest.raises(DistributedTestError, match=r"DatasetError: --train-data-path .*vocab"):
        run_distributed(pretrain_worker, 1, args=(fresh, str(tmp_path / "fresh")))
    # Data that fits the other tokenizer, but a checkpoint trained with the first one.
    train, valid = _datasets_of(other, tmp_path / "other_data")
    swapped = [*_argv(tiny_data, tmp_path, "--train-iters", "3"), "--tokenizer-model", str(other),
               "--train-data-path", train, "--valid-data-path", valid]  # fmt: skip
    with pytest.raises(DistributedTestError, match="CheckpointError: .*the checkpoint was trained "
                       "with another tokenizer: vocab_sha256"):  # fmt: skip
        run_distributed(pretrain_worker, 1, args=(swapped, str(tmp_path)))


def _datasets_of(tokenizer: Path, root: Path) -> tuple[str, str]:
    """A train and a valid dataset (small standard-library packages) written by ``tokenizer``."""
    from megatron_dlm.data.corpus import find_source_files, stdlib_dir
    from megatron_dlm.data.preprocess import PreprocessOptions, preprocess_files

    prefixes = []
    for name, package in (("train", "json"), ("valid", "tomllib")):
        options = PreprocessOptions(str(root / name), str(tokenizer), progress_bar=False)
        preprocess_files(find_source_files(stdlib_dir() / package), options)
        prefixes.append(str(root / f"{name}_text_document"))
    return prefixes[0], prefixes[1]


def _other_tokenizer(tmp_path: Path) -> Path:
    """A tokenizer of the same size trained on other text: same shape, other vocabulary."""
    from megatron_dlm.data.corpus import find_source_files, stdlib_dir
    from megatron_dlm.data.tokenizer_training import SentencePieceOptions, train_sentencepiece

    texts = [
        f.path.read_text(encoding="utf-8") for f in find_source_files(stdlib_dir() / "asyncio")
    ]
    options = SentencePieceOptions(vocab_size=1024, num_threads=1)
    return Path(train_sentencepiece(texts, tmp_path / "other", options))


def test_missing_load_directory_is_a_clear_error(tiny_data, tmp_path):
    argv = _argv(
        tiny_data, tmp_path / "new", "--train-iters", "3", "--load", str(tmp_path / "nope")
    )
    with pytest.raises(DistributedTestError, match="--load .*nope: no checkpoint there"):
        run_distributed(pretrain_worker, 1, args=(argv, str(tmp_path)))


def test_tensorboard_scalars_have_megatron_names(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = tmp_path / "tb"
    records = _fit(tiny_data, tmp_path, "--train-iters", "2", "--lr-warmup-iters", "0",
                   "--tensorboard-dir", str(board))  # fmt: skip
    events = EventAccumulator(str(board))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "lm loss", "learning-rate", "grad-norm", "batch-size", "masked ce", "mean t",
        "lm loss validation", "masked ce validation", "iteration-time", "throughput",
    }  # fmt: skip
    assert expected <= tags
    assert {f"{tag} vs samples" for tag in ("lm loss", "learning-rate", "grad-norm")} <= tags
    train = _train(records)
    assert [e.step for e in events.Scalars("lm loss")] == [1, 2]
    assert [e.value for e in events.Scalars("lm loss")] == pytest.approx([r["loss"] for r in train])
    assert [e.step for e in events.Scalars("lm loss vs samples")] == [
        r["consumed_samples"] for r in train
    ]
    assert events.Scalars("learning-rate")[0].value == pytest.approx(train[0]["lr"])


def test_tensorboard_missing_is_a_clear_error(tiny_data, tmp_path):
    from tests.training.workers import pretrain_without_tensorboard

    argv = _argv(tiny_data, tmp_path, "--train-iters", "2", "--tensorboard-dir", str(tmp_path))
    with pytest.raises(DistributedTestError, match=r"ConfigError: --tensorboard-dir .*: needs "
                       r"the tensorboard package \(pip install tensorboard\)"):  # fmt: skip
        run_distributed(pretrain_without_tensorboard, 1, args=(argv, str(tmp_path)))


def test_wandb_resumes_the_checkpoints_run(tiny_data, tmp_path):
    from megatron_dlm.checkpoint import read_checkpoint_info
    from tests.training.workers import pretrain_with_env

    offline = {"WANDB_MODE": "offline"}
    common = ["--lr-decay-iters", "3", "--wandb-project", "megatron-dlm-test",
              "--wandb-save-dir", str(tmp_path / "wb"), "--eval-interval", "1000"]  # fmt: skip
    for iters in ("2", "3"):
        argv = _argv(tiny_data, tmp_path, "--train-iters", iters, *common)
        run_distributed(pretrain_with_env, 1, args=(argv, str(tmp_path), offline))
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    run_id = read_checkpoint_info(tmp_path).train_state.wandb_run_id
    assert len(runs) == 2 and run_id
    assert all(run.name.endswith(f"-{run_id}") for run in runs)
