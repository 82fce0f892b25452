"""The timeline chart of one cold boot, banger beside the stock boot (plain SVG text)."""

from html import escape

COLORS = {
    "host": "#4e79a7",
    "vmm": "#59a14f",
    "kernel": "#f28e2b",
    "initrd": "#edc948",
    "init": "#b07aa1",
    "ssh": "#e15759",
    "command": "#76b7b2",
    "other": "#bab0ac",
}
W, LEFT, RIGHT = 1000, 270, 70
BAR, GAP = 34, 64
LEGEND_COLS, LEGEND_W = 2, 480
CHAR_W = 6.4  # a generous average glyph width of the 11 px sans-serif labels


def _ticks(total):
    for step in (0.5, 1, 2, 5, 10, 20, 30, 60, 120):
        if total / step <= 12:
            break
    t, out = 0.0, []
    while t <= total + 1e-9:
        out.append(t)
        t += step
    return out


def _fit(text, width):
    """`text` if it fits in `width` px, else nothing (the legend names every segment)."""
    return text if len(text) * CHAR_W + 8 <= width else ""


def timeline(rows, title, subtitle):
    """rows: [(label, [(segment, kind, start_s, end_s), ...])] -> SVG text.

    One horizontal bar per row on a shared time axis; each segment is labelled inside
    the bar when it fits (its name, else its duration), and the legend under the chart
    lists every segment with its duration, so nothing depends on hovering."""
    total = max((e for _, segs in rows for *_, e in segs), default=1.0) or 1.0
    scale = (W - LEFT - RIGHT) / total
    top = 64
    axis_y = top + (len(rows) - 1) * GAP + BAR + 18
    legend_lines = sum(1 + (len(segs) + LEGEND_COLS - 1) // LEGEND_COLS for _, segs in rows)
    h = axis_y + 20 + legend_lines * 18 + 12
    o = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" '
        f'viewBox="0 0 {W} {h}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="12">',
        f'<rect width="{W}" height="{h}" fill="white"/>',
        f'<text x="10" y="22" font-size="16" font-weight="bold">{escape(title)}</text>',
        f'<text x="10" y="42" fill="#555">{escape(subtitle)}</text>',
    ]
    for t in _ticks(total):
        x = LEFT + t * scale
        o.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{axis_y - 12}" stroke="#ddd"/>')
        o.append(f'<text x="{x:.1f}" y="{axis_y}" text-anchor="middle" fill="#555">{t:g} s</text>')
    for i, (label, segs) in enumerate(rows):
        y = top + i * GAP
        mid = y + BAR / 2 + 4
        end = max((e for *_, e in segs), default=0)
        o.append(f'<text x="{LEFT - 8}" y="{mid}" text-anchor="end">{escape(label)}</text>')
        for name, kind, s, e in segs:
            x, w = LEFT + s * scale, max((e - s) * scale, 0.5)
            c = COLORS.get(kind, COLORS["other"])
            o.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR}" fill="{c}" '
                f'stroke="white" stroke-width="0.5"><title>{escape(name)}: {e - s:.2f} s</title></rect>'
            )
            text = _fit(name, w) or _fit(f"{e - s:.1f}", w)
            if text:
                o.append(
                    f'<text x="{x + w / 2:.1f}" y="{mid}" text-anchor="middle" '
                    f'fill="white" font-size="11">{escape(text)}</text>'
                )
        o.append(
            f'<text x="{LEFT + end * scale + 6:.1f}" y="{mid}" fill="#333" '
            f'font-weight="bold">{end:.1f} s</text>'
        )
    y = axis_y + 26
    for label, segs in rows:
        o.append(f'<text x="10" y="{y}" font-weight="bold">{escape(label)}</text>')
        y += 18
        for j in range(0, len(segs), LEGEND_COLS):
            x = 24
            for name, kind, s, e in segs[j : j + LEGEND_COLS]:
                c = COLORS.get(kind, COLORS["other"])
                o.append(f'<rect x="{x}" y="{y - 10}" width="10" height="10" fill="{c}"/>')
                o.append(f'<text x="{x + 15}" y="{y}">{escape(name)}: {e - s:.2f} s</text>')
                x += LEGEND_W
            y += 18
    o.append("</svg>")
    return "\n".join(o) + "\n"
