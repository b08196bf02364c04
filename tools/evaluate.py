"""lm-eval's command line with the ``megatron_dlm`` model and our offline tasks registered.

The same program as the ``megatron-dlm-eval`` console script (megatron_dlm/eval/cli.py):

    # an exported HF folder (or a Megatron checkpoint directory) on the offline tasks
    python tools/evaluate.py --model megatron_dlm \\
        --model_args pretrained=runs/quickstart/hf,mc_num=32,gen_length=128 \\
        --tasks python_nextline_mc,humaneval_offline --limit 20 --output_path runs/eval

    # a Megatron checkpoint, converted to Hugging Face first (tools/convert_to_hf.py)
    python tools/evaluate.py --load runs/quickstart/checkpoints --convert-to runs/quickstart/hf \\
        --tasks python_nextline_mc

    # two data-parallel replicas, each evaluating half of the requests
    torchrun --nproc-per-node 2 tools/evaluate.py --load runs/quickstart/checkpoints \\
        --tasks python_nextline_mc

    # hub-hosted tasks (need network access to the Hugging Face hub)
    python tools/evaluate.py --model megatron_dlm --model_args pretrained=DIR \\
        --tasks hellaswag,mmlu,arc_easy --batch_size 8 --apply_chat_template

Every lm-eval flag works; --load/--convert-to and the offline tasks (humaneval_offline,
humaneval_offline_pass10, python_nextline_mc) are added. HumanEval executes model-written code in
a sandboxed subprocess (megatron_dlm/eval/sandbox.py); lm-eval's --confirm_run_unsafe_code is
implied for HumanEval only.

Bad input (a missing model or checkpoint, an unknown task, a --model_args value of the wrong
type, an existing --convert-to folder) is one line on stderr and exit status 2, checked before
the model loads where it can be; 1 when the --convert-to export fails verification.
"""

from __future__ import annotations

import sys

from megatron_dlm.eval.cli import main

if __name__ == "__main__":
    sys.exit(main())
