"""CPU quickstart: the whole Megatron-DLM pipeline on a laptop-class CPU, in a few minutes.

    make quickstart                                      # creates .venv, installs, runs this
    python examples/quickstart.py --output-dir runs/quickstart [--train-iters 300] \
        [--vocab-size 8192] [--ar-iters 0]

Each stage runs the tool a user would run (the command is printed first), on the running
interpreter's standard library as the corpus:

  1. tokenizer  tools/train_tokenizer.py   sentencepiece BPE for code (8k by default), HF export
  2. data       tools/preprocess_data.py   train/valid split by file -> .bin/.idx
  3. train      pretrain_dlm.py            a 4-layer masked diffusion LM (tiny_cpu.yaml); with
                                           --ar-iters M, M AR steps first and the DLM from
                                           their weights (--load ... --finetune)
  4. sample     tools/generate.py          iterative denoising from the checkpoint
  5. export     tools/convert_to_hf.py     Hugging Face folder, logits verified
  6. evaluate   tools/evaluate.py          lm-eval: local multiple choice + HumanEval slice

The matched AR baseline is stage 3 with ``--objective ar``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    "def fibonacci(n):\n",
    "import os\n\n\ndef list_python_files(root):\n",
    "class Stack:\n    def __init__(self):\n",
]


def run(stage: str, args: list[str], env: dict[str, str]) -> float:
    """Run one pipeline command from the repository root; stop the quickstart if it fails."""
    cmd = [sys.executable, *args]
    print(f"\n[{stage}] $ {shlex.join(['python', *args])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"[{stage}] failed with exit code {proc.returncode}")
    print(f"[{stage}] done in {elapsed:.0f} s", flush=True)
    return elapsed


def pipeline_env() -> dict[str, str]:
    """The environment every stage runs in (offline hubs, at most 4 threads unless set)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(REPO))
    env.setdefault("OMP_NUM_THREADS", str(min(os.cpu_count() or 1, 4)))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def prepare_data(
    out: Path, vocab_size: int, env: dict[str, str]
) -> tuple[Path, Path, float, float]:
    """Stages 1-2: tokenizer on the stdlib train split, then both splits preprocessed.

    Returns the tokenizer prefix (``.model`` and ``_hf/`` next to it), the data folder and the
    two stages' wall times.
    """
    tok, data = out / "tok" / "stdlib", out / "data"
    t_tok = run("tokenizer", [
        "tools/train_tokenizer.py", "--stdlib", "--corpus-split", "train",
        "--vocab-size", str(vocab_size),
        "--output-prefix", str(tok), "--hf-output", f"{tok}_hf",
    ], env)  # fmt: skip
    t_data = 0.0
    for split in ("train", "valid"):
        t_data += run("data", [
            "tools/preprocess_data.py", "--stdlib", "--corpus-split", split,
            "--tokenizer-model", f"{tok}.model", "--output-prefix", str(data / f"stdlib_{split}"),
        ], env)  # fmt: skip
    return tok, data, t_tok, t_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--train-iters", type=int, default=300, help="DLM training steps")
    parser.add_argument(
        "--ar-iters",
        type=int,
        default=0,
        help="AR warm-start steps before the DLM (its weights start the DLM; 0: from scratch)",
    )
    parser.add_argument("--vocab-size", type=int, default=8192, help="tokenizer vocabulary size")
    parser.add_argument("--eval-limit", type=int, default=20, help="items per lm-eval task")
    args = parser.parse_args(argv)
    out = args.output_dir.resolve()
    if out.exists():
        print(f"[quickstart] removing the previous run in {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = pipeline_env()
    times = {}
    tok, data, times["tokenizer"], times["data"] = prepare_data(out, args.vocab_size, env)
    ckpt = out / "checkpoints"
    common = [
        "pretrain_dlm.py", "--config", "examples/recipes/tiny_cpu.yaml",
        "--tokenizer-model", f"{tok}.model",
        "--train-data-path", str(data / "stdlib_train_text_document"),
        "--valid-data-path", str(data / "stdlib_valid_text_document"), "--num-workers", "0",
    ]  # fmt: skip
    warm: list[str] = []
    if args.ar_iters:
        # A short AR run first: the DLM from scratch sits at the unigram loss for hundreds of
        # steps, and starting from causal weights skips that plateau (bench/RESULTS.md).
        times["train AR"] = run("train AR", [
            *common, "--objective", "ar", "--train-iters", str(args.ar_iters),
            "--save", str(out / "checkpoints_ar"),
        ], env)  # fmt: skip
        warm = ["--load", str(out / "checkpoints_ar"), "--finetune"]
    times["train"] = run("train", [
        *common, "--train-iters", str(args.train_iters), *warm, "--save", str(ckpt),
    ], env)  # fmt: skip
    samples = out / "samples.jsonl"
    prompt_args = [a for p in PROMPTS for a in ("--prompt", p)]
    times["sample"] = run("sample", [
        "tools/generate.py", "--load", str(ckpt), *prompt_args, "--gen-length", "64",
        "--block-length", "32", "--steps", "64", "--threshold", "0.9", "--output", str(samples),
    ], env)  # fmt: skip
    times["export"] = run("export", [
        "tools/convert_to_hf.py", "--load", str(ckpt), "--output", str(out / "hf"), "--verify",
    ], env)  # fmt: skip
    times["evaluate"] = run("evaluate", [
        "tools/evaluate.py", "--model", "megatron_dlm",
        "--model_args", f"pretrained={out / 'hf'},mc_num=16,gen_length=64,block_length=32,"
        "threshold=0.9",
        "--tasks", "python_nextline_mc,humaneval_offline", "--limit", str(args.eval_limit),
        "--batch_size", "8",
        "--output_path", str(out / "eval"),
    ], env)  # fmt: skip
    _summary(out, samples, times)
    return 0


def _summary(out: Path, samples: Path, times: dict[str, float]) -> None:
    metrics = [json.loads(line) for line in (out / "checkpoints" / "metrics.jsonl").open()]
    train = [m for m in metrics if m["split"] == "train"]
    valid = [m for m in metrics if m["split"] == "valid"]
    print("\n[quickstart] summary")
    shown = f"{valid[0]['loss']:.3f} -> {valid[-1]['loss']:.3f}" if valid else "not run"
    print(f"  loss        : {train[0]['loss']:.3f} (step {train[0]['iteration']}) -> "
          f"{train[-1]['loss']:.3f} (step {train[-1]['iteration']}); "
          f"validation {shown}")  # fmt: skip
    for record in map(json.loads, samples.open()):
        text = record["text"].replace("\n", "\\n")[:70]
        passes, tokens = record["forward_passes"], record["num_tokens"]
        prompt = record["prompt"].splitlines()[0]
        print(f"  sample      : {prompt!r} -> {text!r} ({passes} forward passes, {tokens} tokens)")
    results = sorted((out / "eval").rglob("results*.json"))
    if results:
        scores = json.loads(results[-1].read_text())["results"]
        for task, values in scores.items():
            shown = {k.split(",")[0]: round(v, 3) for k, v in values.items()
                     if isinstance(v, float) and "stderr" not in k}  # fmt: skip
            print(f"  {task:<12}: {shown}")
    print("  times       : " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    print(f"  outputs     : {out}")


if __name__ == "__main__":
    raise SystemExit(main())
