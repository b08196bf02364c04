"""The CPU shim: scoped to megatron-core, version-guarded, only applied without CUDA."""

from __future__ import annotations

import pytest
import torch

from megatron_dlm.runtime import cpu_shim
from megatron_dlm.testing import run_distributed
from tests.runtime import workers


@pytest.mark.skipif(torch.cuda.is_available(), reason="the shim is for machines without CUDA")
def test_shim_maps_cuda_to_cpu_inside_megatron_core_only():
    (scope,) = run_distributed(workers.shim_scope, 1)
    assert scope["active"]
    assert scope["megatron_current_device"] == "cpu"
    assert scope["megatron_zeros_device"] == "cpu"
    assert scope["megatron_device_is_cpu"] == "cpu"
    assert scope["isinstance_device"]
    assert scope["global_torch_untouched"]
    assert scope["global_cuda"] != "works", "the shim leaked into torch.cuda for everyone"
    assert scope["te_names_defined"]
    assert scope["rng_tracker_fork"]


def test_version_guard_refuses_untested_megatron_core(monkeypatch):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.99.0")
    monkeypatch.delenv(cpu_shim.ALLOW_UNTESTED_ENV, raising=False)
    with pytest.raises(cpu_shim.ShimVersionError, match=r"megatron-core 0\.99\.0 .* tested with"):
        cpu_shim.check_version()
    monkeypatch.setenv(cpu_shim.ALLOW_UNTESTED_ENV, "1")
    assert cpu_shim.check_version() == "0.99.0"


def test_installed_megatron_core_is_a_tested_version():
    assert cpu_shim.check_version() in cpu_shim.TESTED_MEGATRON_CORE_VERSIONS
