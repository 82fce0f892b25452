"""Host memory of the daemon and of each running VM, from /proc.

A VM's QEMU holds the guest's RAM as one anonymous read-write mapping of the guest's
memory size: whatever of it is resident is the guest's own memory, not banger's cost.
Everything else QEMU has resident (its heap, the TCG translation cache, device state,
its share of the shared libraries) is what running a VM costs beyond its guest RAM:

    overhead = Pss(QEMU) - Rss(guest RAM mapping)

Under TCG much of it is the translation cache: anonymous read-write-execute mappings
(one region per vCPU thread), reported on its own.

Pss rather than Rss so that the pages of QEMU's binary and libraries, shared by every
running QEMU, count once across them. The guest RAM mapping is private (Pss = Rss).
"""

import re

from .util import BenchError

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$")


def _kib(line):
    return int(line.split()[1])


def smaps(pid):
    """Mappings of `pid`: dicts with size, rss, pss (KiB), perms, path."""
    maps = []
    cur = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                m = _HEADER.match(line)
                if m:
                    cur = {
                        "perms": m.group(3),
                        "path": m.group(4).strip(),
                        "size": 0,
                        "rss": 0,
                        "pss": 0,
                    }
                    maps.append(cur)
                elif cur is not None:
                    if line.startswith("Size:"):
                        cur["size"] = _kib(line)
                    elif line.startswith("Rss:"):
                        cur["rss"] = _kib(line)
                    elif line.startswith("Pss:"):
                        cur["pss"] = _kib(line)
    except OSError as e:
        raise BenchError(f"cannot read /proc/{pid}/smaps: {e}") from e
    return maps


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return _kib(line) / 1024
    except OSError as e:
        raise BenchError(f"cannot read /proc/{pid}/status: {e}") from e
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


def vm_memory(pid, guest_mib):
    """{guest_resident, overhead, tcg_cache, pss, rss} in MiB for one running QEMU."""
    maps = smaps(pid)
    want = guest_mib * 1024
    # The guest RAM: anonymous, read-write, not executable (the TCG code cache is rwx),
    # at least the guest's size and the closest to it.
    cands = [
        m for m in maps
        if not m["path"] and m["perms"].startswith("rw") and "x" not in m["perms"]
        and want <= m["size"] <= want + 64 * 1024
    ]
    if not cands:
        raise BenchError(f"no guest-RAM-sized mapping ({guest_mib} MiB) in QEMU {pid}'s smaps")
    ram = min(cands, key=lambda m: m["size"])
    pss = sum(m["pss"] for m in maps)
    rss = sum(m["rss"] for m in maps)
    jit = sum(m["rss"] for m in maps if not m["path"] and m["perms"].startswith("rwx"))
    return {
        "guest_resident": ram["rss"] / 1024,
        "tcg_cache": jit / 1024,
        "overhead": (pss - ram["rss"]) / 1024,
        "pss": pss / 1024,
        "rss": rss / 1024,
    }
