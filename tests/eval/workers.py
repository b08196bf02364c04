"""Rank functions for the evaluation tests (each runs in a fresh worker process)."""

from __future__ import annotations


def export_worker(checkpoint: str, output: str) -> None:
    from megatron_dlm.hf.convert import convert_checkpoint

    convert_checkpoint(checkpoint, output, verify=True)


def simple_evaluate_worker(pretrained: str, tasks: list[str], limit: int, extra: str = "") -> dict:
    import tempfile

    import lm_eval
    from lm_eval.tasks import TaskManager

    import megatron_dlm.eval.lm_eval_adapter  # noqa: F401  (registers megatron_dlm)
    from megatron_dlm.eval.tasks import write_task_configs

    include = write_task_configs(tempfile.mkdtemp(prefix="tasks-"), mc_items=40)
    results = lm_eval.simple_evaluate(
        model="megatron_dlm",
        model_args=f"pretrained={pretrained},mc_num=8,gen_length=32,block_length=16{extra}",
        tasks=tasks,
        limit=limit,
        batch_size=4,
        task_manager=TaskManager(include_path=str(include), include_defaults=False),
        confirm_run_unsafe_code=True,
    )
    return results["results"]
