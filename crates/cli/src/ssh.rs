//! Running OpenSSH against a guest: the user's own `ssh` handles terminals, signals
//! and exit statuses the way people expect; banger only supplies the options.

use banger_rpc::SshInfo;
use std::process::Command;

/// Quote `s` for a POSIX shell: the remote side runs the command through the
/// user's login shell, so argv boundaries must survive one round of parsing.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

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

/// The ssh command for `info`, running `argv` (interactive login when empty).
pub fn command(info: &SshInfo, argv: &[String], tty: bool) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-i")
        .arg(&info.key_path)
        .args(["-o", "IdentitiesOnly=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            info.known_hosts_path.display()
        ))
        .args(["-o", "StrictHostKeyChecking=accept-new"])
        .arg("-o")
        .arg(format!("HostKeyAlias=banger-{}", info.name))
        .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=15"])
        .args(["-o", "ServerAliveInterval=15", "-o", "BatchMode=yes"]);
    if tty {
        c.arg("-t");
    } else {
        c.arg("-T");
    }
    c.arg(format!("{}@{}", info.user, info.ip));
    if !argv.is_empty() {
        c.arg("--");
        c.arg(remote_line(argv));
    }
    c
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
