"""``megatron-dlm-eval``: lm-eval's command line with the ``megatron_dlm`` model registered.

    megatron-dlm-eval --model megatron_dlm --model_args pretrained=runs/quickstart/hf,mc_num=32 \\
        --tasks python_nextline_mc,humaneval_offline --limit 20 --output_path runs/eval
    megatron-dlm-eval --load runs/quickstart/checkpoints --tasks python_nextline_mc
    torchrun --nproc-per-node 2 -m megatron_dlm.eval.cli --load CKPT --tasks ...  # 2 replicas
    accelerate launch --num_processes 2 -m megatron_dlm.eval.cli --load CKPT --tasks ...

Every lm-eval flag and subcommand (``run``, ``ls``, ``validate``) works as in ``lm-eval``; our
offline tasks (humaneval_offline, humaneval_offline_pass10, python_nextline_mc) are on the task
path. Added: ``--load CKPT`` (= ``--model megatron_dlm --model_args pretrained=CKPT``) and, with
it, ``--convert-to DIR`` (export to Hugging Face first, logits verified, then evaluate the
export). HumanEval executes model-written code in a sandboxed subprocess
(megatron_dlm/eval/sandbox.py); lm-eval's ``--confirm_run_unsafe_code`` is implied for the
``humaneval_offline`` tasks only. Under a launcher each process (or each TP group) evaluates its
share of the requests and rank 0 writes the results. From Python: :func:`evaluate`
(``lm_eval.simple_evaluate`` with the offline tasks).

Bad input (a missing model or checkpoint, an unknown task, a ``--model_args`` value of the wrong
type, an existing ``--convert-to`` folder) is one line on stderr and exit status 2, checked
before the model loads where it can be; 1 when the ``--convert-to`` export fails verification.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

OFFLINE_TASKS_DIR_ENV = "MEGATRON_DLM_TASKS_DIR"
"""Where the offline tasks' YAML is written (default: a per-user folder in the temp dir)."""


class EvaluateInputError(ValueError):
    """A flag or path the evaluation cannot use; the message names it."""


def offline_tasks_dir() -> Path:
    """The offline tasks written to :data:`OFFLINE_TASKS_DIR_ENV` (or the default) folder."""
    from megatron_dlm.eval.tasks import write_task_configs

    directory = os.environ.get(OFFLINE_TASKS_DIR_ENV) or (
        Path(tempfile.gettempdir()) / f"megatron_dlm_tasks_{os.getuid()}"
    )
    return write_task_configs(directory)


def _needs_sandbox_confirmation(tasks: Sequence[str] | str | None) -> bool:
    names = [tasks] if isinstance(tasks, str) else list(tasks or [])
    return any(n.strip().startswith("humaneval_offline") for t in names for n in t.split(","))


def evaluate(
    model: Any,
    tasks: Sequence[str],
    *,
    model_args: dict[str, Any] | None = None,
    include_path: str | Path | None = None,
    task_manager: Any = None,
    **kwargs: Any,
) -> dict | None:
    """``lm_eval.simple_evaluate`` on ``megatron_dlm`` with the offline tasks on the task path.

    Args:
        model: a model path (checkpoint or export), or a loaded
            :class:`~megatron_dlm.inference.InferenceModel`.
        tasks: lm-eval task names.
        model_args: further ``megatron_dlm`` model arguments (``mc_num``, ``cache``, ...).
        include_path: another task folder.
        task_manager: an ``lm_eval.tasks.TaskManager`` to reuse (indexing lm-eval's tasks
            takes a while); default: a new one with the offline tasks and ``include_path``.
        kwargs: passed to ``simple_evaluate`` (``limit``, ``batch_size``, ``num_fewshot``,
            ``apply_chat_template``, ``log_samples``, ...).

    Returns:
        lm-eval's results dict on the process that reports (rank 0), None elsewhere.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    from megatron_dlm.eval.lm_eval_adapter import MegatronDLMEvalModel

    args = dict(model_args or {})
    if isinstance(model, (str, Path)):
        args["pretrained"] = str(model)
    else:
        args["inference_model"] = model
    if "batch_size" in kwargs:
        args.setdefault("batch_size", kwargs["batch_size"])
    lm = MegatronDLMEvalModel(**args)
    if task_manager is None:
        paths = [str(offline_tasks_dir())] + ([str(include_path)] if include_path else [])
        task_manager = TaskManager(include_path=paths)
    kwargs.setdefault("confirm_run_unsafe_code", _needs_sandbox_confirmation(tasks))
    return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=task_manager, **kwargs)


def _model_args(rest: list[str]) -> tuple[dict[str, str], str | None]:
    """The ``key=value`` pairs of ``--model_args`` (comma- or space-separated), and --model."""
    pairs: dict[str, str] = {}
    model = None
    for i, token in enumerate(rest):
        if token == "--model" and i + 1 < len(rest):
            model = rest[i + 1]
        if token != "--model_args":
            continue
        for value in rest[i + 1 :]:
            if value.startswith("--"):
                break
            for item in filter(None, value.split(",")):
                key, sep, val = item.partition("=")
                if not sep:
                    raise EvaluateInputError(f"--model_args: {item!r} is not key=value")
                pairs[key.strip()] = val.strip()
    return pairs, model


def _numeric_kind(hint) -> type | None:
    """int or float if a parameter takes only that number type (or None), else None."""
    args = set(typing.get_args(hint)) - {type(None)} or {hint}
    return next(iter(args)) if args in ({int}, {float}) else None


def check_model_args(rest: list[str], load: str | None = None) -> None:
    """Check ``--model_args`` of the ``megatron_dlm`` model before lm-eval loads anything.

    Numbers must parse as the adapter's keyword arguments declare (``mc_num=abc`` fails after
    the model has loaded otherwise) and ``pretrained`` (or ``--load``) must exist.

    Raises:
        EvaluateInputError: naming the argument.
    """
    pairs, model = _model_args(rest)
    if model != "megatron_dlm" and not (load and model is None):
        return
    from megatron_dlm.eval.lm_eval_adapter import MegatronDLMEvalModel

    hints = typing.get_type_hints(MegatronDLMEvalModel.__init__)
    for key, value in pairs.items():
        kind = _numeric_kind(hints.get(key))
        if kind is None or value in ("None", ""):
            continue
        try:
            kind(value)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise EvaluateInputError(f"--model_args {key}={value}: expected {what}") from None
    if load:
        return
    pretrained = pairs.get("pretrained")
    if pretrained is None:
        raise EvaluateInputError("--model_args needs pretrained=DIR (an export or a checkpoint)")
    if not Path(pretrained).exists():
        raise EvaluateInputError(f"--model_args pretrained={pretrained}: no such directory")


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (one line, exit 2) rather than a bug."""
    from megatron_dlm.checkpoint import CheckpointError
    from megatron_dlm.config import ConfigError
    from megatron_dlm.data.tokenizer import TokenizerError
    from megatron_dlm.hf.convert import ExportError
    from megatron_dlm.hf.tokenizer_export import TokenizerExportError

    return (
        EvaluateInputError,
        ConfigError,
        TokenizerError,
        ExportError,
        TokenizerExportError,
        CheckpointError,
        FileNotFoundError,
        NotADirectoryError,
        ValueError,  # lm-eval: "Tasks not found"; the adapter: a model_args value
        RuntimeError,  # a mismatched model
    )


def main(argv: list[str] | None = None) -> int:
    """Parse with lm-eval's own parser, add our task folder and model, run lm-eval."""
    prog = Path(sys.argv[0]).name if argv is None else "megatron-dlm-eval"
    try:
        return _run(list(sys.argv[1:] if argv is None else argv), prog)
    except EvaluateInputError as exc:  # found before anything heavy is imported
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from megatron_dlm.hf.convert import VerificationError

        if isinstance(exc, VerificationError):
            print(f"{prog}: error: the export failed verification, not evaluated:\n{exc}",
                  file=sys.stderr)  # fmt: skip
            return 1
        if not isinstance(exc, user_errors()):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def _run(argv: list[str], prog: str) -> int:
    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--load", help="a Megatron-DLM checkpoint to evaluate (model megatron_dlm)")
    ours.add_argument("--convert-to", help="with --load: export to this HF folder first")
    known, rest = ours.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
    from megatron_dlm.runtime.logging_utils import quiet_expected_warnings

    quiet_expected_warnings()  # megatron-core's notes on missing GPU packages
    if known.convert_to and not known.load:
        raise EvaluateInputError("--convert-to needs --load CHECKPOINT")
    if known.load and not Path(known.load).exists():
        raise EvaluateInputError(f"--load {known.load}: no such directory")
    check_model_args(rest, known.load)

    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    import megatron_dlm.eval.lm_eval_adapter  # noqa: F401  (registers megatron_dlm)

    setup_logging()
    cli = HarnessCLI()
    saved, sys.argv = sys.argv, [prog, *rest]
    try:
        args = cli.parse_args()
    finally:
        sys.argv = saved
    if getattr(args, "command", None) in ("run", "ls", "validate"):
        _add_ours(args, known)
    cli.execute(args)
    return 0


def _add_ours(args: argparse.Namespace, known: argparse.Namespace) -> None:
    """Our task folder on lm-eval's task path; ``--load``'s model; the sandbox confirmation."""
    extra = str(offline_tasks_dir())
    current = getattr(args, "include_path", None)
    args.include_path = [current, extra] if current else extra
    if known.load:
        pretrained = known.load
        if known.convert_to:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise EvaluateInputError(
                    "--convert-to runs in one process: convert first, then launch"
                )
            from megatron_dlm.hf.convert import check_output_dir, convert_checkpoint

            check_output_dir(Path(known.convert_to))
            convert_checkpoint(known.load, known.convert_to, verify=True)
            pretrained = known.convert_to
        if getattr(args, "model", None) not in (None, "megatron_dlm"):
            raise ValueError(f"--load evaluates with --model megatron_dlm, not {args.model}")
        args.model = "megatron_dlm"
        args.model_args = {**(getattr(args, "model_args", None) or {}), "pretrained": pretrained}
    if _needs_sandbox_confirmation(getattr(args, "tasks", None)):
        args.confirm_run_unsafe_code = True


if __name__ == "__main__":
    sys.exit(main())
