//! The host–guest contract: every name and number that banger's host crates and the
//! in-guest `banger-agent` must agree on.
//!
//! The agent is built separately (static, for the initrd) and an image or initrd keeps
//! the agent it was made with, so the two sides are compiled apart and may even be of
//! different banger versions. Keeping these values in one dependency-free crate, used
//! by both sides, makes a rename a compile-time change on both instead of a comment
//! asking someone to keep two copies in sync. Changing a *value* here is a protocol
//! change: images and initrds made before it stop working with hosts after it.

/// ext4 labels by which the guest init finds its disks (device order is not stable
/// across VMMs, labels are).
pub mod disk {
    /// The shared, read-only base image (lower layer of `/`).
    pub const LABEL_ROOT: &str = "banger-root";
    /// The per-VM overlay disk (upper layer of `/`).
    pub const LABEL_OVERLAY: &str = "banger-overlay";
    /// The per-VM work disk, mounted at `/root`.
    pub const LABEL_WORK: &str = "banger-work";
    /// On the overlay disk: the directory holding the upper layer of `/` (the host
    /// writes a new VM's ssh host key there before its first boot).
    pub const OVERLAY_UPPER: &str = "upper";
    /// On the overlay disk: overlayfs's work directory.
    pub const OVERLAY_WORK: &str = "work";
}

/// OpenSSH in the guest.
pub mod ssh {
    /// The guest's one host key, relative to its root. The host generates it for each
    /// new overlay and pins its public half, so no ssh client ever trusts a key on
    /// first use; the guest's init (or systemd's unit) only makes one when missing.
    pub const HOST_KEY: &str = "etc/ssh/ssh_host_ed25519_key";
}

/// The export disk: how an export guest hands a flattened tree back to the host.
pub mod export {
    /// First 16 bytes of an export disk, written by the host before the guest boots;
    /// the guest finds the disk by it and the host refuses a disk without it.
    pub const MAGIC: &[u8; 16] = b"BANGER-EXPORT-1\n";
}

/// What banger's init prints on the guest console.
pub mod console {
    /// The init's first line, printed as soon as it runs (after mounting /dev, /proc
    /// and /sys). The host takes a boot whose console lacks it for a while as a
    /// kernel that stalled before running init.
    pub const INIT_STARTED: &str = "banger-init: started";
}

/// `banger.*` kernel command-line parameters: the only channel through which the host
/// configures the guest's early boot.
pub mod cmdline {
    /// Guest address and prefix: `banger.ip=172.30.0.2/24`.
    pub const IP: &str = "banger.ip";
    /// Default gateway: `banger.gw=172.30.0.1`.
    pub const GATEWAY: &str = "banger.gw";
    /// Hostname: `banger.hostname=dev`.
    pub const HOSTNAME: &str = "banger.hostname";
    /// What the initrd hands over to: [`INIT_AGENT`], [`INIT_SYSTEMD`] or a path.
    pub const INIT: &str = "banger.init";
    /// `banger.init` value: the agent itself stays PID 1 (fast init).
    pub const INIT_AGENT: &str = "agent";
    /// `banger.init` value: hand over to the image's systemd.
    pub const INIT_SYSTEMD: &str = "systemd";
    /// Bytes every agent that understands `banger.init` carries (it logs them when it
    /// stays the init). The host looks for them in an image's initrd (an uncompressed
    /// cpio holding the agent) before passing `banger.init`: an initrd made before the
    /// fast init existed would take the value for a program path and fail to boot.
    pub const FAST_INIT_MARKER: &str = "the agent is the init; serving the channel";
    /// Name servers for the guest's resolv.conf: `banger.dns=172.30.0.1[,…]`.
    pub const DNS: &str = "banger.dns";
    /// eth0's MTU when not 1500: `banger.mtu=65520` (rootless mode's passt carries
    /// frames that large; fewer, larger frames cost far less under emulation).
    pub const MTU: &str = "banger.mtu";
    /// What the boot is for; a normal boot without it: `banger.mode=export`.
    pub const MODE: &str = "banger.mode";
    /// `banger.mode` value: tar the merged disks onto the export disk, power off.
    pub const MODE_EXPORT: &str = "export";
    /// The whole `banger.mode=export` word.
    pub const MODE_EXPORT_ARG: &str = "banger.mode=export";
    /// Accelerator probe (a flag without value): print [`PROBE_OK`] and power off.
    pub const PROBE: &str = "banger.probe";
    /// What the init prints on the console in probe mode; the host looks for it.
    pub const PROBE_OK: &str = "BANGER-PROBE-OK";
}

/// The agent channel's transport names.
pub mod agent {
    /// Name of the virtio-serial port the agent serves on (QEMU); the guest sees it as
    /// `/dev/virtio-ports/org.banger.agent`.
    pub const VIRTIO_PORT: &str = "org.banger.agent";
    /// AF_VSOCK port the agent listens on (Firecracker's vsock device).
    pub const VSOCK_PORT: u32 = 10_789;
}

/// Paths inside banger's initrd.
pub mod initrd {
    /// The module list, one file name per line in load order, relative to the
    /// initrd's root (the guest reads it as `/etc/banger/modules`).
    pub const MODULE_LIST: &str = "etc/banger/modules";
    /// Where the modules themselves live, relative to the initrd's root.
    pub const MODULE_DIR: &str = "lib/modules";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_arg_is_key_and_value() {
        let (k, v) = cmdline::MODE_EXPORT_ARG.split_at(cmdline::MODE.len());
        assert_eq!(k, cmdline::MODE);
        assert_eq!(v.strip_prefix('='), Some(cmdline::MODE_EXPORT));
    }

    #[test]
    fn initrd_paths_are_relative() {
        assert!(!initrd::MODULE_LIST.starts_with('/'));
        assert!(!initrd::MODULE_DIR.starts_with('/'));
    }
}
