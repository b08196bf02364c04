"""Hugging Face folder -> Megatron-DLM checkpoint: our exports, and stock AR models.

Two kinds of folder come in:

* **our exports** (tools/convert_to_hf.py, remote code or stock class): the training config
  comes from the export's ``megatron_dlm.json`` (the run that produced it) when present, else
  from ``config.json``; the tokenizer record is the one the run had.
* **stock AR checkpoints** (Llama, Qwen2, Qwen3, Qwen2-MoE, Mixtral: any local folder with
  ``config.json``, safetensors and ``tokenizer.json``): the architecture is mapped by
  :mod:`megatron_dlm.hf.architectures` (or refused, naming the config field), the tokenizer
  is completed with a mask (and, if needed, a padding) token by
  :mod:`megatron_dlm.hf.tokenizer_import`, and the embedding/output rows of added tokens start
  at the mean of the existing rows. The checkpoint records the AR objective; training adapts
  it with ``--finetune --objective dlm`` (or continues it with ``--objective ar``).

Either way the weights go through the architecture's weight table into a TP=PP=EP=1 model that
is saved with dist_checkpointing, so training and ``load_trained`` load it at any layout.
A stock import writes, besides ``iter_0000000/``::

    <save>/tokenizer/    tokenizer.json + tokenizer_config.json (the roles named)
    <save>/model.yaml    the architecture and tokenizer flags: pretrain_dlm.py --config
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from megatron_dlm.checkpoint import TokenizerRecord
from megatron_dlm.config import DLMConfig
from megatron_dlm.hf.architectures import StockArchitecture, UnsupportedModelError
from megatron_dlm.hf.configuration_megatron_dlm import MegatronDLMConfig
from megatron_dlm.hf.convert import PROVENANCE_FILE, ExportError
from megatron_dlm.hf.verify import VerifyReport
from megatron_dlm.hf.weights import MEGATRON_DLM, WeightTable
from megatron_dlm.models.vocab import Vocab

logger = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
RECIPE_FILE = "model.yaml"
IMPORT_RTOL = 1e-5
"""--verify tolerance of an import (fp32 against transformers' own model)."""


@dataclass
class ImportResult:
    checkpoint: Path
    """The ``iter_*`` directory written."""
    architecture: str
    """``megatron_dlm`` (our export) or the stock ``model_type``."""
    recipe: Path | None = None
    tokenizer: Path | None = None
    added_tokens: tuple[str, ...] = ()
    verify: VerifyReport | None = None


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` or its shards, in float32."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("model*.safetensors"))
    if not files:
        raise ExportError(f"{directory}: no model*.safetensors files")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors.update({k: v.float() for k, v in load_file(file).items()})
        except Exception as exc:  # safetensors' own error type is not an OSError
            raise ExportError(f"{file}: cannot read the weights ({exc})") from exc
    return tensors


def training_config(
    directory: Path, config: MegatronDLMConfig | None
) -> tuple[dict, TokenizerRecord, int | None]:
    """(DLMConfig dict, tokenizer record, padded vocabulary rows or None) for our export: from
    its provenance file, else from ``config`` (its config.json)."""
    provenance = directory / PROVENANCE_FILE
    if provenance.is_file():
        record = json.loads(provenance.read_text())
        saved = record["megatron_config"]
        tokenizer = TokenizerRecord.from_dict(record["tokenizer"], f"{provenance}: tokenizer")
        return saved, tokenizer, record.get("padded_vocab_size")
    from megatron_dlm.hf.convert import HF_NEGATED, hf_model_fields

    model = {ours: getattr(config, hf) for ours, hf in hf_model_fields().items()}
    model.update({ours: not getattr(config, hf) for ours, hf in HF_NEGATED.items()})
    model["seq_length"] = config.max_position_embeddings
    if not config.num_experts:
        model["moe_ffn_hidden_size"] = None
    tokenizer = TokenizerRecord(
        vocab_size=config.vocab_size,
        mask_id=config.mask_token_id,
        eod_id=config.eos_token_id,
        pad_id=config.pad_token_id,
    )
    return {"model": model, "objective": {"objective": config.objective}}, tokenizer, None


def is_our_export(directory: Path, raw_config: dict) -> bool:
    return (directory / PROVENANCE_FILE).is_file() or raw_config.get("model_type") == "megatron_dlm"


def import_hf_folder(
    directory: str | Path,
    save: str | Path,
    *,
    iteration: int = 0,
    mask_token: str | None = None,
    eod_token: str | None = None,
    pad_token: str | None = None,
    verify: bool = False,
    verify_rtol: float = IMPORT_RTOL,
) -> ImportResult:
    """Write the Hugging Face folder ``directory`` as a Megatron-DLM checkpoint under ``save``.

    Raises:
        ExportError: not a model folder, missing weights, or weights that do not fit.
        UnsupportedModelError: an architecture or setting megatron-core cannot reproduce.
        TokenizerImportError: the tokenizer lacks what the special-token options name.
        VerificationError: with ``verify``, the logits differ (nothing is written then).
    """
    directory, save = Path(directory), Path(save)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ExportError(f"--hf {directory} is not a Hugging Face model folder (no config.json)")
    raw = json.loads(config_file.read_text(encoding="utf-8"))
    if is_our_export(directory, raw):
        given = [f for f, v in (("--mask-token", mask_token), ("--eod-token", eod_token),
                                ("--pad-token", pad_token)) if v is not None]  # fmt: skip
        if given:
            raise ExportError(
                f"{', '.join(given)}: {directory} is a Megatron-DLM export, whose tokenizer "
                "record is used as it is"
            )
        return _import_export(directory, save, iteration, verify, verify_rtol)
    return _import_stock(
        directory, save, raw, iteration=iteration, mask_token=mask_token, eod_token=eod_token,
        pad_token=pad_token, verify=verify, verify_rtol=verify_rtol,
    )  # fmt: skip


def _load_mapped(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ExportError(f"the weights do not fit the Megatron model: missing {missing}, "
                          f"unexpected {unexpected}")  # fmt: skip


def _import_export(
    directory: Path, save: Path, iteration: int, verify: bool, verify_rtol: float
) -> ImportResult:
    from megatron_dlm.checkpoint import TrainState, save_checkpoint
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.models.trained import trained_config
    from megatron_dlm.runtime.distributed import single_process

    if verify:
        raise ExportError(
            "--verify: an export is compared with its checkpoint by tools/convert_to_hf.py "
            "--verify-only; the import maps the same tensors back"
        )
    from megatron_dlm.hf.convert import hf_config_from_megatron

    if (directory / PROVENANCE_FILE).is_file():  # also a stock-class export: no config of ours
        saved, tokenizer, padded_rows = training_config(directory, None)
        config = hf_config_from_megatron(DLMConfig.from_dict(saved), tokenizer)
    else:
        config = MegatronDLMConfig.from_pretrained(directory)
        saved, tokenizer, padded_rows = training_config(directory, config)
    cfg = trained_config(saved, embedding_rows=padded_rows, for_export=True)
    vocab = Vocab.from_record(tokenizer)
    table = _export_table(directory)
    with single_process():
        (model,) = build_model(cfg, vocab)
        rows = model.embedding.word_embeddings.weight.shape[0]
        _load_mapped(model, table.hf_to_megatron(read_hf_weights(directory), config, rows))
        written = save_checkpoint(
            save,
            TrainState(iteration=iteration),
            [model],
            config=DLMConfig.from_dict(saved),  # the run's config, defaults filled in
            tokenizer=tokenizer,
        )
    return ImportResult(checkpoint=written, architecture="megatron_dlm")


def _export_table(directory: Path) -> WeightTable:
    """The weight names of our export: our modeling code's, or the stock class it was written
    as (an AR export of a stock architecture)."""
    from megatron_dlm.hf.architectures import STOCK

    model_type = json.loads((directory / "config.json").read_text()).get("model_type")
    return STOCK[model_type].table if model_type in STOCK else MEGATRON_DLM


def _import_stock(
    directory: Path,
    save: Path,
    raw: dict,
    *,
    iteration: int,
    mask_token: str | None,
    eod_token: str | None,
    pad_token: str | None,
    verify: bool,
    verify_rtol: float,
) -> ImportResult:
    from transformers import AutoConfig

    from megatron_dlm.checkpoint import TrainState, save_checkpoint
    from megatron_dlm.config import DataConfig, ModelConfig, ObjectiveConfig
    from megatron_dlm.data.tokenizer import DLMTokenizer
    from megatron_dlm.hf.architectures import read_stock_config
    from megatron_dlm.hf.convert import VerificationError, hf_config_from_megatron
    from megatron_dlm.hf.tokenizer_import import import_tokenizer
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.models.trained import trained_config
    from megatron_dlm.runtime.distributed import single_process

    try:
        hf_config = AutoConfig.from_pretrained(directory)
    except (ValueError, KeyError, OSError) as exc:
        raise UnsupportedModelError(
            f"{directory}/config.json: transformers cannot read it (model_type "
            f"{raw.get('model_type')!r}): {exc}"
        ) from exc
    arch, fields = read_stock_config(hf_config, f"{directory}/config.json")
    final_tokenizer = (save / TOKENIZER_DIR).resolve()
    if final_tokenizer.exists():
        raise ExportError(
            f"--save {save} already holds an imported tokenizer ({final_tokenizer}): import "
            "into a new directory"
        )
    created = not save.exists()
    save.mkdir(parents=True, exist_ok=True)
    partial = save / f".{TOKENIZER_DIR}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        imported = import_tokenizer(
            directory, partial, model_config=raw,
            mask_token=mask_token, eod_token=eod_token, pad_token=pad_token,
        )  # fmt: skip
        record = TokenizerRecord.from_tokenizer(
            DLMTokenizer(partial, "HuggingFaceTokenizer"),
            model=str(final_tokenizer / "tokenizer.json"),
        )
        if (record.mask_id, record.eod_id, record.pad_id) != (
            imported.mask_id, imported.eod_id, imported.pad_id
        ):  # fmt: skip
            raise ExportError(f"the written tokenizer resolves to other special ids: {record}")
        cfg = DLMConfig(
            model=ModelConfig(**fields),
            objective=ObjectiveConfig(objective="ar"),
            data=DataConfig(
                tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(final_tokenizer)
            ),
        )
        vocab = Vocab.from_record(record)
        mapping_config = hf_config_from_megatron(cfg, record)
        build_cfg = trained_config(cfg.to_dict(), embedding_rows=None, for_export=True)
        with single_process():
            (model,) = build_model(build_cfg, vocab)
            rows = model.embedding.word_embeddings.weight.shape[0]
            tensors = resize_vocabulary(
                read_hf_weights(directory), imported.original_size, imported.size,
                tied=mapping_config.tie_word_embeddings,
            )  # fmt: skip
            _load_mapped(model, arch.table.hf_to_megatron(tensors, mapping_config, rows))
            model.eval()
            report = None
            if verify:
                report = verify_import(
                    model, directory, imported.original_size, vocab, rtol=verify_rtol,
                    length=min(32, cfg.model.max_position_embeddings),
                )  # fmt: skip
                logger.info("%s", report)
                if not report.ok:
                    raise VerificationError(report)
            written = save_checkpoint(
                save, TrainState(iteration=iteration), [model], config=cfg, tokenizer=record
            )
        partial.rename(final_tokenizer)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if created and save.is_dir() and not any(save.iterdir()):
            save.rmdir()  # a failed import leaves nothing behind
    recipe = write_recipe(save / RECIPE_FILE, cfg, arch, directory, imported.added)
    logger.info("imported %s (%s) -> %s", directory, arch.model_type, written)
    return ImportResult(
        checkpoint=written,
        architecture=arch.model_type,
        recipe=recipe,
        tokenizer=final_tokenizer,
        added_tokens=tuple(imported.added),
        verify=report,
    )


def resize_vocabulary(
    tensors: dict[str, torch.Tensor], original: int, size: int, *, tied: bool
) -> dict[str, torch.Tensor]:
    """Embedding (and output) rows for a vocabulary of ``size`` tokens.

    Rows past the tokenizer's ``original`` tokens (the model's own padding) are dropped; rows
    of tokens the import added start at the mean of the original rows, so a new token begins as
    an average token rather than noise.
    """
    names = ["model.embed_tokens.weight"] + ([] if tied else ["lm_head.weight"])
    out = dict(tensors)
    for name in names:
        if name not in out:
            continue  # reported by the weight table
        rows = out[name]
        if rows.shape[0] < original:
            raise ExportError(
                f"{name} has {rows.shape[0]} rows but the tokenizer has {original} tokens"
            )
        kept = rows[:original]
        extra = kept.mean(dim=0, keepdim=True).expand(size - original, -1)
        out[name] = torch.cat([kept, extra]).contiguous()
    return out


@torch.no_grad()
def verify_import(
    model: torch.nn.Module,
    directory: Path,
    original_vocab: int,
    vocab: Vocab,
    *,
    rtol: float = IMPORT_RTOL,
    length: int = 32,
) -> VerifyReport:
    """Logits of the imported (causal) Megatron model against transformers' own model.

    Two sequences of the original vocabulary, one left-padded; both models get the same
    positions (counted from the first valid token). Compared over the original vocabulary.
    """
    from transformers import AutoModelForCausalLM

    from megatron_dlm.hf.modeling_megatron_dlm import positions_from_mask
    from megatron_dlm.hf.verify import sample_batch
    from megatron_dlm.inference.megatron import megatron_logits_fn

    tokens, valid = sample_batch(original_vocab, length, vocab.eod_id)
    reference = megatron_logits_fn(model, bidirectional=False)(tokens, valid)[..., :original_vocab]
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    out = hf(input_ids=tokens, attention_mask=valid.long(), position_ids=positions_from_mask(valid))
    logits = out.logits.float()[..., :original_vocab]
    diff = (logits - reference).abs()[valid]
    scale = reference[valid].abs().max().item()
    return VerifyReport(
        max_abs_diff=diff.max().item(),
        max_abs_logit=scale,
        tolerance=rtol * max(1.0, scale),
        positions=int(valid.sum()),
        against="transformers' " + type(hf).__name__,
    )


def write_recipe(path: Path, cfg: DLMConfig, arch: StockArchitecture, source: Path,
                 added: list[str]) -> Path:  # fmt: skip
    """``model.yaml``: the flags that rebuild this model (``pretrain_dlm.py --config``)."""
    import yaml

    model = cfg.to_dict()["model"]
    for name in ("transformer_impl", "use_cpu_initialization", "recompute_granularity",
                 "recompute_method", "recompute_num_layers", "moe_grouped_gemm"):  # fmt: skip
        model.pop(name, None)
    if not cfg.model.is_moe:
        model = {k: v for k, v in model.items() if not k.startswith("moe_") and k != "num_experts"}
    data = {"tokenizer_type": cfg.data.tokenizer_type, "tokenizer_model": cfg.data.tokenizer_model}
    header = (
        f"# {source.resolve()} ({arch.causal_lm}), imported by tools/convert_hf_to_megatron.py.\n"
        f"# Tokens added: {', '.join(added) or 'none'}.\n"
        "# pretrain_dlm.py --config THIS --load <this directory> --finetune --objective dlm ...\n"
    )
    body = yaml.safe_dump({"model": model, "data": data}, sort_keys=False)
    path.write_text(header + body, encoding="utf-8")
    return path
