//! banger's kernel command-line parameters (`banger.*`), the only channel through
//! which the host configures early boot. The Debian cloud kernel has no `ip=`
//! support (no CONFIG_IP_PNP), so addressing travels here instead.

use banger_contract::cmdline as key;
use std::net::Ipv4Addr;

/// What banger asked for on the command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BootParams {
    /// Guest address and prefix (`banger.ip=172.30.0.2/24`).
    pub ip: Option<(Ipv4Addr, u8)>,
    /// Default gateway (`banger.gw=172.30.0.1`).
    pub gateway: Option<Ipv4Addr>,
    /// Hostname (`banger.hostname=dev`).
    pub hostname: Option<String>,
    /// The init to hand over to (`banger.init=/sbin/init`).
    pub init: Option<String>,
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
            key::HOSTNAME => p.hostname = Some(v.to_string()),
            key::INIT => p.init = Some(v.to_string()),
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
        assert_eq!(p.init, None);
        assert_eq!(p.mode, Mode::Boot);
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
    fn malformed_values_are_dropped() {
        let p = parse("banger.ip=1.2.3.4 banger.gw=nope banger.ip=1.2.3.4/40");
        assert_eq!(p.ip, None);
        assert_eq!(p.gateway, None);
    }
}
