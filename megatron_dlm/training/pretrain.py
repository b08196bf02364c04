"""``pretrain(cfg)``: everything between a parsed config and a trained checkpoint."""

from __future__ import annotations

import json
import logging
import time

import torch

from megatron_dlm.checkpoint import (
    CheckpointError,
    TokenizerRecord,
    TrainState,
    has_checkpoint,
    load_checkpoint,
    saved_vocab_rows,
)
from megatron_dlm.config import ConfigError, DLMConfig
from megatron_dlm.models.vocab import Vocab
from megatron_dlm.runtime.distributed import destroy_distributed, init_distributed
from megatron_dlm.training.batching import resolve_batch_layout
from megatron_dlm.training.flops import flops_per_sequence, parameter_counts, peak_tflops
from megatron_dlm.training.metrics import require_tensorboard
from megatron_dlm.training.model_setup import count_parameters, setup_model
from megatron_dlm.training.optimizer import build_optimizer, build_scheduler
from megatron_dlm.training.preflight import preflight, run_directory
from megatron_dlm.training.step import rank_reads_data
from megatron_dlm.training.trainer import TaskEvaluator, Trainer

logger = logging.getLogger(__name__)


def length_multiple(cfg: DLMConfig) -> int:
    """What a (randomly truncated) sequence length must divide by for this layout."""
    parallel = cfg.parallel
    multiple = parallel.tensor_model_parallel_size if parallel.sequence_parallel else 1
    if parallel.context_parallel_size > 1:
        multiple *= 2 * parallel.context_parallel_size
    return multiple


def match_saved_vocab_rows(cfg: DLMConfig, vocab: Vocab, load: str) -> None:
    """Build the embedding with as many rows as the checkpoint at ``load`` holds.

    Megatron pads the vocabulary to a multiple of ``make_vocab_size_divisible_by`` x TP, so a
    checkpoint saved at another TP (or imported from Hugging Face at TP=1) may hold another row
    count than this run would pad to; the padding rows are never produced by the tokenizer.
    Adopted when the rows cover the vocabulary and split over this TP (else the load reports
    the mismatch).
    """
    try:
        rows = saved_vocab_rows(load)
    except CheckpointError:
        return  # damaged or unreadable: the load verifies it and names what is wrong
    tp = cfg.parallel.tensor_model_parallel_size
    if rows is None or rows == vocab.padded_size(cfg.model.make_vocab_size_divisible_by, tp):
        return
    if rows >= vocab.size and rows % tp == 0:
        logger.info("the checkpoint's embedding has %d rows (a %d-token vocabulary, padded): "
                    "building the model with as many", rows, vocab.size)  # fmt: skip
        cfg.model.make_vocab_size_divisible_by = rows // tp


def pretrain(cfg: DLMConfig, task_evaluator: TaskEvaluator | None = None) -> TrainState:
    """Train the model ``cfg`` describes; collective (call on every rank). Returns the state.

    ``task_evaluator`` runs ``--eval-tasks`` on the live model (training does not import
    lm-eval: ``pretrain_dlm.py`` builds one with
    :class:`megatron_dlm.eval.training_tasks.TrainingTaskEvaluator`).
    """
    from megatron_dlm.data.datasets import build_data_loader, build_datasets
    from megatron_dlm.objectives import build_objective

    if cfg.training.eval_tasks and task_evaluator is None:
        raise ConfigError(
            f"--eval-tasks {cfg.training.eval_tasks}: pass a task evaluator to pretrain() "
            "(megatron_dlm.eval.training_tasks.TrainingTaskEvaluator), as pretrain_dlm.py does"
        )
    start_time = time.time()  # --exit-duration-in-mins counts from here (setup included)
    require_tensorboard(cfg.logging.tensorboard_dir)  # on every rank, before any collective
    checked = preflight(cfg)  # files, tokenizer, data, batch sizes: before any process group
    ctx = init_distributed(cfg.parallel, seed=cfg.training.seed)
    trainer = None
    failed = False
    try:
        tokenizer = checked.tokenizer
        vocab = Vocab.from_tokenizer(tokenizer)
        layout = resolve_batch_layout(cfg, ctx.data_parallel_size)
        if cfg.checkpoint.load and has_checkpoint(cfg.checkpoint.load):
            match_saved_vocab_rows(cfg, vocab, cfg.checkpoint.load)
        model = setup_model(cfg, vocab)
        padded = vocab.padded_size(
            cfg.model.make_vocab_size_divisible_by, cfg.parallel.tensor_model_parallel_size
        )
        counts = parameter_counts(cfg, padded)
        logger.info(
            "model: %.1fM parameters (%.1fM active per token), %s on this rank",
            counts.total / 1e6,
            counts.active / 1e6,
            f"{count_parameters(model):,}",
        )
        optimizer = build_optimizer(cfg, model)
        scheduler = build_scheduler(cfg, optimizer, layout.train_iters, layout.global_batch_size)
        model[0].config.grad_scale_func = optimizer.scale_loss

        state = TrainState()
        tok_record = TokenizerRecord.from_tokenizer(tokenizer)
        load = cfg.checkpoint.load
        if load and has_checkpoint(load):
            state = load_checkpoint(
                load,
                model,
                optimizer,
                scheduler,
                config=cfg,
                tokenizer=tok_record,
                load_optim=not cfg.checkpoint.no_load_optim,
                load_rng=not cfg.checkpoint.no_load_rng,
                finetune=cfg.checkpoint.finetune,
            )
            logger.info("resumed from %s at iteration %d", load, state.iteration)
        elif load and cfg.checkpoint.load != cfg.checkpoint.save:
            raise CheckpointError(f"--load {load}: no checkpoint there")

        splits = build_datasets(
            cfg.data,
            seq_length=cfg.model.seq_length,
            seed=cfg.training.seed,
            tokenizer=tokenizer,
            train_samples=layout.train_iters * layout.global_batch_size,
            valid_samples=cfg.training.eval_iters * layout.global_batch_size,
            test_samples=0,
        )
        reads = rank_reads_data()

        def source(dataset):
            if dataset is None:
                return None

            def make(consumed: int):
                if not reads:
                    return None
                loader = build_data_loader(
                    dataset,
                    consumed_samples=consumed,
                    micro_batch_size=layout.micro_batch_size,
                    data_parallel_rank=ctx.data_parallel_rank,
                    data_parallel_size=ctx.data_parallel_size,
                    num_workers=cfg.data.num_workers,
                )
                return iter(loader)

            return make

        run_dir = run_directory(cfg)
        if ctx.is_main:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            except OSError as exc:
                flag = "--log-dir" if cfg.logging.log_dir else "--save"
                flag = flag if cfg.logging.log_dir or cfg.checkpoint.save else "the run directory"
                raise OSError(
                    exc.errno, f"{flag} {run_dir}: cannot write {exc.filename}: {exc.strerror}"
                ) from exc
        objective = build_objective(
            cfg.objective,
            mask_id=tokenizer.mask_id,
            seed=cfg.training.seed,
            length_multiple=length_multiple(cfg),
        )
        trainer = Trainer(
            cfg,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            objective=objective,
            layout=layout,
            train_data=source(splits.train),
            valid_data=source(splits.valid),
            state=state,
            flops_per_sequence=flops_per_sequence(cfg, padded),
            peak_tflops=peak_tflops(cfg, cfg.logging.peak_tflops),
            samples_per_epoch=getattr(splits.info, "samples_per_epoch", None),
            tokenizer=tok_record,
            run_dir=str(run_dir),
            start_time=start_time,
            task_evaluator=task_evaluator if cfg.training.eval_tasks else None,
            text_tokenizer=tokenizer,
            vocab=vocab,
        )
        return trainer.train()
    except BaseException:
        failed = True
        raise
    finally:
        if trainer is not None:
            trainer.close()
        if torch.distributed.is_initialized():
            # After a failure other ranks may wait in a collective that this rank will never
            # join: a barrier would pair with it (or hang), so leave without one.
            destroy_distributed(barrier=not failed)
