"""Tiny stock transformers models (Llama, Qwen2, Qwen3, Qwen2-MoE, Mixtral), saved locally.

Built with transformers' own classes from a random initialisation, then moved away from it
(norm weights off 1, biases off 0, embeddings scaled so logits are O(10)) so that a wrong
mapping cannot pass by symmetry. No hub access.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = 90
"""Word-level tokenizer: w0..w89, then <unk> and </s> (ids 90, 91)."""
TOKENIZER_SIZE = WORDS + 2
EOS_ID = WORDS + 1
MODEL_ROWS = TOKENIZER_SIZE + 4
"""The models' embedding rows: more than the tokenizer's tokens, as Qwen's (padding)."""

COMMON = dict(
    vocab_size=MODEL_ROWS,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    eos_token_id=EOS_ID,
)

ARCHITECTURES = {
    # Tied embeddings, a RoPE base other than the default.
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(rope_theta=5000.0, tie_word_embeddings=True)),
    # QKV biases, Qwen's large RoPE base.
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_theta=1e6)),
    # QK-norm, head_dim != hidden / heads.
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16)),
    # Shared expert with its sigmoid gate, top-2 of a softmax over all experts (no renorm).
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
             shared_expert_intermediate_size=24),
    ),  # fmt: skip
    # Top-2 softmax router, renormalised.
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=4,
                                                             num_experts_per_tok=2)),
}  # fmt: skip


def write_word_tokenizer(directory: Path, config: dict | None = None) -> Path:
    """tokenizer.json (word level) + tokenizer_config.json naming </s> as eos."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {f"w{i}": i for i in range(WORDS)}
    vocab.update({"<unk>": WORDS, "</s>": EOS_ID})
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    values = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>",
              "unk_token": "<unk>", **(config or {})}  # fmt: skip
    (directory / "tokenizer_config.json").write_text(json.dumps(values))
    return directory


def build_stock_model(kind: str, seed: int = 0, **overrides):
    """A transformers model of ``kind``, initialised and perturbed (deterministic)."""
    import transformers

    config_name, model_name, extra = ARCHITECTURES[kind]
    config = getattr(transformers, config_name)(**{**COMMON, **extra, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if "norm" in name:
                param.add_(0.3 * noise)
            elif name.endswith("bias"):
                param.add_(0.1 * noise)
            elif "embed" in name or "lm_head" in name:
                param.mul_(20)
    return model.eval()


def write_stock_model(kind: str, directory: Path, seed: int = 0, **overrides) -> Path:
    """``save_pretrained`` of :func:`build_stock_model` with the word-level tokenizer."""
    model = build_stock_model(kind, seed, **overrides)
    model.save_pretrained(directory)
    write_word_tokenizer(directory)
    return directory


def stock_logits(directory: Path, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """transformers' own logits (float32), positions counted from each row's first token."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        out = model(input_ids=tokens, attention_mask=valid.long(), position_ids=positions)
    return out.logits.float()


def write_qwen2_tokenizer(directory: Path) -> int:
    """A byte-level BPE saved by transformers' own ``Qwen2Tokenizer`` (tokenizer_class
    ``Qwen2Tokenizer``, eos = pad = ``<|endoftext|>``, id 0); returns its size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator([Path(json.__file__).read_text()], trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, unk_token=None,
                               eos_token="<|endoftext|>", pad_token="<|endoftext|>")  # fmt: skip
    tokenizer.save_pretrained(directory)
    return len(tokenizer)
