//! Persistent taps, one per VM, created through `/dev/net/tun` ioctls.
//!
//! Why ioctls and not netlink: the tun driver only takes its owner and persistence
//! through TUNSETOWNER/TUNSETPERSIST, and creating the tap the way a VMM later opens
//! it (TUNSETIFF) guarantees the flags are compatible.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use rtnetlink::packet_route::link::InfoKind;

use crate::netlink::{connect, find_link, kind, set_up};
use crate::{delete_link, validate_ifname, NetError};

const TUN_MAGIC: u8 = b'T';
const TUNSETIFF: u8 = 202;
const TUNSETPERSIST: u8 = 203;
const TUNSETOWNER: u8 = 204;

/// Flags banger (and QEMU) uses: an Ethernet tap without the packet-info prefix and
/// with virtio-net headers. The kernel resets these per open, so QEMU's own
/// TUNSETIFF (which probes vnet_hdr itself) always succeeds on our persistent tap as
/// long as neither side asks for IFF_MULTI_QUEUE.
const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// Create (or take over) the persistent tap `name`, owned by `owner_uid` when given,
/// enslave it to `bridge` and set it up.
///
/// `owner_uid` lets a VMM running as that user open the tap without CAP_NET_ADMIN.
/// A leftover tap of the same name (e.g. after a daemon crash) is reused: it is
/// re-owned and re-enslaved. A tap held open by a running VMM is refused as busy.
pub async fn create_tap(name: &str, bridge: &str, owner_uid: Option<u32>) -> Result<(), NetError> {
    validate_ifname(name)?;
    validate_ifname(bridge)?;
    let handle = connect()?;
    let br = match find_link(&handle, bridge).await? {
        Some(msg) if kind(&msg) == Some(&InfoKind::Bridge) => msg.header.index,
        Some(_) => {
            return Err(NetError::WrongKind {
                name: bridge.to_string(),
                want: "bridge",
            })
        }
        None => return Err(NetError::Missing(bridge.to_string())),
    };
    let existed = match find_link(&handle, name).await? {
        Some(msg) if kind(&msg) == Some(&InfoKind::Tun) => true,
        Some(_) => {
            return Err(NetError::WrongKind {
                name: name.to_string(),
                want: "tap",
            })
        }
        None => false,
    };
    make_persistent(name, owner_uid)?;
    let result = match find_link(&handle, name).await? {
        Some(msg) => set_up(&handle, name, msg.header.index, Some(br)).await,
        None => Err(NetError::Missing(name.to_string())),
    };
    if result.is_err() && !existed {
        // Don't leave a half-configured tap behind that we created ourselves.
        if let Err(e) = delete_link(name).await {
            tracing::warn!(tap = name, error = %e, "could not remove half-created tap");
        }
    }
    result
}

/// Attach to the existing tap `name` exactly as QEMU's `-netdev tap,ifname=` does
/// (TUNSETIFF with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR), returning the queue's fd.
///
/// Useful to hand an already-open tap to an unprivileged VMM (`-netdev tap,fd=N`),
/// and to check that a tap is usable. Fails with [`NetError::TapBusy`] while another
/// process holds it.
pub fn open_tap(name: &str) -> Result<OwnedFd, NetError> {
    validate_ifname(name)?;
    let file = tun_attach(name)?;
    Ok(OwnedFd::from(file))
}

/// Open /dev/net/tun and TUNSETIFF to `name` (creating a tap if it doesn't exist).
///
/// Runs on the calling thread on purpose: the tap is created in the network
/// namespace of the thread that opens /dev/net/tun.
fn tun_attach(name: &str) -> Result<File, NetError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(NetError::TunOpen)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // validate_ifname guarantees name.len() <= 15, so ifr_name stays NUL-terminated.
    req.ifr_ifru.ifru_flags = TAP_FLAGS as libc::c_short;
    let code = nix::request_code_write!(TUN_MAGIC, TUNSETIFF, std::mem::size_of::<libc::c_int>());
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is, for the
    // duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), code, &mut req as *mut libc::ifreq) };
    match Errno::result(rc) {
        Ok(_) => Ok(file),
        Err(Errno::EBUSY) => Err(NetError::TapBusy(name.to_string())),
        Err(source) => Err(NetError::TunIoctl {
            what: "TUNSETIFF",
            name: name.to_string(),
            source,
        }),
    }
}

/// Create the tap if missing, set its owner, and make it outlive this fd.
fn make_persistent(name: &str, owner_uid: Option<u32>) -> Result<(), NetError> {
    let file = tun_attach(name)?;
    let fd = file.as_raw_fd();
    let ioctl_arg = |what, nr, arg: libc::c_ulong| {
        let code = nix::request_code_write!(TUN_MAGIC, nr, std::mem::size_of::<libc::c_int>());
        // SAFETY: TUNSETOWNER and TUNSETPERSIST take their argument by value and
        // touch no user memory.
        let rc = unsafe { libc::ioctl(fd, code, arg) };
        Errno::result(rc)
            .map(drop)
            .map_err(|source| NetError::TunIoctl {
                what,
                name: name.to_string(),
                source,
            })
    };
    if let Some(uid) = owner_uid {
        ioctl_arg("TUNSETOWNER", TUNSETOWNER, libc::c_ulong::from(uid))?;
    }
    ioctl_arg("TUNSETPERSIST", TUNSETPERSIST, 1)?;
    drop(file);
    Ok(())
}
