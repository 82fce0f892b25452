//! sshd readiness and the OpenSSH options banger uses.
//!
//! Interactive and streamed commands go through the user's OpenSSH client (`ssh`):
//! it handles terminals, signals and exit codes exactly as users expect. The host
//! key is pinned per VM: `StrictHostKeyChecking=accept-new` with a per-VM
//! known_hosts file trusts the first key the guest presents and refuses a changed one.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Wait until something on `ip:22` sends an SSH identification string.
pub async fn wait_sshd(ip: Ipv4Addr, deadline: Duration) -> Result<(), std::io::Error> {
    let start = Instant::now();
    let addr = SocketAddr::from((ip, 22));
    loop {
        let attempt = async {
            let mut s = TcpStream::connect(addr).await?;
            let mut buf = [0u8; 8];
            s.read_exact(&mut buf).await?;
            Ok::<bool, std::io::Error>(buf.starts_with(b"SSH-"))
        };
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("sshd on {addr} did not answer within {deadline:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// OpenSSH arguments (before the destination) for reaching a banger guest.
pub fn ssh_options(key: &Path, known_hosts: &Path, host_alias: &str) -> Vec<String> {
    [
        "-i".to_string(),
        key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "StrictHostKeyChecking=accept-new".into(),
        "-o".into(),
        format!("HostKeyAlias={host_alias}"),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-o".into(),
        "ServerAliveInterval=15".into(),
        "-o".into(),
        "BatchMode=yes".into(),
    ]
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_per_vm() {
        let o = ssh_options(Path::new("/k"), Path::new("/vm/known_hosts"), "banger-abc").join(" ");
        assert!(o.contains("UserKnownHostsFile=/vm/known_hosts"));
        assert!(o.contains("StrictHostKeyChecking=accept-new"));
        assert!(o.contains("HostKeyAlias=banger-abc"));
    }
}
