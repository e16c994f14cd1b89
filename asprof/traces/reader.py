"""Reading a trace document field by field: every value is checked for its type (and range)
as it is read, and a wrong one fails with its dotted path, what was expected and what was found
(asprof.traces.schema builds the trace's dataclasses through it)."""

from __future__ import annotations

import math
from typing import Any, Iterable


class SchemaError(ValueError):
    """A field is missing or has the wrong type; ``field`` is its dotted path."""

    def __init__(self, field: str, expected: str, got: Any):
        self.field = field
        shown = repr(got)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        super().__init__(f"field {field}: expected {expected}, got {shown}")


# --------------------------------------------------------------------------------------------
# Small typed readers that know where they are in the document.


class At:
    def __init__(self, data: Any, path: str):
        self.data = data
        self.path = path

    def _sub(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def obj(self) -> dict:
        if not isinstance(self.data, dict):
            raise SchemaError(self.path or "<document>", "an object", self.data)
        return self.data

    def get(self, key: str, required: bool = True) -> "At":
        d = self.obj()
        if key not in d:
            if required:
                raise SchemaError(self._sub(key), "a value (field is missing)", None)
            return At(None, self._sub(key))
        return At(d[key], self._sub(key))

    def items(self) -> Iterable[tuple[str, "At"]]:
        for k, v in self.obj().items():
            yield k, At(v, self._sub(k))

    def list(self) -> list["At"]:
        if not isinstance(self.data, list):
            raise SchemaError(self.path, "a list", self.data)
        return [At(v, self._sub(i)) for i, v in enumerate(self.data)]

    def str(self, optional: bool = False, choices: Iterable[str] | None = None) -> str | None:
        if self.data is None and optional:
            return None
        if not isinstance(self.data, str):
            raise SchemaError(self.path, "a string", self.data)
        if choices is not None and self.data not in choices:
            raise SchemaError(self.path, "one of " + ", ".join(choices), self.data)
        return self.data

    def num(self, optional: bool = False, min_value: float | None = None) -> float | None:
        if self.data is None and optional:
            return None
        if isinstance(self.data, bool) or not isinstance(self.data, (int, float)):
            raise SchemaError(self.path, "a number", self.data)
        if not math.isfinite(self.data):
            raise SchemaError(self.path, "a finite number", self.data)
        if min_value is not None and self.data < min_value:
            raise SchemaError(self.path, f"a number >= {min_value:g}", self.data)
        return float(self.data)

    def int(self, optional: bool = False, min_value: int | None = None) -> int | None:
        if self.data is None and optional:
            return None
        if isinstance(self.data, bool) or not isinstance(self.data, int):
            raise SchemaError(self.path, "an integer", self.data)
        if min_value is not None and self.data < min_value:
            raise SchemaError(self.path, f"an integer >= {min_value}", self.data)
        return self.data

    def bool(self, optional: bool = False) -> bool | None:
        if self.data is None and optional:
            return None
        if not isinstance(self.data, bool):
            raise SchemaError(self.path, "true or false", self.data)
        return self.data

    def json_scalar_map(self) -> dict[str, Any]:
        """An object of JSON scalars or lists of scalars (record parameters)."""
        out = {}
        for k, v in self.items():
            ok = v.data is None or isinstance(v.data, (str, int, float, bool))
            if isinstance(v.data, list):
                ok = all(isinstance(x, (str, int, float, bool)) for x in v.data)
            if not ok:
                raise SchemaError(v.path, "a string, number, boolean or list of them", v.data)
            out[k] = v.data
        return out

    def str_map(self) -> dict[str, str]:
        return {k: v.str() for k, v in self.items()}


# --------------------------------------------------------------------------------------------
