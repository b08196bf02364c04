"""Run the DLM-vs-AR crossover study: matched runs over many epochs, one table, plots.

    # the CPU study (docs/crossover.md): 4 layers x 128, 50k unique tokens, 150 epochs
    python tools/crossover.py --output-dir runs/crossover \\
        --tokenizer-model runs/tok/stdlib2k.model \\
        --train-data-path runs/data/stdlib_train_text_document \\
        --valid-data-path runs/data/stdlib_valid_text_document \\
        --model cpu4x128=examples/recipes/crossover_cpu.yaml \\
        --unique-tokens 50000 --epochs 150 --objectives dlm ar ar_mask --parallel 2

    # what it would run, with each run's projected size and time
    python tools/crossover.py ... --dry-run

    # at cluster scale: any launcher, a paper recipe, downstream tasks during training
    python tools/crossover.py ... --model dlm1b=examples/recipes/dlm_1b.yaml \\
        --launcher "torchrun --nproc-per-node 8" --world-size 8 \\
        --eval-tasks python_nextline_mc --eval-tasks-every-epochs 10

Every (model, unique-token budget, epoch budget, objective) is one ``pretrain_dlm.py`` run under
``OUTPUT/runs/``; the trainer evaluates each on the held-out split every
``--eval-every-epochs`` epochs (DLM: the ELBO bound; AR: the NLL). A second invocation does no
repeated work: finished runs are skipped, an interrupted one resumes from its checkpoint. The
results are ``OUTPUT/study.csv``, ``study.jsonl``, ``crossings.json`` and ``plots/*.png``.
A ``--model`` is ``NAME=RECIPE.yaml`` or ``NAME=flags`` (``"--num-layers 4 --hidden-size 128"``);
flags after ``--`` go to every run. Exit codes: 0 done, 1 a run failed, 2 bad options.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from megatron_dlm.eval.crossover import (  # noqa: E402
    ModelSpec,
    StudyError,
    StudySpec,
    describe,
    find_crossings,
    is_complete,
    plan_study,
    plot_study,
    study_table,
    write_table,
)


def _model_spec(text: str) -> ModelSpec:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"--model {text!r}: expected NAME=RECIPE.yaml or NAME=flags"
        )
    if value.endswith((".yaml", ".yml")):
        if not Path(value).is_file():
            raise argparse.ArgumentTypeError(f"--model {name}: no such recipe {value!r}")
        return ModelSpec(name, ("--config", value))
    return ModelSpec(name, tuple(shlex.split(value)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/crossover.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output-dir", type=Path, required=True)
    data = p.add_argument_group("data (as pretrain_dlm.py)")
    data.add_argument("--tokenizer-model", required=True)
    data.add_argument("--tokenizer-type", default=None)
    data.add_argument("--train-data-path", nargs="+")
    data.add_argument("--data-path", nargs="+")
    data.add_argument("--valid-data-path", nargs="+")
    grid = p.add_argument_group("the grid")
    grid.add_argument(
        "--model",
        type=_model_spec,
        action="append",
        required=True,
        help="NAME=RECIPE.yaml or NAME='flags' (repeat for several sizes)",
    )
    grid.add_argument("--unique-tokens", type=lambda s: int(float(s)), nargs="+", required=True)
    grid.add_argument(
        "--epochs",
        type=float,
        nargs="+",
        required=True,
        help="epoch budgets: one run per budget (its LR schedule spans it)",
    )
    grid.add_argument(
        "--objectives", nargs="+", default=["dlm", "ar"], choices=["dlm", "ar", "ar_mask"]
    )
    grid.add_argument(
        "--ar-input-mask-prob",
        type=float,
        default=0.3,
        help="--input-mask-prob of the ar_mask runs",
    )
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--eval-every-epochs", type=float, default=1.0)
    ev.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="held-out sequences per evaluation (default: the whole valid split)",
    )
    ev.add_argument("--eval-tasks", default=None, help="downstream lm-eval tasks (comma list)")
    ev.add_argument("--eval-tasks-every-epochs", type=float, default=None)
    ev.add_argument("--eval-tasks-limit", type=int, default=None)
    ev.add_argument(
        "--save-every-epochs",
        type=float,
        default=None,
        help="checkpoint interval (default: only at the end; runs resume from it)",
    )
    run = p.add_argument_group("running")
    run.add_argument(
        "--launcher",
        default="python",
        help='e.g. "torchrun --standalone --nproc-per-node 2" (default: python)',
    )
    run.add_argument("--world-size", type=int, default=1, help="processes per run")
    run.add_argument("--parallel", type=int, default=1, help="runs at once (CPU: one per core)")
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS per run (default: cores / --parallel)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs and each one's pretrain_dlm.py --dry-run; run nothing",
    )
    p.add_argument("extra", nargs=argparse.REMAINDER, help="-- flags for every run")
    return p


def _launcher(text: str) -> tuple[str, ...]:
    """``python`` and ``torchrun`` run with this interpreter (the one that has the package)."""
    words = shlex.split(text)
    if words and words[0] in ("python", "python3"):
        words[0] = sys.executable
    elif words and words[0] == "torchrun":
        words[:1] = [sys.executable, "-m", "torch.distributed.run"]
    return tuple(words)


def _spec(args) -> StudySpec:
    data: list[str] = ["--tokenizer-model", args.tokenizer_model]
    if args.tokenizer_type:
        data += ["--tokenizer-type", args.tokenizer_type]
    for flag in ("train_data_path", "data_path", "valid_data_path"):
        if getattr(args, flag):
            data += ["--" + flag.replace("_", "-"), *getattr(args, flag)]
    if not (args.train_data_path or args.data_path):
        raise StudyError("give --train-data-path or --data-path")
    if not args.valid_data_path and not args.eval_samples:
        raise StudyError("give --valid-data-path (or --eval-samples with --data-path's split)")
    extra = [a for a in args.extra if a != "--"]
    return StudySpec(
        output_dir=args.output_dir,
        data_flags=tuple(data),
        models=tuple(args.model),
        unique_tokens=tuple(args.unique_tokens),
        epochs=tuple(args.epochs),
        objectives=tuple(args.objectives),
        ar_input_mask_prob=args.ar_input_mask_prob,
        eval_every_epochs=args.eval_every_epochs,
        eval_samples=args.eval_samples,
        eval_tasks=args.eval_tasks,
        eval_tasks_every_epochs=args.eval_tasks_every_epochs,
        eval_tasks_limit=args.eval_tasks_limit,
        save_every_epochs=args.save_every_epochs,
        launcher=_launcher(args.launcher),
        world_size=args.world_size,
        extra_flags=tuple(extra),
    )


def _dry_run(plans, spec: StudySpec) -> None:
    for plan in plans:
        print(f"# {plan.name}: {plan.train_iters} steps, {plan.samples_per_epoch} samples/epoch")
        print(describe(plan, spec.launcher))
        out = subprocess.run(
            [sys.executable, "pretrain_dlm.py", *plan.argv, "--dry-run",
             "--dry-run-world-size", str(spec.world_size)],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        lines = [ln for ln in out.stdout.splitlines() if ln.strip().startswith(
            ("parameters", "FLOPs", "budget", "projected"))]  # fmt: skip
        print("\n".join("    " + ln.strip() for ln in lines) or out.stderr.strip()[-500:])


def _launch(plan, spec: StudySpec, threads: int) -> subprocess.Popen:
    plan.directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    log = open(plan.directory / "train.log", "a")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(plan.command(spec.launcher), cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    proc.log = log  # type: ignore[attr-defined]
    return proc


def run_all(plans, spec: StudySpec, parallel: int, threads: int) -> list[str]:
    """Run the unfinished plans, ``parallel`` at a time; returns the names that failed."""
    todo = [p for p in plans if not is_complete(p)]
    for plan in plans:
        if plan not in todo:
            print(f"done    {plan.name} (skipped)")
    running: list[tuple] = []
    failed = []
    while todo or running:
        while todo and len(running) < parallel:
            plan = todo.pop(0)
            resume = (plan.directory / "latest_checkpointed_iteration.txt").is_file()
            print(f"{'resume' if resume else 'start '}  {plan.name}: {plan.train_iters} steps")
            running.append((plan, _launch(plan, spec, threads), time.monotonic()))
        time.sleep(0.5)
        for item in list(running):
            plan, proc, began = item
            if proc.poll() is None:
                continue
            proc.log.close()
            running.remove(item)
            ok = proc.returncode == 0 and is_complete(plan)
            print(
                f"{'finish' if ok else 'FAILED'}  {plan.name} in {time.monotonic() - began:.0f} s"
                + ("" if ok else f" (exit {proc.returncode}; see {plan.directory}/train.log)")
            )
            if not ok:
                failed.append(plan.name)
    return failed


def summarize(rows, output_dir: Path) -> list[dict]:
    metrics = ["heldout"] + sorted({k for r in rows for k in r if "/" in k})
    out = []
    for metric in metrics:
        for c in find_crossings(rows, metric):
            record = {**c.__dict__, "best_beats_best": c.best_beats_best}
            out.append(record)
            where = f"epoch {c.epoch:.1f}" if c.epoch is not None else "never"
            print(
                f"{c.model} u={c.unique_tokens:,} e={c.epochs_budget:g} {metric}: DLM below "
                f"{c.versus} from {where}; best DLM {c.dlm_best:.4f} vs best {c.versus} "
                f"{c.ar_best:.4f} (epoch {c.ar_best_epoch:.1f})"
            )
    (output_dir / "crossings.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec = _spec(args)
        plans = plan_study(spec)
    except StudyError as exc:
        parser.error(str(exc))
    if args.dry_run:
        _dry_run(plans, spec)
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "study.json").write_text(
        json.dumps({"command": sys.argv, "runs": {p.name: p.argv for p in plans}}, indent=2) + "\n"
    )
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.parallel))
    failed = run_all(plans, spec, args.parallel, threads)
    rows = study_table(plans)
    csv_path, _ = write_table(rows, args.output_dir)
    plots = plot_study(rows, args.output_dir)
    summarize(rows, args.output_dir)
    print(
        f"wrote {csv_path}, study.jsonl, crossings.json and {len(plots)} plots in {args.output_dir}"
    )
    if failed:
        print(f"error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
