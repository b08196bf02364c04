"""Convert a Megatron-DLM checkpoint (saved at any TP/PP/EP layout) to a Hugging Face folder.

    # export, then check the logits against the Megatron model
    python tools/convert_to_hf.py --load runs/quickstart/checkpoints --output runs/quickstart/hf \\
        --verify

    # float32 weights (default: the training precision), another tokenizer than the recorded one
    python tools/convert_to_hf.py --load CKPT --output DIR --dtype fp32 \\
        --tokenizer-model tokenizer/tokenizer.json

    # check an existing export against its checkpoint
    python tools/convert_to_hf.py --load CKPT --output DIR --verify-only

    # use a DLM export (no megatron_dlm needed): AutoModel or AutoModelForMaskedLM
    from transformers import AutoModel, AutoTokenizer
    model = AutoModel.from_pretrained(DIR, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(DIR)
    ids = tok("def fib(n):", return_tensors="pt").input_ids
    logits = model(ids).logits
    out = model.generate(ids, max_new_tokens=64)                   # Megatron-DLM's sampler
    out = model.diffusion_generate(ids, max_new_tokens=64, steps=64, alg="entropy")  # Dream's

    # an AR export whose architecture is Llama/Qwen2/Qwen3 (Mixtral, Qwen2-MoE) is that class:
    model = AutoModelForCausalLM.from_pretrained(DIR)              # no trust_remote_code
    # (vLLM: LLM(model=DIR); lm-eval: --model hf --model_args pretrained=DIR)

Runs in one process (python, not torchrun): the checkpoint is resharded to TP=PP=EP=1 by
dist_checkpointing. The folder is written under a temporary name and renamed when complete
(and verified, with --verify); --output and --max-shard-size are checked before the checkpoint
loads. Exit status: 0 done, 1 verification failed, 2 bad input or an output that cannot be
written (an existing non-empty folder, read-only, disk full; nothing is left behind).
"""

from __future__ import annotations

import argparse
import re
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--load", required=True, help="checkpoint directory (root or iter_*)")
    parser.add_argument("--output", required=True, help="new (or empty) folder to write")
    parser.add_argument(
        "--dtype",
        choices=["bf16", "fp16", "fp32", "bfloat16", "float16", "float32"],
        help="weight dtype (default: the precision the checkpoint was trained in)",
    )
    parser.add_argument(
        "--remote-code",
        action="store_true",
        help="write an AR model with Megatron-DLM's modeling code (trust_remote_code) even when "
        "it is exactly a stock transformers class (Llama, Qwen2, Qwen3, Mixtral, Qwen2-MoE)",
    )
    parser.add_argument(
        "--tokenizer-model",
        help="tokenizer to export (tokenizer.json or sentencepiece .model); default: the path "
        "the checkpoint records",
    )
    parser.add_argument(
        "--skip-tokenizer", action="store_true", help="write no tokenizer files (model only)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare the exported model's logits with the Megatron model's before publishing",
    )
    parser.add_argument(
        "--verify-only",
        action="store_true",
        help="compare an existing export in --output with --load; write nothing",
    )
    parser.add_argument(
        "--verify-rtol",
        type=float,
        default=1e-4,
        help="verification tolerance relative to the largest |logit| (default 1e-4)",
    )
    parser.add_argument(
        "--max-shard-size",
        type=shard_size,
        default="5GB",
        help="largest safetensors file: bytes, or a number with KB/MB/GB/TB (default 5GB)",
    )
    return parser


def shard_size(text: str) -> str | int:
    """``--max-shard-size``: bytes (``1000000``) or a number with KB/MB/GB/TB (``5GB``), > 0.

    Checked when the flags are parsed, not when the weights are written after loading.
    """
    value = text.strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([KMGT]B)", value, re.IGNORECASE)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 5GB, 500MB or a number of bytes, got {text!r}"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from safetensors import SafetensorError

    from megatron_dlm.checkpoint import CheckpointError
    from megatron_dlm.data.paths import check_output_dir
    from megatron_dlm.hf.convert import (
        ExportError,
        VerificationError,
        convert_checkpoint,
        verify_existing_export,
    )
    from megatron_dlm.hf.tokenizer_export import TokenizerExportError
    from megatron_dlm.runtime.logging_utils import setup_logging

    setup_logging()
    try:
        if not args.verify_only:  # before the checkpoint loads
            check_output_dir(args.output, "--output")
    except OSError as exc:
        parser.error(str(exc))
    try:
        if args.verify_only:
            report = verify_existing_export(args.load, args.output, verify_rtol=args.verify_rtol)
            print(report)
            return 0 if report.ok else 1
        result = convert_checkpoint(
            args.load,
            args.output,
            dtype=args.dtype,
            tokenizer_model=args.tokenizer_model,
            skip_tokenizer=args.skip_tokenizer,
            verify=args.verify,
            verify_rtol=args.verify_rtol,
            max_shard_size=args.max_shard_size,
            remote_code=args.remote_code,
        )
    except VerificationError as exc:
        print(exc, file=sys.stderr)
        print(f"error: {args.output} was not written", file=sys.stderr)
        return 1
    except (CheckpointError, ExportError, TokenizerExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, SafetensorError) as exc:  # a full disk while writing: nothing published
        reason = getattr(exc, "strerror", None) or str(exc)
        print(f"error: --output {args.output}: cannot write the export: {reason}; "
              "nothing was written", file=sys.stderr)  # fmt: skip
        return 2
    if result.verify is not None:
        print(result.verify)
    kind = "masked diffusion LM" if result.config.bidirectional else "causal LM"
    if "modeling_megatron_dlm.py" not in result.files:
        kind += ", a stock transformers class"
    print(f"wrote {result.output} ({kind}): {', '.join(result.files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
