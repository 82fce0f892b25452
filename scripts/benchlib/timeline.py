"""One cold boot laid out stage by stage on the host's clock: banger's bars beside the stock boot.

banger's host-side stages come from `--timings` (the daemon's own clock); the guest's part
is split by the guest's own record of its boot, the console lines banger's init writes with
the guest's uptime (`[    1.23] banger-init: ...`), placed on the host's clock by the
guest's uptime read through the agent right after the boot. The stock boot's marks come
from stock.marks_from. Every stage end is clamped to be monotonic: the two clocks agree to
within a few tens of milliseconds, not better.
"""

import os
import re

from . import svg
from .banger import MODES

_INIT_LINE = re.compile(r"^\[\s*(\d+\.\d+)\] banger-init: (.*)$")
# banger-init's console lines that end a stage (crates/agent/src/init.rs, pid1.rs).
_MARKS = {
    "started": "init_start",
    "loaded ": "modules",
    "root filesystem ready": "root_ready",
    "the agent is the init; serving the channel": "serving",
    "handing over to": "handover",
}


def banger_marks(console):
    """{mark: guest seconds} from a VM's console log (its first boot)."""
    out = {}
    for line in console.splitlines():
        m = _INIT_LINE.match(line.strip())
        if not m:
            continue
        for text, key in _MARKS.items():
            if m.group(2).startswith(text) and key not in out:
                out[key] = float(m.group(1))
    return out


def _seq(segs, name, kind, start, end):
    """Append a segment unless it is empty; returns where the next one starts."""
    end = max(start, end)
    if end - start > 0.0005:
        segs.append((name, kind, start, end))
    return end


def banger_row(ref):
    """[(segment, kind, start, end)] of one reference `vm run --keep -- true`, host seconds
    since the CLI started, then its `vm delete`."""
    segs = []
    t = 0.0
    st = ref["stages"]
    names = {"boot": "VMM launch", "accel-probe": "accelerator probe"}
    agent_end = None
    for stage, ms in st.items():
        d = ms / 1000
        if stage != "agent":
            kind = "vmm" if stage == "boot" else "host"
            t = _seq(segs, names.get(stage, stage), kind, t, t + d)
            continue
        # The agent stage: from the VMM's launch until the agent answers. Split by the
        # guest's record: kernel, banger's init, then systemd (or nothing) until the agent
        # serves, then the host noticing.
        start, agent_end = t, t + d
        k = max(start, ref["kernel_start"])
        m = ref["marks"]
        t = _seq(segs, "firmware, kernel decompression", "vmm", start, min(k, agent_end))
        if "init_start" in m:
            t = _seq(segs, "kernel", "kernel", t, min(k + m["init_start"], agent_end))
        if "modules" in m:
            t = _seq(segs, "banger init: modules", "initrd", t, min(k + m["modules"], agent_end))
        if "root_ready" in m:
            t = _seq(segs, "disks, overlay root", "initrd", t, min(k + m["root_ready"], agent_end))
        if "serving" in m:
            t = _seq(segs, "network, agent up", "init", t, min(k + m["serving"], agent_end))
        elif "handover" in m:
            t = _seq(segs, "network, switch root", "initrd", t, min(k + m["handover"], agent_end))
            t = _seq(segs, "systemd → agent service", "init", t, agent_end)
        t = _seq(segs, "agent answers", "ssh", t, agent_end)
    t = _seq(segs, "exec true, CLI", "command", t, ref["wall"])
    _seq(segs, "vm delete", "host", t, t + ref["delete"])
    return segs


def stock_row(m):
    segs = []
    t = 0.0
    for key, name, kind in (
        ("kernel_start", "QEMU start, firmware, kernel decompression", "vmm"),
        ("initramfs", "kernel", "kernel"),
        ("systemd", "Debian initramfs", "initrd"),
        ("ready", "systemd: units, DHCP, sshd", "init"),
        ("auth", "ssh: connect, sshd process, key exchange, auth", "ssh"),
        ("ssh_true", "session, true, exit", "command"),
    ):
        v = m.get(key)
        if v is None:
            continue
        t = _seq(segs, name, kind, t, v)
    return segs


def chart(refs, stock_marks, machine):
    """{svg, rows}: the SVG text and the same segments as data (for --json)."""
    rows = []
    for ref in refs:
        mode = ref["mode"]
        label = "banger vm run" + ("" if mode is MODES[0] else f" --init {mode.key.split('_')[0]}") + " -- true"
        rows.append((label, banger_row(ref)))
    rows.append(("stock Debian, bare QEMU → ssh true", stock_row(stock_marks)))
    sub = (
        f"one cold boot per row (the run nearest the row's median), host clock; QEMU -M {machine['machine'].split(',')[0]}, "
        f"-accel {machine['accel'].split(',')[0]}, -smp {machine['smp']}, -m {machine['memory']}; "
        f"{os.cpu_count()} host cores"
    )
    text = svg.timeline(rows, "Where a cold boot's time goes: banger beside a stock Debian boot", sub)
    data = [
        {"label": label, "segments": [
            {"stage": s[0], "start": round(s[2], 3), "end": round(s[3], 3)} for s in segs
        ]}
        for label, segs in rows
    ]
    return {"svg": text, "rows": data}
