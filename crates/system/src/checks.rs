//! The system-install checks `banger doctor` shows (its rows are rendered by the CLI's
//! doctor module; each function here returns rows and does not print).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use banger_helper::HelperClient;

use crate::layout::{SystemLayout, DAEMON_UNIT, HELPER_UNIT};
use crate::{units, InstallRecord, Owner};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, but not as it should (or only partly).
    Warn,
    /// Broken.
    Fail,
}

/// One doctor row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, e.g. "helper".
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do when it is not [`Status::Pass`].
    pub fix: Option<String>,
}

fn row(name: &str, status: Status, detail: String, fix: Option<&str>) -> Check {
    Check {
        name: name.into(),
        status,
        detail,
        fix: fix.map(str::to_string),
    }
}

/// The install record: installed or not, which version, whether it matches the CLI.
pub fn install_record(l: &SystemLayout, cli_version: &str) -> Check {
    match InstallRecord::read(&l.install_record()) {
        Ok(Some(r)) if r.version == cli_version => row(
            "system install",
            Status::Pass,
            format!("banger {} (commit {}) for {}", r.version, r.commit, r.owner),
            None,
        ),
        Ok(Some(r)) => row(
            "system install",
            Status::Warn,
            format!(
                "installed banger {} differs from this CLI ({cli_version})",
                r.version
            ),
            Some("sudo banger system install (or banger update)"),
        ),
        Ok(None) => row(
            "system install",
            Status::Warn,
            format!(
                "no {}: banger is not installed as a system service",
                l.install_record().display()
            ),
            Some("sudo banger system install --owner USER; root can also run banger directly"),
        ),
        Err(e) => row(
            "system install",
            Status::Fail,
            e.to_string(),
            Some("sudo banger system install"),
        ),
    }
}

/// The helper answers on its socket, and its version.
pub async fn helper_reachable(socket: &Path, cli_version: &str) -> Check {
    match HelperClient::new(socket).ping().await {
        Ok(v) if v == cli_version => row(
            "helper",
            Status::Pass,
            format!("banger-helper {v} on {}", socket.display()),
            None,
        ),
        Ok(v) => row(
            "helper",
            Status::Warn,
            format!(
                "banger-helper {v} on {} differs from this CLI ({cli_version})",
                socket.display()
            ),
            Some("sudo banger system restart"),
        ),
        Err(e) => row(
            "helper",
            Status::Fail,
            e.to_string(),
            Some("sudo systemctl start bangerd-root, or sudo banger system run --owner USER"),
        ),
    }
}

/// Both units exist and carry banger's hardening (and the daemon's runs as `owner`).
/// The rows are named `<unit> file` (the unit's state is [`units_active`]'s row).
pub fn units_hardened(l: &SystemLayout, owner: &str) -> Vec<Check> {
    [(HELPER_UNIT, true), (DAEMON_UNIT, false)]
        .into_iter()
        .map(|(unit, helper)| (format!("{unit} file"), unit, helper))
        .map(
            |(name, unit, helper)| match std::fs::read_to_string(l.unit(unit)) {
                Err(e) => row(
                    &name,
                    Status::Fail,
                    format!("{}: {e}", l.unit(unit).display()),
                    Some("sudo banger system install"),
                ),
                Ok(text) => {
                    let mut missing: Vec<String> = units::missing_hardening(&text, helper)
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    if !helper && !text.lines().any(|x| x.trim() == format!("User={owner}")) {
                        missing.push(format!("User={owner}"));
                    }
                    if missing.is_empty() {
                        row(&name, Status::Pass, "present and hardened".into(), None)
                    } else {
                        row(
                            &name,
                            Status::Fail,
                            format!("missing {}", missing.join(", ")),
                            Some("sudo banger system install (rewrites the units)"),
                        )
                    }
                }
            },
        )
        .collect()
}

/// `systemctl is-active` of both units (only meaningful where systemd runs).
pub fn units_active() -> Vec<Check> {
    [HELPER_UNIT, DAEMON_UNIT]
        .into_iter()
        .map(|u| {
            let state = crate::systemd::is_active(u);
            let ok = crate::systemd::is_active_state(&state);
            row(
                u,
                if ok { Status::Pass } else { Status::Fail },
                state,
                (!ok)
                    .then_some("sudo banger system restart; journalctl -u bangerd-root -u bangerd"),
            )
        })
        .collect()
}

/// A socket is a socket, owned by `uid`, and not reachable by group or others.
pub fn socket_owner_mode(name: &str, path: &Path, uid: u32) -> Check {
    match std::fs::symlink_metadata(path) {
        Err(e) => row(
            name,
            Status::Fail,
            format!("{}: {e}", path.display()),
            Some("start the service (sudo banger system restart)"),
        ),
        Ok(md) if !md.file_type().is_socket() => row(
            name,
            Status::Fail,
            format!("{} is not a socket", path.display()),
            Some("remove it and restart the service"),
        ),
        Ok(md) if md.uid() != uid || md.mode() & 0o077 != 0 => row(
            name,
            Status::Fail,
            format!(
                "{} is uid {} mode {:o}, want uid {uid} mode 600",
                path.display(),
                md.uid(),
                md.mode() & 0o777
            ),
            Some("sudo banger system restart (the services recreate their sockets)"),
        ),
        Ok(_) => row(
            name,
            Status::Pass,
            format!("{} uid {uid} mode 600", path.display()),
            None,
        ),
    }
}

/// Whether the owner can use KVM: in the group of `/dev/kvm` (with group rw), or
/// `/dev/kvm` open to everyone. Otherwise guests run under TCG (slow, but working).
pub fn owner_kvm(owner: &Owner) -> Check {
    let Ok(md) = std::fs::metadata("/dev/kvm") else {
        return row(
            "kvm",
            Status::Warn,
            "no /dev/kvm: guests run under TCG (software emulation)".into(),
            None,
        );
    };
    let mode = md.mode() & 0o777;
    if mode & 0o006 == 0o006 || md.uid() == owner.uid {
        return row(
            "kvm",
            Status::Pass,
            format!("/dev/kvm mode {mode:o} is open to {}", owner.name),
            None,
        );
    }
    let group_ok = mode & 0o060 == 0o060 && owner.groups.contains(&md.gid());
    if group_ok {
        return row(
            "kvm",
            Status::Pass,
            format!("{} is in /dev/kvm's group (gid {})", owner.name, md.gid()),
            None,
        );
    }
    let fix = if md.gid() == 0 {
        "this host gives /dev/kvm to root only (no kvm group): guests run under TCG; a stock Debian host has root:kvm 0660 (udev)".to_string()
    } else {
        format!(
            "sudo usermod -aG {} {} and restart the daemon (sudo banger system restart)",
            group_name(md.gid()),
            owner.name
        )
    };
    row(
        "kvm",
        Status::Warn,
        format!(
            "{} cannot open /dev/kvm (mode {mode:o}, gid {}): guests run under TCG",
            owner.name,
            md.gid()
        ),
        Some(&fix),
    )
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string())
}

/// Every directory in `dirs` (and, one level down, below it) is the owner's and 0700.
pub fn state_dir_modes(dirs: &[&Path], uid: u32) -> Check {
    let mut bad = vec![];
    for d in dirs {
        let mut entries = vec![d.to_path_buf()];
        if let Ok(rd) = std::fs::read_dir(d) {
            entries.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        for p in entries {
            match std::fs::symlink_metadata(&p) {
                Ok(md) if md.uid() == uid && md.mode() & 0o077 == 0 => {}
                Ok(md) => bad.push(format!(
                    "{} (uid {}, mode {:o})",
                    p.display(),
                    md.uid(),
                    md.mode() & 0o777
                )),
                Err(_) if p == **d => bad.push(format!("{} (missing)", p.display())),
                Err(_) => {}
            }
        }
    }
    if bad.is_empty() {
        row(
            "state directories",
            Status::Pass,
            "the owner's, 0700".into(),
            None,
        )
    } else {
        row(
            "state directories",
            Status::Fail,
            format!("not private: {}", bad.join(", ")),
            Some("restart the daemon (it tightens them on start), or chmod 700 them"),
        )
    }
}

/// The helper config is acceptable to the helper.
pub fn helper_config(l: &SystemLayout) -> Check {
    match banger_helper::HelperConfig::load(&l.helper_config()) {
        Ok(c) => row(
            "helper config",
            Status::Pass,
            format!(
                "owner uid {}, bridge {}, subnet {}{}",
                c.owner_uid,
                c.bridge,
                c.subnet,
                if c.jailer.is_some() { ", jailer" } else { "" }
            ),
            None,
        ),
        Err(e) => row(
            "helper config",
            Status::Fail,
            e.to_string(),
            Some("sudo banger system install"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_and_directories() {
        let d = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let sock = d.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(socket_owner_mode("s", &sock, me).status, Status::Pass);
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let c = socket_owner_mode("s", &sock, me);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert_eq!(
            socket_owner_mode("s", &d.path().join("none"), me).status,
            Status::Fail
        );

        let state = d.path().join("state");
        std::fs::create_dir_all(state.join("images")).unwrap();
        for p in [&state, &state.join("images")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        assert_eq!(state_dir_modes(&[&state], me).status, Status::Pass);
        std::fs::set_permissions(state.join("images"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let c = state_dir_modes(&[&state], me);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("images"), "{c:?}");
    }

    #[test]
    fn unit_rows_name_what_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let l = SystemLayout::under(d.path());
        assert!(units_hardened(&l, "alice")
            .iter()
            .all(|c| c.status == Status::Fail));
        crate::install::write_units(&l, "alice", false).unwrap();
        assert!(units_hardened(&l, "alice")
            .iter()
            .all(|c| c.status == Status::Pass));
        let rows = units_hardened(&l, "bob");
        assert_eq!(rows[1].name, "bangerd.service file");
        assert_eq!(rows[1].status, Status::Fail);
        assert!(rows[1].detail.contains("User=bob"), "{rows:?}");
        assert_eq!(install_record(&l, "0.1.0").status, Status::Warn);
    }
}
