"""The table (text), the JSON document, and publishing both into docs/performance.md."""

import json
import os
import platform
import re

from .util import fmt, fmt_range, run

TABLE_BEGIN = "<!-- bench:table -->"
TABLE_END = "<!-- /bench:table -->"


def machine_info(banger_version, accel):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 2**20
    osr = "?"
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?([^"\n]+)', f.read(), re.M)
            osr = m.group(1) if m else osr
    except OSError:
        pass
    q = run(["qemu-system-x86_64", "--version"], check=False).stdout.splitlines()
    qv = re.search(r"version (\S+)", q[0]).group(1) if q else "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "os": osr,
        "host_kernel": platform.release(),
        "qemu": qv,
        "accel": accel,
        "banger": banger_version,
        "load_at_end": os.getloadavg(),
    }


def _row(f):
    s = f.summary()
    if "value" in s:
        return [f.label, fmt(s["value"], f.unit), "", ""]
    if not s:
        return [f.label, "n/a", "", ""]
    rng = fmt_range(s["min"], s["max"], f.unit) if s["n"] > 1 else ""
    return [f.label, fmt(s["median"], f.unit), rng, str(s["n"])]


def table(doc, sections, extra_lines):
    """sections: [(title, [Figure])]; extra_lines: {section title: [lines after it]}.

    One row per figure (label, median, range, n); a figure's note goes on its own line
    under it, a section's extra lines (the ratio) after the section."""
    m = doc["machine"]
    head = [
        f"banger bench, {doc['date']}, N={doc['runs']} (figures: median, range of N runs)",
        f"host: {m['cpu']}, {m['cores']} cores, {m['memory_gib']:g} GiB, {m['os']}, kernel {m['host_kernel']}",
        f"QEMU {m['qemu']} ({m['accel']}); banger {m['banger']}",
        f"load average (1 min) at start {m['load_at_start'][0]:.1f}, at end {m['load_at_end'][0]:.1f}; "
        f"the bench took {doc['wall_seconds'] / 60:.1f} min",
    ]
    rows = []  # ("row", [4 cells]) | ("line", text)
    for title, figs in sections:
        rows.append(("line", ""))
        rows.append(("line", title))
        for f in figs:
            r = _row(f)
            r[0] = "  " + r[0]
            rows.append(("row", r))
            if f.note:
                rows.append(("line", "      " + f.note))
        for line in extra_lines.get(title, []):
            rows.append(("line", line))
    cells = [["what", "median", "range", "n"]] + [r for k, r in rows if k == "row"]
    w = [max(len(c[i]) for c in cells) for i in range(4)]

    def fmt_row(r):
        return f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}".rstrip()

    out = head + ["", fmt_row(cells[0]), "-" * (sum(w) + 6)]
    for kind, r in rows[1:]:
        out.append(fmt_row(r) if kind == "row" else r)
    return "\n".join(out) + "\n"


def to_json(doc, sections, extra):
    d = dict(doc)
    d["sections"] = [
        {"title": t, "figures": [f.to_json() for f in figs]} for t, figs in sections
    ]
    d.update(extra)
    return json.dumps(d, indent=2) + "\n"


def publish(docs_md, svg_src, svg_dst, text):
    """Replace the table between the markers in docs/performance.md; copy the chart."""
    with open(docs_md) as f:
        md = f.read()
    if TABLE_BEGIN not in md or TABLE_END not in md:
        raise ValueError(f"{docs_md} has no {TABLE_BEGIN} ... {TABLE_END} block")
    a = md.index(TABLE_BEGIN) + len(TABLE_BEGIN)
    b = md.index(TABLE_END)
    md = md[:a] + "\n```\n" + text + "```\n" + md[b:]
    tmp = docs_md + ".tmp"
    with open(tmp, "w") as f:
        f.write(md)
    os.replace(tmp, docs_md)
    with open(svg_src) as f, open(svg_dst + ".tmp", "w") as g:
        g.write(f.read())
    os.replace(svg_dst + ".tmp", svg_dst)
