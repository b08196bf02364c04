"""An export converted back to a Megatron checkpoint continues where the original left off."""

from __future__ import annotations

import importlib.util
import shutil

import torch

from megatron_dlm.testing import run_distributed
from tests.hf import workers
from tests.hf.conftest import CASES, batch, model_config


def test_export_round_trips_to_a_checkpoint_that_training_loads(exported_dlm, tmp_path):
    (written,) = run_distributed(
        workers.import_export, 1, args=(str(exported_dlm.export), str(tmp_path / "ckpt"))
    )
    assert written.endswith("iter_0000003")
    tokens, valid = batch()
    (original,) = run_distributed(
        workers.reference_logits, 1, args=(str(exported_dlm.checkpoint), tokens, valid)
    )
    (imported,) = run_distributed(
        workers.reference_logits, 1, args=(str(tmp_path / "ckpt"), tokens, valid)
    )
    assert torch.equal(imported, original)  # fp32 export: bit-identical weights
    # Training's loader at the original run's layout (TP=2), as --load ... --finetune does.
    parallel, objective, model = CASES[exported_dlm.name]
    results = run_distributed(
        workers.load_for_training,
        2,
        args=(model_config(parallel, objective, **model), str(tmp_path / "ckpt"), tokens, valid),
    )
    torch.testing.assert_close(results[0][valid], original[valid], rtol=1e-5, atol=1e-5)


def test_without_provenance_the_config_comes_from_config_json(exported_ar, tmp_path):
    hf = tmp_path / "hf"
    shutil.copytree(exported_ar.export, hf)
    (hf / "megatron_dlm.json").unlink()
    (written,) = run_distributed(workers.import_export, 1, args=(str(hf), str(tmp_path / "ckpt")))
    tokens, valid = batch()
    (original,) = run_distributed(
        workers.reference_logits, 1, args=(str(exported_ar.checkpoint), tokens, valid)
    )
    (imported,) = run_distributed(
        workers.reference_logits, 1, args=(str(tmp_path / "ckpt"), tokens, valid)
    )
    torch.testing.assert_close(imported[valid], original[valid], rtol=0, atol=0)


def test_command_line_rejects_a_folder_that_is_not_an_export(tmp_path, capsys):
    path = workers.ROOT / "tools/convert_hf_to_megatron.py"
    spec = importlib.util.spec_from_file_location("convert_hf_to_megatron", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--hf", str(tmp_path), "--save", str(tmp_path / "ckpt")]) == 2
    assert "not a Hugging Face model folder" in capsys.readouterr().err
