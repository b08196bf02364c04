#!/usr/bin/env bash
# Multi-node training with torchrun: run this same script on every node.
#
#   NNODES=4 NODE_RANK=0 MASTER_ADDR=node0 ./examples/train_multinode.sh \
#       examples/recipes/dlm_1p7b_python.yaml --data-path /data/py_text_document \
#       --tokenizer-model /data/tokenizer.json --save /ckpt/dlm_1p7b
#
# Extra arguments go to pretrain_dlm.py (they override the recipe). The matched AR baseline:
# append `--objective ar --save /ckpt/ar_1p7b`. DRY_RUN=1 runs the recipe's --dry-run on this
# machine's CPU for NNODES x GPUS_PER_NODE GPUs.
set -euo pipefail
RECIPE=${1:?usage: $0 RECIPE.yaml [pretrain_dlm.py flags...]}
shift
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

# NCCL and CUDA settings Megatron-LM recommends for overlapped communication.
export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
export NCCL_IB_TIMEOUT=${NCCL_IB_TIMEOUT:-22}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

if [[ ${DRY_RUN:-0} == 1 ]]; then
    CUDA_VISIBLE_DEVICES="" exec "${PYTHON:-python3}" "$(dirname "$0")/../pretrain_dlm.py" \
        --config "$RECIPE" --dry-run --dry-run-world-size "$((NNODES * GPUS_PER_NODE))" "$@"
fi
exec torchrun \
    --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" \
    "$(dirname "$0")/../pretrain_dlm.py" --config "$RECIPE" "$@"
