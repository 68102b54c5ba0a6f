"""The console's SVG charts: well-formed, accessible, proportional, escaped, and never crashing.

Each chart is parsed as XML, as a browser parsing it strictly would: markup a label smuggled in
would show up as an element here.
"""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.console.charts import _nice_max, funnel, progress_bar, time_series

NS = "{http://www.w3.org/2000/svg}"
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
SCRIPT = "<script>alert(1)</script>"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def with_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [el for el in root.iter() if name in el.get("class", "").split()]


def view_width(root: ET.Element) -> float:
    return float(root.get("viewBox", "").split()[2])


def width_of(element: ET.Element) -> float:
    return float(element.get("width", "nan"))


def texts(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter(f"{NS}text")]


def clock_labels(root: ET.Element) -> list[str]:
    """The x axis' HH:MM labels."""
    return [t for t in texts(root) if ":" in t]


def tip(element: ET.Element) -> str:
    title = element.find(f"{NS}title")
    assert title is not None
    return title.text or ""


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def series(points: list[tuple[datetime, float]], **kwargs: object) -> ET.Element:
    arguments: dict[str, object] = {"label": "Sends", "unit": "sends", "start": START, "end": END}
    arguments.update(kwargs)
    return parse(time_series(points, **arguments))  # type: ignore[arg-type]


CHARTS: dict[str, Callable[[str], str]] = {
    "progress_bar": lambda label: progress_bar(10, 2, 3, 40, label=label),
    "funnel": lambda label: funnel(1000, 600, 20, 30, 350, label=label),
    "time_series": lambda label: time_series(
        [(at(1), 4.0), (at(30), 9.0)], label=label, unit="sends", start=START, end=END
    ),
    "time_series_empty": lambda label: time_series(
        [], label=label, unit="sends", start=START, end=END
    ),
}


# ---- every chart ------------------------------------------------------------------------------


@pytest.mark.parametrize("draw", CHARTS.values(), ids=CHARTS.keys())
def test_a_chart_is_a_responsive_labelled_image(draw: Callable[[str], str]) -> None:
    root = parse(draw("Campaign 7"))
    assert root.tag == f"{NS}svg"
    assert root.get("width") == "100%"
    assert root.get("height") is None  # the viewBox's aspect ratio sets it
    x, y, width, height = (float(v) for v in root.get("viewBox", "").split())
    assert (x, y) == (0, 0) and width > 0 and height > 0
    assert root.get("role") == "img"
    label = root.get("aria-label", "")
    assert label.startswith("Campaign 7: ")
    title = root[0]
    assert title.tag == f"{NS}title" and title.text == label


@pytest.mark.parametrize("draw", CHARTS.values(), ids=CHARTS.keys())
def test_a_chart_carries_no_inline_style_and_no_script(draw: Callable[[str], str]) -> None:
    """A strict CSP refuses inline styles: parts are themed by class only."""
    svg = draw("Campaign 7")
    root = parse(svg)
    for element in root.iter():
        assert "style" not in element.attrib
        assert not any(name.startswith("on") for name in element.attrib)
        assert element.tag not in (f"{NS}style", f"{NS}script", f"{NS}foreignObject")
    assert "style" not in svg.replace("chart-", "")


@pytest.mark.parametrize("draw", CHARTS.values(), ids=CHARTS.keys())
def test_a_script_label_appears_only_escaped(draw: Callable[[str], str]) -> None:
    svg = draw(SCRIPT)
    assert "<script" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    root = parse(svg)
    assert not list(root.iter(f"{NS}script"))
    assert root.get("aria-label", "").startswith(SCRIPT)  # the reader hears the text as given
    assert (root[0].text or "").startswith(SCRIPT)


def test_quotes_and_ampersands_in_a_label_stay_inside_the_attribute() -> None:
    label = """Tom & Jerry's "big" <b>sale</b>"""
    root = parse(progress_bar(1, 0, 0, 2, label=label))
    assert root.get("aria-label", "").startswith(label)
    assert root.get("role") == "img"
    assert not list(root.iter("b")) and not list(root.iter(f"{NS}b"))


@given(label=st.text())
def test_any_label_keeps_every_chart_well_formed(label: str) -> None:
    for draw in CHARTS.values():
        root = parse(draw(label))
        assert not list(root.iter(f"{NS}script"))


def test_characters_xml_forbids_are_dropped_from_a_label() -> None:
    root = parse(progress_bar(1, 0, 0, 2, label="a\x00b\x1bc\ufffe"))
    assert root.get("aria-label", "").startswith("abc: ")


# ---- progress_bar ------------------------------------------------------------------------------


def segments(root: ET.Element) -> dict[str, ET.Element]:
    names = ("chart-sent", "chart-failed", "chart-skipped", "chart-pending")
    return {name: with_class(root, name)[0] for name in names}


def test_a_quarter_sent_fills_a_quarter_of_the_bar() -> None:
    root = parse(progress_bar(25, 0, 0, 100, label="c"))
    parts = segments(root)
    assert width_of(parts["chart-sent"]) == pytest.approx(view_width(root) / 4)
    assert width_of(parts["chart-pending"]) == pytest.approx(view_width(root) * 3 / 4)
    assert "25% done" in texts(root)


def test_the_segments_stack_in_order_and_fill_the_bar() -> None:
    root = parse(progress_bar(10, 5, 5, 40, label="c"))
    parts = list(segments(root).values())
    shares = [width_of(part) / view_width(root) for part in parts]
    assert shares == pytest.approx([0.25, 0.125, 0.125, 0.5])
    for before, after in itertools.pairwise(parts):
        assert float(after.get("x", "")) == pytest.approx(
            float(before.get("x", "")) + width_of(before)
        )
    assert [tip(part) for part in parts] == [
        "Sent: 10",
        "Failed: 5",
        "Skipped: 5",
        "Remaining: 20",
    ]
    assert texts(root) == ["20 of 40", "50% done"]


def test_failed_and_skipped_count_as_done() -> None:
    root = parse(progress_bar(0, 30, 10, 40, label="c"))
    assert "100% done" in texts(root)
    assert width_of(segments(root)["chart-pending"]) == 0


def test_the_percentage_is_floored_so_100_means_finished() -> None:
    root = parse(progress_bar(999, 0, 0, 1000, label="c"))
    assert "99% done" in texts(root)


def test_a_zero_total_draws_an_empty_bar_without_dividing_by_zero() -> None:
    root = parse(progress_bar(0, 0, 0, 0, label="c"))
    assert all(width_of(part) == 0 for part in segments(root).values())
    assert texts(root) == ["0 of 0", "0% done"]
    assert width_of(with_class(root, "chart-track")[0]) == view_width(root)


def test_counts_beyond_the_total_widen_the_scale_and_cap_the_percentage() -> None:
    root = parse(progress_bar(30, 0, 10, 20, label="c"))
    parts = segments(root)
    assert width_of(parts["chart-sent"]) == pytest.approx(view_width(root) * 0.75)
    assert width_of(parts["chart-pending"]) == 0
    assert "100% done" in texts(root)


def test_negative_counts_are_drawn_as_zero() -> None:
    root = parse(progress_bar(-5, 10, -1, 40, label="c"))
    parts = segments(root)
    assert width_of(parts["chart-sent"]) == 0
    assert width_of(parts["chart-failed"]) == pytest.approx(view_width(root) / 4)
    assert texts(root) == ["10 of 40", "25% done"]


def test_huge_counts_keep_their_proportions_and_separators() -> None:
    total = 4 * 10**18
    root = parse(progress_bar(10**18, 0, 0, total, label="c"))
    assert width_of(segments(root)["chart-sent"]) == pytest.approx(view_width(root) / 4)
    assert texts(root) == ["1,000,000,000,000,000,000 of 4,000,000,000,000,000,000", "25% done"]
    beyond_floats = 10**400
    root = parse(progress_bar(beyond_floats, 0, 0, 2 * beyond_floats, label="c"))
    assert width_of(segments(root)["chart-sent"]) == pytest.approx(view_width(root) / 2)


# ---- funnel -----------------------------------------------------------------------------------


def stage_bars(root: ET.Element) -> list[ET.Element]:
    return [el for el in with_class(root, "chart-bar") if el.tag == f"{NS}rect"]


def test_the_funnel_has_one_bar_per_stage_in_order() -> None:
    root = parse(funnel(1000, 600, 20, 30, 350, label="c"))
    assert [tip(bar).split(":")[0] for bar in stage_bars(root)] == [
        "Audience",
        "Sent",
        "Failed",
        "Skipped",
        "Waiting",
    ]
    classes = [bar.get("class", "").split()[-1] for bar in stage_bars(root)]
    assert classes == [
        "chart-audience",
        "chart-sent",
        "chart-failed",
        "chart-skipped",
        "chart-pending",
    ]


def test_a_stage_bar_is_its_share_of_the_audience() -> None:
    root = parse(funnel(1000, 250, 100, 50, 600, label="c"))
    shares = [width_of(bar) / view_width(root) for bar in stage_bars(root)]
    assert shares == pytest.approx([1.0, 0.25, 0.1, 0.05, 0.6])
    values = [t for t in texts(root) if "(" in t]
    assert values == ["1,000 (100%)", "250 (25%)", "100 (10%)", "50 (5%)", "600 (60%)"]


def test_counts_get_thousands_separators_and_huge_ones_fit() -> None:
    root = parse(funnel(1_234_567_890_123, 1_234_567_890_123, 0, 0, 0, label="c"))
    assert "1,234,567,890,123 (100%)" in texts(root)
    assert "0 (0%)" in texts(root)


@pytest.mark.parametrize(
    ("part", "whole", "shown"),
    [
        (1, 3, "33.3%"),
        (1, 8, "12.5%"),
        (1, 2_000, "<0.1%"),  # 0.05 %: not rounded down to a false 0 %
        (1, 1_000, "0.1%"),
        (1_999, 2_000, ">99.9%"),  # 99.95 %: not rounded up to a false 100 %
        (999, 1_000, "99.9%"),
        (0, 7, "0%"),
        (7, 7, "100%"),
    ],
)
def test_shares_never_round_to_a_false_zero_or_hundred(part: int, whole: int, shown: str) -> None:
    root = parse(funnel(whole, part, 0, 0, 0, label="c"))
    assert f"{part:,} ({shown})" in texts(root)


def test_an_empty_audience_has_no_shares_and_no_division_by_zero() -> None:
    root = parse(funnel(0, 0, 0, 0, 0, label="c"))
    assert all(width_of(bar) == 0 for bar in stage_bars(root))
    assert [t for t in texts(root) if "(" in t] == ["0 (—)"] * 5


def test_funnel_counts_beyond_the_audience_widen_the_scale() -> None:
    root = parse(funnel(100, 200, 0, 0, 0, label="c"))
    shares = [width_of(bar) / view_width(root) for bar in stage_bars(root)]
    assert shares[:2] == pytest.approx([0.5, 1.0])
    assert "200 (200%)" in texts(root)


def test_negative_funnel_counts_are_drawn_as_zero() -> None:
    root = parse(funnel(-10, -1, 0, 0, 0, label="c"))
    assert all(width_of(bar) == 0 for bar in stage_bars(root))


# ---- time_series ------------------------------------------------------------------------------


def bars_by_time(root: ET.Element) -> dict[str, str]:
    """Each drawn bar's HH:MM and its value, from the bar's tooltip."""
    found = {}
    for bar in stage_bars(root):
        clock, value = tip(bar).split(": ")
        found[clock] = value
    return found


def test_points_are_summed_per_bucket_and_the_window_is_half_open() -> None:
    root = series(
        [
            (at(0), 1.0),
            (at(0) + timedelta(seconds=59, microseconds=999_999), 2.0),
            (at(1), 4.0),
            (at(59) + timedelta(seconds=59), 8.0),
            (END, 100.0),  # [start, end): the end is outside
            (START - timedelta(microseconds=1), 100.0),
        ]
    )
    assert bars_by_time(root) == {"12:00": "3 sends", "12:01": "4 sends", "12:59": "8 sends"}


def test_per_second_divides_each_bucket_by_its_length() -> None:
    """60 buckets over an hour are a minute each: one send a second is 1 per second."""
    every_second = [(START + timedelta(seconds=n), 1.0) for n in range(120)]
    root = series(every_second, unit="per second", per_second=True)
    assert bars_by_time(root) == {"12:00": "1 per second", "12:01": "1 per second"}
    assert "peak 1 per second" in (root.get("aria-label") or "")


def test_bar_heights_are_proportional_to_the_nice_maximum() -> None:
    root = series([(at(0), 3.0), (at(10), 8.0)])
    first, second = stage_bars(root)
    assert width_of(first) > 0
    heights = [float(bar.get("height", "")) for bar in (first, second)]
    assert heights[0] / heights[1] == pytest.approx(3 / 8)
    # The axis tops out at 10 (the nice maximum above 8): the 8 bar is 80 % of the plot.
    tops = [float(bar.get("y", "")) for bar in (first, second)]
    bottom = tops[0] + heights[0]
    plot = heights[1] / 0.8
    assert bottom - plot == pytest.approx(min(float(line.get("y1", "")) for line in grid(root)))


def grid(root: ET.Element) -> list[ET.Element]:
    return with_class(root, "chart-grid")


def test_bars_sit_in_their_buckets_left_to_right() -> None:
    root = series([(at(m), 1.0) for m in (0, 15, 30, 59)], buckets=60)
    xs = [float(bar.get("x", "")) for bar in stage_bars(root)]
    assert xs == sorted(xs)
    slot = (xs[3] - xs[0]) / 59
    assert xs[1] - xs[0] == pytest.approx(15 * slot, abs=0.02)  # coordinates have 2 decimals


def test_the_y_axis_has_three_rounded_tick_labels_and_the_unit() -> None:
    root = series([(at(0), 37.0)], unit="errors/min")
    ticks = [el.text for el in root.iter(f"{NS}text") if el.get("text-anchor") == "end"][:3]
    assert ticks == ["0", "25", "50"]
    assert "errors/min" in texts(root)


@pytest.mark.parametrize(
    ("peak", "labels"),
    [
        (0.3, ["0", "0.25", "0.5"]),
        (1.0, ["0", "0.5", "1"]),
        (1.5, ["0", "1", "2"]),
        (4.0, ["0", "2.5", "5"]),
        (7_000.0, ["0", "5,000", "10,000"]),
        (3e6, ["0", "2.5M", "5M"]),
        (1.5e9, ["0", "1G", "2G"]),
    ],
)
def test_y_tick_labels(peak: float, labels: list[str]) -> None:
    root = series([(at(0), peak)])
    ticks = [el.text for el in root.iter(f"{NS}text") if el.get("text-anchor") == "end"][:3]
    assert ticks == labels


def test_x_labels_are_utc_hh_mm_from_start_to_end() -> None:
    root = series([(at(5), 1.0)])
    assert clock_labels(root) == ["12:00", "12:15", "12:30", "12:45", "13:00"]


def test_x_labels_are_in_utc_whatever_the_zone_given() -> None:
    paris = timezone(timedelta(hours=2))
    start = START.astimezone(paris)
    root = series([(at(5).astimezone(paris), 1.0)], start=start, end=start + timedelta(hours=1))
    assert clock_labels(root) == ["12:00", "12:15", "12:30", "12:45", "13:00"]
    assert bars_by_time(root) == {"12:05": "1 sends"}


def test_no_points_is_an_empty_state_not_an_error() -> None:
    root = series([])
    assert "no data" in texts(root)
    assert stage_bars(root) == []
    assert root.get("aria-label") == "Sends: 12:00–13:00 UTC, no data"
    assert clock_labels(root) == ["12:00", "12:15", "12:30", "12:45", "13:00"]  # still shown


def test_points_outside_the_window_only_is_no_data() -> None:
    root = series([(END + timedelta(minutes=1), 5.0)])
    assert "no data" in texts(root)


def test_negative_nan_and_infinite_values_are_drawn_as_zero() -> None:
    root = series([(at(0), -5.0), (at(1), math.nan), (at(2), math.inf), (at(3), 2.0)])
    assert bars_by_time(root) == {"12:03": "2 sends"}
    assert "no data" not in texts(root)


def test_only_zero_values_draw_an_axis_up_to_one() -> None:
    root = series([(at(0), 0.0), (at(1), -1.0)])
    assert stage_bars(root) == []
    assert "no data" not in texts(root)
    assert root.get("aria-label", "").endswith("peak 0 sends")


def test_huge_values_fill_the_plot_without_overflowing() -> None:
    root = series([(at(0), 1e308), (at(0), 1e308), (at(1), 1e300)])
    bars = stage_bars(root)
    assert len(bars) == 2
    heights = [float(bar.get("height", "")) for bar in bars]
    assert all(math.isfinite(h) and h >= 0 for h in heights)
    assert heights[0] > heights[1]


def test_fractional_values_are_shown_with_a_few_digits() -> None:
    root = series([(at(0), 0.25), (at(0), 0.5), (at(1), 1234.5678)])
    assert bars_by_time(root) == {"12:00": "0.75 sends", "12:01": "1,234.6 sends"}


def test_few_buckets_split_the_window_evenly() -> None:
    root = series([(at(m), 1.0) for m in range(60)], buckets=4)
    assert bars_by_time(root) == {
        "12:00": "15 sends",
        "12:15": "15 sends",
        "12:30": "15 sends",
        "12:45": "15 sends",
    }


def test_one_bucket_holds_everything() -> None:
    root = series([(at(m), 2.0) for m in range(60)], buckets=1)
    assert bars_by_time(root) == {"12:00": "120 sends"}
    assert clock_labels(root) == ["12:00", "13:00"]


def test_the_unit_is_escaped_too() -> None:
    svg = time_series([(at(0), 1.0)], label="x", unit=SCRIPT, start=START, end=END)
    assert "<script" not in svg
    assert SCRIPT in texts(parse(svg))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buckets": 0}, "buckets"),
        ({"end": START}, "after start"),
        ({"end": START - timedelta(minutes=1)}, "after start"),
        ({"start": START.replace(tzinfo=None)}, "timezone-aware"),
        ({"end": END.replace(tzinfo=None)}, "timezone-aware"),
    ],
)
def test_a_bad_window_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        series([(at(0), 1.0)], **kwargs)


def test_a_naive_point_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        series([(at(0).replace(tzinfo=None), 1.0)])


# ---- the nice maximum -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "nice"),
    [
        (0.0, 1.0),
        (-3.0, 1.0),
        (math.nan, 1.0),
        (1e-9, 1e-9),
        (4.2e-7, 5e-7),
        (0.001, 0.001),
        (0.0011, 0.002),
        (0.3, 0.5),
        (0.5, 0.5),
        (0.51, 1.0),
        (1.0, 1.0),
        (1.01, 2.0),
        (2.0, 2.0),
        (2.5, 5.0),
        (5.0, 5.0),
        (7.0, 10.0),
        (10.0, 10.0),
        (11.0, 20.0),
        (99.0, 100.0),
        (100.0, 100.0),
        (101.0, 200.0),
        (12_345.0, 20_000.0),
        (1e12 + 1, 2e12),
        (6e307, 1e308),
    ],
)
def test_nice_max(value: float, nice: float) -> None:
    assert _nice_max(value) == nice


@given(st.floats(min_value=1e-300, max_value=1e300))
def test_nice_max_is_the_smallest_one_two_or_five_at_or_above(value: float) -> None:
    nice = _nice_max(value)
    assert nice >= value
    mantissa = float(f"{nice:e}".split("e")[0])
    assert mantissa in (1.0, 2.0, 5.0)
    below = nice / (2.5 if mantissa == 5 else 2)  # 5 → 2, 2 → 1, 1 → 0.5
    assert below < value


def test_nice_max_of_the_largest_floats_stays_finite() -> None:
    assert math.isfinite(_nice_max(1.7e308))
    assert math.isfinite(_nice_max(math.inf))
