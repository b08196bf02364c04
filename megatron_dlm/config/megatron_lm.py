"""Megatron-LM's option set: what pretrain_dlm.py accepts beyond its own config fields.

Every option of Megatron-LM's ``pretrain_gpt.py`` (core_v0.16.1; the list is
``megatron_lm_flags.tsv`` next to this file, read from Megatron-LM's own parser) is one of:

- a config field of this project (``megatron_dlm/config/*.py``), with Megatron-LM's name,
  meaning and default (the exceptions are listed in docs/megatron-lm.md);
- accepted without effect: :data:`INERT`, each with the reason it changes nothing here (a
  logging extra, a kernel the layers choose themselves, a knob of a feature this stack does
  differently). The run's log names the ones it was given;
- refused: any other Megatron-LM option exits with status 2 and a message naming it, rather
  than argparse's "unrecognized arguments".
"""

from __future__ import annotations

import argparse
import csv
import functools
from dataclasses import dataclass
from pathlib import Path

FLAGS_FILE = Path(__file__).with_name("megatron_lm_flags.tsv")
INERT_DEST = "megatron_lm_inert"
"""Namespace attribute listing the inert options given (for the log)."""


@dataclass(frozen=True)
class MegatronFlag:
    """One row of Megatron-LM's parser: option string, dest, default (repr) and choices."""

    flag: str
    dest: str
    default: str
    choices: str
    group: str

    @property
    def is_switch(self) -> bool:
        """A flag without a value (store_true / store_false)."""
        return self.default in ("True", "False") and not self.choices


@functools.cache
def megatron_lm_flags() -> dict[str, MegatronFlag]:
    """Megatron-LM core_v0.16.1's options, by option string."""
    with FLAGS_FILE.open(newline="") as fh:
        rows = csv.DictReader(fh, delimiter="\t")
        return {r["flag"]: MegatronFlag(**r) for r in rows if r["flag"] not in ("--help",)}


_LOGGING = "a Megatron-LM logging extra: metrics.jsonl, the console and TensorBoard always get "
_LOGGED = _LOGGING + "loss, learning rate, grad norm, tokens/s, TFLOP/s and MFU"

INERT: dict[str, str] = {
    "--use-mcore-models": "the models are always megatron-core's (deprecated in Megatron-LM)",
    "--no-position-embedding": (
        "deprecated in Megatron-LM and unused by megatron-core's GPTModel: "
        "--position-embedding-type decides"
    ),
    "--cross-entropy-loss-fusion": (
        "the objective computes its own (masked, weighted) cross-entropy from the logits"
    ),
    "--cross-entropy-fusion-impl": "see --cross-entropy-loss-fusion",
    "--calculate-per-token-loss": (
        "the loss is always averaged over the global batch's tokens here (layout-independent)"
    ),
    "--manual-gc": "Python's garbage collector runs automatically; no effect on the model",
    "--manual-gc-interval": "see --manual-gc",
    "--no-manual-gc-eval": "see --manual-gc",
    "--empty-unused-memory-level": "a CUDA caching-allocator knob; no effect on the model",
    "--log-params-norm": _LOGGED,
    "--log-num-zeros-in-grad": _LOGGED,
    "--log-throughput": _LOGGED + " (always on)",
    "--log-progress": _LOGGED,
    "--log-timers-to-tensorboard": _LOGGED,
    "--log-validation-ppl-to-tensorboard": _LOGGING + "the validation loss",
    "--log-memory-to-tensorboard": _LOGGED,
    "--no-log-loss-scale-to-tensorboard": _LOGGED,
    "--log-world-size-to-tensorboard": _LOGGED,
    "--log-device-memory-used": _LOGGED,
    "--log-memory-interval": _LOGGED,
    "--log-energy": _LOGGED,
    "--log-straggler": _LOGGED,
    "--log-max-attention-logit": _LOGGED,
    "--profile": "profiling hooks are not wired in: run under nsys or torch.profiler",
    "--use-pytorch-profiler": "see --profile",
    "--profile-step-start": "see --profile",
    "--profile-step-end": "see --profile",
    "--profile-ranks": "see --profile",
    "--rerun-mode": (
        "Megatron-LM's rerun state machine is not implemented; NaN/Inf losses and gradients are "
        "handled by --check-for-nan-in-loss-and-grad (stop) or --skip-nan-steps (skip)"
    ),
    "--non-persistent-save-interval": (
        "no non-persistent checkpoints: only --save-interval checkpoints (and those at the end, "
        "on a signal, and at --exit-interval/--exit-duration-in-mins) are written"
    ),
    "--non-persistent-ckpt-type": "see --non-persistent-save-interval",
    "--non-persistent-global-ckpt-dir": "see --non-persistent-save-interval",
    "--non-persistent-local-ckpt-dir": "see --non-persistent-save-interval",
    "--non-persistent-local-ckpt-algo": "see --non-persistent-save-interval",
    "--auto-detect-ckpt-format": "torch_dist is the only checkpoint format here",
    "--ckpt-fully-parallel-load": "the checkpoint code chooses dist_checkpointing's strategies",
    "--ckpt-fully-parallel-save": "see --ckpt-fully-parallel-load",
    "--no-ckpt-fully-parallel-save": "see --ckpt-fully-parallel-load",
    "--no-create-attention-mask-in-dataloader": (
        "attention masks are never built by the data loader: the objective sets them"
    ),
    "--accumulate-allreduce-grads-in-fp32": (
        "gradients are always accumulated and reduced in fp32 (--grad-reduce-in-bf16 reduces "
        "them in bf16)"
    ),
    "--tiktoken-pattern": "read only by Megatron-LM's TikTokenizer",
    "--tiktoken-num-special-tokens": "see --tiktoken-pattern",
    "--tiktoken-special-tokens": "see --tiktoken-pattern",
}
"""Megatron-LM options accepted without effect, with the reason. Documented in
docs/megatron-lm.md (a test keeps the two in step)."""

MEGADLMS_INERT: dict[str, tuple[str, str]] = {
    "--wandb-run-id": (
        "?",
        "the Weights & Biases run id is kept in the checkpoint, and a resumed run continues it",
    ),
    "--wandb-resume": ("?", "see --wandb-run-id"),
    "--wandb-mode": ("?", "set the WANDB_MODE environment variable (e.g. offline)"),
    "--wandb-tags": ("*", "not passed to Weights & Biases"),
    "--wandb-notes": ("?", "not passed to Weights & Biases"),
}
"""MegaDLMs' own options (not Megatron-LM's) accepted without effect: (nargs, reason)."""

REFUSED: dict[str, str] = {
    "--use-legacy-models": "only megatron-core models exist here",
    "--spec": "the layer spec follows --transformer-impl and the objective",
    "--num-layers-per-virtual-pipeline-stage": "use --num-virtual-stages-per-pipeline-rank",
    "--use-torch-fsdp2": "data parallelism is megatron-core's DDP (with the distributed optimizer)",
    "--use-megatron-fsdp": "see --use-torch-fsdp2",
    "--tp-comm-overlap": "Transformer Engine's TP communication overlap is not wired in",
    "--fp8-param": "use --fp8-param-gather",
}
"""Megatron-LM options refused with a specific reason (all others get a generic one)."""


class _Inert(argparse.Action):
    """Consume an inert option (and its value) and note it for the log."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = list(getattr(namespace, INERT_DEST, []) or [])
        given.append(option_string)
        setattr(namespace, INERT_DEST, given)


class _Refused(argparse.Action):
    """Exit with status 2 naming the option."""

    def __init__(self, *args, reason: str | None = None, **kwargs):
        self.reason = reason
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        why = self.reason or "it has no counterpart in Megatron-DLM"
        parser.error(
            f"{option_string}: this Megatron-LM option is not supported ({why}); "
            "see docs/megatron-lm.md"
        )


def _nargs(flag: MegatronFlag) -> int | str:
    return 0 if flag.is_switch else "?"


def add_megatron_lm_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every Megatron-LM option the parser does not already define: inert or refused."""
    inert = parser.add_argument_group(
        "Megatron-LM options accepted without effect", "see docs/megatron-lm.md for the reasons"
    )
    refused = parser.add_argument_group("Megatron-LM options refused (exit 2, naming the option)")
    for option, reason in INERT.items():
        meg = megatron_lm_flags()[option]
        inert.add_argument(
            option,
            action=_Inert,
            nargs=_nargs(meg) if meg.is_switch else "*",
            dest=INERT_DEST,
            default=argparse.SUPPRESS,
            help=f"no effect: {reason}",
        )
    for option, (nargs, reason) in MEGADLMS_INERT.items():
        inert.add_argument(
            option,
            action=_Inert,
            nargs=nargs,
            dest=INERT_DEST,
            default=argparse.SUPPRESS,
            help=f"MegaDLMs' option, no effect: {reason}",
        )
    known = set(parser._option_string_actions)
    for option in megatron_lm_flags():
        if option in known:
            continue
        refused.add_argument(
            option,
            action=_Refused,
            nargs="*",
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            reason=REFUSED.get(option),
            help=argparse.SUPPRESS,
        )
