"""Dataclass-driven configuration: attribute docstrings become CLI help, fields become flags.

A config section is a dataclass whose fields carry attribute docstrings::

    @dataclass
    class ModelConfig:
        num_layers: int = 2
        \"\"\"Number of transformer layers.\"\"\"

Each field becomes the flag ``--num-layers`` (Megatron-LM's name) unless its metadata names
another (``field(..., metadata={"flag": "--foo"})``). ``bool`` fields defaulting to False are
``store_true`` flags (``metadata={"negatable": True}`` adds ``--no-x``, kept for fields whose
default was once True); those defaulting to True get ``--x/--no-x``. ``Literal`` fields become
choices. Validation lives in each section's ``__post_init__`` and raises :class:`ConfigError`
whose message names the flag.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from typing import Any, Literal, get_args, get_origin


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending flag(s)."""


def flag(name: str) -> str:
    """The command-line flag of a config field name (``num_layers`` -> ``--num-layers``)."""
    return "--" + name.replace("_", "-")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal right after each field)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) != len(get_args(tp)):
            return args[0], True
    return tp, False


def _resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    """Convert a YAML/CLI value to a field's type, naming the flag if that is impossible."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{flag(name)} may not be null")
    origin = get_origin(tp)
    try:
        if origin is Literal:
            choices = get_args(tp)
            if value not in choices:
                # YAML turns `1` into an int where the choices are strings, and vice versa.
                matches = [c for c in choices if str(c) == str(value)]
                if not matches:
                    raise ConfigError(
                        f"{flag(name)}: invalid choice {value!r} (choose from "
                        f"{', '.join(map(str, choices))})"
                    )
                value = matches[0]
            return value
        if origin in (list, tuple):
            (item_tp, *_) = get_args(tp) or (str,)
            if isinstance(value, str):
                value = value.replace(",", " ").split()
            return [_coerce(item_tp, v, name) for v in value]
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ConfigError(f"{flag(name)}: expected a boolean, got {value!r}")
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{flag(name)}: expected an integer, got {value!r}")
            if isinstance(value, str):
                return int(float(value)) if "e" in value.lower() else int(value)
            return int(value)
        if tp in (float, str):
            return tp(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{flag(name)}: cannot read {value!r} as {tp}") from exc
    return value


def _argparse_type(tp: Any, name: str):
    def convert(text: str):
        try:
            return _coerce(tp, text, name)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = getattr(tp, "__name__", "value")
    return convert


def add_section_arguments(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """Add one flag per field of dataclass ``cls`` to ``parser``, in an argument group.

    Defaults are ``argparse.SUPPRESS`` so the parsed namespace holds only flags given on the
    command line; they override ``--config`` files, which override the dataclass defaults.
    """
    group = parser.add_argument_group(title, (cls.__doc__ or "").strip().split("\n")[0])
    hints = _resolved_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp, _ = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        help_text = docs.get(f.name, "")
        help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        names = [f.metadata.get("flag", flag(f.name)), *f.metadata.get("aliases", ())]
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            if default or f.metadata.get("negatable"):
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["action"] = "store_true"
        else:
            origin = get_origin(tp)
            if origin is Literal:
                kwargs["choices"] = list(get_args(tp))
                kwargs["type"] = _argparse_type(tp, f.name)
            elif origin in (list, tuple):
                (item_tp, *_) = get_args(tp) or (str,)
                kwargs["nargs"] = "+"
                kwargs["type"] = _argparse_type(item_tp, f.name)
            else:
                kwargs["type"] = _argparse_type(hints[f.name], f.name)
                kwargs["metavar"] = getattr(tp, "__name__", "VALUE").upper()
        group.add_argument(*names, **kwargs)


def coerce_section(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The values of section ``cls``'s fields in ``values``, coerced to the field types."""
    hints = _resolved_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: _coerce(hints[k], v, k) for k, v in values.items() if k in names}


def build_section(cls: type, values: dict[str, Any]):
    """Instantiate section ``cls`` from a dict of raw values (coerced to the field types)."""
    return cls(**coerce_section(cls, values))


def section_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def require_finite(section: Any) -> None:
    """Raise :class:`ConfigError` naming the flag of any float field of ``section`` that is
    NaN or infinite (``--lr nan`` would pass every ``>=`` check)."""
    import math

    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag(f.name)} must be a finite number, got {value}")
