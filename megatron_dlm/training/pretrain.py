"""``pretrain(cfg)``: everything between a parsed config and a trained checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from megatron_dlm.checkpoint import (
    CheckpointError,
    TokenizerRecord,
    TrainState,
    has_checkpoint,
    load_checkpoint,
)
from megatron_dlm.config import DLMConfig
from megatron_dlm.models.vocab import Vocab
from megatron_dlm.runtime.distributed import destroy_distributed, init_distributed
from megatron_dlm.training.batching import resolve_batch_layout
from megatron_dlm.training.flops import flops_per_sequence, parameter_counts, peak_tflops
from megatron_dlm.training.model_setup import count_parameters, setup_model
from megatron_dlm.training.optimizer import build_optimizer, build_scheduler
from megatron_dlm.training.step import rank_reads_data
from megatron_dlm.training.trainer import Trainer

logger = logging.getLogger(__name__)


def run_directory(cfg: DLMConfig) -> Path:
    log = cfg.logging
    if log.log_dir:
        return Path(log.log_dir)
    if cfg.checkpoint.save:
        return Path(cfg.checkpoint.save)
    return Path("runs") / (log.wandb_exp_name or "run")


def length_multiple(cfg: DLMConfig) -> int:
    """What a (randomly truncated) sequence length must divide by for this layout."""
    parallel = cfg.parallel
    multiple = parallel.tensor_model_parallel_size if parallel.sequence_parallel else 1
    if parallel.context_parallel_size > 1:
        multiple *= 2 * parallel.context_parallel_size
    return multiple


def pretrain(cfg: DLMConfig) -> TrainState:
    """Train the model ``cfg`` describes; collective (call on every rank). Returns the state."""
    from megatron_dlm.data.datasets import build_data_loader, build_datasets
    from megatron_dlm.data.tokenizer import build_tokenizer
    from megatron_dlm.objectives import build_objective

    ctx = init_distributed(cfg.parallel, seed=cfg.training.seed)
    trainer = None
    try:
        tokenizer = build_tokenizer(cfg.data)
        vocab = Vocab.from_tokenizer(tokenizer)
        layout = resolve_batch_layout(cfg, ctx.data_parallel_size)
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
        scheduler = build_scheduler(cfg, optimizer, layout.train_iters)
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
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
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
        )
        return trainer.train()
    finally:
        if trainer is not None:
            trainer.close()
        if torch.distributed.is_initialized():
            destroy_distributed()
