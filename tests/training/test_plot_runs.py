"""tools/plot_runs.py draws several runs' curves side by side from their metrics.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run_dir(root: Path, name: str, objective: str, losses: list[float]) -> Path:
    run = root / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"objective": {"objective": objective}}))
    records = [
        {"split": "train", "iteration": i + 1, "consumed_tokens": (i + 1) * 1024,
         "epoch": (i + 1) / 4, "loss": loss}
        for i, loss in enumerate(losses)
    ] + [{"split": "valid", "iteration": len(losses), "consumed_tokens": len(losses) * 1024,
          "epoch": len(losses) / 4, "loss": losses[-1] + 0.1, "masked_accuracy": 0.3}]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_plot_runs_writes_a_png(tmp_path):
    dlm = _run_dir(tmp_path, "dlm", "dlm", [5.0, 4.0, 3.5, 3.2])
    ar = _run_dir(tmp_path, "ar", "ar", [4.5, 3.5, 3.3, 3.4])
    out = tmp_path / "plots" / "crossover.png"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "plot_runs.py"), str(dlm), str(ar),
         "--x", "epoch", "--metrics", "loss", "masked_accuracy", "--output", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_runs_names_a_directory_without_metrics(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "plot_runs.py"), str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "no metrics.jsonl" in proc.stderr
