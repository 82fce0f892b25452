//! What banger changes in a guest root filesystem tree before it becomes a base image.
//!
//! Each change is there for boot speed or for banger's access model (measured on these
//! machines, see docs/design notes): no networkd (the init configured eth0), no timers
//! that wake apt or fstrim during a short-lived sandbox, a volatile journal, only an
//! ed25519 host key generated on first boot (so each VM gets its own), key-only root ssh.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// Units masked in banger images: each either duplicates what banger's init did or
/// burns guest CPU on work a disposable sandbox never needs.
pub const MASKED_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-networkd.service",
    "systemd-networkd-wait-online.service",
    "getty-static.service",
    "serial-getty@ttyS0.service",
    "getty@tty1.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-remount-fs.service",
];

/// Path of the agent inside the guest.
pub const AGENT_GUEST_PATH: &str = "usr/local/bin/banger-agent";

const SSHD_CONFIG: &str = "\
# Managed by banger: key-only root login with banger's key, one ed25519 host key.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
";

// Debian's unit regenerates nothing: create the ed25519 key on first boot so every VM
// has its own (the host pins it on first contact).
const SSH_DROPIN: &str = "\
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
";

const AGENT_UNIT: &str = "\
[Unit]
Description=banger guest agent
DefaultDependencies=no
After=systemd-udevd.service
Before=shutdown.target
Conflicts=shutdown.target

[Service]
ExecStart=/usr/local/bin/banger-agent serve
Restart=always
RestartSec=1

[Install]
WantedBy=sysinit.target
";

/// Why a rootfs tree could not be customised.
#[derive(Debug, thiserror::Error)]
pub enum CustomizeError {
    /// A file operation in the tree failed.
    #[error("customising the image failed at {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tree lacks sshd, which banger needs to reach the guest.
    #[error("the image has no OpenSSH server (/usr/sbin/sshd); banger reaches guests over ssh: add openssh-server to the image")]
    NoSshd,
}

/// Apply banger's changes to the tree at `root`, installing `agent` as the guest agent.
pub fn apply(root: &Path, agent: &Path) -> Result<(), CustomizeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CustomizeError::Io { path, source }
    };
    if !root.join("usr/sbin/sshd").exists() {
        return Err(CustomizeError::NoSshd);
    }
    let write = |rel: &str, text: &str| -> Result<(), CustomizeError> {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&p, text).map_err(io(&p))
    };
    write("etc/ssh/sshd_config.d/banger.conf", SSHD_CONFIG)?;
    write("etc/systemd/system/ssh.service.d/banger.conf", SSH_DROPIN)?;
    write(
        "etc/systemd/journald.conf.d/banger.conf",
        "[Journal]\nStorage=volatile\n",
    )?;
    write("etc/systemd/system/banger-agent.service", AGENT_UNIT)?;
    write(
        "etc/fstab",
        "# banger: / and /root are mounted by banger's init\n",
    )?;
    write("etc/hostname", "banger\n")?;
    write("etc/banger/image", "built-by=banger\n")?;

    if let Ok(rd) = std::fs::read_dir(root.join("etc/ssh")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
            }
        }
    }
    let sysd = root.join("etc/systemd/system");
    for unit in MASKED_UNITS {
        let p = sysd.join(unit);
        let _ = std::fs::remove_file(&p);
        symlink("/dev/null", &p).map_err(io(&p))?;
    }
    let wants = sysd.join("sysinit.target.wants");
    std::fs::create_dir_all(&wants).map_err(io(&wants))?;
    let link = wants.join("banger-agent.service");
    let _ = std::fs::remove_file(&link);
    symlink("/etc/systemd/system/banger-agent.service", &link).map_err(io(&link))?;

    let dst = root.join(AGENT_GUEST_PATH);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::copy(agent, &dst).map_err(io(agent))?;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).map_err(io(&dst))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_banger_settings_to_a_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
        std::fs::write(root.join("usr/sbin/sshd"), "").unwrap();
        std::fs::write(root.join("etc/ssh/ssh_host_rsa_key"), "secret").unwrap();
        let agent = t.path().join("agent");
        std::fs::write(&agent, "bin").unwrap();
        apply(&root, &agent).unwrap();
        assert!(!root.join("etc/ssh/ssh_host_rsa_key").exists());
        assert_eq!(
            std::fs::read_link(root.join("etc/systemd/system/fstrim.timer")).unwrap(),
            Path::new("/dev/null")
        );
        assert!(root.join(AGENT_GUEST_PATH).exists());
        let conf = std::fs::read_to_string(root.join("etc/ssh/sshd_config.d/banger.conf")).unwrap();
        assert!(conf.contains("PasswordAuthentication no"));
        // Applying twice is fine (rebuilds reuse trees in tests).
        apply(&root, &agent).unwrap();
    }

    #[test]
    fn refuses_images_without_sshd() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            apply(t.path(), t.path()),
            Err(CustomizeError::NoSshd)
        ));
    }
}
