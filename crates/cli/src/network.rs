//! `banger network show | down`, `banger ssh-config install | uninstall | show` and
//! `banger vm host-key`: names, ssh and the host's networking as a user sees them.

use crate::errors::{fail, Class};
use crate::{output, ssh_config};
use banger_model::Layout;
use banger_rpc::{
    Client, NetworkDown, NetworkInfo, NetworkShow, NoParams, SshConfig, VmHostKey, VmHostKeyInfo,
    VmHostKeyParams,
};
use clap::Subcommand;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `banger network …`.
#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Show the bridge, the .vm DNS listeners and their upstreams, isolation and NAT.
    ///
    /// Example:
    ///   dig @127.0.0.1 -p 42069 dev.vm      (the host listener shown here)
    #[command(verbatim_doc_comment)]
    Show,
    /// Remove the bridge, banger's nftables tables and the bridge's systemd-resolved
    /// settings (refused while a VM runs; the next VM start sets them up again).
    Down,
}

/// `banger ssh-config …`.
#[derive(Debug, Subcommand)]
pub enum SshConfigCmd {
    /// Add one managed Include line to ~/.ssh/config so `ssh NAME.vm`, scp and rsync
    /// work from any terminal (banger's key, pinned host keys, no DNS needed).
    ///
    /// Example:
    ///   banger ssh-config install && ssh dev.vm hostname
    #[command(verbatim_doc_comment)]
    Install {
        /// Edit this file instead of ~/.ssh/config.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Remove banger's lines from ~/.ssh/config; every other byte stays as it was.
    Uninstall {
        /// Edit this file instead of ~/.ssh/config.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print banger's ssh_config (the file the Include line names) and whether
    /// ~/.ssh/config includes it.
    Show {
        /// Look at this file instead of ~/.ssh/config.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// `banger network …`.
pub async fn network(c: &mut Client, cmd: NetworkCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        NetworkCmd::Show => {
            let n = c.call::<NetworkShow>(&NoParams {}, |_| {}).await?;
            output::render(&n, print_network)
        }
        NetworkCmd::Down => {
            let r = c.call::<NetworkDown>(&NoParams {}, |_| {}).await?;
            output::render(&r, |r| {
                for line in &r.removed {
                    println!("removed {line}");
                }
            })
        }
    }
}

fn print_network(n: &NetworkInfo) {
    let yes = |b: bool| if b { "on" } else { "off" };
    let ports: Vec<String> = n.guest_host_ports.iter().map(u16::to_string).collect();
    let rows = [
        (
            "bridge",
            format!(
                "{} ({} on {}){}",
                n.bridge,
                n.gateway,
                n.subnet,
                if n.bridge_up { "" } else { ", not up" }
            ),
        ),
        ("dns (host)", n.dns_host.clone()),
        ("dns (guests)", n.dns_guests.clone()),
        (
            "upstreams",
            if n.upstreams.is_empty() {
                "none found (guests resolve only .vm names)".into()
            } else {
                n.upstreams.join(", ")
            },
        ),
        ("names", n.names.join(" ")),
        ("isolation", yes(n.isolation).to_string()),
        (
            "guest→host",
            if ports.is_empty() {
                "DNS and ping only (BANGER_GUEST_HOST_PORTS opens TCP ports)".into()
            } else {
                format!("DNS, ping and TCP {}", ports.join(", "))
            },
        ),
        ("nat", yes(n.nat).to_string()),
        ("ssh config", n.ssh_config.display().to_string()),
        ("known hosts", n.known_hosts.display().to_string()),
    ];
    for (k, v) in rows {
        println!("{k:<13} {v}");
    }
}

/// The user's ssh config: `~/.ssh/config` of the passwd entry (what ssh reads, even
/// when `$HOME` says otherwise), else `$HOME/.ssh/config`.
fn user_ssh_config() -> anyhow::Result<PathBuf> {
    let home = passwd_home().or_else(|| std::env::var_os("HOME").map(PathBuf::from));
    match home {
        Some(h) if h.is_absolute() => Ok(h.join(".ssh/config")),
        _ => Err(fail(
            Class::Failed,
            "cannot find your home directory (no passwd entry, no HOME); pass --config ~/.ssh/config",
        )),
    }
}

fn passwd_home() -> Option<PathBuf> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 16 << 10];
    // SAFETY: zeroed passwd is a valid out-parameter; getpwuid_r writes into `pw` and
    // `buf` (whose length we pass) and sets `out` to `pw` or null.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        );
        if rc != 0 || out.is_null() || pw.pw_dir.is_null() {
            return None;
        }
        let dir = CStr::from_ptr(pw.pw_dir);
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())))
    }
}

/// What `ssh-config install | uninstall | show` report.
#[derive(Debug, Serialize)]
struct SshConfigReport {
    /// The user's config file edited (or looked at).
    config: PathBuf,
    /// When it is a symlink: the file it points to, which was edited.
    followed_symlink: Option<PathBuf>,
    /// banger's file the Include line names.
    include: PathBuf,
    /// Whether the user's config includes it now.
    installed: bool,
    /// Whether this call changed anything.
    changed: bool,
    /// banger's file's text (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// `banger ssh-config …`. `install` and `show` ask the daemon to write banger's file
/// first; `uninstall` needs no daemon.
pub async fn ssh_config_cmd(layout: &Layout, cmd: SshConfigCmd) -> anyhow::Result<ExitCode> {
    let (config, install) = match &cmd {
        SshConfigCmd::Install { config } => (config.clone(), Some(true)),
        SshConfigCmd::Uninstall { config } => (config.clone(), Some(false)),
        SshConfigCmd::Show { config } => (config.clone(), None),
    };
    let config = match config {
        Some(c) => c,
        None => user_ssh_config()?,
    };
    let mut include = layout.ssh_config();
    let mut text = None;
    if install != Some(false) {
        let mut c = crate::daemon::connect(layout).await?;
        let info = c.call::<SshConfig>(&NoParams {}, |_| {}).await?;
        include = info.config_path;
        text = Some(info.config);
    }
    let edit_err = |e: ssh_config::SshConfigError| fail(Class::Failed, e.to_string());
    let (outcome, installed) = match install {
        Some(true) => (
            Some(ssh_config::install(&config, &include).map_err(edit_err)?),
            true,
        ),
        Some(false) => (
            Some(ssh_config::uninstall(&config, &include).map_err(edit_err)?),
            false,
        ),
        None => (None, is_installed(&config)),
    };
    let report = SshConfigReport {
        followed_symlink: outcome.as_ref().and_then(|o| o.followed_symlink.clone()),
        changed: outcome.as_ref().is_some_and(|o| o.changed),
        config: outcome.map_or(config, |o| o.edited),
        include,
        installed,
        text: if install.is_none() { text } else { None },
    };
    output::render(&report, |r| print_ssh_config(r, install))
}

fn is_installed(config: &Path) -> bool {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|t| ssh_config::remove_block(&t).ok().flatten())
        .is_some()
}

fn print_ssh_config(r: &SshConfigReport, install: Option<bool>) {
    if let Some(target) = &r.followed_symlink {
        println!(
            "note: your ssh config is a symlink; edited the file it points to, {}",
            target.display()
        );
    }
    match (install, r.changed) {
        (Some(true), true) => {
            println!(
                "{}: added `Include {}`; try: ssh NAME.vm",
                r.config.display(),
                r.include.display()
            )
        }
        (Some(true), false) => println!("{}: already includes banger's file", r.config.display()),
        (Some(false), true) => println!("{}: removed banger's lines", r.config.display()),
        (Some(false), false) => println!("{}: had no banger lines", r.config.display()),
        (None, _) => {
            println!(
                "# {} ({})",
                r.include.display(),
                if r.installed {
                    format!("included from {}", r.config.display())
                } else {
                    format!(
                        "not included from {}: banger ssh-config install",
                        r.config.display()
                    )
                }
            );
            print!("{}", r.text.as_deref().unwrap_or_default());
        }
    }
}

/// `banger vm host-key NAME [--accept]`.
pub async fn host_key(c: &mut Client, name: String, accept: bool) -> anyhow::Result<ExitCode> {
    let info = c
        .call::<VmHostKey>(&VmHostKeyParams { name, accept }, |_| {})
        .await?;
    output::render(&info, print_host_key)
}

fn print_host_key(k: &VmHostKeyInfo) {
    let none = "none";
    println!("name      {} ({})", k.name, k.alias);
    println!("pinned    {}", k.pinned.as_deref().unwrap_or(none));
    match (&k.guest, &k.guest_error) {
        (Some(g), _) => println!("guest     {g}"),
        (None, Some(e)) => println!("guest     unknown: {e}"),
        (None, None) => println!("guest     {none}"),
    }
    println!("file      {}", k.known_hosts_path.display());
    if k.accepted {
        println!("accepted: ssh now trusts the guest's current key");
    } else if k.guest.is_some() && k.guest != k.pinned {
        println!(
            "the guest's key differs from the pinned one; if you changed it on purpose: banger vm host-key {} --accept",
            k.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_config_reports_match_the_shape() {
        for (followed, text) in [(None, None), (Some("/real/config"), Some("Host *.vm\n"))] {
            let r = SshConfigReport {
                config: "/root/.ssh/config".into(),
                followed_symlink: followed.map(PathBuf::from),
                include: "/h/ssh_config".into(),
                installed: true,
                changed: false,
                text: text.map(Into::into),
            };
            crate::schema::assert_shape("ssh_config", &serde_json::to_value(&r).unwrap());
        }
    }
}
