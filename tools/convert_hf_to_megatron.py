"""Convert an exported Hugging Face folder back to a Megatron-DLM checkpoint (to keep training).

    python tools/convert_hf_to_megatron.py --hf runs/quickstart/hf --save runs/continued
    python pretrain_dlm.py --config recipe.yaml --load runs/continued --finetune ...

The checkpoint holds the weights (no optimizer state) at TP=PP=EP=1 and loads at any layout;
resume with --finetune (fresh optimizer and data position) or --no-load-optim. The training
config is the one the export recorded (megatron_dlm.json), else derived from config.json.
Vocabulary rows are padded back to the size the original run used, so a run at that run's
tensor-parallel size loads the checkpoint. --save must not hold checkpoints already (a training
run would then resume from the import; --overwrite allows it). Exit status: 0 done, 2 bad
input (a missing or corrupt export, a negative --iteration, a --save that holds a run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def check_save(save: Path, overwrite: bool) -> None:
    """Refuse a --save that already holds checkpoints (a training run) unless ``overwrite``.

    Importing writes ``iter_*`` and rewrites the tracker, so the run's next resume would start
    from the imported weights.
    """
    from megatron_dlm.checkpoint import TRACKER_FILE
    from megatron_dlm.data.paths import check_output_dir

    check_output_dir(save, "--save")
    if not save.is_dir() or overwrite:
        return
    held = [p.name for p in save.iterdir() if p.name == TRACKER_FILE or p.name.startswith("iter_")]
    if held:
        raise ValueError(
            f"--save {save} already holds checkpoints ({', '.join(sorted(held)[:3])}"
            f"{', ...' if len(held) > 3 else ''}): importing would rewrite its "
            f"{TRACKER_FILE}, so that run would resume from the imported weights. Choose a new "
            "folder, or pass --overwrite"
        )


def check_hf_folder(folder: Path) -> None:
    """Read what the import reads, so a corrupt file is named before any model is built."""
    from safetensors import SafetensorError, safe_open

    from megatron_dlm.hf.convert import PROVENANCE_FILE

    provenance = folder / PROVENANCE_FILE
    if provenance.is_file():
        try:
            record = json.loads(provenance.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{provenance}: not valid JSON ({exc})") from exc
        missing = [k for k in ("megatron_config", "tokenizer") if not isinstance(record, dict)
                   or k not in record]  # fmt: skip
        if missing:
            raise ValueError(f"{provenance}: lacks {', '.join(missing)} (not an export's record)")
    for weights in sorted(folder.glob("model*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as f:
                f.keys()
        except (OSError, SafetensorError) as exc:
            raise ValueError(
                f"{weights}: not a complete safetensors file ({exc}); export it again"
            ) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hf", required=True, help="exported folder (tools/convert_to_hf.py)")
    parser.add_argument("--save", required=True, help="checkpoint root to write")
    parser.add_argument("--iteration", type=int, default=0, help="iteration to record (0)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="let --save name a folder that already holds checkpoints (its tracker is "
        "rewritten to --iteration)",
    )
    args = parser.parse_args(argv)
    if args.iteration < 0:
        parser.error(f"--iteration must be >= 0, got {args.iteration}")
    try:
        check_save(Path(args.save), args.overwrite)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    from safetensors import SafetensorError

    from megatron_dlm.hf.convert import ExportError
    from megatron_dlm.hf.to_megatron import import_hf_folder
    from megatron_dlm.runtime.logging_utils import setup_logging

    setup_logging()
    try:
        check_hf_folder(Path(args.hf))
        written = import_hf_folder(args.hf, args.save, iteration=args.iteration)
    except (ExportError, OSError, ValueError, SafetensorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
