"""Megatron-DLM checkpoint (any TP/PP/EP layout) -> Hugging Face folder.

What the folder loads as:

* a **diffusion LM**: our modeling code (``trust_remote_code``); ``AutoModel`` and
  ``AutoModelForMaskedLM`` give the model with its output layer (``model(x).logits``, as LLaDA
  and Dream), with ``generate()`` and Dream's ``diffusion_generate()``;
* an **AR model that is exactly a stock class** (Llama, Qwen2, Qwen3, Mixtral, Qwen2-MoE:
  :mod:`megatron_dlm.hf.architectures`): that class, with transformers' key names and no code
  (vLLM and lm-eval's ``hf`` backend load it); ``remote_code=True`` writes our code instead;
* any other AR model (learned positions, LayerNorm, GELU, ...): our modeling code,
  ``AutoModelForCausalLM``.

Weights are written in the training precision (``dtype``: bf16, fp16 or fp32) unless asked.

    <output>/
      config.json                     MegatronDLMConfig with auto_map (trust_remote_code),
                                      or the stock class's config (no auto_map, no code files)
      generation_config.json          sampler defaults (max_new_tokens, steps, block_length, ...)
      model.safetensors               or model-0000N-of-0000M.safetensors + index when large
      configuration_megatron_dlm.py   this package's config and modeling code
      modeling_megatron_dlm.py
      options.py common.py            Megatron-DLM's sampler (torch only), used by generate()
      diffusion.py autoregressive.py
      tokenizer.json                  a tokenizers JSON (AutoTokenizer: PreTrainedTokenizerFast)
      tokenizer_config.json
      megatron_dlm.json               provenance: training config, tokenizer record, iteration

The folder is written under a temporary name next to ``output`` and renamed when complete (and,
with ``verify``, checked), so an interrupted or failed conversion never leaves a half-written
export behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from megatron_dlm.checkpoint import CheckpointError, TokenizerRecord, read_checkpoint_info
from megatron_dlm.config import DLMConfig
from megatron_dlm.hf.architectures import (
    StockArchitecture,
    legacy_config_keys,
    stock_architecture_for,
    stock_export_config,
)
from megatron_dlm.hf.configuration_megatron_dlm import MegatronDLMConfig
from megatron_dlm.hf.verify import DEFAULT_RTOL, VerifyReport, verify_export
from megatron_dlm.hf.weights import megatron_to_hf
from megatron_dlm.models.trained import TrainedModel, load_trained
from megatron_dlm.runtime.distributed import single_process
from megatron_dlm.sampling import STANDALONE_MODULES, SamplingConfig

logger = logging.getLogger(__name__)

HF_DIR = Path(__file__).resolve().parent
SAMPLING_DIR = HF_DIR.parent / "sampling"
CODE_FILES = {
    "configuration_megatron_dlm.py": HF_DIR / "configuration_megatron_dlm.py",
    "modeling_megatron_dlm.py": HF_DIR / "modeling_megatron_dlm.py",
    **{f"{name}.py": SAMPLING_DIR / f"{name}.py" for name in STANDALONE_MODULES},
}
"""Code shipped in every export: file name in the folder -> source file."""
PROVENANCE_FILE = "megatron_dlm.json"
DTYPES = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
    "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
}  # fmt: skip
"""--dtype names (the short ones and torch's)."""


def training_dtype(load: str | Path) -> str:
    """The precision the checkpoint was trained in (``--bf16``, ``--fp16``, else fp32)."""
    precision = (read_checkpoint_info(load).config or {}).get("precision", {})
    return "bf16" if precision.get("bf16") else "fp16" if precision.get("fp16") else "fp32"


class ExportError(ValueError):
    """The export cannot be written: bad output folder or an unsupported model."""


class VerificationError(RuntimeError):
    """The exported model's logits differ from the Megatron model's."""

    def __init__(self, report: VerifyReport):
        super().__init__(str(report))
        self.report = report


@dataclass
class ExportResult:
    output: Path
    config: MegatronDLMConfig
    files: list[str]
    verify: VerifyReport | None = None


HF_RENAMES = {
    "num_layers": "num_hidden_layers",
    "ffn_hidden_size": "intermediate_size",
    "num_query_groups": "num_key_value_heads",
    "kv_channels": "head_dim",
    "init_method_std": "initializer_range",
}
"""ModelConfig field -> MegatronDLMConfig (Hugging Face) argument where the names differ; the
other fields that MegatronDLMConfig takes pass through by name (:func:`hf_model_fields`)."""
HF_NEGATED = {
    "disable_bias_linear": "add_bias_linear",
    "untie_embeddings_and_output_weights": "tie_word_embeddings",
}
"""ModelConfig switch -> the MegatronDLMConfig argument that is its negation."""


def hf_model_fields() -> dict[str, str]:
    """Every ModelConfig field that MegatronDLMConfig takes: ours -> its argument name."""
    import dataclasses
    import inspect

    from megatron_dlm.config import ModelConfig

    accepted = inspect.signature(MegatronDLMConfig.__init__).parameters
    fields = {}
    for f in dataclasses.fields(ModelConfig):
        name = HF_RENAMES.get(f.name, f.name)
        if name in accepted and f.name not in HF_NEGATED:
            fields[f.name] = name
    return fields


def hf_config_from_megatron(cfg: DLMConfig, tokenizer: TokenizerRecord) -> MegatronDLMConfig:
    """The HF configuration of a training config and its checkpoint's tokenizer record."""
    m = cfg.model
    if m.is_moe and not m.disable_bias_linear:
        raise ExportError(
            "MoE models with linear biases (--no-disable-bias-linear) cannot be exported: "
            "megatron-core's expert bias paths are not reproduced by the Hugging Face model"
        )
    if m.apply_layernorm_1p:
        raise ExportError(
            "models with --apply-layernorm-1p cannot be exported: the Hugging Face model has no "
            "zero-centred norm weights"
        )
    objective = cfg.objective.objective
    config = MegatronDLMConfig(
        **{hf: getattr(m, ours) for ours, hf in hf_model_fields().items()},
        **{hf: not getattr(m, ours) for ours, hf in HF_NEGATED.items()},
        vocab_size=tokenizer.vocab_size,
        objective=objective,
        mask_token_id=tokenizer.mask_id,
        pad_token_id=tokenizer.pad_id,
        eos_token_id=tokenizer.eod_id,
    )
    head = "AutoModelForMaskedLM" if objective == "dlm" else "AutoModelForCausalLM"
    model_class = model_class_name(config)
    config.architectures = [model_class]
    config.auto_map = {
        "AutoConfig": "configuration_megatron_dlm.MegatronDLMConfig",
        # A DLM answers AutoModel with its logits, as LLaDA's and Dream's exports do; an AR
        # model keeps transformers' convention (AutoModel: the transformer without a head).
        "AutoModel": f"modeling_megatron_dlm.{model_class}"
        if objective == "dlm"
        else "modeling_megatron_dlm.MegatronDLMModel",
        head: f"modeling_megatron_dlm.{model_class}",
    }
    return config


def model_class_name(config: MegatronDLMConfig) -> str:
    return "MegatronDLMForCausalLM" if config.is_causal else "MegatronDLMForMaskedLM"


def generation_config_for(config: MegatronDLMConfig, options: SamplingConfig | None = None):
    """generation_config.json: the sampler's defaults under HF names where HF has them."""
    from transformers import GenerationConfig

    values = {
        k: v for k, v in dataclasses.asdict(options or SamplingConfig()).items() if v is not None
    }
    temperature = values.pop("temperature")
    values["max_new_tokens"] = values.pop("gen_length")
    if temperature > 0:
        values.update(do_sample=True, temperature=temperature)
    else:
        values["do_sample"] = False
    return GenerationConfig(
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        mask_token_id=config.mask_token_id,
        **values,
    )


def write_weights(
    megatron_state: dict[str, torch.Tensor],
    config: MegatronDLMConfig,
    directory: Path,
    *,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | int = "5GB",
) -> None:
    """Map ``megatron_state`` (TP=1 names) to the HF model and ``save_pretrained`` it.

    The model is built on the meta device and given the mapped tensors, so no memory or time is
    spent on a random initialisation. Writes config.json and the safetensors file(s).
    """
    from megatron_dlm.hf import modeling_megatron_dlm as modeling

    tensors = {
        k: v.to(dtype).contiguous() for k, v in megatron_to_hf(megatron_state, config).items()
    }
    config.dtype = dtype
    with torch.device("meta"):
        model = getattr(modeling, model_class_name(config))(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    expected_missing = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if unexpected or set(missing) != expected_missing:
        raise ExportError(
            f"the mapped weights do not fit the Hugging Face model: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.save_pretrained(directory, max_shard_size=max_shard_size)


def write_stock_weights(
    megatron_state: dict[str, torch.Tensor],
    config: MegatronDLMConfig,
    arch: StockArchitecture,
    directory: Path,
    *,
    dtype: torch.dtype,
    max_shard_size: str | int = "5GB",
) -> None:
    """config.json, generation_config.json and safetensors of the stock class ``arch``.

    Written in the layout of the Hugging Face hub's checkpoints of that class (per-expert
    tensors for MoE), with keys older transformers releases read (``rope_theta``,
    ``torch_dtype``) besides v5's; ``mask_token_id`` and ``is_causal`` are kept for tools that
    read them (transformers ignores them).
    """
    from huggingface_hub import save_torch_state_dict
    from transformers import GenerationConfig

    tensors = {  # copies: split halves of a fused tensor must not share its storage on disk
        k: v.to(dtype, copy=True).contiguous()
        for k, v in arch.table.megatron_to_hf(megatron_state, config).items()
    }
    hf_config = stock_export_config(config, arch)
    values = legacy_config_keys({**hf_config.to_dict(), "dtype": str(dtype).replace("torch.", "")})
    values.update(mask_token_id=config.mask_token_id, is_causal=True)
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    (directory / "config.json").write_text(text, encoding="utf-8")
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    ).save_pretrained(directory)
    save_torch_state_dict(tensors, directory, max_shard_size=max_shard_size)


def write_export(
    loaded: TrainedModel,
    directory: Path,
    *,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | int = "5GB",
    tokenizer_model: str | None = None,
    skip_tokenizer: bool = False,
    remote_code: bool = False,
) -> tuple[MegatronDLMConfig, list[str]]:
    """Write every file of the export into ``directory`` (which must exist and be empty).

    An AR model that is exactly a stock transformers class is written as that class unless
    ``remote_code`` (see the module docstring).
    """
    from megatron_dlm.hf.tokenizer_export import (
        check_auto_tokenizer,
        declared_tokenizer_class,
        export_tokenizer,
    )

    config = hf_config_from_megatron(loaded.config, loaded.tokenizer)
    arch, why = stock_architecture_for(config)
    tokenizer_path = None if skip_tokenizer else tokenizer_model or loaded.tokenizer.model
    if (
        arch is not None
        and arch.model_type == "qwen2"
        and tokenizer_path
        and (declared_tokenizer_class(tokenizer_path) or "").removesuffix("Fast")
        != "Qwen2Tokenizer"
    ):
        # transformers 5 loads any model_type=qwen2 folder with its Qwen2Tokenizer.
        arch, why = None, "Qwen2's shape but not Qwen2's tokenizer (transformers 5 would load "
        why += "a Qwen2 folder with Qwen2Tokenizer)"
    if arch is not None and not remote_code:
        logger.info("an AR model that is exactly %s: written as that class (no remote code)",
                    arch.causal_lm)  # fmt: skip
        write_stock_weights(
            loaded.state_dict(), config, arch, directory, dtype=dtype,
            max_shard_size=max_shard_size,
        )  # fmt: skip
    else:
        if config.is_causal and not remote_code:
            logger.info("written with Megatron-DLM's modeling code (trust_remote_code): %s",
                        why)  # fmt: skip
        write_weights(
            loaded.state_dict(), config, directory, dtype=dtype, max_shard_size=max_shard_size
        )
        generation_config_for(config).save_pretrained(directory)
        for name, source in CODE_FILES.items():
            shutil.copyfile(source, directory / name)
        _add_legacy_dtype(directory / "config.json")
    if not skip_tokenizer:
        record = loaded.tokenizer
        if record.type == "NullTokenizer":
            raise ExportError(
                "the checkpoint was trained with NullTokenizer, which has no tokenizer files: "
                "pass --skip-tokenizer"
            )
        path = tokenizer_path
        if not path:
            raise ExportError(
                "the checkpoint records no tokenizer path: pass --tokenizer-model PATH "
                "(tokenizer.json or sentencepiece .model) or --skip-tokenizer"
            )
        recorded_hf = record.type in ("HuggingFaceTokenizer", "GPT2BPETokenizer")
        llama2 = record.type == "Llama2Tokenizer"
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            if llama2 or (
                recorded_hf and not (tokenizer_model and not _is_hf_path(tokenizer_model))
            ):
                # The run's tokenizer, with the tokens it appended and its roles named (GPT-2's
                # files become a tokenizer.json, a Llama-2 sentencepiece model is converted).
                recorded_hf = True
                from megatron_dlm.data.hf_tokenizer import write_recorded_tokenizer
                from megatron_dlm.data.tokenizer import TokenizerError

                try:
                    path = write_recorded_tokenizer(record, Path(scratch) / "tok", tokenizer_model)
                except TokenizerError as exc:
                    raise ExportError(f"cannot export the tokenizer: {exc}") from exc
            else:
                recorded_hf = False
            export_tokenizer(
                path,
                "HuggingFaceTokenizer" if recorded_hf else None if tokenizer_model else record.type,
                directory,
                vocab_size=loaded.vocab.size,
                special_ids={
                    "mask_token": loaded.vocab.mask_id,
                    "eos_token": loaded.vocab.eod_id,
                    "pad_token": loaded.vocab.pad_id,
                },
                model_max_length=config.max_position_embeddings,
                vocab_sha256=loaded.tokenizer.vocab_sha256,
            )
        check_auto_tokenizer(directory)
    provenance = {
        "source_checkpoint": str(loaded.directory.resolve()),
        "iteration": loaded.iteration,
        "tokenizer": loaded.tokenizer.to_dict(),
        "megatron_config": loaded.config.to_dict(),
        "padded_vocab_size": loaded.module.embedding.word_embeddings.weight.shape[0],
    }
    text = json.dumps(provenance, indent=2, default=str) + "\n"
    (directory / PROVENANCE_FILE).write_text(text, encoding="utf-8")
    return config, sorted(p.name for p in directory.iterdir())


def _is_hf_path(path: str | Path) -> bool:
    """A Hugging Face tokenizer folder or ``tokenizer.json`` (not a sentencepiece model)."""
    p = Path(path).expanduser()
    return p.is_dir() or p.suffix == ".json"


def _add_legacy_dtype(config_file: Path) -> None:
    """transformers < 4.56 reads the weight dtype from ``torch_dtype`` (v5: ``dtype``)."""
    values = json.loads(config_file.read_text(encoding="utf-8"))
    values = legacy_config_keys(values)
    config_file.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_for_export(load: str | Path) -> TrainedModel:
    """The checkpoint's model in this one process, full tensors (inside ``single_process``)."""
    if not Path(load).exists():
        raise CheckpointError(f"--load {load}: no such directory")
    return load_trained(load, for_export=True)


def check_output_dir(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportError(
            f"--output {output} already exists and is not empty: choose a new folder (the "
            "converter never overwrites an export)"
        )


def convert_checkpoint(
    load: str | Path,
    output: str | Path,
    *,
    dtype: str | None = None,
    tokenizer_model: str | None = None,
    skip_tokenizer: bool = False,
    verify: bool = False,
    verify_rtol: float = DEFAULT_RTOL,
    max_shard_size: str | int = "5GB",
    remote_code: bool = False,
) -> ExportResult:
    """Export the checkpoint ``load`` (any saved layout) to the new folder ``output``.

    Runs in this process (a one-process torch.distributed world is created if none exists).
    ``dtype`` (``bf16``, ``fp16``, ``fp32``; default: the training precision) is the weights';
    ``remote_code`` writes our modeling code also for an AR model that is a stock class.

    Raises:
        CheckpointError: missing or corrupt checkpoint.
        ExportError: ``output`` is not empty, or the model cannot be exported.
        TokenizerExportError: the tokenizer cannot be exported.
        VerificationError: with ``verify``, the logits differ beyond the tolerance (nothing is
            written then).
    """
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    output = Path(output)
    check_output_dir(output)
    if not Path(load).exists():
        raise CheckpointError(f"--load {load}: no such directory")
    dtype = dtype or training_dtype(load)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        with single_process():
            loaded = load_for_export(load)
            config, files = write_export(
                loaded,
                partial,
                dtype=DTYPES[dtype],
                max_shard_size=max_shard_size,
                tokenizer_model=tokenizer_model,
                skip_tokenizer=skip_tokenizer,
                remote_code=remote_code,
            )
            report = None
            if verify:
                rounding = DTYPES[dtype] if DTYPES[dtype] != torch.float32 else None
                report = verify_export(loaded, partial, rtol=verify_rtol, round_weights_to=rounding)
                logger.info("%s", report)
                if not report.ok:
                    raise VerificationError(report)
        check_output_dir(output)
        if output.exists():
            output.rmdir()  # empty (checked above)
        partial.rename(output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("exported %s -> %s", load, output)
    return ExportResult(output=output, config=config, files=files, verify=report)


def verify_existing_export(
    load: str | Path, output: str | Path, *, verify_rtol: float = DEFAULT_RTOL
) -> VerifyReport:
    """Compare an existing export with its checkpoint (nothing is written)."""
    output = Path(output)
    if not (output / "config.json").is_file():
        raise ExportError(f"{output} is not an exported folder (no config.json)")
    saved = json.loads((output / "config.json").read_text())
    dtype = saved.get("dtype") or saved.get("torch_dtype") or "float32"  # v5 / v4 key
    with single_process():
        loaded = load_for_export(load)
        rounding = DTYPES.get(str(dtype).replace("torch.", ""))
        rounding = None if rounding in (None, torch.float32) else rounding
        return verify_export(loaded, output, rtol=verify_rtol, round_weights_to=rounding)
