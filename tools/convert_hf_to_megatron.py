"""Convert an exported Hugging Face folder back to a Megatron-DLM checkpoint (to keep training).

    python tools/convert_hf_to_megatron.py --hf runs/quickstart/hf --save runs/continued
    python pretrain_dlm.py --config recipe.yaml --load runs/continued --finetune ...

The checkpoint holds the weights (no optimizer state) at TP=PP=EP=1 and loads at any layout;
resume with --finetune (fresh optimizer and data position) or --no-load-optim. The training
config is the one the export recorded (megatron_dlm.json), else derived from config.json.
Vocabulary rows are padded back to the size the original run used, so a run at that run's
tensor-parallel size loads the checkpoint. Exit status: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hf", required=True, help="exported folder (tools/convert_to_hf.py)")
    parser.add_argument("--save", required=True, help="checkpoint root to write")
    parser.add_argument("--iteration", type=int, default=0, help="iteration to record (0)")
    args = parser.parse_args(argv)
    from megatron_dlm.hf.convert import ExportError
    from megatron_dlm.hf.to_megatron import import_hf_folder
    from megatron_dlm.runtime.logging_utils import setup_logging

    setup_logging()
    try:
        written = import_hf_folder(args.hf, args.save, iteration=args.iteration)
    except (ExportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
