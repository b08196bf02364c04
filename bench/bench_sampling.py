"""DLM generation: fixed-step vs confidence-threshold decoding, and batch-size scaling.

    python bench/bench_sampling.py --load runs/quickstart/checkpoints [--threads 2]

On a trained checkpoint (the quickstart's by default), 128 tokens after each of 16 prompts
(first lines of functions from the standard library's held-out split):

  fixed-step  steps = 128: one token committed per step (block 32, low-confidence remasking)
  thr T       the same, plus every position whose confidence exceeds T at each step

Prints forward passes per sequence, generated tokens/s, the agreement of the two outputs
(fraction of equal tokens) and the model's own ELBO of each output (nats/token, Monte Carlo,
mc_num 32; a likelihood bound the sampler does not optimise directly) with its change from
fixed-step paired over prompts (mean ± standard error). Target: >= 3x fewer
forward passes for threshold decoding with an ELBO within noise of fixed-step. Then tokens/s of
fixed-step decoding for batches of 1, 8 and 32 prompts.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time

import torch


def _prompts(count: int) -> list[str]:
    """Signature + docstring-free first lines of functions in held-out stdlib files."""
    from megatron_dlm.data.corpus import collect_corpus

    prompts = []
    for source in collect_corpus(stdlib=True, split="valid"):
        text = source.path.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        lines = text.splitlines(keepends=True)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.body:
                prompts.append("".join(lines[node.lineno - 1 : node.body[0].lineno - 1]))
                if len(prompts) == count:
                    return prompts
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--load", default="runs/quickstart/checkpoints")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.5, 0.3, 0.1])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--gen-length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from megatron_dlm.config.sampling import SamplingConfig
    from megatron_dlm.eval.backends import megatron_backend
    from megatron_dlm.eval.likelihood import LikelihoodRequest, dlm_loglikelihoods
    from megatron_dlm.runtime.logging_utils import quiet_expected_warnings
    from megatron_dlm.sampling import diffusion_generate

    quiet_expected_warnings()
    b = megatron_backend(args.load)
    if not b.bidirectional:
        raise SystemExit(f"{args.load} is an AR checkpoint; this benchmark decodes DLMs")
    prompts = [b.tokenize(p) for p in _prompts(args.prompts)]
    gen = args.gen_length
    common = dict(mask_id=b.mask_id, pad_id=b.pad_id, eos_id=b.eos_id, vocab_size=b.vocab_size,
                  max_length=b.max_length)  # fmt: skip
    limit = b.max_length - gen
    prompts = [p[-limit:] for p in prompts]

    def run(options: SamplingConfig, batch: list[list[int]]):
        start = time.perf_counter()
        out = diffusion_generate(b.logits_fn, batch, options=options, **common)
        return out, time.perf_counter() - start

    def options(threshold=None) -> SamplingConfig:
        return SamplingConfig(gen_length=gen, block_length=32, steps=gen, stop_at_eos=False,
                              truncate_after_eos=False, threshold=threshold)  # fmt: skip

    def elbo(outputs):
        requests = [LikelihoodRequest(p, s) for p, s in zip(prompts, outputs.sequences)]
        values = dlm_loglikelihoods(b.logits_fn, requests, mask_id=b.mask_id, mc_num=32,
                                    vocab_size=b.vocab_size)  # fmt: skip
        return [-v / gen for v in values]

    def mean_se(values):
        return statistics.fmean(values), statistics.stdev(values) / len(values) ** 0.5

    fixed_opts = options()
    fixed, t_fixed = run(fixed_opts, prompts)
    n_tokens = gen * len(prompts)
    e_fixed_rows = elbo(fixed)
    e_fixed = mean_se(e_fixed_rows)
    passes_fixed = statistics.fmean(fixed.forward_passes)
    print(f"checkpoint {args.load}; {len(prompts)} prompts x {gen} tokens, block 32, "
          f"{args.threads} threads")  # fmt: skip
    print(f"{'decoding':>12} {'passes/seq':>10} {'fewer':>6} {'tokens/s':>9} "
          f"{'agreement':>9} {'-ELBO nats/tok':>16} {'change vs fixed':>16}")  # fmt: skip
    print(f"{'fixed-step':>12} {passes_fixed:10.1f} {1.0:5.2f}x {n_tokens / t_fixed:9.1f} "
          f"{1.0:9.1%} {e_fixed[0]:10.3f} ± {e_fixed[1]:.3f}")  # fmt: skip
    for threshold in args.thresholds:
        out, seconds = run(options(threshold), prompts)
        agree = (
            sum(sum(x == y for x, y in zip(a, c)) for a, c in zip(fixed.sequences, out.sequences))
            / n_tokens
        )
        e_rows = elbo(out)
        e = mean_se(e_rows)
        # Paired over prompts: the difference of each prompt's two outputs, then its spread.
        delta = mean_se([x - y for x, y in zip(e_rows, e_fixed_rows)])
        passes = statistics.fmean(out.forward_passes)
        print(f"{'thr ' + str(threshold):>12} {passes:10.1f} {passes_fixed / passes:5.2f}x "
              f"{n_tokens / seconds:9.1f} {agree:9.1%} {e[0]:10.3f} ± {e[1]:.3f} "
              f"{delta[0]:+9.3f} ± {delta[1]:.3f}")  # fmt: skip
    print("batch scaling (fixed-step):")
    for size in (1, 8, 32):
        batch = (prompts * (1 + size // len(prompts)))[:size]
        _, seconds = run(fixed_opts, batch)
        print(f"  batch {size:>2}: {gen * size / seconds:8.1f} tokens/s, "
              f"{seconds / size:6.2f} s per sequence")  # fmt: skip
    b.close()


if __name__ == "__main__":
    main()
