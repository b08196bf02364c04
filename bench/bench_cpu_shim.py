"""CPU shim overhead: megatron-core GPTModel step time with our shim vs the alternatives.

    python bench/bench_cpu_shim.py [--steps 10] [--threads 2]

Measured side by side in one process, interleaved round by round so machine noise hits every
variant alike (forward + backward, fp32, batch 4 x seq 256, ~14M parameters):

  plain      a plain-PyTorch GPT of the same architecture (RMSNorm, RoPE, SwiGLU, tied
             embeddings; attention through F.scaled_dot_product_attention)
  shim       megatron-core GPTModel (local spec) with Megatron-DLM's CPU shim, which rewrites
             CUDA assumptions per megatron-core module namespace (no per-op cost)
  funcmode   the same model with a generic TorchFunctionMode device layer on top, the other
             approach known to work (maps device="cuda" to CPU on every torch call)

Prints the median ms/step of each and the ratios shim/plain and funcmode/shim.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

SIZES = {
    # name: (vocab, hidden, layers, heads, ffn, seq, batch)
    "base": (8192, 384, 6, 6, 1024, 256, 4),  # ~14M parameters: compute-bound
    "tiny": (1024, 64, 2, 4, 192, 64, 4),  # ~0.2M parameters: per-op overhead dominates
}
VOCAB, HIDDEN, LAYERS, HEADS, FFN, SEQ, BATCH = SIZES["base"]


class PlainBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.RMSNorm(HIDDEN)
        self.qkv = nn.Linear(HIDDEN, 3 * HIDDEN, bias=False)
        self.proj = nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.norm2 = nn.RMSNorm(HIDDEN)
        self.fc1 = nn.Linear(HIDDEN, 2 * FFN, bias=False)
        self.fc2 = nn.Linear(FFN, HIDDEN, bias=False)

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, HEADS, -1).unbind(2)
        q, k = (_rope(t, cos, sin) for t in (q, k))
        attn = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))
        x = x + self.proj(attn.transpose(1, 2).reshape(b, s, -1))
        gate, up = self.fc1(self.norm2(x)).chunk(2, dim=-1)
        return x + self.fc2(F.silu(gate) * up)


def _rope(t, cos, sin):
    half = t.shape[-1] // 2
    rotated = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
    return t * cos + rotated * sin


class PlainGPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.blocks = nn.ModuleList(PlainBlock() for _ in range(LAYERS))
        self.norm = nn.RMSNorm(HIDDEN)
        dim = HIDDEN // HEADS
        freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
        angles = torch.outer(torch.arange(SEQ).float(), freqs).repeat(1, 2)
        self.register_buffer("cos", angles.cos()[None, :, None, :])
        self.register_buffer("sin", angles.sin()[None, :, None, :])

    def forward(self, tokens, labels):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        logits = self.norm(x) @ self.embed.weight.t()
        return F.cross_entropy(logits.view(-1, VOCAB), labels.view(-1))


class CudaToCpuMode(TorchFunctionMode):
    """The generic alternative: rewrite device arguments on every torch call."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if device is not None and (
            (isinstance(device, str) and device.startswith("cuda"))
            or (isinstance(device, torch.device) and device.type == "cuda")
            or (isinstance(device, int) and not isinstance(device, bool))
        ):
            kwargs["device"] = "cpu"
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        return func(*args, **kwargs)


def build_megatron():
    from megatron_dlm.config import DLMConfig, ModelConfig
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.models.vocab import Vocab
    from megatron_dlm.runtime.distributed import init_distributed

    cfg = DLMConfig(
        model=ModelConfig(
            num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS,
            ffn_hidden_size=FFN, seq_length=SEQ, make_vocab_size_divisible_by=128,
            # The architecture the plain-PyTorch reference has (RoPE, RMSNorm, SwiGLU, no biases).
            position_embedding_type="rope", normalization="RMSNorm", swiglu=True,
            disable_bias_linear=True, hidden_dropout=0.0, attention_dropout=0.0,
        )
    )  # fmt: skip
    init_distributed(cfg.parallel)
    (model,) = build_model(cfg, Vocab(size=VOCAB, mask_id=VOCAB - 1, eod_id=0, pad_id=1))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10, help="timed rounds per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from megatron_dlm.runtime.distributed import destroy_distributed
    from megatron_dlm.runtime.logging_utils import quiet_expected_warnings

    quiet_expected_warnings()
    for size in args.sizes:
        global VOCAB, HIDDEN, LAYERS, HEADS, FFN, SEQ, BATCH
        VOCAB, HIDDEN, LAYERS, HEADS, FFN, SEQ, BATCH = SIZES[size]
        print(f"== {size}")
        run(args)
        destroy_distributed()


def run(args) -> None:
    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
    labels = torch.randint(0, VOCAB, (BATCH, SEQ))
    positions = torch.arange(SEQ).expand(BATCH, -1)
    plain = PlainGPT()
    mcore = build_megatron()
    n_plain = sum(p.numel() for p in plain.parameters())
    n_mcore = sum(p.numel() for p in mcore.parameters())

    def step_plain():
        plain.zero_grad(set_to_none=True)
        plain(tokens, labels).backward()

    def step_shim():
        mcore.zero_grad(set_to_none=True)
        mcore(tokens, positions, attention_mask=None, labels=labels).mean().backward()

    def step_funcmode():
        with CudaToCpuMode():
            step_shim()

    variants = {"plain": step_plain, "shim": step_shim, "funcmode": step_funcmode}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        fn()
        fn()
    for _ in range(args.steps):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"torch {torch.__version__}, {args.threads} threads, batch {BATCH} x seq {SEQ}, fp32")
    print(f"parameters: plain {n_plain / 1e6:.1f}M, megatron-core {n_mcore / 1e6:.1f}M")
    for name, value in med.items():
        spread = statistics.pstdev(times[name])
        print(f"{name:>9}: {value:8.1f} ms/step (stdev {spread:.1f}, {args.steps} rounds)")
    print(f"ratio shim/plain        = {med['shim'] / med['plain']:.3f}")
    print(f"ratio funcmode/shim     = {med['funcmode'] / med['shim']:.3f}")
    assert math.isfinite(med["shim"])


if __name__ == "__main__":
    main()
