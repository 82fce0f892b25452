"""Logging, subprocess helpers and the statistics every figure uses."""

import os
import statistics
import subprocess
import sys
import time

QUIET = False


def log(msg):
    """Progress goes to stderr, so stdout carries only the table (or the JSON)."""
    if not QUIET:
        print(f"bench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step failed; the message says what failed and what to do next."""


def now():
    return time.monotonic()


def run(args, check=True, timeout=None, env=None, input=None, capture=True, cwd=None):
    """Run a command to completion; on failure raise BenchError with its stderr's tail."""
    try:
        p = subprocess.run(
            args,
            input=input,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
            timeout=timeout,
            env=env,
            cwd=cwd,
            text=True,
            errors="replace",
        )
    except FileNotFoundError as e:
        raise BenchError(f"{args[0]} is not installed ({e})") from e
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"`{' '.join(map(str, args))}` did not finish within {timeout} s") from e
    if check and p.returncode != 0:
        tail = "\n".join((p.stderr or "").strip().splitlines()[-8:])
        raise BenchError(f"`{' '.join(map(str, args))}` failed (exit {p.returncode}):\n{tail}")
    return p


def timed(args, **kw):
    """(seconds, CompletedProcess) of one command."""
    t0 = now()
    p = run(args, **kw)
    return now() - t0, p


class Figure:
    """One line of the table: samples of one quantity, summarised as median and range."""

    def __init__(self, key, label, unit, samples=None, note=None, value=None):
        self.key = key
        self.label = label
        self.unit = unit  # "s", "ms", "MiB", "x", "count"
        self.samples = list(samples or [])
        self.note = note
        self.value = value  # a single derived number (ratios, counts) instead of samples

    def summary(self):
        if self.value is not None:
            return {"value": self.value}
        if not self.samples:
            return {}
        return {
            "median": statistics.median(self.samples),
            "min": min(self.samples),
            "max": max(self.samples),
            "n": len(self.samples),
        }

    def to_json(self):
        d = {"key": self.key, "label": self.label, "unit": self.unit}
        d.update(self.summary())
        if self.samples:
            d["samples"] = [round(x, 4) for x in self.samples]
        if self.note:
            d["note"] = self.note
        return d


def fmt(x, unit):
    if x is None:
        return "n/a"
    if unit == "s":
        return f"{x:.2f} s"
    if unit == "ms":
        return f"{x:.0f} ms" if x >= 10 else f"{x:.1f} ms"
    if unit == "MiB":
        return f"{x:.0f} MiB" if x >= 10 else f"{x:.1f} MiB"
    if unit == "x":
        return f"{x:.2f}"
    if unit == "count":
        return f"{x:.0f}"
    return f"{x:g} {unit}"


def fmt_range(lo, hi, unit):
    a, b = fmt(lo, unit), fmt(hi, unit)
    # "9.31–9.40 s" rather than "9.31 s–9.40 s"
    sa = a.rsplit(" ", 1)
    sb = b.rsplit(" ", 1)
    if len(sa) == 2 and len(sb) == 2 and sa[1] == sb[1]:
        return f"{sa[0]}–{sb[0]} {sa[1]}"
    return f"{a}–{b}"


def median(xs):
    return statistics.median(xs) if xs else None


def free_disk_gib(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 2**30
