"""Strict validation of raw JSON against the official SDKs' pydantic types.

The SDK models accept unknown fields (extra="allow") and default the optional ones, so
`Model.model_validate` alone cannot see drift. `problems(Model, raw)` validates the types with
pydantic, then walks the raw JSON beside the model's declared fields, recursively: a key the model
does not declare is unknown, a required field absent is missing, a Literal out of range or a value
of the wrong JSON type is wrong; unions take the variant that fits best. With `complete=True` every
declared field of the top-level object must be present (null allowed where Optional), as the real
APIs send their top-level objects. `extra` names keys allowed beyond the model, per model class.
"""

from __future__ import annotations

import datetime as dt
import inspect
import types
import typing
from typing import Any

import pydantic

_NONE = type(None)


def _unalias(tp: Any) -> Any:
    while True:
        if hasattr(tp, "__value__") and not inspect.isclass(tp):  # TypeAliasType
            tp = tp.__value__
        elif typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        else:
            return tp


def _fields(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """JSON key -> FieldInfo."""
    return {(f.alias or name): f for name, f in model.model_fields.items()}


class Checker:
    def __init__(self, extra: dict[type, set[str]] | None = None):
        self.extra = extra or {}

    def walk(self, tp: Any, value: Any, path: str, complete: bool = False) -> list[str]:
        tp = _unalias(tp)
        origin = typing.get_origin(tp)
        if tp is Any or tp is object:
            return []
        if origin is typing.Union or origin is types.UnionType:
            return self._union(typing.get_args(tp), value, path)
        if origin is typing.Literal:
            return [] if value in typing.get_args(tp) else [f"{path}: {value!r} not in {typing.get_args(tp)}"]
        if origin in (list, typing.List):  # noqa: UP006
            if not isinstance(value, list):
                return [f"{path}: expected a list, got {type(value).__name__}"]
            (item,) = typing.get_args(tp) or (Any,)
            return [p for i, v in enumerate(value) for p in self.walk(item, v, f"{path}[{i}]")]
        if origin in (dict, typing.Dict):  # noqa: UP006
            if not isinstance(value, dict):
                return [f"{path}: expected an object, got {type(value).__name__}"]
            args = typing.get_args(tp)
            vtype = args[1] if len(args) == 2 else Any
            return [p for k, v in value.items() for p in self.walk(vtype, v, f"{path}.{k}")]
        if inspect.isclass(tp) and issubclass(tp, pydantic.BaseModel):
            return self._model(tp, value, path, complete)
        return self._scalar(tp, value, path)

    def _union(self, args: tuple, value: Any, path: str) -> list[str]:
        if value is None and _NONE in args:
            return []
        best: list[str] | None = None
        for arg in (a for a in args if a is not _NONE):
            found = self.walk(arg, value, path)
            if not found:
                return []
            if best is None or len(found) < len(best):
                best = found
        return best if best is not None else [f"{path}: null where a value is required"]

    def _model(self, model: type[pydantic.BaseModel], value: Any, path: str, complete: bool) -> list[str]:
        if not isinstance(value, dict):
            return [f"{path}: expected {model.__name__} (an object), got {type(value).__name__}"]
        fields = _fields(model)
        allowed = self.extra.get(model, set())
        found = [f"{path}.{k}: unknown field of {model.__name__}" for k in value if k not in fields and k not in allowed]
        for key, info in fields.items():
            if key not in value:
                if info.is_required() or complete:
                    found.append(f"{path}.{key}: missing from {model.__name__}")
                continue
            found += self.walk(info.annotation, value[key], f"{path}.{key}")
        return found

    @staticmethod
    def _scalar(tp: Any, value: Any, path: str) -> list[str]:
        if tp is _NONE:
            return [] if value is None else [f"{path}: expected null"]
        if tp is bool:
            ok = isinstance(value, bool)
        elif tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif tp is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif tp is str:
            ok = isinstance(value, str)
        elif tp in (dt.datetime, dt.date):
            try:
                ok = isinstance(value, str) and bool(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                ok = False
        else:
            return []  # a type this checker does not know: pydantic's validation covers it
        return [] if ok else [f"{path}: {value!r} is not a {getattr(tp, '__name__', tp)}"]


def problems(model: Any, raw: Any, *, complete: bool = False, path: str = "$",
             extra: dict[type, set[str]] | None = None) -> list[str]:
    """Everything in `raw` that does not match `model` exactly (empty: it matches)."""
    found: list[str] = []
    if inspect.isclass(model) and issubclass(model, pydantic.BaseModel):
        try:
            model.model_validate(raw)
        except pydantic.ValidationError as exc:
            found.append(f"{path}: pydantic: {exc}")
    else:
        try:
            pydantic.TypeAdapter(model).validate_python(raw)
        except pydantic.ValidationError as exc:
            found.append(f"{path}: pydantic: {exc}")
    return found + Checker(extra).walk(model, raw, path, complete)
