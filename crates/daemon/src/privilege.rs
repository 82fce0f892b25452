//! Who carries out the daemon's privileged operations (bridge, taps, NAT, jailed
//! Firecracker), decided once when the daemon starts, in this order:
//!
//! 1. `BANGER_HELPER_SOCKET` names a root helper (`banger system run`, the system
//!    unit): that helper, through [`HelperClient`];
//! 2. the system helper's socket exists (a system install on this host): that helper;
//! 3. the daemon is root (quick trials, `make test`): in-process
//!    ([`banger_helper::InProcess`]), through the same validation;
//! 4. otherwise the daemon runs **rootless** (docs/rootless.md): no bridge, tap or
//!    NAT, so every privileged operation is refused ([`banger_helper::Unprivileged`]),
//!    and each VM's network is a user-space stack the daemon starts as its own user
//!    instead (passt, or QEMU's user-mode networking; [`crate::vm::userspace`]).
//!
//! With a helper, the bridge and the guest subnet are the helper's, from its
//! root-owned config: it refuses any other, so the daemon asks for them at start
//! ([`helper_network`]) instead of reading `BANGER_BRIDGE`/`BANGER_SUBNET`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_helper::wire::{HelperOp, Network, Request};
use banger_helper::{HelperClient, HelperError, InProcess, Privileged, Unprivileged};

/// The system helper's socket (`banger system install`'s helper).
pub const SYSTEM_HELPER_SOCKET: &str = banger_helper::config::DEFAULT_SOCKET;
/// How long the daemon waits at start for a helper that is still starting.
pub const HELPER_WAIT: Duration = Duration::from_secs(15);

/// The daemon's way to privileged operations.
#[derive(Debug, Clone)]
pub enum Privilege {
    /// A root helper on its socket.
    Helper(HelperClient),
    /// The daemon is root and does them itself.
    InProcess,
    /// Neither: rootless mode, as the daemon's uid.
    Rootless(u32),
}

impl Privilege {
    /// The choice for this process (see the module docs).
    pub fn from_env() -> Privilege {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        choose(
            HelperClient::from_env(),
            Path::new(SYSTEM_HELPER_SOCKET),
            uid,
        )
    }

    /// The implementation of [`Privileged`] for this choice.
    pub fn privileged(&self) -> Arc<dyn Privileged> {
        match self {
            Privilege::Helper(h) => Arc::new(h.clone()),
            Privilege::InProcess => Arc::new(InProcess::new()),
            Privilege::Rootless(uid) => Arc::new(Unprivileged {
                uid: *uid,
                system_socket: SYSTEM_HELPER_SOCKET.into(),
            }),
        }
    }

    /// Whether this is rootless mode.
    pub fn rootless(&self) -> bool {
        matches!(self, Privilege::Rootless(_))
    }

    /// The helper, when there is one.
    pub fn helper(&self) -> Option<&HelperClient> {
        match self {
            Privilege::Helper(h) => Some(h),
            _ => None,
        }
    }

    /// One line for the daemon's log.
    pub fn describe(&self) -> String {
        match self {
            Privilege::Helper(h) => format!("through the root helper on {}", h.socket().display()),
            Privilege::InProcess => "in-process (the daemon is root)".into(),
            Privilege::Rootless(uid) => format!(
                "none: rootless mode (uid {uid}, no root helper): guests use user-space \
                 networking (sudo banger system install for the bridge)"
            ),
        }
    }
}

/// The choice given the helper `BANGER_HELPER_SOCKET` names, the system helper's
/// socket path and the daemon's uid (pure but for one `stat`).
pub fn choose(env_helper: Option<HelperClient>, system_socket: &Path, uid: u32) -> Privilege {
    if let Some(h) = env_helper {
        return Privilege::Helper(h);
    }
    if std::fs::symlink_metadata(system_socket).is_ok() {
        return Privilege::Helper(HelperClient::new(system_socket));
    }
    if uid == 0 {
        Privilege::InProcess
    } else {
        Privilege::Rootless(uid)
    }
}

/// The helper's bridge and subnet, asking until it answers or `wait` passes (it may
/// be starting beside the daemon). Blocking: the daemon calls it once, before it
/// serves anything.
pub fn helper_network(client: &HelperClient, wait: Duration) -> Result<Network, HelperError> {
    let t = Instant::now();
    loop {
        match client.call_blocking(&Request::Helper(HelperOp::Ping {})) {
            Ok((reply, _)) => {
                return reply.network.ok_or_else(|| {
                    HelperError::Protocol("the helper's ping reply names no network".into())
                })
            }
            Err(e @ HelperError::Unreachable { .. }) if t.elapsed() < wait => {
                tracing::debug!("waiting for the root helper: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_then_system_socket_then_root_then_nothing() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path().join("helper.sock");
        let env = Some(HelperClient::new(d.path().join("env.sock")));
        // The variable wins, whoever we are.
        for uid in [0, 1000] {
            match choose(env.clone(), &sys, uid) {
                Privilege::Helper(h) => assert_eq!(h.socket(), d.path().join("env.sock")),
                other => panic!("{other:?}"),
            }
        }
        // No helper anywhere: root does it itself, others cannot.
        assert!(matches!(choose(None, &sys, 0), Privilege::InProcess));
        assert!(matches!(
            choose(None, &sys, 1000),
            Privilege::Rootless(1000)
        ));
        // A system helper's socket is used by root and owner alike.
        let _l = std::os::unix::net::UnixListener::bind(&sys).unwrap();
        for uid in [0, 1000] {
            match choose(None, &sys, uid) {
                Privilege::Helper(h) => assert_eq!(h.socket(), sys),
                other => panic!("{other:?}"),
            }
        }
        let refused = choose(None, &d.path().join("none"), 1000)
            .privileged()
            .available()
            .unwrap_err()
            .to_string();
        assert!(refused.contains("sudo banger system install"), "{refused}");
        assert!(choose(None, &d.path().join("none"), 0)
            .privileged()
            .available()
            .is_ok());
    }

    #[test]
    fn an_absent_helper_is_reported_after_the_wait() {
        let d = tempfile::tempdir().unwrap();
        let c = HelperClient::new(d.path().join("gone.sock"));
        let t = Instant::now();
        let e = helper_network(&c, Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(e.to_string().contains("not answering"), "{e}");
    }
}
