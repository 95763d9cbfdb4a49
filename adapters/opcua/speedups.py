"""A faster VariantType lookup for asyncua's decoder, installed once when the adapter is imported.

asyncua decodes every Variant with `ua.datatype_to_varianttype(int)`, which calls the Enum
class (`VariantType(n)`): about 0.6 µs of the ~8 µs asyncua spends decoding each value, paid
once per value. A dict lookup gives the same member for every built-in type; anything else
(custom types above 25, NodeIds) still goes through asyncua's own function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncua import ua

_BY_VALUE: dict[int, Any] = {t.value: t for t in ua.VariantType}


def _install() -> None:
    original: Callable[[Any], Any] = ua.datatype_to_varianttype
    if getattr(original, "_edge_agent_fast", False):
        return

    def datatype_to_varianttype(int_type: Any) -> Any:
        if type(int_type) is int:
            found = _BY_VALUE.get(int_type)
            if found is not None:
                return found
        return original(int_type)

    datatype_to_varianttype._edge_agent_fast = True  # type: ignore[attr-defined]
    ua.datatype_to_varianttype = datatype_to_varianttype


_install()
