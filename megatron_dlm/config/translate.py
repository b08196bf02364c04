"""Config sections -> megatron-core's own config dataclasses, by field name.

megatron-core configures its pieces with dataclasses (``TransformerConfig``,
``OptimizerConfig``, ``DistributedDataParallelConfig``). Our sections use Megatron-LM's names,
which are mostly megatron-core's field names too, so the translation is derived: every field of
a section whose name is a field of the target passes through, plus an explicit table of the
renames. Adding a model field with megatron-core's name is then one edit (the field).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any


def matching_fields(
    target: type,
    sources: Iterable[Any],
    renames: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
) -> dict[str, Any]:
    """Keyword arguments for dataclass ``target`` from the config sections ``sources``.

    Args:
        target: a dataclass type (e.g. megatron-core's ``TransformerConfig``).
        sources: config section instances; a field whose name is also a field of ``target``
            passes through (an earlier source wins on a name clash).
        renames: our field name -> the target's, for the fields megatron-core names otherwise.
        exclude: our field names not to pass (set by the caller, or not for this target).

    Returns:
        ``{target_field: value}``.
    """
    renames = dict(renames or {})
    wanted = {f.name for f in dataclasses.fields(target) if f.init}
    skip = set(exclude)
    kwargs: dict[str, Any] = {}
    for source in sources:
        for f in dataclasses.fields(source):
            if f.name in skip:
                continue
            name = renames.get(f.name, f.name)
            if name in wanted and name not in kwargs:
                kwargs[name] = getattr(source, f.name)
    missing = [r for r in renames.values() if r not in wanted]
    if missing:  # a megatron-core upgrade renamed a field: fail loudly, not silently
        raise TypeError(f"{target.__name__} has no field(s) {', '.join(missing)}")
    return kwargs
