//! The helper's jailed Firecracker launch, contract-tested end to end: the real
//! `banger-helper` runs a fake `jailer` (this test binary, re-executed) that checks
//! its arguments the way Firecracker's jailer does, builds the chroot's devices (and,
//! like the real one, fails if they already exist), drops to the owner's uid/gid and
//! execs the copied `firecracker`: the existing fake Firecracker API server
//! (`crates/vmm/tests/common`), serving on the socket inside the chroot. The test then
//! does what the owner daemon will: configure and start the guest over that socket
//! with the chroot-relative machine the helper returned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../../vmm/tests/common/mod.rs"]
mod fc_common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_helper::jail::args::{detect_cgroup_version, jailer_args};
use banger_helper::{HelperConfig, PrivOp, Privileged};
use banger_testns::{in_netns, root_or_skip};
use banger_vmm::firecracker::client::ApiClient;
use banger_vmm::firecracker::jailer::Jail;
use banger_vmm::firecracker::Firecracker;
use banger_vmm::{DiskSpec, MachineSpec};
use fc_common::{Behaviour, FakeServer, OnRequest, Seen};
use support::{config_in, public_tempdir, Helper, OWNER};

/// The jailer's options that take a value.
const VALUE_FLAGS: [&str; 10] = [
    "--id",
    "--exec-file",
    "--uid",
    "--gid",
    "--chroot-base-dir",
    "--cgroup-version",
    "--parent-cgroup",
    "--cgroup",
    "--netns",
    "--resource-limit",
];

/// The arguments this test binary was re-executed with, after libtest's own.
fn passed_args() -> Vec<String> {
    let all: Vec<String> = std::env::args().collect();
    let i = all
        .iter()
        .position(|a| a == "--")
        .expect("-- before the passed arguments");
    all[i + 1..].to_vec()
}

fn fail(msg: String) -> ! {
    eprintln!("fake jailer: {msg}");
    std::process::exit(1);
}

/// Entry point of the fake jailer (as root).
#[test]
fn fake_jailer_entry() {
    let Ok(log) = std::env::var("FAKE_JAILER_LOG") else {
        println!("skipping: entry point of the fake jailer; the jailer tests spawn it");
        return;
    };
    let args = passed_args();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    writeln!(f, "{}", serde_json::to_string(&args).unwrap()).unwrap();
    // Parse like the jailer: known options only, values where needed, `--` ends them.
    let mut values: std::collections::HashMap<&str, Vec<String>> = Default::default();
    let mut extra = vec![];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            extra = it.by_ref().cloned().collect();
            break;
        }
        match VALUE_FLAGS.iter().find(|f| **f == a) {
            Some(flag) => {
                let v = it
                    .next()
                    .unwrap_or_else(|| fail(format!("{a} needs a value")));
                values.entry(flag).or_default().push(v.clone());
            }
            None if a == "--daemonize" || a == "--new-pid-ns" => {
                fail(format!("{a} is not expected from banger"))
            }
            None => fail(format!("unknown argument {a}")),
        }
    }
    let one = |k: &str| -> String {
        match values.get(k).map(|v| v.as_slice()) {
            Some([v]) => v.clone(),
            _ => fail(format!("{k} must be given once")),
        }
    };
    let id = one("--id");
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        fail(format!("invalid id {id}"));
    }
    if id.contains("fail") {
        fail("refusing to start, as asked".into());
    }
    let exec = std::fs::canonicalize(one("--exec-file"))
        .unwrap_or_else(|e| fail(format!("exec-file: {e}")));
    let exec_name = exec.file_name().unwrap().to_string_lossy().into_owned();
    if !exec_name.contains("firecracker") {
        fail("the exec file name must contain firecracker".into());
    }
    let uid: u32 = one("--uid").parse().unwrap_or_else(|_| fail("uid".into()));
    let gid: u32 = one("--gid").parse().unwrap_or_else(|_| fail("gid".into()));
    if !["1", "2"].contains(&one("--cgroup-version").as_str()) {
        fail("cgroup version".into());
    }
    let parent = one("--parent-cgroup");
    if Path::new(&parent).is_absolute() || parent.contains("..") {
        fail("parent cgroup".into());
    }
    for c in values.get("--cgroup").into_iter().flatten() {
        if c.split('=').count() != 2 || c.ends_with('=') {
            fail(format!("cgroup {c}"));
        }
    }
    let base = std::fs::canonicalize(one("--chroot-base-dir"))
        .unwrap_or_else(|e| fail(format!("chroot base: {e}")));
    let root = base.join(&exec_name).join(&id).join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(&exec, root.join(&exec_name)).unwrap_or_else(|e| fail(format!("copy: {e}")));
    for d in ["dev", "dev/net", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // Like the jailer: mknod fails if the node exists.
    for (node, minor) in [("dev/net/tun", 200), ("dev/kvm", 232)] {
        let p = root.join(node);
        nix::sys::stat::mknod(
            &p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            nix::sys::stat::makedev(10, minor),
        )
        .unwrap_or_else(|e| fail(format!("mknod {node}: {e}")));
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
    for d in ["", "dev", "dev/net", "run"] {
        let p = root.join(d);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
    // No chroot for the fake (the fake Firecracker is this dynamically linked test
    // binary): it is told where its root is instead.
    let e = std::process::Command::new(root.join(&exec_name))
        .args([
            "--id",
            &id,
            "--start-time-us",
            "0",
            "--start-time-cpu-us",
            "0",
            "--parent-cpu-time-us",
            "0",
        ])
        .args(&extra)
        .env_clear()
        .env("FAKE_FC_CHROOT", &root)
        .uid(uid)
        .gid(gid)
        .exec();
    fail(format!("exec: {e}"));
}

/// Entry point of the fake Firecracker (as the owner, "inside" the chroot).
#[test]
fn fake_firecracker_entry() {
    let Ok(root) = std::env::var("FAKE_FC_CHROOT") else {
        println!("skipping: entry point of the fake firecracker; the fake jailer execs it");
        return;
    };
    let root = PathBuf::from(root);
    let args = passed_args();
    let sock = args
        .iter()
        .position(|a| a == "--api-sock")
        .map(|i| args[i + 1].clone())
        .unwrap_or_else(|| fail("no --api-sock".into()));
    let sock = root.join(sock.trim_start_matches('/'));
    let me = serde_json::json!({
        "uid": nix::unistd::getuid().as_raw(),
        "gid": nix::unistd::getgid().as_raw(),
        "groups": nix::unistd::getgroups().unwrap().len(),
        "args": args,
    });
    std::fs::write(root.join("fc.json"), me.to_string()).unwrap();
    let log = root.join("requests.jsonl");
    let on_request: OnRequest = Arc::new(move |seen: &Seen| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        writeln!(f, "{}", serde_json::to_string(seen).unwrap()).unwrap();
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let _server = FakeServer::spawn(&sock, Behaviour::default(), Some(on_request));
        std::future::pending::<()>().await;
    });
}

struct Setup {
    dir: tempfile::TempDir,
    cfg: HelperConfig,
    spec: MachineSpec,
}

fn wrapper(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The owner's state (a kernel, an initrd, three disks, all the owner's), wrapper
/// scripts for the fake jailer and Firecracker, and a helper config naming them.
fn setup() -> Setup {
    let dir = public_tempdir();
    let d = dir.path();
    let mut cfg = config_in(d);
    let exe = std::env::current_exe().unwrap();
    std::fs::create_dir(d.join("bin")).unwrap();
    let jailer = d.join("bin/jailer");
    let fc = d.join("bin/firecracker");
    wrapper(
        &jailer,
        &format!(
            "FAKE_JAILER_LOG='{}' exec '{}' --exact fake_jailer_entry --nocapture --test-threads=1 -- \"$@\"",
            d.join("jailer.jsonl").display(),
            exe.display()
        ),
    );
    wrapper(
        &fc,
        &format!(
            "exec '{}' --exact fake_firecracker_entry --nocapture --test-threads=1 -- \"$@\"",
            exe.display()
        ),
    );
    cfg.jailer = Some(jailer);
    cfg.firecracker = Some(fc);
    let state = &cfg.owner_state_dir;
    for sub in ["images/i1", "vms/v1"] {
        std::fs::create_dir_all(state.join(sub)).unwrap();
    }
    let mut spec = fc_common::full_spec(&state.join("run"));
    spec.kernel = state.join("images/i1/vmlinux");
    spec.initrd = Some(state.join("images/i1/initrd.img"));
    spec.disks[0].path = state.join("images/i1/rootfs.ext4");
    spec.disks[1].path = state.join("vms/v1/overlay.ext4");
    spec.disks[2].path = state.join("vms/v1/work.ext4");
    let mut files = vec![spec.kernel.clone(), spec.initrd.clone().unwrap()];
    files.extend(spec.disks.iter().map(|d| d.path.clone()));
    for f in &files {
        std::fs::write(f, b"\x7fELF something").unwrap();
    }
    chown_tree(state, OWNER);
    Setup { dir, cfg, spec }
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

fn status_uid(pid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn make_tap(h: &Helper, tap: &str) {
    h.client()
        .run(PrivOp::EnsureBridge {
            name: "banger0".into(),
            gateway: Ipv4Addr::new(172, 30, 0, 1),
            prefix: 24,
        })
        .await
        .unwrap();
    h.client()
        .run(PrivOp::CreateTap {
            name: tap.into(),
            bridge: "banger0".into(),
            owner_uid: Some(OWNER),
        })
        .await
        .unwrap();
}

#[test]
fn a_jailed_guest_runs_as_the_owner_in_its_chroot_and_is_configured_through_it() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let s = setup();
        let h = Helper::start(s.dir.path(), s.cfg.clone());
        make_tap(&h, &s.spec.net.as_ref().unwrap().tap).await;

        let t = Instant::now();
        let j = h.client().launch_jailed(&s.spec).await.unwrap();
        println!("jailed launch took {:?}", t.elapsed());
        assert_eq!(j.jail_id, "banger-0a1b2c3d4e5f");
        let jail = Jail::plan(
            &s.cfg.jail_root,
            &j.jail_id,
            &s.spec,
            &std::fs::canonicalize(s.cfg.firecracker.as_ref().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(j.chroot, jail.root);
        assert_eq!(j.api_socket, jail.api_socket());
        assert_eq!(j.spec, jail.spec, "chroot-relative paths");
        assert_eq!(j.spec.kernel, Path::new("/vmlinux"));

        // The jailer got exactly banger's arguments.
        let recorded: Vec<Vec<String>> = std::fs::read_to_string(s.dir.path().join("jailer.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let want = jailer_args(
            &jail,
            &std::fs::canonicalize(s.cfg.firecracker.as_ref().unwrap()).unwrap(),
            (OWNER, OWNER),
            detect_cgroup_version(Path::new("/sys/fs/cgroup")),
            s.spec.memory_mib,
        );
        assert_eq!(recorded, [want]);

        // Firecracker runs as the owner, in its own session, recognisable by its id.
        assert_eq!(status_uid(j.pid), OWNER);
        assert!(banger_helper::jail::running(&j.jail_id));
        let fc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(j.chroot.join("fc.json")).unwrap())
                .unwrap();
        assert_eq!(
            (fc["uid"].as_u64(), fc["gid"].as_u64()),
            (Some(OWNER.into()), Some(OWNER.into()))
        );
        // SAFETY: getsid has no preconditions.
        let sid = unsafe { libc::getsid(j.pid as i32) };
        assert_eq!(sid, j.pid as i32, "a session of its own, not the helper's");

        // The chroot: the owner's; the guest's files are hard links of the checked ones.
        let md = std::fs::metadata(&j.chroot).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o777), (OWNER, 0o700));
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&j.chroot.join("vmlinux")), ino(&s.spec.kernel));
        for (i, d) in s.spec.disks.iter().enumerate() {
            assert_eq!(ino(&j.chroot.join(format!("disk{i}.img"))), ino(&d.path));
        }
        for f in ["console.log", "firecracker.log"] {
            let md = std::fs::metadata(j.chroot.join(f)).unwrap();
            assert_eq!((md.uid(), md.mode() & 0o777), (OWNER, 0o600), "{f}");
        }
        assert_eq!(j.console_log, j.chroot.join("console.log"));

        // The daemon's part: configure and start through the socket in the chroot.
        let fcb = Firecracker::default();
        let mut reqs = fcb.configure_requests(&j.spec).unwrap();
        reqs.push(Firecracker::start_request().unwrap());
        let client = ApiClient::new(&j.api_socket).unwrap();
        for r in &reqs {
            client.send(r).await.unwrap();
        }
        let seen: Vec<Seen> = std::fs::read_to_string(j.chroot.join("requests.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(seen.len(), reqs.len());
        for (got, want) in seen.iter().zip(&reqs) {
            assert_eq!(
                (got.path.as_str(), &got.body),
                (want.path.as_str(), &want.body)
            );
        }
        let text: String = seen
            .iter()
            .map(|r| r.body.as_ref().unwrap().to_string())
            .collect();
        assert!(
            !text.contains(s.dir.path().to_str().unwrap()),
            "only chroot paths: {text}"
        );

        // A second launch of the same VM, and a cleanup, are refused while it runs.
        let e = h.client().launch_jailed(&s.spec).await.unwrap_err();
        assert!(e.to_string().contains("still running"), "{e}");
        let e = h.client().cleanup_jail(&s.spec.id).await.unwrap_err();
        assert!(e.to_string().contains("still running"), "{e}");

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(j.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let t = Instant::now();
        while banger_helper::jail::running(&j.jail_id) {
            assert!(t.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.client().cleanup_jail(&s.spec.id).await.unwrap();
        assert!(!jail.dir.exists());
        assert!(
            s.spec.kernel.exists() && s.spec.disks[2].path.exists(),
            "the VM's files stay"
        );
        h.client().cleanup_jail(&s.spec.id).await.unwrap();

        // Relaunching after a stop works (the jail is rebuilt from scratch).
        let j2 = h.client().launch_jailed(&s.spec).await.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(j2.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        while banger_helper::jail::running(&j2.jail_id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A stale jail of a dead guest is replaced by the next launch.
        let j3 = h.client().launch_jailed(&s.spec).await.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(j3.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    });
}

#[test]
fn jailed_launches_outside_the_rules_are_refused() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let s = setup();
        let h = Helper::start(s.dir.path(), s.cfg.clone());
        let refused = |spec: MachineSpec| {
            let c = h.client();
            async move { c.launch_jailed(&spec).await.unwrap_err().to_string() }
        };
        // The tap is not one the helper made.
        let e = refused(s.spec.clone()).await;
        assert!(e.contains("bgr0a1b2c3d"), "{e}");
        let mut no_net = s.spec.clone();
        no_net.net = None;

        let mut outside = no_net.clone();
        outside.disks[2] = DiskSpec {
            path: "/etc/shadow".into(),
            read_only: false,
        };
        assert!(refused(outside)
            .await
            .contains("not inside the owner's state directory"));

        let link = s.cfg.owner_state_dir.join("vms/v1/evil.ext4");
        std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
        let mut symlinked = no_net.clone();
        symlinked.disks[2].path = link;
        assert!(refused(symlinked).await.contains("not a regular file"));

        let roots = s.cfg.owner_state_dir.join("vms/v1/roots.ext4");
        std::fs::write(&roots, b"root's").unwrap();
        let mut not_owned = no_net.clone();
        not_owned.disks[1].path = roots;
        assert!(refused(not_owned).await.contains("not to the owner"));

        let mut via_link_dir = no_net.clone();
        std::os::unix::fs::symlink("/etc", s.cfg.owner_state_dir.join("etc")).unwrap();
        via_link_dir.kernel = s.cfg.owner_state_dir.join("etc/passwd");
        assert!(refused(via_link_dir)
            .await
            .contains("symlinks are not followed"));

        let mut dotdot = no_net.clone();
        dotdot.initrd = Some(s.cfg.owner_state_dir.join("../helper.toml"));
        assert!(refused(dotdot).await.contains(".."));

        let mut big = no_net.clone();
        big.cpus = 64;
        assert!(refused(big).await.contains("vCPUs"));
        let mut bad_id = no_net.clone();
        bad_id.id = "../../etc".into();
        assert!(refused(bad_id).await.contains("VM id"));
        assert!(
            !s.cfg
                .jail_root
                .join("firecracker")
                .read_dir()
                .is_ok_and(|mut d| d.next().is_some()),
            "no jail was made"
        );

        // A jailer that fails: its words come back and nothing is left.
        let mut failing = no_net.clone();
        failing.id = "fail1".into();
        let e = refused(failing).await;
        assert!(
            e.contains("jailer exited") && e.contains("refusing to start, as asked"),
            "{e}"
        );
        assert!(!s.cfg.jail_root.join("firecracker/banger-fail1").exists());

        // Without a configured jailer there are no jailed guests at all.
        drop(h);
        let mut cfg = s.cfg.clone();
        cfg.jailer = None;
        let h = Helper::start(s.dir.path(), cfg);
        let e = h
            .client()
            .launch_jailed(&no_net)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("need `jailer` and `firecracker`"), "{e}");
        // And the tool check: a group-writable jailer is refused.
        drop(h);
        let jailer = s.cfg.jailer.clone().unwrap();
        std::fs::set_permissions(&jailer, std::fs::Permissions::from_mode(0o775)).unwrap();
        let h = Helper::start(s.dir.path(), s.cfg.clone());
        let e = h
            .client()
            .launch_jailed(&no_net)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("jailer") && e.contains("may write"), "{e}");
    });
}

/// The same launch with Firecracker's real jailer and firecracker, when
/// `BANGER_REAL_JAILER` and `BANGER_REAL_FIRECRACKER` name them (built from
/// Firecracker's sources; nothing here builds them), in the host's real cgroup
/// hierarchy. `BANGER_REAL_VMLINUX` (an ELF kernel) adds InstanceStart.
#[test]
fn a_real_jailer_accepts_the_helpers_launch() {
    let (Some(jailer), Some(fc)) = (
        std::env::var_os("BANGER_REAL_JAILER"),
        std::env::var_os("BANGER_REAL_FIRECRACKER"),
    ) else {
        println!("skipping: set BANGER_REAL_JAILER and BANGER_REAL_FIRECRACKER to run the jailed launch with Firecracker's own jailer");
        return;
    };
    if !root_or_skip() {
        return;
    }
    in_netns(move || async move {
        let s = setup();
        let mut cfg = s.cfg.clone();
        let bin = s.dir.path().join("real");
        std::fs::create_dir(&bin).unwrap();
        for (src, name) in [(&jailer, "jailer"), (&fc, "firecracker")] {
            std::fs::copy(src, bin.join(name)).unwrap();
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        cfg.jailer = Some(bin.join("jailer"));
        cfg.firecracker = Some(bin.join("firecracker"));
        let mut spec = s.spec.clone();
        if let Some(k) = std::env::var_os("BANGER_REAL_VMLINUX") {
            std::fs::copy(k, &spec.kernel).unwrap();
            std::os::unix::fs::chown(&spec.kernel, Some(OWNER), Some(OWNER)).unwrap();
        }
        spec.initrd = None;
        let h = Helper::start(s.dir.path(), cfg);
        make_tap(&h, &spec.net.as_ref().unwrap().tap).await;
        let j = match h.client().launch_jailed(&spec).await {
            Ok(j) => j,
            Err(e) => panic!("{e}\nhelper log:\n{}", h.log()),
        };
        println!("jailed firecracker pid {} in {}", j.pid, j.chroot.display());
        assert_eq!(status_uid(j.pid), OWNER);
        let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", j.pid)).unwrap();
        println!("cgroups:\n{cg}");
        assert!(cg.contains(&format!("banger/{}", j.jail_id)), "{cg}");
        let fcb = Firecracker::default();
        let client = ApiClient::new(&j.api_socket).unwrap();
        for r in fcb.configure_requests(&j.spec).unwrap() {
            client.send(&r).await.unwrap_or_else(|e| {
                panic!(
                    "{:?} {}: {e}\nconsole:\n{}",
                    r.method,
                    r.path,
                    std::fs::read_to_string(&j.console_log).unwrap_or_default()
                )
            });
            println!("accepted {:?} {}", r.method, r.path);
        }
        if std::env::var_os("BANGER_REAL_VMLINUX").is_some() {
            let r = client.send(&Firecracker::start_request().unwrap()).await;
            println!("InstanceStart: {r:?}");
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(j.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let t = Instant::now();
        while banger_helper::jail::running(&j.jail_id) {
            assert!(t.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.client().cleanup_jail(&spec.id).await.unwrap();
        assert!(!j.chroot.exists());
        for line in cg.lines() {
            // "N:controller[,controller]:/path" (v1) or "0::/path" (v2).
            let mut f = line.splitn(3, ':');
            let (_, ctrl, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
            if path.contains(&j.jail_id) {
                let base = Path::new("/sys/fs/cgroup").join(ctrl.split(',').next().unwrap_or(""));
                let dir = base.join(path.trim_start_matches('/'));
                assert!(!dir.exists(), "{} was not removed", dir.display());
            }
        }
    });
}
