"""Hugging Face export: modeling code shipped with every exported folder, and the converters.

* ``configuration_megatron_dlm``, ``modeling_megatron_dlm``: the config and model classes an
  export loads with ``trust_remote_code`` (torch + transformers only; copied into the folder).
* ``convert``: checkpoint (any TP/PP/EP layout) -> folder (tools/convert_to_hf.py);
  ``verify``: logits of the two compared; ``weights``: one tensor-name table per architecture,
  read both directions; ``architectures``: stock transformers configs (Llama, Qwen2, Qwen3,
  Qwen2-MoE, Mixtral) <-> ours, with what cannot be mapped refused.
* ``to_megatron``: folder (our export, or a stock AR checkpoint) -> checkpoint
  (tools/convert_hf_to_megatron.py); ``tokenizer_import``: its tokenizer with the DLM's
  special tokens.
* ``tokenizer_export``: the tokenizer files of an export (sampling from an export is
  :mod:`megatron_dlm.inference`).

Nothing is imported here, so ``import megatron_dlm.hf`` does not pull in transformers.
"""
