"""Rank functions for the Hugging Face export tests (module level so the harness can pickle them).

``save_perturbed_checkpoint`` runs at a TP/PP/EP layout: it builds the model, moves every weight
away from its initialisation (norm weights away from 1, biases away from 0, so a wrong mapping
cannot pass by symmetry) and saves a checkpoint with the config and tokenizer record, as
training does. The other functions run on one rank and use the converter's own loading.
"""

from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path

import torch

from megatron_dlm.checkpoint import TokenizerRecord
from megatron_dlm.config import DLMConfig
from megatron_dlm.models.vocab import Vocab

VOCAB = Vocab(size=100, mask_id=99, eod_id=1, pad_id=0)
TOKENIZER = TokenizerRecord(
    vocab_size=100, mask_id=99, eod_id=1, pad_id=0, type="HuggingFaceTokenizer"
)
ROOT = Path(__file__).resolve().parents[2]


def _perturb(model: torch.nn.Module, tied: bool) -> None:
    """Add noise seeded by each parameter's name: the same on every rank holding it."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if tied and name == "output_layer.weight":
                continue  # the last stage's copy of the tied embedding
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            param.add_((0.3 * noise).to(param.dtype))


def save_perturbed_checkpoint(
    cfg_dict: dict, root: str, tokenizer: TokenizerRecord, iteration: int = 7
):
    """Save a checkpoint at ``cfg_dict``'s layout; return the full logits on a sample batch
    where the layout allows computing them without a pipeline schedule (PP=1), else None."""
    from megatron.core import parallel_state

    from megatron_dlm.checkpoint import TrainState, save_checkpoint
    from megatron_dlm.hf.verify import sample_batch
    from megatron_dlm.inference.megatron import megatron_logits_fn
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.runtime.distributed import init_distributed

    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel, seed=5)
    (model,) = build_model(cfg, VOCAB)
    _perturb(model, tied=not cfg.model.untie_embeddings_and_output_weights)
    model.eval()
    save_checkpoint(root, TrainState(iteration=iteration), [model], config=cfg, tokenizer=tokenizer)
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        return None
    tokens, valid = sample_batch(VOCAB.size, 24, VOCAB.pad_id)
    fn = megatron_logits_fn(model, bidirectional=cfg.objective.bidirectional)
    return fn(tokens, valid)[..., : VOCAB.size]


def reference_logits(root: str, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The checkpoint's logits at TP=PP=EP=1 (the converter's loader, megatron-core's forward)."""
    from megatron_dlm.inference.megatron import megatron_logits_fn
    from megatron_dlm.models import load_trained
    from megatron_dlm.runtime.distributed import single_process

    with single_process():
        loaded = load_trained(root, for_export=True)
        fn = megatron_logits_fn(loaded.module, bidirectional=loaded.bidirectional)
        return fn(tokens, valid)[..., : loaded.vocab.size]


def megatron_generate(root: str, prompts: list[list[int]], options: dict):
    """The checkpoint through megatron_dlm.inference (the path tools/generate.py takes)."""
    from megatron_dlm.inference import load_model
    from megatron_dlm.sampling import SamplingConfig

    model = load_model(root)
    try:
        return model.generate(prompts, SamplingConfig(**options)).sequences
    finally:
        model.close()


def convert(root: str, output: str, **kwargs):
    """The library entry point of tools/convert_to_hf.py; returns the verification report."""
    from megatron_dlm.hf.convert import convert_checkpoint

    result = convert_checkpoint(root, output, **kwargs)
    return None if result.verify is None else (result.verify.ok, result.verify.max_abs_diff)


def _cli():
    spec = importlib.util.spec_from_file_location("convert_to_hf", ROOT / "tools/convert_to_hf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(argv: list[str]) -> tuple[int, str]:
    """tools/convert_to_hf.py's main() in this (one-rank) process: exit status and output."""
    import contextlib
    import io

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        status = _cli().main(argv)
    return status, text.getvalue()


def run_cli_with_swapped_gate_up(argv: list[str]) -> tuple[int, str]:
    """As :func:`run_cli`, with a mapping bug: layer 0's SwiGLU gate and up halves swapped."""
    import megatron_dlm.hf.convert as convert_module

    correct = convert_module.megatron_to_hf

    def broken(state, config):
        out = correct(state, config)
        gate, up = "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"
        out[gate], out[up] = out[up], out[gate]
        return out

    convert_module.megatron_to_hf = broken
    try:
        return run_cli(argv)
    finally:
        convert_module.megatron_to_hf = correct


def state_dict_round_trip(cfg_dict: dict) -> list[str]:
    """Names of tensors that megatron -> HF -> megatron does not reproduce exactly."""
    from megatron_dlm.hf.convert import hf_config_from_megatron
    from megatron_dlm.hf.weights import hf_to_megatron, megatron_to_hf
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.runtime.distributed import init_distributed

    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel, seed=5)
    (model,) = build_model(cfg, VOCAB)
    _perturb(model, tied=False)
    state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    config = hf_config_from_megatron(cfg, TOKENIZER)
    padded = state["embedding.word_embeddings.weight"].shape[0]
    back = hf_to_megatron(megatron_to_hf(dict(state), config), config, padded)
    bad = sorted(set(state) ^ set(back))
    for name, tensor in state.items():
        if name in back:
            expected = tensor.clone()
            if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
                expected[VOCAB.size :] = 0  # padding rows are not exported
            if not torch.equal(expected, back[name]):
                bad.append(name)
    return bad


def megatron_routing(logits: torch.Tensor, topk: int, score_function: str, pre_softmax: bool):
    """megatron-core's top-k routing (unfused) on ``logits`` [n, experts]: probs [n, experts]."""
    from megatron.core.transformer.moe.moe_utils import topk_routing_with_score_function

    from megatron_dlm.runtime import cpu_shim

    cpu_shim.apply()
    probs, _ = topk_routing_with_score_function(
        logits, topk, use_pre_softmax=pre_softmax, score_function=score_function
    )
    return probs


def megatron_rope(x: torch.Tensor, kv_channels: int, rotary_percent: float, base: int):
    """megatron-core's RoPE on ``x`` [s, b, heads, d] at positions 0..s-1."""
    from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    from megatron_dlm.runtime import cpu_shim

    cpu_shim.apply()
    rope = RotaryEmbedding(
        kv_channels, rotary_percent, rotary_base=base, use_cpu_initialization=True, cp_group=None
    )
    return _apply_rotary_pos_emb_bshd(x, rope.get_emb(x.shape[0]))


def import_export(hf_dir: str, save: str) -> str:
    """tools/convert_hf_to_megatron.py's library call."""
    from megatron_dlm.hf.to_megatron import import_hf_folder

    return str(import_hf_folder(hf_dir, save, iteration=3))


def load_for_training(cfg_dict: dict, root: str, tokens: torch.Tensor, valid: torch.Tensor):
    """Load ``root`` as training does (--finetune) at ``cfg_dict``'s layout; full logits."""
    from megatron_dlm.checkpoint import load_checkpoint
    from megatron_dlm.inference.megatron import megatron_logits_fn
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.runtime.distributed import init_distributed

    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel, seed=5)
    (model,) = build_model(cfg, VOCAB)
    load_checkpoint(root, [model], config=cfg, tokenizer=None, finetune=True)
    model.eval()
    fn = megatron_logits_fn(model, bidirectional=cfg.objective.bidirectional)
    return fn(tokens, valid)[..., : VOCAB.size]
