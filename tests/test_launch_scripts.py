"""The Megatron-style launch scripts in examples/: dry runs, launch lines, recipes, SLURM.

Each script is run as a user runs it (bash, environment variables, positional paths). Where a
test needs to see what a script launches, ``torchrun``, ``srun``, ``scontrol`` or ``$PYTHON`` is
a stand-in on ``PATH`` that records its arguments and environment instead of training.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_dlm.config.cli import parse_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# script -> (its YAML recipe, the world size it targets by default)
SCRIPTS = {
    "dlm_1.7b_python.sh": ("dlm_1p7b_python.yaml", 64),
    "ar_1.7b_python.sh": ("dlm_1p7b_python.yaml", 64),
    "dlm_1b.sh": ("dlm_1b.yaml", 32),
    "moe_dlm_8b_a1b.sh": ("moe_dlm_8b_a1b.yaml", 64),
}
SHELL_FILES = sorted(
    [*EXAMPLES.glob("*.sh"), *EXAMPLES.glob("slurm/*"), *(REPO / "tools").glob("*.sh")]
)
PATHS = ["/ckpt/run", "/data/tokenizer.json", "/data/train_text_document"]

RECORDER = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["RECORD_FILE"], "a") as f:
    f.write(json.dumps({{"cmd": name, "argv": sys.argv[1:], "env": dict(os.environ)}}) + "\\n")
if name == "scontrol":
    print("node-a\\nnode-b")
if name == "srun":  # run the task the way srun would, as SLURM task 3 of 16
    env = dict(os.environ, SLURM_PROCID="3", SLURM_NTASKS="16", SLURM_LOCALID="3")
    task = [a for a in sys.argv[1:] if not a.startswith("-")][:1]
    task = sys.argv[sys.argv.index(task[0]):]
    os.execvpe(task[0], task, env)
"""


@pytest.fixture
def stand_ins(tmp_path):
    """A bin directory whose torchrun/srun/scontrol/python record their calls; returns a runner."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("torchrun", "srun", "scontrol", "recording-python"):
        path = bin_dir / name
        path.write_text(RECORDER.format(python=sys.executable))
        path.chmod(0o755)
    record = tmp_path / "calls.jsonl"

    def run(script: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list]:
        record.unlink(missing_ok=True)
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "RECORD_FILE": str(record),
            "PYTHON": str(bin_dir / "recording-python"),
            **env,
        }
        proc = subprocess.run(
            ["bash", str(script), *args],
            cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        calls = (
            [json.loads(line) for line in record.read_text().splitlines()]
            if record.exists()
            else []
        )
        return proc, calls

    return run


def _dry_run_argv(stand_ins, script: str, *args: str, **env: str) -> list[str]:
    proc, calls = stand_ins(EXAMPLES / script, *args, DRY_RUN="1", **env)
    assert proc.returncode == 0, proc.stderr
    (call,) = calls
    assert call["argv"][0].endswith("pretrain_dlm.py")
    assert call["env"]["CUDA_VISIBLE_DEVICES"] == ""  # the dry run stays on the CPU
    return call["argv"][1:]


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_passes_on_cpu_for_the_target_world_size(script):
    env = dict(os.environ, PYTHON=sys.executable, DRY_RUN="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        ["bash", str(EXAMPLES / script)], env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    world = SCRIPTS[script][1]
    out = proc.stdout
    assert f"layout           : world {world} = TP 1 x PP 1 x CP 1 x DP {world}" in out
    for line in ("memory / device", "FLOPs / step", "epochs", "projected time"):
        assert line in out, out


def test_dry_run_reports_the_layout_for_another_size(stand_ins):
    argv = _dry_run_argv(stand_ins, "dlm_1.7b_python.sh", NNODES="2", GPUS_PER_NODE="4")
    assert argv[argv.index("--dry-run-world-size") + 1] == "8"


@pytest.mark.parametrize("script", SCRIPTS)
def test_torchrun_launch_is_the_dry_run_plus_paths(stand_ins, script):
    dry = _dry_run_argv(stand_ins, script, NNODES="2")  # the launch's node count
    proc, calls = stand_ins(
        EXAMPLES / script, *PATHS, "/data/valid_text_document", "--log-interval", "7",
        NNODES="2", NODE_RANK="1", MASTER_ADDR="node-a", MASTER_PORT="1234",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (call,) = calls
    assert call["cmd"] == "torchrun" and call["env"]["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    argv = call["argv"]
    assert argv[:10] == [
        "--nproc-per-node", "8", "--nnodes", "2", "--node-rank", "1",
        "--master-addr", "node-a", "--master-port", "1234",
    ]  # fmt: skip
    assert argv[10].endswith("pretrain_dlm.py")
    launched = argv[11:]
    # The same flags as the dry run, with the paths and the user's extra flags added.
    paths = [
        "--tokenizer-model", "/data/tokenizer.json",
        "--train-data-path", "/data/train_text_document",
        "--valid-data-path", "/data/valid_text_document",
        "--save", "/ckpt/run", "--load", "/ckpt/run",
    ]  # fmt: skip
    at = dry.index("--dry-run")  # the dry run's own flags, removed by position
    assert dry[at : at + 5] == ["--dry-run", "--dry-run-world-size", "16",
                                "--dry-run-vocab-size", "50289"]  # fmt: skip
    assert launched[-2:] == ["--log-interval", "7"]
    expected = dry[:at] + dry[at + 5 :]
    got = list(launched[:-2])
    for i in range(0, len(paths), 2):  # remove each path flag with its value
        at = got.index(paths[i])
        assert got[at + 1] == paths[i + 1]
        del got[at : at + 2]
    assert got == expected


def test_one_data_prefix_uses_the_split(stand_ins):
    proc, calls = stand_ins(EXAMPLES / "dlm_1b.sh", *PATHS)
    assert proc.returncode == 0, proc.stderr
    argv = calls[0]["argv"]
    assert argv[argv.index("--data-path") + 1] == "/data/train_text_document"
    assert "--train-data-path" not in argv and argv[argv.index("--split") + 1] == "995,5,0"


def test_dry_run_uses_the_tokenizer_when_it_exists(stand_ins, tmp_path):
    tokenizer = tmp_path / "tokenizer.json"
    missing = _dry_run_argv(stand_ins, "dlm_1b.sh", "/ckpt", str(tokenizer))
    assert "--tokenizer-model" not in missing  # sized with --dry-run-vocab-size instead
    tokenizer.write_text("{}")
    present = _dry_run_argv(stand_ins, "dlm_1b.sh", "/ckpt", str(tokenizer))
    assert present[present.index("--tokenizer-model") + 1] == str(tokenizer)


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_paths_are_a_usage_error(stand_ins, script):
    proc, calls = stand_ins(EXAMPLES / script, "/ckpt/run")
    assert proc.returncode == 2 and "usage:" in proc.stderr and "DRY_RUN=1" in proc.stderr
    assert calls == []  # nothing was launched


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_equals_its_yaml_recipe(stand_ins, script):
    recipe, _ = SCRIPTS[script]
    from_script = parse_config(_dry_run_argv(stand_ins, script))
    from_yaml = parse_config(["--config", str(EXAMPLES / "recipes" / recipe), "--dry-run"])
    if script.startswith("ar_"):
        # The AR script passes --objective ar and none of the (inert) --dlm-* settings.
        assert from_script.objective.objective == "ar"
        from_script.objective = from_yaml.objective
    assert from_script == from_yaml


def test_dlm_and_ar_scripts_differ_only_in_the_objective(stand_ins):
    dlm = parse_config(_dry_run_argv(stand_ins, "dlm_1.7b_python.sh"))
    ar = parse_config(_dry_run_argv(stand_ins, "ar_1.7b_python.sh"))
    assert (dlm.objective.objective, ar.objective.objective) == ("dlm", "ar")
    dlm_dict, ar_dict = dlm.to_dict(), ar.to_dict()
    differing = {s for s in dlm_dict if dlm_dict[s] != ar_dict[s]}
    assert differing == {"objective"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_slurm_variant_launches_one_task_per_gpu(stand_ins, script):
    sbatch = EXAMPLES / "slurm" / script.replace(".sh", ".sbatch")
    nodes = SCRIPTS[script][1] // 8
    assert f"#SBATCH --nodes={nodes}\n" in sbatch.read_text()
    # DRY_RUN sizes the job the sbatch file asks for, without SLURM.
    assert _dry_run_argv(stand_ins, str(sbatch)) == _dry_run_argv(stand_ins, script)
    slurm = dict(SLURM_JOB_ID="42", SLURM_JOB_NODELIST="node-[a-b]", SLURM_NNODES=str(nodes),
                 SLURM_NTASKS_PER_NODE="8", SLURM_CPUS_PER_TASK="12",
                 SLURM_SUBMIT_DIR=str(REPO))  # fmt: skip
    proc, calls = stand_ins(sbatch, *PATHS, **slurm)
    assert proc.returncode == 0, proc.stderr
    assert [c["cmd"] for c in calls] == ["scontrol", "srun", "recording-python"]
    task = calls[2]
    assert {k: task["env"][k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")} == {
        "RANK": "3", "WORLD_SIZE": "16", "LOCAL_RANK": "3", "MASTER_ADDR": "node-a",
    }  # fmt: skip
    assert task["env"]["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    assert task["argv"][0].endswith("pretrain_dlm.py") and "--dry-run" not in task["argv"]


def test_slurm_helper_outside_a_job_is_a_clear_error(stand_ins):
    proc, calls = stand_ins(EXAMPLES / "slurm" / "dlm_1b.sbatch", *PATHS)
    assert proc.returncode == 2 and "not inside a SLURM job" in proc.stderr and calls == []


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_shell_syntax(path):
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean():
    proc = subprocess.run(
        ["shellcheck", "--severity=info", *map(str, SHELL_FILES)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout


def test_generic_yaml_launchers_dry_run(stand_ins):
    recipe = str(EXAMPLES / "recipes" / "dlm_1b.yaml")
    for script, env in (
        ("train_multinode.sh", dict(NNODES="4")),
        ("slurm/train.sbatch", dict(NODES="4")),
    ):
        argv = _dry_run_argv(stand_ins, script, recipe, "--seed", "7", **env)
        assert argv[:2] == ["--config", recipe] and argv[-2:] == ["--seed", "7"]
        assert argv[argv.index("--dry-run-world-size") + 1] == "32"
