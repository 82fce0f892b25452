//! The two ssh files the daemon keeps beside banger's key, rewritten whenever a VM is
//! made, deleted or gets a host key pinned:
//!
//! * `state/ssh/known_hosts`: one line per VM with a pinned host key,
//!   `<name>.vm,<ip> <type> <key>`. Keys come from the daemon (generated for each new
//!   overlay) or from the guest's agent channel, never from the network, so no ssh
//!   client trusts a key on first use.
//! * `state/ssh/config`: a `Host <name>.vm` block per VM (its address, so names work
//!   without any host DNS, and `HostKeyAlias` so the key is looked up by name), then
//!   `Host *.vm` with banger's key, that known_hosts and `StrictHostKeyChecking yes`.
//!   `banger ssh-config install` includes it from `~/.ssh/config`.
//!
//! Both are rendered from the database, so a rewrite is always complete; rewrites are
//! serialised (`App::ssh_files`) and each file is replaced durably (temporary file,
//! fsync, rename).

use crate::app::App;
use crate::vm::files;
use std::net::Ipv4Addr;
use std::path::Path;

/// One VM's pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// VM name.
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The loopback port that reaches its sshd (rootless mode, while it runs): the
    /// config then names 127.0.0.1 and this port.
    pub port: Option<u16>,
    /// Its pinned host key (`TYPE BASE64`), if any.
    pub key: Option<String>,
}

/// The host name a VM is known by in both files.
pub fn alias(name: &str) -> String {
    format!("{name}.vm")
}

/// The known_hosts text for `pins` (VMs without a key have no line).
pub fn render_known_hosts(pins: &[Pin]) -> String {
    let mut out = String::from(
        "# Written by bangerd: every VM's pinned ssh host key. Do not edit; \
         `banger vm host-key NAME --accept` re-pins a VM's key.\n",
    );
    for p in pins {
        if let Some(k) = &p.key {
            out.push_str(&format!("{},{} {k}\n", alias(&p.name), p.ip));
        }
    }
    out
}

/// A path as an ssh_config argument: quoted, `%` doubled (ssh expands `%` tokens in
/// these options). None for a path ssh_config cannot carry.
fn config_path(p: &Path) -> Option<String> {
    let s = p.to_str()?;
    if s.contains('"') || s.chars().any(char::is_control) {
        return None;
    }
    Some(format!("\"{}\"", s.replace('%', "%%")))
}

/// The ssh_config text for `pins`, with banger's `key` and the `known_hosts` file.
pub fn render_config(pins: &[Pin], key: &Path, known_hosts: &Path) -> Option<String> {
    let mut out = String::from(
        "# Written by bangerd from its VM list; do not edit. `banger ssh-config install`\n\
         # includes it from ~/.ssh/config (`banger ssh-config uninstall` removes that).\n",
    );
    for p in pins {
        match p.port {
            Some(port) => out.push_str(&format!(
                "Host {a}\n  HostName 127.0.0.1\n  Port {port}\n  HostKeyAlias {a}\n",
                a = alias(&p.name),
            )),
            None => out.push_str(&format!(
                "Host {a}\n  HostName {ip}\n  HostKeyAlias {a}\n",
                a = alias(&p.name),
                ip = p.ip
            )),
        }
    }
    out.push_str(&format!(
        "Host *.vm\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  CheckHostIP no\n",
        config_path(key)?,
        config_path(known_hosts)?
    ));
    Some(out)
}

/// The pinned key in a VM's state directory (`host_key.pub`), if any and well formed.
pub fn read_pin(vm_dir: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(vm_dir.join(files::HOST_KEY)).ok()?;
    let mut text = String::new();
    f.take(8 << 10).read_to_string(&mut text).ok()?;
    banger_guest::keys::host_key_line(&text)
}

/// Every VM's pin, by name.
pub fn pins(app: &App) -> Vec<Pin> {
    let mut vms = app.db(|s| s.list_vms()).unwrap_or_default();
    vms.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    vms.iter()
        .map(|r| Pin {
            name: r.name.to_string(),
            ip: r.ip,
            port: crate::vm::userspace::running_ssh_port(app, r),
            key: read_pin(&app.layout.vm_dir(&r.id)),
        })
        .collect()
}

/// Rewrite both files from the database. Failures are logged: they cost `ssh
/// NAME.vm`, not the operation that changed the VM.
pub fn refresh(app: &App) {
    let _guard = app.ssh_files.lock().unwrap_or_else(|p| p.into_inner());
    let pins = pins(app);
    let (kh, cfg) = (app.layout.known_hosts(), app.layout.ssh_config());
    let write = |path: &Path, text: &str| {
        if let Err(e) = banger_image::durable::write_file(path, text.as_bytes()) {
            tracing::warn!(path = %path.display(), "writing the ssh file failed: {e}");
        }
    };
    if let Some(dir) = kh.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    write(&kh, &render_known_hosts(&pins));
    match render_config(&pins, &app.layout.ssh_key(), &kh) {
        Some(text) => write(&cfg, &text),
        None => tracing::warn!(
            "banger's state directory cannot be named in an ssh_config file (a double quote \
             or control character in its path); ssh NAME.vm needs BANGER_HOME elsewhere"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins() -> Vec<Pin> {
        vec![
            Pin {
                name: "dev".into(),
                ip: Ipv4Addr::new(172, 30, 0, 2),
                port: None,
                key: Some("ssh-ed25519 AAAAdev".into()),
            },
            Pin {
                name: "nokey".into(),
                ip: Ipv4Addr::new(172, 30, 0, 3),
                port: None,
                key: None,
            },
            Pin {
                name: "rootless".into(),
                ip: Ipv4Addr::new(172, 30, 0, 4),
                port: Some(41022),
                key: None,
            },
        ]
    }

    #[test]
    fn known_hosts_pins_name_and_address() {
        let kh = render_known_hosts(&pins());
        let lines: Vec<&str> = kh.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["dev.vm,172.30.0.2 ssh-ed25519 AAAAdev"]);
    }

    #[test]
    fn config_names_every_vm_and_is_strict() {
        let c = render_config(
            &pins(),
            Path::new("/home/a b/.local/state/banger/ssh/id_ed25519"),
            Path::new("/x/100%/known_hosts"),
        )
        .unwrap();
        assert!(c.contains("Host dev.vm\n  HostName 172.30.0.2\n  HostKeyAlias dev.vm\n"));
        assert!(c.contains("Host nokey.vm\n  HostName 172.30.0.3\n"));
        assert!(c.contains("Host rootless.vm\n  HostName 127.0.0.1\n  Port 41022\n"));
        assert!(c.contains("IdentityFile \"/home/a b/.local/state/banger/ssh/id_ed25519\""));
        assert!(c.contains("UserKnownHostsFile \"/x/100%%/known_hosts\""));
        assert!(c.contains("StrictHostKeyChecking yes"));
        // The per-VM blocks come before `Host *.vm` (ssh takes the first value).
        assert!(c.find("Host dev.vm").unwrap() < c.find("Host *.vm").unwrap());
        assert!(render_config(&pins(), Path::new("/a\"b"), Path::new("/k")).is_none());
    }

    #[test]
    fn refresh_writes_both_files_from_the_database() {
        let (_d, app, _w) = crate::vm::tests::fakes::app_with(|_| {});
        refresh(&app);
        let cfg = std::fs::read_to_string(app.layout.ssh_config()).unwrap();
        assert!(cfg.contains("Host *.vm"), "{cfg}");
        assert!(!cfg.contains("Host dev.vm"));
    }
}
