-- A VM's workspace: the host repository shipped into it, where it landed and the
-- commit it was shipped at. Goes away with its VM.
CREATE TABLE workspaces (
    vm_id       TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
    host_path   TEXT NOT NULL,
    guest_path  TEXT NOT NULL,
    head        TEXT NOT NULL,
    prepared_at INTEGER NOT NULL
);
