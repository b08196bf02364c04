"""Test utilities that ship with the package (reusable by projects built on Megatron-DLM)."""

from megatron_dlm.testing.distributed import DistributedTestError, run_distributed, shutdown_pools

__all__ = ["DistributedTestError", "run_distributed", "shutdown_pools"]
