"""One usage event of the smart-factory usage-log API (사후관리 로그 연계), the fields of one call, and KST time.

Contract (shared/reference/sf-log-api.md, restated in docs/usage-log.md):
- A `UsageEvent` is one real use of the solution. It is valid or it does not exist: construction
  checks every field against the API's limits and raises `ValueError` naming the field and the
  limit. The one repair it makes is the one other clients make: a `conectIp` longer than 30
  characters that is an IPv6 address becomes "" (an over-long IPv4 or host name is an error).
- `logDt` is Korean local time (Asia/Seoul, no DST since 1988), `YYYY-MM-DD HH:MI:SS.SSS`, the
  milliseconds truncated, never rounded (rounding could move 23:59:59.9995 into the next day).
- Significance, which picks the event that represents a 10-minute window: create/update/delete
  (DO6004/5/6) > login (DO6001) > read (DO6003) > logout (DO6002) > test (DO6999); among equals
  the earliest wins. DO6007 (physical in/out time) is not software use and is refused.
- A `LogCall` holds the five fields of a call that are not secret; the crtfcKey is added only
  when the body is built (`LogCall.body`) and is checked by `check_key`, whose message never
  shows the key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def _korea() -> tzinfo:
    try:
        return ZoneInfo("Asia/Seoul")
    except ZoneInfoNotFoundError:  # no tz database on the gateway: Korea's offset has been fixed since 1988
        return timezone(timedelta(hours=9), "KST")


KST: Final = _korea()

MAX_USER: Final = 60  # sysUser
MAX_IP: Final = 30  # conectIp
MAX_KEY: Final = 100  # crtfcKey
USAGE_LIMIT: Final = 10**9  # dataUsgqty must stay below it (else AP1026)


class Use(StrEnum):
    """`useSe` codes the agent produces (DO6007, in/out time, is not software use: never produced)."""

    LOGIN = "DO6001"
    LOGOUT = "DO6002"
    READ = "DO6003"
    CREATE = "DO6004"
    UPDATE = "DO6005"
    DELETE = "DO6006"
    TEST = "DO6999"  # tests only: the API answers AP1028 and does not count it


SIGNIFICANCE: Final[dict[str, int]] = {
    Use.CREATE: 4,
    Use.UPDATE: 4,
    Use.DELETE: 4,
    Use.LOGIN: 3,
    Use.READ: 2,
    Use.LOGOUT: 1,
    Use.TEST: 0,
}


def kst(t: datetime) -> datetime:
    """`t` (aware) in Korean time."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"time {t.isoformat()} has no time zone; usage events need an aware datetime")
    return t.astimezone(KST)


def kst_now() -> datetime:
    return datetime.now(KST)


def kst_day(t: datetime) -> date:
    """The Korean calendar day of `t`: the API takes events of its own current day only."""
    return kst(t).date()


def kst_midnight(day: date) -> datetime:
    """The start of the Korean `day`."""
    return datetime(day.year, day.month, day.day, tzinfo=KST)


def next_midnight(t: datetime) -> datetime:
    """The start of the Korean day after the one `t` is in."""
    return kst_midnight(kst_day(t) + timedelta(days=1))


def format_log_dt(t: datetime) -> str:
    """`logDt`: `YYYY-MM-DD HH:MI:SS.SSS` in Korean time, milliseconds truncated."""
    k = kst(t)
    return f"{k:%Y-%m-%d %H:%M:%S}.{k.microsecond // 1000:03d}"


def parse_log_dt(text: str) -> datetime:
    """The aware time a `logDt` names; ValueError if it is not `YYYY-MM-DD HH:MI:SS.SSS`."""
    if len(text) != 23 or text[10] != " " or text[19] != ".":
        raise ValueError(f"logDt {text!r} is not YYYY-MM-DD HH:MI:SS.SSS")
    naive = datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S")
    return naive.replace(microsecond=int(text[20:]) * 1000, tzinfo=KST)


def check_key(key: str) -> None:
    """ValueError if `key` cannot be a crtfcKey. The message describes the key, never shows it."""
    if not key or key != key.strip():
        raise ValueError("crtfcKey: empty or with surrounding blanks; give the key the programme issued")
    if len(key) > MAX_KEY:
        raise ValueError(f"crtfcKey: {len(key)} characters, the limit is {MAX_KEY}")


def _check_ip(ip: str) -> str:
    if len(ip) <= MAX_IP:
        return ip
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address):
        return ""  # the reference: clients drop an IPv6 address that does not fit
    raise ValueError(f"conectIp: {ip[:40]!r} is {len(ip)} characters, the limit is {MAX_IP} (only IPv6 is dropped)")


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One real use of the solution by `user` from `ip` at `time`, of kind `use`, that moved `data_bytes`.

    `id` is stable across redeliveries (the usage record's id): the store counts an id once.
    """

    id: str
    time: datetime
    use: str
    user: str
    ip: str
    data_bytes: int = 0

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("usage event: empty id; every event needs an id that is stable across redeliveries")
        kst(self.time)
        if self.use not in SIGNIFICANCE:
            known = ", ".join(sorted(SIGNIFICANCE))
            why = " (DO6007 is physical in/out time, not use of the software)" if self.use == "DO6007" else ""
            raise ValueError(f"useSe: {self.use!r} is not one the agent reports{why}; allowed: {known}")
        if not self.user:
            raise ValueError("sysUser: empty; the API needs a user id, name or employee number")
        if len(self.user) > MAX_USER:
            raise ValueError(f"sysUser: {len(self.user)} characters, the limit is {MAX_USER}")
        object.__setattr__(self, "ip", _check_ip(self.ip))
        if isinstance(self.data_bytes, bool) or not 0 <= self.data_bytes < USAGE_LIMIT:
            raise ValueError(f"dataUsgqty: {self.data_bytes!r} bytes, allowed 0 <= n < {USAGE_LIMIT:_}")

    @property
    def log_dt(self) -> str:
        return format_log_dt(self.time)

    @property
    def significance(self) -> int:
        return SIGNIFICANCE[self.use]


def representative(events: Iterable[UsageEvent]) -> UsageEvent:
    """The most significant event, the earliest among equals (the first given among equal times)."""
    best: UsageEvent | None = None
    for e in events:
        if best is None or (e.significance, -e.time.timestamp()) > (best.significance, -best.time.timestamp()):
            best = e
    if best is None:
        raise ValueError("no events to choose a representative from")
    return best


@dataclass(frozen=True, slots=True)
class LogCall:
    """The five fields of one call besides crtfcKey, ready to send."""

    log_dt: str
    use_se: str
    sys_user: str
    conect_ip: str
    data_usgqty: int

    @classmethod
    def of(cls, event: UsageEvent, usage: int) -> LogCall:
        """`event` unchanged, carrying `usage` bytes (a window's sum, already capped below 10^9)."""
        if not 0 <= usage < USAGE_LIMIT:
            raise ValueError(f"dataUsgqty: {usage} bytes, allowed 0 <= n < {USAGE_LIMIT:_}")
        return cls(event.log_dt, event.use, event.user, event.ip, usage)

    def body(self, key: str) -> dict[str, str | int]:
        """The JSON body of the call. The result holds the key: never log or keep it."""
        return {
            "crtfcKey": key,
            "logDt": self.log_dt,
            "useSe": self.use_se,
            "sysUser": self.sys_user,
            "conectIp": self.conect_ip,
            "dataUsgqty": self.data_usgqty,
        }
