//! The error of every link, bridge and tap operation.

/// Why a link, bridge or tap operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The interface name cannot be used (length, characters).
    #[error("interface name {name:?} is invalid: {reason}; pick a name of 1-15 characters from [A-Za-z0-9_.-]")]
    InvalidName {
        /// The refused name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The prefix length is not a valid IPv4 prefix.
    #[error("prefix /{0} is not a valid IPv4 prefix; use a value between 1 and 30 (banger's default is /24)")]
    BadPrefix(u8),
    /// The function was called outside a tokio runtime, so the netlink connection
    /// cannot be driven.
    #[error("banger-host needs a tokio runtime to talk netlink; call it from inside one")]
    NoRuntime,
    /// The netlink socket could not be opened.
    #[error("could not open a netlink socket: {0}; banger needs CAP_NET_ADMIN (run as root or through the helper)")]
    Connect(#[source] std::io::Error),
    /// A netlink request was refused by the kernel or failed in transit.
    #[error("netlink request to {what} {name:?} failed: {source}; check permissions (CAP_NET_ADMIN) and `ip link show`")]
    Netlink {
        /// What was being done, e.g. "create bridge".
        what: &'static str,
        /// The link concerned.
        name: String,
        /// The underlying netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link the operation depends on does not exist.
    #[error("link {0:?} does not exist; create the bridge first (ensure_bridge) or check the configured name")]
    Missing(String),
    /// A link with the requested name exists but is of a different kind.
    #[error("link {name:?} already exists but is not a {want}; remove it (ip link del {name}) or configure another name")]
    WrongKind {
        /// The link name.
        name: String,
        /// The kind banger wanted there, e.g. "bridge".
        want: &'static str,
    },
    /// `/dev/net/tun` could not be opened.
    #[error(
        "could not open /dev/net/tun: {0}; load the tun module (modprobe tun) and run as root"
    )]
    TunOpen(#[source] std::io::Error),
    /// A tun ioctl on the tap failed.
    #[error("tun ioctl {what} on tap {name:?} failed: {source}")]
    TunIoctl {
        /// Which ioctl, e.g. "TUNSETIFF".
        what: &'static str,
        /// The tap concerned.
        name: String,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },
    /// The tap exists and is held open by a process (a running VMM).
    #[error("tap {0:?} is in use by another process (a VM still running?); stop that VM or delete the tap")]
    TapBusy(String),
    /// A link of banger's bridge name exists but banger did not make it.
    #[error("link {0:?} is not banger's bridge (not a bridge, or not banger's MAC 06:ba:<gateway>); banger leaves it alone: remove it yourself if it is stale (ip link del {0})")]
    NotBangers(String),
    /// The bridge still has ports.
    #[error(
        "bridge {name:?} still has ports ({ports}); stop the VMs using it first (banger vm list)"
    )]
    InUse {
        /// The bridge.
        name: String,
        /// Its ports.
        ports: String,
    },
}
