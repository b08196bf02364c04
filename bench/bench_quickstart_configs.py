"""Quickstart configurations side by side: the held-out bound each reaches in the same budget.

    python bench/bench_quickstart_configs.py --output-dir runs/bench_quickstart \\
        [--candidates today v2k v2k_ar_warm v2k_s128_b32] [--mc-num 8]

Every candidate goes through the quickstart's own command path (examples/quickstart.py's
``prepare_data``: tools/train_tokenizer.py and tools/preprocess_data.py on the interpreter's
standard library, then pretrain_dlm.py with examples/recipes/tiny_cpu.yaml plus the candidate's
flags, which name every field a candidate changes, so "today" stays today's configuration
whatever the recipe says). The training budget is today's: 300 steps of 16 x 256 tokens, in
training FLOPs (pretrain_dlm.py --dry-run's count); each other candidate gets the number of
steps that spends the same FLOPs.

The held-out bound is measured after training on the whole stdlib valid split, the same text
for every candidate: each document, tokenised by the candidate's tokenizer, is cut into windows
of the candidate's sequence length and every window's negative ELBO is estimated with
``--mc-num`` stratified mask counts (megatron_dlm.inference.likelihood.dlm_loglikelihoods). The
bound is reported in nats per token of that candidate's tokenizer and in bits per UTF-8 byte
(total nats / ln 2 / valid bytes), which is comparable across vocabularies. The "± SE" of
bits/byte is over documents; the ratio's is paired (the per-document difference from today's
candidate), so text that is hard for every model does not count as noise.

Each finished candidate is kept in OUTPUT/results/NAME.json and not rerun; a trained one whose
held-out pass did not finish keeps its training (OUTPUT/runs/NAME/train.json); an unfinished
training is run again from the start; the table is printed from all of them. One training
process runs at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO))

RECIPE = "examples/recipes/tiny_cpu.yaml"
TODAY_ITERS = 300


@dataclass(frozen=True)
class Candidate:
    """One configuration: tokenizer size, pretrain_dlm.py flags and the AR warm-start share."""

    name: str
    vocab_size: int
    flags: tuple[str, ...]
    ar_fraction: float = 0.0
    """Share of the steps trained as AR first; the rest is DLM from those weights."""
    note: str = field(default="", compare=False)

    def seq_length(self) -> int:
        return int(self.flags[self.flags.index("--seq-length") + 1])


def _shape(seq: int, mbs: int, gbs: int, lr: float, min_lr: float, decay: str, warmup: int):
    return (
        "--num-layers", "4", "--hidden-size", "128", "--num-attention-heads", "4",
        "--seq-length", str(seq), "--max-position-embeddings", str(seq),
        "--micro-batch-size", str(mbs), "--global-batch-size", str(gbs),
        "--lr", str(lr), "--min-lr", str(min_lr), "--lr-decay-style", decay,
        "--lr-warmup-iters", str(warmup),
    )  # fmt: skip


TODAY_SHAPE = _shape(256, 8, 16, 2e-3, 2e-4, "cosine", 30)
CANDIDATES = {
    c.name: c
    for c in [
        Candidate("today", 8192, TODAY_SHAPE, note="the quickstart before this change"),
        Candidate("v2k", 2048, TODAY_SHAPE, note="2,048-piece vocabulary"),
        Candidate(
            "v2k_ar_warm",
            2048,
            TODAY_SHAPE,
            ar_fraction=0.4,
            note="2k vocabulary; 40% of the steps AR, then DLM from its weights (--finetune)",
        ),  # fmt: skip
        Candidate(
            "v2k_s128_b32",
            2048,
            _shape(128, 16, 32, 1e-3, 1e-3, "constant", 20),
            note="2k vocabulary, the crossover study's seq 128, batch 32, constant lr 1e-3",
        ),
    ]
}


def _dry_run(argv: list[str]):
    from megatron_dlm.config.cli import parse_config
    from megatron_dlm.training.dry_run import dry_run

    return dry_run(parse_config(argv))


def _budget(flags: list[str]) -> float:
    """Today's training FLOPs (its own tokenizer's vocabulary)."""
    report = _dry_run([*flags, *TODAY_SHAPE, "--train-iters", str(TODAY_ITERS)])
    return report.flops_per_step * TODAY_ITERS


def _plan(cand: Candidate, tok: Path, data: Path, ckpt: Path, budget: float, extra: list[str]):
    """The training commands of ``cand`` in ``budget`` FLOPs: (stages, steps, FLOPs, params)."""
    base = [
        "pretrain_dlm.py", "--config", RECIPE, "--tokenizer-model", f"{tok}.model",
        "--train-data-path", str(data / "stdlib_train_text_document"),
        "--valid-data-path", str(data / "stdlib_valid_text_document"),
        "--num-workers", "0", *cand.flags, *extra,
    ]  # fmt: skip
    dlm = _dry_run([*base[1:], "--train-iters", "1"])
    ar = _dry_run([*base[1:], "--train-iters", "1", "--objective", "ar"])
    stages = []
    if cand.ar_fraction:
        ar_iters = round(budget * cand.ar_fraction / ar.flops_per_step)
        dlm_iters = round((budget - ar_iters * ar.flops_per_step) / dlm.flops_per_step)
        warm = ckpt.parent / "checkpoints_ar"
        stages.append([*base, "--objective", "ar", "--train-iters", str(ar_iters),
                       "--eval-interval", str(ar_iters), "--save", str(warm)])  # fmt: skip
        stages.append([*base, "--train-iters", str(dlm_iters), "--eval-interval", str(dlm_iters),
                       "--load", str(warm), "--finetune", "--save", str(ckpt)])  # fmt: skip
        flops = ar_iters * ar.flops_per_step + dlm_iters * dlm.flops_per_step
        iters = ar_iters + dlm_iters
    else:
        iters = round(budget / dlm.flops_per_step)
        stages.append([*base, "--train-iters", str(iters), "--eval-interval", str(iters),
                       "--save", str(ckpt)])  # fmt: skip
        flops = iters * dlm.flops_per_step
    return stages, iters, flops, dlm


def _train(
    cand: Candidate, tok: Path, data: Path, ckpt: Path, budget: float, extra: list[str], env
) -> dict:
    from quickstart import run

    stages, iters, flops, dlm = _plan(cand, tok, data, ckpt, budget, extra)
    seconds = sum(run(f"train {cand.name}", argv, env) for argv in stages)
    return _train_record(stages, iters, flops, dlm, ckpt, seconds)


def _train_record(stages, iters, flops, dlm, ckpt: Path, seconds: float) -> dict:
    metrics = [json.loads(line) for line in (ckpt / "metrics.jsonl").open()]
    train = [m for m in metrics if m.get("split") == "train"]
    return {
        "commands": [shlex.join(["python", *argv]) for argv in stages],
        "params": dlm.total_params,
        "iters": iters,
        "tokens": iters * dlm.tokens_per_step,
        "flops": flops,
        "train_s": seconds,
        "final_train_loss": train[-1]["loss"] if train else None,
    }


def evaluate(ckpt: Path, valid_prefix: Path, seq_length: int, mc_num: int) -> dict:
    """Per document of the valid split: negative ELBO (nats), tokens and UTF-8 bytes."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_dlm.inference import load_model
    from megatron_dlm.inference.likelihood import LikelihoodRequest, dlm_loglikelihoods
    from megatron_dlm.runtime.logging_utils import quiet_expected_warnings

    quiet_expected_warnings()
    torch.manual_seed(0)
    backend = load_model(ckpt)
    dataset = IndexedDataset(str(valid_prefix))
    requests, owners, docs = [], [], []
    for index in range(len(dataset)):
        tokens = dataset[index].tolist()
        text = [t for t in tokens if t != backend.eos_id]
        docs.append({"tokens": len(tokens), "bytes": len(backend.detokenize(text).encode())})
        for lo in range(0, len(tokens), seq_length):
            requests.append(LikelihoodRequest([], tokens[lo : lo + seq_length]))
            owners.append(index)
    start = time.perf_counter()
    values = dlm_loglikelihoods(
        backend.logits_fn, requests, mask_id=backend.mask_id, mc_num=mc_num,
        vocab_size=backend.vocab_size,
    )  # fmt: skip
    for doc in docs:
        doc["nats"] = 0.0
    for owner, value in zip(owners, values):
        docs[owner]["nats"] -= value
    backend.close()
    return {"docs": docs, "windows": len(requests), "eval_s": time.perf_counter() - start}


def _summarise(result: dict, reference: dict | None) -> dict:
    docs = result["docs"]
    nats = sum(d["nats"] for d in docs)
    tokens = sum(d["tokens"] for d in docs)
    nbytes = sum(d["bytes"] for d in docs)
    bits = [d["nats"] / math.log(2) for d in docs]
    bpb = sum(bits) / nbytes
    se = statistics.stdev(bits) * len(bits) ** 0.5 / nbytes
    row = {"nats_per_token": nats / tokens, "bpb": bpb, "bpb_se": se, "bytes": nbytes}
    if reference is not None:
        ref = [d["nats"] / math.log(2) for d in reference["docs"]]
        ref_bpb = sum(ref) / nbytes
        diff = [a - b for a, b in zip(bits, ref)]
        row["ratio"] = bpb / ref_bpb
        row["ratio_se"] = statistics.stdev(diff) * len(diff) ** 0.5 / nbytes / ref_bpb
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench_quickstart"))
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES),
                        default=list(CANDIDATES))  # fmt: skip
    parser.add_argument("--mc-num", type=int, default=8, help="mask draws per held-out window")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="fraction of today's budget (a smoke test: 0.02)")  # fmt: skip
    parser.add_argument("--extra", default="", help="flags added to every training command")
    parser.add_argument("--evaluate", nargs=3, metavar=("CKPT", "VALID_PREFIX", "SEQ"),
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--evaluate-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.evaluate:  # one checkpoint per process (the backend initialises torch.distributed)
        ckpt, prefix, seq = args.evaluate
        result = evaluate(Path(ckpt), Path(prefix), int(seq), args.mc_num)
        args.evaluate_output.write_text(json.dumps(result))
        return 0

    from quickstart import pipeline_env, prepare_data, run

    out = args.output_dir.resolve()
    (out / "results").mkdir(parents=True, exist_ok=True)
    env = pipeline_env()
    prepared: dict[int, tuple[Path, Path]] = {}

    def data_for(vocab: int) -> tuple[Path, Path]:
        if vocab not in prepared:
            folder = out / f"v{vocab}"
            if not (folder / "data" / "stdlib_valid_text_document.idx").exists():
                prepare_data(folder, vocab, env)
            prepared[vocab] = (folder / "tok" / "stdlib", folder / "data")
        return prepared[vocab]

    tok, _ = data_for(CANDIDATES["today"].vocab_size)
    budget = _budget(["--config", RECIPE, "--tokenizer-model", f"{tok}.model"])
    budget *= args.budget_scale
    print(f"[bench] budget: {budget:.3e} training FLOPs ({args.budget_scale:g} x today's "
          f"{TODAY_ITERS} steps)", flush=True)  # fmt: skip
    for name in args.candidates:
        path = out / "results" / f"{name}.json"
        if path.exists():
            print(f"[bench] {name}: done before ({path})")
            continue
        cand = CANDIDATES[name]
        tok, data = data_for(cand.vocab_size)
        ckpt = out / "runs" / name / "checkpoints"
        trained = out / "runs" / name / "train.json"
        record = {"name": name, "note": cand.note, "vocab_size": cand.vocab_size}
        if trained.exists():  # trained before; its held-out pass did not finish
            record.update(json.loads(trained.read_text()))
        else:
            shutil.rmtree(ckpt.parent, ignore_errors=True)  # an unfinished run starts afresh
            record.update(_train(cand, tok, data, ckpt, budget, shlex.split(args.extra), env))
            trained.write_text(json.dumps(record))
        scratch = out / "runs" / name / "heldout.json"
        record["eval_s"] = run(f"held-out {name}", [
            "bench/bench_quickstart_configs.py", "--evaluate", str(ckpt),
            str(data / "stdlib_valid_text_document"), str(cand.seq_length()),
            "--mc-num", str(args.mc_num), "--evaluate-output", str(scratch),
        ], env)  # fmt: skip
        record.update(json.loads(scratch.read_text()))
        path.write_text(json.dumps(record))
    _table(out)
    return 0


def _table(out: Path) -> None:
    results = {p.stem: json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))}
    reference = results.get("today")
    order = [n for n in CANDIDATES if n in results]
    print("\n| config | vocab | params | steps | tokens trained | train wall s | "
          "held-out bound nats/token | bits/byte | ratio vs today |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in order:
        r = results[name]
        s = _summarise(r, reference)
        ratio = f"{s['ratio']:.3f} ± {s['ratio_se']:.3f}" if "ratio" in s else ""
        print(f"| {name} | {r['vocab_size']} | {r['params'] / 1e6:.2f}M | {r['iters']} | "
              f"{r['tokens'] / 1e6:.2f}M | {r['train_s']:.0f} | {s['nats_per_token']:.3f} | "
              f"{s['bpb']:.3f} ± {s['bpb_se']:.3f} | {ratio} |")  # fmt: skip
    if results:
        any_result = next(iter(results.values()))
        print(
            f"\nheld-out: stdlib valid split, {_summarise(any_result, None)['bytes']:,} UTF-8 "
            f"bytes, {len(any_result['docs'])} documents; train wall s on a shared machine"
        )
        for name in order:
            print(f"  {name}: {results[name]['note']}")
            for command in results[name]["commands"]:
                print(f"    $ {command}")


if __name__ == "__main__":
    raise SystemExit(main())
