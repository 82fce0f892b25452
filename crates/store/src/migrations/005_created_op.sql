-- The op id of the call that created a VM, so a client can delete "the VM my call made"
-- and never a same-named VM that existed before (vm run --name EXISTING must not delete it).
ALTER TABLE vms ADD COLUMN created_op TEXT;
