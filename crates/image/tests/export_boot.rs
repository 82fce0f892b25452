//! A real export boot: banger's kernel and an initrd holding *this* tree's agent, booted
//! with `banger.mode=export` on a base image, an overlay disk with a hand-made upper
//! layer (a new file, a whiteout, an opaque directory), a work disk and an export disk;
//! the host then reads the result and applies it, and the merged tree must be what
//! overlayfs shows a running VM.
//!
//! Skips (with the reason printed) unless: root, `qemu-system-x86_64`, `mkfs.ext4`
//! and `debugfs`, `BANGER_EXPORT_TEST_IMAGE` naming a banger image directory
//! (`rootfs.ext4`, `vmlinuz`), and a static agent from `make agent` (or
//! `BANGER_AGENT`). `BANGER_EXPORT_TEST_ACCEL=kvm` boots with KVM instead of TCG.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_image::export::{apply_export, create_export_disk, read_result, size_for, KERNEL_ARG};
use banger_image::oci::{build_rootfs, ApplyOptions};
use banger_image::{create_work_disk, ext4, initrd, LABEL_OVERLAY, LABEL_ROOT};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn skip(reason: &str) {
    eprintln!("skipping the export boot test: {reason}");
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

struct Inputs {
    image: PathBuf,
    agent: PathBuf,
}

fn prerequisites() -> Option<Inputs> {
    if !rustix::process::geteuid().is_root() {
        skip("needs root (mknod of a whiteout, trusted.* xattrs)");
        return None;
    }
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !qemu {
        skip("qemu-system-x86_64 is not installed");
        return None;
    }
    if !have("mkfs.ext4") || !have("debugfs") {
        skip("mkfs.ext4 and debugfs (e2fsprogs) are needed");
        return None;
    }
    let Some(image) = std::env::var_os("BANGER_EXPORT_TEST_IMAGE").map(PathBuf::from) else {
        skip("BANGER_EXPORT_TEST_IMAGE is not set (a banger image directory with rootfs.ext4 and vmlinuz)");
        return None;
    };
    for f in ["rootfs.ext4", "vmlinuz"] {
        if !image.join(f).is_file() {
            skip(&format!("{} has no {f}", image.display()));
            return None;
        }
    }
    let agent = std::env::var_os("BANGER_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/guest/banger-agent")
        });
    let static_agent = std::fs::read(&agent)
        .ok()
        .and_then(|b| banger_image::elf::is_static(&b).ok())
        .unwrap_or(false);
    if !static_agent {
        skip(&format!(
            "no static agent at {} (run `make agent`, or set BANGER_AGENT)",
            agent.display()
        ));
        return None;
    }
    Some(Inputs { image, agent })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn debugfs(img: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(img)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The kernel's modules directory, copied out of the (trusted, banger-built) base.
fn modules_dir(image: &Path, work: &Path) -> PathBuf {
    let out = work.join("mods");
    std::fs::create_dir(&out).unwrap();
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump /usr/lib/modules {}", out.display()))
        .arg(image.join("rootfs.ext4")));
    let release = std::fs::read_to_string(image.join("manifest.json"))
        .ok()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .and_then(|m| m["kernel_release"].as_str().map(str::to_string));
    let dirs: Vec<PathBuf> = std::fs::read_dir(out.join("modules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    match release {
        Some(r) => out.join("modules").join(r),
        None => {
            assert_eq!(dirs.len(), 1, "which kernel? {dirs:?}");
            dirs[0].clone()
        }
    }
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The overlay disk of a VM that: created /etc/banger-export-test (0640 1234:5678),
/// deleted /etc/motd (whiteout), replaced /etc/skel wholesale (opaque directory), and
/// made /srv/{a, b (hard link), link, .wh.keep (a real file named like a whiteout)}.
/// Built with `mkfs.ext4 -d`: nothing is mounted on the host.
fn overlay_disk(work: &Path) -> PathBuf {
    let tree = work.join("ovl");
    let upper = tree.join("upper");
    for d in ["etc/skel", "srv"] {
        std::fs::create_dir_all(upper.join(d)).unwrap();
    }
    std::fs::create_dir_all(tree.join("work/work")).unwrap();
    for d in ["", "etc", "etc/skel", "srv"] {
        chmod(&upper.join(d), 0o755);
    }
    let new = upper.join("etc/banger-export-test");
    std::fs::write(&new, "exported\n").unwrap();
    chown(&new, 1234, 5678);
    chmod(&new, 0o640);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.join("etc/motd"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o000),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
    rustix::fs::setxattr(
        upper.join("etc/skel"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::write(upper.join("etc/skel/only-this"), "new skel\n").unwrap();
    std::fs::write(upper.join("srv/a"), "linked\n").unwrap();
    std::fs::hard_link(upper.join("srv/a"), upper.join("srv/b")).unwrap();
    std::os::unix::fs::symlink("a", upper.join("srv/link")).unwrap();
    std::fs::write(upper.join("srv/.wh.keep"), "not a whiteout\n").unwrap();

    let img = work.join("overlay.ext4");
    ext4::mkfs(&img, 256, LABEL_OVERLAY, Some(&tree)).unwrap();
    // mkfs.ext4 -d must have carried the overlay's metadata; otherwise this test
    // would pass for the wrong reason.
    let motd = debugfs(&img, "stat /upper/etc/motd");
    assert!(motd.contains("Type: character special"), "{motd}");
    let ea = debugfs(&img, "ea_list /upper/etc/skel");
    assert!(ea.contains("trusted.overlay.opaque"), "{ea}");
    img
}

fn console_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn a_real_guest_exports_the_merged_tree() {
    let Some(inputs) = prerequisites() else {
        return;
    };
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let rootfs = inputs.image.join("rootfs.ext4");

    let moddir = modules_dir(&inputs.image, w);
    let initrd_img = w.join("initrd.img");
    initrd::build(&initrd_img, &inputs.agent, &moddir).unwrap();
    let overlay = overlay_disk(w);
    let seed = w.join("seed");
    std::fs::create_dir(&seed).unwrap();
    std::fs::write(seed.join("work-file.txt"), "from the work disk\n").unwrap();
    let work = w.join("work.ext4");
    create_work_disk(
        &work,
        64,
        Some(&seed),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 test",
    )
    .unwrap();
    let export = w.join("export.disk");
    let size = size_for(&[&rootfs, &overlay, &work]);
    create_export_disk(&export, size).unwrap();
    eprintln!(
        "prepared disks, initrd and a {} MiB export disk in {:.1} s",
        size >> 20,
        t0.elapsed().as_secs_f64()
    );

    let accel = std::env::var("BANGER_EXPORT_TEST_ACCEL").unwrap_or_else(|_| "tcg".into());
    let accel_args: &[&str] = if accel == "kvm" {
        &["-accel", "kvm", "-cpu", "host"]
    } else {
        &["-accel", "tcg,thread=multi", "-cpu", "max"]
    };
    let khz = banger_vmm::tsc::measure_khz(Duration::from_millis(100));
    let console = w.join("console.log");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-M", "microvm,pit=on,pic=on,rtc=on"])
        .args(accel_args)
        .args(["-smp", "2", "-m", "1024M"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(inputs.image.join("vmlinuz"))
        .arg("-initrd")
        .arg(&initrd_img)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 reboot=t panic=-1 tsc_early_khz={khz} tsc=reliable {KERNEL_ARG}"
        ));
    // The order the daemon uses: base read-only; overlay, work and export writable.
    for (i, (disk, ro)) in [
        (&rootfs, true),
        (&overlay, false),
        (&work, false),
        (&export, false),
    ]
    .into_iter()
    .enumerate()
    {
        let ro = if ro { ",readonly=on" } else { "" };
        cmd.arg("-drive").arg(format!(
            "id=disk{i},file={},format=raw,if=none,cache=none,aio=threads{ro}",
            disk.display()
        ));
        cmd.args(["-device", &format!("virtio-blk-device,drive=disk{i}")]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let boot = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if boot.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the export guest ran over 120 s; console:\n{}",
                console_tail(&console)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let guest_secs = boot.elapsed().as_secs_f64();
    assert!(
        status.success(),
        "qemu: {status}; console:\n{}",
        console_tail(&console)
    );

    let result = match read_result(&export) {
        Ok(r) => r,
        Err(e) => panic!("{e}; console:\n{}", console_tail(&console)),
    };
    let staging = w.join("staging");
    std::fs::create_dir(&staging).unwrap();
    let t_apply = Instant::now();
    let tree = apply_export(&export, &staging, ApplyOptions::default()).unwrap();
    let apply_secs = t_apply.elapsed().as_secs_f64();
    let r = &tree.root;

    // The VM's new file, with its owner and mode.
    let new = r.join("etc/banger-export-test");
    assert_eq!(std::fs::read_to_string(&new).unwrap(), "exported\n");
    let md = std::fs::metadata(&new).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    // The whiteout hid the base's file, and is no file itself.
    assert!(std::fs::symlink_metadata(r.join("etc/motd")).is_err());
    // The opaque directory hides everything the base had in it.
    let mut skel: Vec<String> = std::fs::read_dir(r.join("etc/skel"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    skel.sort();
    assert_eq!(skel, ["only-this"]);
    // A file named like a whiteout is a file; links survive.
    assert_eq!(
        std::fs::read_to_string(r.join("srv/.wh.keep")).unwrap(),
        "not a whiteout\n"
    );
    let (a, b) = (
        std::fs::metadata(r.join("srv/a")).unwrap(),
        std::fs::metadata(r.join("srv/b")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(
        std::fs::read_link(r.join("srv/link")).unwrap(),
        Path::new("a")
    );
    // /root is the work disk, without its lost+found.
    assert_eq!(
        std::fs::read_to_string(r.join("root/work-file.txt")).unwrap(),
        "from the work disk\n"
    );
    assert!(r.join("root/.ssh/authorized_keys").is_file());
    let root_md = std::fs::metadata(r.join("root")).unwrap();
    assert_eq!(root_md.mode() & 0o7777, 0o700);
    assert!(!r.join("root/lost+found").exists());
    assert!(!r.join("lost+found").exists());
    // The base is there, owners and setuid bits included.
    let passwd = std::fs::metadata(r.join("usr/bin/passwd")).unwrap();
    assert_eq!(
        (passwd.uid(), passwd.mode() & 0o7777),
        (0, 0o4755),
        "setuid kept"
    );
    assert!(r.join("usr/lib/modules").is_dir());
    assert!(std::fs::symlink_metadata(r.join("bin"))
        .unwrap()
        .file_type()
        .is_symlink());

    // And it makes a base image.
    let t_rootfs = Instant::now();
    let out = w.join("promoted.ext4");
    let info = build_rootfs(&tree, &out, LABEL_ROOT).unwrap();
    let rootfs_secs = t_rootfs.elapsed().as_secs_f64();
    let stat = debugfs(&out, "stat /etc/banger-export-test");
    assert!(stat.contains("User:  1234"), "{stat}");
    assert!(debugfs(&out, "stat /etc/motd").contains("File not found"));

    eprintln!(
        "export boot ({accel}): guest boot+export {guest_secs:.1} s, {} tar bytes ({} MiB), \
         host apply {apply_secs:.1} s, build_rootfs {rootfs_secs:.1} s ({} MiB image), total {:.1} s",
        result.tar_len,
        result.tar_len >> 20,
        info.size_bytes >> 20,
        t0.elapsed().as_secs_f64()
    );
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("banger-init")) {
        eprintln!("guest: {}", line.trim());
    }
}
