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


def state_dict_round_trip(cfg_dict: dict, table: str = "MEGATRON_DLM") -> list[str]:
    """Names of tensors that megatron -> HF -> megatron (through ``weights.<table>``) does not
    reproduce exactly."""
    from megatron_dlm.hf import weights
    from megatron_dlm.hf.convert import hf_config_from_megatron
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.runtime.distributed import init_distributed

    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel, seed=5)
    (model,) = build_model(cfg, VOCAB)
    _perturb(model, tied=False)
    state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    config = hf_config_from_megatron(cfg, TOKENIZER)
    padded = state["embedding.word_embeddings.weight"].shape[0]
    mapping = getattr(weights, table)
    back = mapping.hf_to_megatron(mapping.megatron_to_hf(dict(state), config), config, padded)
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

    return str(import_hf_folder(hf_dir, save, iteration=3).checkpoint)


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


def run_tool(script: str, argv: list[str]) -> tuple[int, str]:
    """``tools/<script>``'s main() in this (one-rank) process: exit status and output."""
    import contextlib
    import io

    path = ROOT / "tools" / script
    spec = importlib.util.spec_from_file_location(script.replace(".py", ""), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        try:
            status = module.main(argv)
        except SystemExit as exc:  # argparse's usage errors
            status = exc.code
    return status, text.getvalue()


def _pipeline_logits(loaded, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
    """Full logits through megatron-core's pipeline schedule (forward only); last stage only."""
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_dlm.inference.megatron import attention_mask_for

    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    mask = attention_mask_for(valid, loaded.bidirectional)
    collected: list[torch.Tensor] = []

    def loss_func(output_tensor):
        collected.append(tensor_parallel.gather_from_tensor_model_parallel_region(output_tensor))
        return output_tensor.sum() * 0, torch.tensor(1, dtype=torch.int), {}

    def forward_step(data_iterator, model):
        return model(tokens, positions, attention_mask=mask), loss_func

    with torch.no_grad():
        get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iter([None]),
            model=loaded.model,
            num_microbatches=1,
            seq_length=tokens.shape[1],
            micro_batch_size=tokens.shape[0],
            forward_only=True,
        )
    if not parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        return None
    return collected[0].float()


def logits_at_layout(roots: list[str], parallel: dict, tokens: torch.Tensor, valid: torch.Tensor):
    """Each checkpoint rebuilt by ``load_trained`` at ``parallel``: full logits over its
    tokenizer's vocabulary (None on ranks that do not hold them)."""
    from megatron_dlm.config import ParallelConfig
    from megatron_dlm.inference.megatron import megatron_logits_fn
    from megatron_dlm.models import load_trained
    from megatron_dlm.runtime.distributed import init_distributed

    layout = ParallelConfig(**parallel)
    init_distributed(layout, seed=5)
    out = []
    for root in roots:
        loaded = load_trained(root, layout)
        if layout.pipeline_model_parallel_size > 1:
            logits = _pipeline_logits(loaded, tokens, valid)
        else:
            logits = megatron_logits_fn(loaded.module, bidirectional=loaded.bidirectional)(
                tokens, valid
            )
        out.append(None if logits is None else logits[..., : loaded.vocab.size])
    return out


def imported_embedding(root: str) -> torch.Tensor:
    """The checkpoint's full word embedding [padded rows, h]."""
    from megatron_dlm.models import load_trained
    from megatron_dlm.runtime.distributed import single_process

    with single_process():
        return load_trained(root, for_export=True).module.embedding.word_embeddings.weight.detach()


def import_with_a_mapping_bug(argv: list[str]) -> tuple[int, str]:
    """tools/convert_hf_to_megatron.py with a bug: the first two embedding rows swapped (a tied
    model: the logits of those tokens swap everywhere)."""
    from megatron_dlm.hf import to_megatron

    correct = to_megatron.resize_vocabulary

    def broken(tensors, *args, **kwargs):
        out = correct(tensors, *args, **kwargs)
        embedding = out["model.embed_tokens.weight"].clone()
        embedding[[0, 1]] = embedding[[1, 0]]
        return {**out, "model.embed_tokens.weight": embedding}

    to_megatron.resize_vocabulary = broken
    try:
        return run_tool("convert_hf_to_megatron.py", argv)
    finally:
        to_megatron.resize_vocabulary = correct
