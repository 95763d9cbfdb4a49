"""The smart-factory usage log (사후관리 로그): usage events in, at most one call per 10-minute KST window out.

events.py (an event, its checks, KST logDt, significance) · windows.py (the durable store and the
window rule) · ledger.py (calls per day, stop/pause flags) · client.py (one POST and what its answer
means) · sender.py (pacing, budget, states).
docs/usage-log.md says what the project relies on from the API.
"""

from uploader.sflog.client import Outcome, SfLogClient, Verdict
from uploader.sflog.events import KST, LogCall, UsageEvent, Use, format_log_dt, kst_day, representative
from uploader.sflog.sender import LogApi, SfLogSender, SfLogStats, State
from uploader.sflog.windows import Call, SfLogStoreError, WindowRecord, WindowStore

__all__ = [
    "KST",
    "Call",
    "LogApi",
    "LogCall",
    "Outcome",
    "SfLogClient",
    "SfLogSender",
    "SfLogStats",
    "SfLogStoreError",
    "State",
    "UsageEvent",
    "Use",
    "Verdict",
    "WindowRecord",
    "WindowStore",
    "format_log_dt",
    "kst_day",
    "representative",
]
