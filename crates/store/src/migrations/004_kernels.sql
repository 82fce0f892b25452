-- The local kernel store: a kernel image plus banger's initrd for it, per row.
CREATE TABLE kernels (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    release     TEXT NOT NULL,
    source      TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Which kernel an image boots (informational: the image keeps its own copy).
ALTER TABLE images ADD COLUMN kernel TEXT;

-- Cached blobs (OCI layers, catalog downloads) an image was made from: what
-- `image cache prune` keeps.
CREATE TABLE image_blobs (
    image_id  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    digest    TEXT NOT NULL,
    PRIMARY KEY (image_id, digest)
);
