"""Generation from an exported folder, for tools/generate.py (``--hf DIR``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from megatron_dlm.sampling import GenerationOutput, SamplingConfig


@dataclass
class HFTextTokenizer:
    """An ``AutoTokenizer`` with the ``tokenize``/``detokenize`` calls our tools use."""

    tokenizer: object

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def load_hf_generator(
    path: str | Path, options: SamplingConfig, device: str | None = None
) -> tuple[Callable[[list[list[int]]], GenerationOutput], HFTextTokenizer, bool]:
    """(generate(prompt_ids) -> GenerationOutput, tokenizer, is_main) for an exported folder.

    The model is loaded with ``trust_remote_code`` and samples with ``options`` through its own
    ``generate_sequences`` (the sampler files shipped in the folder).
    """
    from transformers import AutoTokenizer

    from megatron_dlm.hf.verify import load_exported

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--hf {path}: not an exported folder (no config.json)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_exported(path, device=device)
    if not hasattr(model, "generate_sequences"):
        raise ValueError(
            f"--hf {path} is a stock transformers {type(model).__name__} (no Megatron-DLM code): "
            "sample with transformers' generate() or vLLM, or export with --remote-code"
        )
    # AutoTokenizer reads config.json through AutoConfig: trust our config class, or it prompts.
    tokenizer = HFTextTokenizer(AutoTokenizer.from_pretrained(path, trust_remote_code=True))
    values = {f.name: getattr(options, f.name) for f in fields(SamplingConfig)}

    def generate(prompt_ids: list[list[int]]) -> GenerationOutput:
        return model.generate_sequences(prompt_ids, **values)

    return generate, tokenizer, True
