//! banger's kernel command-line parameters (`banger.*`), the only channel through
//! which the host configures early boot. The Debian cloud kernel has no `ip=`
//! support (no CONFIG_IP_PNP), so addressing travels here instead.

use banger_contract::cmdline as key;
use std::net::{IpAddr, Ipv4Addr};

/// What banger asked for on the command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BootParams {
    /// Guest address and prefix (`banger.ip=172.30.0.2/24`).
    pub ip: Option<(Ipv4Addr, u8)>,
    /// Default gateway (`banger.gw=172.30.0.1`).
    pub gateway: Option<Ipv4Addr>,
    /// Hostname (`banger.hostname=dev`).
    pub hostname: Option<String>,
    /// Who is the guest's init (`banger.init=agent|systemd|/path`).
    pub init: Init,
    /// Name servers for /etc/resolv.conf, written in both init modes (`banger.dns=a,b`).
    pub dns: Vec<IpAddr>,
    /// eth0's MTU (`banger.mtu=65520`), 576 to 65520; the kernel's default otherwise.
    pub mtu: Option<u32>,
    /// Accelerator probe: print [`PROBE_OK`] and power off (`banger.probe`).
    pub probe: bool,
    /// What the boot is for (`banger.mode=...`); a normal boot without it.
    pub mode: Mode,
}

/// What banger boots the initrd for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Build the overlay root and hand over to the image's init (no `banger.mode`).
    #[default]
    Boot,
    /// Tar the merged disks onto the export disk, then power off (`banger.mode=export`):
    /// see [`crate::export`].
    Export,
    /// A mode this agent does not know. Refused rather than booted normally: a host
    /// that asked for something else must never get a boot that writes to the disks.
    Unknown(String),
}

/// Who runs as the guest's init after the root is ready.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Init {
    /// No `banger.init`: the image's `/sbin/init` (systemd) if it has one, else the agent.
    #[default]
    Default,
    /// `banger.init=agent`: the agent stays PID 1 (the fast init, see [`crate::pid1`]).
    Agent,
    /// `banger.init=systemd`: hand over to the image's `/sbin/init`, as banger always did.
    Systemd,
    /// `banger.init=/path`: hand over to that program (debugging).
    Path(String),
    /// A value this agent does not know: treated as [`Init::Default`], with a warning.
    Unknown(String),
}

/// Most name servers `resolv.conf` honours.
const MAX_DNS: usize = 3;

/// What the init prints in probe mode; the host looks for it on the console.
pub const PROBE_OK: &str = banger_contract::cmdline::PROBE_OK;

/// Parse `/proc/cmdline` text.
pub fn parse(cmdline: &str) -> BootParams {
    let mut p = BootParams::default();
    for word in cmdline.split_whitespace() {
        if word == key::PROBE {
            p.probe = true;
        }
        let Some((k, v)) = word.split_once('=') else {
            continue;
        };
        match k {
            key::IP => {
                p.ip = v.split_once('/').and_then(|(a, n)| {
                    Some((a.parse().ok()?, n.parse().ok().filter(|n| *n <= 32)?))
                })
            }
            key::GATEWAY => p.gateway = v.parse().ok(),
            key::MTU => p.mtu = v.parse().ok().filter(|m| (576..=65520).contains(m)),
            key::HOSTNAME => p.hostname = Some(v.to_string()),
            key::INIT => {
                p.init = match v {
                    key::INIT_AGENT => Init::Agent,
                    key::INIT_SYSTEMD => Init::Systemd,
                    path if path.starts_with('/') => Init::Path(path.to_string()),
                    other => Init::Unknown(other.to_string()),
                }
            }
            key::DNS => {
                p.dns = v
                    .split(',')
                    .filter_map(|a| a.parse().ok())
                    .take(MAX_DNS)
                    .collect()
            }
            key::MODE => {
                p.mode = match v {
                    key::MODE_EXPORT => Mode::Export,
                    other => Mode::Unknown(other.to_string()),
                }
            }
            _ => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_banger_params_and_ignores_the_rest() {
        let p = parse(
            "console=ttyS0 banger.ip=172.30.0.2/24 banger.gw=172.30.0.1 quiet banger.hostname=dev",
        );
        assert_eq!(p.ip, Some((Ipv4Addr::new(172, 30, 0, 2), 24)));
        assert_eq!(p.gateway, Some(Ipv4Addr::new(172, 30, 0, 1)));
        assert_eq!(p.hostname.as_deref(), Some("dev"));
        assert_eq!(p.init, Init::Default);
        assert!(p.dns.is_empty());
        assert_eq!(p.mode, Mode::Boot);
    }

    #[test]
    fn parses_an_mtu_in_range_only() {
        assert_eq!(parse("banger.mtu=65520").mtu, Some(65520));
        assert_eq!(parse("banger.mtu=1500").mtu, Some(1500));
        assert_eq!(parse("banger.mtu=65521").mtu, None);
        assert_eq!(parse("banger.mtu=100").mtu, None);
        assert_eq!(parse("banger.mtu=x").mtu, None);
        assert_eq!(parse("quiet").mtu, None);
    }

    #[test]
    fn parses_the_mode() {
        assert_eq!(parse("console=ttyS0 banger.mode=export").mode, Mode::Export);
        assert_eq!(
            parse("banger.mode=exprt").mode,
            Mode::Unknown("exprt".into())
        );
    }

    #[test]
    fn parses_the_init_and_name_servers() {
        assert_eq!(parse("banger.init=agent").init, Init::Agent);
        assert_eq!(parse("banger.init=systemd").init, Init::Systemd);
        assert_eq!(
            parse("banger.init=/bin/sh").init,
            Init::Path("/bin/sh".into())
        );
        assert_eq!(
            parse("banger.init=runit").init,
            Init::Unknown("runit".into())
        );
        let p = parse("banger.dns=172.30.0.1,bogus,::1,1.1.1.1,8.8.8.8");
        let want: Vec<IpAddr> = ["172.30.0.1", "::1", "1.1.1.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(p.dns, want);
    }

    #[test]
    fn malformed_values_are_dropped() {
        let p = parse("banger.ip=1.2.3.4 banger.gw=nope banger.ip=1.2.3.4/40");
        assert_eq!(p.ip, None);
        assert_eq!(p.gateway, None);
    }
}
