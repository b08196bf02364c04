"""Command line and YAML front end: flags generated from the config dataclasses.

Precedence: dataclass defaults < ``--config FILE.yaml`` < flags on the command line. A YAML
file holds the flag names as keys (``num-layers`` or ``num_layers``), either flat or grouped by
section (``model: {num-layers: 4}``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from megatron_dlm.config import SECTIONS, DLMConfig
from megatron_dlm.config.base import (
    ConfigError,
    add_section_arguments,
    build_section,
    coerce_section,
)
from megatron_dlm.config.megatron_lm import INERT_DEST, add_megatron_lm_arguments
from megatron_dlm.config.objective import MODEL_RUNNING_MODES

logger = logging.getLogger(__name__)


def build_parser(
    prog: str | None = None,
    description: str | None = None,
    sections: dict[str, type] | None = None,
    megatron_lm: bool | None = None,
) -> argparse.ArgumentParser:
    """An argparse parser with ``--config`` and one flag per field of every config section.

    With ``megatron_lm`` (default: when ``sections`` is the full set) every other Megatron-LM
    option is accepted without effect or refused by name (:mod:`megatron_dlm.config.megatron_lm`).
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        metavar="FILE.yaml",
        action="append",
        default=[],
        help="YAML file(s) with the same keys as the flags; later files and flags override.",
    )
    for name, cls in (sections or SECTIONS).items():
        add_section_arguments(parser, cls, f"{name} ({cls.__name__})")
    if megatron_lm if megatron_lm is not None else sections is None:
        add_megatron_lm_arguments(parser)
    return parser


def _field_index(sections: dict[str, type]) -> dict[str, str]:
    """Map every field name to its section name."""
    index: dict[str, str] = {}
    for section, cls in sections.items():
        for f in dataclasses.fields(cls):
            index[f.name] = section
    return index


def load_yaml(path: str | Path, sections: dict[str, type] | None = None) -> dict[str, dict]:
    """Read a YAML config into ``{section: {field: value}}``, rejecting unknown keys."""
    import yaml

    sections = sections or SECTIONS
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of flag names to values")
    index = _field_index(sections)
    out: dict[str, dict[str, Any]] = {name: {} for name in sections}

    def put(key: str, value: Any) -> None:
        name = key.lstrip("-").replace("-", "_")
        if name not in index:
            raise ConfigError(f"--config: {path}: unknown key '{key}'")
        out[index[name]][name] = value

    for key, value in raw.items():
        if key in sections and isinstance(value, dict):
            for sub_key, sub_value in value.items():
                put(sub_key, sub_value)
        else:
            put(key, value)
    return out


def config_from_args(
    args: argparse.Namespace, sections: dict[str, type] | None = None, cls: type = DLMConfig
):
    """Merge YAML files and explicitly given flags into a validated config object."""
    sections = sections or SECTIONS
    values: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for path in getattr(args, "config", []) or []:
        for section, fields in load_yaml(path, sections).items():
            values[section].update(fields)
    index = _field_index(sections)
    for name, value in vars(args).items():
        if name in index:
            values[index[name]][name] = value
    objective = values.get("objective", {})
    mode = objective.get("model_running_mode")
    if mode in MODEL_RUNNING_MODES and "objective" in objective:
        implied = MODEL_RUNNING_MODES[mode]
        if str(objective["objective"]) != implied:
            raise ConfigError(
                f"--model-running-mode {mode} means --objective {implied}, but --objective "
                f"{objective['objective']} was given"
            )
    # Every value's type first (a bad choice anywhere is named before any missing flag).
    values = {name: coerce_section(sections[name], values[name]) for name in sections}
    built = {name: build_section(sections[name], values[name]) for name in sections}
    config = cls(**built)
    # Not a config field (nothing to save or compare): for the run's log (log_inert_options).
    config.megatron_lm_inert = tuple(dict.fromkeys(getattr(args, INERT_DEST, None) or ()))
    return config


def log_inert_options(cfg) -> None:
    """Log the Megatron-LM options of the command line that have no effect here."""
    inert = getattr(cfg, "megatron_lm_inert", ())
    if inert:
        logger.info(
            "Megatron-LM options accepted without effect here (docs/megatron-lm.md): %s",
            ", ".join(inert),
        )


def parse_config(
    argv: Sequence[str] | None = None, prog: str | None = None, description: str | None = None
) -> DLMConfig:
    """Parse ``argv`` into a :class:`DLMConfig`; exits with status 2 and the message on errors."""
    parser = build_parser(prog, description)
    args = parser.parse_args(argv)
    try:
        return config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - manual inspection
    """Print the resolved configuration as YAML (``python -m megatron_dlm.config.cli ...``)."""
    import yaml

    cfg = parse_config(argv, prog="python -m megatron_dlm.config.cli")
    yaml.safe_dump(cfg.to_dict(), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
