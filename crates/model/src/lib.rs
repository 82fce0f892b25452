//! Plain data shared by every banger crate.
//!
//! Nothing here does I/O except [`Layout::from_env`], which only reads environment
//! variables: the model must stay cheap to depend on (the CLI links it too).

pub mod layout;
pub mod name;
pub mod net;
pub mod port;
pub mod record;
pub mod size;
pub mod version;

pub use layout::Layout;
pub use name::{NameError, VmName};
pub use net::{guest_mac, GuestNet, NetError, Subnet};
pub use port::{PortError, PortForward};
pub use record::{
    ImageRecord, InitMode, KernelRecord, RunConfig, VmRecord, VmState, VmmChoice, WorkspaceRecord,
};
pub use size::{check_resources, format_bytes, format_mib, parse_size_mib, LimitError, SizeError};

/// The image `vm run` and `vm create` use when none is named.
pub const DEFAULT_IMAGE: &str = "debian-bookworm";
