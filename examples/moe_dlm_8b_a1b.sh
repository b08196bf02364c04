#!/usr/bin/env bash
# A sparse DLM with 8B total and ~1B active parameters: the "8b1a" MoE of "Diffusion Language
# Models are Super Data Learners" (arXiv 2511.03276, "Diffusion + MoE is a double win"; logs:
# super_data_learners_logs/vary_sparsity/1b_96e_difflm_8b1a, github.com/JinjieNi/OpenMoE2),
# trained like examples/dlm_1b.sh: 1B unique tokens x 96 epochs, MegaDLMs' optimizer, schedule
# and objective. Shape (ours; the paper's is not in any source we could read): the 1B recipe's
# attention (16 layers, 2048 wide, 16 heads of 128, QK-norm, untied embeddings) with every MLP
# replaced by 128 fine-grained experts of 640, top-8 routing (Qwen3-MoE's granularity and
# routing; OLMoE's depth and width): 8.53B total, 0.98B active per token. Expert parallelism 8
# (alltoall inside a node), data parallelism over everything.
# The matched AR run: append --objective ar (and a different CHECKPOINT_DIR).
# The same run as a YAML recipe: examples/recipes/moe_dlm_8b_a1b.yaml (a test keeps them equal).
#
# The same command on every node (NODE_RANK = 0 .. NNODES-1):
#   NNODES=8 NODE_RANK=0 MASTER_ADDR=node0 examples/moe_dlm_8b_a1b.sh \
#       /ckpt/moe_dlm_8b_a1b /data/tokenizer.json /data/web_train_text_document \
#       [/data/web_valid_text_document] [more pretrain_dlm.py flags, which override these]
# Size it first, on any CPU (no GPU, no data): DRY_RUN=1 examples/moe_dlm_8b_a1b.sh
# SLURM: sbatch examples/slurm/moe_dlm_8b_a1b.sbatch (the same arguments).
#
# DRY_RUN=1 at the default 8 nodes x 8 GPUs (GPT-NeoX vocabulary + specials, 50,289 tokens):
#   world 64 = TP 1 x PP 1 x CP 1 x DP 64, EP 8; 8.532B total, 0.982B active parameters, 1.485B
#   on a GPU; 17.1 GiB per GPU estimated; 3.19e15 FLOPs per step of 524,288 tokens; 183,105
#   steps = 96.0 epochs; 6.4 h at 40% MFU of an H100's 989 bf16 TFLOP/s (MoE runs reach less).
#
# Environment: GPUS_PER_NODE (8), NNODES (8), NODE_RANK (0), MASTER_ADDR (localhost),
# MASTER_PORT (6000); UNIQUE_TOKENS (1e9) and EPOCHS (96) set the budget; MICRO_BATCH_SIZE (4);
# FP8=hybrid|e4m3 trains the GEMMs in FP8; DRY_RUN=1; PYTHON.
# Deliberate differences from MegaDLMs, and where each value comes from: docs/cluster.md.
set -euo pipefail

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
NNODES=${NNODES:-8}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-6000}
WORLD_SIZE=$((GPUS_PER_NODE * NNODES))
export CUDA_DEVICE_MAX_CONNECTIONS=1

CHECKPOINT_PATH=${1:-}
TOKENIZER_MODEL=${2:-}
TRAIN_DATA_PATH=${3:-}
shift "$(($# < 3 ? $# : 3))"
VALID_DATA_PATH=
if [[ $# -gt 0 && $1 != -* ]]; then
    VALID_DATA_PATH=$1
    shift
fi
DRY_RUN=${DRY_RUN:-0}
if [[ $DRY_RUN != 1 && (-z $CHECKPOINT_PATH || -z $TOKENIZER_MODEL || -z $TRAIN_DATA_PATH) ]]; then
    echo "usage: $0 CHECKPOINT_DIR TOKENIZER TRAIN_DATA_PREFIX [VALID_DATA_PREFIX] [flags...]" >&2
    echo "       DRY_RUN=1 $0   (sizes the job on this machine's CPU)" >&2
    exit 2
fi

# The budget, as MegaDLMs computes it: steps = unique tokens x epochs / tokens per step; an
# evaluation and a checkpoint every epoch; 150M validation tokens per evaluation.
UNIQUE_TOKENS=${UNIQUE_TOKENS:-1000000000}
EPOCHS=${EPOCHS:-96}
GLOBAL_BATCH_SIZE=256
SEQ_LENGTH=2048
TOKENS_PER_STEP=$((GLOBAL_BATCH_SIZE * SEQ_LENGTH))
TRAIN_ITERS=$((UNIQUE_TOKENS * EPOCHS / TOKENS_PER_STEP))
ITERS_PER_EPOCH=$((TRAIN_ITERS / EPOCHS))
EVAL_ITERS=$((150000000 / TOKENS_PER_STEP))

DISTRIBUTED_ARGS=(
    --nproc-per-node "$GPUS_PER_NODE"
    --nnodes "$NNODES"
    --node-rank "$NODE_RANK"
    --master-addr "$MASTER_ADDR"
    --master-port "$MASTER_PORT"
)

MODEL_ARGS=(
    --num-layers 16
    --hidden-size 2048
    --ffn-hidden-size 6144  # unused: every layer is an MoE layer
    --num-attention-heads 16
    --num-query-groups 16  # multi-head attention, as MegaDLMs (no GQA)
    --kv-channels 128
    --seq-length "$SEQ_LENGTH"
    --max-position-embeddings "$SEQ_LENGTH"
    --position-embedding-type rope
    --rotary-base 10000
    --rotary-percent 1.0
    --normalization RMSNorm
    --norm-epsilon 1e-6
    --swiglu
    --qk-layernorm
    --untie-embeddings-and-output-weights
    --disable-bias-linear
    --init-method-std 0.02
    --attention-dropout 0.0
    --hidden-dropout 0.0
    --make-vocab-size-divisible-by 128
    --transformer-impl transformer_engine
    --attention-softmax-in-fp32  # as MegaDLMs (Megatron-LM's default is off)
    # MegaDLMs also passes --attention-backend flash; auto lets Transformer Engine choose.
)

MOE_ARGS=(
    --num-experts 128
    --moe-router-topk 8
    --moe-ffn-hidden-size 640
    --moe-layer-freq 1
    --moe-router-score-function softmax
    --moe-router-load-balancing-type aux_loss
    --moe-aux-loss-coeff 1e-2
    --moe-z-loss-coeff 1e-3
    --moe-token-dispatcher-type alltoall
    --moe-grouped-gemm
)

OBJECTIVE_ARGS=(
    --objective dlm
    --dlm-loss-weight realised  # MegaDLMs: 1 / (masked fraction of the sequence)
    --dlm-at-least-one-mask     # MegaDLMs masks one random token where t masked none
    --dlm-eps 1e-3              # MegaDLMs draws t from [0, 1); ours from [eps, 1)
    --dlm-random-length-prob 0.01
)

TRAINING_ARGS=(
    --micro-batch-size "${MICRO_BATCH_SIZE:-4}"
    --global-batch-size "$GLOBAL_BATCH_SIZE"
    --train-iters "$TRAIN_ITERS"
    --seed 1234
    --bf16
    --optimizer adam
    --lr 2e-4
    --min-lr 2e-5
    --lr-decay-style WSD
    --lr-warmup-iters 2000
    --lr-decay-iters "$TRAIN_ITERS"
    --lr-wsd-decay-style exponential
    --lr-wsd-decay-iters 1000
    --weight-decay 0.1
    --adam-beta1 0.9
    --adam-beta2 0.95
    --adam-eps 1e-8
    --clip-grad 1.0
    --use-distributed-optimizer
    --overlap-grad-reduce
    --overlap-param-gather
    --distributed-timeout-minutes 60
    # MegaDLMs' optimizer sharding: one distributed-optimizer instance per node (the state is
    # sharded within a node, gradients all-reduced across nodes). MegaDLMs also passes
    # --rerun-mode validate_results (accepted without effect, docs/megatron-lm.md).
    --num-distributed-optimizer-instances "$NNODES"
    --skip-nan-steps  # skip (and count) a NaN/Inf step; Megatron-LM's default stops the run
)
# With FP8: Megatron-LM's Llama-3 8B FP8 recipe's amax settings (its defaults are 1/most_recent).
TRAINING_ARGS+=(--fp8-amax-history-len 1024 --fp8-amax-compute-algo max)
if [[ -n ${FP8:-} ]]; then
    # Megatron-LM's Llama-3 FP8 recipe but for --fp8-param-gather (FP8_PARAM_GATHER=1 adds it).
    # Random-length steps are not yet rounded to FP8's multiple of 16 (docs/cluster.md, FP8).
    TRAINING_ARGS+=(--fp8-format "$FP8" --fp8-recipe delayed)
    if [[ ${FP8_PARAM_GATHER:-0} == 1 ]]; then
        TRAINING_ARGS+=(--fp8-param-gather)
    fi
fi

MODEL_PARALLEL_ARGS=(
    --tensor-model-parallel-size 1
    --pipeline-model-parallel-size 1
    --context-parallel-size 1
    --expert-model-parallel-size 8  # 16 experts per GPU, alltoall within a node
    --expert-tensor-parallel-size 1
)

DATA_ARGS=(
    --tokenizer-type HuggingFaceTokenizer
    --split "995,5,0"  # used only with one data prefix (no VALID_DATA_PREFIX)
    --unique-tokens "$UNIQUE_TOKENS"
    --unique-tokens-sample random
    --unique-tokens-boundary cut
    --epoch-windows recut
    --num-workers 2
)
if [[ -n $TOKENIZER_MODEL && ($DRY_RUN != 1 || -e $TOKENIZER_MODEL) ]]; then
    DATA_ARGS+=(--tokenizer-model "$TOKENIZER_MODEL")
fi
if [[ -n $VALID_DATA_PATH ]]; then
    DATA_ARGS+=(--train-data-path "$TRAIN_DATA_PATH" --valid-data-path "$VALID_DATA_PATH")
elif [[ -n $TRAIN_DATA_PATH ]]; then
    DATA_ARGS+=(--data-path "$TRAIN_DATA_PATH")
fi

EVAL_AND_LOGGING_ARGS=(
    --exit-signal-handler  # SIGTERM/SIGUSR1 (preemption): save a checkpoint, exit cleanly
    --log-interval 50
    --eval-interval "$ITERS_PER_EPOCH"
    --eval-iters "$EVAL_ITERS"
    --save-interval "$ITERS_PER_EPOCH"  # every epoch's checkpoint is kept (~120 GB each)
)
if [[ -n $CHECKPOINT_PATH ]]; then
    EVAL_AND_LOGGING_ARGS+=(--save "$CHECKPOINT_PATH" --load "$CHECKPOINT_PATH")
fi

PRETRAIN="$(dirname "${BASH_SOURCE[0]}")/../pretrain_dlm.py"
ARGS=(
    "${MODEL_ARGS[@]}" "${MOE_ARGS[@]}" "${OBJECTIVE_ARGS[@]}" "${TRAINING_ARGS[@]}" "${MODEL_PARALLEL_ARGS[@]}"
    "${DATA_ARGS[@]}" "${EVAL_AND_LOGGING_ARGS[@]}"
)

if [[ $DRY_RUN == 1 ]]; then
    # On this machine's CPU, for the world size this launch targets.
    CUDA_VISIBLE_DEVICES="" exec "${PYTHON:-python3}" "$PRETRAIN" "${ARGS[@]}" \
        --dry-run --dry-run-world-size "$WORLD_SIZE" --dry-run-vocab-size 50289 "$@"
fi
if [[ ${LAUNCHER:-torchrun} == srun ]]; then
    # One SLURM task per GPU (examples/slurm/*.sbatch): preemption signals reach every rank.
    export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID
    export MASTER_ADDR MASTER_PORT
    exec "${PYTHON:-python3}" "$PRETRAIN" "${ARGS[@]}" "$@"
fi
exec torchrun "${DISTRIBUTED_ARGS[@]}" "$PRETRAIN" "${ARGS[@]}" "$@"
