"""Packages import only downward (DESIGN.md section 2), checked on the source of every module.

config <- {objectives, data, runtime, checkpoint, sampling} <- models <- {training, inference}
<- hf <- eval. A module may import its own package and any lower layer, never a higher or
equal-but-unrelated one, except the pairs listed in ``ALLOWED``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "megatron_dlm"

LAYER = {
    "config": 0,
    "objectives": 1,
    "data": 1,
    "runtime": 1,
    "checkpoint": 1,
    "sampling": 1,
    "models": 2,
    "training": 3,
    "inference": 3,
    "hf": 4,
    "eval": 5,
    "testing": 6,
}
ALLOWED = {
    # The standalone sampler (shipped in exports) owns its options; config re-exports them.
    ("config", "sampling"),
    # A dataset's .meta.json sidecar holds the checkpoint's TokenizerRecord.
    ("data", "checkpoint"),
}


def imports_of(path: Path) -> set[str]:
    """Top-level megatron_dlm subpackages imported by the module at ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "megatron_dlm" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_packages_import_only_downward():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) < 2:
            continue
        package = relative.parts[0]
        assert package in LAYER, f"{package}: add the new package to LAYER (and DESIGN.md)"
        for target in imports_of(path) - {package}:
            assert target in LAYER, f"{relative} imports unknown package {target}"
            if LAYER[target] >= LAYER[package] and (package, target) not in ALLOWED:
                violations.append(f"{relative} imports megatron_dlm.{target}")
    assert not violations, "upward or sideways imports:\n" + "\n".join(violations)


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("from megatron_dlm.training.trainer import Trainer\nimport megatron_dlm.hf\n")
    assert imports_of(module) == {"training", "hf"}
