"""The HTML report: key figures and five inline-SVG charts on one time axis.

Inline SVG and an inline stylesheet only: the file opens offline, from a bind-mounted folder or
an archive, with no script and nothing fetched.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Point = tuple[float, float | None]

WIDTH, HEIGHT = 920, 230
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 28, 30


@dataclass
class Line:
    label: str
    color: str
    points: list[Point]


@dataclass
class Chart:
    key: str
    title: str
    unit: str
    lines: list[Line]
    marks: list[tuple[float, str]] = field(default_factory=list)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 2.5, 5):
        for power in range(-2, 9):
            candidate = step * 10.0**power
            if candidate >= value:
                return candidate
    return value


def svg(chart: Chart, t0: float, t1: float) -> str:
    span = max(t1 - t0, 1.0)
    values = [v for line in chart.lines for _, v in line.points if v is not None]
    top = _nice_max(max(values, default=0.0) * 1.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (min(max(t, t0), t1) - t0) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / top * plot_h

    out = [
        f'<svg class="chart" data-chart="{chart.key}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(chart.title)}</title>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="plot"/>',
    ]
    for i in range(5):
        level = top * i / 4
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(level):.1f}" y2="{y(level):.1f}" class="grid"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(level) + 4:.1f}" class="ytick">{level:g}</text>')
    tick = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800) if span / s <= 10), 3600)
    for s in range(0, int(span) + 1, tick):
        out.append(f'<text x="{x(t0 + s):.1f}" y="{HEIGHT - 10}" class="xtick">{s} s</text>')
    out.append(f'<text x="{LEFT}" y="16" class="unit">{html.escape(chart.unit)}</text>')
    for t, label in chart.marks:
        out.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP}" y2="{TOP + plot_h}" class="mark">'
            f"<title>{html.escape(label)}</title></line>"
            f'<text x="{x(t) + 3:.1f}" y="{TOP + 12}" class="marklabel">{html.escape(label)}</text>'
        )
    legend_x = WIDTH - RIGHT
    for line in reversed(chart.lines):
        legend_x -= 24 + 7 * len(line.label)
        out.append(
            f'<text x="{legend_x}" y="16" class="legend" fill="{line.color}">&#9632; {html.escape(line.label)}</text>'
        )
        # A gap in the data (no sample) breaks the line rather than drawing across it.
        segment: list[str] = []
        ends: list[Point] = [(t1 + 1, None)]
        for t, v in [*line.points, *ends]:
            if v is None or t > t1:
                if len(segment) > 1:
                    out.append(
                        f'<polyline points="{" ".join(segment)}" fill="none" stroke="{line.color}" stroke-width="1.6"/>'
                    )
                elif segment:
                    cx, cy = segment[0].split(",")
                    out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{line.color}"/>')
                segment = []
            else:
                segment.append(f"{x(t):.1f},{y(v):.1f}")
    out.append("</svg>")
    return "".join(out)


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1f2937;max-width:980px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:24px 0 8px}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:600}
.pass{background:#15803d}.fail{background:#b91c1c}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d1d5db;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:12px 0}figcaption{font-weight:600;margin-bottom:2px}
svg.chart{width:100%;height:auto;background:#fff}
.plot{fill:#f9fafb;stroke:#d1d5db}.grid{stroke:#e5e7eb}
.ytick{font-size:11px;text-anchor:end;fill:#6b7280}.xtick{font-size:11px;text-anchor:middle;fill:#6b7280}
.unit,.legend{font-size:12px}.legend{text-anchor:start}
.mark{stroke:#7c3aed;stroke-dasharray:4 3}.marklabel{font-size:11px;fill:#7c3aed}
.muted{color:#6b7280}
"""

FIGURES = (
    ("accepted", "tasks accepted (202)"),
    ("completed", "completed, in Postgres"),
    ("failed", "failed (final), in Postgres"),
    ("lost", "accepted, no final state in Postgres after the drain"),
    ("duplicates", "final record written more than once"),
    ("requests", "HTTP requests"),
    ("errors", "errors (not 429/503)"),
    ("rate_limited", "429 rate limited"),
    ("backpressure", "503 backpressure"),
    ("p50_ms", "p50 ms (answered requests)"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("max_workers", "most workers seen"),
    ("scale_events", "scaling decisions during the run"),
    ("max_queue", "deepest queue seen"),
    ("drain_seconds", "seconds from the end of load to every task final"),
)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return html.escape("-" if value is None else str(value))


def render(summary: dict[str, Any], charts: Sequence[Chart], t0: float, t1: float) -> str:
    verdict = "pass" if summary.get("passed") else "fail"
    rows = "".join(
        f'<tr><th>{html.escape(key)}</th><td class="n">{_cell(summary.get(key))}</td>'
        f'<td class="muted">{html.escape(what)}</td></tr>'
        for key, what in FIGURES
    )
    decisions = "".join(
        f"<tr><td>{_cell(d.get('offset'))} s</td><td>{_cell(d.get('from'))}</td><td>{_cell(d.get('to'))}</td>"
        f"<td>{html.escape('; '.join(map(str, d.get('reasons') or [])))}</td></tr>"
        for d in summary.get("decisions", [])
    )
    figures = "".join(
        f"<figure><figcaption>{html.escape(c.title)}</figcaption>{svg(c, t0, t1)}</figure>" for c in charts
    )
    run = summary.get("run", {})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Load test {html.escape(str(summary.get("started_at")))}</title>
<style>{STYLE}</style></head><body>
<h1>Load test <span class="verdict {verdict}" id="verdict">{verdict.upper()}</span></h1>
<p class="muted">{html.escape(str(summary.get("started_at")))} &middot; target {html.escape(str(run.get("target")))}
&middot; shape {html.escape(str(run.get("shape")))} &middot; {html.escape(str(run.get("users")))} users
&middot; {_cell(run.get("load_seconds"))} s of load, then the drain. Verdict: nothing lost, nothing duplicated.</p>
<table id="figures">{rows}</table>
<h2>Over time (seconds from the start)</h2>
{figures}
<h2>Scaling decisions</h2>
<table id="decisions"><tr><th>at</th><th>from</th><th>to</th><th>reasons</th></tr>
{decisions or '<tr><td colspan="4">none (no autoscaler decision in this window)</td></tr>'}</table>
<p class="muted">Beside this file: summary.json, accepted.txt (every accepted task id), Locust's CSVs,
its own report (locust.html) and log (locust.log).</p>
</body></html>
"""
