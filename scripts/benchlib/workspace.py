"""Workspace ship of a 100 MB / 10k-file git repository into a running VM, and its export."""

import base64
import os
import random
import shutil

from .util import log, now, run

FILES = 10_000
DIRS = 100
FILE_BYTES = 10_000  # 10k files x 10 kB of text = 100 MB (plus its .git)
NAME = "bench-repo"
# What the guest changes before the export: 100 files edited, 10 added, 10 deleted.
CHANGE = f"""set -e
cd /root/{NAME}
for i in $(seq 0 99); do echo "changed in the guest $i" >> d00/f$(printf %04d $i).txt; done
for i in $(seq 0 9); do head -c 10000 /dev/urandom | base64 > d01/new$i.txt; done
for i in $(seq 0 9); do rm d02/f$(printf %04d $((200 + i))).txt; done
"""


def ensure_repo(cache_dir):
    """The repository (made once from a fixed seed, committed)."""
    repo = os.path.join(cache_dir, NAME)
    stamp = os.path.join(cache_dir, f"{NAME}.done")
    if os.path.exists(stamp) and os.path.isdir(os.path.join(repo, ".git")):
        return repo
    log(f"making the {FILES}-file test repository (once)")
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(repo)
    rnd = random.Random(20)
    per_dir = FILES // DIRS
    for d in range(DIRS):
        dd = os.path.join(repo, f"d{d:02d}")
        os.makedirs(dd)
        for i in range(per_dir):
            raw = rnd.randbytes(FILE_BYTES * 3 // 4)
            text = base64.encodebytes(raw)
            with open(os.path.join(dd, f"f{d * per_dir + i:04d}.txt"), "wb") as f:
                f.write(text)
    git = ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    run(git + ["init", "-q"])
    run(git + ["add", "-A"], timeout=1800)
    run(git + ["commit", "-q", "-m", "bench repository"], timeout=1800)
    open(stamp, "w").close()
    return repo


def repo_size_mib(repo):
    total = 0
    work = 0
    for d, _, fs in os.walk(repo):
        for f in fs:
            s = os.lstat(os.path.join(d, f)).st_size
            total += s
            if "/.git" not in d and not d.endswith("/.git"):
                work += s
    return work / 2**20, total / 2**20


def ship(banger, vm, repo):
    t0 = now()
    banger("vm", "workspace", "prepare", vm, repo, timeout=1800)
    return now() - t0


def change(banger, vm):
    banger.sh(vm, CHANGE, timeout=600)


def export(banger, vm, out):
    if os.path.exists(out):
        os.unlink(out)
    t0 = now()
    banger("vm", "workspace", "export", vm, "--output", out, timeout=1800)
    return now() - t0


# What `vm workspace export` runs in the guest (crates/workspace/src/scripts.rs), with the
# guest's clock read between its steps.
GUEST_GIT = f"""set -e
cd /root/{NAME}
idx=$(mktemp); trap 'rm -f "$idx"' EXIT; export GIT_INDEX_FILE="$idx"
a=$(cut -d' ' -f1 /proc/uptime)
git read-tree HEAD
git add -A
b=$(cut -d' ' -f1 /proc/uptime)
git diff --cached --binary -M --full-index HEAD >/dev/null
c=$(cut -d' ' -f1 /proc/uptime)
echo "$a $b $c"
"""


def guest_git(banger, vm):
    """(index from scratch: read-tree + add -A, diff) seconds of the export's git, in the guest."""
    a, b, c = (float(x) for x in banger.sh(vm, GUEST_GIT, timeout=900).stdout.split()[-3:])
    return b - a, c - b


# The guest's share of a ship: the same tree tarred in the guest beforehand (untimed),
# then unpacked from its local disk.
GUEST_UNTAR = f"""set -e
cd /root
rm -rf /root/.bench-untar; mkdir /root/.bench-untar
tar -cf /root/.bench-ws.tar {NAME}
sync
a=$(cut -d' ' -f1 /proc/uptime)
tar -xf /root/.bench-ws.tar -C /root/.bench-untar
sync
b=$(cut -d' ' -f1 /proc/uptime)
rm -rf /root/.bench-untar /root/.bench-ws.tar
echo "$a $b"
"""


def guest_untar(banger, vm):
    """Seconds the guest takes to unpack (and sync) the shipped tree from its own disk."""
    a, b = (float(x) for x in banger.sh(vm, GUEST_UNTAR, timeout=1800).stdout.split()[-2:])
    return b - a
