"""lm-eval model ``megatron_dlm``: DLM likelihoods by Monte Carlo ELBO, AR exactly.

    megatron-dlm-eval --model megatron_dlm --model_args pretrained=DIR,mc_num=64 --tasks hellaswag
    torchrun --nproc-per-node 2 -m megatron_dlm.eval.cli --model megatron_dlm ...  # 2 replicas

``pretrained`` is an exported Hugging Face folder or a Megatron-DLM checkpoint directory, loaded
once by :func:`megatron_dlm.inference.load_model`; everything goes through its
:class:`~megatron_dlm.inference.InferenceModel`. lm-eval's built-in ``hf`` model scores
continuations autoregressively, which is wrong for a diffusion LM; here ``loglikelihood`` is the
ELBO (a lower bound, see :mod:`megatron_dlm.inference.likelihood`) with greedy match by greedy
one-token-at-a-time unmasking (as LLaDA's harness), ``loglikelihood_rolling`` the ELBO of the
text in lm-eval's rolling windows (also a bound), and ``generate_until`` runs our sampler and cuts
at the stop strings. For AR models both likelihoods and the greedy match are exact.

Under ``torchrun`` or ``accelerate launch`` each data-parallel replica (every process, or every
TP group with ``tensor_model_parallel_size``) evaluates its share of the requests: lm-eval's
evaluator splits them by :attr:`rank` / :attr:`world_size` and gathers the metrics through
:meth:`all_gather` / :meth:`gather_object`. Tokenization follows lm-eval's
:class:`~lm_eval.api.model.TemplateLM` (trailing context whitespace moves to the continuation;
the pair is encoded together and split where the context ends).
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from megatron_dlm.config import ConfigError, ParallelConfig
from megatron_dlm.config.sampling import SamplingConfig
from megatron_dlm.inference import InferenceModel, LikelihoodRequest

logger = logging.getLogger(__name__)

FALLBACK_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ message['content'] }}{%- if not loop.last -%}{{ '\\n\\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt and messages -%}{{ '\\n\\n' }}{%- endif -%}"
)
"""For models without a chat template (pretrained base models): the messages' contents joined
by blank lines, which is how lm-eval formats few-shot examples without one."""

_SCORE_CHUNK = 64  # requests per progress-bar update


def _bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


def _optional_float(value) -> float | None:
    return None if value in (None, "None", "none", "") else float(value)


@register_model("megatron_dlm")
class MegatronDLMEvalModel(TemplateLM):
    """lm-eval adapter; ``model_args`` are the keyword arguments of ``__init__``.

    Args:
        pretrained: a Megatron-DLM checkpoint or an exported Hugging Face folder.
        batch_size: prompts per generation batch, requests per AR scoring batch, and
            continuations per greedy-match batch.
        mc_num, mc_batch_size, cfg_scale: the ELBO's Monte Carlo masks per request, the
            masked sequences per forward pass, classifier-free guidance.
        check_greedy: DLMs: decide ``is_greedy`` by greedy unmasking (n forward passes per
            continuation of n tokens). ``auto`` (default): for documents with one continuation
            (loglikelihood tasks such as LAMBADA, whose ``acc`` is the greedy match), not for
            multiple-choice documents (only their ``exact_match`` metric reads it); true: for
            every request; false: never (False is reported).
        gen_length, steps, block_length, remasking, threshold, temperature, cache: sampler
            options for ``generate_until`` (the task's ``max_gen_toks`` caps ``gen_length``).
        chat_template: a Jinja chat template (or a file holding one) for
            ``--apply_chat_template``; default: the tokenizer's, else
            :data:`FALLBACK_CHAT_TEMPLATE`.
        tensor_model_parallel_size, expert_model_parallel_size: checkpoints: the layout of
            each replica under a launcher.
        inference_model: an already loaded model (Python use; ``pretrained`` is then ignored).
    """

    backend = "causal"  # TemplateLM: encode context + continuation together, then split

    def __init__(
        self,
        pretrained: str | None = None,
        batch_size: int | str = 8,
        max_batch_size: int | None = None,
        dtype: str = "float32",
        device: str | None = None,
        mc_num: int = 128,
        mc_batch_size: int = 32,
        cfg_scale: float = 0.0,
        check_greedy: bool | str = "auto",
        gen_length: int = 256,
        steps: int | None = None,
        block_length: int = 32,
        remasking: str = "low_confidence",
        threshold: float | None = None,
        temperature: float = 0.0,
        cache: str = "none",
        seed: int = 1234,
        tokenizer_model: str | None = None,
        tensor_model_parallel_size: int = 1,
        expert_model_parallel_size: int = 1,
        chat_template: str | None = None,
        inference_model: InferenceModel | None = None,
        **unknown: Any,
    ):
        super().__init__()
        if unknown:
            raise ConfigError(
                f"megatron_dlm: unknown model_args {', '.join(sorted(unknown))} (known: "
                "pretrained, batch_size, dtype, device, mc_num, mc_batch_size, cfg_scale, "
                "check_greedy, gen_length, steps, block_length, remasking, threshold, "
                "temperature, cache, seed, tokenizer_model, tensor_model_parallel_size, "
                "expert_model_parallel_size, chat_template)"
            )
        self.batch_size = 8 if str(batch_size).startswith("auto") else int(batch_size)
        self.mc_num = int(mc_num)
        self.mc_batch_size = int(mc_batch_size)
        self.cfg_scale = float(cfg_scale)
        if str(check_greedy).lower() not in ("auto", "1", "true", "yes", "0", "false", "no"):
            raise ConfigError(f"megatron_dlm: check_greedy={check_greedy}: auto, true or false")
        self.check_greedy = "auto" if str(check_greedy).lower() == "auto" else _bool(check_greedy)
        self._greedy_wanted: list[bool] | None = None
        self.seed = int(seed)
        self.sampling = dict(
            gen_length=int(gen_length),
            steps=int(steps) if steps not in (None, "None") else None,
            block_length=int(block_length),
            remasking=str(remasking),
            threshold=_optional_float(threshold),
            temperature=float(temperature),
            cache=str(cache),
            seed=int(seed),
        )
        self._options({})  # bad sampler options fail here, before the model loads
        if min(self.batch_size, self.mc_num, self.mc_batch_size) < 1:
            raise ConfigError("megatron_dlm: batch_size, mc_num and mc_batch_size must be >= 1")
        if inference_model is None:
            if pretrained is None:
                raise ConfigError("megatron_dlm: give model_args pretrained=DIR")
            from megatron_dlm.inference import load_model

            parallel = ParallelConfig(
                tensor_model_parallel_size=int(tensor_model_parallel_size),
                expert_model_parallel_size=int(expert_model_parallel_size),
            )
            inference_model = load_model(
                pretrained, parallel=parallel, device=device, dtype=dtype,
                tokenizer_model=tokenizer_model, seed=self.seed,
            )  # fmt: skip
        self.model = inference_model
        self.tokenizer = inference_model.hf_tokenizer  # TemplateLM's chat-template lookup
        self._chat_template = _read_template(chat_template) if chat_template else None
        self._rank = inference_model.data_parallel.rank
        self._world_size = inference_model.data_parallel.size
        self._device = inference_model.device

    # ----------------------------------------------------------------- lm-eval plumbing
    @property
    def eot_token_id(self) -> int:
        return self.model.eos_id

    @property
    def max_length(self) -> int:
        return self.model.max_length

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs
    ) -> list[int]:
        return self.model.tokenize(string)

    def tok_decode(self, tokens) -> str:
        return self.model.detokenize(tokens)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenated over the data-parallel replicas (lm-eval counts requests with it)."""
        group = self.model.data_parallel.group
        if group is None:
            return tensor.reshape(-1)
        flat = tensor.reshape(-1)
        parts = [torch.empty_like(flat) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, flat, group=group)
        return torch.cat(parts)

    def gather_object(self, obj, dst: int = 0):
        """Every replica's ``obj`` on replica ``dst`` (None on the others)."""
        group = self.model.data_parallel.group
        if group is None:
            return [obj]
        objects: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(objects, obj, group=group)
        return objects if self.rank == dst else None

    def barrier(self) -> None:
        if self.model.data_parallel.group is not None:
            torch.distributed.barrier(group=self.model.data_parallel.group)

    # ----------------------------------------------------------------- chat templates
    @property
    def tokenizer_name(self) -> str:
        template = self._template()
        digest = hashlib.sha256(template.encode()).hexdigest()[:12]
        return f"{Path(self.model.path).name}__{digest}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self._template()

    def _template(self) -> str:
        if self._chat_template is not None:
            return self._chat_template
        own = getattr(self.tokenizer, "chat_template", None)
        return own if isinstance(own, str) and own else FALLBACK_CHAT_TEMPLATE

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The conversation rendered with the chat template (see ``chat_template``)."""
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        special = {}
        if self.tokenizer is not None:
            special = {"bos_token": self.tokenizer.bos_token, "eos_token": self.tokenizer.eos_token}
        return env.from_string(self._template()).render(
            messages=chat_history,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
            **special,
        )

    # ----------------------------------------------------------------- likelihoods
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """lm-eval's tokenization (:meth:`TemplateLM.loglikelihood`), then
        :meth:`_loglikelihood_tokens`; decides first which requests get the greedy check."""
        if self.check_greedy == "auto":
            per_doc: dict[tuple, int] = defaultdict(int)
            for req in requests:
                per_doc[(req.task_name, req.doc_id)] += 1
            self._greedy_wanted = [per_doc[(r.task_name, r.doc_id)] == 1 for r in requests]
        else:
            self._greedy_wanted = [bool(self.check_greedy)] * len(requests)
        try:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        finally:
            self._greedy_wanted = None

    def _score(
        self, requests: list[LikelihoodRequest], greedy: list[bool] | bool = False
    ) -> list[tuple[float, bool]]:
        """(log-likelihood, is greedy) per request; an empty continuation is (0, True)."""
        wanted = [greedy] * len(requests) if isinstance(greedy, bool) else greedy
        nonempty = [i for i, r in enumerate(requests) if r.continuation]
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        scored = self.model.score(
            [requests[i] for i in nonempty], mc_num=self.mc_num, mc_batch_size=self.mc_batch_size,
            cfg_scale=self.cfg_scale, seed=self.seed, batch_size=self.batch_size,
            greedy=[wanted[i] or not self.model.bidirectional for i in nonempty],
        )  # fmt: skip
        for i, value in zip(nonempty, scored):
            results[i] = value
        return results

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """``requests``: ((context, continuation), context ids, continuation ids) from
        :meth:`TemplateLM.loglikelihood` -> [(log-likelihood, is greedy)]."""
        out: list[tuple[float, bool]] = []
        wanted = self._greedy_wanted or [self.check_greedy is True] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                   desc="Scoring requests")  # fmt: skip
        for lo in range(0, len(requests), _SCORE_CHUNK):
            chunk = requests[lo : lo + _SCORE_CHUNK]
            values = self._score(
                [LikelihoodRequest(list(c), list(x)) for _, c, x in chunk],
                wanted[lo : lo + _SCORE_CHUNK],
            )
            for (strings, _, _), value in zip(chunk, values):
                if strings is not None:
                    self.cache_hook.add_partial("loglikelihood", strings, value)
            out.extend(values)
            bar.update(len(chunk))
        bar.close()
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood in lm-eval's rolling windows (disjoint continuations).

        AR models: windows of the model's length, each conditioned on what precedes it in the
        window, as lm-eval's ``hf`` model. DLMs: each window's ELBO given the preceding half
        window (context and continuation together fit the model).
        """
        if self.model.bidirectional:
            max_seq_len, context_len = self.max_length - 1, max(1, self.max_length // 2)
        else:
            max_seq_len, context_len = self.max_length, 1
        out = []
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc="Rolling"):
            (text,) = req.args
            windows = [
                lm_utils.make_disjoint_window(w)
                for w in lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=max_seq_len, context_len=context_len,
                )
            ]  # fmt: skip
            values = self._score([LikelihoodRequest(list(c), list(x)) for c, x in windows])
            total = sum(value for value, _ in values)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    # ----------------------------------------------------------------- generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, req in enumerate(requests):
            groups[repr(sorted(req.args[1].items(), key=lambda kv: kv[0]))].append(index)
        results: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="Generating")
        for indices in groups.values():
            kwargs = dict(requests[indices[0]].args[1])
            until = kwargs.get("until") or []
            if isinstance(until, str):
                until = [until]
            options = self._options(kwargs)
            limit = self.max_length - options.gen_length
            prompts = {i: self.tok_encode(requests[i].args[0])[-limit:] for i in indices}
            # Longest first: similar lengths share a batch (results do not depend on it).
            order = sorted(indices, key=lambda i: -len(prompts[i]))
            for lo in range(0, len(order), self.batch_size):
                chunk = order[lo : lo + self.batch_size]
                output = self.model.generate([prompts[i] for i in chunk], options)
                for i, seq in zip(chunk, output.sequences):
                    text = self.tok_decode(seq)
                    for stop in until:
                        if stop and stop in text:
                            text = text[: text.index(stop)]
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(chunk))
        bar.close()
        return results

    def _options(self, gen_kwargs: dict) -> SamplingConfig:
        """Sampler options for a task's ``gen_kwargs`` (``max_gen_toks`` caps gen_length)."""
        options = dict(self.sampling)
        if "max_gen_toks" in gen_kwargs:
            options["gen_length"] = min(int(gen_kwargs["max_gen_toks"]), options["gen_length"])
        if hasattr(self, "model"):
            options["gen_length"] = min(options["gen_length"], self.max_length // 2)
        if "temperature" in gen_kwargs and _bool(gen_kwargs.get("do_sample", True)):
            options["temperature"] = float(gen_kwargs["temperature"])
        if gen_kwargs.get("do_sample") is False:
            options["temperature"] = 0.0
        if min(options["block_length"], options["gen_length"]) < 1:
            raise ConfigError("megatron_dlm: gen_length and block_length must be >= 1")
        block = min(options["block_length"], options["gen_length"])
        length = -(-options["gen_length"] // block) * block  # a multiple of the block
        options["gen_length"], options["block_length"] = length, block
        options["steps"] = options["steps"] or length
        blocks = length // block
        options["steps"] = max(blocks, options["steps"] // blocks * blocks)
        return SamplingConfig(**options)


def _read_template(value: str) -> str:
    """``chat_template``: a file holding a Jinja template, or the template itself."""
    path = Path(value)
    if len(value) < 4096 and path.is_file():
        return path.read_text(encoding="utf-8")
    return value
