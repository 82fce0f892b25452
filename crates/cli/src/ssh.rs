//! Running OpenSSH against a guest: the user's own `ssh` handles terminals, signals
//! and exit statuses the way people expect; banger only supplies the options (its
//! key, and the known_hosts file where the daemon pinned the guest's host key, checked
//! strictly).

use banger_rpc::SshInfo;
use std::process::Command;

pub use banger_workspace::shell_quote;

/// The remote command line for `argv`: a single argument is a shell command line, as
/// with `ssh host 'cd x && make'`; several arguments keep their exact boundaries, so
/// `-- sh -c 'echo a; exit 7'` means what it says.
pub fn remote_line(argv: &[String]) -> String {
    match argv {
        [one] => one.clone(),
        many => many
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The ssh command for `info`, running the shell line `remote` (a login shell when None).
pub fn command(info: &SshInfo, remote: Option<&str>, tty: bool) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-i")
        .arg(&info.key_path)
        .args(["-o", "IdentitiesOnly=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            info.known_hosts_path.display()
        ))
        // The daemon pinned the guest's key before its first boot (or from its
        // agent): never trust a key on first use, never accept another.
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "CheckHostIP=no"])
        .arg("-o")
        .arg(format!(
            "HostKeyAlias={}",
            info.host_key_alias
                .clone()
                .unwrap_or_else(|| format!("{}.vm", info.name))
        ))
        .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=15"])
        .args(["-o", "ServerAliveInterval=15", "-o", "BatchMode=yes"]);
    // Reuse one connection per VM: a fresh ssh handshake costs ~1 s under software
    // emulation, a multiplexed session ~0.1 s. Only when the socket's directory is ours.
    if let Some(cp) = info
        .control_path
        .as_ref()
        .filter(|p| p.parent().is_some_and(writable))
    {
        c.args(["-o", "ControlMaster=auto", "-o", "ControlPersist=60"])
            .arg("-o")
            .arg(format!("ControlPath={}", cp.display()));
    }
    if tty {
        c.arg("-t");
    } else {
        c.arg("-T");
    }
    if let Some(port) = info.port {
        c.arg("-p").arg(port.to_string());
    }
    c.arg(format!("{}@{}", info.user, info.ip));
    if let Some(line) = remote {
        c.arg("--");
        c.arg(line);
    }
    c
}

/// Wait until sshd in the guest accepts connections: the daemon's readiness is the
/// agent, and sshd comes up on its own (from the agent, or systemd) a little later.
/// Bounded by `BANGER_BOOT_TIMEOUT` seconds (default 120).
pub async fn wait_sshd(info: &SshInfo) -> anyhow::Result<()> {
    let secs = std::env::var("BANGER_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(120);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let addr = std::net::SocketAddr::from((info.ip, info.port.unwrap_or(22)));
    loop {
        let attempt = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "sshd in VM {} did not answer on {addr} within {secs} s: the image may have no \
                 OpenSSH server (run without --via-ssh to use banger's agent)",
                info.name
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn writable(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && (m.uid() == me || me == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_argument_is_a_shell_line_several_are_argv() {
        let one = vec!["cd /tmp && ls".to_string()];
        assert_eq!(remote_line(&one), "cd /tmp && ls");
        let many: Vec<String> = ["sh", "-c", "echo a; exit 7"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(remote_line(&many), "sh -c 'echo a; exit 7'");
    }

    #[test]
    fn quoting_preserves_argv_through_a_shell() {
        let argv = [
            "sh",
            "-c",
            "echo hello-from-guest; exit 7",
            "it's",
            "",
            "$HOME",
        ];
        let line = argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for a in {line}; do printf '[%s]' \"$a\"; done"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "[sh][-c][echo hello-from-guest; exit 7][it's][][$HOME]"
        );
    }
}
