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

Every lm-eval flag works. Bad model_args, unknown tasks or a missing model: one error line,
exit status 2.
"""

from __future__ import annotations

import sys

from megatron_dlm.eval.cli import main

if __name__ == "__main__":
    sys.exit(main())
