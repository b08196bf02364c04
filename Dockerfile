# Megatron-DLM on NVIDIA's PyTorch container (CUDA, NCCL, Transformer Engine and apex included).
#
#   docker build -t megatron-dlm .
#   docker run --gpus all --ipc=host --ulimit memlock=-1 -v /data:/data megatron-dlm \
#       torchrun --nproc-per-node 8 pretrain_dlm.py --config examples/recipes/dlm_1p7b_python.yaml \
#       --data-path /data/py_text_document --tokenizer-model /data/tokenizer.model --save /data/ckpt
#
# The container's torch and Transformer Engine are kept: the package's requirements are already
# satisfied by them, so pip installs only the pure-Python dependencies (megatron-core included;
# on the container's Python 3.12 pip picks a current release, where no CPU shim is involved).
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.10-py3
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    CUDA_DEVICE_MAX_CONNECTIONS=1

WORKDIR /workspace/megatron-dlm
# Dependencies first, so code changes do not invalidate this layer.
COPY pyproject.toml README.md ./
COPY megatron_dlm/__init__.py megatron_dlm/__init__.py
RUN pip install -e ".[dev]" && python -c "import transformer_engine.pytorch, megatron.core"

COPY . .
RUN pip install --no-deps -e . && python pretrain_dlm.py --train-iters 1 --dry-run >/dev/null
