"""Summarise a tools/gpu_check.sh run: gpu_check_results.{json,txt} in its results folder.

    python tools/gpu_check_summary.py RESULTS_DIR --tests-rc 0 --bench-rc 0 --seconds 312

Reads RESULTS_DIR/tests_gpu.xml (pytest's JUnit report) and RESULTS_DIR/bench.json
(bench/gpu_throughput.py --output); either may be missing (a step that timed out or crashed),
which the summary says. Exit status 0 only if the tests passed (at least one ran) and the
bench finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# pytest's exit statuses (pytest.ExitCode), the bench's, and timeout(1)'s.
TESTS_EXIT = {0: "passed", 1: "tests failed", 2: "interrupted", 3: "internal error",
              4: "usage error", 5: "no tests collected"}  # fmt: skip
BENCH_EXIT = {0: "finished", 1: "failed", 2: "could not run (no CUDA GPU, or a bad flag)"}
TIMEOUT_EXIT = {124: "timed out", 137: "killed after its time limit"}


def status(rc: int, meanings: dict[int, str]) -> str:
    return {**meanings, **TIMEOUT_EXIT}.get(rc, f"exit status {rc}")


def read_tests(path: Path) -> dict:
    """Counts and failures from a JUnit XML report (None where the file is missing)."""
    if not path.is_file():
        return {"report": None}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"report": f"unreadable: {exc}"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    failed, skipped = [], []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                failed.append({"test": name, "message": (node.get("message") or "")[:400]})
        node = case.find("skipped")
        if node is not None:
            skipped.append({"test": name, "reason": (node.get("message") or "")[:200]})
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"report": path.name, **counts, "failed": failed, "skipped_tests": skipped}


def read_bench(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def format_summary(summary: dict) -> str:
    bench, tests = summary["bench"], summary["tests"]
    lines = [
        "Megatron-DLM GPU check",
        f"  gpu          : {bench['gpu'] if bench else 'unknown (the bench did not finish)'}",
        f"  versions     : {bench['versions'] if bench else '-'}",
        f"  wall time    : {summary['seconds']} s",
        f"  tests/gpu    : {summary['tests_status']}",
    ]
    if tests.get("report"):
        lines.append(
            f"                 {tests['passed']} passed, {tests['failures']} failed, "
            f"{tests['errors']} errors, {tests['skipped']} skipped"
        )
        lines += [f"    FAILED {f['test']}: {f['message']}" for f in tests["failed"]]
        lines += [f"    skipped {s['test']}: {s['reason']}" for s in tests["skipped_tests"]]
    lines.append(f"  bench        : {summary['bench_status']}")
    if bench and bench.get("layers") != "transformer_engine":
        lines.append("  warning      : Transformer Engine is missing: local layers, no FP8")
    if bench:
        lines.append(
            f"  {'variant':>9} {'layers':>6} {'mbs':>4} {'tokens/s/GPU':>13} "
            f"{'TFLOP/s/GPU':>12} {'MFU':>6}"
        )
        for name, r in bench["variants"].items():
            if "skipped" in r:
                lines.append(f"  {name:>9} skipped: {r['skipped']}")
                continue
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
            lines.append(
                f"  {name:>9} {r['num_layers']:>6} {r['micro_batch_size']:>4} "
                f"{r['tokens_per_s_per_gpu']:>13,.0f} {r['tflops_per_gpu']:>12.1f} {mfu:>6}"
            )
        lines += [f"  ratio {k} = {v:.3f}" for k, v in bench["ratios"].items()]
    lines.append(f"  verdict      : {'READY' if summary['ok'] else 'NOT READY'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--tests-rc", type=int, required=True)
    parser.add_argument("--bench-rc", type=int, required=True)
    parser.add_argument("--seconds", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        parser.error(f"{args.results_dir} is not a directory")
    tests = read_tests(args.results_dir / "tests_gpu.xml")
    bench = read_bench(args.results_dir / "bench.json") if args.bench_rc == 0 else None
    summary = {
        # Ready: the tests passed (some ran: all skipped is no evidence) and the bench finished.
        "ok": args.tests_rc == 0 and tests.get("passed", 0) > 0 and bench is not None,
        "seconds": args.seconds,
        "tests_status": status(args.tests_rc, TESTS_EXIT),
        "bench_status": status(args.bench_rc, BENCH_EXIT) if bench is not None or args.bench_rc
        else "finished without bench.json",
        "tests": tests,
        "bench": bench,
    }  # fmt: skip
    (args.results_dir / "gpu_check_results.json").write_text(json.dumps(summary, indent=2))
    text = format_summary(summary)
    (args.results_dir / "gpu_check_results.txt").write_text(text + "\n")
    print(text)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
