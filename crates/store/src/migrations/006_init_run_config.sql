-- Who is a VM's init: 'agent' (banger's agent stays PID 1, the default for new VMs) or
-- 'systemd'. VMs made before this column booted systemd, so they keep it.
ALTER TABLE vms ADD COLUMN init TEXT NOT NULL DEFAULT 'systemd';

-- An OCI image's run settings (JSON: env, entrypoint, cmd, user, working_dir), applied
-- to commands run in its VMs. NULL: none (images banger built, images made before).
ALTER TABLE images ADD COLUMN run_config TEXT;
