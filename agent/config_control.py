"""The `control:` block of the configuration: which values may be written to equipment (docs/control.md).

Off by default. An allow entry names a machine (equipment id) and one of its points (`path`), and
bounds what may be written there: `min`/`max` for a number, or a `values` list. Whether the
machine and point exist, and whether the limits fit the point's type, is checked with the whole
config (`Config._references` calls `allow_problem`).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, SecretStr, StrictBool, model_validator

from agent.config_base import Model as _Model
from agent.config_base import PlainId, secret_is_text

# What a control write can send: the point's `type` decides how the value text is read.
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "SByte": (-(2**7), 2**7 - 1),
    "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
FLOATS = ("Float", "Double")
WRITABLE_TYPES = ("Boolean", *INTEGER_RANGES, *FLOATS, "String")
FLOAT_MAX = 3.4028234663852886e38
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def parse_value(text: str, opcua_type: str) -> bool | int | float | str:
    """`text` as a value of `opcua_type` (one of WRITABLE_TYPES); ValueError says what is expected."""
    if opcua_type == "String":
        return text
    t = text.strip()
    if opcua_type == "Boolean":
        if t.lower() not in _BOOLEANS:
            raise ValueError(f"{text!r} is not a Boolean: use true or false (or 1, 0)")
        return _BOOLEANS[t.lower()]
    if opcua_type in INTEGER_RANGES:
        lo, hi = INTEGER_RANGES[opcua_type]
        try:
            n = int(t, 10)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer ({opcua_type})") from None
        if not lo <= n <= hi:
            raise ValueError(f"{n} does not fit {opcua_type} ({lo} to {hi})")
        return n
    if opcua_type in FLOATS:
        try:
            x = float(t)
        except ValueError:
            raise ValueError(f"{text!r} is not a number ({opcua_type})") from None
        if not math.isfinite(x) or (opcua_type == "Float" and abs(x) > FLOAT_MAX):
            raise ValueError(f"{text!r} is not a finite {opcua_type}")
        return x
    raise ValueError(f"a {opcua_type} value cannot be written; control writes take {', '.join(WRITABLE_TYPES)}")


def text_of(v: bool | int | float | str) -> str:
    """An allowed value of the config as the text a person would type (true, 120, P100)."""
    return str(v).lower() if isinstance(v, bool) else str(v)


class Allow(_Model):
    """One value that may be written: a machine's point, and its limits."""

    machine: PlainId = Field(description="equipment id")
    element: str = Field(description="the point's `path` in that equipment")
    min: float | None = Field(default=None, description="lowest number allowed (numbers only)")
    max: float | None = Field(default=None, description="highest number allowed (numbers only)")
    values: tuple[StrictBool | int | float | str, ...] | None = Field(
        default=None, min_length=1, description="the only values allowed"
    )

    @model_validator(mode="after")
    def _limits(self) -> Allow:
        if self.values is not None and (self.min is not None or self.max is not None):
            raise ValueError("give min/max or a values list, not both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
        return self

    @property
    def key(self) -> str:
        return f"{self.machine} {self.element}"


class Control(_Model):
    enabled: bool = Field(default=False, description="nothing is ever written unless true")
    token: SecretStr | None = Field(default=None, description="for the local API's write endpoint (a secret)")
    allow: tuple[Allow, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _token_is_text(cls, data: Any) -> Any:
        return secret_is_text(data, "token")

    @model_validator(mode="after")
    def _unique(self) -> Control:
        seen: set[str] = set()
        for a in self.allow:
            if a.key in seen:
                raise ValueError(f"allow: {a.machine} {a.element} is listed twice")
            seen.add(a.key)
        return self

    def entry(self, machine: str, element: str) -> Allow | None:
        return next((a for a in self.allow if a.machine == machine and a.element == element), None)


def allow_problem(a: Allow, opcua_type: str, array: bool, by_node: bool) -> str | None:
    """Why an allow entry cannot work for its point (type, array, address, limits), or None."""
    where = f"control.allow {a.machine} {a.element}"
    if not by_node:
        return f"{where}: the point is addressed by browse_path; a write needs its node id (give the point a 'node')"
    if array:
        return f"{where}: the point is an array; control writes take single values only"
    if opcua_type not in WRITABLE_TYPES:
        return f"{where}: a {opcua_type} point cannot be written; control writes take {', '.join(WRITABLE_TYPES)}"
    numeric = opcua_type in INTEGER_RANGES or opcua_type in FLOATS
    if not numeric and (a.min is not None or a.max is not None):
        return f"{where}: min/max apply to numbers, the point is {opcua_type}; use a values list"
    if numeric and a.values is None and (a.min is None or a.max is None):
        return f"{where}: a numeric point needs both min and max, or a values list"
    for v in a.values or ():
        try:
            parse_value(text_of(v), opcua_type)
        except ValueError as e:
            return f"{where}: in values: {e}"
    return None
