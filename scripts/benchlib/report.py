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
        "load_at_start": os.getloadavg(),
    }


def _row(f):
    s = f.summary()
    if "value" in s:
        return [f.label, fmt(s["value"], f.unit), "", ""]
    if not s:
        return [f.label, "n/a", f.note or "", ""]
    rng = fmt_range(s["min"], s["max"], f.unit) if s["n"] > 1 else ""
    return [f.label, fmt(s["median"], f.unit), rng, str(s["n"])]


def table(doc, sections, extra_lines):
    """sections: [(title, [Figure])]; extra_lines: {section title: [lines after it]}."""
    m = doc["machine"]
    head = (
        f"banger bench, {doc['date']}: {m['cpu']}, {m['cores']} cores, {m['memory_gib']:g} GiB, "
        f"{m['os']}, QEMU {m['qemu']} ({m['accel']}), banger {m['banger']}; "
        f"N={doc['runs']}, load at start {m['load_at_start'][0]:.1f}"
    )
    rows = [["what", "median", "range", "n"]]
    marks = []
    for title, figs in sections:
        marks.append(len(rows))
        rows.append([title, "", "", ""])
        for f in figs:
            r = _row(f)
            r[0] = "  " + r[0]
            rows.append(r)
        for line in extra_lines.get(title, []):
            rows.append([line, "", "", ""])
    w = [max(len(r[i]) for r in rows if not (i == 0 and r[1] == "" and r[2] == "")) for i in range(4)]
    w[0] = min(max(w[0], 40), 70)
    out = [head, ""]
    for i, r in enumerate(rows):
        if r[1:] == ["", "", ""]:
            out.append(r[0])
            continue
        out.append(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}".rstrip())
        if i == 0:
            out.append("-" * (sum(w) + 6))
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
