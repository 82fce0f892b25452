//! systemd-resolved integration: every program on the host resolves `<vm>.vm`.
//!
//! Where systemd-resolved runs, banger gives its bridge per-link DNS settings: the
//! gateway address (banger's responder) as the link's server and `~vm` as a routing-only
//! domain, so resolved sends `.vm` queries there and nothing else (the link is never a
//! default route). The settings belong to the link: they vanish with the bridge, are
//! re-applied whenever banger ensures the bridge, and `resolvectl revert` removes them.
//!
//! Elsewhere nothing is changed on the host; `banger doctor` prints the line for
//! dnsmasq or NetworkManager instead, and `banger ssh-config` works without any host
//! DNS at all.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::validate_ifname;

/// Debian's resolvectl.
pub const RESOLVECTL: &str = banger_hostcheck::resolved::RESOLVECTL;
/// systemd-resolved's runtime directory; it exists only while resolved runs (or ran
/// since boot), and holds the varlink socket of a running one.
pub const RESOLVED_RUNTIME: &str = banger_hostcheck::resolved::RUNTIME;
/// The routing-only domain banger asks for (resolved syntax: `~` = route, not search).
pub const ROUTING_DOMAIN: &str = "~vm";
/// How long one resolvectl call may take (a D-Bus round trip).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why resolved could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ResolvedError {
    /// The bridge name cannot be passed on.
    #[error("bridge name is unusable for resolvectl: {0}")]
    BadName(#[source] crate::NetError),
    /// The bridge could not be looked up.
    #[error("looking up the bridge for systemd-resolved: {0}")]
    Link(#[source] crate::NetError),
    /// resolvectl could not be run.
    #[error("could not run {}: {source}; install systemd-resolved's resolvectl or set per-link DNS by hand (banger doctor prints the line)", path.display())]
    Spawn {
        /// The resolvectl used.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// resolvectl did not finish in time.
    #[error("resolvectl {0} did not finish within 10 s; is systemd-resolved (or D-Bus) hung? check `systemctl status systemd-resolved`")]
    Timeout(String),
    /// resolvectl failed.
    #[error("resolvectl {args} failed ({status}): {stderr}; check `resolvectl status` and `journalctl -u systemd-resolved`")]
    Failed {
        /// The arguments.
        args: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// The systemd-resolved of this host, reached through `resolvectl` by absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    resolvectl: PathBuf,
}

impl Resolved {
    /// The host's resolved if it runs here and `resolvectl` (an absolute path) exists.
    /// A running resolved has its varlink socket in [`RESOLVED_RUNTIME`].
    pub fn detect(resolvectl: &Path) -> Option<Resolved> {
        Self::detect_in(resolvectl, Path::new(RESOLVED_RUNTIME))
    }

    /// [`Resolved::detect`] with another runtime directory (tests).
    pub fn detect_in(resolvectl: &Path, runtime: &Path) -> Option<Resolved> {
        let running = runtime.join("io.systemd.Resolve").exists();
        (running && resolvectl.is_absolute() && resolvectl.is_file()).then(|| Resolved {
            resolvectl: resolvectl.to_path_buf(),
        })
    }

    /// A resolved reached through `resolvectl`, without detection (tests).
    pub fn with(resolvectl: &Path) -> Resolved {
        Resolved {
            resolvectl: resolvectl.to_path_buf(),
        }
    }

    /// Send `.vm` lookups to `gateway` on `bridge` (and only those).
    pub async fn set_link(&self, bridge: &str, gateway: Ipv4Addr) -> Result<(), ResolvedError> {
        for args in link_commands(bridge, gateway)? {
            self.run(&args).await?;
        }
        Ok(())
    }

    /// Drop every per-link setting of `bridge` (absent link: nothing to do).
    pub async fn revert_link(&self, bridge: &str) -> Result<(), ResolvedError> {
        validate_ifname(bridge).map_err(ResolvedError::BadName)?;
        match self.run(&["revert".into(), bridge.into()]).await {
            // "Failed to resolve interface": the bridge is gone, and its settings with it.
            Err(ResolvedError::Failed { stderr, .. })
                if stderr.contains("resolve interface") || stderr.contains("No such device") =>
            {
                Ok(())
            }
            r => r,
        }
    }

    async fn run(&self, args: &[String]) -> Result<(), ResolvedError> {
        let mut c = tokio::process::Command::new(&self.resolvectl);
        c.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let joined = args.join(" ");
        let child = c.spawn().map_err(|source| ResolvedError::Spawn {
            path: self.resolvectl.clone(),
            source,
        })?;
        let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| ResolvedError::Timeout(joined.clone()))?
            .map_err(|source| ResolvedError::Spawn {
                path: self.resolvectl.clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(ResolvedError::Failed {
            args: joined,
            status: out.status,
            stderr: stderr
                .chars()
                .take(512)
                .collect::<String>()
                .trim()
                .to_string(),
        })
    }
}

/// The bridge's resolved settings, applied once per incarnation of the bridge: a
/// bridge deleted and made again (a new interface index) gets them again, while the
/// many `ensure` calls in between (one per VM start) cost one netlink lookup.
#[derive(Debug, Default)]
pub struct LinkDns {
    applied: tokio::sync::Mutex<Option<(String, u32)>>,
}

impl LinkDns {
    /// Make sure `resolved` (if this host runs it) sends `.vm` lookups for `bridge`
    /// to `gateway`.
    pub async fn ensure(
        &self,
        resolved: Option<&Resolved>,
        bridge: &str,
        gateway: Ipv4Addr,
    ) -> Result<(), ResolvedError> {
        let Some(r) = resolved else {
            return Ok(());
        };
        let index = crate::link_state(bridge)
            .await
            .map_err(ResolvedError::Link)?
            .map(|s| s.index);
        let Some(index) = index else {
            return Ok(());
        };
        let mut applied = self.applied.lock().await;
        if applied.as_ref() == Some(&(bridge.to_string(), index)) {
            return Ok(());
        }
        r.set_link(bridge, gateway).await?;
        *applied = Some((bridge.to_string(), index));
        Ok(())
    }

    /// Revert `bridge`'s settings (the bridge is about to go) and forget them.
    pub async fn revert(
        &self,
        resolved: Option<&Resolved>,
        bridge: &str,
    ) -> Result<(), ResolvedError> {
        let mut applied = self.applied.lock().await;
        *applied = None;
        match resolved {
            Some(r) => r.revert_link(bridge).await,
            None => Ok(()),
        }
    }
}

/// The resolvectl invocations that route `.vm` to `gateway` on `bridge`.
pub fn link_commands(bridge: &str, gateway: Ipv4Addr) -> Result<Vec<Vec<String>>, ResolvedError> {
    validate_ifname(bridge).map_err(ResolvedError::BadName)?;
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(vec![
        v(&["dns", bridge, &gateway.to_string()]),
        v(&["domain", bridge, ROUTING_DOMAIN]),
        // Explicit, whatever resolved's automatic choice: names outside .vm never go
        // to banger's responder through this link.
        v(&["default-route", bridge, "false"]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn commands_route_only_vm_to_the_gateway() {
        let c = link_commands("banger0", Ipv4Addr::new(172, 30, 0, 1)).unwrap();
        assert_eq!(c[0], ["dns", "banger0", "172.30.0.1"]);
        assert_eq!(c[1], ["domain", "banger0", "~vm"]);
        assert_eq!(c[2], ["default-route", "banger0", "false"]);
        assert!(link_commands("-x;", Ipv4Addr::LOCALHOST).is_err());
    }

    #[test]
    fn detection_needs_a_running_resolved_and_an_absolute_tool() {
        let d = tempfile::tempdir().unwrap();
        let tool = d.path().join("resolvectl");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        assert!(Resolved::detect_in(&tool, d.path()).is_none());
        std::fs::write(d.path().join("io.systemd.Resolve"), "").unwrap();
        assert!(Resolved::detect_in(&tool, d.path()).is_some());
        assert!(Resolved::detect_in(Path::new("resolvectl"), d.path()).is_none());
    }

    #[tokio::test]
    async fn runs_resolvectl_and_tolerates_a_gone_link_on_revert() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let tool = d.path().join("resolvectl");
        std::fs::write(
            &tool,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\nif [ \"$1\" = revert ] && [ \"$2\" = gone0 ]; then echo 'Failed to resolve interface \"gone0\": No such device' >&2; exit 1; fi\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = Resolved::with(&tool);
        r.set_link("banger0", Ipv4Addr::new(172, 30, 0, 1))
            .await
            .unwrap();
        r.revert_link("banger0").await.unwrap();
        r.revert_link("gone0").await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "dns banger0 172.30.0.1\ndomain banger0 ~vm\ndefault-route banger0 false\nrevert banger0\nrevert gone0\n"
        );
    }
}
