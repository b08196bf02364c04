"""The command lines' common mistakes, table-driven: each is one clear line naming the flag or
file, the documented non-zero exit status, no traceback, no partial output, nothing good
overwritten.

Every case runs the real CLI as a subprocess, as a user would. Most fail before any model is
built (a few seconds each: mostly the interpreter importing torch); the cases that need a
trained checkpoint or a full lm-eval start are marked slow. Faults are simulated without
privileges: a path below a regular file for "cannot be created", ``RLIMIT_FSIZE`` for a disk
that fills up mid-write (the write fails with EFBIG, as it would with ENOSPC), ``/dev/full``,
and a read-only folder (chmod) where the tests do not run as root (root ignores it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.modern import modern_flags

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
    "--seq-length", "64", "--max-position-embeddings", "64", "--micro-batch-size", "2",
    "--global-batch-size", "4", "--train-iters", "2", "--num-workers", "0", "--eval-iters", "1",
    "--transformer-impl", "local", "--log-interval", "10", *modern_flags(64),
]  # fmt: skip
AS_ROOT = os.geteuid() == 0


@dataclass
class Workspace:
    """Inputs good and bad, and a folder per case for outputs."""

    root: Path
    tokenizer: Path
    train: str
    valid: str

    def out(self, name: str) -> Path:
        return self.root / "out" / name

    def data(self) -> list[str]:
        return ["--tokenizer-model", str(self.tokenizer), "--train-data-path", self.train,
                "--valid-data-path", self.valid]  # fmt: skip

    @property
    def afile(self) -> Path:
        """An existing regular file (good content that must survive)."""
        return self.root / "afile"


def _copy_dataset(source: str, prefix: Path) -> str:
    for suffix in (".bin", ".idx", ".meta.json"):
        shutil.copyfile(source + suffix, str(prefix) + suffix)
    return str(prefix)


def _write_run(run: Path, lines: list[str]) -> Path:
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return run


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_data) -> Workspace:
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("cli_errors")
    w = Workspace(root, tiny_data.tokenizer, tiny_data.train, tiny_data.valid)
    (root / "out").mkdir()
    w.afile.write_text("precious\n")
    (root / "text.model").write_text("this is not a sentencepiece model\n")
    corrupt = root / "corrupt"
    corrupt.mkdir()
    trunc = _copy_dataset(tiny_data.valid, corrupt / "trunc_idx_text_document")
    os.truncate(trunc + ".idx", 300)
    badmeta = _copy_dataset(tiny_data.valid, corrupt / "badmeta_text_document")
    Path(badmeta + ".meta.json").write_text('{"format": "megatron-dlm-dataset", "vers')
    (root / "good.jsonl").write_text(
        "".join(
            json.dumps({"text": f"def f{i}(x):\n    return x * {i}\n"}) + "\n" for i in range(200)
        )  # fmt: skip
    )
    (root / "nonutf8.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    record = {"split": "train", "iteration": 1, "consumed_tokens": 256, "epoch": 0.1, "loss": 5}
    _write_run(root / "run_good", [json.dumps({**record, "iteration": i}) for i in (1, 2)])
    _write_run(root / "run_array", ["[1, 2]"])
    victim = root / "victim_hf"  # an export a tokenizer must not replace
    victim.mkdir()
    (victim / "model.safetensors").write_bytes(b"weights")
    (victim / "config.json").write_text("{}")
    run = root / "training_run"  # a run a HF import must not rewrite
    (run / "iter_0000300").mkdir(parents=True)
    (run / "latest_checkpointed_iteration.txt").write_text("300")
    for name in ("trunc_hf", "badjson_hf"):
        folder = root / name
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        save_file({"w": __import__("torch").zeros(1000)}, str(folder / "model.safetensors"))
    os.truncate(root / "trunc_hf" / "model.safetensors", 200)
    (root / "badjson_hf" / "megatron_dlm.json").write_text('{"megatron_config": {"mod')
    read_only = root / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    return w


@dataclass(frozen=True)
class Case:
    """One mistake: the command, what must be said, and what must be left alone."""

    id: str
    argv: Callable[[Workspace], list[str]]
    code: int
    message: str
    """Regex the one error line must match (it names the flag or the file)."""
    keep: Callable[[Workspace], list[Path]] = lambda w: []
    """Files or folders whose content must not change."""
    absent: Callable[[Workspace], list[Path]] = lambda w: []
    """Outputs that must not exist afterwards."""
    file_size_limit: int | None = None
    """RLIMIT_FSIZE for the command: a disk that fills up while it writes."""
    marks: tuple = field(default_factory=tuple)


def P(*args) -> list[str]:
    """``pretrain_dlm.py ARGS`` (a table abbreviation)."""
    return ["pretrain_dlm.py", *map(str, args)]


CASES = [
    # --- pretrain_dlm.py: flags no dataclass check caught before -------------------------
    Case("pretrain_query_groups_zero", lambda w: P(*TINY, *w.data(), "--num-query-groups", 0), 2,
         r"--num-query-groups must be >= 1"),
    Case("pretrain_vocab_divisor_zero",
         lambda w: P(*TINY, *w.data(), "--make-vocab-size-divisible-by", 0), 2,
         r"--make-vocab-size-divisible-by must be >= 1"),
    Case("pretrain_adam_beta", lambda w: P(*TINY, *w.data(), "--adam-beta1", 1.5), 2,
         r"--adam-beta1 must be in \[0, 1\), got 1.5"),
    Case("pretrain_lr_nan", lambda w: P(*TINY, *w.data(), "--lr", "nan"), 2,
         r"--lr must be a finite number, got nan"),
    Case("pretrain_train_iters_zero", lambda w: P(*TINY, *w.data(), "--train-iters", 0), 2,
         r"--train-iters must be >= 1"),
    Case("pretrain_seq_longer_than_positions", lambda w: P(*TINY, *w.data(), "--seq-length", 128),
         2, r"--max-position-embeddings \(64\) must be at least --seq-length \(128\)"),
    Case("dry_run_mfu_zero",
         lambda w: P("--config", REPO / "examples/recipes/dlm_1p7b_python.yaml", "--dry-run",
                     "--dry-run-world-size", 128, "--dry-run-mfu", 0), 2, r"--dry-run-mfu"),
    Case("dry_run_world_negative",
         lambda w: P("--config", REPO / "examples/recipes/dlm_1p7b_python.yaml", "--dry-run",
                     "--dry-run-world-size", -8), 2, r"--dry-run-world-size must be >= 1"),
    # --- pretrain_dlm.py: inputs checked before the process group -------------------------
    Case("pretrain_batch_not_divisible", lambda w: P(*TINY, *w.data(), "--micro-batch-size", 3),
         2, r"--global-batch-size \(4\) must be divisible by --micro-batch-size \(3\)"),
    Case("pretrain_tokenizer_missing",
         lambda w: P(*TINY, *w.data(), "--tokenizer-model", w.root / "nope.model"), 2,
         r"nope\.model.*--tokenizer-model.*does not exist"),
    Case("pretrain_tokenizer_not_a_model",
         lambda w: P(*TINY, *w.data(), "--tokenizer-model", w.root / "text.model"), 2,
         r"cannot load SentencePieceTokenizer from .*text\.model"),
    Case("pretrain_data_missing",
         lambda w: P(*TINY, *w.data(), "--train-data-path", w.root / "nope"), 2,
         r"--train-data-path .*nope: .*nope\.idx' does not exist"),
    Case("pretrain_idx_truncated",
         lambda w: P(*TINY, *w.data(), "--train-data-path",
                     w.root / "corrupt/trunc_idx_text_document"), 2,
         r"--train-data-path .*trunc_idx_text_document.*truncated"),
    Case("pretrain_meta_corrupt",
         lambda w: P(*TINY, *w.data(), "--train-data-path",
                     w.root / "corrupt/badmeta_text_document"), 2,
         r"badmeta_text_document\.meta\.json"),
    Case("pretrain_unique_tokens_too_many",
         lambda w: P(*TINY, *w.data(), "--unique-tokens", 10**12), 2,
         r"--unique-tokens 1,000,000,000,000 is larger than"),
    Case("pretrain_save_is_a_file", lambda w: P(*TINY, *w.data(), "--save", w.afile), 2,
         r"--save .*afile: exists and is not a directory", keep=lambda w: [w.afile]),
    Case("pretrain_save_below_a_file",
         lambda w: P(*TINY, *w.data(), "--save", w.afile / "run"), 2,
         r"--save .*afile/run: cannot be created, .*afile is a file",
         keep=lambda w: [w.afile]),
    Case("pretrain_save_read_only",
         lambda w: P(*TINY, *w.data(), "--save", w.root / "read_only/run"), 2,
         r"--save .*read_only/run: cannot write there",
         marks=(pytest.mark.skipif(AS_ROOT, reason="root writes into a read-only folder"),)),
    Case("pretrain_load_missing",
         lambda w: P(*TINY, *w.data(), "--save", w.out("load_missing"), "--load", w.root / "nope"),
         2, r"--load .*nope: no checkpoint there", absent=lambda w: [w.out("load_missing")]),
    Case("pretrain_diverges",
         lambda w: P(*TINY, *w.data(), "--train-iters", 4, "--lr", "1e30",
                     "--max-skipped-iters", 1, "--save", w.out("diverges")), 1,
         r"consecutive steps had NaN/Inf .*No checkpoint was saved",
         marks=(pytest.mark.slow,)),
    # --- tools/preprocess_data.py -----------------------------------------------------------
    Case("preprocess_output_below_a_file",
         lambda w: ["tools/preprocess_data.py", "--tokenizer-model", str(w.tokenizer),
                    "--workers", "1", "--input", str(w.root / "good.jsonl"),
                    "--output-prefix", str(w.afile / "x")], 1,
         r"--output-prefix .*afile/x: .*afile exists and is not a directory",
         keep=lambda w: [w.afile]),
    Case("preprocess_disk_full",
         lambda w: ["tools/preprocess_data.py", "--tokenizer-model", str(w.tokenizer),
                    "--workers", "1", "--input", str(w.root / "good.jsonl"),
                    "--output-prefix", str(w.out("pp_full") / "good")], 1,
         r"--output-prefix .*pp_full/good: cannot write.*File too large; no output written",
         keep=lambda w: [w.out("pp_full")], file_size_limit=2048),
    Case("preprocess_output_read_only",
         lambda w: ["tools/preprocess_data.py", "--tokenizer-model", str(w.tokenizer),
                    "--workers", "1", "--input", str(w.root / "good.jsonl"),
                    "--output-prefix", str(w.root / "read_only/x")], 1,
         r"--output-prefix .*read_only/x: cannot write",
         marks=(pytest.mark.skipif(AS_ROOT, reason="root writes into a read-only folder"),)),
    Case("preprocess_not_utf8",
         lambda w: ["tools/preprocess_data.py", "--tokenizer-model", str(w.tokenizer),
                    "--workers", "1", "--input", str(w.root / "nonutf8.jsonl"),
                    "--output-prefix", str(w.out("pp_nonutf8") / "x")], 1,
         r"nonutf8\.jsonl:\d+: cannot read"),
    # --- tools/train_tokenizer.py -----------------------------------------------------------
    Case("tokenizer_hf_output_not_empty",
         lambda w: ["tools/train_tokenizer.py", "--threads", "1", "--input-dir",
                    str(REPO / "megatron_dlm/config"), "--vocab-size", "300",
                    "--output-prefix", str(w.out("tt_victim") / "tok"),
                    "--hf-output", str(w.root / "victim_hf")], 2,
         r"--hf-output .*victim_hf already exists and is not empty.*--overwrite",
         keep=lambda w: [w.root / "victim_hf"], absent=lambda w: [w.out("tt_victim")]),
    Case("tokenizer_hf_output_is_a_file",
         lambda w: ["tools/train_tokenizer.py", "--threads", "1", "--input-dir",
                    str(REPO / "megatron_dlm/config"), "--vocab-size", "300",
                    "--output-prefix", str(w.out("tt_file") / "tok"), "--hf-output", str(w.afile)],
         2, r"--hf-output .*afile is a file", keep=lambda w: [w.afile],
         absent=lambda w: [w.out("tt_file")]),
    Case("tokenizer_output_below_a_file",
         lambda w: ["tools/train_tokenizer.py", "--threads", "1", "--input-dir",
                    str(REPO / "megatron_dlm/config"), "--vocab-size", "300",
                    "--output-prefix", str(w.afile / "tok")], 2,
         r"--output-prefix .*afile/tok\.model: cannot be created", keep=lambda w: [w.afile]),
    Case("tokenizer_not_utf8",
         lambda w: ["tools/train_tokenizer.py", "--threads", "1",
                    "--input", str(w.root / "nonutf8.jsonl"), "--vocab-size", "300",
                    "--output-prefix", str(w.out("tt_nonutf8") / "tok")], 1,
         r"nonutf8\.jsonl:2: not UTF-8", absent=lambda w: [w.out("tt_nonutf8")]),
    # --- tools/generate.py (checked before the model loads) ---------------------------------
    Case("generate_output_below_a_file",
         lambda w: ["tools/generate.py", "--load", str(w.root / "nope"), "--prompt", "x",
                    "--output", str(w.afile / "out.jsonl")], 2,
         r"--output .*afile/out\.jsonl: cannot be created", keep=lambda w: [w.afile]),
    Case("generate_output_is_a_folder",
         lambda w: ["tools/generate.py", "--load", str(w.root / "nope"), "--prompt", "x",
                    "--output", str(w.root / "corrupt")], 2,
         r"--output .*corrupt: is a directory"),
    # --- tools/plot_runs.py -----------------------------------------------------------------
    Case("plot_output_without_extension",
         lambda w: ["tools/plot_runs.py", str(w.root / "run_good"), "--output", "/dev/full"], 2,
         r"--output /dev/full: give a file name with an image extension",
         absent=lambda w: [Path("/dev/full.png")]),
    Case("plot_metrics_line_not_an_object",
         lambda w: ["tools/plot_runs.py", str(w.root / "run_array"),
                    "--output", str(w.out("plot_arr.png"))], 2,
         r"run_array/metrics\.jsonl:1: not a JSON object",
         absent=lambda w: [w.out("plot_arr.png")]),
    Case("plot_output_below_a_file",
         lambda w: ["tools/plot_runs.py", str(w.root / "run_good"),
                    "--output", str(w.afile / "x.png")], 2,
         r"--output .*afile/x\.png: cannot be created", keep=lambda w: [w.afile]),
    Case("plot_disk_full_keeps_the_old_plot",
         lambda w: ["tools/plot_runs.py", str(w.root / "run_good"),
                    "--output", str(w.afile.with_name("old.png"))], 2,
         r"--output .*old\.png: cannot write it: File too large",
         keep=lambda w: [w.afile.with_name("old.png")], file_size_limit=4096),
    # --- tools/dataset_info.py --------------------------------------------------------------
    Case("dataset_info_meta_corrupt",
         lambda w: ["tools/dataset_info.py", str(w.root / "corrupt/badmeta_text_document")], 1,
         r"cannot read dataset metadata .*badmeta_text_document\.meta\.json"),
    # --- tools/evaluate.py ------------------------------------------------------------------
    Case("evaluate_load_missing",
         lambda w: ["tools/evaluate.py", "--load", str(w.root / "nope"), "--convert-to",
                    str(w.out("ev_hf")), "--tasks", "python_nextline_mc"], 2,
         r"--load .*nope: no such directory", absent=lambda w: [w.out("ev_hf")]),
    Case("evaluate_convert_without_load",
         lambda w: ["tools/evaluate.py", "--convert-to", str(w.out("ev_hf2")), "--tasks",
                    "python_nextline_mc"], 2, r"--convert-to needs --load"),
    Case("evaluate_model_missing",
         lambda w: ["tools/evaluate.py", "--model", "megatron_dlm", "--model_args",
                    f"pretrained={w.root / 'nope'}", "--tasks", "python_nextline_mc"], 2,
         r"--model_args pretrained=.*nope: no such directory", marks=(pytest.mark.slow,)),
    Case("evaluate_model_args_not_a_number",
         lambda w: ["tools/evaluate.py", "--model", "megatron_dlm", "--model_args",
                    f"pretrained={w.root},mc_num=abc", "--tasks", "python_nextline_mc"], 2,
         r"--model_args mc_num=abc: expected an integer", marks=(pytest.mark.slow,)),
    # --- tools/convert_to_hf.py -------------------------------------------------------------
    Case("convert_shard_size_garbage",
         lambda w: ["tools/convert_to_hf.py", "--load", str(w.root / "nope"), "--output",
                    str(w.out("cth")), "--max-shard-size", "banana"], 2,
         r"--max-shard-size: expected a size such as 5GB", absent=lambda w: [w.out("cth")]),
    Case("convert_output_below_a_file",
         lambda w: ["tools/convert_to_hf.py", "--load", str(w.root / "nope"), "--output",
                    str(w.afile / "hf")], 2, r"--output .*afile/hf: cannot be created",
         keep=lambda w: [w.afile]),
    # --- tools/convert_hf_to_megatron.py ----------------------------------------------------
    Case("import_negative_iteration",
         lambda w: ["tools/convert_hf_to_megatron.py", "--hf", str(w.root / "victim_hf"),
                    "--save", str(w.out("h2m_neg")), "--iteration", "-5"], 2,
         r"--iteration must be >= 0, got -5", absent=lambda w: [w.out("h2m_neg")]),
    Case("import_into_a_training_run",
         lambda w: ["tools/convert_hf_to_megatron.py", "--hf", str(w.root / "victim_hf"),
                    "--save", str(w.root / "training_run")], 2,
         r"--save .*training_run already holds checkpoints .*--overwrite",
         keep=lambda w: [w.root / "training_run"]),
    Case("import_truncated_safetensors",
         lambda w: ["tools/convert_hf_to_megatron.py", "--hf", str(w.root / "trunc_hf"),
                    "--save", str(w.out("h2m_trunc"))], 2,
         r"trunc_hf/model\.safetensors: not a complete safetensors file",
         absent=lambda w: [w.out("h2m_trunc")]),
    Case("import_provenance_not_json",
         lambda w: ["tools/convert_hf_to_megatron.py", "--hf", str(w.root / "badjson_hf"),
                    "--save", str(w.out("h2m_json"))], 2,
         r"badjson_hf/megatron_dlm\.json: not valid JSON", absent=lambda w: [w.out("h2m_json")]),
]  # fmt: skip


def fingerprint(path: Path) -> dict[str, str]:
    """Content hash of a file, or of every file under a folder (relative path -> sha256)."""
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(path.rglob("*"))
    }


def run_cli(argv: list[str], file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit_file_size():  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write then fails with EFBIG

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        preexec_fn=limit_file_size if file_size_limit else None,
    )  # fmt: skip


def assert_one_clear_error(proc: subprocess.CompletedProcess, code: int, message: str) -> None:
    where = f"exit {proc.returncode}\n--- stderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == code, where
    assert "Traceback" not in proc.stderr, where
    errors = [m.group(0) for m in re.finditer(r"^(?:[\w.]+: )?error: .*$", proc.stderr, re.M)]
    assert len(errors) == 1, where
    assert re.search(message, errors[0]), f"{errors[0]!r} does not match {message!r}"


# The default suite runs one or two cases per tool and kind of mistake; the rest (each a few
# seconds of imports, mostly megatron-core's) run with the slow tests. The config checks behind
# the slow pretrain cases are also unit-tested in tests/config.
DEFAULT_SUITE = {
    "pretrain_adam_beta", "pretrain_seq_longer_than_positions", "dry_run_mfu_zero",
    "pretrain_batch_not_divisible", "pretrain_data_missing", "pretrain_save_below_a_file",
    "preprocess_output_below_a_file", "preprocess_disk_full", "preprocess_not_utf8",
    "tokenizer_hf_output_not_empty", "tokenizer_hf_output_is_a_file",
    "tokenizer_output_below_a_file", "tokenizer_not_utf8", "generate_output_below_a_file",
    "plot_output_without_extension", "plot_metrics_line_not_an_object",
    "plot_disk_full_keeps_the_old_plot", "dataset_info_meta_corrupt", "evaluate_load_missing",
    "evaluate_convert_without_load", "convert_shard_size_garbage", "import_negative_iteration",
    "import_into_a_training_run", "import_truncated_safetensors",
}  # fmt: skip


def _param(case: Case):
    slow = () if case.id in DEFAULT_SUITE else (pytest.mark.slow,)
    return pytest.param(case, id=case.id, marks=(*case.marks, *slow))


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_mistake_is_one_clear_error_and_loses_nothing(ws, case):
    if case.id == "plot_disk_full_keeps_the_old_plot":
        ws.afile.with_name("old.png").write_bytes(b"\x89PNG an earlier plot")
    if case.id == "preprocess_disk_full":  # an earlier dataset at that prefix
        ws.out("pp_full").mkdir(exist_ok=True)
        _copy_dataset(ws.valid, ws.out("pp_full") / "good_text_document")
    kept = {p: fingerprint(p) for p in case.keep(ws)}
    proc = run_cli(case.argv(ws), case.file_size_limit)
    assert_one_clear_error(proc, case.code, case.message)
    for path, before in kept.items():
        assert path.exists() and fingerprint(path) == before, f"{path} changed"
    for path in case.absent(ws):
        assert not path.exists(), f"{path} was written"
    partial = [p for p in ws.root.rglob("*") if ".partial" in p.name]
    assert not partial, f"partial output left: {partial}"


# --- what the table cannot say ----------------------------------------------------------------


def test_preprocess_removes_partial_files_of_a_killed_run_only(ws):
    out = ws.out("pp_stale")
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its PID names a process that is gone
    host = os.uname().nodename
    stale = [out / f"x_text_document.partial-{dead.pid}@{host}{s}" for s in (".bin", ".idx")]
    live = out / f"x_text_document.partial-{os.getpid()}@{host}.bin"  # this test: alive
    other_host = out / f"x_text_document.partial-{dead.pid}@elsewhere.bin"
    for path in [*stale, live, other_host]:
        path.write_bytes(b"partial")
    proc = run_cli(["tools/preprocess_data.py", "--tokenizer-model", str(ws.tokenizer),
                    "--workers", "1", "--input", str(ws.root / "good.jsonl"),
                    "--output-prefix", str(out / "x")])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "removed 2 partial file(s)" in proc.stderr and "left by a run that was killed" in (
        proc.stderr
    )
    assert not any(p.exists() for p in stale)
    assert live.exists() and other_host.exists()  # a writer that may still run: left alone
    assert "may still be writing it are left alone" in proc.stderr
    assert (out / "x_text_document.bin").is_file()
    for path in (live, other_host):
        path.unlink()


def test_hf_output_overwrite_replaces_only_the_tokenizer_files(ws, tmp_path):
    target = tmp_path / "export"
    shutil.copytree(ws.root / "victim_hf", target)
    (target / "tokenizer.json").write_text("old")
    proc = run_cli(["tools/train_tokenizer.py", "--threads", "1", "--input-dir",
                    str(REPO / "megatron_dlm/config"), "--vocab-size", "500",
                    "--output-prefix", str(tmp_path / "tok"), "--hf-output", str(target),
                    "--overwrite"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (target / "model.safetensors").read_bytes() == b"weights"  # not the tool's file
    assert (target / "config.json").read_text() == "{}"
    assert json.loads((target / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    assert sorted(p.name for p in target.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "pretrain_dlm.py", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def _worker_output(stderr: str) -> str:
    """stderr without torchrun's own failure report (its traceback and summary)."""
    return re.split(r"^E\d{4} .*failed \(exitcode", stderr, maxsplit=1, flags=re.M)[0]


def test_torchrun_missing_data_is_one_message(ws):
    proc = _torchrun(*TINY, *ws.data(), "--train-data-path", str(ws.root / "nope"),
                     "--save", str(ws.out("tr_missing")))  # fmt: skip
    assert proc.returncode != 0
    messages = re.findall(r"^pretrain_dlm\.py: error: .*$", proc.stderr, re.M)
    assert len(messages) == 1, proc.stderr[-3000:]
    assert "--train-data-path" in messages[0] and "nope.idx" in messages[0]
    assert "Traceback" not in _worker_output(proc.stderr), proc.stderr[-3000:]
    # torchrun reports each rank's status: ours exit 2 (or are stopped by torchrun once the
    # first has), never with another error.
    codes = re.findall(r"exitcode\s*: (-?\d+)", proc.stderr)
    assert codes and set(codes) <= {"2", "-15"}, proc.stderr[-3000:]
    assert not ws.out("tr_missing").exists()


@pytest.mark.parametrize(
    "layout, blocker",
    [
        # Only rank 0 writes config.json; only the last pipeline stage (rank 1) metrics.jsonl.
        pytest.param([], "config.json", id="rank0-only", marks=pytest.mark.slow),
        pytest.param(["--pipeline-model-parallel-size", "2"], "metrics.jsonl", id="rank1-only"),
    ],
)
def test_torchrun_error_on_one_rank_is_reported_once_and_ends_the_job(ws, layout, blocker):
    save = ws.out(f"tr_{blocker}")
    (save / blocker).mkdir(parents=True)  # a folder where that rank writes a file
    proc = _torchrun(*TINY, *ws.data(), *layout, "--save", str(save))
    assert proc.returncode != 0
    messages = re.findall(r"^pretrain_dlm\.py: error: .*$", proc.stderr, re.M)
    assert len(messages) == 1, proc.stderr[-3000:]
    assert blocker in messages[0] and "Is a directory" in messages[0]
    assert "Traceback" not in _worker_output(proc.stderr), proc.stderr[-3000:]
    codes = re.findall(r"exitcode\s*: (-?\d+)", proc.stderr)
    assert "2" in codes and set(codes) <= {"2", "-15"}, proc.stderr[-3000:]


# --- cases that need a trained checkpoint (slow: training and loading take a while) ----------


@pytest.fixture(scope="module")
def checkpoint(ws) -> Path:
    save = ws.root / "ckpt"
    proc = run_cli(P(*TINY, *ws.data(), "--train-iters", 1, "--save", save))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return save


@pytest.mark.slow
def test_generate_prompt_too_long_keeps_the_previous_output(ws, checkpoint):
    out = ws.out("previous.jsonl")
    out.write_text('{"text": "an earlier sample"}\n')
    proc = run_cli(["tools/generate.py", "--load", str(checkpoint), "--prompt", "x = 1\n" * 60,
                    "--gen-length", "16", "--block-length", "16", "--steps", "4",
                    "--output", str(out)])  # fmt: skip
    assert_one_clear_error(proc, 2, r"prompt 0 has \d+ tokens.*maximum sequence length 64")
    assert out.read_text() == '{"text": "an earlier sample"}\n'
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]


@pytest.mark.slow
def test_convert_to_hf_on_a_full_disk_leaves_nothing(ws, checkpoint):
    out = ws.out("hf_full")
    proc = run_cli(["tools/convert_to_hf.py", "--load", str(checkpoint), "--output", str(out)],
                   file_size_limit=64 << 10)  # fmt: skip
    assert_one_clear_error(proc, 2, r"--output .*hf_full: cannot write the export: .*nothing")
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".hf_full")]


@pytest.mark.slow
def test_evaluate_unknown_task(ws, checkpoint):
    proc = run_cli(["tools/evaluate.py", "--load", str(checkpoint), "--tasks", "no_such_task",
                    "--limit", "1"])  # fmt: skip
    assert_one_clear_error(proc, 2, r"Tasks not found: no_such_task")
