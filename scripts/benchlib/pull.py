"""`banger image pull` from a local registry next to skopeo + umoci + mkfs.ext4 -d.

The image is the stock root filesystem without kernel and modules (~100 MB gzip, one
layer), pushed once into a docker-registry storage directory that is kept as a cache;
each bench serves it on loopback inside the namespace. Every banger pull starts with an
empty blob cache (`image delete` + `image cache prune`), every skopeo run with an empty
directory, so both download, unpack and write an ext4 image each time.
"""

import os
import shutil
import socket
import subprocess
import time

from .util import BenchError, log, now, run

PORT = 5000
REF = f"127.0.0.1:{PORT}/bench/devbox:1"
NAME = "bench-pull"


class PullBench:
    def __init__(self, cache_dir, scratch, stock, cleanup):
        self.dir = os.path.join(cache_dir, "pull")
        self.layout = os.path.join(self.dir, "layout")
        self.storage = os.path.join(self.dir, "registry")
        self.pushed = os.path.join(self.dir, "pushed")
        self.scratch = os.path.join(scratch, "pull")
        self.stock = stock
        self.cleanup = cleanup
        self.layer_mib = None
        self.unpacked_mib = None

    def prepare(self):
        """The OCI layout (umoci, once; no network needed)."""
        os.makedirs(self.dir, exist_ok=True)
        tar = self.stock.pull_tar(os.path.join(self.dir, "rootfs.tar"))
        self.unpacked_mib = os.path.getsize(tar) / 2**20
        if not os.path.exists(os.path.join(self.layout, "index.json")) or not os.path.exists(
            os.path.join(self.dir, "layout.done")
        ):
            log("making the pull image's OCI layout (once)")
            shutil.rmtree(self.layout, ignore_errors=True)
            shutil.rmtree(self.storage, ignore_errors=True)
            if os.path.exists(self.pushed):
                os.unlink(self.pushed)
            run(["umoci", "init", "--layout", self.layout])
            run(["umoci", "new", "--image", f"{self.layout}:bench"])
            run(["umoci", "raw", "add-layer", "--image", f"{self.layout}:bench", tar], timeout=1800)
            open(os.path.join(self.dir, "layout.done"), "w").close()
        blobs = os.path.join(self.layout, "blobs", "sha256")
        self.layer_mib = max(os.path.getsize(os.path.join(blobs, b)) for b in os.listdir(blobs)) / 2**20

    def serve(self):
        """docker-registry on loopback (inside the namespace), pushed to once."""
        os.makedirs(self.storage, exist_ok=True)
        cfg = os.path.join(self.dir, "registry.yml")
        with open(cfg, "w") as f:
            f.write(
                "version: 0.1\nlog: {level: error}\n"
                f"storage: {{filesystem: {{rootdirectory: {self.storage}}}}}\n"
                f"http: {{addr: 127.0.0.1:{PORT}}}\n"
            )
        p = self.cleanup.child(
            subprocess.Popen(
                ["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", PORT), 0.2).close()
                break
            except OSError:
                if p.poll() is not None:
                    raise BenchError(f"docker-registry exited: {p.stderr.read().decode(errors='replace')}")
                time.sleep(0.1)
        else:
            raise BenchError("docker-registry did not listen on 127.0.0.1:5000 within 10 s")
        if not os.path.exists(self.pushed):
            log("pushing the pull image into the local registry (once)")
            run(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                 f"oci:{self.layout}:bench", f"docker://{REF}"], timeout=600)
            open(self.pushed, "w").close()
        return p

    def banger_pull(self, banger):
        banger("image", "delete", NAME, check=False)
        banger("image", "cache", "prune")
        t0 = now()
        banger("image", "pull", REF, "--name", NAME, timeout=1800)
        return now() - t0

    def banger_done(self, banger):
        banger("image", "delete", NAME, check=False)
        banger("image", "cache", "prune", check=False)

    def by_hand(self):
        """skopeo copy + umoci unpack + mkfs.ext4 -d: (total, {step: seconds})."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        os.makedirs(self.scratch)
        lay, bundle = os.path.join(self.scratch, "layout"), os.path.join(self.scratch, "bundle")
        steps = {}
        try:
            t = now()
            run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{REF}", f"oci:{lay}:bench"],
                timeout=1800)
            steps["skopeo copy"] = now() - t
            t = now()
            run(["umoci", "unpack", "--image", f"{lay}:bench", bundle], timeout=1800)
            steps["umoci unpack"] = now() - t
            t = now()
            rootfs = os.path.join(bundle, "rootfs")
            mib = run(["du", "-sm", rootfs]).stdout.split()[0]
            size = int(mib) * 3 // 2 + 64
            run(["mkfs.ext4", "-q", "-F", "-d", rootfs, os.path.join(self.scratch, "rootfs.ext4"),
                 f"{size}M"], timeout=1800)
            steps["mkfs.ext4 -d"] = now() - t
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return sum(steps.values()), steps
