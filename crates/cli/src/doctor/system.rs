//! The system install's rows (issue 11): the install record, the helper (config,
//! reachable, version), both units (present, hardened, active), the sockets' owners and
//! modes, the owner's access to `/dev/kvm` and the state directories' modes. The checks
//! themselves are `banger_system::checks`, shared with `banger system status`.

use banger_system::checks::{self, Status as SysStatus};
use banger_system::{InstallRecord, Owner, SystemLayout};

use super::{Check, Status};

fn from_system(c: checks::Check) -> Check {
    let status = match c.status {
        SysStatus::Pass => Status::Ok,
        SysStatus::Warn => Status::Warn,
        SysStatus::Fail => Status::Fail,
    };
    Check {
        name: c.name,
        status,
        detail: c.detail,
        fix: c.fix,
    }
}

/// The rows, or one info row when banger is not installed as a system service (root
/// in-process and `system run` need none of this).
pub async fn checks(cli_version: &str) -> Vec<Check> {
    let l = SystemLayout::from_env();
    let installed = l.install_record().exists() || l.helper_config().exists();
    if !installed {
        return vec![Check::new(
            "system install",
            Status::Info,
            "not installed as a system service (root runs banger directly; `sudo banger system run --owner USER` under another supervisor)",
        )
        .fix("sudo banger system install --owner USER")];
    }
    let mut out = vec![
        from_system(checks::install_record(&l, cli_version)),
        from_system(checks::helper_config(&l)),
    ];
    let owner = match InstallRecord::read(&l.install_record()) {
        Ok(Some(r)) => Owner::lookup(&r.owner).map_err(|e| e.to_string()),
        Ok(None) => Err("no install record".to_string()),
        Err(e) => Err(e.to_string()),
    };
    let helper_socket = banger_helper::HelperConfig::load(&l.helper_config())
        .map(|c| c.socket)
        .unwrap_or_else(|_| l.helper_socket());
    if banger_system::systemd::is_pid1() && l.root == std::path::Path::new("/") {
        if let Ok(o) = &owner {
            out.extend(
                checks::units_hardened(&l, &o.name)
                    .into_iter()
                    .map(from_system),
            );
        }
        out.extend(checks::units_active().into_iter().map(from_system));
    }
    out.push(from_system(
        checks::helper_reachable(&helper_socket, cli_version).await,
    ));
    match &owner {
        Ok(o) => {
            out.push(from_system(checks::socket_owner_mode(
                "helper socket",
                &helper_socket,
                o.uid,
            )));
            out.push(from_system(checks::socket_owner_mode(
                "daemon socket",
                &l.daemon_socket(),
                o.uid,
            )));
            out.push(from_system(checks::owner_kvm(o)));
            out.push(from_system(checks::state_dir_modes(
                &[&l.state_dir(), &l.cache_dir(), &l.runtime_dir()],
                o.uid,
            )));
        }
        Err(e) => out.push(
            Check::new("owner", Status::Fail, format!("the install's owner: {e}"))
                .fix("sudo banger system install --owner USER"),
        ),
    }
    out
}
