"""The level-evidence report as one self-contained HTML page: Korean and English side by side, inline
CSS, no external assets, every string taken from data escaped (agent/level.py builds the report)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson


def fmt(v: float | None, unit: str = "") -> str:
    """A number for people: thousands separated, one decimal, the unit after it; "—" for none."""
    if v is None:
        return "—"
    text = f"{v:,.1f}" if abs(v) < 1e6 else f"{v:,.0f}"
    return f"{text}{unit}"


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _n(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "✓" if v else "✗"
    if isinstance(v, int):
        return f"{v:,}{_e(unit)}"
    if isinstance(v, float):
        return _e(fmt(v, unit)) if abs(v) >= 10 else f"{v:.3g}{_e(unit)}"
    return _e(v)


def _table(head: Sequence[tuple[str, str]], rows: Iterable[Sequence[str]]) -> str:
    """Headers are (ko, en) constants; cells must already be escaped."""
    th = "".join(f"<th>{ko}<br><span class=en>{en}</span></th>" for ko, en in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        body = f"<tr><td colspan={len(head)} class=none>없음 · none</td></tr>"
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _h(ko: str, en: str) -> str:
    return f"<h2>{ko} <span class=en>· {en}</span></h2>"


_CSS: Final = """
body{font-family:"Noto Sans KR","Malgun Gothic",system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
.en{color:#555;font-weight:normal}table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.none{color:#888}.level{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin:.8em 0}
.ok{border-left:6px solid #2a7}.no{border-left:6px solid #c33}.badge{font-weight:bold}
.two{display:grid;grid-template-columns:1fr 1fr;gap:1em}
ul{margin:.3em 0}pre{white-space:pre-wrap;font-size:.85em;margin:0}
"""


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page (inline CSS, no external assets), Korean and English side by side."""
    r = report
    p, cov, smp = r["period"], r["coverage"], r["sampling"]
    parts: list[str] = [
        "<!DOCTYPE html><html lang=ko><head><meta charset=utf-8>",
        "<title>스마트공장 수준 근거 · Smart-factory level evidence</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>스마트공장 수준 근거 (KS X 9001) <span class=en>· Smart-factory level evidence</span></h1>",
        f"<p>기간 · Period: <b>{_e(p['since'])}</b> — <b>{_e(p['until'])}</b> (UTC, {_n(p['seconds'], ' s')}); "
        f"생성 · generated {_e(r['generated_at'])}; 파일 · file {_e(r['stats_file'])}</p>",
        _h("수준별 근거", "Evidence per level"),
    ]
    for lv in r["levels"]:
        cls = "ok" if lv["supported"] else "no"
        verdict = "근거 있음 · supported" if lv["supported"] else "근거 부족 · not supported"
        parts.append(
            f"<div class='level {cls}'><h3>{_e(lv['ko'])} <span class=en>· {_e(lv['en'])}</span> — "
            f"{_e(lv['meaning_ko'])} <span class=en>· {_e(lv['meaning_en'])}</span>: "
            f"<span class=badge>{verdict}</span></h3>"
        )
        for key, ko, en in (
            ("supporting", "뒷받침하는 측정값", "supporting figures"),
            ("missing", "부족한 항목", "missing"),
        ):
            items = lv[key]
            if not items:
                continue
            ko_li = "".join(f"<li>{_e(c['ko'])}</li>" for c in items)
            en_li = "".join(f"<li>{_e(c['en'])}</li>" for c in items)
            parts.append(
                f"<div class=two><div><b>{ko}</b><ul>{ko_li}</ul></div>"
                f"<div><b class=en>{en}</b><ul class=en>{en_li}</ul></div></div>"
            )
        parts.append("</div>")

    parts.append(_h("커버리지", "Coverage"))
    parts.append(
        f"<p>설비 · machines {cov['machines_delivering']}/{cov['machines_configured']} "
        f"({_n(cov['machines_pct'], ' %')}); 요소 · elements {cov['elements_delivering']}/"
        f"{cov['elements_configured']} ({_n(cov['elements_pct'], ' %')})</p>"
    )
    parts.append(
        _table(
            [
                ("설비", "machine"),
                ("설정 요소", "configured"),
                ("전달 요소", "delivering"),
                ("확인된 레코드", "records confirmed"),
            ],
            (
                [
                    _e(m["machine"]),
                    _n(m["elements_configured"]),
                    _n(m["elements_delivering"]),
                    _n(m["records_confirmed"]),
                ]
                for m in cov["machines"]
            ),
        )
    )

    parts.append(_h("요소별 수집 주기", "Sampling per element"))
    parts.append(
        f"<p>평균 주기 중앙값 · median achieved period {_n(smp['median_period_ms'], ' ms')}; "
        f"설정 주기 달성 · meeting configured sampling {smp['elements_meeting_configured']}/"
        f"{smp['elements_with_configured']} ({_n(smp['meeting_configured_pct'], ' %')}); "
        f"느림 표시 · flagged slow (&gt; 1.5 × configured) {smp['slow']}</p>"
    )
    rows = []
    for el in r["elements"]:
        cells = [
            _e(el["machine"]),
            _e(el["path"]),
            _e(el["mode"]),
            _n(el["configured_ms"]),
            _n(el["achieved_mean_ms"]),
            _n(el["jitter_ms"]),
            _n(el["values"]),
            _n(el["delivering"]),
            "⚠ 느림 · slow" if el["slow"] else "",
            _e(el["first_seen"]),
            _e(el["last_seen"]),
            f"{_e(el['configured_from'])} — {_e(el['configured_until'])}" if el["configured_from"] else "",
        ]
        rows.append(cells)
    parts.append(
        _table(
            [
                ("설비", "machine"),
                ("요소", "element"),
                ("방식", "mode"),
                ("설정 주기 ms", "configured ms"),
                ("달성 평균 ms", "achieved mean ms"),
                ("지터 ms", "jitter ms"),
                ("값 수", "values"),
                ("전달", "delivering"),
                ("표시", "flag"),
                ("처음 수신", "first seen"),
                ("마지막 수신", "last seen"),
                ("설정 기간", "configured"),
            ],
            rows,
        )
    )

    parts.append(_h("수집 중단(갭)", "Gaps"))
    parts.append(
        _table(
            [("설비", "machine"), ("건수", "gaps"), ("합계 초", "total seconds")],
            ([_e(g["machine"]), _n(g["gaps"]), _n(g["seconds"])] for g in r["gaps"]["by_machine"]),
        )
    )
    parts.append(
        _table(
            [
                ("설비", "machine"),
                ("시작", "start"),
                ("끝", "end"),
                ("기간 내 초", "seconds"),
                ("원인", "reason"),
                ("요소 수", "elements"),
            ],
            (
                [
                    _e(g["machine"]),
                    _e(g["start"]),
                    "진행 중 · open" if g["open"] else _e(g["end"]),
                    _n(g["seconds_in_period"]),
                    _e(g["reason"]),
                    _n(g["elements"]),
                ]
                for g in r["gaps"]["list"]
            ),
        )
    )

    parts.append(_h("가동(연결) 시간", "Uptime (connected)"))
    parts.append(
        _table(
            [("설비", "machine"), ("연결 초", "connected s"), ("기간 초", "period s"), ("가동률 %", "uptime %")],
            ([_e(u["machine"]), _n(u["connected_s"]), _n(u["period_s"]), _n(u["uptime_pct"])] for u in r["uptime"]),
        )
    )

    parts.append(_h("종단 간 지연", "End-to-end latency"))
    parts.append(
        _table(
            [
                ("싱크", "sink"),
                ("레코드", "records"),
                ("표본", "samples"),
                ("p50 ms", "p50 ms"),
                ("p95 ms", "p95 ms"),
                ("p99 ms", "p99 ms"),
            ],
            (
                [
                    _e(s["sink"]),
                    _n(s["records"]),
                    _n(s["latency_samples"]),
                    _n(s["p50_ms"]),
                    _n(s["p95_ms"]),
                    _n(s["p99_ms"]),
                ]
                for s in r["latency"]
            ),
        )
    )

    parts.append(_h("엣지 분석", "Edge analysis"))
    ana_rows = []
    for a in r["analysis"]:
        t = a["totals"]
        last = "".join(f"<pre>{_e(orjson.dumps(s, option=orjson.OPT_SORT_KEYS).decode())}</pre>" for s in a["last"])
        ana_rows.append(
            [
                _e(a["machine"]),
                _n(a["summaries"]),
                _n(t["availability"]),
                _n(t["performance"]),
                _n(t["quality"]),
                _n(t["oee"]),
                _n(t["cycles"]),
                _n(t["alarms"]),
                last,
            ]
        )
    parts.append(
        _table(
            [
                ("설비", "machine"),
                ("요약 수", "summaries"),
                ("가용성", "availability"),
                ("성능", "performance"),
                ("품질", "quality"),
                ("OEE", "OEE"),
                ("사이클", "cycles"),
                ("알람", "alarms"),
                ("최근 요약", "last summaries"),
            ],
            ana_rows,
        )
    )

    ctl = r["control"]
    parts.append(_h("제어 쓰기", "Control writes"))
    parts.append(
        f"<p>설정 · enabled: {_n(ctl['enabled'])}; 전체 · writes {ctl['writes']}, 성공 · ok {ctl['ok']}, "
        f"실패 · failed {ctl['failed']}</p>"
    )
    parts.append(
        _table(
            [("사용자", "user"), ("성공", "ok"), ("실패", "failed")],
            ([_e(u["user"]), _n(u["ok"]), _n(u["failed"])] for u in ctl["by_user"]),
        )
    )
    parts.append(
        _table(
            [
                ("시각", "at"),
                ("설비", "machine"),
                ("요소", "element"),
                ("사용자", "user"),
                ("결과", "ok"),
                ("내용", "detail"),
            ],
            (
                [_e(w["at"]), _e(w["machine"]), _e(w["element"]), _e(w["user"]), _n(w["ok"]), _e(w["detail"])]
                for w in ctl["list"][-200:]
            ),
        )
    )

    parts.append(_h("한계", "Limits"))
    parts.append(
        "<div class=two><div><ul>"
        + "".join(f"<li>{_e(x['ko'])}</li>" for x in r["limits"])
        + "</ul></div><div><ul class=en>"
        + "".join(f"<li>{_e(x['en'])}</li>" for x in r["limits"])
        + "</ul></div></div>"
    )
    parts.append("</body></html>\n")
    return "".join(parts)
