"""Lets megatron-core run on a machine without CUDA (CPU + gloo).

megatron-core assumes a GPU: it allocates on ``device="cuda"`` literals and on
``torch.cuda.current_device()``, creates CUDA streams and events, keeps RNG states on the CUDA
generator and checks ``tensor.type() == "torch.cuda.FloatTensor"``. None of that is about the
algorithms, so instead of forking megatron-core we rewrite those assumptions in one place.

How: every ``megatron.core.*`` module (already imported, or imported later, through an import
hook) gets its global name ``torch`` replaced by :class:`_CpuTorch`, a namespace that forwards
to the real ``torch`` but maps CUDA devices to the CPU in tensor factories, ``torch.device`` and
``torch.autocast``, and whose ``torch.cuda`` is a CPU stand-in (streams and events are no-ops,
RNG state is the CPU generator's, ``current_device()`` is the CPU). Lookups are cached on the
namespace, so the hot path costs what a module attribute lookup costs: no per-op dispatch layer
(a ``TorchFunctionMode`` doing the same costs 5-8% of a CPU step; see bench/RESULTS.md).

A few patches cannot be scoped to a module and are listed in :func:`apply` with the
megatron-core failure each one addresses. The shim is applied only when CUDA is absent and only
on the megatron-core version it was tested with (:data:`TESTED_MEGATRON_CORE_VERSIONS`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import logging
import sys
import types

import torch

TESTED_MEGATRON_CORE_VERSIONS = ("0.16.1",)
"""megatron-core releases this shim was tested against; others are refused."""

ALLOW_UNTESTED_ENV = "MEGATRON_DLM_ALLOW_UNTESTED_MCORE"
"""Set to 1 to apply the shim to an untested megatron-core release anyway (at your own risk)."""

_APPLIED = False
_CPU = torch.device("cpu")


class ShimVersionError(RuntimeError):
    """Raised when the installed megatron-core is not a version the shim was tested with."""


def is_needed() -> bool:
    """True when the process has no usable CUDA device, so megatron-core needs the shim."""
    return not torch.cuda.is_available()


def is_applied() -> bool:
    return _APPLIED


def _is_cuda(device) -> bool:
    if isinstance(device, str):
        return device.startswith("cuda")
    if isinstance(device, torch.device):
        return device.type == "cuda"
    # An int device ordinal means "that CUDA device" to torch factories.
    return isinstance(device, int) and not isinstance(device, bool)


def _cpu_factory(fn):
    """Wrap a torch factory so that CUDA devices and pinned memory become plain CPU tensors."""

    @functools.wraps(fn)
    def factory(*args, **kwargs):
        if "device" in kwargs and _is_cuda(kwargs["device"]):
            kwargs["device"] = _CPU
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        return fn(*args, **kwargs)

    return factory


_FACTORIES = (
    "tensor", "as_tensor", "empty", "zeros", "ones", "full", "arange", "linspace", "eye",
    "rand", "randn", "randint", "randperm", "empty_like", "zeros_like", "ones_like",
    "full_like", "rand_like", "randn_like", "empty_strided",
)  # fmt: skip


class _DeviceMeta(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, torch.device)


class _Device(metaclass=_DeviceMeta):
    """``torch.device`` whose CUDA devices are the CPU (still usable in ``isinstance``)."""

    def __new__(cls, *args, **kwargs):
        if args and _is_cuda(args[0]) or _is_cuda(kwargs.get("type")):
            return _CPU
        return torch.device(*args, **kwargs)


def _autocast(device_type, *args, **kwargs):
    # schedules.py: torch.autocast("cuda", dtype=config.autocast_dtype)
    return torch.autocast("cpu" if device_type == "cuda" else device_type, *args, **kwargs)


class _NullStream:
    """Stand-in for torch.cuda.Stream/Event: work on the CPU is already ordered."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def record_event(self, event=None):
        return event if event is not None else _NullStream()

    def query(self) -> bool:
        return True

    def elapsed_time(self, other) -> float:
        return 0.0

    def __getattr__(self, name):
        # synchronize, wait_stream, wait_event, record, ...: nothing to wait for.
        return _noop


def _noop(*args, **kwargs):
    return None


def _stream_context(stream=None):
    return contextlib.nullcontext(stream)


class _AnyIndex:
    """``torch.cuda.default_generators[idx]`` for any idx (the index is the CPU device here)."""

    def __init__(self, item):
        self._item = item

    def __getitem__(self, index):
        return self._item

    def __len__(self):
        return 1


def _lazy_call(callback, **kwargs):
    # torch.cuda._lazy_call defers until CUDA initialises, which never happens here.
    callback()


class _CpuCuda:
    """The ``torch.cuda`` megatron-core sees: the CPU generator, no streams, no memory stats."""

    def __init__(self):
        cpu_gen = torch.default_generator
        self.current_device = lambda: _CPU
        self.synchronize = _noop
        self.empty_cache = _noop
        self.set_device = _noop
        self.Stream = _NullStream
        self.Event = _NullStream
        self.stream = _stream_context
        self.current_stream = _NullStream
        self.default_stream = _NullStream
        self.device = lambda *a, **k: contextlib.nullcontext()
        # RNG: CudaRNGStatesTracker swaps named states in and out of "the CUDA generator"
        # (tensor_parallel/random.py). On CPU the generator that dropout and init draw from is
        # the CPU default generator, so that is the one the tracker must swap.
        self.get_rng_state = lambda device=None: torch.get_rng_state()
        self.set_rng_state = lambda state, device=None: torch.set_rng_state(state)
        self.manual_seed = torch.manual_seed
        self.manual_seed_all = torch.manual_seed
        self.default_generators = _AnyIndex(cpu_gen)
        self.random = types.SimpleNamespace(
            get_rng_state=self.get_rng_state, set_rng_state=self.set_rng_state
        )
        self._lazy_call = _lazy_call
        self._lazy_init = _noop
        self.memory_allocated = lambda *a, **k: 0
        self.max_memory_allocated = lambda *a, **k: 0
        self.memory_reserved = lambda *a, **k: 0
        self.max_memory_reserved = lambda *a, **k: 0
        self.reset_peak_memory_stats = _noop
        self.nvtx = types.SimpleNamespace(range_push=_noop, range_pop=_noop, mark=_noop)

    def __getattr__(self, name):
        value = getattr(torch.cuda, name)
        setattr(self, name, value)
        return value


class _GlooDistributed:
    """``torch.distributed`` with the uneven collectives gloo lacks.

    The MoE alltoall dispatcher with expert tensor parallelism gathers and reduce-scatters
    token shards of different lengths (tensor_parallel/mappings.py, ``output_split_sizes``);
    NCCL accepts uneven lists, gloo requires equal sizes.
    """

    def __init__(self):
        import torch.distributed as dist

        self._dist = dist

    def all_gather(self, tensor_list, tensor, group=None, async_op=False):
        dist = self._dist
        if all(t.shape == tensor.shape for t in tensor_list):
            return dist.all_gather(tensor_list, tensor, group=group, async_op=async_op)
        longest = max(t.shape[0] for t in tensor_list)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        buffers = [torch.empty_like(padded) for _ in tensor_list]
        dist.all_gather(buffers, padded, group=group)
        for out, buf in zip(tensor_list, buffers):
            out.copy_(buf[: out.shape[0]])
        return None

    def reduce_scatter(self, output, input_list, op=None, group=None, async_op=False):
        dist = self._dist
        op = dist.ReduceOp.SUM if op is None else op
        if all(t.shape == output.shape for t in input_list):
            return dist.reduce_scatter(output, input_list, op=op, group=group, async_op=async_op)
        full = torch.cat([t.contiguous() for t in input_list])
        dist.all_reduce(full, op=op, group=group)
        rank = dist.get_rank(group)
        start = sum(t.shape[0] for t in input_list[:rank])
        output.copy_(full[start : start + output.shape[0]])
        return None

    def __getattr__(self, name):
        value = getattr(self._dist, name)
        setattr(self, name, value)
        return value


class _CpuTorch:
    """The ``torch`` that megatron-core modules see when CUDA is absent (see module docstring)."""

    def __init__(self):
        for name in _FACTORIES:
            setattr(self, name, _cpu_factory(getattr(torch, name)))
        self.device = _Device
        self.autocast = _autocast
        self.cuda = _CpuCuda()
        self.distributed = _GlooDistributed()

    def __getattr__(self, name):
        # Cache so later lookups are plain instance-dict hits (torch's attributes are constant).
        value = getattr(torch, name)
        setattr(self, name, value)
        return value


_CPU_TORCH: _CpuTorch | None = None


def _patch_module_globals(module: types.ModuleType) -> None:
    """Point one megatron-core module's ``torch`` (and names taken from torch.cuda) at the shim."""
    namespace = vars(module)
    if namespace.get("torch") is torch:
        namespace["torch"] = _CPU_TORCH
    # `from torch.cuda import _lazy_call, device as device_ctx_manager` (tensor_parallel/random.py)
    for name, value in list(namespace.items()):
        if isinstance(value, types.FunctionType) and value in _REPLACED_FUNCTIONS:
            # A wrapped megatron-core function imported by name elsewhere (e.g. optimizer.py's
            # `from .clip_grads import clip_grad_by_total_norm_fp32`).
            namespace[name] = _REPLACED_FUNCTIONS[value]
        elif isinstance(value, (types.FunctionType, type)) and getattr(value, "__module__", "") in (
            "torch.cuda",
            "torch.cuda.random",
        ):
            replacement = _CPU_TORCH.cuda.__dict__.get(getattr(value, "__name__", name))
            if replacement is not None:
                namespace[name] = replacement


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _apply_module_fixes(module)
        _patch_module_globals(module)


class _MegatronCoreFinder(importlib.abc.MetaPathFinder):
    """Patches megatron-core modules imported after :func:`apply` (many import lazily)."""

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("megatron.core"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchingLoader(spec.loader)
        return spec


_TYPED_AS_CUDA_DEPTH = 0


@contextlib.contextmanager
def _cpu_tensors_typed_as_cuda():
    """Make ``tensor.type()`` report ``torch.cuda.*`` names for CPU tensors.

    The optimizer and grad clipping dispatch on ``param.type() == 'torch.cuda.FloatTensor'``
    (optimizer.py, distrib_optimizer.py, clip_grads.py) and raise for anything else. Re-entrant:
    the wrapped functions call each other.
    """
    global _TYPED_AS_CUDA_DEPTH
    if _TYPED_AS_CUDA_DEPTH:
        _TYPED_AS_CUDA_DEPTH += 1
        try:
            yield
        finally:
            _TYPED_AS_CUDA_DEPTH -= 1
        return
    original = torch.Tensor.type

    def cuda_type(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None:
            name = original(self)
            return name.replace("torch.", "torch.cuda.", 1) if self.device.type == "cpu" else name
        return original(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = cuda_type
    _TYPED_AS_CUDA_DEPTH = 1
    try:
        yield
    finally:
        _TYPED_AS_CUDA_DEPTH = 0
        torch.Tensor.type = original


def _typed_as_cuda(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _cpu_tensors_typed_as_cuda():
            return fn(*args, **kwargs)

    return wrapper


def _wrap_attr(owner, name, wrap):
    fn = owner.__dict__[name]
    if isinstance(fn, classmethod):
        setattr(owner, name, classmethod(wrap(fn.__func__)))
    elif isinstance(fn, staticmethod):
        setattr(owner, name, staticmethod(wrap(fn.__func__)))
    else:
        setattr(owner, name, wrap(fn))


def _to_cpu_numpy(tensor, as_numpy: bool = False, record_stream: bool = False):
    # moe_utils.maybe_move_tensor_to_cpu only converts CUDA tensors; the alltoall dispatcher then
    # hands CPU *tensors* as split sizes to all_to_all_single, which wants lists/numpy.
    if torch.is_tensor(tensor) and as_numpy:
        return tensor.numpy()
    return tensor


_REPLACED_FUNCTIONS: dict = {}
"""Original megatron-core function -> its shimmed wrapper (also swapped where imported by name)."""

_MOE_TE_NAMES = (
    "te_general_gemm",
    "fused_moe_aux_loss",
    "fused_permute",
    "fused_permute_with_probs",
    "fused_unpermute",
    "fused_sort_chunks_by_index",
    "fused_sort_chunks_by_index_with_probs",
    "fused_topk_with_score_function",
    "fused_compute_score_for_moe_aux_loss",
)


def _apply_module_fixes(module: types.ModuleType) -> None:
    """Per-module fixes that a namespace swap cannot express."""
    name = module.__name__
    namespace = vars(module)
    if name == "megatron.core.transformer.moe.moe_utils":
        # Without Transformer Engine, 0.16.1's moe_utils leaves its TE names undefined (it
        # checks them with `x is None`): NameError in the router and permutation.
        for te_name in _MOE_TE_NAMES:
            namespace.setdefault(te_name, None)
    elif name == "megatron.core.transformer.moe.token_dispatcher":
        namespace["maybe_move_tensor_to_cpu"] = _to_cpu_numpy
    elif name == "megatron.core.optimizer.clip_grads":
        original = namespace["clip_grad_by_total_norm_fp32"]
        if original not in _REPLACED_FUNCTIONS.values():
            _REPLACED_FUNCTIONS[original] = namespace["clip_grad_by_total_norm_fp32"] = (
                _typed_as_cuda(original)
            )
    elif name == "megatron.core.optimizer.optimizer":
        _wrap_attr(namespace["Float16OptimizerWithFloat16Params"], "__init__", _typed_as_cuda)
    elif name == "megatron.core.optimizer.distrib_optimizer":
        cls = namespace["DistributedOptimizer"]
        _wrap_attr(cls, "__init__", _typed_as_cuda)
        _wrap_attr(cls, "_build_model_and_main_param_groups", _typed_as_cuda)


class _DropCpuRngWarning:
    """logging filter: RNG tracker forks swap the CPU generator by design on CPU (see _CpuCuda),
    so CudaRNGStatesTracker.fork's "CPU RNG state changed within GPU RNG context" is noise."""

    @staticmethod
    def filter(record) -> bool:
        return "CPU RNG state changed within GPU RNG context" not in record.getMessage()


def check_version() -> str:
    """Return megatron-core's version, raising :class:`ShimVersionError` if it is untested."""
    import os
    from importlib.metadata import PackageNotFoundError, version

    try:
        mcore_version = version("megatron-core")
    except PackageNotFoundError:
        from megatron.core import package_info

        mcore_version = package_info.__version__
    if mcore_version not in TESTED_MEGATRON_CORE_VERSIONS and os.environ.get(
        ALLOW_UNTESTED_ENV, "0"
    ) not in ("1", "true", "yes"):
        raise ShimVersionError(
            f"megatron-core {mcore_version} is installed, but Megatron-DLM's CPU shim was tested "
            f"with {', '.join(TESTED_MEGATRON_CORE_VERSIONS)} only. Running without CUDA needs "
            f"the shim: install megatron-core=={TESTED_MEGATRON_CORE_VERSIONS[-1]}, run on a GPU, "
            f"or set {ALLOW_UNTESTED_ENV}=1 to try anyway."
        )
    return mcore_version


def apply(force: bool = False) -> bool:
    """Apply the shim if CUDA is absent (or ``force``). Idempotent. Returns whether it is active.

    Patches outside megatron-core's module namespaces (each addresses a megatron-core failure):

    * ``torch.Tensor.cuda`` becomes the identity: ``.cuda()`` calls in tensor_parallel/data.py
      (batch broadcast), language_module.py (tied embeddings under PP), the optimizers'
      state loading and dist_checkpointing's exchange utilities.
    * The import hook :class:`_MegatronCoreFinder` so lazily imported modules are patched too.
    """
    global _APPLIED, _CPU_TORCH
    if _APPLIED:
        return True
    if not (force or is_needed()):
        return False
    check_version()
    _CPU_TORCH = _CpuTorch()
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    sys.meta_path.insert(0, _MegatronCoreFinder())
    logging.getLogger("megatron.core.tensor_parallel.random").addFilter(_DropCpuRngWarning)
    for name, module in list(sys.modules.items()):
        if name.startswith("megatron.core") and module is not None:
            _apply_module_fixes(module)
    # Second pass: modules loaded before the one defining a replaced function see it too.
    for name, module in list(sys.modules.items()):
        if name.startswith("megatron.core") and module is not None:
            _patch_module_globals(module)
    _APPLIED = True
    return True
