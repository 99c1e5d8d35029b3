"""Inline SVG charts, drawn on the server (no JavaScript, no build step).

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` that says
in words what it shows, and a ``<title>`` per bar for the numbers on hover.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

from ..models import Status
from .queries import OUTCOMES, Bucket, FunctionStats

#: The admin's badge colours (admin.BADGE_COLOURS), by outcome.
COLOURS = {
    "complete": "#176f2c",
    "failed": "#a40000",
    "lost": "#9a5b00",
    "cancelled": "#6b6b6b",
}
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 170, 40, 22, 8


def _n(value: float) -> str:
    return f"{value:.1f}"


def _nice_max(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above ``value`` (an axis' top)."""
    if value <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 <= value:
        scale *= 10
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


def _rate(bucket: Bucket, minutes: float) -> float:
    return bucket.total / minutes


def throughput(buckets: Sequence[Bucket], minutes: float, title: str, chart_id: str) -> SafeString:
    """Stacked bars: jobs finished per minute in each bucket, by outcome."""
    top = _nice_max(max((_rate(b, minutes) for b in buckets), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    bar_w = plot_w / max(len(buckets), 1)
    bars = []
    for i, bucket in enumerate(buckets):
        x = LEFT + i * bar_w
        y = float(TOP + plot_h)
        local = timezone.localtime(bucket.start).strftime("%H:%M")
        parts = ", ".join(
            f"{bucket.counts[o]} {_outcome(o)}" for o in OUTCOMES if bucket.counts[o]
        )
        tip = f"{local}: {parts or gettext('nothing finished')}"
        segments = []
        for outcome in OUTCOMES:
            count = bucket.counts[outcome]
            if not count:
                continue
            h = (count / minutes) / top * plot_h
            y -= h
            segments.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"'
                    ' data-outcome="{}"></rect>',
                    _n(x + 0.5),
                    _n(y),
                    _n(max(bar_w - 1, 0.5)),
                    _n(h),
                    COLOURS[outcome],
                    outcome,
                )
            )
        bars.append(
            format_html(
                '<g class="gearattach-bar"><title>{}</title>{}'
                '<rect x="{}" y="{}" width="{}" height="{}" fill="transparent">'
                "</rect></g>",
                tip,
                mark_safe("".join(segments)),
                _n(x),
                TOP,
                _n(bar_w),
                plot_h,
            )
        )
    total = sum(b.total for b in buckets)
    labels = []
    for i, anchor in ((0, "start"), (len(buckets) // 2, "middle"), (len(buckets) - 1, "end")):
        if 0 <= i < len(buckets):
            x = LEFT + i * bar_w + {"start": 0, "middle": bar_w / 2, "end": bar_w}[anchor]
            labels.append(
                format_html(
                    '<text x="{}" y="{}" text-anchor="{}">{}</text>',
                    _n(x),
                    HEIGHT - 6,
                    anchor,
                    timezone.localtime(buckets[i].start).strftime("%H:%M"),
                )
            )
    return format_html(
        '<svg class="gearattach-chart" id="{id}" viewBox="0 0 {w} {h}" role="img"'
        ' aria-labelledby="{id}-title {id}-desc" data-total="{total}">'
        '<title id="{id}-title">{title}</title>'
        '<desc id="{id}-desc">{desc}</desc>'
        '<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" class="axis"></line>'
        '<line x1="{left}" y1="{base}" x2="{w}" y2="{base}" class="axis"></line>'
        '<text x="{label_x}" y="{label_top}" text-anchor="end">{ymax}</text>'
        '<text x="{label_x}" y="{base}" text-anchor="end">0</text>'
        "{bars}{labels}</svg>",
        id=chart_id,
        w=WIDTH,
        h=HEIGHT,
        total=total,
        title=title,
        desc=gettext("%(total)s jobs finished; the highest bar is %(peak)s a minute.")
        % {"total": total, "peak": _n(max((_rate(b, minutes) for b in buckets), default=0.0))},
        left=LEFT,
        top=TOP,
        base=TOP + plot_h,
        label_x=LEFT - 4,
        label_top=TOP + 8,
        ymax=f"{top:g}",
        bars=mark_safe("".join(bars)),
        labels=mark_safe("".join(labels)),
    )


def _outcome(status: str) -> str:
    """An outcome's name in the active language, lower case as the charts write it."""
    return str(Status(status).label).lower()


def legend() -> SafeString:
    return format_html_join(
        "",
        '<span class="gearattach-key"><i style="background:{}"></i>{}</span>',
        ((COLOURS[o], _outcome(o)) for o in OUTCOMES),
    )


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def spread(stats: FunctionStats, scale: float, which: str) -> SafeString:
    """A small bar: p50 (dark), p95 (mid) and p99 (light) of wait or run on one scale."""
    values = stats.wait if which == "wait" else stats.run
    if not values or scale <= 0:
        return format_html("{}", "")
    width = 160
    bars = format_html_join(
        "",
        '<rect x="0" y="{}" width="{}" height="4" class="p{}"><title>p{}: {}</title></rect>',
        (
            (
                i * 5,
                _n(min(values[p] / scale, 1.0) * width),
                int(p * 100),
                int(p * 100),
                seconds(values[p]),
            )
            for i, p in enumerate((0.5, 0.95, 0.99))
        ),
    )
    return format_html(
        '<svg class="gearattach-spread" viewBox="0 0 {} 14" width="{}" height="14"'
        ' role="img" aria-label="{} p50 {}, p95 {}, p99 {}">{}</svg>',
        width,
        width,
        gettext("wait") if which == "wait" else gettext("run"),
        seconds(values[0.5]),
        seconds(values[0.95]),
        seconds(values[0.99]),
        bars,
    )
