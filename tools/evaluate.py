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
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

OFFLINE_TASKS_DIR_ENV = "MEGATRON_DLM_TASKS_DIR"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--load", help="Megatron-DLM checkpoint to evaluate")
    ours.add_argument("--convert-to", help="with --load: export to this HF folder first")
    known, rest = ours.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)

    import megatron_dlm.eval.lm_eval_adapter  # noqa: F401  (registers the model)
    from megatron_dlm.eval.tasks import write_task_configs

    if known.load:
        pretrained = known.load
        if known.convert_to:
            from megatron_dlm.hf.convert import convert_checkpoint

            convert_checkpoint(known.load, known.convert_to, verify=True)
            pretrained = known.convert_to
        model_args = f"pretrained={pretrained}"
        if "--model_args" in rest:
            i = rest.index("--model_args")
            rest[i + 1] = f"{model_args},{rest[i + 1]}"
        else:
            rest += ["--model_args", model_args]
        if "--model" not in rest:
            rest += ["--model", "megatron_dlm"]
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
