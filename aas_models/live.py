"""Latest live values: plain dict stores on the hot path, written into the SDK model only on demand.

`update` runs per sample and must stay a single dict store; all conversion, range checking and SDK
work happens in `apply`, which runs only before a snapshot, an export or an API read. The same holds
for each shell's recent records (`series`, timeseries.py): the pipeline appends plain values to a
ring, `apply_series` writes the rings that changed into the Time Series Data submodels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from basyx.aas import model

from .build import ElementSlot, ShellEnvironment, UnknownElementError
from .convert import ValueRejected
from .timeseries import TimeSeriesRing, write_ring
from .types import ValueType

_SHOWN_CHARS = 80


@dataclass(frozen=True, slots=True)
class ValueProblem:
    """A value `apply` did not write; the element keeps its previous value."""

    shell_id: str
    path: str
    value: str  # repr of the offending value, shortened
    expected: str  # e.g. "xs:unsignedByte", "list of xs:int", "langString"
    reason: str

    def __str__(self) -> str:
        return (
            f"shell {self.shell_id!r}, element {self.path!r}: value {self.value} not written "
            f"(expected {self.expected}): {self.reason}"
        )


class LiveValues:
    """Not thread-safe: call `update` and `apply` from the same thread (the agent's event loop).

    Accepted values per OPC UA type: bool; int for the integer types (range-checked on apply);
    float or int for Float/Double (NaN and ±inf included; Float is range-checked and rounded to
    32 bits); str for String, Guid and NodeId; bytes for ByteString; timezone-aware datetime for
    DateTime/UtcTime (normalised to UTC); {"language": str, "text": str} for LocalizedText; a list
    of those for arrays; None clears the value.
    """

    __slots__ = ("_pending", "problems", "series")

    def __init__(self, series: Mapping[str, TimeSeriesRing] | None = None) -> None:
        self._pending: dict[tuple[str, str], object] = {}
        self.problems: list[ValueProblem] = []  # from the last apply
        self.series: dict[str, TimeSeriesRing] = dict(series or {})  # shell id -> its recent records

    def update(self, shell_id: str, path: str, value: object) -> None:
        self._pending[(shell_id, path)] = value

    @property
    def store(self) -> Callable[[tuple[str, str], object], None]:
        """`update` for a caller that keeps the (shell id, path) key: one dict store, no call of ours (the
        pipeline's per-value step). Valid for as long as this LiveValues lives."""
        return self._pending.__setitem__

    @property
    def store_many(self) -> Callable[[Iterable[tuple[tuple[str, str], object]]], None]:
        """`store` for many values at once: ((shell id, path), value) pairs, one dict update."""
        return self._pending.update

    def apply(self, env: ShellEnvironment) -> list[ValueProblem]:
        """Write every value updated since the last apply; never raises for a bad value."""
        pending = dict(self._pending)
        self._pending.clear()  # the same dict: `store` stays bound to it
        problems: list[ValueProblem] = []
        for (shell_id, path), value in pending.items():
            try:
                slot = env.slot(shell_id, path)
            except UnknownElementError as e:
                problems.append(ValueProblem(shell_id, path, _show(value), "a configured element", str(e)))
                continue
            try:
                _write(slot, value)
            except ValueRejected as e:
                problems.append(ValueProblem(shell_id, path, _show(value), _expected(slot), str(e)))
            except Exception as e:  # an SDK surprise must cost one value, not the whole snapshot
                reason = f"unexpected {type(e).__name__}: {e}"
                problems.append(ValueProblem(shell_id, path, _show(value), _expected(slot), reason))
        self.problems = problems
        return problems

    def apply_series(self, env: ShellEnvironment, submodel_ids: Iterable[str] | None = None) -> int:
        """Write each ring that changed since its last write into its Time Series Data submodel (only those of
        `submodel_ids`, when given: a read of one submodel does not pay for the others); returns how many were
        written. A value that does not fit is no record (the live value's problem is reported by `apply`)."""
        wanted = None if submodel_ids is None else set(submodel_ids)
        written = 0
        for ring in self.series.values():
            if (wanted is None or ring.submodel_id in wanted) and ring.changed():
                submodel = env.store.get_item(ring.submodel_id)
                assert isinstance(submodel, model.Submodel)
                write_ring(submodel, ring)
                written += 1
        return written


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _expected(slot: ElementSlot) -> str:
    return f"list of {slot.value_type.xs}" if slot.spec.is_array else slot.value_type.xs


def carry(old: ShellEnvironment, new: ShellEnvironment) -> None:
    """The current value of every element of `old` into the same element of `new` (same shell, path and
    type), for a model rebuilt by a reload: an element whose value changes rarely does not read as empty
    until it changes. Call `LiveValues.apply(old)` first, so the latest values are in `old`."""
    for slot in new.slots():
        try:
            before = old.slot(slot.shell_id, slot.path)
        except (UnknownElementError, KeyError):
            continue
        if before.value_type != slot.value_type or type(before.element) is not type(slot.element):
            continue
        element = slot.element
        if isinstance(element, model.SubmodelElementList):
            assert isinstance(before.element, model.SubmodelElementList)
            with contextlib.suppress(ValueRejected, TypeError, ValueError):  # a list of texts starts empty
                _write(slot, [child.value for child in before.element.value])
        elif isinstance(element, model.Property | model.MultiLanguageProperty):
            assert isinstance(before.element, model.Property | model.MultiLanguageProperty)
            element.value = before.element.value


def _write(slot: ElementSlot, value: object) -> None:
    vt = slot.value_type
    element = slot.element
    if isinstance(element, model.SubmodelElementList):
        element.value = _list_children(vt, value)
    elif isinstance(element, model.MultiLanguageProperty | model.Property):
        element.value = None if value is None else vt.convert(value)
    else:  # the builder creates nothing else
        raise TypeError(f"unexpected SDK element {element!r}")


def _list_children(vt: ValueType, value: object) -> list[model.SubmodelElement]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValueRejected(f"an array element needs a list, got {type(value).__name__}")
    children: list[model.SubmodelElement] = []
    for index, item in enumerate(value):
        try:
            if item is None:
                raise ValueRejected("missing value")
            if vt.datatype is None:
                children.append(model.MultiLanguageProperty(None, vt.convert(item)))  # type: ignore[arg-type]
            else:
                children.append(model.Property(None, vt.datatype, vt.convert(item)))
        except ValueRejected as e:
            raise ValueRejected(f"item {index}: {e}") from None
    return children
