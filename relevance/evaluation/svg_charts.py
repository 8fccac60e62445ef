"""SVG charts as plain data for the report template: x-y charts (lines, points, steps, guides, markers) and grouped
bar charts with intervals, each a list of `Shape`s in pixel coordinates (templates/macros.html.j2 draws them)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from relevance.evaluation.report_format import fmt_number, is_missing_value

# purity: no pyspark torch transformers


@dataclass(frozen=True)
class Shape:
    """One SVG element: tag, attributes, and its text or its hover title (both optional)."""

    tag: str
    attrs: dict[str, str]
    text: str = ""
    tip: str = ""


@dataclass(frozen=True)
class Chart:
    """An inline SVG chart in a figure: `shapes` in pixel coordinates, drawn in order."""

    title: str
    width: int
    height: int
    shapes: list[Shape]
    caption: str


@dataclass(frozen=True)
class Plot:
    """Pixel geometry of a chart and its data-to-pixel scales."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float
    x_range: tuple[float, float]
    y_range: tuple[float, float] = (0.0, 1.0)

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:  # bottom edge of the plot area
        return self.height - self.bottom

    @property
    def y1(self) -> float:  # top edge
        return self.top

    def sx(self, x: float) -> float:
        lo, hi = self.x_range
        return self.x0 + (x - lo) / ((hi - lo) or 1.0) * (self.x1 - self.x0)

    def sy(self, y: float) -> float:
        lo, hi = self.y_range
        return self.y0 - (y - lo) / ((hi - lo) or 1.0) * (self.y0 - self.y1)


@dataclass(frozen=True)
class Series:
    """One line/point/step series of an x-y chart, in data coordinates."""

    name: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    color: str
    kind: str = "line"  # line | points | linepoints | step (x are bin edges, len(y) + 1)
    sizes: tuple[float, ...] = ()  # point radii in pixels, for points / linepoints
    tips: tuple[str, ...] = ()  # hover text per point


@dataclass(frozen=True)
class Guide:
    """A reference line in data coordinates (diagonal, target precision...)."""

    x: tuple[float, float]
    y: tuple[float, float]
    label: str = ""
    color: str = "#59636e"


@dataclass(frozen=True)
class Marker:
    x: float
    y: float
    label: str
    color: str


@dataclass(frozen=True)
class Bars:
    """One system's bars across categories (NaN = no bar)."""

    name: str
    values: tuple[float, ...]
    lows: tuple[float, ...]
    highs: tuple[float, ...]
    color: str
    tips: tuple[str, ...] = ()


def _n(value: float) -> str:
    return f"{value:.1f}"


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _ticks(lo: float, hi: float, target: int = 5) -> list[tuple[float, str]]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    step = _nice_step(hi - lo, target)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if step / 10 ** math.floor(math.log10(step)) == 2.5 else 0)
    first = math.ceil(lo / step - 1e-9)
    values = [i * step for i in range(first, int(math.floor(hi / step + 1e-9)) + 1)]
    return [(v, f"{v:.{decimals}f}") for v in values]


def data_span(values: Iterable[float], floor: tuple[float, float]) -> tuple[float, float]:
    """The range covering `floor` and every finite value."""
    finite = [float(v) for v in values if not is_missing_value(v) and math.isfinite(float(v))]
    return min([floor[0], *finite]), max([floor[1], *finite])


def _shape(tag: str, text: object = "", tip: object = "", **attrs: object) -> Shape:
    """An SVG element; attributes as keywords, `_` for `-` and `class_` for class; numbers are pixels (to 0.1)."""
    return Shape(tag, {name.rstrip("_").replace("_", "-"): _n(v) if isinstance(v, (int, float)) else str(v)
                       for name, v in attrs.items()}, str(text), str(tip))


def _text(x: float, y: float, text: str, anchor: str = "start", **attrs: object) -> Shape:
    return _shape("text", text, x=x, y=y, text_anchor=anchor, **attrs)


def _line(x1: float, y1: float, x2: float, y2: float, **attrs: object) -> Shape:
    return _shape("line", x1=x1, y1=y1, x2=x2, y2=y2, **attrs)


def _legend(items: Sequence[tuple[str, str]], width: float, top: float = 6) -> tuple[list[Shape], float]:
    """Legend entries (name, colour) laid out in rows across the top; returns the shapes and their height."""
    shapes, x, y = [], 10.0, top
    for name, color in items:
        item_width = 28 + 6.5 * len(name)
        if x + item_width > width - 10 and x > 10:
            x, y = 10.0, y + 16
        shapes += [_shape("rect", x=x, y=y + 2, width="14", height="8", fill=color), _text(x + 18, y + 10, name)]
        x += item_width + 10
    return shapes, (y - top + 22) if items else 0.0


def _x_axis(plot: Plot, label: str) -> list[Shape]:
    shapes = [_line(plot.x0, plot.y0, plot.x1, plot.y0, class_="axis")]
    for value, text in _ticks(*plot.x_range):
        x = plot.sx(value)
        shapes += [_line(x, plot.y1, x, plot.y0, class_="grid"), _line(x, plot.y0, x, plot.y0 + 4, class_="axis"),
                   _text(x, plot.y0 + 16, text, "middle")]
    return shapes + [_text((plot.x0 + plot.x1) / 2, plot.height - 8, label, "middle")]


def _y_axis(plot: Plot, label: str) -> list[Shape]:
    shapes = [_line(plot.x0, plot.y1, plot.x0, plot.y0, class_="axis")]
    for value, text in _ticks(*plot.y_range):
        y = plot.sy(value)
        shapes += [_line(plot.x0, y, plot.x1, y, class_="grid"), _line(plot.x0 - 4, y, plot.x0, y, class_="axis"),
                   _text(plot.x0 - 7, y + 4, text, "end")]
    cx, cy = 14, (plot.y0 + plot.y1) / 2
    return shapes + [_text(cx, cy, label, "middle", transform=f"rotate(-90 {_n(cx)} {_n(cy)})")]


def _finite_points(series: Series) -> list[tuple[float, float, int]]:
    return [(float(x), float(y), i) for i, (x, y) in enumerate(zip(series.x, series.y))
            if not (is_missing_value(x) or is_missing_value(y)) and math.isfinite(float(x)) and math.isfinite(float(y))]


def _series_shapes(plot: Plot, series: Series) -> list[Shape]:
    if series.kind == "step":
        return _step_shapes(plot, series)
    points = _finite_points(series)
    shapes = []
    if series.kind in ("line", "linepoints") and len(points) > 1:
        coords = " ".join(f"{_n(plot.sx(x))},{_n(plot.sy(y))}" for x, y, _ in points)
        shapes.append(_shape("polyline", points=coords, fill="none", stroke=series.color,
                             stroke_width="2" if series.kind == "line" else "1.2"))
    if series.kind in ("points", "linepoints"):
        for x, y, i in points:
            shapes.append(_shape("circle", tip=series.tips[i] if i < len(series.tips) else "",
                                 cx=plot.sx(x), cy=plot.sy(y), r=series.sizes[i] if i < len(series.sizes) else 3.5,
                                 fill=series.color, fill_opacity="0.65", stroke=series.color))
    return shapes


def _step_shapes(plot: Plot, series: Series) -> list[Shape]:
    """A histogram outline: x are bin edges (one more than y), filled lightly."""
    edges, heights = list(series.x), list(series.y)
    if len(edges) != len(heights) + 1 or not heights:
        return []
    coords = [(edges[0], 0.0)]
    for i, h in enumerate(heights):
        h = 0.0 if is_missing_value(h) else float(h)
        coords += [(edges[i], h), (edges[i + 1], h)]
    coords.append((edges[-1], 0.0))
    points = " ".join(f"{_n(plot.sx(x))},{_n(plot.sy(y))}" for x, y in coords)
    return [_shape("polygon", tip=series.name, points=points, fill=series.color, fill_opacity="0.12",
                   stroke=series.color, stroke_width="1.6")]


def _guide_shapes(plot: Plot, guide: Guide) -> list[Shape]:
    (xa, xb), (ya, yb) = guide.x, guide.y
    shapes = [_line(plot.sx(xa), plot.sy(ya), plot.sx(xb), plot.sy(yb), stroke=guide.color, stroke_width="1.2",
                    stroke_dasharray="5 4")]
    if guide.label:
        shapes.append(_text(plot.sx(xb) - 4, plot.sy(yb) - 5, guide.label, "end", class_="halo", fill=guide.color))
    return shapes


def _marker_shapes(plot: Plot, marker: Marker) -> list[Shape]:
    x, y = plot.sx(marker.x), plot.sy(marker.y)
    right_side = x < plot.x0 + 0.6 * (plot.x1 - plot.x0)
    diamond = f"M{_n(x)},{_n(y - 7)} L{_n(x + 7)},{_n(y)} L{_n(x)},{_n(y + 7)} L{_n(x - 7)},{_n(y)} Z"
    return [_shape("path", tip=marker.label, d=diamond, fill="#fff", stroke=marker.color, stroke_width="2.2"),
            _text(x + 10 if right_side else x - 10, y + 18, marker.label, "start" if right_side else "end",
                  class_="halo", font_weight="600")]


def xy_chart(series: Sequence[Series], *, title: str, caption: str, x_label: str, y_label: str,
                  x_range: tuple[float, float], y_range: tuple[float, float], guides: Sequence[Guide] = (),
                  markers: Sequence[Marker] = (), width: float = 540, height: float = 400) -> Chart:
    """The generic x-y chart: axes with ticks, grid, legend, reference lines, series and markers."""
    legend, legend_height = _legend([(s.name, s.color) for s in series], width)
    plot = Plot(width, height, left=58, right=18, top=legend_height + 12, bottom=44, x_range=x_range, y_range=y_range)
    shapes = _x_axis(plot, x_label) + _y_axis(plot, y_label)
    for g in guides:
        shapes += _guide_shapes(plot, g)
    for s in series:
        shapes += _series_shapes(plot, s)
    for m in markers:
        shapes += _marker_shapes(plot, m)
    return Chart(title, round(width), round(height), shapes + legend, caption)


def bar_chart(categories: Sequence[str], series: Sequence[Bars], *, title: str, caption: str, x_label: str,
                   x_range: tuple[float, float], width: float = 760) -> Chart:
    """The generic horizontal grouped bar chart, one group per category, with CI whiskers."""
    bar, gap = 12.0, 10.0
    label_width = min(230.0, 16 + 6.5 * max((len(c) for c in categories), default=4))
    legend, legend_height = _legend([(s.name, s.color) for s in series], width)
    group = bar * len(series) + gap
    height = legend_height + 12 + group * len(categories) + 44
    plot = Plot(width, height, left=label_width, right=56, top=legend_height + 12, bottom=44, x_range=x_range)
    shapes = _x_axis(plot, x_label)
    for c, category in enumerate(categories):
        top = plot.y1 + c * group + gap / 2
        shapes.append(_text(plot.x0 - 8, top + bar * len(series) / 2 + 4, category, "end"))
        for s, bars in enumerate(series):
            shapes += _bar_shapes(plot, bars, c, top + s * bar, bar)
    return Chart(title, round(width), round(height), shapes + legend, caption)


def _bar_shapes(plot: Plot, bars: Bars, index: int, top: float, height: float) -> list[Shape]:
    value = bars.values[index]
    if is_missing_value(value):
        return []
    start, end = sorted((plot.sx(max(plot.x_range[0], 0.0)), plot.sx(float(value))))
    shapes = [_shape("rect", tip=bars.tips[index] if index < len(bars.tips) else "", x=start, y=top + 1,
                     width=max(end - start, 0.5), height=height - 2, fill=bars.color)]
    low, high, mid = bars.lows[index], bars.highs[index], top + height / 2
    right = end
    if not (is_missing_value(low) or is_missing_value(high)):
        xl, xh = plot.sx(float(low)), plot.sx(float(high))
        whisker = (f"M{_n(xl)},{_n(mid)} H{_n(xh)} M{_n(xl)},{_n(mid - 4)} V{_n(mid + 4)} "
                   f"M{_n(xh)},{_n(mid - 4)} V{_n(mid + 4)}")
        shapes.append(_shape("path", d=whisker, stroke="#1f2328", stroke_width="1.1", fill="none"))
        right = max(right, xh)
    return shapes + [_text(right + 4, mid + 4, fmt_number(value), fill="#59636e")]
