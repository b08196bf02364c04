"""lm-eval model ``megatron_dlm``: DLM likelihoods by Monte Carlo ELBO, AR exactly.

    lm_eval --model megatron_dlm --model_args pretrained=DIR,mc_num=64 --tasks hellaswag
    (through tools/evaluate.py, which registers this module first)

``pretrained`` is an exported Hugging Face folder or a Megatron-DLM checkpoint directory.
lm-eval's built-in ``hf`` model scores continuations autoregressively, which is wrong for a
diffusion LM; here ``loglikelihood`` is the ELBO (a lower bound, see
:mod:`megatron_dlm.eval.likelihood`), ``loglikelihood_rolling`` the ELBO of the whole text in
windows of the model's length (also a bound), and ``generate_until`` runs our sampler and cuts
at the stop strings. For AR models both likelihoods are exact.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from megatron_dlm.config.sampling import SamplingConfig
from megatron_dlm.eval.backends import EvalBackend, load_backend
from megatron_dlm.eval.likelihood import LikelihoodRequest, ar_loglikelihoods, dlm_loglikelihoods
from megatron_dlm.sampling import autoregressive_generate, diffusion_generate


def _bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


@register_model("megatron_dlm")
class MegatronDLMEvalModel(LM):
    """lm-eval adapter; ``model_args`` are the keyword arguments of ``__init__``."""

    def __init__(
        self,
        pretrained: str,
        batch_size: int | str = 8,
        dtype: str = "float32",
        device: str | None = None,
        mc_num: int = 128,
        mc_batch_size: int = 32,
        cfg_scale: float = 0.0,
        gen_length: int = 256,
        steps: int | None = None,
        block_length: int = 32,
        remasking: str = "low_confidence",
        threshold: float | None = None,
        temperature: float = 0.0,
        seed: int = 1234,
        tokenizer_model: str | None = None,
        backend: EvalBackend | None = None,
        **_: Any,  # lm-eval passes max_batch_size and friends
    ):
        super().__init__()
        self.backend = backend or load_backend(
            pretrained, device=device, dtype=dtype, tokenizer_model=tokenizer_model
        )
        self.batch_size = 8 if str(batch_size).startswith("auto") else int(batch_size)
        self.mc_num = int(mc_num)
        self.mc_batch_size = int(mc_batch_size)
        self.cfg_scale = float(cfg_scale)
        self.seed = int(seed)
        self.sampling = dict(
            gen_length=int(gen_length),
            steps=int(steps) if steps is not None else None,
            block_length=int(block_length),
            remasking=remasking,
            threshold=float(threshold) if threshold not in (None, "None") else None,
            temperature=float(temperature),
            seed=int(seed),
        )

    # ----------------------------------------------------------------- likelihoods
    def _split(self, context: str, continuation: str) -> LikelihoodRequest:
        """Tokenise like lm-eval's HF model: the pair together, split where the context ends."""
        tokenize = self.backend.tokenize
        whole = tokenize(context + continuation)
        ctx = tokenize(context) if context else []
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            return LikelihoodRequest(ctx, whole[len(ctx) :])
        return LikelihoodRequest(ctx, tokenize(continuation))

    def _loglikelihoods(self, requests: list[LikelihoodRequest]) -> list[tuple[float, bool]]:
        b = self.backend
        if b.bidirectional:
            values = dlm_loglikelihoods(
                b.logits_fn, requests, mask_id=b.mask_id, mc_num=self.mc_num,
                mc_batch_size=self.mc_batch_size, cfg_scale=self.cfg_scale, seed=self.seed,
                vocab_size=b.vocab_size,
            )  # fmt: skip
            # Greediness is not defined for a bound on a masked model.
            return [(v, False) for v in values]
        fixed = [
            r if r.context else LikelihoodRequest([b.eos_id], r.continuation) for r in requests
        ]
        return ar_loglikelihoods(
            b.logits_fn, fixed, batch_size=self.batch_size, vocab_size=b.vocab_size,
            pad_id=b.pad_id,
        )  # fmt: skip

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self._loglikelihoods([self._split(*req.args) for req in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood: windows of the model's length, each scored given the
        preceding window (the ELBO for DLMs, a lower bound)."""
        out = []
        window = self.backend.max_length // 2
        for req in requests:
            tokens = self.backend.tokenize(req.args[0])
            pieces = []
            for start in range(0, len(tokens), window):
                context = tokens[max(0, start - window) : start]
                pieces.append(LikelihoodRequest(context, tokens[start : start + window]))
            out.append(sum(value for value, _ in self._loglikelihoods(pieces)) if pieces else 0.0)
        return out

    # ----------------------------------------------------------------- generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, req in enumerate(requests):
            groups[repr(sorted(req.args[1].items(), key=lambda kv: kv[0]))].append(index)
        results: list[str] = [""] * len(requests)
        for indices in groups.values():
            kwargs = dict(requests[indices[0]].args[1])
            until = kwargs.get("until") or []
            if isinstance(until, str):
                until = [until]
            options = self._options(kwargs)
            for lo in range(0, len(indices), self.batch_size):
                chunk = indices[lo : lo + self.batch_size]
                prompts = [self.backend.tokenize(requests[i].args[0]) for i in chunk]
                output = self._generate(prompts, options)
                for i, seq in zip(chunk, output.sequences):
                    text = self.backend.detokenize(seq)
                    for stop in until:
                        if stop and stop in text:
                            text = text[: text.index(stop)]
                    results[i] = text
        return results

    def _options(self, gen_kwargs: dict) -> SamplingConfig:
        options = dict(self.sampling)
        if "max_gen_toks" in gen_kwargs:
            # The task's budget, capped by model_args' gen_length and the model's length.
            options["gen_length"] = min(int(gen_kwargs["max_gen_toks"]), options["gen_length"])
        options["gen_length"] = min(options["gen_length"], self.backend.max_length // 2)
        if "temperature" in gen_kwargs and _bool(gen_kwargs.get("do_sample", True)):
            options["temperature"] = float(gen_kwargs["temperature"])
        if gen_kwargs.get("do_sample") is False:
            options["temperature"] = 0.0
        block = min(options["block_length"], options["gen_length"])
        length = -(-options["gen_length"] // block) * block  # a multiple of the block
        options["gen_length"], options["block_length"] = length, block
        options["steps"] = options["steps"] or length
        blocks = length // block
        options["steps"] = max(blocks, options["steps"] // blocks * blocks)
        return SamplingConfig(**options)

    def _generate(self, prompts, options: SamplingConfig):
        b = self.backend
        common = dict(
            pad_id=b.pad_id, eos_id=b.eos_id, mask_id=b.mask_id, options=options,
            vocab_size=b.vocab_size, max_length=b.max_length,
        )  # fmt: skip
        limit = b.max_length - options.gen_length
        prompts = [p[-limit:] if limit > 0 else p for p in prompts]  # keep the prompt's tail
        if b.bidirectional:
            return diffusion_generate(b.logits_fn, prompts, **common)
        return autoregressive_generate(b.logits_fn, prompts, **common)
