"""lm-eval wall time: one process vs data-parallel processes (requests split across ranks).

    python bench/bench_eval.py --load CKPT [--tasks python_nextline_mc] [--limit 100] \\
        [--processes 2] [--threads 2]

Runs the ``megatron-dlm-eval`` console script once in one process (``--threads`` threads) and
once under ``torchrun --nproc-per-node P`` (``--threads / P`` threads each, so both use the same
cores), on the same tasks and model arguments, and prints the wall time of each (start-up and
model loading included), the speed-up, and whether the metrics agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _metrics(directory: Path) -> dict[str, float]:
    (path,) = list(directory.rglob("results*.json"))
    results = json.loads(path.read_text())["results"]
    return {
        f"{task}/{name}": value
        for task, values in results.items()
        for name, value in values.items()
        if isinstance(value, float)
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--load", required=True)
    parser.add_argument("--tasks", default="python_nextline_mc")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--model-args", default="mc_num=32,mc_batch_size=32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    script = Path(sys.executable).parent / "megatron-dlm-eval"
    common = ["--load", args.load, "--tasks", args.tasks, "--limit", str(args.limit),
              "--model_args", args.model_args, "--batch_size", str(args.batch_size)]  # fmt: skip
    launches = {
        "1 process": ([str(script)], args.threads),
        f"{args.processes} processes": (
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={args.processes}",
                "-m",
                "megatron_dlm.eval.cli",
            ],
            max(1, args.threads // args.processes),
        ),  # fmt: skip
    }
    times, metrics = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (launcher, threads) in launches.items():
            out = Path(tmp) / name.replace(" ", "_")
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore",
                       HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")  # fmt: skip
            start = time.perf_counter()
            proc = subprocess.run([*launcher, *common, "--output_path", str(out)], env=env,
                                  capture_output=True, text=True, check=False)  # fmt: skip
            times[name] = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
            metrics[name] = _metrics(out)
    names = list(launches)
    print(f"{args.load}: tasks {args.tasks}, limit {args.limit}, model_args {args.model_args}")
    for name in names:
        print(f"  {name:>12}: {times[name]:7.1f} s wall")
    print(f"  speed-up: {times[names[0]] / times[names[1]]:.2f}x")
    one, many = metrics[names[0]], metrics[names[1]]
    worst = max(abs(one[k] - many[k]) / max(abs(one[k]), 1e-12) for k in one if "stderr" not in k)
    print(f"  metrics: {one}")
    print(f"  largest relative difference between the two (stderr excluded): {worst:.2e}")


if __name__ == "__main__":
    main()
