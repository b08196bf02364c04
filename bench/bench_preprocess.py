"""Preprocessing throughput: our tools/preprocess_data.py vs Megatron-LM's, side by side.

    python bench/bench_preprocess.py --megatron-lm-dir /tmp/megatron-lm [--rounds 3]

Corpus: this interpreter's whole standard library (tests included: CPython 3.11, 1,790 files,
31.5 MB; 1,758 documents once empty and non-UTF-8 files are left out). Tokenizer: a 4k-vocab
sentencepiece BPE trained by tools/train_tokenizer.py on the standard library without tests.
Megatron-LM's tool reads jsonl, so the corpus is converted once to one JSON line per file, in
our document order. Variants, each at 1 and 2 workers, interleaved round by round so machine
noise hits all alike; wall time of the whole command (start-up, import, tokenizing, writing):

  megatron-lm   Megatron-LM's tools/preprocess_data.py on the jsonl (--append-eod)
  ours-jsonl    ours on the same jsonl
  ours-tree     ours on the source tree (--stdlib-with-tests), our native input

All outputs must be byte-identical (.bin and .idx) to Megatron-LM's: the benchmark checks it.
Prints the median wall time and tokens/s of each and the ratio to Megatron-LM's tokens/s at
equal workers; the CPU seconds of each (all processes; less sensitive to other load on the
machine than wall time) and their ratio; and the start-up cost of each tool (``--help``) and of
importing megatron-core.

Getting Megatron-LM's script (not part of this repository): a checkout of the release matching
the installed megatron-core, e.g.

    git clone --depth 1 --branch core_r0.16.0 https://github.com/NVIDIA/Megatron-LM /tmp/megatron-lm

Its tool imports ``megatron.training`` (from the checkout) and the installed megatron-core. On a
machine without triton (CPU), ``megatron.training`` fails to import one GPU-only module (Triton
batch-invariant matmul kernels); the benchmark runs the tool through a small launcher that
registers an empty stand-in for that module, which preprocessing never calls. It saves
Megatron-LM the time of importing triton, so the comparison errs in its favour.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from megatron_dlm.data.corpus import stdlib_files  # noqa: E402

GPU_ONLY_MODULE = "megatron.core.transformer.custom_layers.batch_invariant_kernels"
LAUNCHER = f'''"""Run a script with an empty stand-in for {GPU_ONLY_MODULE} (needs triton)."""
import runpy, sys, types

stand_in = types.ModuleType("{GPU_ONLY_MODULE}")
for name in ("set_batch_invariant_mode", "is_batch_invariant_mode_enabled",
             "disable_batch_invariant_mode", "enable_batch_invariant_mode"):
    setattr(stand_in, name, lambda *args, **kwargs: None)
sys.modules[stand_in.__name__] = stand_in
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of ``cmd``, its workers included; raises if it fails."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    cpu = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime"))
    return seconds, cpu


def write_jsonl(path: Path) -> int:
    """The standard library as jsonl, one file per line, skipping what our tool skips."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for source in stdlib_files(with_tests=True):
            data = source.path.read_bytes()
            if not data or b"\x00" in data:
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            f.write(json.dumps({"text": text}) + "\n")
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--megatron-lm-dir",
        type=Path,
        required=True,
        help="Megatron-LM checkout with tools/preprocess_data.py and megatron/training",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--work-dir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    mlm_script = args.megatron_lm_dir / "tools" / "preprocess_data.py"
    if not mlm_script.is_file() or not (args.megatron_lm_dir / "megatron" / "training").is_dir():
        parser.error(f"{args.megatron_lm_dir} has no tools/preprocess_data.py + megatron/training")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    py = sys.executable

    tokenizer = work / "tok4k"
    run([py, "tools/train_tokenizer.py", "--stdlib", "--vocab-size", str(args.vocab_size),
         "--output-prefix", str(tokenizer), "--held-out-fraction", "0"], REPO, env)  # fmt: skip
    model = f"{tokenizer}.model"
    jsonl = work / "stdlib.jsonl"
    documents = write_jsonl(jsonl)
    launcher = work / "megatron_lm_launcher.py"
    launcher.write_text(LAUNCHER)

    def command(variant: str, workers: int, prefix: Path) -> list[str]:
        common = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", model,
                  "--output-prefix", str(prefix), "--workers", str(workers),
                  "--log-interval", "1000000"]  # fmt: skip
        if variant == "megatron-lm":
            return [py, str(launcher), str(mlm_script), "--input", str(jsonl), "--json-keys",
                    "text", "--append-eod", *common]  # fmt: skip
        source = ["--input", str(jsonl)] if variant == "ours-jsonl" else ["--stdlib-with-tests"]
        return [py, "tools/preprocess_data.py", *source, "--no-progress-bar", *common]

    variants = ["megatron-lm", "ours-jsonl", "ours-tree"]
    times: dict[tuple[str, int], list[float]] = {}
    cpu_times: dict[tuple[str, int], list[float]] = {}
    reference = work / "megatron-lm_w1_text_document"
    for r in range(args.rounds):
        for workers in args.workers:
            for variant in variants:
                prefix = work / f"{variant}_w{workers}"
                seconds, cpu = run(command(variant, workers, prefix), REPO, env)
                times.setdefault((variant, workers), []).append(seconds)
                cpu_times.setdefault((variant, workers), []).append(cpu)
                out = Path(f"{prefix}_text_document")
                for suffix in (".bin", ".idx"):
                    ref = Path(f"{reference}{suffix}")
                    if ref.exists() and not filecmp.cmp(f"{out}{suffix}", ref, shallow=False):
                        raise RuntimeError(f"{out}{suffix} differs from {ref}")
                print(
                    f"round {r + 1}: {variant:12s} workers={workers}: {seconds:6.2f} s wall, "
                    f"{cpu:6.2f} s CPU, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )

    tokens = json.loads(Path(f"{work}/ours-tree_w{args.workers[0]}_text_document.meta.json")
                        .read_text())["tokens"]  # fmt: skip
    corpus_mb = sum(f.path.stat().st_size for f in stdlib_files(with_tests=True)) / 1e6
    startup = {
        "import megatron.core": run([py, "-c", "import megatron.core"], REPO, env)[0],
        "ours --help": run([py, "tools/preprocess_data.py", "--help"], REPO, env)[0],
        "megatron-lm --help": run([py, str(launcher), str(mlm_script), "--help"], REPO, env)[0],
    }
    print(
        f"\ncorpus: standard library {corpus_mb:.1f} MB, {documents} documents, "
        f"{tokens:,} tokens ({args.vocab_size}-vocab sentencepiece BPE); outputs identical"
    )
    print(f"{'variant':12s} {'workers':>7s} {'wall s':>7s} {'Mtok/s':>7s} {'tok/s ratio':>11s} "
          f"{'CPU s':>7s} {'CPU ratio':>9s}")  # fmt: skip
    for workers in args.workers:
        base = statistics.median(times[("megatron-lm", workers)])
        base_cpu = statistics.median(cpu_times[("megatron-lm", workers)])
        for variant in variants:
            wall = statistics.median(times[(variant, workers)])
            cpu = statistics.median(cpu_times[(variant, workers)])
            print(f"{variant:12s} {workers:7d} {wall:7.2f} {tokens / wall / 1e6:7.2f} "
                  f"{base / wall:10.2f}x {cpu:7.2f} {base_cpu / cpu:8.2f}x")  # fmt: skip
    print("start-up (wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in startup.items()))
    print(f"median of {args.rounds} rounds; load average now {os.getloadavg()[0]:.2f}; {work}")


if __name__ == "__main__":
    main()
