//! End-to-end section for issue 11 (`privsep`): `banger system run --owner USER` in
//! a network namespace of its own (beside the suite's), the daemon as an unprivileged user the test
//! creates, the root helper as the only root service.
//!
//! - the owner imports the default image (kernel import, then `image register` of its
//!   root filesystem as a tar with hostile entries under /root: a setuid-root file, a
//!   device node and a file with a `security.capability` xattr): the warning names
//!   each, the work seed has none of them, and every directory of banger's state,
//!   cache and runtime is 0700;
//! - a VM boots and runs a command with its exit status; a kept VM reaches its
//!   gateway and resolves `<vm>.vm` through the guest DNS on the gateway's port 53
//!   (bound by the helper, served by the owner's daemon);
//! - the tap is the owner's, QEMU runs as the owner under `-sandbox on`, bangerd runs
//!   as the owner: among banger's processes only the helper (and `system run`, its
//!   supervisor) are root;
//! - `kill -9` of the daemon, then of the helper, with the VM running: `system run`
//!   ends (a supervisor restarts it), the restarted services re-adopt the VM, its tap
//!   is still there and it still answers.

use super::{log, run_ok, stderr, stdout, Env};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A file capability (`security.capability`, VFS_CAP_REVISION_2 with the effective
/// bit) granting CAP_NET_RAW.
const CAP_NET_RAW_XATTR: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // magic_etc: revision 2, effective
    0x00, 0x20, 0x00, 0x00, // permitted (low): bit 13, CAP_NET_RAW
    0x00, 0x00, 0x00, 0x00, // inheritable (low)
    0x00, 0x00, 0x00, 0x00, // permitted (high)
    0x00, 0x00, 0x00, 0x00, // inheritable (high)
];

/// The owner, the system layout and the running `system run`; removed on drop.
struct Sys {
    user: String,
    uid: u32,
    root: tempfile::TempDir,
    netns: String,
    run: Option<Child>,
}

impl Drop for Sys {
    fn drop(&mut self) {
        if let Some(mut c) = self.run.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(40) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let root = self.root.path().display().to_string();
        let _ = Command::new("pkill").args(["-9", "-f", &root]).status();
        let _ = Command::new("userdel").args(["-r", &self.user]).status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

impl Sys {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// The owner's banger CLI, in the namespace, on the system daemon's socket.
    fn banger(&self, args: &[&str]) -> Output {
        let mut c = Command::new("timeout");
        c.args(["900", "ip", "netns", "exec", &self.netns, "runuser", "-u"])
            .arg(&self.user)
            .args(["--", "env"])
            .arg(format!("XDG_STATE_HOME={}", self.path("var/lib").display()))
            .arg(format!(
                "XDG_CACHE_HOME={}",
                self.path("var/cache").display()
            ))
            .arg(format!("XDG_RUNTIME_DIR={}", self.path("run").display()))
            // Never a daemon of the CLI's own (it would have no helper).
            .arg("BANGER_DAEMON=/bin/false")
            .arg(super::banger_bin())
            .args(args)
            .env_remove("BANGER_HOME")
            .env_remove("XDG_RUNTIME_DIR");
        let out = c.output().unwrap();
        log(args, &out);
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.banger(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }
}

/// The uid of `pid`.
fn proc_uid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Every process: (pid, parent pid, command line with spaces).
fn processes() -> Vec<(u32, u32, String)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Field 4 (ppid) follows the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        out.push((pid, ppid, cmd));
    }
    out
}

/// Directories under `root` that group or others may enter (not below a work seed,
/// which is the image's /root and closed by the seed's own 0700).
fn open_dirs(root: &Path) -> Vec<String> {
    let mut bad = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        if !md.is_dir() {
            continue;
        }
        if md.mode() & 0o077 != 0 {
            bad.push(format!("{} ({:o})", d.display(), md.mode() & 0o7777));
        }
        if d.file_name().is_some_and(|n| n == "work-seed") {
            continue;
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    bad
}

/// Whether `path` carries the xattr `name` (not following symlinks).
fn has_xattr(path: &Path, name: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings; a null buffer of size 0 asks for the size.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    r >= 0
}

/// A tar of what must never reach the host from an image's /root: a setuid-root
/// file, a character device (/dev/null's numbers, world-writable) and a file with a
/// capability.
fn hostile_root_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let file = |path: &str, mode: u32, body: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(body.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        h
    };
    let body = b"#!/bin/sh\nid\n";
    b.append(&file("./root/suid-root", 0o4755, body), &body[..])
        .unwrap();
    let mut dev = tar::Header::new_ustar();
    dev.set_path("./root/devnull").unwrap();
    dev.set_entry_type(tar::EntryType::Char);
    dev.set_mode(0o666);
    dev.set_uid(0);
    dev.set_gid(0);
    dev.set_size(0);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    dev.set_mtime(1_700_000_000);
    dev.set_cksum();
    b.append(&dev, std::io::empty()).unwrap();
    b.append_pax_extensions([("SCHILY.xattr.security.capability", &CAP_NET_RAW_XATTR[..])])
        .unwrap();
    b.append(&file("./root/capfile", 0o755, body), &body[..])
        .unwrap();
    b.into_inner().unwrap()
}

/// Start `banger system run --owner USER` for a new user, in the namespace.
fn start(env: &Env) -> Sys {
    let user = format!("bgre2e{}", std::process::id() % 100_000);
    let root = tempfile::Builder::new()
        .prefix("banger-e2e-sys-")
        .tempdir_in("/var/tmp")
        .unwrap();
    // The owner walks through it to its state (the helper's config inside stays
    // root's and not writable by others, which the helper checks).
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.path().join("home");
    run_ok(
        Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-d"])
            .arg(&home)
            .arg(&user),
    );
    let uid: u32 = String::from_utf8(
        Command::new("id")
            .args(["-u", &user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    // A namespace of its own: the suite's helper (privsep mode) has the suite's.
    let netns = format!("{}-sys", env.netns);
    run_ok(Command::new("ip").args(["netns", "add", &netns]));
    run_ok(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]));
    let mut sys = Sys {
        user,
        uid,
        root,
        netns,
        run: None,
    };
    spawn_run(&mut sys);
    sys
}

/// (Re)start `banger system run` for `sys` and wait until its daemon answers.
fn spawn_run(sys: &mut Sys) {
    let agent = std::env::var("BANGER_AGENT").unwrap_or_else(|_| {
        super::banger_bin()
            .parent()
            .unwrap()
            .join("../lib/banger/banger-agent")
            .display()
            .to_string()
    });
    let child = Command::new("ip")
        .args(["netns", "exec", &sys.netns])
        .arg(super::banger_bin())
        .args(["system", "run", "--owner", &sys.user])
        .env("BANGER_SYSTEM_ROOT", sys.root.path())
        .env("BANGER_AGENT", agent)
        .env_remove("BANGER_HOME")
        .spawn()
        .unwrap();
    sys.run = Some(child);
    let sock = sys.path("run/banger/bangerd.sock");
    let t = Instant::now();
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the owner daemon never answered on {}",
            sock.display()
        );
        if let Some(Ok(Some(s))) = sys.run.as_mut().map(|c| c.try_wait()) {
            panic!("banger system run exited at start: {s}");
        }
        if sock.exists() && sys.banger(&["vm", "list", "--json"]).status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `kill -9` the child of `system run` whose command line contains `what`, wait for
/// `system run` to end (it stops the other service and fails), start it again, and
/// check the kept VM `dev` was re-adopted with its tap.
fn kill_and_readopt(sys: &mut Sys, what: &str, tap: &str) {
    let run_pid = sys.run.as_ref().unwrap().id();
    let victim = processes()
        .into_iter()
        .find(|(_, ppid, cmd)| *ppid == run_pid && cmd.contains(what))
        .map(|(pid, _, _)| pid)
        .unwrap_or_else(|| panic!("no {what} under system run"));
    // SAFETY: a plain kill of a pid we just found.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let mut child = sys.run.take().unwrap();
    let t = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "system run did not end after {what} was killed"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !status.success(),
        "system run fails when {what} dies: {status}"
    );
    let link = Command::new("ip")
        .args(["-n", &sys.netns, "link", "show", tap])
        .output()
        .unwrap();
    assert!(link.status.success(), "the tap survived {what}'s death");
    spawn_run(sys);
    let show: serde_json::Value =
        serde_json::from_str(&sys.ok(&["vm", "show", "dev", "--json"])).unwrap();
    assert_eq!(
        show["state"], "running",
        "re-adopted after {what} died: {show}"
    );
    assert_eq!(
        sys.ok(&["vm", "exec", "dev", "--", "echo", "still-here"]),
        "still-here\n"
    );
}

/// The owner imports the root env's default image, with hostile /root entries added
/// to its tar, as `debian-bookworm`.
fn import_hostile_default_image(env: &Env, sys: &Sys) {
    let img = env.default_image_dir();
    // Readable by the owner: the kernel and initrd are copied where it can read them.
    let work = sys.path("import");
    std::fs::create_dir_all(&work).unwrap();
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(img.join(f), work.join(f)).unwrap();
    }
    let tree = work.join("tree");
    env.dump_default_rootfs(&tree);
    let tar = work.join("rootfs.tar");
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "-C"])
            .arg(&tree)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    let _ = std::fs::remove_dir_all(&tree);
    let hostile = work.join("hostile.tar");
    std::fs::write(&hostile, hostile_root_tar()).unwrap();
    run_ok(Command::new("tar").arg("-Af").arg(&tar).arg(&hostile));
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&work));
    let k = sys.banger(&[
        "kernel",
        "import",
        work.join("vmlinuz").to_str().unwrap(),
        "--initrd",
        work.join("initrd.img").to_str().unwrap(),
        "--name",
        "debian-bookworm",
    ]);
    assert!(k.status.success(), "{}", stderr(&k));
    let r = sys.banger(&[
        "image",
        "register",
        "debian-bookworm",
        "--rootfs",
        tar.to_str().unwrap(),
        "--kernel",
        "debian-bookworm",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let _ = std::fs::remove_dir_all(&work);

    // The warning named each dropped thing.
    let said = format!("{}{}", stdout(&r), stderr(&r));
    for want in [
        "/root/suid-root: setuid bit",
        "/root/devnull: device node",
        "/root/capfile: extended attribute security.capability",
    ] {
        assert!(
            said.contains(want),
            "register did not warn about {want}: {said}"
        );
    }
    let state = sys.path("var/lib/banger");
    let seed = std::fs::read_dir(state.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("work-seed"))
        .find(|s| s.join("suid-root").exists())
        .expect("the registered image's work seed");
    let md = std::fs::metadata(seed.join("suid-root")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o755, "setuid bit kept");
    assert!(
        std::fs::symlink_metadata(seed.join("devnull")).is_err(),
        "the device node reached the host"
    );
    assert!(seed.join("capfile").exists());
    assert!(
        !has_xattr(&seed.join("capfile"), "security.capability"),
        "the file capability reached the host"
    );
    let md = std::fs::metadata(&seed).unwrap();
    assert_eq!(md.mode() & 0o777, 0o700, "the seed itself is private");
    assert_eq!(md.uid(), sys.uid, "the seed is the owner's");
}

/// The issue-11 section (see the module docs).
pub fn privsep(env: &Env) {
    // The system services get a namespace of their own (`start`): the suite's daemon
    // and helper keep theirs, with its gateway's port 53.
    let mut sys = start(env);
    import_hostile_default_image(env, &sys);

    // A VM boots for the owner and runs a command with its status.
    let out = sys.banger(&["vm", "run", "--", "sh", "-c", "echo hello-owner; exit 3"]);
    assert_eq!(stdout(&out), "hello-owner\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(3));

    // A kept VM: networking through the helper's bridge and tap, guest DNS on the
    // gateway's port 53 from the helper's socket.
    sys.ok(&["vm", "create", "dev"]);
    let show: serde_json::Value =
        serde_json::from_str(&sys.ok(&["vm", "show", "dev", "--json"])).unwrap();
    let ip = show["ip"].as_str().unwrap().to_string();
    let exec = |script: &str| sys.ok(&["vm", "exec", "dev", "--", "sh", "-c", script]);
    assert!(
        ip.starts_with("172.30.0."),
        "an address of the helper's subnet: {ip}"
    );
    let names = exec("getent hosts dev.vm");
    assert!(names.starts_with(&ip), "dev.vm resolves to {ip}: {names}");
    let host_ping = Command::new("ip")
        .args([
            "netns", "exec", &sys.netns, "ping", "-c", "1", "-W", "5", &ip,
        ])
        .status()
        .unwrap();
    assert!(host_ping.success(), "the host reaches the guest");

    // Who runs what.
    let links = Command::new("ip")
        .args(["-n", &sys.netns, "-br", "link"])
        .output()
        .unwrap();
    let tap = stdout(&links)
        .lines()
        .find_map(|l| l.split_whitespace().next().filter(|n| n.starts_with("bgr")))
        .expect("the kept VM's tap")
        .to_string();
    let link = stdout(
        &Command::new("ip")
            .args(["-n", &sys.netns, "-d", "link", "show", &tap])
            .output()
            .unwrap(),
    );
    assert!(
        link.contains(&format!("user {}", sys.user)) || link.contains(&format!("user {}", sys.uid)),
        "the tap is the owner's: {link}"
    );
    let run_pid = sys.run.as_ref().unwrap().id();
    let procs = processes();
    let root_str = sys.root.path().display().to_string();
    let mut checked = 0;
    let mut qemus = 0;
    for (pid, ppid, cmd) in &procs {
        let ours = *ppid == run_pid || cmd.contains(&root_str);
        if !ours || *pid == run_pid {
            continue;
        }
        let uid = proc_uid(*pid).unwrap_or(u32::MAX);
        checked += 1;
        if cmd.contains("banger-helper") {
            assert_eq!(uid, 0, "the helper is root: {cmd}");
            continue;
        }
        assert_eq!(uid, sys.uid, "{pid} runs as {uid}, not the owner: {cmd}");
        if cmd.contains("qemu-system") {
            qemus += 1;
            assert!(cmd.contains("-sandbox on,"), "QEMU sandboxed: {cmd}");
            assert!(
                cmd.contains(",fd="),
                "QEMU got its tap as a descriptor: {cmd}"
            );
        }
    }
    assert!(
        procs
            .iter()
            .any(|(_, ppid, cmd)| *ppid == run_pid && cmd.contains("bangerd")),
        "bangerd runs under system run"
    );
    assert_eq!(qemus, 1, "one VMM for the kept VM");
    eprintln!("privsep: {checked} processes checked; only banger-helper (and system run) root");

    // Everything banger keeps is private to the owner.
    for d in ["var/lib/banger", "var/cache/banger", "run/banger"] {
        let open = open_dirs(&sys.path(d));
        assert!(open.is_empty(), "directories others can enter: {open:?}");
    }

    kill_and_readopt(&mut sys, "bangerd", &tap);
    kill_and_readopt(&mut sys, "banger-helper", &tap);

    sys.ok(&["vm", "delete", "-f", "dev"]);
    assert_eq!(sys.ok(&["vm", "list", "--json"]).trim(), "[]");
    let links = stdout(
        &Command::new("ip")
            .args(["-n", &sys.netns, "-br", "link"])
            .output()
            .unwrap(),
    );
    assert!(!links.contains("bgr"), "a tap is left: {links}");
    drop(sys);
}
