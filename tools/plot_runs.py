"""Plot training and validation curves of several runs side by side (e.g. DLM vs AR).

    python tools/plot_runs.py runs/dlm runs/ar --output crossover.png
    python tools/plot_runs.py runs/dlm runs/ar --x epoch --metrics loss acc --output acc.png

Each RUN is a run directory holding ``metrics.jsonl`` (written by pretrain_dlm.py; the run
directory is --log-dir, else --save) or the JSONL file itself. One panel per metric and split
(train/valid), curves against consumed tokens (default), epochs or iterations.

--output must end in an image extension matplotlib writes (.png, .pdf, .svg, ...); the file is
written under a temporary name and renamed, so a failure leaves no partial image. Exit status:
0 written, 2 for bad input (a missing or corrupt metrics.jsonl, an output that cannot be
written), with one message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from megatron_dlm.data.paths import atomic_write, check_output_file

X_KEYS = {"tokens": "consumed_tokens", "epoch": "epoch", "iteration": "iteration"}


def read_metrics(path: Path) -> list[dict]:
    """Records of one run (a run directory or its metrics.jsonl)."""
    file = path / "metrics.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is it a pretrain_dlm.py run dir?)")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: cannot read it ({exc})") from exc
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{file}:{number}: not JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise ValueError(
                f'{file}:{number}: not a JSON object (a metrics record is {{"split": ...}})'
            )
        records.append(record)
    return records


def run_label(path: Path, records: list[dict]) -> str:
    config = (path / "config.json") if path.is_dir() else path.parent / "config.json"
    name = path.name if path.is_dir() else path.parent.name
    try:
        saved = json.loads(config.read_text()) if config.is_file() else {}
        objective = saved.get("objective", {}).get("objective")
    except (OSError, ValueError, AttributeError):  # an unreadable config only loses the label
        objective = None
    if objective and objective not in name:
        return f"{name} ({objective})"
    return name


def plot(runs: list[Path], output: Path, x: str = "tokens", metrics: list[str] | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(run_label(run, recs), recs) for run in runs for recs in [read_metrics(run)]]
    metrics = metrics or ["loss"]
    panels = [(split, metric) for metric in metrics for split in ("train", "valid")]
    panels = [
        (split, metric)
        for split, metric in panels
        if any(r.get("split") == split and metric in r for _, recs in data for r in recs)
    ]
    if not panels:
        raise ValueError(f"none of the metrics {metrics} appear in the runs")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    x_key = X_KEYS[x]
    for ax, (split, metric) in zip(axes[0], panels):
        for label, records in data:
            points = [
                (r[x_key], r[metric])
                for r in records
                if r.get("split") == split
                and isinstance(r.get(metric), (int, float))
                and r.get(x_key) is not None
            ]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if split == "valid" else None, ms=3, label=label)
        ax.set_title(f"{split} {metric}")
        ax.set_xlabel({"tokens": "consumed tokens", "epoch": "epoch", "iteration": "iteration"}[x])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    # Under a temporary name, then renamed: a full disk leaves no half-written image, and
    # the format is the one the name says.
    try:
        with atomic_write(output, "wb") as f:
            fig.savefig(f, dpi=120, format=image_format(output))
    finally:
        plt.close(fig)
    return output


def image_format(output: Path) -> str:
    """The image format ``output``'s extension names (``png``, ``pdf``, ``svg``, ...).

    Raises:
        ValueError: no extension, or one matplotlib cannot write.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = output.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise ValueError(
            f"--output {output}: give a file name with an image extension "
            f"({', '.join('.' + f for f in sorted(formats))})"
        )
    return suffix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or metrics.jsonl")
    parser.add_argument("--output", type=Path, default=Path("runs.png"), help="PNG to write")
    parser.add_argument("--x", choices=list(X_KEYS), default="tokens", help="x axis")
    parser.add_argument(
        "--metrics", nargs="+", default=None, help="metric keys (default: loss); e.g. masked_acc"
    )
    args = parser.parse_args(argv)
    try:
        image_format(args.output)  # before reading anything
        check_output_file(args.output, "--output")
        out = plot(args.runs, args.output, args.x, args.metrics)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    except OSError as exc:  # read-only, below a file, disk full: nothing is written
        if exc.errno is None:  # from check_output_file: names the flag already
            parser.error(str(exc))
        parser.error(f"--output {args.output}: cannot write it: {exc.strerror}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
