"""The comparison point: a stock Debian bookworm image booted by hand with QEMU.

Stock means what a user would make without banger: mmdebstrap with Debian's cloud
kernel and its initramfs-tools initrd, systemd, openssh-server and systemd-networkd
asking for DHCP (QEMU's user-mode network, ssh through a host forward). python3 is in
it only so that the same root filesystem, minus kernel and modules, is also the
~100 MB image the pull benchmark pushes to its registry. The boot copies banger's
machine: same machine type, accelerator, CPU model, vCPUs, memory and TSC arguments,
read from a running banger QEMU's command line.
"""

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import threading

from .util import BenchError, log, now, run

PACKAGES = "linux-image-cloud-amd64,systemd-sysv,udev,openssh-server,python3"
NETWORK = "[Match]\nType=ether\n\n[Network]\nDHCP=yes\n"
SSH_PORT = 2222
# systemd's console line once sshd is up (ssh.service is Type=notify: sshd listens).
SSHD_STARTED = re.compile(r"Started .*(ssh\.service|OpenBSD Secure Shell)")
# Bump when the recipe changes: the cache is rebuilt.
RECIPE = f"1 {PACKAGES} {NETWORK}"
# The guest's own records of its boot (guest clock, seconds since the kernel started),
# read over ssh once it answers. /proc/uptime comes last: read just before the command
# ends, it places the guest's clock on the host's.
MARKERS = r"""
dmesg | grep -m1 'Run /init as init process' || true
echo "userspace $(systemctl show -p UserspaceTimestampMonotonic --value)"
echo "sshd $(systemctl show ssh.service -p ActiveEnterTimestampMonotonic --value)"
journalctl -o short-monotonic --no-pager -u systemd-networkd | grep -m1 'DHCPv4 address' || true
journalctl -o short-monotonic --no-pager -u ssh | grep -m1 'Accepted publickey' || true
echo "uptime $(cut -d' ' -f1 /proc/uptime)"
"""


class StockImage:
    def __init__(self, cache_dir):
        self.dir = os.path.join(cache_dir, "stock")
        self.tar = os.path.join(self.dir, "rootfs.tar")
        self.ext4 = os.path.join(self.dir, "rootfs.ext4")
        self.kernel = os.path.join(self.dir, "vmlinuz")
        self.initrd = os.path.join(self.dir, "initrd.img")
        self.key = os.path.join(self.dir, "id_ed25519")
        self.stamp = os.path.join(self.dir, "recipe")

    def fresh(self):
        want = hashlib.sha256(RECIPE.encode()).hexdigest()
        try:
            with open(self.stamp) as f:
                ok = f.read().strip() == want
        except OSError:
            ok = False
        return ok and all(
            os.path.exists(p) for p in (self.tar, self.ext4, self.kernel, self.initrd, self.key)
        )

    def build(self):
        """mmdebstrap once (needs Debian's archive, so before entering the namespace)."""
        if self.fresh():
            return
        log("building the stock Debian image (once; mmdebstrap from Debian's archive, 1-6 min)")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key])
        net = os.path.join(self.dir, "dhcp.network")
        with open(net, "w") as f:
            f.write(NETWORK)
        tmp = self.tar + ".tmp"
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={PACKAGES}",
                '--customize-hook=systemctl --root="$1" enable systemd-networkd',
                f"--customize-hook=copy-in {net} /etc/systemd/network/",
                '--customize-hook=mkdir -p -m 700 "$1/root/.ssh"',
                f"--customize-hook=upload {self.key}.pub /root/.ssh/authorized_keys",
                '--customize-hook=echo stock > "$1/etc/hostname"',
                "--format=tar",
                "bookworm",
                tmp,
            ],
            timeout=3600,
        )
        os.rename(tmp, self.tar)
        root = os.path.join(self.dir, "root")
        os.makedirs(root)
        try:
            run(["tar", "-C", root, "--numeric-owner", "-xpf", self.tar])
            boot = os.path.join(root, "boot")
            kernels = sorted(f for f in os.listdir(boot) if f.startswith("vmlinuz-"))
            initrds = sorted(f for f in os.listdir(boot) if f.startswith("initrd.img-"))
            if not kernels or not initrds:
                raise BenchError(f"the stock image has no kernel or initrd in /boot ({os.listdir(boot)})")
            shutil.copy(os.path.join(boot, kernels[-1]), self.kernel)
            shutil.copy(os.path.join(boot, initrds[-1]), self.initrd)
            mib = sum(
                os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(root) for f in fs
            ) >> 20
            size = mib * 3 // 2 + 256
            run(["mkfs.ext4", "-q", "-F", "-L", "stock-root", "-d", root, self.ext4, f"{size}M"])
        finally:
            shutil.rmtree(root, ignore_errors=True)
        with open(self.stamp, "w") as f:
            f.write(hashlib.sha256(RECIPE.encode()).hexdigest() + "\n")

    def pull_tar(self, out):
        """The same root filesystem without /boot and kernel modules: the pull image's layer."""
        if os.path.exists(out):
            return out
        tmp = out + ".tmp"
        with tarfile.open(self.tar) as src, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as dst:
            for m in src:
                n = m.name.removeprefix("./")
                if n == "boot" or n.startswith(("boot/", "usr/lib/modules/", "lib/modules/")):
                    continue
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        os.rename(tmp, out)
        return out


def _ssh(key, cmd, timeout=None):
    return [
        "ssh", "-q", "-i", key, "-p", str(SSH_PORT),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "-o", f"ConnectTimeout={timeout or 5}",
        "root@127.0.0.1", cmd,
    ]


def boot(img, machine, scratch, cleanup, timeout):
    """One stock boot to `ssh true` (seconds), plus its stage marks (host seconds from launch)."""
    disk = os.path.join(scratch, "stock-vm.ext4")
    if os.path.exists(disk):
        os.unlink(disk)
    # A fresh copy of the image per boot (not timed), like banger's fresh overlay per VM.
    run(["cp", "--reflink=auto", "--sparse=always", img.ext4, disk])
    # banger's kernel arguments (the TSC ones are what lets -M microvm boot at all), the
    # root disk, and systemd's status lines on the console: "Started ssh.service" says
    # when to try ssh (see below).
    cmdline = " ".join(machine["base_cmdline"] + ["root=/dev/vda", "rw", "systemd.show_status=true"])
    args = [
        "qemu-system-x86_64",
        "-M", machine["machine"], "-accel", machine["accel"],
        *(["-cpu", machine["cpu"]] if machine["cpu"] else []),
        "-smp", machine["smp"], "-m", machine["memory"],
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
        "-kernel", img.kernel, "-initrd", img.initrd, "-append", cmdline,
        "-drive", f"id=disk0,file={disk},format=raw,if=none,cache=none,aio=threads",
        "-device", "virtio-blk-device,drive=disk0",
        # User-mode networking: QEMU's own DHCP server, ssh forwarded from loopback (inside
        # the bench's namespace, which has no other interface: nothing leaves the machine).
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{SSH_PORT}-:22",
        "-device", "virtio-net-device,netdev=net0",
    ]
    console = []  # the console's last lines, for the error message when the boot fails
    t0 = now()
    q = cleanup.child(
        subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    )

    sshd_up = threading.Event()

    def reader():
        for raw in q.stdout:
            line = raw.decode(errors="replace").rstrip()
            console.append(line)
            del console[:-40]
            if SSHD_STARTED.search(line):
                sshd_up.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        # As one watching the console would: try ssh once systemd says sshd started, and
        # never before. An earlier try is not harmless with QEMU's user-mode network: the
        # forward accepts at once and sends SYNs to a guest that has no address yet, with
        # TCP's backoff (seconds late once the guest answers); and a try abandoned once
        # sshd listens costs the guest a whole sshd start (seconds under emulation; enough
        # of them trip sshd's MaxStartups throttling). So: one generous try at a time.
        while True:
            if sshd_up.wait(0.2):
                p = subprocess.run(_ssh(img.key, "true", 120), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if p.returncode == 0:
                    break
            if q.poll() is not None:
                err = q.stderr.read().decode(errors="replace").strip()
                tail = "\n".join(console[-10:])
                raise BenchError(f"the stock QEMU exited ({q.returncode}) before ssh answered: {err}\n{tail}")
            if now() - t0 > timeout:
                raise BenchError(f"the stock guest did not answer ssh within {timeout} s (raise --boot-timeout); "
                                 "its console ends with:\n" + "\n".join(console[-10:]))
        secs = now() - t0
        p = run(_ssh(img.key, MARKERS, 30), check=False, timeout=120)
        marks = marks_from(p.stdout, now() - t0, secs)
    finally:
        if q.poll() is None:
            q.terminate()
        try:
            q.wait(20)
        except subprocess.TimeoutExpired:
            q.kill()
            q.wait()
        th.join(5)
        if os.path.exists(disk):
            os.unlink(disk)
    return secs, marks


def marks_from(out, read_at, ssh_done):
    """Stage ends on the host's clock (seconds since QEMU's launch), from MARKERS' output.

    The guest's clock starts at the kernel's entry. The output's last line, the guest's
    uptime, was read just before the ssh command returned at `read_at` (host clock), so
    the kernel started at `read_at - uptime` (the session's teardown, a few tens of ms,
    makes it a little late). The stage ends are the guest's own records: the kernel ring
    buffer (the initramfs starts), systemd (its own start; sshd ready), networkd's
    journal (the DHCP lease) and sshd's (our first login accepted).
    """
    g = {}
    m = re.search(r"^\[\s*(\d+\.\d+)\] Run /init", out, re.M)
    if m:
        g["initramfs"] = float(m.group(1))
    m = re.search(r"^userspace (\d+)$", out, re.M)
    if m and int(m.group(1)) > 0:
        g["systemd"] = int(m.group(1)) / 1e6
    m = re.search(r"^sshd (\d+)$", out, re.M)
    if m and int(m.group(1)) > 0:
        g["sshd"] = int(m.group(1)) / 1e6
    m = re.search(r"^\[\s*(\d+\.\d+)\] \S+ systemd-networkd\[\d+\]: .*DHCPv4 address", out, re.M)
    if m:
        g["dhcp"] = float(m.group(1))
    m = re.search(r"^\[\s*(\d+\.\d+)\] \S+ sshd\[\d+\]: Accepted publickey", out, re.M)
    if m:
        g["auth"] = float(m.group(1))
    m = re.search(r"^uptime (\d+\.\d+)$", out, re.M)
    offset = max(0.0, read_at - float(m.group(1))) if m else None
    if offset is None:
        return {"ssh_true": ssh_done}
    host = {k: v + offset for k, v in g.items()}
    ready = max([host.get("sshd", 0), host.get("dhcp", 0)])
    return {
        "kernel_start": offset,
        "initramfs": host.get("initramfs"),
        "systemd": host.get("systemd"),
        "sshd": host.get("sshd"),
        "dhcp": host.get("dhcp"),
        "ready": ready or None,
        "auth": host.get("auth"),
        "ssh_true": ssh_done,
    }
