//! A guest restored from a warm snapshot becomes a machine of its own.
//!
//! Every restored copy starts as the snapshot's template: same hostname, address,
//! MAC, machine-id, ssh host key, random pool and a wall clock stopped at the moment
//! of the save. The host sends [`Identity`] right after the restore, before any user
//! command, and this applies it in an order where each step can rely on the ones
//! before: the clock (so every file written after has a true time), the random pool
//! (so every key made after is unpredictable), then names, network and keys.
//!
//! What cannot be changed from inside is documented in docs/warm.md: the kernel's own
//! boot id (what userspace reads is replaced by a bind mount), and the kernel command
//! line in `/proc/cmdline` (still the template's).

use crate::{netconf, sys};
use banger_channel::{Done, ErrorKind, ErrorReply, Identity};
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

/// Where the replacement boot id lives (a tmpfs file bind-mounted over procfs's).
const BOOT_ID_FILE: &str = "/run/banger-boot-id";
/// The procfs file userspace reads its boot id from.
const PROC_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// Most entropy bytes accepted (the kernel caps one RNDADDENTROPY at a page).
const MAX_ENTROPY: usize = 512;

/// Apply `id`; the first failure names what failed.
pub fn apply(id: &Identity) -> Result<Done, ErrorReply> {
    let fail = |what: &str, e: io::Error| {
        ErrorReply::new(
            ErrorKind::Failed,
            format!("the restored guest could not take its new identity: {what}: {e}"),
        )
    };
    let v = Checked::from(id).map_err(|m| ErrorReply::new(ErrorKind::Invalid, m))?;
    let t0 = std::time::Instant::now();
    let mut marks: Vec<(&str, u128)> = vec![];
    let mut mark = |what: &'static str| marks.push((what, t0.elapsed().as_micros()));
    set_clock(id.time_ns).map_err(|e| fail("setting the clock", e))?;
    mark("clock");
    reseed(&v.entropy).map_err(|e| fail("reseeding the random pool", e))?;
    mark("entropy");
    sys::set_hostname(&id.hostname).map_err(|e| fail("setting the hostname", e))?;
    mark("sethostname");
    write_file(
        Path::new("/etc/hostname"),
        &format!("{}\n", id.hostname),
        0o644,
    )
    .map_err(|e| fail("writing /etc/hostname", e))?;
    mark("hostname");
    write_file(
        Path::new("/etc/machine-id"),
        &format!("{}\n", id.machine_id),
        0o444,
    )
    .map_err(|e| fail("writing /etc/machine-id", e))?;
    mark("machine-id");
    replace_boot_id(&id.boot_id).map_err(|e| fail("replacing the boot id", e))?;
    mark("boot-id");
    netconf::reconfigure("eth0", v.mac, v.ip, v.prefix, v.gateway)
        .map_err(|e| fail("reconfiguring eth0", e))?;
    mark("net");
    if !id.dns.is_empty() {
        let servers: Vec<std::net::IpAddr> = id.dns.iter().filter_map(|s| s.parse().ok()).collect();
        crate::init::write_resolv_conf(Path::new("/etc"), &servers)
            .map_err(|e| fail("writing /etc/resolv.conf", e))?;
    }
    if let Some(key) = &id.host_key {
        crate::sshd::replace_host_key(key, id.host_key_public.as_deref())
            .map_err(|e| fail("replacing the ssh host key", e))?;
    }
    mark("keys");
    let steps: Vec<String> = marks.iter().map(|(w, us)| format!("{w} {us} us")).collect();
    crate::init::log(&format!(
        "took the identity of {} ({})",
        id.hostname,
        steps.join(", ")
    ));
    Ok(Done::default())
}

/// The parts of an [`Identity`] that need parsing, parsed and bounded.
struct Checked {
    mac: [u8; 6],
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    entropy: Vec<u8>,
}

impl Checked {
    fn from(id: &Identity) -> Result<Self, String> {
        let host_ok = !id.hostname.is_empty()
            && id.hostname.len() <= 63
            && id
                .hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !host_ok {
            return Err(format!("invalid hostname {:?}", id.hostname));
        }
        let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex32(&id.machine_id) {
            return Err("the machine-id must be 32 hex digits".into());
        }
        if !hex32(&id.boot_id.replace('-', "")) || id.boot_id.len() != 36 {
            return Err("the boot id must be a UUID".into());
        }
        let mac = parse_mac(&id.mac).ok_or_else(|| format!("invalid MAC {:?}", id.mac))?;
        let (ip, prefix) = id
            .address
            .split_once('/')
            .and_then(|(a, p)| Some((a.parse().ok()?, p.parse::<u8>().ok()?)))
            .filter(|(_, p)| *p <= 32)
            .ok_or_else(|| format!("invalid address {:?}", id.address))?;
        let gateway = match &id.gateway {
            Some(g) => Some(g.parse().map_err(|_| format!("invalid gateway {g:?}"))?),
            None => None,
        };
        if id.entropy.len() > 2 * MAX_ENTROPY || !id.entropy.len().is_multiple_of(2) {
            return Err(format!(
                "entropy must be at most {MAX_ENTROPY} bytes of hex"
            ));
        }
        let entropy = (0..id.entropy.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&id.entropy[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| "entropy is not hex".to_string())?;
        Ok(Self {
            mac,
            ip,
            prefix,
            gateway,
            entropy,
        })
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    // A unicast address only (the multicast bit clear).
    (parts.next().is_none() && out[0] & 1 == 0).then_some(out)
}

/// Step the wall clock to the host's time.
fn set_clock(ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec for clock_settime(2).
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `RNDADDENTROPY` (credit the host's bytes) then `RNDRESEEDCRNG` (the CRNG rekeys at
/// once instead of at its next scheduled reseed), as Firecracker's
/// random-for-clones.md prescribes.
fn reseed(entropy: &[u8]) -> io::Result<()> {
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    if !entropy.is_empty() {
        // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
        let mut buf = Vec::with_capacity(8 + entropy.len());
        let bits = i32::try_from(entropy.len() * 8).unwrap_or(i32::MAX);
        let size = i32::try_from(entropy.len()).unwrap_or(i32::MAX);
        buf.extend_from_slice(&bits.to_ne_bytes());
        buf.extend_from_slice(&size.to_ne_bytes());
        buf.extend_from_slice(entropy);
        // Padding to a whole u32 for the flexible array.
        buf.resize(buf.len().div_ceil(4) * 4, 0);
        // SAFETY: `buf` holds a rand_pool_info whose buf_size matches its data.
        if unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY as _, buf.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG as _) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Userspace's boot id becomes `id`: the kernel's is fixed once read, so a file on
/// /run is bind-mounted over procfs's (a second restore of the same guest, which
/// never happens, would stack mounts harmlessly).
fn replace_boot_id(id: &str) -> io::Result<()> {
    write_file(Path::new(BOOT_ID_FILE), &format!("{id}\n"), 0o444)?;
    sys::mount(
        BOOT_ID_FILE,
        Path::new(PROC_BOOT_ID),
        "",
        libc::MS_BIND,
        None,
    )
}

/// Replace `path` by a rename, never writing through a symlink there.
pub fn write_file(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.banger"));
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            hostname: "dev".into(),
            mac: "06:00:ac:1e:00:05".into(),
            address: "172.30.0.5/24".into(),
            gateway: Some("172.30.0.1".into()),
            dns: vec![],
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            boot_id: "01234567-89ab-cdef-0123-456789abcdef".into(),
            entropy: "00ff".repeat(16),
            time_ns: 1,
            host_key: None,
            host_key_public: None,
        }
    }

    #[test]
    fn a_good_identity_parses() {
        let c = Checked::from(&id()).unwrap();
        assert_eq!(c.mac, [6, 0, 0xac, 0x1e, 0, 5]);
        assert_eq!(c.prefix, 24);
        assert_eq!(c.entropy.len(), 32);
    }

    #[test]
    fn hostile_fields_are_refused() {
        type Change = Box<dyn Fn(&mut Identity)>;
        let bad: Vec<Change> = vec![
            Box::new(|i| i.hostname = "a/b".into()),
            Box::new(|i| i.hostname = String::new()),
            Box::new(|i| i.mac = "07:00:00:00:00:01".into()),
            Box::new(|i| i.mac = "06:00:00:00:00".into()),
            Box::new(|i| i.address = "172.30.0.5/33".into()),
            Box::new(|i| i.address = "x/24".into()),
            Box::new(|i| i.machine_id = "../etc".into()),
            Box::new(|i| i.boot_id = "0123".into()),
            Box::new(|i| i.entropy = "0".repeat(2 * MAX_ENTROPY + 2)),
            Box::new(|i| i.entropy = "zz".into()),
        ];
        for f in bad {
            let mut i = id();
            f(&mut i);
            assert!(Checked::from(&i).is_err(), "{i:?}");
        }
    }
}
