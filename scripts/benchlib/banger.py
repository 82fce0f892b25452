"""Driving the banger CLI (a private BANGER_HOME; the daemon it starts lives in our namespace)."""

import json
import os
import re
import subprocess

from .util import BenchError, log, now, run

# Stages of `--timings` that are the guest's own boot; everything else is host side.
GUEST_STAGES = ("agent", "ssh")


class Mode:
    """One way to run `vm run -- true`: an init mode, and how the command reaches the guest."""

    def __init__(self, key, label, args):
        self.key = key
        self.label = label
        self.args = args


# Every way banger runs a command in a fresh VM; the first is the default (the ratio line's).
MODES = [
    Mode("agent", "init agent (default), exec through the agent", []),
    Mode("agent_ssh", "init agent, --via-ssh (the image's sshd, started by the agent)", ["--via-ssh"]),
    Mode("systemd", "init systemd, exec through the agent", ["--init", "systemd"]),
    Mode("systemd_ssh", "init systemd, --via-ssh (banger's path before the agent)",
         ["--init", "systemd", "--via-ssh"]),
]
DEFAULT_IMAGE = "debian-bookworm"
# Prefix of every VM the bench makes, so a leftover is recognisable in `vm list`.
VM_PREFIX = "bench-"

_TIMING = re.compile(r"^\s+([A-Za-z][\w-]*)\s+(\d+) ms\s*$")


def parse_timings(stderr):
    """`--timings` lines ("  disks        23 ms") as {stage: ms}, without the total."""
    out = {}
    for line in stderr.splitlines():
        m = _TIMING.match(line)
        if m and m.group(1) != "total":
            out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
    return out


class Banger:
    def __init__(self, binary, home, boot_timeout):
        self.binary = binary
        self.home = home
        self.env = dict(os.environ)
        self.env["BANGER_HOME"] = home
        self.env["BANGER_BOOT_TIMEOUT"] = str(boot_timeout)
        self.env.pop("BANGER_FAIL_AT", None)
        self._help = {}

    def cmd(self, *args):
        return [self.binary, *args]

    def __call__(self, *args, check=True, timeout=None):
        return run(self.cmd(*args), check=check, timeout=timeout, env=self.env)

    def popen(self, *args):
        return subprocess.Popen(
            self.cmd(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )

    # --- what this build can do ---------------------------------------------------

    def help(self, *path):
        if path not in self._help:
            p = self(*path, "--help", check=False)
            self._help[path] = p.stdout + p.stderr
        return self._help[path]

    def has_warm(self):
        return re.search(r"^\s+warm\b", self.help("image"), re.M) is not None

    # --- daemon -------------------------------------------------------------------

    def daemon_pid(self):
        p = self("daemon", "status")
        m = re.search(r"running, pid (\d+)", p.stdout)
        return int(m.group(1)) if m else None

    def daemon_stop(self):
        self("daemon", "stop", check=False, timeout=60)

    # --- images -------------------------------------------------------------------

    def images(self):
        return json.loads(self("image", "list", "--json").stdout or "[]")

    def ensure_default_image(self):
        if any(i.get("name") == DEFAULT_IMAGE for i in self.images()):
            return
        log(f"building banger's default image {DEFAULT_IMAGE} (once; needs Debian's archive)")
        self("image", "build", "debian", timeout=3600)

    # --- VMs ----------------------------------------------------------------------

    def vms(self):
        return json.loads(self("vm", "list", "--json").stdout or "[]")

    def show(self, name):
        return json.loads(self("vm", "show", name, "--json").stdout)

    def delete(self, names, check=True):
        names = list(names)
        for i in range(0, len(names), 50):
            self("vm", "delete", "-f", *names[i : i + 50], check=check, timeout=300)

    def delete_bench_vms(self):
        """Every VM of the bench's own home: nothing else lives there."""
        try:
            names = [v["name"] for v in self.vms()]
        except (BenchError, ValueError, KeyError) as e:
            log(f"could not list VMs for cleanup: {e}")
            return
        if names:
            log(f"deleting {len(names)} VM(s)")
            self.delete(names, check=False)

    def create(self, name, no_start=False):
        """`vm create NAME --timings` (default init): (wall seconds, {stage: ms})."""
        args = ["vm", "create", name]
        args += ["--no-start"] if no_start else ["--timings"]
        t0 = now()
        p = self(*args, timeout=900)
        return now() - t0, parse_timings(p.stderr)

    def run_true(self, mode, extra=()):
        """`vm run --timings -- true` in `mode`: (wall seconds, {stage: ms})."""
        t0 = now()
        p = self("vm", "run", *mode.args, *extra, "--timings", "--", "true", timeout=900)
        return now() - t0, parse_timings(p.stderr)

    def sh(self, name, script, timeout=300):
        """A shell script in a running VM, through the agent (`vm ssh NAME -- SCRIPT`)."""
        return self("vm", "ssh", name, "--", script, timeout=timeout)

    def console(self, name):
        """The VM's console log (`vm logs`)."""
        return self("vm", "logs", name).stdout

    def qemu_pid(self, name):
        pid = self.show(name).get("pid")
        if not pid:
            raise BenchError(f"VM {name} has no VMM pid (is it running? see banger vm show {name})")
        return int(pid)


def qemu_machine(pid):
    """What a running banger QEMU was given: the stock boot copies these."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
    except OSError as e:
        raise BenchError(f"cannot read QEMU's command line (pid {pid}): {e}") from e

    def opt(name):
        return argv[argv.index(name) + 1] if name in argv else None

    append = opt("-append") or ""
    tsc = [w for w in append.split() if w.startswith(("tsc_early_khz=", "tsc="))]
    m = {
        "machine": opt("-M") or opt("-machine"),
        "accel": opt("-accel"),
        "cpu": opt("-cpu"),
        "smp": opt("-smp"),
        "memory": opt("-m"),
        "tsc_args": tsc,
        "base_cmdline": [w for w in append.split() if not w.startswith("banger.")],
    }
    missing = [k for k in ("machine", "accel", "smp", "memory") if not m[k]]
    if missing or not tsc:
        raise BenchError(f"unexpected QEMU command line from banger (missing {missing}): {argv}")
    return m
