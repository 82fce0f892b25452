//! What banger changes in a guest root filesystem tree before it becomes a base image.
//!
//! Each change is there for boot speed or for banger's access model (measured on these
//! machines, see docs/design notes): no networkd (the init configured eth0), no timers
//! that wake apt or fstrim during a short-lived sandbox, a volatile journal, only an
//! ed25519 host key generated on first boot (so each VM gets its own), key-only root ssh.

use crate::oci::{TreeEditor, TreeError};
use rustix::fs::FileType;
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

/// The image's `/etc/resolv.conf` until boot: banger's init replaces it with the
/// servers of `banger.dns=` (the host's DNS responder on the bridge).
pub const RESOLV_CONF: &str = "\
# banger: replaced at boot from banger.dns= (banger's DNS responder on the bridge)
";

/// Why a rootfs tree could not be customised.
#[derive(Debug, thiserror::Error)]
pub enum CustomizeError {
    /// Editing the tree failed (including refusing to write through a symlink).
    #[error("customising the image failed: {0}")]
    Tree(#[from] TreeError),
    /// Reading the guest agent binary failed.
    #[error("reading the guest agent {path}: {source}")]
    Agent {
        /// The agent path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Apply banger's changes to the tree at `root`, installing `agent` as the guest agent.
///
/// Every edit goes through [`TreeEditor`], which never follows a symlink: an image
/// (an OCI image above all) may ship `etc/ssh -> /etc/ssh`, and a path-following write
/// would then land on the host.
pub fn apply(root: &Path, agent: &Path) -> Result<(), CustomizeError> {
    let mut t = TreeEditor::open(root)?;
    // Any image boots: banger's agent is the init unless a VM asks for systemd, and
    // commands go through the agent. sshd and systemd get banger's settings only when
    // the image has them.
    let has_sshd = t.kind("usr/sbin/sshd")? == Some(FileType::RegularFile);
    // merged-/usr images have sbin -> usr/sbin; older ones a real /sbin.
    let has = |t: &mut TreeEditor, p: &str| t.kind(p).ok().flatten().is_some();
    let has_systemd = has(&mut t, "usr/lib/systemd/systemd") || has(&mut t, "lib/systemd/systemd");
    let mut files: Vec<(&str, &str)> = vec![
        (
            "etc/fstab",
            "# banger: / and /root are mounted by banger's init\n",
        ),
        ("etc/hostname", "banger\n"),
        ("etc/banger/image", "built-by=banger\n"),
        // Never the build host's copy (mmdebstrap leaves it in the tree): that names
        // the build host's resolvers, often a loopback stub no guest can reach.
        ("etc/resolv.conf", RESOLV_CONF),
    ];
    if has_sshd {
        files.push(("etc/ssh/sshd_config.d/banger.conf", SSHD_CONFIG));
    }
    if has_systemd {
        files.extend([
            ("etc/systemd/system/ssh.service.d/banger.conf", SSH_DROPIN),
            (
                "etc/systemd/journald.conf.d/banger.conf",
                "[Journal]\nStorage=volatile\n",
            ),
            ("etc/systemd/system/banger-agent.service", AGENT_UNIT),
        ]);
    }
    for (rel, text) in files {
        if let Some((dir, _)) = rel.rsplit_once('/') {
            t.create_dir_all(dir, 0o755)?;
        }
        t.write(rel, text.as_bytes(), 0o644)?;
    }
    if t.kind("etc/ssh")? == Some(FileType::Directory) {
        for name in t.list("etc/ssh")? {
            if name.starts_with("ssh_host_") {
                t.remove(&format!("etc/ssh/{name}"))?;
            }
        }
    }
    if has_systemd {
        for unit in MASKED_UNITS {
            t.symlink(&format!("etc/systemd/system/{unit}"), "/dev/null")?;
        }
        t.create_dir_all("etc/systemd/system/sysinit.target.wants", 0o755)?;
        t.symlink(
            "etc/systemd/system/sysinit.target.wants/banger-agent.service",
            "/etc/systemd/system/banger-agent.service",
        )?;
    }
    let bin = std::fs::read(agent).map_err(|source| CustomizeError::Agent {
        path: agent.into(),
        source,
    })?;
    t.create_dir_all("usr/local/bin", 0o755)?;
    t.write(AGENT_GUEST_PATH, &bin, 0o755)?;
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
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd"), "").unwrap();
        std::fs::write(root.join("etc/ssh/ssh_host_rsa_key"), "secret").unwrap();
        // The build host's resolver (mmdebstrap copies it) must not ship; a symlink
        // there is replaced, never written through.
        std::os::unix::fs::symlink(
            "/run/systemd/resolve/stub-resolv.conf",
            root.join("etc/resolv.conf"),
        )
        .unwrap();
        let agent = t.path().join("agent");
        std::fs::write(&agent, "bin").unwrap();
        apply(&root, &agent).unwrap();
        assert!(!root.join("etc/ssh/ssh_host_rsa_key").exists());
        let md = std::fs::symlink_metadata(root.join("etc/resolv.conf")).unwrap();
        assert!(md.is_file());
        assert_eq!(
            std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
            RESOLV_CONF
        );
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
    fn never_writes_through_a_symlink_in_the_image() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("host-etc-ssh");
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("ssh_host_ed25519_key"), "host secret").unwrap();
        std::fs::write(root.join("usr/sbin/sshd"), "").unwrap();
        std::fs::write(root.join("usr/sbin/init"), "").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/ssh")).unwrap();
        let agent = t.path().join("agent");
        std::fs::write(&agent, "bin").unwrap();
        assert!(matches!(apply(&root, &agent), Err(CustomizeError::Tree(_))));
        assert_eq!(
            std::fs::read_to_string(outside.join("ssh_host_ed25519_key")).unwrap(),
            "host secret"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    }

    #[test]
    fn an_image_without_sshd_or_systemd_gets_only_the_agent() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/busybox"), "").unwrap();
        let agent = t.path().join("agent");
        std::fs::write(&agent, "bin").unwrap();
        apply(&root, &agent).unwrap();
        assert!(root.join(AGENT_GUEST_PATH).exists());
        assert!(root.join("etc/fstab").exists());
        assert!(!root.join("etc/systemd").exists());
        assert!(!root.join("etc/ssh").exists());
    }
}
