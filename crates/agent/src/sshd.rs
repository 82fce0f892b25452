//! The image's OpenSSH server under the fast init: with no systemd to start it, the
//! agent does, so `ssh dev.vm`, scp, rsync and IDEs keep working in agent mode.
//!
//! Only when the image has `/usr/sbin/sshd` (a regular file, not a link to somewhere
//! unexpected). Like Debian's unit with banger's drop-in: the privilege-separation
//! directory `/run/sshd`, an ed25519 host key made on first boot when missing (each VM
//! its own; the host pins it on first contact), then `sshd -D -e` as the agent's child
//! (its log on the console). This runs on its own thread: readiness is the agent
//! answering, never sshd.

use crate::init::log;
use crate::reap;
use std::path::Path;

const SSHD: &str = "/usr/sbin/sshd";
const KEYGEN: &str = "/usr/bin/ssh-keygen";
const HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";

/// Start sshd in the background if the image has one.
pub fn spawn() {
    let is_file = |p: &str| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file());
    if !is_file(SSHD) {
        return;
    }
    let r = std::thread::Builder::new()
        .name("sshd".into())
        .spawn(move || {
            if let Err(e) = start(is_file(KEYGEN)) {
                log(&format!("cannot start sshd: {e}"));
            }
        });
    if let Err(e) = r {
        log(&format!("cannot start the sshd thread: {e}"));
    }
}

fn start(has_keygen: bool) -> std::io::Result<()> {
    std::fs::create_dir_all("/run/sshd")?;
    std::fs::set_permissions(
        "/run/sshd",
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let key_ok = std::fs::metadata(HOST_KEY).is_ok_and(|m| m.len() > 0);
    if !key_ok && has_keygen {
        let _ = std::fs::remove_file(HOST_KEY);
        let _ = std::fs::remove_file(format!("{HOST_KEY}.pub"));
        let (tx, rx) = std::sync::mpsc::channel();
        reap::spawn(
            reap::command(KEYGEN).args(["-q", "-t", "ed25519", "-N", "", "-f", HOST_KEY]),
            Box::new(move |status| {
                let _ = tx.send(status);
            }),
        )?;
        // The reaper reports the status; a keygen that fails leaves sshd to say why.
        let _ = rx.recv_timeout(std::time::Duration::from_secs(60));
    }
    if !Path::new(HOST_KEY).exists() {
        log("sshd: no host key and no ssh-keygen; starting it anyway");
    }
    reap::spawn_detached(reap::command(SSHD).args(["-D", "-e"]))?;
    log("started the image's sshd");
    Ok(())
}
