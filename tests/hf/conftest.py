"""Checkpoints saved at TP=2, PP=2 and EP=2 and their exports, built once per test session."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from megatron_dlm.config import DLMConfig, ModelConfig, ObjectiveConfig, ParallelConfig
from megatron_dlm.hf.verify import sample_batch
from megatron_dlm.testing import run_distributed
from tests.hf import workers
from tests.hf.stock_models import (
    EOS_ID,
    TOKENIZER_SIZE,
    stock_logits,
    write_stock_model,
)
from tests.modern import modern_model

SEQ = 32


def model_config(parallel: ParallelConfig, objective: str, **model) -> dict:
    base = dict(
        num_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        seq_length=SEQ,
        use_cpu_initialization=True,
        # TP=1 pads the 100-token vocabulary to 112 rows, TP=2 to 128: the converter must
        # load the saved row count.
        make_vocab_size_divisible_by=16,
    )
    base = modern_model(**{**base, **model})
    return DLMConfig(
        model=ModelConfig(**base),
        parallel=parallel,
        objective=ObjectiveConfig(objective=objective),
    ).to_dict()


TP2 = ParallelConfig(tensor_model_parallel_size=2)
PP2 = ParallelConfig(pipeline_model_parallel_size=2)
EP2 = ParallelConfig(expert_model_parallel_size=2)

CASES = {
    # GQA, QK-norm, RoPE, RMSNorm, SwiGLU, tied embeddings.
    "dlm_dense_tp2": (TP2, "dlm", dict(num_query_groups=2, qk_layernorm=True)),
    # Learned positions, LayerNorm, GELU, untied embeddings, biases everywhere.
    "ar_dense_pp2": (
        PP2,
        "ar",
        dict(
            position_embedding_type="learned_absolute",
            normalization="LayerNorm",
            swiglu=False,
            untie_embeddings_and_output_weights=True,
            disable_bias_linear=False,
        ),
    ),
    # MoE layer 0 (softmax over the top-2, shared expert) on stage 0, dense layer 1 on stage 1;
    # partial RoPE, QKV bias, untied. (A DLM at PP>1 has variable sequence lengths, which
    # megatron-core's allgather dispatcher refuses.)
    "dlm_moe_pp2": (
        PP2,
        "dlm",
        dict(
            num_experts=4,
            moe_token_dispatcher_type="alltoall",
            moe_ffn_hidden_size=48,
            moe_shared_expert_intermediate_size=40,
            moe_layer_freq=2,
            rotary_percent=0.5,
            add_qkv_bias=True,
            untie_embeddings_and_output_weights=True,
        ),
    ),
    # Experts sharded over TP; sigmoid router; GQA + QK-norm.
    "ar_moe_tp2": (
        TP2,
        "ar",
        dict(
            num_experts=4,
            moe_router_score_function="sigmoid",
            num_query_groups=2,
            qk_layernorm=True,
        ),
    ),
    # Experts split over EP ranks; top-1 of a softmax over all experts (pre-softmax).
    "dlm_moe_ep2": (
        EP2,
        "dlm",
        dict(num_experts=4, moe_router_topk=1, moe_router_pre_softmax=True),
    ),
}


@dataclass
class Exported:
    name: str
    checkpoint: Path
    export: Path
    objective: str
    saved_logits: torch.Tensor | None
    """Logits of the model at the layout it was saved at (PP=1 layouts only)."""
    verify: tuple[bool, float]


def write_tokenizer_json(path: Path) -> Path:
    """A word-level tokenizers JSON with our 100-token vocabulary and special ids."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {f"w{i}": i for i in range(workers.VOCAB.size)}
    vocab.update({"<|pad|>": 0, "<|eod|>": 1, "<|mask|>": 99})
    del vocab["w0"], vocab["w1"], vocab["w99"]
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<|pad|>"))
    tokenizer.pre_tokenizer = Whitespace()
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="session")
def tokenizer_json(tmp_path_factory) -> Path:
    return write_tokenizer_json(tmp_path_factory.mktemp("tokenizer") / "tokenizer.json")


def _build(name: str, root: Path, tokenizer_json: Path) -> Exported:
    parallel, objective, model = CASES[name]
    record = dataclasses.replace(workers.TOKENIZER, model=str(tokenizer_json))
    saved = run_distributed(
        workers.save_perturbed_checkpoint,
        2,
        args=(model_config(parallel, objective, **model), str(root / "ckpt"), record),
    )
    (verify,) = run_distributed(
        workers.convert, 1, args=(str(root / "ckpt"), str(root / "hf")), kwargs={"verify": True}
    )
    return Exported(name, root / "ckpt", root / "hf", objective, saved[0], verify)


_BUILT: dict[str, Exported] = {}


def get_export(name: str, tmp_path_factory, tokenizer_json: Path) -> Exported:
    """The case ``name`` saved at its layout and exported (with verify), once per session."""
    if name not in _BUILT:
        _BUILT[name] = _build(name, tmp_path_factory.mktemp(name), tokenizer_json)
    return _BUILT[name]


@pytest.fixture(params=list(CASES))
def exported(request, tmp_path_factory, tokenizer_json) -> Exported:
    return get_export(request.param, tmp_path_factory, tokenizer_json)


@pytest.fixture(params=["dlm_dense_tp2", "ar_dense_pp2", "dlm_moe_ep2"])
def exported_for_sampling(request, tmp_path_factory, tokenizer_json) -> Exported:
    return get_export(request.param, tmp_path_factory, tokenizer_json)


@pytest.fixture
def exported_dlm(tmp_path_factory, tokenizer_json) -> Exported:
    return get_export("dlm_dense_tp2", tmp_path_factory, tokenizer_json)


@pytest.fixture
def exported_ar(tmp_path_factory, tokenizer_json) -> Exported:
    return get_export("ar_dense_pp2", tmp_path_factory, tokenizer_json)


def batch(length: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    return sample_batch(workers.VOCAB.size, length, workers.VOCAB.pad_id)


def cli(script: str, *argv) -> tuple[int, str]:
    """``tools/<script> argv`` (its main()) in a one-rank worker: exit status and output."""
    argv = [str(a) for a in argv]
    # A conversion loads transformers and megatron-core: allow for a busy machine.
    (result,) = run_distributed(workers.run_tool, 1, args=(script, argv), timeout=480)
    return result


def stock_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences over the stock models' vocabulary, the second left-padded (with </s>)."""
    return sample_batch(TOKENIZER_SIZE, 24, EOS_ID, seed=1)


class ImportedStock:
    """A tiny stock model (tests/hf/stock_models.py) imported with --verify."""

    def __init__(self, kind: str, root: Path):
        self.kind = kind
        self.hf = write_stock_model(kind, root / "hf")
        self.checkpoint = root / "ckpt"
        self.status, self.output = cli(
            "convert_hf_to_megatron.py", "--hf", self.hf, "--save", self.checkpoint, "--verify"
        )
        tokens, valid = stock_batch()
        self.reference = stock_logits(self.hf, tokens, valid)[..., :TOKENIZER_SIZE]
        """transformers' logits of the source model on :func:`stock_batch`."""


class _Imports(dict):
    def __init__(self, factory):
        super().__init__()
        self.factory = factory

    def __missing__(self, kind: str) -> ImportedStock:
        self[kind] = ImportedStock(kind, self.factory.mktemp(kind))
        return self[kind]


_IMPORTS: list[_Imports] = []


@pytest.fixture
def imported(tmp_path_factory) -> dict[str, ImportedStock]:
    """Imports of every architecture in ARCHITECTURES, built on first use, once per session."""
    if not _IMPORTS:
        _IMPORTS.append(_Imports(tmp_path_factory))
    return _IMPORTS[0]
