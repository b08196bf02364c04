"""The model and training settings the tests were written for, now that the defaults are
Megatron-LM's (docs/megatron-lm.md): RoPE, RMSNorm, SwiGLU without biases, no dropout,
Adam beta2 0.95, cosine decay, NaN/Inf steps skipped, signals handled."""

from __future__ import annotations


def swiglu_ffn(hidden_size: int) -> int:
    """The SwiGLU MLP size the tests' models had: 8/3 x hidden, rounded up to 64."""
    return -(-int(8 * hidden_size / 3) // 64) * 64


def modern_model(**fields) -> dict:
    """ModelConfig ``fields`` with the modern architecture filled in where they do not say
    otherwise (the SwiGLU MLP size from ``hidden_size``, as the tests' models had it)."""
    out = dict(
        position_embedding_type="rope",
        normalization="RMSNorm",
        swiglu=True,
        disable_bias_linear=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    out.update(fields)
    if out["swiglu"] and out.get("ffn_hidden_size") is None and "hidden_size" in out:
        out["ffn_hidden_size"] = swiglu_ffn(out["hidden_size"])
    return out


def modern_flags(hidden_size: int) -> list[str]:
    """The same as command-line flags, with the modern optimizer and robustness settings."""
    return [
        "--position-embedding-type", "rope", "--normalization", "RMSNorm", "--swiglu",
        "--disable-bias-linear", "--hidden-dropout", "0.0", "--attention-dropout", "0.0",
        "--ffn-hidden-size", str(swiglu_ffn(hidden_size)),
        "--adam-beta2", "0.95", "--lr-decay-style", "cosine", "--skip-nan-steps",
        "--exit-signal-handler",
    ]  # fmt: skip
