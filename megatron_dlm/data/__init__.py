"""Data: tokenizers, corpora, preprocessing into indexed datasets, and their metadata.

Modules are imported one by one (``from megatron_dlm.data.tokenizer import load_tokenizer``):
this package imports nothing itself, so the preprocessing tools start without torch or
megatron-core.
"""
