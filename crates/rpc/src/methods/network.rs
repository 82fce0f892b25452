//! Methods about banger's host networking: the bridge, DNS, isolation and the ssh
//! files, and each VM's pinned ssh host key.

use super::{method, NoParams};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

method!(
    /// `network.show`: the bridge, the DNS listeners and upstreams, isolation.
    NetworkShow = "network.show", NoParams => NetworkInfo
);
method!(
    /// `network.down`: remove the bridge, banger's nftables tables and the
    /// systemd-resolved settings (refused while a VM runs).
    NetworkDown = "network.down", NoParams => NetworkDownResult
);
method!(
    /// `ssh.config`: rewrite the ssh files from the VM list and say where they are.
    SshConfig = "ssh.config", NoParams => SshConfigInfo
);
method!(
    /// `vm.host_key`: a VM's pinned ssh host key and the one its agent reports;
    /// with `accept`, pin the reported one.
    VmHostKey = "vm.host_key", VmHostKeyParams => VmHostKeyInfo
);

/// What `network.show` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The bridge's name.
    pub bridge: String,
    /// The guest subnet (`172.30.0.0/24`).
    pub subnet: String,
    /// The host's address on the bridge.
    pub gateway: String,
    /// Whether the bridge exists now.
    pub bridge_up: bool,
    /// The host's `.vm` listener: its address, `off`, or `failed: why`.
    pub dns_host: String,
    /// The guests' listener (gateway, port 53): its address, `off`, or `failed: why`.
    pub dns_guests: String,
    /// Where guests' other names are forwarded.
    pub upstreams: Vec<String>,
    /// Names served now (`dev.vm`).
    pub names: Vec<String>,
    /// Whether guest isolation is on.
    pub isolation: bool,
    /// Host TCP ports guests may reach.
    pub guest_host_ports: Vec<u16>,
    /// Whether outbound NAT is on.
    pub nat: bool,
    /// banger's ssh_config file (for `Include`).
    pub ssh_config: PathBuf,
    /// banger's known_hosts file.
    pub known_hosts: PathBuf,
}

/// What `network.down` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDownResult {
    /// One line per thing removed (or found absent).
    pub removed: Vec<String>,
}

/// Where the ssh files are, and the config's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshConfigInfo {
    /// The ssh_config file to `Include`.
    pub config_path: PathBuf,
    /// The known_hosts file it names.
    pub known_hosts_path: PathBuf,
    /// The config's text as written.
    pub config: String,
}

/// Params of `vm.host_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmHostKeyParams {
    /// The VM's name.
    pub name: String,
    /// Pin the key the guest's agent reports (the VM must be running).
    #[serde(default)]
    pub accept: bool,
}

/// A VM's host keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmHostKeyInfo {
    /// VM name.
    pub name: String,
    /// The name ssh knows it by (`dev.vm`).
    pub alias: String,
    /// The pinned key (`ssh-ed25519 AAAA…`), if any.
    pub pinned: Option<String>,
    /// The key the guest's agent reports now (running VMs only).
    pub guest: Option<String>,
    /// Why the guest's key could not be read, when it could not.
    pub guest_error: Option<String>,
    /// Whether `accept` pinned the guest's key in this call.
    pub accepted: bool,
    /// The known_hosts file holding the pins.
    pub known_hosts_path: PathBuf,
}
