//! NAT for guests: one nftables table owned by banger, plus IPv4 forwarding.
//!
//! The whole table is replaced in a single `nft -f -` transaction, so enabling is
//! idempotent and atomic (no window without the rule, never two copies), and
//! disabling removes exactly what banger added and nothing else. We generate the
//! ruleset text rather than use `nft -j` through a crate: the ruleset is three lines,
//! and the text form is what an operator reads in `nft list ruleset` anyway.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

use banger_model::Subnet;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::validate_ifname;

/// The nftables table banger owns (family `ip`: guests are IPv4 only).
pub const NAT_TABLE: &str = "banger";

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Why NAT could not be set up or removed.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// The bridge name cannot be used in a rule.
    #[error("bridge name is unusable for NAT: {0}")]
    BadBridge(#[source] crate::NetError),
    /// The subnet's prefix is not a valid IPv4 prefix.
    #[error("subnet prefix /{0} is not valid for NAT; use /1 to /30")]
    BadPrefix(u8),
    /// The `nft` program is not installed.
    #[error("{}", banger_hostcheck::tools::install_advice("nft"))]
    NftMissing,
    /// `nft` could not be started or talked to.
    #[error("could not run nft: {0}")]
    NftSpawn(#[source] std::io::Error),
    /// `nft` rejected the ruleset.
    #[error("nft refused banger's ruleset ({status}): {stderr}; check `nft list ruleset` and that nf_tables/nft_masq are available")]
    NftFailed {
        /// nft's exit status.
        status: std::process::ExitStatus,
        /// What nft printed on stderr.
        stderr: String,
    },
    /// IPv4 forwarding could not be switched on.
    #[error("could not enable IPv4 forwarding ({IP_FORWARD}): {0}; run as root")]
    Forwarding(#[source] std::io::Error),
}

/// The nft transaction that (re)creates banger's table: masquerade traffic from the
/// guest subnet that leaves through any interface other than the bridge (so
/// guest-to-guest and guest-to-host traffic keeps its source address).
pub fn nat_ruleset(bridge: &str, subnet: Subnet) -> Result<String, NatError> {
    validate_ifname(bridge).map_err(NatError::BadBridge)?;
    if !(1..=30).contains(&subnet.prefix) {
        return Err(NatError::BadPrefix(subnet.prefix));
    }
    // Subnet's Deserialize does not normalise, so clear host bits here: nft
    // refuses a prefix whose host bits are set.
    let mask = u32::MAX << (32 - u32::from(subnet.prefix));
    let network = Ipv4Addr::from(u32::from(subnet.network) & mask);
    let prefix = subnet.prefix;
    Ok(format!(
        "add table ip {NAT_TABLE}\n\
         delete table ip {NAT_TABLE}\n\
         table ip {NAT_TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {network}/{prefix} oifname != \"{bridge}\" masquerade\n\
         \t}}\n\
         }}\n"
    ))
}

/// Install (or replace) banger's NAT table for `subnet` behind `bridge` and enable
/// IPv4 forwarding. Idempotent.
pub async fn enable_nat(bridge: &str, subnet: Subnet) -> Result<(), NatError> {
    enable_nat_with(Path::new(nft_program()), bridge, subnet).await
}

/// [`enable_nat`] with the `nft` program given by the caller: the root helper runs
/// tools by absolute path only, never through `PATH`.
pub async fn enable_nat_with(nft: &Path, bridge: &str, subnet: Subnet) -> Result<(), NatError> {
    let ruleset = nat_ruleset(bridge, subnet)?;
    run_nft(nft, &ruleset).await?;
    enable_forwarding()
}

/// Remove banger's NAT table if present. Idempotent.
///
/// IPv4 forwarding is left on: other software on the host may rely on it, and banger
/// cannot know whether it was on before.
pub async fn disable_nat() -> Result<(), NatError> {
    disable_nat_with(Path::new(nft_program())).await
}

/// [`disable_nat`] with the `nft` program given by the caller (see [`enable_nat_with`]).
pub async fn disable_nat_with(nft: &Path) -> Result<(), NatError> {
    // `add` first so `delete` cannot fail on a missing table; one transaction.
    run_nft(
        nft,
        &format!("add table ip {NAT_TABLE}\ndelete table ip {NAT_TABLE}\n"),
    )
    .await
}

/// Write 1 to ip_forward unless it already is. Synchronous on purpose: /proc/sys/net
/// belongs to the namespace of the calling thread, which a blocking pool thread may
/// not share.
fn enable_forwarding() -> Result<(), NatError> {
    match std::fs::read_to_string(IP_FORWARD) {
        Ok(v) if v.trim() == "1" => Ok(()),
        _ => std::fs::write(IP_FORWARD, "1\n").map_err(NatError::Forwarding),
    }
}

/// The nft binary: Debian's path when present (a daemon's PATH may lack /usr/sbin),
/// else whatever PATH finds.
pub(crate) fn nft_program() -> &'static str {
    if Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    }
}

/// Feed `script` to `nft -f -`. The child is spawned from the calling thread, so it
/// inherits that thread's network namespace.
pub(crate) async fn run_nft(nft: &Path, script: &str) -> Result<(), NatError> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NatError::NftMissing,
            _ => NatError::NftSpawn(e),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(NatError::NftSpawn)?;
        // Dropping stdin closes it so nft sees end of input.
    }
    let out = child.wait_with_output().await.map_err(NatError::NftSpawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NatError::NftFailed {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_masquerades_subnet_not_leaving_via_bridge() {
        let s: Subnet = "172.30.0.0/24".parse().unwrap();
        let r = nat_ruleset("banger0", s).unwrap();
        assert!(r.starts_with("add table ip banger\ndelete table ip banger\n"));
        assert!(r.contains("ip saddr 172.30.0.0/24 oifname != \"banger0\" masquerade"));
        assert_eq!(r.matches("masquerade").count(), 1);
    }

    #[test]
    fn ruleset_normalises_host_bits_and_refuses_bad_input() {
        let s = Subnet {
            network: Ipv4Addr::new(10, 1, 2, 3),
            prefix: 16,
        };
        assert!(nat_ruleset("br0", s)
            .unwrap()
            .contains("ip saddr 10.1.0.0/16 "));
        assert!(matches!(
            nat_ruleset("br\"0", s),
            Err(NatError::BadBridge(_))
        ));
        let bad = Subnet { prefix: 0, ..s };
        assert!(matches!(
            nat_ruleset("br0", bad),
            Err(NatError::BadPrefix(0))
        ));
    }
}
