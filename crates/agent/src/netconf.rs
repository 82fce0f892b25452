//! eth0 configuration with the classic socket ioctls. The kernel's `ip=` autoconfig is
//! compiled out of Debian's cloud kernel, and a netlink client would triple the size
//! of the initrd binary for three operations; the network namespace survives
//! switch_root, so what we set here is what systemd finds.

use std::io;
use std::net::Ipv4Addr;

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;
const SIOCADDRT: libc::c_ulong = 0x890b;
const SIOCSIFHWADDR: libc::c_ulong = 0x8924;
const SIOCSIFMTU: libc::c_ulong = 0x8922;
const RTF_UP: libc::c_ushort = 0x1;
const RTF_GATEWAY: libc::c_ushort = 0x2;

/// `struct rtentry` from <net/route.h> (glibc layout; libc does not export it for gnu).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; this is the
    // documented way to pass an IPv4 address through the generic sockaddr.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

struct Sock(libc::c_int);

impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

impl Sock {
    fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Sock(fd))
    }

    fn ioctl<T>(&self, req: libc::c_ulong, arg: &mut T, what: &str) -> io::Result<()> {
        // SAFETY: `arg` is a properly laid out struct for `req`, valid for the call.
        let rc = unsafe { libc::ioctl(self.0, req as _, arg as *mut T) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        Ok(())
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    r
}

fn set_up(s: &Sock, dev: &str) -> io::Result<()> {
    let mut r = ifreq(dev);
    s.ioctl(SIOCGIFFLAGS, &mut r, &format!("get flags of {dev}"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    s.ioctl(SIOCSIFFLAGS, &mut r, &format!("bring {dev} up"))
}

fn set_down(s: &Sock, dev: &str) -> io::Result<()> {
    let mut r = ifreq(dev);
    s.ioctl(SIOCGIFFLAGS, &mut r, &format!("get flags of {dev}"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short) };
    s.ioctl(SIOCSIFFLAGS, &mut r, &format!("bring {dev} down"))
}

/// A restored guest's `dev` gets a new MAC and address: down (which drops its
/// routes), MAC (virtio-net passes it to the VMM, which then delivers frames for it),
/// then [`configure`] as at boot.
pub fn reconfigure(
    dev: &str,
    mac: [u8; 6],
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> io::Result<()> {
    let s = Sock::new()?;
    set_down(&s, dev)?;
    let mut r = ifreq(dev);
    // SAFETY: sockaddr is plain old data; all-zero is a valid value.
    let mut hw: libc::sockaddr = unsafe { std::mem::zeroed() };
    hw.sa_family = libc::ARPHRD_ETHER;
    for (d, b) in hw.sa_data.iter_mut().zip(mac) {
        *d = b as libc::c_char;
    }
    r.ifr_ifru.ifru_hwaddr = hw;
    s.ioctl(SIOCSIFHWADDR, &mut r, &format!("set the MAC of {dev}"))?;
    configure(dev, ip, prefix, gateway)
}

/// Set `dev`'s MTU.
pub fn set_mtu(dev: &str, mtu: u32) -> io::Result<()> {
    let s = Sock::new()?;
    let mut r = ifreq(dev);
    r.ifr_ifru.ifru_mtu = i32::try_from(mtu).map_err(|_| io::Error::other("MTU out of range"))?;
    s.ioctl(
        SIOCSIFMTU,
        &mut r,
        &format!("set the MTU of {dev} to {mtu}"),
    )
}

/// Bring up `lo` (the agent as init has nobody else to do it).
pub fn loopback_up() -> io::Result<()> {
    set_up(&Sock::new()?, "lo")
}

/// Bring up `lo`; give `dev` its address and bring it up; add the default route.
pub fn configure(dev: &str, ip: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>) -> io::Result<()> {
    let s = Sock::new()?;
    set_up(&s, "lo")?;
    let mut r = ifreq(dev);
    r.ifr_ifru.ifru_addr = sockaddr(ip);
    s.ioctl(SIOCSIFADDR, &mut r, &format!("set address {ip} on {dev}"))?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    let mut r = ifreq(dev);
    r.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    s.ioctl(
        SIOCSIFNETMASK,
        &mut r,
        &format!("set netmask /{prefix} on {dev}"),
    )?;
    set_up(&s, dev)?;
    if let Some(gw) = gateway {
        let mut devname = std::ffi::CString::new(dev)
            .map_err(|_| io::Error::other("device name contains NUL"))?
            .into_bytes_with_nul();
        let mut rt = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr(gw),
            rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
            rt_flags: RTF_UP | RTF_GATEWAY,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: devname.as_mut_ptr() as *mut libc::c_char,
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        s.ioctl(SIOCADDRT, &mut rt, &format!("add default route via {gw}"))?;
    }
    Ok(())
}
