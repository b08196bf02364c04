"""The sampler's logits function over a megatron-core GPTModel (any TP/EP), with KV caches.

Three ways to run the model, all through megatron-core's own layers:

* **no cache**: ``GPTModel.forward`` over every position (:meth:`MegatronLogits.__call__`).
* **AR, exact KV cache**: megatron-core's :class:`StaticInferenceContext`, as its static
  inference engine uses it: the prompt's keys and values are stored once, then each step runs
  the newest token (``sequence_len_offset``) and attends to the stored columns.
* **DLM, Fast-dLLM prefix / dual cache**: megatron-core's attention with an inference context
  attends to the columns *before* the new ones only (keys ``[:offset + len]``), so it cannot
  let a block attend to a cached suffix (dual), and writes every call's keys into the cache.
  So :class:`LayerKVCache` keeps each layer's keys and values itself, and a cached pass runs
  ``GPTModel.forward`` over the query columns with three PyTorch hooks, removed afterwards:
  the rotary embedding starts at the first query column (``RotaryEmbedding``'s ``offset``);
  each layer's core attention (``DotProductAttention``, after the QKV projection, QK-norm and
  RoPE) gets the cached keys and values of all columns with this pass's columns put in; the
  decoder's output keeps only the columns whose logits are wanted. Embedding, projections,
  MLP/MoE, norms, output layer and TP communication are megatron-core's, unchanged.

Positions count from each sequence's first valid token for learned absolute embeddings; RoPE is
applied by column (megatron-core's RoPE ignores ``position_ids``), which gives the same
attention scores for a left-padded row (RoPE depends on position differences only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from megatron.core import tensor_parallel
from megatron.core.inference.contexts import StaticInferenceContext


def attention_mask_for(valid: torch.Tensor, bidirectional: bool) -> torch.Tensor | None:
    """megatron-core's boolean mask [b, 1, L, L] (True = not attended), or None if not needed.

    Keys on left padding are masked; AR models add the causal mask (megatron-core applies a
    given mask instead of, not on top of, its default causal one).
    """
    if bool(valid.all()):
        return None
    b, length = valid.shape
    mask = (~valid)[:, None, None, :].expand(b, 1, length, length)
    if not bidirectional:
        causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).triu(1)
        mask = mask | causal
    return mask.contiguous()


def query_mask(valid: torch.Tensor, start: int, queries: int, causal: bool) -> torch.Tensor | None:
    """Mask [b, 1, Q, K] for queries at columns ``start .. start + Q - 1`` over key columns
    ``0 .. K - 1`` (``valid`` [b, K]); None when nothing is masked."""
    blocked = (~valid)[:, None, None, :]
    if causal:
        key_columns = torch.arange(valid.shape[1], device=valid.device)
        query_columns = torch.arange(start, start + queries, device=valid.device)
        blocked = blocked | (key_columns[None, :] > query_columns[:, None])
    if not bool(blocked.any()):
        return None
    return blocked.expand(valid.shape[0], 1, queries, valid.shape[1]).contiguous()


def positions_for(valid: torch.Tensor) -> torch.Tensor:
    """Position of each column counted from its row's first valid one. [b, L] -> [b, L]."""
    return (valid.long().cumsum(-1) - 1).clamp_min(0)


class LayerKVCache:
    """Keys and values of every layer at every column, for a DLM's prefix/dual cache.

    Stored as megatron-core's core attention receives them (after QK-norm and RoPE, on this
    rank's heads): ``[length, batch, groups, head_dim]`` per layer, allocated on first store.
    """

    def __init__(self, batch_size: int, length: int):
        self.batch_size, self.length = batch_size, length
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def merge(
        self,
        layer: int,
        rows: torch.Tensor,
        start: int,
        columns: int,
        key: torch.Tensor,
        value: torch.Tensor,
        store: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [columns, n, g, d] of ``rows``: this pass's (``key``/``value``
        [Q, n, g, d], at ``start``) where it ran, the cache's elsewhere."""
        queries = key.shape[0]
        if layer not in self.keys:
            shape = (self.length, self.batch_size, *key.shape[2:])
            self.keys[layer] = key.new_zeros(shape)
            self.values[layer] = value.new_zeros(shape)
        if store:
            self.keys[layer][start : start + queries, rows] = key
            self.values[layer][start : start + queries, rows] = value
        if start == 0 and queries == columns:
            return key, value
        keys = self.keys[layer][:columns, rows]  # a copy: the cache is not changed below
        values = self.values[layer][:columns, rows]
        keys[start : start + queries] = key
        values[start : start + queries] = value
        return keys, values


class StaticARCache:
    """megatron-core's :class:`StaticInferenceContext` for a batch whose rows only ever leave.

    The sampler drops sequences that reached EOS; their cache rows are dropped with them.
    """

    def __init__(self, batch_size: int, length: int):
        self.context = StaticInferenceContext(batch_size, length)
        self.rows = list(range(batch_size))

    def select(self, rows: list[int]) -> None:
        """Keep only ``rows`` (a subset of the rows held, in this order)."""
        if rows == self.rows:
            return
        keep = torch.tensor([self.rows.index(r) for r in rows])
        memory = self.context.key_value_memory_dict
        for layer, (keys, values) in memory.items():
            index = keep.to(keys.device)
            memory[layer] = (keys[:, index].contiguous(), values[:, index].contiguous())
        self.rows = list(rows)


class MegatronLogits:
    """A :class:`~megatron_dlm.sampling.common.CachingLogitsFn` over an unwrapped, eval-mode
    GPTModel with ``pre_process`` and ``post_process`` (one pipeline stage).

    With tensor parallelism every TP rank must call it with the same inputs; the vocabulary
    shards are gathered, so all ranks get the full logits, on the model's device.
    """

    def __init__(self, model: torch.nn.Module, *, bidirectional: bool):
        if not (getattr(model, "pre_process", True) and getattr(model, "post_process", True)):
            raise ValueError("inference runs one pipeline stage: load with PP=1")
        self.model = model
        self.bidirectional = bidirectional
        self.device = next(model.parameters()).device

    def __call__(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Logits [b, L, V] (float32) of every position (no cache)."""
        tokens, valid = tokens.to(self.device), valid.to(self.device)
        mask = attention_mask_for(valid, self.bidirectional)
        with torch.no_grad():
            logits = self.model(tokens, positions_for(valid), attention_mask=mask)
            logits = tensor_parallel.gather_from_tensor_model_parallel_region(logits)
        return logits.float()

    def init_cache(self, batch_size: int, length: int) -> LayerKVCache | StaticARCache:
        if self.bidirectional:
            return LayerKVCache(batch_size, length)
        return StaticARCache(batch_size, length)

    def logits_with_cache(
        self,
        cache: LayerKVCache | StaticARCache,
        rows: torch.Tensor,
        tokens: torch.Tensor,
        valid: torch.Tensor,
        start: int,
        *,
        store: bool,
        logits_columns: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """See :class:`~megatron_dlm.sampling.common.CachingLogitsFn`."""
        tokens, valid = tokens.to(self.device), valid.to(self.device)
        queries, columns = tokens.shape[1], valid.shape[1]
        lo, hi = logits_columns or (start, start + queries)
        if not start <= lo < hi <= start + queries <= columns:
            raise ValueError(f"logits columns {lo}..{hi} outside the query columns")
        positions = positions_for(valid)[:, start : start + queries]
        mask = query_mask(valid, start, queries, causal=not self.bidirectional)
        with torch.no_grad():
            if isinstance(cache, StaticARCache):
                keep = (lo - start, hi - start)
                return self._static_step(
                    cache, rows, tokens, positions, mask, start, store, keep
                ).float()
            rows = rows.to(self.device)
            with self._cached_pass(cache, rows, start, columns, store, (lo - start, hi - start)):
                logits = self.model(tokens, positions, attention_mask=mask)
            logits = tensor_parallel.gather_from_tensor_model_parallel_region(logits)
        return logits.float()

    def _static_step(
        self, cache, rows, tokens, positions, mask, start, store, keep
    ) -> torch.Tensor:
        """megatron-core's static KV cache: store columns [start, start + Q), attend to [0, start
        + Q). ``keep``: the wanted logits, relative to ``start`` (the last column alone is
        megatron-core's ``materialize_only_last_token_logits``)."""
        if not store or mask is not None and mask.shape[-1] != start + tokens.shape[1]:
            raise ValueError("the AR KV cache stores every pass and attends to all columns")
        cache.select(rows.tolist())
        context = cache.context
        context.sequence_len_offset = start
        context.batch_size_offset = 0
        if start == 0:
            context.enable_prefill_mode()
        else:
            context.enable_decode_mode()
        queries = tokens.shape[1]
        lo, hi = keep
        context.materialize_only_last_token_logits = hi - lo == 1 and hi == queries
        # megatron-core gathers the vocabulary shards itself in inference mode.
        logits = self.model(
            tokens, positions, attention_mask=mask, inference_context=context,
            runtime_gather_output=True,
        )  # fmt: skip
        return logits if context.materialize_only_last_token_logits else logits[:, lo:hi]

    @contextlib.contextmanager
    def _cached_pass(
        self,
        cache: LayerKVCache,
        rows: torch.Tensor,
        start: int,
        columns: int,
        store: bool,
        keep: tuple[int, int],
    ) -> Iterator[None]:
        """Hooks that make ``GPTModel.forward`` over the query columns a cached pass."""
        model, handles = self.model, []

        def rotary_offset(module, args, kwargs):
            return args, {**kwargs, "offset": start}

        def cached_attention(layer: int):
            def hook(module, args, kwargs):
                query, key, value, *rest = args
                key, value = cache.merge(layer, rows, start, columns, key, value, store)
                return (query, key, value, *rest), kwargs

            return hook

        def keep_columns(module, args, output):
            return output[keep[0] : keep[1]]  # [s, b, h]

        try:
            rotary = getattr(model, "rotary_pos_emb", None)
            if rotary is not None and start:
                handles.append(rotary.register_forward_pre_hook(rotary_offset, with_kwargs=True))
            for index, layer in enumerate(model.decoder.layers):
                attention = layer.self_attention.core_attention
                handles.append(
                    attention.register_forward_pre_hook(cached_attention(index), with_kwargs=True)
                )
            handles.append(model.decoder.register_forward_hook(keep_columns))
            yield
        finally:
            for handle in handles:
                handle.remove()


def megatron_logits_fn(model: torch.nn.Module, *, bidirectional: bool) -> MegatronLogits:
    """The sampler's logits function for ``model`` (see :class:`MegatronLogits`)."""
    return MegatronLogits(model, bidirectional=bidirectional)
