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


GREEDY_TASK_YAML = """task: python_lastword_greedy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{target}}}}"
target_delimiter: ""
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


GENERATE_TASK_YAML = """task: python_lastword_generate
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_greedy_task(directory: str, items: int = 12) -> str:
    """Two local tasks on the last word of a line of code given the rest of the line: a
    LAMBADA-style one (``acc`` is lm-eval's greedy match) and a generate_until one."""
    import json
    from pathlib import Path

    from megatron_dlm.data.corpus import collect_corpus

    rows = []
    for source in collect_corpus(stdlib=True, split="valid"):
        for line in source.path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.rstrip().rsplit(" ", 1)
            if len(words) == 2 and words[1].isidentifier() and 12 <= len(line) <= 60:
                rows.append({"context": words[0], "target": " " + words[1]})
            if len(rows) == items:
                break
        if len(rows) == items:
            break
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    data = root / "python_lastword_greedy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "python_lastword_greedy.yaml").write_text(GREEDY_TASK_YAML.format(data=data))
    (root / "python_lastword_generate.yaml").write_text(GENERATE_TASK_YAML.format(data=data))
    return str(root)


def evaluate_worker(pretrained: str, tasks: list[str], limit: int, include: str, **kwargs):
    """megatron_dlm.eval.cli.evaluate on this rank; (rank, results or None, requests here)."""
    import torch

    from megatron_dlm.eval.cli import evaluate

    out = evaluate(
        pretrained, tasks, include_path=include, limit=limit, batch_size=4,
        model_args=dict(mc_num=8, gen_length=32, block_length=16, seed=7), **kwargs,
    )  # fmt: skip
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return rank, out
