"""Hugging Face export: modeling code shipped with every exported folder, and the converters.

* ``configuration_megatron_dlm``, ``modeling_megatron_dlm``: the config and model classes an
  export loads with ``trust_remote_code`` (torch + transformers only; copied into the folder).
* ``convert``: checkpoint (any TP/PP/EP layout) -> folder (tools/convert_to_hf.py);
  ``verify``: logits of the two compared; ``weights``: the tensor mapping, both directions.
* ``to_megatron``: folder -> checkpoint (tools/convert_hf_to_megatron.py).
* ``tokenizer_export``: the tokenizer files of an export.

Nothing is imported here, so ``import megatron_dlm.hf`` does not pull in transformers.
"""
