//! Daemon configuration. Environment variables for now (one place, documented in the
//! README); a config file can feed the same struct later.

use crate::failpoint::Failpoints;
use banger_model::{Subnet, VmmChoice};
use banger_vmm::Accel;
use std::path::PathBuf;
use std::time::Duration;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// BANGER_SUBNET is malformed.
    #[error("BANGER_SUBNET: {0}")]
    Subnet(#[from] banger_model::NetError),
    /// BANGER_ACCEL is not kvm or tcg.
    #[error("BANGER_ACCEL must be kvm or tcg, not {0:?}")]
    Accel(String),
    /// BANGER_VMM is not auto, qemu or firecracker.
    #[error("BANGER_VMM: {0}")]
    Vmm(String),
    /// A numeric variable is not a number.
    #[error("{0} must be a whole number of seconds")]
    Number(&'static str),
    /// BANGER_NAT is not on or off.
    #[error("BANGER_NAT must be on or off, not {0:?}")]
    Nat(String),
    /// BANGER_MAX_DOWNLOAD is not a size.
    #[error("BANGER_MAX_DOWNLOAD: {0}")]
    Size(#[from] banger_model::SizeError),
    /// BANGER_DNS is not an address or `off`.
    #[error("BANGER_DNS must be IP:PORT (e.g. 127.0.0.1:42069) or off, not {0:?}")]
    Dns(String),
    /// BANGER_GUEST_HOST_PORTS is not a list of ports.
    #[error("BANGER_GUEST_HOST_PORTS must be comma-separated TCP ports (1-65535, at most 64), not {0:?}")]
    HostPorts(String),
    /// BANGER_GUEST_DNS is not on or off.
    #[error("BANGER_GUEST_DNS must be on or off, not {0:?}")]
    GuestDns(String),
    /// BANGER_ISOLATION is not on or off.
    #[error("BANGER_ISOLATION must be on or off, not {0:?}")]
    Isolation(String),
}

/// Where the daemon answers `<vm>.vm` for the host unless told otherwise.
pub const DEFAULT_DNS: &str = "127.0.0.1:42069";

/// Where the host's real upstream resolvers are read from, in order (the first file
/// naming a non-loopback server wins): systemd-resolved's own list, NetworkManager's
/// list behind its dnsmasq stub, then the classic file.
pub const DEFAULT_RESOLV_CONF: &[&str] = &[
    "/run/systemd/resolve/resolv.conf",
    "/run/NetworkManager/no-stub-resolv.conf",
    "/etc/resolv.conf",
];

/// Everything the daemon can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Guest subnet (`BANGER_SUBNET`, default 172.30.0.0/24).
    pub subnet: Subnet,
    /// Host bridge (`BANGER_BRIDGE`, default banger0).
    pub bridge: String,
    /// QEMU binary (`BANGER_QEMU`).
    pub qemu: String,
    /// Firecracker binary (`BANGER_FIRECRACKER`, a name on PATH or a path).
    pub firecracker: String,
    /// Default VMM backend for new VMs (`BANGER_VMM`: auto, qemu or firecracker).
    pub vmm: VmmChoice,
    /// Static guest agent (`BANGER_AGENT`, default: `../lib/banger/banger-agent` from
    /// bangerd's directory).
    pub agent: PathBuf,
    /// Forced accelerator (`BANGER_ACCEL`); probed when unset.
    pub accel: Option<Accel>,
    /// Debian mirror for image builds (`BANGER_DEBIAN_MIRROR`).
    pub debian_mirror: Option<String>,
    /// How long a guest may take from VMM launch to answering ssh (`BANGER_BOOT_TIMEOUT`).
    pub boot_timeout: Duration,
    /// Outbound NAT for guests (`BANGER_NAT`: `on`, the default, or `off`): guests
    /// reach the networks the host reaches, masqueraded behind the host's address.
    pub nat: bool,
    /// Image and kernel catalog (`BANGER_CATALOG`: an http(s) URL or a path to the
    /// JSON index). `None`: `pull NAME` explains how to configure one.
    pub catalog: Option<String>,
    /// Largest single download banger accepts (`BANGER_MAX_DOWNLOAD`, default 16G),
    /// whatever a catalog or registry claims.
    pub max_download_bytes: u64,
    /// Test hook (`BANGER_FAIL_AT=<stage>[,…]`): make those start stages fail, to
    /// prove that a failure at any step leaves nothing behind (see `failpoint.rs`).
    pub failpoints: Failpoints,
    /// Where the host's DNS listener for `<vm>.vm` binds (`BANGER_DNS`, default
    /// [`DEFAULT_DNS`]; `off`: none). Guests' listener is always the gateway, port 53.
    pub dns: Option<std::net::SocketAddr>,
    /// The guests' DNS listener on the gateway, port 53 (`BANGER_GUEST_DNS`: `on`,
    /// the default, or `off`: guests are given the host's upstream resolvers
    /// directly and do not resolve `<vm>.vm`).
    pub guest_dns: bool,
    /// resolv.conf files the guests' forwarder reads its upstreams from, in order
    /// (`BANGER_RESOLV_CONF`, colon-separated; default [`DEFAULT_RESOLV_CONF`]).
    pub resolv_conf: Vec<PathBuf>,
    /// Guest isolation (`BANGER_ISOLATION`: `on`, the default, or `off`): each guest
    /// sends only as itself and reaches the host only at banger's DNS and
    /// [`Config::guest_host_ports`].
    pub isolation: bool,
    /// Host TCP ports guests may connect to on the gateway address
    /// (`BANGER_GUEST_HOST_PORTS`, comma-separated; default none).
    pub guest_host_ports: Vec<u16>,
    /// Defaults for new VMs.
    pub default_cpus: u32,
    /// Default guest memory in MiB.
    pub default_memory_mib: u64,
    /// Default work disk in MiB.
    pub default_disk_mib: u64,
}

impl Config {
    /// Read the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Read the configuration through `get` (an environment; tests pass their own).
    /// Empty values count as unset.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let subnet = match var("BANGER_SUBNET") {
            Some(s) => s.parse()?,
            None => Subnet::default(),
        };
        let accel = match var("BANGER_ACCEL") {
            None => None,
            Some(v) => Some(v.parse::<Accel>().map_err(|_| ConfigError::Accel(v))?),
        };
        // The same rule `banger doctor` reports (banger-hostcheck's `agent` module).
        let exe = std::env::current_exe().ok();
        let agent =
            banger_hostcheck::agent::locate_with(var("BANGER_AGENT").as_deref(), exe.as_deref())
                .path;
        let boot_timeout = match var("BANGER_BOOT_TIMEOUT") {
            Some(s) => Duration::from_secs(
                s.parse()
                    .map_err(|_| ConfigError::Number("BANGER_BOOT_TIMEOUT"))?,
            ),
            None => Duration::from_secs(180),
        };
        Ok(Self {
            subnet,
            bridge: var("BANGER_BRIDGE").unwrap_or_else(|| "banger0".into()),
            qemu: var("BANGER_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into()),
            firecracker: var("BANGER_FIRECRACKER").unwrap_or_else(|| "firecracker".into()),
            vmm: match var("BANGER_VMM") {
                Some(v) => v.parse().map_err(ConfigError::Vmm)?,
                None => VmmChoice::Auto,
            },
            agent,
            accel,
            debian_mirror: var("BANGER_DEBIAN_MIRROR"),
            boot_timeout,
            failpoints: Failpoints::parse(var("BANGER_FAIL_AT").as_deref()),
            nat: match var("BANGER_NAT").as_deref() {
                None | Some("on") | Some("1") => true,
                Some("off") | Some("0") => false,
                Some(other) => return Err(ConfigError::Nat(other.into())),
            },
            catalog: var("BANGER_CATALOG"),
            max_download_bytes: match var("BANGER_MAX_DOWNLOAD") {
                Some(s) => banger_model::parse_size_mib(&s)?.saturating_mul(1 << 20),
                None => 16 << 30,
            },
            dns: match var("BANGER_DNS").as_deref() {
                None => DEFAULT_DNS.parse().ok(),
                Some("off") | Some("0") => None,
                Some(a) => Some(a.parse().map_err(|_| ConfigError::Dns(a.to_string()))?),
            },
            guest_dns: match var("BANGER_GUEST_DNS").as_deref() {
                None | Some("on") | Some("1") => true,
                Some("off") | Some("0") => false,
                Some(other) => return Err(ConfigError::GuestDns(other.into())),
            },
            resolv_conf: match var("BANGER_RESOLV_CONF") {
                Some(list) => list
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect(),
                None => DEFAULT_RESOLV_CONF.iter().map(PathBuf::from).collect(),
            },
            isolation: match var("BANGER_ISOLATION").as_deref() {
                None | Some("on") | Some("1") => true,
                Some("off") | Some("0") => false,
                Some(other) => return Err(ConfigError::Isolation(other.into())),
            },
            guest_host_ports: match var("BANGER_GUEST_HOST_PORTS") {
                Some(list) => parse_ports(&list).ok_or(ConfigError::HostPorts(list))?,
                None => vec![],
            },
            default_cpus: 2,
            default_memory_mib: 1024,
            default_disk_mib: 8 * 1024,
        })
    }
}

/// `8080,5432`: distinct ports, none 0, at most 64.
fn parse_ports(list: &str) -> Option<Vec<u16>> {
    let mut ports = vec![];
    for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: u16 = p.parse().ok().filter(|n| *n != 0)?;
        if !ports.contains(&n) {
            ports.push(n);
        }
    }
    (ports.len() <= 64).then_some(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let c = Config::from_vars(|_| None).unwrap();
        assert_eq!(c.bridge, "banger0");
        assert_eq!(c.vmm, VmmChoice::Auto);
        assert!(c.nat);
        assert_eq!(c.accel, None);
        let c = Config::from_vars(|k| (k == "BANGER_ACCEL").then(|| "tcg".to_string())).unwrap();
        assert_eq!(c.accel, Some(Accel::Tcg));
        assert!(Config::from_vars(|k| (k == "BANGER_ACCEL").then(|| "hvf".to_string())).is_err());
        assert!(Config::from_vars(|k| (k == "BANGER_NAT").then(|| "maybe".to_string())).is_err());
        let c = Config::from_vars(|k| (k == "BANGER_FAIL_AT").then(|| "boot".to_string())).unwrap();
        assert!(c.failpoints.check("boot").is_err());
    }

    #[test]
    fn network_settings() {
        let c = Config::from_vars(|_| None).unwrap();
        assert_eq!(c.dns, Some("127.0.0.1:42069".parse().unwrap()));
        assert!(c.isolation);
        assert!(c.guest_host_ports.is_empty());
        assert_eq!(c.resolv_conf.len(), 3);
        let env = |k: &str| match k {
            "BANGER_DNS" => Some("off".to_string()),
            "BANGER_GUEST_HOST_PORTS" => Some("8080, 5432,8080".to_string()),
            "BANGER_RESOLV_CONF" => Some("/a:/b".to_string()),
            "BANGER_ISOLATION" => Some("off".to_string()),
            _ => None,
        };
        let c = Config::from_vars(env).unwrap();
        assert_eq!(c.dns, None);
        assert_eq!(c.guest_host_ports, vec![8080, 5432]);
        assert_eq!(
            c.resolv_conf,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert!(!c.isolation);
        for (k, v) in [
            ("BANGER_DNS", "localhost"),
            ("BANGER_GUEST_HOST_PORTS", "0"),
            ("BANGER_GUEST_HOST_PORTS", "http"),
            ("BANGER_ISOLATION", "maybe"),
        ] {
            assert!(
                Config::from_vars(|q| (q == k).then(|| v.to_string())).is_err(),
                "{k}={v}"
            );
        }
    }
}
