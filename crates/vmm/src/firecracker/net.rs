//! `PUT /network-interfaces/{iface_id}`: the guest's virtio-net device on a host tap.

use serde::{Deserialize, Serialize};

/// Body of `PUT /network-interfaces/{iface_id}` (`NetworkInterface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Interface id; must equal the `{iface_id}` in the request path.
    pub iface_id: String,
    /// Host tap device name (already created and attached to the bridge).
    pub host_dev_name: String,
    /// Guest MAC address (`06:…`); omitted = Firecracker picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}
