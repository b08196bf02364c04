"""lm-eval's command line with the ``megatron_dlm`` model and our offline tasks registered.

    # an exported HF folder (or a Megatron checkpoint directory) on the offline tasks
    python tools/evaluate.py --model megatron_dlm \\
        --model_args pretrained=runs/quickstart/hf,mc_num=32,gen_length=128 \\
        --tasks python_nextline_mc,humaneval_offline --limit 20 --output_path runs/eval

    # a Megatron checkpoint, converted to Hugging Face first (tools/convert_to_hf.py)
    python tools/evaluate.py --load runs/quickstart/checkpoints --convert-to runs/quickstart/hf \\
        --tasks python_nextline_mc

    # hub-hosted tasks (need network access to the Hugging Face hub)
    python tools/evaluate.py --model megatron_dlm --model_args pretrained=DIR \\
        --tasks hellaswag,mmlu,arc_easy --batch_size 8

Every lm-eval flag works; this wrapper adds --load/--convert-to and puts the offline tasks
(humaneval_offline, humaneval_offline_pass10, python_nextline_mc) on --include_path. HumanEval
executes model-written code in a sandboxed subprocess (megatron_dlm/eval/sandbox.py); lm-eval
asks for --confirm_run_unsafe_code for code tasks, which this wrapper passes for HumanEval.

Bad input (a missing model or checkpoint, an unknown task, a --model_args value of the wrong
type, an existing --convert-to folder) is one line on stderr and exit status 2, checked before
the model loads where it can be; 1 when the --convert-to export fails verification.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import typing
from pathlib import Path

OFFLINE_TASKS_DIR_ENV = "MEGATRON_DLM_TASKS_DIR"
PROG = "evaluate.py"


class EvaluateInputError(ValueError):
    """A flag or path evaluate.py cannot use; the message names it."""


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


def check_model_args(rest: list[str]) -> None:
    """Check ``--model_args`` of the ``megatron_dlm`` model before lm-eval loads anything.

    Numbers must parse as the adapter's keyword arguments declare (``mc_num=abc`` fails after
    the model has loaded otherwise) and ``pretrained`` must exist.

    Raises:
        EvaluateInputError: naming the argument.
    """
    pairs, model = _model_args(rest)
    if model != "megatron_dlm":
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
    )


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except EvaluateInputError as exc:  # found before anything heavy is imported
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from megatron_dlm.hf.convert import VerificationError

        if isinstance(exc, VerificationError):
            print(f"{PROG}: error: the export failed verification, not evaluated:\n{exc}",
                  file=sys.stderr)  # fmt: skip
            return 1
        if not isinstance(exc, user_errors()):
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def run(argv: list[str] | None = None) -> int:
    """Register the adapter and the offline tasks, then run lm-eval's command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--load", help="Megatron-DLM checkpoint to evaluate")
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

    import megatron_dlm.eval.lm_eval_adapter  # noqa: F401  (registers the model)
    from megatron_dlm.eval.tasks import write_task_configs

    if known.load:
        pretrained = known.load
        model_args = f"pretrained={pretrained}"
        if "--model_args" in rest:
            i = rest.index("--model_args")
            rest[i + 1] = f"{model_args},{rest[i + 1]}"
        else:
            rest += ["--model_args", model_args]
        if "--model" not in rest:
            rest += ["--model", "megatron_dlm"]
        check_model_args(rest)  # before the conversion, which takes a while
        if known.convert_to:
            from megatron_dlm.hf.convert import check_output_dir, convert_checkpoint

            check_output_dir(Path(known.convert_to))
            convert_checkpoint(known.load, known.convert_to, verify=True)
            i = rest.index("--model_args")
            rest[i + 1] = rest[i + 1].replace(
                f"pretrained={pretrained}", f"pretrained={known.convert_to}", 1
            )
    else:
        check_model_args(rest)
    tasks_dir = Path(
        os.environ.get(OFFLINE_TASKS_DIR_ENV)
        or Path(tempfile.gettempdir()) / f"megatron_dlm_tasks_{os.getuid()}"
    )
    write_task_configs(tasks_dir)
    if "--include_path" in rest:
        i = rest.index("--include_path")
        rest[i + 1] = f"{rest[i + 1]}:{tasks_dir}"
    else:
        rest += ["--include_path", str(tasks_dir)]
    if "humaneval_offline" in " ".join(rest) and "--confirm_run_unsafe_code" not in rest:
        rest.append("--confirm_run_unsafe_code")

    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *rest]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
