#!/usr/bin/env python3
"""Write the small seed corpora in fuzz/corpus/<target>/ (committed; rerun to refresh).

Seeds are valid inputs of each decoder so the fuzzer starts from the interesting
paths: a layer with every entry type and whiteouts, compressed variants, long names,
a catalog index, a bzImage with a gzip payload, an ELF header, request lines.
"""
import gzip
import io
import json
import os
import struct
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tar_bytes(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for kind, name, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                t.addfile(info)
            elif kind == "file":
                info.mode = 0o644
                info.size = len(extra)
                t.addfile(info, io.BytesIO(extra))
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = extra
                t.addfile(info)
            elif kind == "link":
                info.type = tarfile.LNKTYPE
                info.linkname = extra
                t.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                t.addfile(info)
    return buf.getvalue()


layer = tar_bytes([
    ("dir", "./", None),
    ("dir", "etc", None),
    ("file", "etc/os-release", b"ID=seed\n"),
    ("file", "etc/.wh.motd", b""),
    ("dir", "var/cache", None),
    ("file", "var/cache/.wh..wh..opq", b""),
    ("sym", "bin", "usr/bin"),
    ("file", "usr/bin/sh", b"#!sh"),
    ("link", "usr/bin/sh2", "usr/bin/sh"),
    ("fifo", "run/fifo", None),
])
put("oci_layer", "layer.tar", layer)
put("oci_layer", "layer.tar.gz", gzip.compress(layer, mtime=0))
long = tar_bytes([("file", "d/" + "n" * 150 + "/" + "m" * 120, b"x")])
put("oci_layer", "longname.tar", long)
pax = tar_bytes([("file", "p/" + "q" * 120, b"pax")], fmt=tarfile.PAX_FORMAT)
put("oci_layer", "pax.tar", pax)

export = tar_bytes([
    ("dir", "./", None),
    ("file", ".wh.literal", b"kept as a file"),
    ("dir", "root", None),
    ("file", "root/.bashrc", b"PS1=x\n"),
    ("sym", "lib", "usr/lib"),
])
# First byte even: the harness writes a valid export header before the rest.
put("export_tar", "export.seed", b"\x00" + export)

index = {
    "version": 1,
    "kernels": [{
        "name": "debian-6.1-cloud", "release": "6.1.0-40-cloud-amd64",
        "kernel": {"url": "kernels/vmlinuz-6.1", "sha256": "a" * 64, "size": 8123456},
        "modules": {"url": "kernels/modules-6.1.tar.zst", "sha256": "b" * 64, "size": 1234},
    }],
    "images": [{
        "name": "debian-bookworm", "kernel": "debian-6.1-cloud", "description": "seed",
        "rootfs": {"url": "https://mirror.example/r.tar.zst", "sha256": "c" * 64, "size": 3000},
    }],
}
put("catalog_index", "index.json", json.dumps(index).encode())
put("catalog_index", "empty.json", b'{"version":1,"kernels":[],"images":[]}')


def elf64(entry=0xffffffff81000000):
    # ELF header + one PT_LOAD program header.
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    hdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 7, 0x1000, 0xffffffff81000000, 0x1000000, 16, 16, 0x1000)
    body = hdr + ph
    body += bytes(0x1000 - len(body)) + b"Linux version 6.1.0-seed (root@seed) #1 SMP\x00"
    return body


def bzimage(payload, version="6.1.0-seed (root@seed) #1 SMP"):
    setup_sects = 3
    pm = (setup_sects + 1) * 512
    payload_offset = 0x40
    b = bytearray(pm + payload_offset)
    b[0x1F1] = setup_sects
    b[0x1FE:0x200] = b"\x55\xaa"
    b[0x202:0x206] = b"HdrS"
    b[0x206:0x208] = struct.pack("<H", 0x020F)
    b[0x20E:0x210] = struct.pack("<H", 0x300)
    v = version.encode() + b"\x00"
    b[0x500:0x500 + len(v)] = v
    b[0x248:0x24C] = struct.pack("<I", payload_offset)
    b[0x24C:0x250] = struct.pack("<I", len(payload))
    return bytes(b) + payload + b"\xcc" * 16


elf = elf64()
bz = bzimage(gzip.compress(elf, mtime=0))
put("vmlinux_extract", "bzimage-gzip", bz)
put("kernel_headers", "bzimage-header", bz[:0x600])
put("kernel_headers", "elf", elf)

for i, line in enumerate([
    b'{"v":1,"id":1,"method":"ping"}',
    b'{"v":1,"id":2,"op_id":"mine-1","method":"vm.create","params":{"name":"dev","cpus":2}}',
    b'{"v":1,"id":3,"method":"vm.show","params":null}',
    b'{"v":2,"id":4,"method":"ping"}',
    b'[1,2,3]',
]):
    put("rpc_envelope", "req%d" % i, line)

# channel_frame: the first byte is the harness's mode (bit 0: no preamble, bit 1:
# small limits, bits 2..8: piece size); then a connection as a guest writes it.
PREAMBLE = b"\0banger-channel\n"


def frame(session, kind, payload=b""):
    return struct.pack(">IIB", len(payload), session, kind) + payload


def j(v):
    return json.dumps(v).encode()


hello = frame(0, 0x01, j({"protocol": 1, "min_protocol": 1, "role": "server",
                           "software": "banger-agent seed", "nonce": 42}))
session = b"".join([
    frame(1, 0x03, j({"type": "exec", "command": {"argv": ["make", "test"]},
                      "env": {"A": "b"}, "cwd": "/root", "user": "dev",
                      "pty": {"rows": 24, "cols": 80}})),
    frame(1, 0x04, j({"type": "started", "pid": 7})),
    frame(1, 0x11, b"stdout bytes\n"),
    frame(1, 0x12, b"stderr bytes\n"),
    frame(1, 0x31, struct.pack(">I", 131072)),
    frame(1, 0x21),
    frame(1, 0x04, j({"type": "exit", "code": 0, "signal": None, "core_dumped": False})),
    frame(1, 0x05),
    frame(3, 0x03, j({"type": "ping"})),
    frame(3, 0x04, j({"type": "pong", "version": "0.1.0", "protocol": 1, "boot_id": "b",
                      "uptime_s": 1.5, "init": "agent"})),
    frame(5, 0x03, j({"type": "get", "path": "/root/x"})),
    frame(5, 0x04, j({"type": "error", "kind": "not_found", "message": "no such file"})),
    frame(7, 0x03, j({"type": "put", "dir": "/root", "preserve_owner": True})),
    frame(7, 0x04, j({"type": "done", "entries": 3, "bytes": 1024})),
    frame(9, 0x04, j({"type": "ports", "ports": [22, 8080]})),
    frame(0, 0x02, j({"message": "bye"})),
])
put("channel_frame", "connection", b"\x00" + PREAMBLE + hello + session)
put("channel_frame", "pieces", b"\x3c" + b"stale junk\0bang" + PREAMBLE + hello + session)
put("channel_frame", "small-limits", b"\x03" + hello + session)
put("channel_frame", "legacy", b"\x00" + b'{"error":"malformed request: x","ok":false}\n')
put("channel_frame", "reconnect", b"\x05" + hello + frame(1, 0x11, b"half")[:7]
    + PREAMBLE + hello + session[:200])
