"""Generate text from a Megatron-DLM checkpoint or an exported Hugging Face model.

    # a Megatron checkpoint (any saved layout), one process
    python tools/generate.py --load runs/quickstart/checkpoints --prompt "def fibonacci(n):"

    # tensor parallel
    torchrun --nproc-per-node 2 tools/generate.py --load CKPT --tensor-model-parallel-size 2 \\
        --prompts-file prompts.txt --output samples.jsonl

    # an exported Hugging Face folder (tools/convert_to_hf.py)
    python tools/generate.py --hf runs/quickstart/hf --prompt "import os" --threshold 0.9

DLM checkpoints decode by iterative denoising (see --steps, --block-length, --remasking,
--threshold, --cfg-scale); AR checkpoints left to right. Output: one JSON line per prompt with
the text, the token count, the forward passes and the seconds per sample. --output is checked
before the model loads and written under a temporary name, renamed when every prompt is done:
an error (a prompt too long for the model, a full disk) leaves an existing file as it was.
Exit status: 0 done, 1 bad prompts file, 2 bad flags or input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise SystemExit(f"--prompts-file: file not found: {path}")
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    prompts.append(json.loads(line)["prompt"])
                except (json.JSONDecodeError, KeyError) as exc:
                    raise SystemExit(f'{path}:{number}: expected {{"prompt": ...}}') from exc
            else:
                prompts.append(line.replace("\\n", "\n"))
    if not prompts:
        raise SystemExit("no prompts: give --prompt TEXT or --prompts-file FILE")
    return prompts


def build_parser() -> argparse.ArgumentParser:
    from megatron_dlm.config.base import add_section_arguments
    from megatron_dlm.config.sampling import SamplingConfig

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--load", help="Megatron-DLM checkpoint directory (root or iter_*)")
    source.add_argument("--hf", help="exported Hugging Face model directory")
    parser.add_argument("--tokenizer-model", help="override the tokenizer recorded in --load")
    parser.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    parser.add_argument("--prompts-file", help="text file (one prompt per line) or .jsonl")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch")
    parser.add_argument("--output", help="JSONL file to write (default: stdout)")
    parser.add_argument("--device", default=None, help="HF models: cpu or cuda (default: auto)")
    add_section_arguments(parser, SamplingConfig, "sampling")
    group = parser.add_argument_group("layout (--load only)")
    group.add_argument("--tensor-model-parallel-size", type=int, default=1)
    group.add_argument("--expert-model-parallel-size", type=int, default=1)
    return parser


def _sampling_options(args):
    from megatron_dlm.config.base import build_section, section_fields
    from megatron_dlm.config.sampling import SamplingConfig

    values = {k: getattr(args, k) for k in section_fields(SamplingConfig) if hasattr(args, k)}
    return build_section(SamplingConfig, values)


def megatron_generator(args):
    """(generate(prompt_ids) -> GenerationOutput, tokenizer, is_main) for a Megatron checkpoint."""
    from megatron_dlm.config import ParallelConfig
    from megatron_dlm.data.tokenizer import load_recorded_tokenizer
    from megatron_dlm.models import load_trained
    from megatron_dlm.runtime.distributed import init_distributed
    from megatron_dlm.sampling import autoregressive_generate, diffusion_generate
    from megatron_dlm.sampling.megatron_model import megatron_logits_fn

    parallel = ParallelConfig(
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        expert_model_parallel_size=args.expert_model_parallel_size,
    )
    options = _sampling_options(args)
    ctx = init_distributed(parallel, seed=options.seed)
    trained = load_trained(args.load, parallel)
    cfg, vocab = trained.config, trained.vocab
    # The recorded tokenizer with its appended tokens and special ids (a mismatch is refused).
    tokenizer = load_recorded_tokenizer(trained.tokenizer, args.tokenizer_model)
    fn = megatron_logits_fn(trained.module, bidirectional=trained.bidirectional)

    def generate(prompt_ids):
        common = dict(
            pad_id=vocab.pad_id, eos_id=vocab.eod_id, mask_id=vocab.mask_id, options=options,
            vocab_size=vocab.size, max_length=cfg.model.max_position_embeddings,
        )  # fmt: skip
        if cfg.objective.bidirectional:
            return diffusion_generate(fn, prompt_ids, **common)
        return autoregressive_generate(fn, prompt_ids, **common)

    return generate, tokenizer, ctx.is_main


def hf_generator(args):
    from megatron_dlm.hf.generation import load_hf_generator

    return load_hf_generator(args.hf, _sampling_options(args), device=args.device)


def main(argv: list[str] | None = None) -> int:
    from megatron_dlm.data.paths import atomic_write, check_output_file
    from megatron_dlm.runtime.logging_utils import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.output:  # before the model loads: a bad path should not cost the load
        try:
            check_output_file(args.output, "--output")
        except OSError as exc:
            parser.error(str(exc))
    setup_logging()
    prompts = _read_prompts(args)
    try:
        generate, tokenizer, is_main = megatron_generator(args) if args.load else hf_generator(args)
    except Exception as exc:  # a clear one-line error for bad input
        from megatron_dlm.config import ConfigError

        if isinstance(exc, (ConfigError, FileNotFoundError, ValueError, RuntimeError)):
            parser.error(str(exc))
        raise
    try:
        with contextlib.ExitStack() as stack:
            out = sys.stdout
            if args.output and is_main:
                # Written under a temporary name and renamed at the end: an error leaves an
                # existing --output as it was.
                out = stack.enter_context(atomic_write(args.output))
            _generate_all(args, prompts, generate, tokenizer, is_main, out)
    except (GenerationInputError, OSError) as exc:
        from megatron_dlm.runtime.error_report import report_error

        detail = f"--output {args.output}: {exc.strerror}" if _is_os_error(exc) else str(exc)
        report_error(f"generate.py: error: {detail}", 2)
        return 2
    finally:
        if args.load:
            from megatron_dlm.runtime.distributed import destroy_distributed

            destroy_distributed()
    return 0


def _generate_all(args, prompts, generate, tokenizer, is_main: bool, out) -> None:
    """Generate for every prompt in batches; the main rank writes one JSON line each."""
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start : start + args.batch_size]
        ids = [tokenizer.tokenize(p) for p in batch]
        began = time.perf_counter()
        try:
            result = generate(ids)
        except ValueError as exc:  # a prompt too long for the model, ...
            raise GenerationInputError(
                f"{exc} (in the batch of prompts {start + 1}-{start + len(batch)})"
            ) from exc
        seconds = (time.perf_counter() - began) / len(batch)
        if not is_main:
            continue
        for prompt, seq, passes, steps in zip(
            batch, result.sequences, result.forward_passes, result.steps
        ):
            record = {
                "prompt": prompt,
                "text": tokenizer.detokenize(seq),
                "num_tokens": len(seq),
                "forward_passes": passes,
                "steps": steps,
                "seconds": round(seconds, 4),
            }
            out.write(json.dumps(record) + "\n")
            out.flush()


class GenerationInputError(ValueError):
    """A prompt the model cannot take (too long for its maximum sequence length)."""


def _is_os_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.strerror is not None


if __name__ == "__main__":
    sys.exit(main())
