-- The VMM backend a VM was created for: auto (decided at each start), qemu or firecracker.
ALTER TABLE vms ADD COLUMN vmm TEXT NOT NULL DEFAULT 'auto';
