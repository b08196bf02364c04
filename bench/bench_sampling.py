"""Generation: KV caches (none / prefix / dual), threshold decoding, batch size.

    python bench/bench_sampling.py --load CKPT [--threads 2] [--prompt-tokens 200] \\
        [--gen-length 256] [--caches none prefix dual] [--thresholds 0.9 0.5] [--batch-scaling]

On a trained DLM checkpoint, ``--prompts`` prompts (default 16) of ``--prompt-tokens`` tokens
(default ~200: held-out standard-library code ending at a function's signature), each continued
by ``--gen-length`` tokens (default 256) in blocks of 32, one token committed per step (steps =
gen length), low-confidence remasking, greedy, no early stop. Everything runs through
``megatron_dlm.inference`` (the path tools/generate.py takes).

1. KV caches: ``none`` recomputes the whole sequence at every step; ``prefix`` and ``dual``
   (Fast-dLLM) refresh the cache with a full pass when a block starts and then run only the
   block and the masked suffix (prefix) or the block (dual). Printed: forward passes per
   sequence, generated tokens/s and its ratio to no cache, token agreement with no cache, and
   the model's own -ELBO of each output (nats/token, Monte Carlo, mc_num 32) with its difference
   from no cache paired over prompts (mean ± standard error).
   Target: dual >= 3x the tokens/s of no cache at an ELBO within noise.
2. Threshold decoding (``--thresholds``, with ``--threshold-cache``): forward passes saved and
   quality, against fixed-step decoding with the same cache. Target: >= 3x fewer passes at
   equal quality.
3. ``--batch-scaling``: tokens/s of fixed-step decoding for 1, 8 and 32 prompts.

An AR checkpoint runs section 1 only (none against the exact KV cache, ``prefix``), with its
exact log-likelihood in place of the ELBO.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time

import torch


def held_out_prompts(tokenize, count: int, length: int) -> list[list[int]]:
    """``count`` prompts of ``length`` tokens: held-out stdlib code up to a function signature."""
    from megatron_dlm.data.corpus import collect_corpus

    prompts = []
    for source in collect_corpus(stdlib=True, split="valid"):
        text = source.path.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        lines = text.splitlines(keepends=True)
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.body]
        for node in functions[1::4]:  # spread over the file
            ids = tokenize("".join(lines[: node.body[0].lineno - 1]))
            if len(ids) >= length:
                prompts.append(ids[-length:])
                break  # one per file: different code in every prompt
        if len(prompts) == count:
            break
    return prompts


def mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) / len(values) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--load", default="runs/quickstart/checkpoints")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--caches", nargs="+", default=["none", "prefix", "dual"])
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.9, 0.7, 0.5])
    parser.add_argument("--threshold-cache", default="dual", choices=["none", "prefix", "dual"])
    parser.add_argument("--mc-num", type=int, default=32)
    parser.add_argument("--batch-scaling", action="store_true")
    parser.add_argument("--judge", help="an AR checkpoint (same tokenizer) that scores outputs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from megatron_dlm.config.sampling import SamplingConfig
    from megatron_dlm.inference import LikelihoodRequest, load_model
    from megatron_dlm.runtime.logging_utils import quiet_expected_warnings

    quiet_expected_warnings()
    model = load_model(args.load)
    if not model.bidirectional:  # AR: the exact KV cache against none; no thresholds
        args.caches = [c for c in args.caches if c != "dual"]
        args.thresholds = []
    gen, length = args.gen_length, args.prompt_tokens
    if length + gen > model.max_length:
        raise SystemExit(
            f"--prompt-tokens {length} + --gen-length {gen} exceed the model's {model.max_length} "
            "positions"
        )
    judge = load_model(args.judge) if args.judge else None
    if judge is not None:
        probe = "def main(argv=None):\n    return 0\n"
        if judge.bidirectional:
            raise SystemExit(f"--judge {args.judge}: not an AR checkpoint")
        if judge.tokenize(probe) != model.tokenize(probe) or judge.vocab_size < model.vocab_size:
            raise SystemExit(f"--judge {args.judge}: its tokenizer is not --load's")
    prompts = held_out_prompts(model.tokenize, args.prompts, length)
    if len(prompts) < 2:
        raise SystemExit(f"found {len(prompts)} held-out prompts of {length} tokens")
    n_tokens = gen * len(prompts)

    def options(cache: str, threshold: float | None = None) -> SamplingConfig:
        return SamplingConfig(gen_length=gen, block_length=args.block_length, steps=gen,
                              stop_at_eos=False, truncate_after_eos=False, cache=cache,
                              threshold=threshold)  # fmt: skip

    def run(opts: SamplingConfig, batch: list[list[int]]):
        start = time.perf_counter()
        out = model.generate(batch, opts)
        return out, time.perf_counter() - start

    def neg_elbo(out) -> list[float]:
        requests = [LikelihoodRequest(p, s) for p, s in zip(prompts, out.sequences)]
        scored = model.score(requests, mc_num=args.mc_num, greedy=False)
        return [-value / gen for value, _ in scored]

    judge_scores: dict[int, list[float]] = {}  # id(output) -> NLL per token (bases reused)

    def judge_nll(out) -> list[float]:
        if id(out) not in judge_scores:
            requests = [LikelihoodRequest(p, s) for p, s in zip(prompts, out.sequences)]
            scored = judge.score(requests, greedy=False)
            judge_scores[id(out)] = [-value / gen for value, _ in scored]
        return judge_scores[id(out)]

    def distinct_4grams(out) -> float:
        shares = [len(set(zip(s, s[1:], s[2:], s[3:]))) / (len(s) - 3) for s in out.sequences]
        return statistics.fmean(shares)

    def judged(out, base_out) -> str:
        if judge is None:
            return ""
        nll, base_nll = judge_nll(out), judge_nll(base_out)
        (n, n_se), (d, d_se) = mean_se(nll), mean_se([x - y for x, y in zip(nll, base_nll)])
        return (f" {n:7.3f} ± {n_se:.3f} {d:+7.3f} ± {d_se:.3f} "
                f"{distinct_4grams(out):8.1%}")  # fmt: skip

    def agreement(a, b) -> float:
        same = sum(x == y for s, t in zip(a.sequences, b.sequences) for x, y in zip(s, t))
        return same / n_tokens

    print(f"checkpoint {args.load}; {len(prompts)} prompts x {length} tokens -> {gen} tokens, "
          f"block {args.block_length}, {args.threads} threads")  # fmt: skip
    header = (f"{'decoding':>16} {'passes/seq':>10} {'tokens/s':>9} {'speed-up':>8} "
              f"{'agreement':>9} {'-ELBO nats/tok':>16} {'change vs base':>16}")  # fmt: skip
    if judge is not None:
        header += f" {'judge NLL/tok':>15} {'judge change':>15} {'distinct4':>8}"

    def row(name, out, seconds, base, base_seconds, base_elbo):
        elbo = neg_elbo(out)
        e, (d, d_se) = mean_se(elbo), mean_se([x - y for x, y in zip(elbo, base_elbo)])
        print(f"{name:>16} {statistics.fmean(out.forward_passes):10.1f} "
              f"{n_tokens / seconds:9.1f} {base_seconds / seconds:7.2f}x "
              f"{agreement(out, base):9.1%} {e[0]:10.3f} ± {e[1]:.3f} "
              f"{d:+9.3f} ± {d_se:.3f}{judged(out, base)}")  # fmt: skip

    print("\nKV caches (fixed-step decoding; base: no cache)")
    print(header)
    base, base_seconds = run(options("none"), prompts)
    base_elbo = neg_elbo(base)
    e = mean_se(base_elbo)
    print(
        f"{'none':>16} {statistics.fmean(base.forward_passes):10.1f} "
        f"{n_tokens / base_seconds:9.1f} {1.0:7.2f}x {1.0:9.1%} {e[0]:10.3f} ± {e[1]:.3f}"
        + (f" {'':>16}{judged(base, base)}" if judge is not None else "")
    )
    for cache in [c for c in args.caches if c != "none"]:
        out, seconds = run(options(cache), prompts)
        row(cache, out, seconds, base, base_seconds, base_elbo)

    if args.thresholds:
        cache = args.threshold_cache
        print(f"\nthreshold decoding (cache {cache}; base: fixed-step with cache {cache})")
        print(header.replace("speed-up", " fewer ×"))
        fixed, fixed_seconds = (base, base_seconds) if cache == "none" else run(
            options(cache), prompts)  # fmt: skip
        fixed_elbo = base_elbo if cache == "none" else neg_elbo(fixed)
        passes = statistics.fmean(fixed.forward_passes)
        for threshold in args.thresholds:
            out, seconds = run(options(cache, threshold), prompts)
            elbo = neg_elbo(out)
            e = mean_se(elbo)
            d, d_se = mean_se([x - y for x, y in zip(elbo, fixed_elbo)])
            fewer = passes / statistics.fmean(out.forward_passes)
            print(f"{'thr ' + str(threshold):>16} {statistics.fmean(out.forward_passes):10.1f} "
                  f"{n_tokens / seconds:9.1f} {fewer:7.2f}x {agreement(out, fixed):9.1%} "
                  f"{e[0]:10.3f} ± {e[1]:.3f} {d:+9.3f} ± {d_se:.3f}"
                  f"{judged(out, fixed)}")  # fmt: skip

    if args.batch_scaling:
        print("\nbatch scaling (fixed-step, no cache):")
        for size in (1, 8, 32):
            batch = (prompts * (1 + size // len(prompts)))[:size]
            _, seconds = run(options("none"), batch)
            print(f"  batch {size:>2}: {gen * size / seconds:8.1f} tokens/s, "
                  f"{seconds / size:6.2f} s per sequence")  # fmt: skip
    model.close()
    if judge is not None:
        judge.close()


if __name__ == "__main__":
    main()
