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
W, LEFT, RIGHT = 980, 250, 30
BAR, GAP = 34, 86


def _ticks(total):
    for step in (0.5, 1, 2, 5, 10, 20, 30, 60, 120):
        if total / step <= 12:
            break
    t, out = 0.0, []
    while t <= total + 1e-9:
        out.append(t)
        t += step
    return out


def timeline(rows, title, subtitle):
    """rows: [(label, [(segment, kind, start_s, end_s), ...])] -> SVG text."""
    total = max((e for _, segs in rows for *_, e in segs), default=1.0) or 1.0
    total *= 1.02
    scale = (W - LEFT - RIGHT) / total
    legend_lines = sum(1 + (len(segs) + 2) // 3 for _, segs in rows)
    h = 70 + len(rows) * GAP + 30 + legend_lines * 18 + 10
    o = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" '
        f'viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{h}" fill="white"/>',
        f'<text x="10" y="22" font-size="16" font-weight="bold">{escape(title)}</text>',
        f'<text x="10" y="42" fill="#555">{escape(subtitle)}</text>',
    ]
    top = 70
    axis_y = top + len(rows) * GAP - GAP + BAR + 18
    for t in _ticks(total):
        x = LEFT + t * scale
        o.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{axis_y - 12}" stroke="#ddd"/>')
        o.append(f'<text x="{x:.1f}" y="{axis_y}" text-anchor="middle" fill="#555">{t:g} s</text>')
    for i, (label, segs) in enumerate(rows):
        y = top + i * GAP
        end = max((e for *_, e in segs), default=0)
        o.append(f'<text x="{LEFT - 8}" y="{y + BAR / 2 + 4}" text-anchor="end">{escape(label)}</text>')
        for name, kind, s, e in segs:
            x, w = LEFT + s * scale, max((e - s) * scale, 0.5)
            c = COLORS.get(kind, COLORS["other"])
            o.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR}" fill="{c}" '
                f'stroke="white" stroke-width="0.5"><title>{escape(name)}: {e - s:.2f} s</title></rect>'
            )
            if w > 46:
                o.append(
                    f'<text x="{x + w / 2:.1f}" y="{y + BAR / 2 + 4}" text-anchor="middle" '
                    f'fill="white" font-size="11">{escape(name)}</text>'
                )
        o.append(
            f'<text x="{LEFT + end * scale + 4:.1f}" y="{y + BAR + 14}" fill="#333" '
            f'font-weight="bold">{end:.2f} s</text>'
        )
    y = axis_y + 26
    for label, segs in rows:
        o.append(f'<text x="10" y="{y}" font-weight="bold">{escape(label)}</text>')
        y += 18
        for j in range(0, len(segs), 3):
            x = 24
            for name, kind, s, e in segs[j : j + 3]:
                c = COLORS.get(kind, COLORS["other"])
                o.append(f'<rect x="{x}" y="{y - 10}" width="10" height="10" fill="{c}"/>')
                o.append(f'<text x="{x + 15}" y="{y}">{escape(name)}: {e - s:.2f} s</text>')
                x += 310
            y += 18
    o.append("</svg>")
    return "\n".join(o) + "\n"
