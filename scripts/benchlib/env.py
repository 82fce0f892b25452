"""The bench's private network namespace, its cleanup stack and signal handling.

Everything network-facing (the banger daemon and its guests, the stock QEMU with its
user-mode network, the local registry, ssh) runs in a network namespace the bench creates:
this process joins it with setns(2) once the caches that need Debian's archive are built,
so every child it starts from then on is inside it and no packet leaves the machine.
"""

import ctypes
import os
import re
import shutil
import signal
import subprocess
import time

from .util import BenchError, log, run

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
PREFIX = "banger-bench-"

class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwind like Ctrl-C so the cleanup stack runs."""

def _on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")

def install_signal_handlers():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)

class Cleanup:
    """Undo steps, newest first; each runs even if an earlier one failed."""

    def __init__(self):
        self.steps = []
        self.children = []

    def push(self, what, fn):
        self.steps.append((what, fn))

    def child(self, popen):
        """A process the bench started and must end (by its pid) on the way out."""
        self.children.append(popen)
        return popen

    def run(self):
        # A second Ctrl-C while cleaning up must not leave half of it undone.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for p in self.children:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            self.children = []
            while self.steps:
                what, fn = self.steps.pop()
                try:
                    fn()
                except (Exception, Interrupted) as e:  # keep cleaning up
                    log(f"cleanup: {what} failed: {e}")
        finally:
            signal.signal(signal.SIGINT, old)

def _libc():
    return ctypes.CDLL(None, use_errno=True)

def _setns(fd):
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise BenchError(f"setns into a network namespace failed: {os.strerror(e)}")

def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

def _netns_pids(name):
    p = run(["ip", "netns", "pids", name], check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]

def _kill_netns_processes(name):
    """End what is still running in our namespace (only ever ours: we made it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [p for p in _netns_pids(name) if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            log(f"cleanup: process {pid} still runs in {name}; sending {sig.name}")
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        for _ in range(50):
            if not [p for p in _netns_pids(name) if p != os.getpid()]:
                return

            time.sleep(0.1)

def sweep_stale():
    """Namespaces left by an earlier bench that was killed hard (SIGKILL, power loss)."""
    if not os.path.isdir(NETNS_DIR):
        return
    for n in os.listdir(NETNS_DIR):
        m = re.fullmatch(re.escape(PREFIX) + r"(\d+)", n)
        if m and not _pid_alive(int(m.group(1))):
            log(f"removing the namespace {n} of an earlier bench that did not finish")
            _kill_netns_processes(n)
            run(["ip", "netns", "del", n], check=False)

class Netns:
    """A named namespace with lo up, which this process enters (and leaves on cleanup)."""

    def __init__(self, cleanup):
        self.name = f"{PREFIX}{os.getpid()}"
        self.cleanup = cleanup
        self.host_fd = None

    def enter(self):
        run(["ip", "netns", "add", self.name])
        self.cleanup.push(f"delete namespace {self.name}", self._delete)
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        self.host_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(os.path.join(NETNS_DIR, self.name), os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        self.cleanup.push("leave the namespace", self._leave)
        log(f"in network namespace {self.name} (nothing leaves the machine from here on)")

    def _leave(self):
        if self.host_fd is not None:
            _setns(self.host_fd)
            os.close(self.host_fd)
            self.host_fd = None

    def _delete(self):
        _kill_netns_processes(self.name)
        run(["ip", "netns", "del", self.name])

def _packages(root):
    """command -> Debian package, from banger's one tool table (crates/hostcheck/tools.txt)."""
    out = {}
    try:
        with open(os.path.join(root, "crates", "hostcheck", "tools.txt")) as f:
            for line in f:
                cols = line.split()
                if cols and not cols[0].startswith("#") and len(cols) >= 5 and cols[0] != "-":
                    out.setdefault(cols[0], cols[1])
    except OSError:
        pass
    return out


def preflight(needed, root):
    """Root, and every command in `needed`; names the Debian packages of what is missing."""
    if os.geteuid() != 0:
        raise BenchError(
            "the bench needs root (it creates a network namespace and boots guests); "
            "run it with sudo: sudo make bench"
        )
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [c for c in needed if shutil.which(c, path=path) is None]
    if missing:
        pkgs = _packages(root)
        debs = sorted({pkgs.get(c, c) for c in missing})
        raise BenchError(
            f"missing tools: {', '.join(missing)}; install them with: apt-get install {' '.join(debs)} "
            "(make bench does it when run as root)"
        )
