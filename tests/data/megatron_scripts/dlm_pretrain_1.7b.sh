#!/bin/bash
set -e
set -eo pipefail
export CUDA_DEVICE_MAX_CONNECTIONS=1
export TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC=3600

########################################################
# Distributed settings
########################################################

GPUS_PER_NODE=$GPUS_PER_NODE # todo: set to your own env value
NUM_NODES=$NUM_NODES # todo: set to your own env value
NODE_RANK=$NODE_RANK # todo: set to your own env value
MASTER_ADDR=$MASTER_ADDR # todo: set to your own env value
MASTER_PORT=$MASTER_PORT # todo: set to your own env value

WORLD_SIZE=$((GPUS_PER_NODE * NUM_NODES))
MODEL_PARALLEL_SIZE=1
PIPELINE_MODEL_PARALLEL_SIZE=1
DATA_PARALLEL_SIZE=$((WORLD_SIZE / MODEL_PARALLEL_SIZE / PIPELINE_MODEL_PARALLEL_SIZE))

CONVERT_CHECKPOINT_ONLY=${1}
CONVERT_CKPT_STEP=${2}

DISTRIBUTED_ARGS=(
    --nproc_per_node $GPUS_PER_NODE 
    --nnodes $NUM_NODES 
    --master_addr $MASTER_ADDR 
    --master_port $MASTER_PORT
    --node_rank $NODE_RANK
)

MODEL_PARALLEL_ARGS=(
	--tensor-model-parallel-size $MODEL_PARALLEL_SIZE
	--pipeline-model-parallel-size $PIPELINE_MODEL_PARALLEL_SIZE
)

########################################################
# Training-related settings
########################################################

# todo: reset these values
RUN_NAME=dlm_training
train_data_prefix="$DATASETS_DIR/path/to/train/data/prefix"
valid_data_prefix="$DATASETS_DIR/path/to/valid/data/prefix"
TRAINING_TOKENS_PER_EPOCH=10000000000
EPOCHS=1000
GLOBAL_BATCH_SIZE=256
SEQ_LENGTH=2048
TOKENIZER=$ROOT_DIR/megatron/training/tokenizer/gptneox_tokenizer # or change this to any huggingface tokenizer; local tokenizer is also supported

current_script_dir=$(dirname "$(readlink -f "$0")")
RUN_ID=$(basename "$(dirname "$0")" | md5sum | head -c 16)
ROOT_DIR=$PROJECT_DIR
cd $ROOT_DIR

TRAINING_TOKENS=$((TRAINING_TOKENS_PER_EPOCH * EPOCHS))
train_data_prefix_count="1.0 $train_data_prefix"
valid_data_prefix_count="1.0 $valid_data_prefix"


LOGS_PATH=${LOG_DIR:-"$CKPT_DIR/cache/difflm/logs"}
data_local_cache_dir=${CKPT_DIR}/cache/difflm/data/data_cache/${RUN_NAME}
mkdir -p $data_local_cache_dir
mkdir -p "${LOGS_PATH}/${RUN_NAME}"
mkdir -p "$CKPT_DIR/cache/difflm/training_checkpoints/${RUN_NAME}"

GPT_MODEL_ARGS=(
    --seq-length $SEQ_LENGTH
    --attention-backend flash
    --attention-softmax-in-fp32
    --attention-dropout 0.0
    --hidden-dropout 0.0
    --no-bias-gelu-fusion
    --no-bias-dropout-fusion
    --no-bias-swiglu-fusion

    --num-layers 28
    --hidden-size 2048
    --num-attention-heads 16
    # --group-query-attention
    # --num-query-groups 1
    --ffn-hidden-size 6144
    --swiglu
    --vocab-size 50289
    --normalization RMSNorm
    --max-position-embeddings $SEQ_LENGTH
    --norm-epsilon 1e-6
    --rotary-base 10000
    --disable-bias-linear
    # --add-qkv-bias
    --position-embedding-type rope
    --qk-layernorm
    --untie-embeddings-and-output-weights
)

PLMT_ARGS=(
    --model-running-mode difflm-noshift
    --base-model vanilla
    --mask-token 50277
    --attention-mask-type no_mask
)

TARGET_TRAINING_TOKENS=$TRAINING_TOKENS
TOKENS_PER_BATCH=$((GLOBAL_BATCH_SIZE * SEQ_LENGTH))
TRAIN_ITERS=$((TARGET_TRAINING_TOKENS / TOKENS_PER_BATCH))
SAVE_INTERVAL=$((TRAIN_ITERS / EPOCHS))
LOG_INTERVAL=50
NON_PERSISTENT_SAVE_INTERVAL=$((TRAIN_ITERS * 2))
EVAL_INTERVAL=$((TRAIN_ITERS / EPOCHS))
TARGET_VAL_TOKENS=150000000 # 150M tokens
TOKENS_PER_VAL_BATCH=$((GLOBAL_BATCH_SIZE * SEQ_LENGTH))
VAL_ITERS=$((TARGET_VAL_TOKENS / TOKENS_PER_VAL_BATCH))

if [ $((DATA_PARALLEL_SIZE * MICRO_BATCH_SIZE)) -gt $GLOBAL_BATCH_SIZE ]; then
    echo "Error: DATA_PARALLEL_SIZE * MICRO_BATCH_SIZE ($((DATA_PARALLEL_SIZE * MICRO_BATCH_SIZE))) > GLOBAL_BATCH_SIZE ($GLOBAL_BATCH_SIZE). Resetting MICRO_BATCH_SIZE."
    
    CANDIDATE_MICRO_BATCH_SIZE=$((GLOBAL_BATCH_SIZE / DATA_PARALLEL_SIZE))
    
    while [ $CANDIDATE_MICRO_BATCH_SIZE -gt 0 ]; do
        PER_STEP_BATCH_SIZE=$((DATA_PARALLEL_SIZE * CANDIDATE_MICRO_BATCH_SIZE))
        if [ $PER_STEP_BATCH_SIZE -gt 0 ] && [ $((GLOBAL_BATCH_SIZE % PER_STEP_BATCH_SIZE)) -eq 0 ]; then
            MICRO_BATCH_SIZE=$CANDIDATE_MICRO_BATCH_SIZE
            echo "Reset MICRO_BATCH_SIZE to $MICRO_BATCH_SIZE."
            break
        fi
        CANDIDATE_MICRO_BATCH_SIZE=$((CANDIDATE_MICRO_BATCH_SIZE - 1))
    done

    if [ $CANDIDATE_MICRO_BATCH_SIZE -eq 0 ]; then
        echo "Error: Could not find a valid MICRO_BATCH_SIZE where GLOBAL_BATCH_SIZE is divisible by (DATA_PARALLEL_SIZE * MICRO_BATCH_SIZE)."
        exit 1
    fi
fi

TRAINING_ARGS=(
    --micro-batch-size 4
    --global-batch-size $GLOBAL_BATCH_SIZE
    --train-iters $TRAIN_ITERS
    --weight-decay 0.1
    --adam-beta1 0.9 
    --adam-beta2 0.95 
    --init-method-std 0.02
    --clip-grad 1.0 
    --bf16
    --lr 0.0002
    --min-lr 0.00002
    --lr-decay-style WSD
    --lr-warmup-iters 2000
    --lr-decay-iters $TRAIN_ITERS # this includes the warmup phase
    --lr-wsd-decay-style exponential
    --lr-wsd-decay-iters 1000
    # --use-checkpoint-args
    --use-distributed-optimizer
    --num-distributed-optimizer-instances $NUM_NODES
    --rerun-mode validate_results
    --overlap-param-gather
    --overlap-grad-reduce
    --distributed-timeout-minutes 60
    # --tp-comm-overlap #todo turn on this when using TP > 1 and SP > 1
    # --num-layers-per-virtual-pipeline-stage # todo specify this when PP > 1
)

# add these to the training args for stable training (store master weights, weight gradients, and optimizer states in fp32)
# --accumulate-allreduce-grads-in-fp32
# --use-precision-aware-optimizer alongside:
# --main-params-dtype=fp32
# --main-grads-dtype=fp32
# --exp-avg-dtype=fp32
# --exp-avg-sq-dtype=fp32

DATA_ARGS=(
    --train-data-path $train_data_prefix
    --valid-data-path $valid_data_prefix
    --data-cache-path $data_local_cache_dir
    --tokenizer-type HuggingFaceTokenizer
    --tokenizer-model $TOKENIZER
)

if [ "$WANDB_MODE" == "" ]; then
    WANDB_MODE="offline"
fi

CHECKPOINT_PATH=$CKPT_DIR/cache/difflm/training_checkpoints/${RUN_NAME}
EVAL_AND_LOGGING_ARGS=(
    --log-interval $LOG_INTERVAL
    --log-params-norm
    --log-num-zeros-in-grad
    --log-throughput
    --log-progress
    --log-timers-to-tensorboard
    --log-validation-ppl-to-tensorboard
    --log-memory-to-tensorboard
    --save-interval $SAVE_INTERVAL
    --non-persistent-save-interval $NON_PERSISTENT_SAVE_INTERVAL
    --non-persistent-ckpt-type global
    --non-persistent-global-ckpt-dir $CHECKPOINT_PATH/non_persistent
    --ckpt-format torch_dist
    --auto-detect-ckpt-format
    --ckpt-fully-parallel-load
    # --async-save
    --eval-interval $EVAL_INTERVAL 
    --save $CHECKPOINT_PATH
    --load $CHECKPOINT_PATH
    --eval-iters $VAL_ITERS
    --tensorboard-dir ${LOGS_PATH}/${RUN_NAME}/tensorboard
    --wandb-project dlm
    --wandb-exp-name $RUN_NAME
    --wandb-run-id $RUN_NAME
    --wandb-save-dir ${LOGS_PATH}/${RUN_NAME}/wandb
    --wandb-mode $WANDB_MODE
    --wandb-tags 'dlm'
    --wandb-notes 'training'
    --wandb-resume allow
)

########################################################
# Launcher reduced to the flag list (tests/test_megatron_scripts.py): pretrain_dlm.py --dry-run.
########################################################

"${PYTHON:-python3}" "$MEGATRON_DLM_ROOT/pretrain_dlm.py" \
    ${GPT_MODEL_ARGS[@]} \
    ${TRAINING_ARGS[@]} \
    ${MODEL_PARALLEL_ARGS[@]} \
    ${DATA_ARGS[@]} \
    ${EVAL_AND_LOGGING_ARGS[@]} \
    ${PLMT_ARGS[@]} \
    --dry-run --dry-run-world-size "$WORLD_SIZE" ${DRY_RUN_ARGS:-}
