-- Schema 1: images and the VMs built on them.
-- Sizes and timestamps are INTEGER (u64 values are range-checked on insert).
CREATE TABLE images (
    id             TEXT PRIMARY KEY NOT NULL,
    name           TEXT UNIQUE NOT NULL,
    source         TEXT NOT NULL,
    kernel_release TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE vms (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT UNIQUE NOT NULL,
    image_id   TEXT NOT NULL REFERENCES images(id),
    state      TEXT NOT NULL CHECK (state IN ('creating', 'running', 'stopped', 'error')),
    ip         TEXT UNIQUE NOT NULL,
    cpus       INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    disk_mib   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    error      TEXT
) STRICT;

CREATE INDEX vms_image_id ON vms(image_id);
