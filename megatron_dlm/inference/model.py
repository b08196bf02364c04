"""A loaded model as every tool sees it: ``generate(prompts, options)`` and ``score(requests)``.

Built by :func:`megatron_dlm.inference.load_model` from a Megatron-DLM checkpoint or an exported
Hugging Face folder; the sampler and the likelihood estimators only see its logits function, so
both sources generate and score through the same code.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from megatron_dlm.inference.likelihood import (
    LikelihoodRequest,
    ar_loglikelihoods,
    dlm_loglikelihoods,
)
from megatron_dlm.sampling import GenerationOutput, LogitsFn, SamplingConfig, generate

logger = logging.getLogger(__name__)


class TextTokenizer(Protocol):
    """What generation and scoring need from a tokenizer."""

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the data-parallel replicas (one when not distributed).

    Model-parallel ranks of one replica (TP/EP) share its ``rank``; ``group`` is the
    torch.distributed group of the replicas (None for one).
    """

    rank: int = 0
    size: int = 1
    group: Any = None
    is_main: bool = True
    """Global rank 0: the one process that writes outputs."""


@dataclass
class InferenceModel:
    """A model loaded once, with its tokenizer and special tokens.

    ``logits_fn`` keeps logits on ``device``; with a KV cache it is a
    :class:`~megatron_dlm.sampling.CachingLogitsFn`.
    """

    logits_fn: LogitsFn
    tokenizer: TextTokenizer
    bidirectional: bool
    mask_id: int | None
    eos_id: int
    pad_id: int
    vocab_size: int
    max_length: int
    device: torch.device
    source: str
    """``megatron`` or ``hf``."""
    path: str
    data_parallel: DataParallel = field(default_factory=DataParallel)
    hf_tokenizer: Any = None
    """The ``transformers`` tokenizer of an HF export (chat templates), else None."""
    close: Callable[[], None] = field(default=lambda: None)
    """Release what loading created (the process groups it initialised)."""

    # ----------------------------------------------------------------- text
    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer.tokenize(text))

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.detokenize(list(ids))

    # ----------------------------------------------------------------- generation
    def generate(
        self, prompts: Sequence[Sequence[int]], options: SamplingConfig | None = None
    ) -> GenerationOutput:
        """Continuations of ``prompts`` (token ids): iterative denoising for a DLM, left to
        right for an AR model. Raises ValueError for a prompt too long for the model."""
        return generate(
            self.logits_fn,
            prompts,
            bidirectional=self.bidirectional,
            mask_id=self.mask_id,
            pad_id=self.pad_id,
            eos_id=self.eos_id,
            options=options,
            vocab_size=self.vocab_size,
            max_length=self.max_length,
            device=self.device,
        )

    # ----------------------------------------------------------------- scoring
    def score(
        self,
        requests: Sequence[LikelihoodRequest],
        *,
        mc_num: int = 128,
        mc_batch_size: int = 32,
        cfg_scale: float = 0.0,
        seed: int = 0,
        batch_size: int = 16,
        greedy: bool | Sequence[bool] = True,
    ) -> list[tuple[float, bool]]:
        """(log-likelihood, is greedy) of each continuation given its context.

        DLMs: the Monte Carlo ELBO (a lower bound, ``mc_num`` masks per request); a
        continuation is greedy if decoding it greedily one token at a time (the most confident
        masked position first, as LLaDA's evaluation) reproduces it, checked when ``greedy``
        (one flag for all requests or one per request; False where it is not checked).
        AR models: the exact sum, greedy if every token is the argmax. An empty AR context is
        replaced by the end-of-sequence token. Contexts are cut from the left to fit the model.
        """
        requests = [self._fit(r) for r in requests]
        if not self.bidirectional:
            fixed = [
                r if r.context else LikelihoodRequest([self.eos_id], r.continuation)
                for r in requests
            ]
            return ar_loglikelihoods(
                self.logits_fn, fixed, batch_size=batch_size, vocab_size=self.vocab_size,
                pad_id=self.pad_id,
            )  # fmt: skip
        values = dlm_loglikelihoods(
            self.logits_fn, requests, mask_id=self.mask_id, mc_num=mc_num,
            mc_batch_size=mc_batch_size, cfg_scale=cfg_scale, seed=seed,
            vocab_size=self.vocab_size,
        )  # fmt: skip
        wanted = [greedy] * len(requests) if isinstance(greedy, bool) else list(greedy)
        checked = [i for i, w in enumerate(wanted) if w]
        flags = [False] * len(requests)
        matches = self.greedy_matches([requests[i] for i in checked], batch_size)
        for i, match in zip(checked, matches):
            flags[i] = match
        return list(zip(values, flags))

    def greedy_matches(
        self, requests: Sequence[LikelihoodRequest], batch_size: int = 16
    ) -> list[bool]:
        """Whether greedy one-token-at-a-time unmasking of each continuation reproduces it.

        The continuation starts fully masked; each of its n steps commits the single most
        confident masked position (one block of n, low-confidence remasking, temperature 0,
        no early stop): the DLM analogue of an AR model's greedy match.
        """
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            by_length[len(request.continuation)].append(index)
        matches = [False] * len(requests)
        for n, indices in by_length.items():
            options = SamplingConfig(
                gen_length=n, block_length=n, steps=n, temperature=0.0,
                remasking="low_confidence", stop_at_eos=False, truncate_after_eos=False,
            )  # fmt: skip
            for lo in range(0, len(indices), batch_size):
                chunk = indices[lo : lo + batch_size]
                out = self.generate([requests[i].context for i in chunk], options)
                for i, sequence in zip(chunk, out.sequences):
                    matches[i] = sequence == list(requests[i].continuation)
        return matches

    def _fit(self, request: LikelihoodRequest) -> LikelihoodRequest:
        """The request cut from the left (context first) to the model's maximum length."""
        n = len(request.continuation)
        if n > self.max_length:
            raise ValueError(
                f"a continuation of {n} tokens does not fit the model's maximum sequence length "
                f"{self.max_length}"
            )
        # AR inputs drop the last continuation token, so one more token fits.
        room = self.max_length - n + (0 if self.bidirectional else 1)
        if len(request.context) <= room:
            return request
        return LikelihoodRequest(
            request.context[len(request.context) - room :], request.continuation
        )
