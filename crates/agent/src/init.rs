//! PID 1 of banger's initrd.
//!
//! The guest's early boot belongs to banger rather than to Debian's 15 MB
//! initramfs: load the handful of virtio modules, find the three disks by their ext4
//! labels (device order is not stable across VMMs), stack the per-VM overlay disk on
//! the shared read-only base, mount the work disk at /root, configure eth0 and the
//! hostname from `banger.*` parameters, then switch into the new root and either exec
//! its init (systemd) or stay the init itself ([`crate::pid1`]): `banger.init=agent`
//! picks the agent, `banger.init=systemd` the image's `/sbin/init`; without the
//! parameter the image's `/sbin/init` runs if it has one, the agent otherwise (an image
//! without systemd still boots).
//!
//! With `banger.mode=export` it instead tars the VM's merged disks onto an export
//! disk and powers off ([`crate::export`]).
//!
//! Every failure is printed on the console (which banger keeps as the VM's log) and
//! the machine powers off, so the host sees the VMM exit instead of a silent hang.

use crate::{cmdline, netconf, sys};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// ext4 labels of banger's disks (the host–guest contract).
pub use banger_contract::disk::{LABEL_OVERLAY, LABEL_ROOT, LABEL_WORK};

/// Seconds since boot, from the clock (not /proc: the agent as init logs after
/// leaving the VM's root at power-off, where no /proc is mounted).
fn uptime() -> String {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return String::new();
    }
    format!("{}.{:02}", ts.tv_sec, ts.tv_nsec / 10_000_000)
}

/// The first line (`banger_contract::console::INIT_STARTED` once prefixed).
const STARTED: &str = "started";

pub(crate) fn log(msg: &str) {
    println!("[{:>8}] {}", uptime(), line(msg));
}

/// A console line without its time stamp.
fn line(msg: &str) -> String {
    format!("banger-init: {msg}")
}

/// Run as PID 1; never returns (powers off when boot fails, after a probe or an export).
pub fn run() -> ! {
    match boot() {
        Ok(()) => {} // probe or export mode: done
        Err(e) => {
            log(&format!("boot failed: {e}"));
            log("powering off so the host sees the failure (the VM log above says why)");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    sys::power_off()
}

fn boot() -> std::io::Result<()> {
    for d in [
        "/dev",
        "/proc",
        "/sys",
        "/newroot",
        "/mnt/lower",
        "/mnt/upper",
    ] {
        std::fs::create_dir_all(d)?;
    }
    sys::mount(
        "devtmpfs",
        Path::new("/dev"),
        "devtmpfs",
        0,
        Some("mode=0755"),
    )?;
    attach_console();
    sys::mount("proc", Path::new("/proc"), "proc", 0, None)?;
    sys::mount("sysfs", Path::new("/sys"), "sysfs", 0, None)?;
    log(STARTED);

    let params = cmdline::parse(&std::fs::read_to_string("/proc/cmdline")?);
    if params.probe {
        // The accelerator probe only needs to know the kernel reached userspace.
        println!("{}", cmdline::PROBE_OK);
        return Ok(());
    }
    load_modules()?;
    match &params.mode {
        cmdline::Mode::Boot => {}
        cmdline::Mode::Export => return crate::export::run(),
        cmdline::Mode::Unknown(m) => {
            return Err(std::io::Error::other(format!(
                "unknown banger.mode={m} (this agent knows only `export`); the host and the initrd's agent are out of step: rebuild the initrd"
            )))
        }
    }

    let disks = find_disks(&[LABEL_ROOT, LABEL_OVERLAY], Duration::from_secs(10))?;
    let dev = |label: &str| -> std::io::Result<String> {
        disks
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, d)| d.display().to_string())
            .ok_or_else(|| std::io::Error::other(format!("no disk labelled {label} was attached")))
    };
    let ro = libc::MS_RDONLY;
    sys::mount(&dev(LABEL_ROOT)?, Path::new("/mnt/lower"), "ext4", ro, None)?;
    sys::mount(
        &dev(LABEL_OVERLAY)?,
        Path::new("/mnt/upper"),
        "ext4",
        0,
        None,
    )?;
    // The upper directory may already exist on a new overlay: the host put the
    // VM's ssh host key there.
    use banger_contract::disk::{OVERLAY_UPPER, OVERLAY_WORK};
    let (upper, work) = (
        format!("/mnt/upper/{OVERLAY_UPPER}"),
        format!("/mnt/upper/{OVERLAY_WORK}"),
    );
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    sys::mount(
        "overlay",
        Path::new("/newroot"),
        "overlay",
        0,
        Some(&format!(
            "lowerdir=/mnt/lower,upperdir={upper},workdir={work}"
        )),
    )?;
    if let Ok(work) = dev(LABEL_WORK) {
        std::fs::create_dir_all("/newroot/root")?;
        sys::mount(&work, Path::new("/newroot/root"), "ext4", 0, None)?;
    }
    log("root filesystem ready (overlay over the read-only base)");

    if let Some(h) = &params.hostname {
        sys::set_hostname(h)?;
        std::fs::write("/newroot/etc/hostname", format!("{h}\n"))?;
        std::fs::write(
            "/newroot/etc/hosts",
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{h}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            ),
        )?;
    }
    if !params.dns.is_empty() {
        // In both init modes, before the switch: systemd's units and the agent's
        // execs alike find the host's responder from their first lookup.
        match write_resolv_conf(Path::new("/newroot/etc"), &params.dns) {
            Ok(()) => log("resolv.conf names the host's DNS responder"),
            Err(e) => log(&format!("cannot write /etc/resolv.conf: {e}")),
        }
    }
    if let Some((ip, prefix)) = params.ip {
        wait_for(Path::new("/sys/class/net/eth0"), Duration::from_secs(5))?;
        netconf::configure("eth0", ip, prefix, params.gateway)?;
        log(&format!("eth0 is {ip}/{prefix}"));
        if let Some(mtu) = params.mtu {
            // Not fatal: the default MTU works, only slower.
            match netconf::set_mtu("eth0", mtu) {
                Ok(()) => log(&format!("eth0's MTU is {mtu}")),
                Err(e) => log(&format!("{e}")),
            }
        }
    }

    for d in ["dev", "proc", "sys"] {
        sys::mount_move(&Path::new("/").join(d), &Path::new("/newroot").join(d))?;
    }
    // Kept to reach the overlay's disks again if the agent stays the init.
    let initrd_root = sys::open_dir_handle(Path::new("/"))?;
    std::env::set_current_dir("/newroot")?;
    sys::mount_move(Path::new("."), Path::new("/"))?;
    sys::chroot_here()?;
    match choose_init(&params.init) {
        Ok(init) => {
            drop(initrd_root);
            log(&format!("handing over to {init}"));
            Err(sys::exec(&init, &[&init]))
        }
        Err(why) => {
            log(&why);
            crate::pid1::run(&params, initrd_root)
        }
    }
}

/// `<etc>/resolv.conf` naming `servers`, replaced by a rename: a symlink there (to
/// systemd-resolved's stub file, which nothing in a banger guest serves) is replaced
/// by the file, never written through.
pub(crate) fn write_resolv_conf(etc: &Path, servers: &[std::net::IpAddr]) -> std::io::Result<()> {
    let mut text = String::from("# written by banger's init from banger.dns\n");
    for s in servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    let tmp = etc.join(".resolv.conf.banger");
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    std::fs::rename(&tmp, etc.join("resolv.conf"))
}

/// The program to hand over to, or why the agent stays the init (`Err`).
fn choose_init(init: &cmdline::Init) -> Result<String, String> {
    use cmdline::Init;
    const SYSTEM_INIT: &str = "/sbin/init";
    let has_init = Path::new(SYSTEM_INIT).exists();
    match init {
        Init::Agent => Err("banger.init=agent: the agent stays the init".into()),
        Init::Systemd => Ok(SYSTEM_INIT.into()),
        Init::Path(p) => Ok(p.clone()),
        Init::Default | Init::Unknown(_) => {
            if let Init::Unknown(v) = init {
                log(&format!(
                    "unknown banger.init={v} (this agent knows agent, systemd or a path); using the default"
                ));
            }
            if has_init {
                Ok(SYSTEM_INIT.into())
            } else {
                Err(format!(
                    "the image has no {SYSTEM_INIT}: the agent stays the init"
                ))
            }
        }
    }
}

/// The kernel gives PID 1 a console only if the initrd has /dev/console; ours gets
/// it from devtmpfs instead, so reopen stdio once /dev is mounted.
fn attach_console() {
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `f` stays open during the call.
            unsafe { libc::dup2(f.as_raw_fd(), fd) };
        }
    }
}

fn load_modules() -> std::io::Result<()> {
    let list =
        match std::fs::read_to_string(Path::new("/").join(banger_contract::initrd::MODULE_LIST)) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
    let t = Instant::now();
    let mut n = 0;
    for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        sys::load_module(
            &Path::new("/")
                .join(banger_contract::initrd::MODULE_DIR)
                .join(name),
        )?;
        n += 1;
    }
    log(&format!(
        "loaded {n} modules in {} ms",
        t.elapsed().as_millis()
    ));
    Ok(())
}

fn wait_for(p: &Path, timeout: Duration) -> std::io::Result<()> {
    let t = Instant::now();
    while !p.exists() {
        if t.elapsed() > timeout {
            return Err(std::io::Error::other(format!(
                "{} did not appear within {timeout:?}",
                p.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The virtio block devices present now (`/dev/vda`, ...), in name order.
pub(crate) fn block_devices() -> Vec<PathBuf> {
    let mut devs: Vec<PathBuf> = std::fs::read_dir("/sys/block")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|name| name.starts_with("vd"))
                .map(|name| PathBuf::from("/dev").join(name))
                .collect()
        })
        .unwrap_or_default();
    devs.sort();
    devs
}

/// Poll block devices until every label in `required` is found; return all labelled disks.
fn find_disks(required: &[&str], timeout: Duration) -> std::io::Result<Vec<(String, PathBuf)>> {
    let t = Instant::now();
    loop {
        let mut found = vec![];
        for dev in block_devices() {
            if let Ok(Some(label)) = ext4_label(&dev) {
                found.push((label, dev));
            }
        }
        if required.iter().all(|r| found.iter().any(|(l, _)| l == r)) {
            return Ok(found);
        }
        if t.elapsed() > timeout {
            let seen: Vec<String> = found
                .iter()
                .map(|(l, d)| format!("{}={l}", d.display()))
                .collect();
            return Err(std::io::Error::other(format!(
                "disks {required:?} not found within {timeout:?} (saw: {seen:?})"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Read the volume label of an ext2/3/4 filesystem, `None` if it is not one.
pub fn ext4_label(dev: &Path) -> std::io::Result<Option<String>> {
    let mut f = std::fs::File::open(dev)?;
    f.seek(SeekFrom::Start(1024))?;
    let mut sb = [0u8; 0x88];
    f.read_exact(&mut sb)?;
    Ok(label_from_superblock(&sb))
}

fn label_from_superblock(sb: &[u8]) -> Option<String> {
    if sb.len() < 0x88 || u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let raw = &sb[0x78..0x88];
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_one_the_host_waits_for() {
        assert_eq!(line(STARTED), banger_contract::console::INIT_STARTED);
    }

    #[test]
    fn reads_label_of_a_real_ext4_image() {
        let dir = std::env::temp_dir().join(format!("banger-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("x.ext4");
        let ok = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", LABEL_WORK])
            .arg(&img)
            .arg("8M")
            .status();
        match ok {
            Ok(s) if s.success() => {
                assert_eq!(ext4_label(&img).unwrap().as_deref(), Some(LABEL_WORK));
            }
            _ => eprintln!("skipping: mkfs.ext4 not available"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resolv_conf_replaces_a_symlink_without_following_it() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("stub");
        std::fs::write(&target, "nameserver 127.0.0.53\n").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("resolv.conf")).unwrap();
        let dns = ["172.30.0.1".parse().unwrap()];
        write_resolv_conf(d.path(), &dns).unwrap();
        let md = std::fs::symlink_metadata(d.path().join("resolv.conf")).unwrap();
        assert!(md.is_file());
        let text = std::fs::read_to_string(d.path().join("resolv.conf")).unwrap();
        assert!(text.ends_with("nameserver 172.30.0.1\n"), "{text}");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "nameserver 127.0.0.53\n"
        );
    }

    #[test]
    fn non_ext4_has_no_label() {
        assert_eq!(label_from_superblock(&[0u8; 0x88]), None);
    }
}
