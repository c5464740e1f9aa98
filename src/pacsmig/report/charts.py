"""Chart geometry for the report's inline SVG.

Python lays the charts out (scales, ticks, bar and line coordinates) and returns plain dicts;
the template draws them with autoescaped text, so no value reaches the page unescaped and the
page needs no script or library to show them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 12, 36
# Bucket widths in seconds: a time axis reads best in whole minutes, hours, days.
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
_DAY = 86400
MAX_BUCKETS = 60
MAX_BARS = 12


@dataclass(frozen=True, slots=True, kw_only=True)
class Bucket:
    """Instances sent in [start, start + seconds)."""

    start: str
    seconds: int
    sent: int


def parse_time(text: str) -> dt.datetime:
    """A journal timestamp ('2026-01-02T03:04:05.678Z' or a prefix of it) in UTC."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def bucket_seconds(span: float) -> int:
    """The smallest readable bucket width that covers span in at most MAX_BUCKETS buckets."""
    need = span / MAX_BUCKETS
    for step in _STEPS:
        if step >= need:
            return step
    return _DAY * math.ceil(need / _DAY)


def buckets(per_second: Sequence[tuple[str, int]]) -> list[Bucket]:
    """Group (timestamp to the second, count) rows, in time order, into even buckets."""
    if not per_second:
        return []
    times = [(parse_time(t), n) for t, n in per_second]
    first, last = times[0][0], times[-1][0]
    width = bucket_seconds((last - first).total_seconds() + 1)
    # Align buckets to whole multiples of their width so axis labels are round times.
    epoch = int(first.timestamp()) // width * width
    count = (int(last.timestamp()) - epoch) // width + 1
    sent = [0] * count
    for t, n in times:
        sent[(int(t.timestamp()) - epoch) // width] += n
    return [
        Bucket(start=_iso(epoch + i * width), seconds=width, sent=n) for i, n in enumerate(sent)
    ]


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0 and round values up to at least top (1, 2, 2.5 or 5 times a power of ten)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _num(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{int(value):,}"


def _plot() -> tuple[float, float, float, float]:
    return LEFT, TOP, WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


def _y_axis(top: float, y0: float, h: float) -> tuple[float, list[dict[str, Any]]]:
    ticks = nice_ticks(top)
    scale_top = ticks[-1]
    return scale_top, [{"y": round(y0 + h - h * v / scale_top, 1), "label": _num(v)} for v in ticks]


def _time_ticks(bs: Sequence[Bucket], x0: float, w: float) -> list[dict[str, Any]]:
    if not bs:
        return []
    start = parse_time(bs[0].start)
    span = bs[0].seconds * len(bs)
    fmt = "%H:%M:%S" if span < 600 else "%H:%M" if span < _DAY else "%m-%d %H:%M"
    if span >= 7 * _DAY:
        fmt = "%Y-%m-%d"
    n = min(5, len(bs))
    out = []
    for i in range(n + 1):
        frac = i / n
        at = start + dt.timedelta(seconds=span * frac)
        out.append({"x": round(x0 + w * frac, 1), "label": at.strftime(fmt)})
    return out


def _chart(kind: str, chart_id: str, title: str, summary: str, **parts: Any) -> dict[str, Any]:
    x0, y0, w, h = _plot()
    base: dict[str, Any] = {
        "id": chart_id,
        "kind": kind,
        "title": title,
        "summary": summary,
        "width": WIDTH,
        "height": parts.pop("height", HEIGHT),
        "plot": {"x": x0, "y": y0, "w": w, "h": h},
        "line": "",
        "area": "",
        "bars": [],
        "x_ticks": [],
        "y_ticks": [],
        "x_label": "",
        "empty": "",
    }
    base.update(parts)
    return base


def progress_chart(bs: Sequence[Bucket]) -> dict[str, Any]:
    """Cumulative instances sent, at the end of each bucket."""
    title = "Instances sent, cumulative"
    if not bs:
        return _chart("line", "chart-progress", title, "No instance was sent.", empty="none sent")
    x0, y0, w, h = _plot()
    total = 0
    points = [(x0, y0 + h)]
    top_value = sum(b.sent for b in bs)
    scale_top, y_ticks = _y_axis(top_value, y0, h)
    for i, b in enumerate(bs, 1):
        total += b.sent
        points.append((x0 + w * i / len(bs), y0 + h - h * total / scale_top))
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    area = f"{line} {x0 + w:.1f},{y0 + h:.1f}"
    return _chart(
        "line",
        "chart-progress",
        title,
        f"{total:,} instances sent between {bs[0].start} and {_end(bs)} (UTC).",
        line=line,
        area=area,
        x_ticks=_time_ticks(bs, x0, w),
        y_ticks=y_ticks,
        x_label="time (UTC)",
    )


def throughput_chart(bs: Sequence[Bucket]) -> dict[str, Any]:
    """Instances per second in each bucket."""
    title = "Throughput, instances per second"
    if not bs:
        return _chart("bars", "chart-throughput", title, "No instance was sent.", empty="none sent")
    x0, y0, w, h = _plot()
    rates = [b.sent / b.seconds for b in bs]
    scale_top, y_ticks = _y_axis(max(rates), y0, h)
    slot = w / len(bs)
    bars = []
    for i, (b, rate) in enumerate(zip(bs, rates, strict=True)):
        bh = h * rate / scale_top
        bars.append(
            {
                "x": round(x0 + i * slot + slot * 0.1, 1),
                "y": round(y0 + h - bh, 1),
                "w": round(max(slot * 0.8, 0.5), 1),
                "h": round(bh, 1),
                "label": "",
                "value": _num(rate),
                "title": f"{b.start}: {b.sent:,} instances in {b.seconds} s ({rate:.2f}/s)",
            }
        )
    active = [r for r in rates if r > 0]
    peak = max(rates)
    mean = sum(b.sent for b in bs) / (len(active) * bs[0].seconds) if active else 0.0
    return _chart(
        "bars",
        "chart-throughput",
        title,
        f"Peak {peak:.2f}/s, {mean:.2f}/s on average while sending "
        f"({bs[0].seconds} s buckets, UTC).",
        bars=bars,
        x_ticks=_time_ticks(bs, x0, w),
        y_ticks=y_ticks,
        x_label="time (UTC)",
    )


def category_chart(
    chart_id: str, title: str, items: Sequence[tuple[str, int]], unit: str
) -> dict[str, Any]:
    """Horizontal bars, largest first; beyond MAX_BARS the rest are summed as 'other'."""
    items = sorted(((label, n) for label, n in items if n > 0), key=lambda i: (-i[1], i[0]))
    if len(items) > MAX_BARS:
        rest = sum(n for _, n in items[MAX_BARS - 1 :])
        items = [*items[: MAX_BARS - 1], ("other", rest)]
    if not items:
        return _chart("hbars", chart_id, title, f"No {unit}.", height=60, empty=f"no {unit}")
    label_w, row_h, left_pad = 220, 22, 8
    x0 = label_w + left_pad
    w = WIDTH - x0 - 70
    top = max(n for _, n in items)
    bars = []
    for i, (label, n) in enumerate(items):
        bw = w * n / top
        bars.append(
            {
                "x": x0,
                "y": TOP + i * row_h,
                "w": round(max(bw, 1.0), 1),
                "h": row_h - 6,
                "label": label,
                "value": f"{n:,}",
                "title": f"{label}: {n:,} {unit}",
            }
        )
    total = sum(n for _, n in items)
    return _chart(
        "hbars",
        chart_id,
        title,
        f"{total:,} {unit} in {len(items)} group(s).",
        height=TOP + len(items) * row_h + 8,
        plot={"x": x0, "y": TOP, "w": w, "h": len(items) * row_h},
        bars=bars,
    )


def _end(bs: Sequence[Bucket]) -> str:
    return _iso(int(parse_time(bs[-1].start).timestamp()) + bs[-1].seconds)


def bucket_dicts(bs: Sequence[Bucket]) -> list[dict[str, Any]]:
    return [asdict(b) for b in bs]
