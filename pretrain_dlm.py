"""Pretrain a masked diffusion LM (or the matched AR baseline) with megatron-core.

Usage (every flag: ``python pretrain_dlm.py --help``; a recipe: ``--config recipe.yaml``):

    # one process (CPU or one GPU)
    python pretrain_dlm.py --data-path data/stdlib_text_document \\
        --tokenizer-model data/tokenizer.model --train-iters 200 --save runs/dlm

    # one node, 8 GPUs, TP=2
    torchrun --nproc-per-node 8 pretrain_dlm.py --config recipe.yaml \\
        --tensor-model-parallel-size 2 --bf16 --transformer-impl transformer_engine

    # multi-node: the same command on every node
    torchrun --nnodes $NNODES --node-rank $NODE_RANK --nproc-per-node 8 \\
        --rdzv-backend c10d --rdzv-endpoint $MASTER_ADDR:29500 pretrain_dlm.py --config ...

    # the matched autoregressive baseline: change one flag
    python pretrain_dlm.py ... --objective ar

    # downstream lm-eval tasks on the live model every 500 steps (docs/inference.md)
    python pretrain_dlm.py ... --eval-tasks python_nextline_mc,humaneval_offline \\
        --eval-tasks-interval 500 --eval-tasks-limit 100

    # size a job without a GPU: layout, parameters, memory, FLOPs, projected time
    python pretrain_dlm.py --config recipe.yaml --dry-run --dry-run-world-size 64
"""

from __future__ import annotations

import sys

from megatron_dlm.config.cli import log_inert_options, parse_config
from megatron_dlm.runtime.logging_utils import setup_logging

PROG = "pretrain_dlm.py"


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv, prog=PROG, description=__doc__)
    setup_logging()
    log_inert_options(cfg)
    try:
        if cfg.training.dry_run:
            from megatron_dlm.training.dry_run import dry_run, format_report

            print(format_report(cfg, dry_run(cfg)))
            return 0
        task_evaluator = None
        if cfg.training.eval_tasks:
            # lm-eval lives above training: its evaluator is built here (unknown task names
            # fail now, before any process group) and injected.
            from megatron_dlm.eval.training_tasks import TrainingTaskEvaluator
            from megatron_dlm.training.preflight import check_eval_tasks_layout

            check_eval_tasks_layout(cfg)
            task_evaluator = TrainingTaskEvaluator(cfg)
        from megatron_dlm.training.pretrain import pretrain

        pretrain(cfg, task_evaluator=task_evaluator)
    except Exception as exc:
        from megatron_dlm.runtime.error_report import exit_code_reported, report_error
        from megatron_dlm.training.errors import describe, exit_code

        code = exit_code(exc)
        if code is None:
            # Another rank stopped on an error (and said so): this rank's failure is its
            # consequence (a collective whose peer is gone), not news.
            code = exit_code_reported()
            if code is None:
                raise
            return code
        report_error(f"{PROG}: error: {describe(exc)}", code)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
