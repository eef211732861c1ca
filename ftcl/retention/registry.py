"""The registry of retention methods: every `RetentionMethod` subclass defined in this package.

Each module of `ftcl.retention` is imported once and every subclass of `RetentionMethod` with a
`name: Literal["..."]` field is registered under that name — so adding a method is adding one
file here (its config, term and declared needs). Files outside the package join the registry
through `FTCL_METHOD_FILES` (paths of .py files, separated by the OS path separator); the runner
passes the variable on to Ray workers, so trials see the same methods as the driver.

`MethodSpec` is the discriminated union the spec validates a `methods:` entry into; it, the
names and `parse_method` are all that the spec, the learners, the algorithms and `ftcl list` read.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

import ftcl.retention as package
from ftcl.retention.method import RetentionMethod

METHOD_FILES_VARIABLE = "FTCL_METHOD_FILES"
EXTERNAL_PACKAGE = "ftcl_methods"
"""Module-name prefix of method files loaded from `FTCL_METHOD_FILES` (picklable by reference)."""


def _load_file(path: Path) -> None:
    if path.suffix != ".py" or not path.is_file():
        raise ValueError(f"{METHOD_FILES_VARIABLE}: {path} is not a Python file")
    name = f"{EXTERNAL_PACKAGE}.{path.stem}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise


def _subclasses(base: type) -> list[type]:
    found = []
    for subclass in base.__subclasses__():
        found.append(subclass)
        found.extend(_subclasses(subclass))
    return found


def _method_name(cls: type[RetentionMethod]) -> str | None:
    """The `name` Literal of a method class; None for intermediate bases without one."""
    field = cls.model_fields.get("name")
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return None
    (name,) = typing.get_args(field.annotation)
    return name


def discover_methods() -> dict[str, type[RetentionMethod]]:
    """Import every module of the package (and `FTCL_METHOD_FILES`); name -> method class."""
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    for entry in filter(None, os.environ.get(METHOD_FILES_VARIABLE, "").split(os.pathsep)):
        _load_file(Path(entry).resolve())
    methods: dict[str, type[RetentionMethod]] = {}
    for cls in _subclasses(RetentionMethod):
        name = _method_name(cls)
        if name is None:
            continue
        if name in methods and methods[name] is not cls:
            raise ValueError(f"retention method {name!r} is defined twice: {methods[name].__module__} and {cls.__module__}")
        methods[name] = cls
    return methods


METHODS: dict[str, type[RetentionMethod]] = discover_methods()
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)

MethodSpec = Annotated[Union[tuple(METHODS.values())], Field(discriminator="name")]  # type: ignore[valid-type]
"""A `methods:` entry of a spec: validates into the method class its `name` selects."""

_ADAPTER: TypeAdapter = TypeAdapter(MethodSpec)


def parse_method(method: Any) -> RetentionMethod:
    """A method config dict (or an already typed method) as its typed `RetentionMethod`."""
    if isinstance(method, RetentionMethod):
        return method
    return _ADAPTER.validate_python(method)
