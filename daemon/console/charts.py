"""SVG charts for the admins' console, drawn in Python: no JavaScript, no build step.

Each function returns one `<svg>` element as a string, which a Jinja2 template embeds with
`|safe`. That filter switches autoescape off for the whole string, so this module escapes every
piece of text it writes (labels, units, numbers, stage names) itself, in `_esc`: text a caller
passes in never becomes markup.

The console is served under a strict Content-Security-Policy: no inline script, no `eval`, no
inline style. A `style="…"` attribute or a `<style>` element would be refused by the browser,
so the charts carry none. Each part has `class="…"` names the console's stylesheet themes
(`chart-bar`, `chart-line`, `chart-axis`, `chart-grid`, `chart-label`, `chart-value`,
`chart-track`, `chart-sent`, `chart-failed`, `chart-skipped`, `chart-pending`, …) and
presentation attributes (`fill`, `stroke`, `font-size`, …) as defaults: a stylesheet rule
beats a presentation attribute, and a chart still reads without the stylesheet.

Every chart has a `viewBox` and `width="100%"` (it scales to its container, a phone included;
the height follows from the viewBox), `role="img"`, an `aria-label` and a `<title>` with the
same sentence (what a screen reader says and a mouse pointer shows).

Odd figures are clamped, not refused: a count or value that is negative, NaN or infinite is
drawn as 0, and counts that add up to more than their total widen the scale to fit. A chart
is a view; one bad figure must not take the console's page down with it (the store is where
bad figures are refused). Bad arguments are refused with `ValueError`: fewer than one bucket,
an empty time window, a naive datetime.
"""

from __future__ import annotations

import html
import math
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

__all__ = ["funnel", "progress_bar", "time_series"]

_SVG_NS = "http://www.w3.org/2000/svg"
# Characters XML 1.0 forbids even as references: one of them would make the SVG ill-formed.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_FLOAT_MAX = sys.float_info.max
_FONT_SIZE = 12

# Default colours, by the class that names a part; the stylesheet may override each.
_FILLS = {
    "chart-sent": "#2e7d32",
    "chart-failed": "#c62828",
    "chart-skipped": "#f9a825",
    "chart-pending": "#bdbdbd",
    "chart-audience": "#1565c0",
    "chart-bar": "#1565c0",
    "chart-track": "#eeeeee",
}

# progress_bar: a line of text above one bar.
_PROGRESS_SIZE = (320, 40)
_PROGRESS_BAR = (20.0, 16.0)  # top, height

# funnel: per stage, a line of text above its bar.
_FUNNEL_WIDTH = 360
_FUNNEL_ROW = 34
_FUNNEL_BAR = (17.0, 12.0)  # top within the row, height

# time_series: the plot area inside the viewBox; y labels to its left, x labels below.
_SERIES_SIZE = (480, 200)
_PLOT_LEFT, _PLOT_RIGHT, _PLOT_TOP, _PLOT_BOTTOM = 48.0, 470.0, 20.0, 176.0
_X_LABELS = 4  # intervals between x labels: five labels, the first at start and the last at end


# ---- shared helpers ---------------------------------------------------------------------------


def _esc(text: str) -> str:
    """Text made safe as SVG content and as a double-quoted attribute value."""
    return html.escape(_XML_INVALID.sub("", text), quote=True)


def _num(value: float) -> str:
    """A coordinate: at most two decimals, no trailing zeros, never `-0`."""
    return f"{round(value, 2) + 0.0:.2f}".rstrip("0").rstrip(".")


def _count(value: int) -> int:
    return value if value > 0 else 0


def _amount(value: float) -> float:
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float's range
        return _FLOAT_MAX
    return number if math.isfinite(number) and number > 0 else 0.0


def _fmt_value(value: float) -> str:
    """A measured value: thousands separators, a few significant digits when small."""
    if value.is_integer():
        return f"{value:,.0f}"
    if value < 10:
        return f"{value:.3g}"
    return f"{value:,.1f}".rstrip("0").rstrip(".")


def _fmt_axis(value: float) -> str:
    """A tick label short enough for the y axis' margin."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if value >= scale:
            return f"{value / scale:,g}{suffix}"
    return f"{value:,g}"


def _share(part: int, whole: int) -> str:
    """`part` as a percentage of `whole`; a rounded figure never claims 0 % or 100 % falsely."""
    if whole <= 0:
        return "—"
    if part in (0, whole):
        return "0%" if part == 0 else "100%"
    percent = 100 * (part / whole)
    if percent < 0.1:
        return "<0.1%"
    if 99.9 < percent < 100:
        return ">99.9%"
    return f"{percent:.1f}".removesuffix(".0") + "%"


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (1 if not positive)."""
    if not value > 0:  # NaN included
        return 1.0
    if math.isinf(value):
        return _FLOAT_MAX
    exponent = math.floor(math.log10(value))
    for mantissa in (1, 2, 5, 10):
        # Parsed from decimal text, so 5e-7 is the float nearest 5e-7, not 5 * 10.0**-7.
        candidate = float(f"{mantissa}e{exponent}")
        if candidate >= value:
            return candidate if math.isfinite(candidate) else value
    return value  # not reached: 10 × 10ⁿ is above any value whose log10 floors to n


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M")


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware: {moment.isoformat()}")


# ---- elements ---------------------------------------------------------------------------------


def _svg(kind: str, size: tuple[int, int], description: str, parts: Iterable[str]) -> str:
    text = _esc(description)
    width, height = size
    return (
        f'<svg xmlns="{_SVG_NS}" class="chart {kind}" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{text}"><title>{text}</title>'
        + "".join(parts)
        + "</svg>"
    )


def _rect(box: tuple[float, float, float, float], css: str, tip: str = "") -> str:
    x, y, width, height = (_num(v) for v in box)
    fill = _FILLS.get(css.split()[-1], "currentColor")
    opening = f'<rect class="{css}" x="{x}" y="{y}" width="{width}" height="{height}" fill="{fill}"'
    return f"{opening}><title>{_esc(tip)}</title></rect>" if tip else f"{opening}/>"


def _text(x: float, y: float, content: str, css: str, anchor: str = "start") -> str:
    return (
        f'<text class="{css}" x="{_num(x)}" y="{_num(y)}" font-size="{_FONT_SIZE}" '
        f'fill="currentColor" text-anchor="{anchor}">{_esc(content)}</text>'
    )


def _line(start: tuple[float, float], end: tuple[float, float], css: str) -> str:
    opacity = "0.15" if css == "chart-grid" else "0.6"
    return (
        f'<line class="{css}" x1="{_num(start[0])}" y1="{_num(start[1])}" '
        f'x2="{_num(end[0])}" y2="{_num(end[1])}" stroke="currentColor" stroke-width="1" '
        f'stroke-opacity="{opacity}"/>'
    )


# ---- progress_bar -----------------------------------------------------------------------------


def progress_bar(sent: int, failed: int, skipped: int, total: int, *, label: str) -> str:
    """One stacked bar: sent, failed, skipped, then what remains of `total`.

    The percentage done counts sent, failed and skipped alike (each is finished) and is
    floored, so "100% done" means nothing remains. A total of 0 is 0 % done.
    """
    finished = (_count(sent), _count(failed), _count(skipped))
    done, total = sum(finished), _count(total)
    scale = max(total, done)  # counts read after the total may exceed it
    segments = [
        *zip(("Sent", "Failed", "Skipped"), finished, strict=True),
        ("Remaining", scale - done),
    ]
    percent = min(100, done * 100 // total) if total else 0
    width, _ = _PROGRESS_SIZE
    top, height = _PROGRESS_BAR
    parts = [
        _rect((0, top, width, height), "chart-track"),
        *_stacked(segments, scale, width),
        _text(0, 13, f"{done:,} of {total:,}", "chart-label"),
        _text(width, 13, f"{percent}% done", "chart-value", anchor="end"),
    ]
    counts = ", ".join(f"{name.lower()} {count:,}" for name, count in segments)
    return _svg("chart-progress", _PROGRESS_SIZE, f"{label}: {percent}% done ({counts})", parts)


def _stacked(segments: Sequence[tuple[str, int]], scale: int, width: float) -> list[str]:
    classes = ("chart-sent", "chart-failed", "chart-skipped", "chart-pending")
    top, height = _PROGRESS_BAR
    parts: list[str] = []
    x = 0.0
    for (name, count), css in zip(segments, classes, strict=True):
        size = width * (count / scale) if scale else 0.0
        parts.append(_rect((x, top, size, height), f"chart-bar {css}", f"{name}: {count:,}"))
        x += size
    return parts


# ---- funnel -----------------------------------------------------------------------------------


def funnel(audience: int, sent: int, failed: int, skipped: int, pending: int, *, label: str) -> str:
    """One bar per stage, each with its count and its share of the audience.

    The bars share one scale, the largest count (the audience, unless counts read later
    outgrew it). An audience of 0 has no shares: they read "—".
    """
    stages = (
        ("Audience", "chart-audience", _count(audience)),
        ("Sent", "chart-sent", _count(sent)),
        ("Failed", "chart-failed", _count(failed)),
        ("Skipped", "chart-skipped", _count(skipped)),
        ("Waiting", "chart-pending", _count(pending)),
    )
    whole = stages[0][2]
    scale = max(count for _, _, count in stages)
    parts = [
        part
        for row, stage in enumerate(stages)
        for part in _funnel_row(row * _FUNNEL_ROW, stage, whole, scale)
    ]
    summary = ", ".join(f"{name} {count:,} ({_share(count, whole)})" for name, _, count in stages)
    size = (_FUNNEL_WIDTH, len(stages) * _FUNNEL_ROW)
    return _svg("chart-funnel", size, f"{label}: {summary}", parts)


def _funnel_row(top: float, stage: tuple[str, str, int], whole: int, scale: int) -> list[str]:
    name, css, count = stage
    bar_top, height = _FUNNEL_BAR
    width = _FUNNEL_WIDTH * (count / scale) if scale else 0.0
    figure = f"{count:,} ({_share(count, whole)})"
    return [
        _text(0, top + 13, name, "chart-label"),
        _text(_FUNNEL_WIDTH, top + 13, figure, "chart-value", anchor="end"),
        _rect((0, top + bar_top, _FUNNEL_WIDTH, height), "chart-track"),
        _rect((0, top + bar_top, width, height), f"chart-bar {css}", f"{name}: {figure}"),
    ]


# ---- time_series ------------------------------------------------------------------------------


def time_series(
    points: Sequence[tuple[datetime, float]],
    *,
    label: str,
    unit: str,
    start: datetime,
    end: datetime,
    buckets: int = 60,
    per_second: bool = False,
) -> str:
    """Bars over [start, end) in `buckets` equal buckets, each the sum of its points.

    A bar's value is a sum, so name `unit` per bucket (60 buckets over an hour: "per
    minute"); with `per_second` the points are counts and a bar is its bucket's sum divided
    by the bucket's length in seconds (the mean rate over it), so `unit` says "per second"
    truthfully. Points outside the window are left out; with none inside it the chart says
    "no data". Times are drawn as HH:MM in UTC; every datetime must be timezone-aware.
    """
    _check_window(start, end, buckets)
    sums, seen = _bucketed(points, start, end, buckets)
    if per_second:
        seconds = (end - start).total_seconds() / buckets
        sums = [value / seconds for value in sums]
    window = f"{_clock(start)}–{_clock(end)} UTC"
    x_axis = _x_axis(start, end, buckets)
    if not seen:
        return _svg("chart-series", _SERIES_SIZE, f"{label}: {window}, no data", _empty(x_axis))
    top = _nice_max(max(sums))
    parts = [*_y_axis(top, unit), *x_axis, *_bars(sums, top, start, end, unit)]
    peak = f"peak {_fmt_value(max(sums))} {unit}"
    return _svg("chart-series", _SERIES_SIZE, f"{label}: {window}, {peak}", parts)


def _check_window(start: datetime, end: datetime, buckets: int) -> None:
    _require_aware(start, "start")
    _require_aware(end, "end")
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, not {buckets}")
    if end <= start:
        raise ValueError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")


def _bucketed(
    points: Sequence[tuple[datetime, float]], start: datetime, end: datetime, buckets: int
) -> tuple[list[float], bool]:
    """The sum per bucket, and whether any point fell inside the window."""
    sums = [0.0] * buckets
    span, seen = end - start, False
    for moment, value in points:
        _require_aware(moment, "a point's time")
        if start <= moment < end:
            # timedelta arithmetic is exact to the microsecond: no point lands a bucket early.
            index = (moment - start) * buckets // span
            sums[index] = min(sums[index] + _amount(value), _FLOAT_MAX)
            seen = True
    return sums, seen


def _y_axis(top: float, unit: str) -> list[str]:
    """Labels at 0, half the maximum and the maximum, grid lines above 0, the unit on top."""
    parts = [_text(0, _PLOT_TOP - 8, unit, "chart-label chart-unit")]
    for tick in (0.0, top / 2, top):
        y = _PLOT_BOTTOM - (_PLOT_BOTTOM - _PLOT_TOP) * (tick / top)
        if tick:  # the x axis is the line at 0
            parts.append(_line((_PLOT_LEFT, y), (_PLOT_RIGHT, y), "chart-grid"))
        parts.append(_text(_PLOT_LEFT - 4, y + 4, _fmt_axis(tick), "chart-label", anchor="end"))
    return parts


def _x_axis(start: datetime, end: datetime, buckets: int) -> list[str]:
    slot = (_PLOT_RIGHT - _PLOT_LEFT) / buckets
    marks = sorted({round(step * buckets / _X_LABELS) for step in range(_X_LABELS + 1)})
    parts = [_line((_PLOT_LEFT, _PLOT_BOTTOM), (_PLOT_RIGHT, _PLOT_BOTTOM), "chart-axis")]
    for mark in marks:
        x = _PLOT_LEFT + mark * slot
        anchor = "start" if mark == 0 else "end" if mark == buckets else "middle"
        moment = start + (end - start) * mark / buckets
        parts.append(_line((x, _PLOT_BOTTOM), (x, _PLOT_BOTTOM + 4), "chart-axis"))
        parts.append(_text(x, _PLOT_BOTTOM + 16, _clock(moment), "chart-label", anchor=anchor))
    return parts


def _bars(
    sums: Sequence[float], top: float, start: datetime, end: datetime, unit: str
) -> list[str]:
    slot = (_PLOT_RIGHT - _PLOT_LEFT) / len(sums)
    gap = min(1.0, slot / 5)
    parts: list[str] = []
    for index, total in enumerate(sums):
        if total <= 0:
            continue  # an empty bucket draws nothing; the grid shows the zero
        height = (_PLOT_BOTTOM - _PLOT_TOP) * (total / top)
        box = (_PLOT_LEFT + index * slot + gap / 2, _PLOT_BOTTOM - height, slot - gap, height)
        moment = start + (end - start) * index / len(sums)
        parts.append(_rect(box, "chart-bar", f"{_clock(moment)}: {_fmt_value(total)} {unit}"))
    return parts


def _empty(x_axis: list[str]) -> list[str]:
    middle = ((_PLOT_LEFT + _PLOT_RIGHT) / 2, (_PLOT_TOP + _PLOT_BOTTOM) / 2)
    return [*x_axis, _text(*middle, "no data", "chart-label chart-empty", anchor="middle")]
