#!/usr/bin/env bash
# Runs a launch script (examples/*.sh) under srun, one task per GPU; examples/slurm/*.sbatch
# call it. No torchrun: SLURM's --signal reaches every rank directly, so a preempted job saves a
# checkpoint on each rank (SIGUSR1 or SIGTERM) and the requeued job resumes from --save.
#
#   srun_recipe.sh NODES SCRIPT [the script's arguments...]
#
# Under DRY_RUN=1 it runs the script's dry run for NODES x 8 GPUs on this machine, no SLURM.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NODES=${1:?usage: srun_recipe.sh NODES SCRIPT [arguments...]}
SCRIPT=${2:?usage: srun_recipe.sh NODES SCRIPT [arguments...]}
shift 2
NNODES=${SLURM_NNODES:-$NODES}
GPUS_PER_NODE=${SLURM_NTASKS_PER_NODE:-8}
export NNODES GPUS_PER_NODE
if [[ ${DRY_RUN:-0} == 1 ]]; then
    exec bash "$REPO/$SCRIPT" "$@"
fi
if [[ -z ${SLURM_JOB_ID:-} ]]; then
    echo "srun_recipe.sh: not inside a SLURM job: submit the .sbatch file with sbatch" \
        "(or set DRY_RUN=1 to size the job here)" >&2
    exit 2
fi
# The first host (no `| head -n 1`: under pipefail its early exit can fail the pipeline).
HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
MASTER_ADDR=${HOSTS%%$'\n'*}
MASTER_PORT=${MASTER_PORT:-6000}
OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-8}}
LAUNCHER=srun
export MASTER_ADDR MASTER_PORT OMP_NUM_THREADS LAUNCHER
cd "$REPO"
exec srun --kill-on-bad-exit=1 bash "$REPO/$SCRIPT" "$@"
