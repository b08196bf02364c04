"""Convert a Hugging Face folder to a Megatron-DLM checkpoint: a pretrained AR model to adapt
into a DLM (or to keep training as AR), or one of our exports to keep training.

    # a local Llama / Qwen2 / Qwen3 / Qwen2-MoE / Mixtral folder, checked against transformers
    python tools/convert_hf_to_megatron.py --hf models/Qwen3-0.6B --save runs/qwen3 --verify

    # adapt it into a DLM (the import wrote the architecture and tokenizer flags to model.yaml)
    python pretrain_dlm.py --config runs/qwen3/model.yaml --load runs/qwen3 --finetune \\
        --objective dlm --save runs/qwen3-dlm --train-data-path DATA ...
    # or continue AR pretraining: the same with --objective ar

    # an export of ours, back to a checkpoint
    python tools/convert_hf_to_megatron.py --hf runs/quickstart/hf --save runs/continued

The checkpoint holds the weights (no optimizer state) at TP=PP=EP=1 and loads at any layout.
A stock model's tokenizer is copied to <save>/tokenizer with the special tokens a DLM needs:
the mask token (--mask-token, default the tokenizer's own or an added <|mask|>), the
end-of-document token (--eod-token, default its eos token) and the padding token
(--pad-token, default its own if distinct from eos, else an added <|pad|>); tokens may be
given as strings or ids. Added tokens grow the embedding; their rows start at the mean
embedding. Preprocess data with that tokenizer (tools/preprocess_data.py --tokenizer-type
HuggingFaceTokenizer --tokenizer-model <save>/tokenizer). An export of ours keeps the training
config it recorded (megatron_dlm.json); its vocabulary rows are padded back to the size the
original run used, so a run at that run's tensor-parallel size loads the checkpoint. Resume with
--finetune (fresh optimizer and data position) or --no-load-optim. --save must not hold
checkpoints already (a training run would then resume from the import; --overwrite allows it).
Exit status: 0 done, 1 verification failed (nothing written), 2 bad input (a missing or corrupt
folder, a negative --iteration, a --save that holds a run).
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--hf", required=True, help="Hugging Face folder: a stock AR model, or our export"
    )
    parser.add_argument("--save", required=True, help="checkpoint root to write")
    parser.add_argument("--iteration", type=int, default=0, help="iteration to record (0)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="let --save name a folder that already holds checkpoints (its tracker is "
        "rewritten to --iteration)",
    )
    for role, default in (
        ("mask", "the tokenizer's mask_token, else <|mask|> (added if missing)"),
        ("eod", "the tokenizer's eos_token"),
        ("pad", "the tokenizer's pad_token if it differs from eos, else <|pad|> (added)"),
    ):
        parser.add_argument(
            f"--{role}-token", metavar="TOKEN|ID", help=f"stock models: {role} token; {default}"
        )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="stock models: compare the Megatron model's logits with transformers' own model "
        "(float32) before writing",
    )
    parser.add_argument(
        "--verify-rtol",
        type=float,
        default=1e-5,
        help="verification tolerance relative to the largest |logit| (default 1e-5)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.iteration < 0:
        parser.error(f"--iteration must be >= 0, got {args.iteration}")
    try:
        check_save(Path(args.save), args.overwrite)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    from safetensors import SafetensorError

    from megatron_dlm.checkpoint import CheckpointError
    from megatron_dlm.config.base import ConfigError
    from megatron_dlm.data.tokenizer import TokenizerError
    from megatron_dlm.hf.architectures import UnsupportedModelError
    from megatron_dlm.hf.convert import ExportError, VerificationError
    from megatron_dlm.hf.to_megatron import import_hf_folder
    from megatron_dlm.hf.tokenizer_import import TokenizerImportError
    from megatron_dlm.hf.weights import WeightMappingError
    from megatron_dlm.runtime.logging_utils import setup_logging

    setup_logging()
    try:
        check_hf_folder(Path(args.hf))
        result = import_hf_folder(
            args.hf,
            args.save,
            iteration=args.iteration,
            mask_token=args.mask_token,
            eod_token=args.eod_token,
            pad_token=args.pad_token,
            verify=args.verify,
            verify_rtol=args.verify_rtol,
        )
    except VerificationError as exc:
        print(exc, file=sys.stderr)
        print(f"error: {args.save} was not written", file=sys.stderr)
        return 1
    except (
        CheckpointError,
        ConfigError,
        ExportError,
        OSError,
        SafetensorError,
        TokenizerError,
        TokenizerImportError,
        UnsupportedModelError,
        ValueError,
        WeightMappingError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.verify is not None:
        print(result.verify)
    print(f"wrote {result.checkpoint} ({result.architecture})")
    if result.recipe is not None:
        added = ", ".join(result.added_tokens) or "none"
        print(f"tokenizer: {result.tokenizer} (tokens added: {added}); flags: {result.recipe}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
