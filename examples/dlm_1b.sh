#!/usr/bin/env bash
# The 1B / 1B-unique-token study of "Diffusion Language Models are Super Data Learners" (arXiv
# 2511.03276): "a 1B DLM reaches >56% HellaSwag and >33% MMLU from 1B unique tokens repeated",
# on standard (web) pre-training data. Budget: 1B unique tokens x 96 epochs = 96B tokens, the
# "1b_96e" series whose logs the authors released (github.com/JinjieNi/OpenMoE2, README:
# super_data_learners_logs/vary_sparsity/1b_96e_difflm_1b1a); the blog's Figure A trains every
# model on 96B tokens. Optimizer, schedule, batch and objective: MegaDLMs' 1.7B launcher
# (examples/dlm_training/dlm_pretrain_1.7b.sh), as in examples/dlm_1.7b_python.sh.
# Shape: the paper does not list its 1B model's shape in any source we could read; this is
# the 1.7B recipe's layer (2048 wide, 16 heads of 128, MHA, SwiGLU 6144, QK-norm, untied
# embeddings) 16 deep instead of 28: 1.079B parameters (0.872B without the embeddings).
# The matched AR run: append --objective ar (and a different CHECKPOINT_DIR).
# The same run as a YAML recipe: examples/recipes/dlm_1b.yaml (a test keeps them equal).
#
# The same command on every node (NODE_RANK = 0 .. NNODES-1):
#   NNODES=4 NODE_RANK=0 MASTER_ADDR=node0 examples/dlm_1b.sh \
#       /ckpt/dlm_1b /data/tokenizer.json /data/web_train_text_document \
#       [/data/web_valid_text_document] [more pretrain_dlm.py flags, which override these]
# Size it first, on any CPU (no GPU, no data): DRY_RUN=1 examples/dlm_1b.sh
# SLURM: sbatch examples/slurm/dlm_1b.sbatch (the same arguments).
#
# DRY_RUN=1 at the default 4 nodes x 8 GPUs (GPT-NeoX vocabulary + specials, 50,289 tokens):
#   world 32 = TP 1 x PP 1 x CP 1 x DP 32; 1.079B parameters; 23.4 GiB per GPU estimated
#   (activations 17.0 GiB at micro-batch 8); 3.49e15 FLOPs per step of 524,288 tokens;
#   183,105 steps = 96.0 epochs; 14.0 h at 40% MFU of an H100's 989 bf16 TFLOP/s.
#
# Environment: GPUS_PER_NODE (8), NNODES (4), NODE_RANK (0), MASTER_ADDR (localhost),
# MASTER_PORT (6000); UNIQUE_TOKENS (1e9) and EPOCHS (96) set the budget; MICRO_BATCH_SIZE (8);
# FP8=hybrid|e4m3 trains the GEMMs in FP8 (the paper trained in bf16); DRY_RUN=1; PYTHON.
# Deliberate differences from MegaDLMs, and where each value comes from: docs/cluster.md.
set -euo pipefail

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
NNODES=${NNODES:-4}
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
    --num-layers 16  # the 1.7B recipe's layer, 16 deep (see the header)
    --hidden-size 2048
    --ffn-hidden-size 6144
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

OBJECTIVE_ARGS=(
    --objective dlm
    --dlm-loss-weight realised  # MegaDLMs: 1 / (masked fraction of the sequence)
    --dlm-at-least-one-mask     # MegaDLMs masks one random token where t masked none
    --dlm-eps 1e-3              # MegaDLMs draws t from [0, 1); ours from [eps, 1)
    --dlm-random-length-prob 0.01
)

TRAINING_ARGS=(
    --micro-batch-size "${MICRO_BATCH_SIZE:-8}"
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
    --save-interval "$ITERS_PER_EPOCH"  # every epoch's checkpoint is kept (~15 GB each)
)
if [[ -n $CHECKPOINT_PATH ]]; then
    EVAL_AND_LOGGING_ARGS+=(--save "$CHECKPOINT_PATH" --load "$CHECKPOINT_PATH")
fi

PRETRAIN="$(dirname "${BASH_SOURCE[0]}")/../pretrain_dlm.py"
ARGS=(
    "${MODEL_ARGS[@]}" "${OBJECTIVE_ARGS[@]}" "${TRAINING_ARGS[@]}" "${MODEL_PARALLEL_ARGS[@]}"
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
