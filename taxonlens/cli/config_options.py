"""Command-line options generated from a settings dataclass: a trainer's configuration, or the
recognizer options that ``predict``, ``calibrate`` and ``embed`` share.

Every field of a configuration (:mod:`taxonlens.train.config` and the trainers' subclasses,
:class:`~taxonlens.predict.recognizer.RecognizerOptions`) carries its help in ``metadata={"help": ...}``; :func:`config_options` turns each field into a
typer option, so a setting and its help are written once, in the dataclass. A field
``batch_size: int = 8`` becomes ``--batch-size INTEGER`` (default 8), ``system: bool = True``
becomes ``--system/--no-system``, ``threads: int | None`` an option that may be left out, and
``out: str | Path`` a path. The few options whose command-line form differs from the field are
listed here, in :data:`OPTION_NAMES` and :data:`CHOICES`.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import Field, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from taxonlens.choices import Choice
from taxonlens.models.device import Device, Precision
from taxonlens.models.text import LabelTextType, TextType
from taxonlens.recognize.answers import AnswerFormat

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")

#: option declarations of the fields whose option is not ``--field-name`` (``--x/--no-x`` for a bool)
OPTION_NAMES: dict[str, str] = {"full_finetune": "--full/--lora"}
#: fields typed ``str`` whose values are a closed set: the option offers exactly its members
CHOICES: dict[str, type[Choice]] = {"text_type": TextType, "eval_text_type": LabelTextType, "answer": AnswerFormat,
                                    "device": Device, "precision": Precision}
#: the help section that lists the configuration options
PANEL = "Training settings"
#: the parameter of a decorated command that receives the parsed settings
SETTINGS = "settings"


class ConfigValues(dict[str, Any]):
    """The parsed values of a command's configuration options, by field name."""

    def build(self, config: type[C]) -> C:
        """An instance of ``config`` from the values of its fields (values of other fields, e.g. of
        another stage's configuration, are left out)."""
        names = {f.name for f in fields(config)}
        return config(**{name: value for name, value in self.items() if name in names})


def option_type(field: Field[Any], hints: dict[str, Any]) -> Any:
    """The command-line type of ``field``: its :data:`CHOICES` set, or its annotation with
    ``str | Path`` read as a path; ``| None`` is kept.

    Raises:
        TypeError: another union, which a command-line option cannot parse.
    """
    kinds = set(typing.get_args(hints[field.name])) or {hints[field.name]}
    optional = types.NoneType in kinds
    kinds.discard(types.NoneType)
    if field.name in CHOICES and kinds == {str}:
        kinds = {CHOICES[field.name]}
    elif kinds == {str, Path}:
        kinds = {Path}
    if len(kinds) != 1:
        raise TypeError(f"field {field.name!r}: no command-line option for the type {hints[field.name]}")
    (kind,) = kinds
    return kind | None if optional else kind


def field_parameter(field: Field[Any], hints: dict[str, Any], required: bool, panel: str = PANEL,
                    optional: bool = False) -> inspect.Parameter:
    """The typer option of ``field``: a keyword-only parameter ``Annotated[type, typer.Option(help=...)]``
    whose default is the field's, unless ``required`` (no default) or ``optional`` (``None``: the
    command decides what leaving it out means)."""
    kind = option_type(field, hints)
    decls = (OPTION_NAMES[field.name],) if field.name in OPTION_NAMES else ()
    default = inspect.Parameter.empty
    if optional:
        kind, default = kind | None, None
    elif not required:
        default = field.default
        if isinstance(kind, type) and issubclass(kind, Choice) and default is not None:
            default = kind(default)
    option = typer.Option(*decls, help=field.metadata["help"], rich_help_panel=panel)
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, option])


def config_parameters(configs: Collection[type], required: Collection[str], panel: str = PANEL,
                      optional: Collection[str] = ()) -> list[inspect.Parameter]:
    """The options of the fields of ``configs``, in field order, each field once (the first
    configuration's; a field the others declare differently is an error); ``optional`` ones
    default to ``None``.

    Raises:
        TypeError: a field of two configurations with different types or defaults, a required name
            that is no field.
    """
    params: dict[str, inspect.Parameter] = {}
    seen: dict[str, tuple[Any, ...]] = {}
    for config in configs:
        # with_defaults copies a base's annotation text into a module that may not import Path
        hints = typing.get_type_hints(config, localns={"Path": Path})
        for f in fields(config):
            what = (hints[f.name], f.metadata["help"], inspect.Parameter.empty if f.name in required else f.default)
            if seen.setdefault(f.name, what) != what:
                raise TypeError(f"{config.__name__}.{f.name} differs from the same field of another configuration")
            params.setdefault(f.name, field_parameter(f, hints, f.name in required, panel, f.name in optional))
    if missing := (set(required) | set(optional)) - set(params):
        raise TypeError(f"required or optional options {sorted(missing)} are no configuration fields")
    return list(params.values())


def config_options(*configs: type, required: Collection[str] = (), panel: str = PANEL,
                   optional: Collection[str] = ()) -> Callable[[F], F]:
    """Decorator of a typer command, placed under ``@app.command()``: one option per field of
    ``configs`` (the union of their fields; ``required`` ones without a default, ``optional`` ones
    with the default ``None``, which the command resolves) takes the place of
    the command's ``settings`` parameter, which receives their parsed values as
    :class:`ConfigValues` (``settings.build(SomeConfig)`` makes the configuration); ``panel`` is
    the heading of these options in ``--help``.

    Raises:
        TypeError: a command without ``settings``, an option that is also a parameter of the command,
            or as :func:`config_parameters`.
    """
    def decorate(command: F) -> F:
        own = inspect.signature(command, eval_str=True).parameters
        generated = config_parameters(configs, required, panel, optional)
        if clash := {p.name for p in generated} & set(own):
            raise TypeError(f"{command.__name__}: parameters {sorted(clash)} are also configuration fields")
        if SETTINGS not in own:
            raise TypeError(f"{command.__name__} has no {SETTINGS!r} parameter to receive its configuration")
        names = [p.name for p in generated]
        params = []
        for p in own.values():
            params.extend(generated if p.name == SETTINGS else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)])

        def command_with_options(**values: Any) -> Any:
            settings = ConfigValues((name, values.pop(name)) for name in names)
            return command(**values, **{SETTINGS: settings})

        command_with_options.__name__ = command.__name__
        command_with_options.__qualname__ = command.__qualname__
        command_with_options.__module__ = command.__module__
        command_with_options.__doc__ = command.__doc__
        command_with_options.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command_with_options.__annotations__ = {p.name: p.annotation for p in params}
        return command_with_options  # type: ignore[return-value]

    return decorate


__all__ = ["CHOICES", "OPTION_NAMES", "ConfigValues", "config_options"]
