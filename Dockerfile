# Megatron-DLM on NVIDIA's PyTorch container (CUDA, NCCL, cuDNN, Transformer Engine and apex
# included). Building, launching and the GPU check: docs/cluster.md.
#
#   docker build -t megatron-dlm .
#   docker run --gpus all --ipc=host --ulimit memlock=-1 --rm -v "$PWD/results:/results" \
#       megatron-dlm tools/gpu_check.sh /results          # GPU readiness, < 8 min on one H100
#   docker run --gpus all --ipc=host --ulimit memlock=-1 -v /data:/data megatron-dlm \
#       examples/dlm_1.7b_python.sh /data/ckpt /data/tokenizer.json /data/py_train_text_document
#
# The base image is the one megatron-core 0.16.1's own CI uses (docker/.ngc_version.dev at
# Megatron-LM's tag core_v0.16.1). Its torch and Transformer Engine are kept: pip installs only
# the pure-Python dependencies. megatron-core is pinned to the version the code is tested with
# (0.16.1: the CPU shim's TESTED_MEGATRON_CORE_VERSIONS, and the package's use of 0.16
# internals); unpinned, pip would take the newest release for the container's Python 3.12
# (0.19.x, which needs Python >= 3.12 and has not been tested). 0.16.1 has a cp312 wheel.
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.11-py3
FROM ${BASE_IMAGE}
ARG MEGATRON_CORE_VERSION=0.16.1

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    CUDA_DEVICE_MAX_CONNECTIONS=1

WORKDIR /workspace/megatron-dlm
# Dependencies first, so code changes do not invalidate this layer.
COPY pyproject.toml README.md ./
COPY megatron_dlm/__init__.py megatron_dlm/__init__.py
RUN pip install -e ".[dev]" "megatron-core==${MEGATRON_CORE_VERSION}" \
    && python -c "import importlib.metadata as m, transformer_engine as te, megatron.core; \
import transformer_engine.pytorch; v = m.version('megatron-core'); \
assert v == '${MEGATRON_CORE_VERSION}', v; print('megatron-core', v, 'transformer-engine', te.__version__)"

COPY . .
# A smoke test that needs no GPU: the paper recipe's dry run at its 64-GPU layout.
RUN pip install --no-deps -e . && DRY_RUN=1 PYTHON=python examples/dlm_1.7b_python.sh >/dev/null
