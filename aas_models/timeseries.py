"""Time Series Data 1.1 (IDTA 02008-1-1): a machine's recent records, one submodel per shell.

    TimeSeries                       Submodel, semanticId https://admin-shell.io/idta/TimeSeries/1/1
    ├─ Metadata                      Name, Description, Record: the record template (Time + one Property
    │                                per variable, with the element's valueType, semanticId and unit)
    └─ Segments
       ├─ InternalSegment01 …        RecordCount, StartTime, EndTime, SamplingInterval, State, LastUpdate,
       │                             Records → Record… (Time + the values of that instant)
       └─ LinkedSegment01            Endpoint, Query: where the cloud keeps every record (when it is known)

The SDK is never per-sample work: the pipeline appends `(time, element path, plain value)` to a
`TimeSeriesRing` (a deque with a maxlen, one append per value), and `write_ring` turns the ring into
InternalSegments only when the model is read or exported. A gap marker `(when, None, reason)` in the
ring closes the segment before it ("completed") and the values after it go to the next segment, so an
interruption of collection is seen as two segments with no record between them, never as values that
were not read. docs/aas.md ("Time Series Data") has the reasons for each choice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from basyx.aas import model
from basyx.aas.model import datatypes

from ._common import MAX_IDENTIFIER, external_reference, xml_safe
from .concepts import unit_spec
from .spec import Shell, TimeSeries
from .text import TEXT_LIMIT, Text, lang_texts
from .types import UnknownTypeError, ValueType, value_type

_IDTA = "https://admin-shell.io/idta/TimeSeries/"
SEMANTIC_ID = f"{_IDTA}1/1"
METADATA = f"{_IDTA}Metadata/1/1"
METADATA_NAME = f"{_IDTA}Metadata/Name/1/1"
METADATA_DESCRIPTION = f"{_IDTA}Metadata/Description/1/1"
RECORD = f"{_IDTA}Record/1/1"
UTC_TIME = f"{_IDTA}UtcTime/1/1"
SEGMENTS = f"{_IDTA}Segments/1/1"
INTERNAL_SEGMENT = f"{_IDTA}Segments/InternalSegment/1/1"
LINKED_SEGMENT = f"{_IDTA}Segments/LinkedSegment/1/1"
SEGMENT_NAME = f"{_IDTA}Segment/Name/1/1"
SEGMENT_DESCRIPTION = f"{_IDTA}Segment/Description/1/1"
RECORD_COUNT = f"{_IDTA}Segment/RecordCount/1/1"
START_TIME = f"{_IDTA}Segment/StartTime/1/1"
END_TIME = f"{_IDTA}Segment/EndTime/1/1"
SAMPLING_INTERVAL = f"{_IDTA}Segment/SamplingInterval/1/1"
STATE = f"{_IDTA}Segment/State/1/1"
IN_PROGRESS = f"{_IDTA}Segment/State/InProgress/1/1"
COMPLETED = f"{_IDTA}Segment/State/Completed/1/1"
LAST_UPDATE = f"{_IDTA}Segment/LastUpdate/1/1"
RECORDS = f"{_IDTA}Records/1/1"
ENDPOINT = f"{_IDTA}Endpoint/1/1"
QUERY = f"{_IDTA}Query/1/1"

ID_SHORT = "TimeSeries"
TIME = "Time"  # the Record's timestamp (the template's idShort)
# The spec's values of State (its value list names them with the IRIs above, which go in valueId).
STATES = {"in progress": IN_PROGRESS, "completed": COMPLETED}
MAX_RING_VALUES = 50_000  # values (≈120 bytes each) one shell's ring holds at most, whatever the window
_ID_SHORT_MAX = 128
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# (time, element path, plain value) as the pipeline appends it, or (when, None, reason): a gap marker.
Entry = tuple[float, str | None, object]


@dataclass(frozen=True, slots=True)
class Variable:
    """One element whose values the records carry."""

    index: int  # its place in the Record (after Time)
    path: str  # idShort path in the operational-data submodel
    id_short: str  # in the Record: the path with '_' for '.', made unique
    value_type: ValueType
    semantic_id: model.ExternalReference | None
    unit: str | None
    display_name: Text | None


def time_series_id(shell: Shell) -> str:
    ts = shell.time_series
    return ts.submodel_id if ts is not None and ts.submodel_id else f"{shell.id}/sm/{ID_SHORT}"


def variables(shell: Shell) -> tuple[Variable, ...]:
    """The shell's recorded elements: scalar and with an xs: type (arrays and LocalizedText have no place in a
    Record's one Property per variable), limited to `time_series.variables` when that is given."""
    ts = shell.time_series
    if ts is None:
        return ()
    wanted = None if ts.variables is None else set(ts.variables)
    known = {e.path for e in shell.elements}
    if wanted is not None and not wanted <= known:
        raise ValueError(f"time series variable {sorted(wanted - known)[0]!r} is not an element of the shell")
    taken = {TIME}
    found: list[Variable] = []
    for e in shell.elements:
        if e.is_array or (wanted is not None and e.path not in wanted):
            continue
        try:
            vt = value_type(e.opcua_type)
        except UnknownTypeError:
            continue  # the operational-data builder refuses it, naming the element
        if vt.multilanguage:
            continue
        name = _unique(e.path.replace(".", "_"), taken)
        taken.add(name)
        semantic_id = external_reference(e.semantic_id) if e.semantic_id else None
        found.append(Variable(len(found), e.path, name, vt, semantic_id, e.unit, e.display_name))
    return tuple(found)


def _unique(base: str, taken: set[str]) -> str:
    name, n = base[:_ID_SHORT_MAX], 1
    while name in taken:
        n += 1
        suffix = f"_{n}"
        name = base[: _ID_SHORT_MAX - len(suffix)] + suffix
    return name


# -- the submodel, as built (no records) ------------------------------------------------------------


def build_time_series(shell: Shell, language: str) -> list[model.Submodel]:
    """The shell's Time Series Data submodel, or none when `shell.time_series` is None or no element can be
    recorded. Its one InternalSegment has no records yet (RecordCount 0); `write_ring` fills it."""
    ts = shell.time_series
    if ts is None:
        return []
    _check(shell, ts)
    found = variables(shell)
    if not found:
        return []
    kept = " (every record the agent delivered: at LinkedSegment01)" if ts.linked_endpoint else ""
    metadata = model.SubmodelElementCollection(
        "Metadata",
        [
            _text("Name", METADATA_NAME, f"{shell.id_short}: recent operational data"),
            _text(
                "Description",
                METADATA_DESCRIPTION,
                f"The most recent records (at most {ts.records}) of the values the edge agent collects from "
                f"this machine over OPC UA{kept}.",
            ),
            model.SubmodelElementCollection(
                "Record", [_time(None), *(_template(v, language) for v in found)], semantic_id=_ref(RECORD)
            ),
        ],
        semantic_id=_ref(METADATA),
    )
    segments: list[model.SubmodelElement] = [_internal(1, [], ts, None, None, None)]
    if ts.linked_endpoint and ts.linked_query:
        segments.append(_linked(ts.linked_endpoint, ts.linked_query))
    return [
        model.Submodel(
            time_series_id(shell),
            id_short=ID_SHORT,
            semantic_id=_ref(SEMANTIC_ID),
            kind=model.ModellingKind.INSTANCE,
            submodel_element=[
                metadata,
                model.SubmodelElementCollection("Segments", segments, semantic_id=_ref(SEGMENTS)),
            ],
        )
    ]


def _check(shell: Shell, ts: TimeSeries) -> None:
    identifier = time_series_id(shell)
    if not identifier or len(identifier) > MAX_IDENTIFIER or not xml_safe(identifier):
        raise ValueError(f"time series submodel id must be 1-{MAX_IDENTIFIER} XML-safe characters")
    if ts.records < 1:
        raise ValueError(f"time series records must be at least 1, got {ts.records}")
    if ts.sampling_interval_s is not None and not ts.sampling_interval_s > 0:
        raise ValueError(f"time series sampling interval must be positive, got {ts.sampling_interval_s}")
    if (ts.linked_endpoint is None) != (ts.linked_query is None):
        raise ValueError("a time series linked segment needs both an endpoint and a query")
    for label, text in (("linked endpoint", ts.linked_endpoint), ("linked query", ts.linked_query)):
        if text is not None and (not text or len(text) > MAX_IDENTIFIER or not xml_safe(text)):
            raise ValueError(f"time series {label} must be 1-{MAX_IDENTIFIER} XML-safe characters")


def _ref(iri: str) -> model.ExternalReference:
    return external_reference(iri)


def _text(id_short: str, semantic_id: str, text: str) -> model.MultiLanguageProperty:
    return model.MultiLanguageProperty(
        id_short, model.MultiLanguageTextType({"en": text[:TEXT_LIMIT]}), semantic_id=_ref(semantic_id)
    )


def _time(moment: datetime | None) -> model.Property:
    return model.Property(TIME, datatypes.DateTime, moment, semantic_id=_UTC_TIME)


def _template(v: Variable, language: str) -> model.Property:
    """The variable in the Metadata's Record: no value, and what a reader needs to find its element."""
    return model.Property(
        v.id_short,
        v.value_type.datatype,  # type: ignore[arg-type]  # variables() keeps xs: types only
        semantic_id=v.semantic_id,
        display_name=model.MultiLanguageNameType(lang_texts(v.display_name, language)) if v.display_name else None,
        description=model.MultiLanguageTextType({"en": f"the value of the operational-data element {v.path}"}),
        embedded_data_specifications=(unit_spec(v.id_short, v.unit, v.value_type),) if v.unit else (),
    )


def _linked(endpoint: str, query: str) -> model.SubmodelElementCollection:
    return model.SubmodelElementCollection(
        "LinkedSegment01",
        [
            _text("Name", SEGMENT_NAME, "Every delivered record"),
            _text(
                "Description",
                SEGMENT_DESCRIPTION,
                "The records the agent delivered to the cloud receiver, per element: GET the Endpoint with the Query "
                "(element = the element's idShort path, from/to = ISO 8601 times) and the receiver's bearer token.",
            ),
            model.Property("Endpoint", datatypes.String, endpoint, semantic_id=_ref(ENDPOINT)),
            model.Property("Query", datatypes.String, query, semantic_id=_ref(QUERY)),
        ],
        semantic_id=_ref(LINKED_SEGMENT),
    )


_UTC_TIME = external_reference(UTC_TIME)  # shared by every record's Time (references carry no parent)
_RECORD = external_reference(RECORD)
_SAMPLING_UNIT = value_type("Int64")


def _moment(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _internal(
    number: int,
    records: list[tuple[int, list[tuple[Variable, object]]]],
    ts: TimeSeries,
    state: str | None,
    last_update: float | None,
    description: str | None,
) -> model.SubmodelElementCollection:
    """One InternalSegment. Without records it leaves `Records` out: the template wants it once, but an empty
    collection is one the IDTA test engines' server check crashes on, and a placeholder record would be a value
    that was never read."""
    elements: list[model.SubmodelElement] = []
    if description is not None:
        elements.append(_text("Description", SEGMENT_DESCRIPTION, description))
    elements.append(model.Property("RecordCount", datatypes.Long, len(records), semantic_id=_ref(RECORD_COUNT)))
    if records:
        elements.append(
            model.Property("StartTime", datatypes.DateTime, _moment(records[0][0]), semantic_id=_ref(START_TIME))
        )
        elements.append(
            model.Property("EndTime", datatypes.DateTime, _moment(records[-1][0]), semantic_id=_ref(END_TIME))
        )
    if ts.sampling_interval_s is not None:
        elements.append(
            model.Property(
                "SamplingInterval",
                datatypes.Long,
                max(1, round(ts.sampling_interval_s * 1000)),
                semantic_id=_ref(SAMPLING_INTERVAL),
                embedded_data_specifications=(unit_spec("SamplingInterval", "ms", _SAMPLING_UNIT),),
            )
        )
    if state is not None:
        elements.append(
            model.Property("State", datatypes.String, state, value_id=_ref(STATES[state]), semantic_id=_ref(STATE))
        )
    if last_update is not None:
        moment = datetime.fromtimestamp(last_update, UTC)
        elements.append(model.Property("LastUpdate", datatypes.DateTime, moment, semantic_id=_ref(LAST_UPDATE)))
    if records:
        elements.append(
            model.SubmodelElementCollection(
                "Records", [_record(us, values) for us, values in records], semantic_id=_ref(RECORDS)
            )
        )
    return model.SubmodelElementCollection(f"InternalSegment{number:02d}", elements, semantic_id=_ref(INTERNAL_SEGMENT))


def _record(us: int, values: list[tuple[Variable, object]]) -> model.SubmodelElementCollection:
    """One instant: its idShort is its time in microseconds since 1970 (unique within the segment, and the
    same record keeps its idShort from one read to the next)."""
    children: list[model.SubmodelElement] = [_time(_moment(us))]
    children += [
        model.Property(v.id_short, v.value_type.datatype, value, semantic_id=v.semantic_id)  # type: ignore[arg-type]
        for v, value in values
    ]
    name = f"Record{us}" if us >= 0 else f"Record_{-us}"  # before 1970: a device clock at its zero
    return model.SubmodelElementCollection(name, children, semantic_id=_RECORD)


# -- the ring: plain values on the hot path -----------------------------------------------------------


class TimeSeriesRing:
    """One shell's recent values, as the pipeline appends them: `values.append((t, path, value))`, with `t` the
    value's time (epoch seconds: source time, else server time, else arrival), `value` the plain value the
    pipeline stored. Not thread-safe: append and write from the agent's event loop.

    It holds at most `window` x variables values (at most MAX_RING_VALUES), enough for `window` records of
    every variable; `write_ring` shows the newest `window` records."""

    __slots__ = ("_seen", "_written", "gaps", "spec", "submodel_id", "updated", "values", "variables", "window")

    def __init__(self, shell: Shell) -> None:
        ts = shell.time_series
        if ts is None:
            raise ValueError(f"shell {shell.id!r} has no time series")
        self.submodel_id = time_series_id(shell)
        self.spec = ts
        self.window = ts.records
        self.variables = {v.path: v for v in variables(shell)}
        size = max(self.window, min(self.window * len(self.variables), MAX_RING_VALUES))
        self.values: deque[Entry] = deque(maxlen=size)
        self.gaps = 0  # gap markers added since the start: they number the segments
        self.updated: float | None = None  # agent time of the last batch that added values
        self._seen: Entry | None = None
        self._written: tuple[int, Entry | None] = (0, None)

    def gap(self, when: float, reason: str) -> None:
        """Collection was interrupted (or values were lost) at agent time `when`: the segment so far is
        complete; later values start the next one. Nothing to close before the first value or after a gap."""
        values = self.values
        if values and values[-1][1] is not None:
            values.append((when, None, reason))
            self.gaps += 1

    def touch(self, now: float) -> None:
        """Once per batch of values (not per value): `now` becomes LastUpdate if the batch added any."""
        if self.values:
            last = self.values[-1]
            if last is not self._seen:
                self._seen = last
                self.updated = now

    def snapshot(self) -> list[Entry]:
        """A copy of the entries, for `write_ring`; `changed` is False until something is added after it."""
        entries = list(self.values)
        self._written = (len(entries), entries[-1] if entries else None)
        return entries

    def changed(self) -> bool:
        """Whether anything was added since the last `write_ring` (identity of the last entry, no copy)."""
        count, last = self._written
        values = self.values
        return len(values) != count or (bool(values) and values[-1] is not last)


def rings_for(shells: Iterable[Shell]) -> dict[str, TimeSeriesRing]:
    """shell id -> ring, for every shell that has a Time Series Data submodel."""
    return {s.id: TimeSeriesRing(s) for s in shells if s.time_series is not None and variables(s)}


def write_ring(submodel: model.Submodel, ring: TimeSeriesRing) -> None:
    """The ring's records into the submodel's InternalSegments (replacing the ones there): the newest
    `ring.window` records, values of one instant (to the microsecond) in one record, ordered by time.

    Not records: a value that is None (a Bad sample) or that does not fit its element's type (as the live
    model refuses it), and an instant left with no value. When the ring is full, the values of its oldest
    instant may have been pushed out in part: that record is left out whole rather than shown incomplete."""
    entries = ring.snapshot()
    groups: list[tuple[dict[int, dict[str, object]], Entry | None]] = [({}, None)]
    for entry in entries:
        t, path, value = entry
        if path is None:
            groups[-1] = (groups[-1][0], entry)
            groups.append(({}, None))
        else:
            groups[-1][0].setdefault(round(t * 1_000_000), {})[path] = value
    if len(entries) == ring.values.maxlen and entries[0][1] is not None:
        oldest = round(entries[0][0] * 1_000_000)
        first = groups[0][0]
        for us in [us for us in first if us <= oldest]:
            del first[us]
    budget = ring.window
    chosen: list[tuple[int, list[tuple[int, list[tuple[Variable, object]]]], Entry | None]] = []
    last_number = ring.gaps + 1
    for back, (instants, closing) in enumerate(reversed(groups)):
        kept: list[tuple[int, list[tuple[Variable, object]]]] = []
        for us in sorted(instants, reverse=True):
            if len(kept) == budget:
                break
            values = _record_values(instants[us], ring.variables)
            if values:
                kept.append((us, values))
        budget -= len(kept)
        kept.reverse()
        chosen.append((last_number - back, kept, closing))
        if budget == 0:
            break
    chosen.reverse()
    segments = [
        _internal(
            number,
            records,
            ring.spec,
            "completed" if closing is not None else "in progress",
            closing[0] if closing is not None else ring.updated,
            _ended(closing),
        )
        for number, records, closing in chosen
        if records
    ]
    if not segments:  # nothing to show yet (or nothing that fits): the current segment, empty
        number, _, closing = chosen[-1]
        state = "completed" if closing is not None else "in progress"
        segments = [_internal(number, [], ring.spec, state, ring.updated, _ended(closing))]
    holder = submodel.get_referable("Segments")
    assert isinstance(holder, model.SubmodelElementCollection)
    others = [e for e in holder.value if not _is_internal(e)]
    holder.value.clear()
    for element in (*segments, *others):
        holder.value.add(element)


def _record_values(values: dict[str, object], variables: dict[str, Variable]) -> list[tuple[Variable, object]]:
    out: list[tuple[Variable, object]] = []
    for path, value in values.items():
        v = variables.get(path)
        if v is None or value is None:
            continue
        try:
            out.append((v, v.value_type.convert(value)))
        except Exception:  # ValueRejected, or a surprise: it costs one value, not the record or the read
            continue
    out.sort(key=lambda item: item[0].index)
    return out


def _ended(closing: Entry | None) -> str | None:
    if closing is None:
        return None
    reason = str(closing[2])
    text = f"Ended by an interruption of collection: {reason}"
    return text if xml_safe(text) else "Ended by an interruption of collection."


def _is_internal(element: model.SubmodelElement) -> bool:
    ref = element.semantic_id
    return ref is not None and bool(ref.key) and ref.key[0].value == INTERNAL_SEGMENT
