//! banger's initrd: the static guest init plus the few kernel modules it needs,
//! resolved from the image's own `modules.dep`.
//!
//! Debian's initramfs is ~15 MB and spends over a second in udev and networking we do
//! not need; ours is the agent binary and ~9 modules, written as an uncompressed newc
//! archive (decompression under software emulation costs more than reading it).

use crate::oci::fsat::{Root, WalkError};
use rustix::fs::{openat, FileType, Mode, OFlags};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// Modules banger's init needs, by module name, for virtio-mmio disks and network,
/// the agent's channel (virtio-serial under QEMU, virtio-vsock under Firecracker) and
/// the overlay root. Built-in ones are skipped.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "vmw_vsock_virtio_transport",
    "overlay",
    "ext4",
];

/// Where the guest init reads its module list (the host–guest contract).
const MODULE_LIST: &str = banger_contract::initrd::MODULE_LIST;

/// Largest `modules.dep` / `modules.builtin` read (Debian's full list is ~500 KiB).
const MAX_LIST_BYTES: u64 = 16 << 20;

/// Largest module file packed (the biggest in-tree modules are a few MiB).
const MAX_MODULE_BYTES: u64 = 64 << 20;

/// Longest module path accepted from `modules.dep`.
const MAX_MODULE_PATH: usize = 1024;

/// Why the initrd could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// The kernel's modules.dep could not be read.
    #[error("cannot read {path}: {source} (does the image contain the kernel's modules?)")]
    ModulesDep {
        /// The modules.dep path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A required module is neither built in nor present.
    #[error("kernel module {0} is neither built into the kernel nor present in its modules directory; this kernel cannot boot banger guests")]
    MissingModule(String),
    /// `modules.dep` names a module by a path banger does not follow: absolute, with
    /// `..`, not an uncompressed `.ko`, or too long. A downloaded catalog kernel could
    /// otherwise copy any host file into a world-readable initrd.
    #[error("modules.dep in {moddir} names module path {path:?}, which is not a plain relative path to an uncompressed .ko file; this modules directory cannot be used (rebuild it with depmod, without module compression)")]
    BadModulePath {
        /// The modules directory.
        moddir: PathBuf,
        /// The offending path, as written in modules.dep.
        path: String,
    },
    /// A module file is a symlink, not a regular file, or sits below a symlinked directory.
    #[error("kernel module {path:?} in {moddir} is {what}; banger only packs regular files inside the modules directory and never follows symlinks there")]
    NotAModuleFile {
        /// The modules directory.
        moddir: PathBuf,
        /// The module path, relative to `moddir`.
        path: String,
        /// What was found instead.
        what: String,
    },
    /// A list or module file is larger than any real one.
    #[error("{path} is larger than {cap} bytes; this is not a usable kernel modules directory")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        cap: u64,
    },
    /// Reading an input or writing the archive failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    norm(stem)
}

/// Resolve `wanted` module names into `.ko` paths (relative to `moddir`) in load
/// order, dependencies first, skipping modules that are built in.
///
/// Every path returned is checked ([`check_module_path`]): relative, without `..`,
/// an uncompressed `.ko`.
pub fn resolve_modules(moddir: &Path, wanted: &[&str]) -> Result<Vec<String>, InitrdError> {
    let dir = open_moddir(moddir)?;
    resolve_in(&dir, moddir, wanted)
}

fn resolve_in(dir: &Root, moddir: &Path, wanted: &[&str]) -> Result<Vec<String>, InitrdError> {
    let dep_path = moddir.join("modules.dep");
    let dep = read_list(dir.fd(), "modules.dep", &dep_path).map_err(|e| match e {
        ListError::Io(source) => InitrdError::ModulesDep {
            path: dep_path.clone(),
            source,
        },
        ListError::Other(e) => e,
    })?;
    let builtin_path = moddir.join("modules.builtin");
    let builtin: HashSet<String> = match read_list(dir.fd(), "modules.builtin", &builtin_path) {
        Ok(text) => text.lines().map(module_name).collect(),
        Err(ListError::Io(_)) => HashSet::new(),
        Err(ListError::Other(e)) => return Err(e),
    };
    let order = resolve_from(&dep, &builtin, wanted)?;
    for path in &order {
        if !check_module_path(path) {
            return Err(InitrdError::BadModulePath {
                moddir: moddir.to_path_buf(),
                path: path.clone(),
            });
        }
    }
    Ok(order)
}

/// True for a module path banger follows: relative, plain components (no `..`, `.`
/// or empty ones), ending in `.ko`, at most [`MAX_MODULE_PATH`] bytes, no control
/// characters. Compressed modules (`.ko.xz`, `.ko.zst`) are refused: the guest init
/// loads modules with `finit_module` without decompression flags.
pub fn check_module_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_MODULE_PATH
        && !path.starts_with('/')
        && path.ends_with(".ko")
        && !path.chars().any(char::is_control)
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c != ".ko")
}

/// Open the modules directory (trusted: the caller chose it, but its last
/// component must not be a symlink).
fn open_moddir(moddir: &Path) -> Result<Root, InitrdError> {
    Root::open(moddir, false).map_err(|source| InitrdError::ModulesDep {
        path: moddir.to_path_buf(),
        source,
    })
}

enum ListError {
    /// Could not open or read (a missing modules.builtin is fine).
    Io(std::io::Error),
    /// Anything else is fatal.
    Other(InitrdError),
}

/// Read the text file `name` directly in `dir`, not following a symlink, capped.
fn read_list(dir: BorrowedFd<'_>, name: &str, shown: &Path) -> Result<String, ListError> {
    let bytes = read_regular(dir, name, MAX_LIST_BYTES).map_err(|e| match e {
        ReadError::Io(e) => ListError::Io(e),
        ReadError::NotRegular(what) => ListError::Io(std::io::Error::other(format!(
            "{} is {what}, not a regular file",
            shown.display()
        ))),
        ReadError::TooLarge => ListError::Other(InitrdError::TooLarge {
            path: shown.to_path_buf(),
            cap: MAX_LIST_BYTES,
        }),
    })?;
    String::from_utf8(bytes).map_err(|_| {
        ListError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

enum ReadError {
    Io(std::io::Error),
    NotRegular(String),
    TooLarge,
}

/// Read the regular file `name` in `dir` without following a symlink, at most `cap` bytes.
fn read_regular(dir: BorrowedFd<'_>, name: &str, cap: u64) -> Result<Vec<u8>, ReadError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Err(ReadError::NotRegular("a symlink".into())),
        Err(e) => return Err(ReadError::Io(e.into())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| ReadError::Io(e.into()))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(ReadError::NotRegular(format!("a {kind:?}")));
    }
    let mut out = vec![];
    std::fs::File::from(fd)
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(ReadError::Io)?;
    if out.len() as u64 > cap {
        return Err(ReadError::TooLarge);
    }
    Ok(out)
}

/// Read module `rel` (already checked) below `dir`, walking every directory without
/// following symlinks.
fn read_module(dir: &mut Root, moddir: &Path, rel: &str) -> Result<Vec<u8>, InitrdError> {
    let comps: Vec<String> = rel.split('/').map(str::to_string).collect();
    let (name, parents) = comps
        .split_last()
        .ok_or_else(|| InitrdError::BadModulePath {
            moddir: moddir.to_path_buf(),
            path: rel.to_string(),
        })?;
    let not_file = |what: String| InitrdError::NotAModuleFile {
        moddir: moddir.to_path_buf(),
        path: rel.to_string(),
        what,
    };
    let src = moddir.join(rel);
    let parent = dir.dir(parents, false, &mut vec![]).map_err(|e| match e {
        WalkError::Symlink(a) => not_file(format!("below the symlinked directory {a:?}")),
        WalkError::NotDir(a) => not_file(format!("below {a:?}, which is not a directory")),
        WalkError::Missing(_) => InitrdError::Io {
            what: "read module",
            path: src.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        },
        WalkError::Io(_, source) => InitrdError::Io {
            what: "read module",
            path: src.clone(),
            source,
        },
    })?;
    read_regular(parent.as_fd(), name, MAX_MODULE_BYTES).map_err(|e| match e {
        ReadError::Io(source) => InitrdError::Io {
            what: "read module",
            path: src.clone(),
            source,
        },
        ReadError::NotRegular(what) => not_file(what),
        ReadError::TooLarge => InitrdError::TooLarge {
            path: src.clone(),
            cap: MAX_MODULE_BYTES,
        },
    })
}

fn resolve_from(
    dep: &str,
    builtin: &HashSet<String>,
    wanted: &[&str],
) -> Result<Vec<String>, InitrdError> {
    // name -> (path, deps)
    let mut table: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let deps = deps.split_whitespace().map(str::to_string).collect();
        table.insert(module_name(path), (path.to_string(), deps));
    }
    let mut order = vec![];
    let mut seen = HashSet::new();
    fn visit(
        name: &str,
        table: &HashMap<String, (String, Vec<String>)>,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some((path, deps)) = table.get(name) {
            // modules.dep lists the full transitive closure; loading it in reverse
            // gives dependencies before dependents, as modprobe does.
            for d in deps.iter().rev() {
                visit(&module_name(d), table, seen, order);
            }
            order.push(path.clone());
        }
    }
    for w in wanted {
        let n = norm(w);
        if builtin.contains(&n) {
            continue;
        }
        if !table.contains_key(&n) {
            return Err(InitrdError::MissingModule(n));
        }
        visit(&n, &table, &mut seen, &mut order);
    }
    Ok(order)
}

/// Write banger's initrd to `out`: `/init` = `init_binary`, the resolved modules under
/// `/lib/modules/`, and their load order in `/etc/banger/modules`.
///
/// `moddir` is trusted as a path (the caller chose it); everything read inside it,
/// `modules.dep` included, is not: no symlink is followed below it and only checked
/// module paths are read.
pub fn build(out: &Path, init_binary: &Path, moddir: &Path) -> Result<usize, InitrdError> {
    let mut dir = open_moddir(moddir)?;
    let modules = resolve_in(&dir, moddir, GUEST_MODULES)?;
    write(out, init_binary, Some((&mut dir, moddir)), &modules)
}

/// Write banger's initrd with no modules at all, for a kernel that has everything
/// banger's init needs built in (the usual Firecracker-style kernel). If it does not,
/// the guest's init reports the missing disk or filesystem on the console.
pub fn build_builtin(out: &Path, init_binary: &Path) -> Result<usize, InitrdError> {
    write(out, init_binary, None, &[])
}

/// Write `base` followed by a second archive holding only `/init` = `init_binary`.
///
/// The kernel unpacks concatenated initramfs archives in order, later files replacing
/// earlier ones, so this runs the current init with the modules of an initrd built
/// earlier (by an older banger, for a kernel whose modules are no longer at hand).
pub fn with_init(base: &Path, init_binary: &Path, out: &Path) -> Result<(), InitrdError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| InitrdError::Io { what, path, source }
    };
    let mut data = std::fs::read(base).map_err(io("read initrd", base))?;
    // newc archives are 4-byte aligned; keep the second one aligned too.
    data.resize(data.len().next_multiple_of(4), 0);
    let init = std::fs::read(init_binary).map_err(io("read guest init", init_binary))?;
    let mut w = std::io::Cursor::new(&mut data);
    w.set_position(w.get_ref().len() as u64);
    let mut fw = cpio::newc::Builder::new("init")
        .ino(1)
        .mode(0o100755)
        .nlink(1)
        .write(&mut w, init.len() as u32);
    fw.write_all(&init).map_err(io("write", out))?;
    fw.finish().map_err(io("write", out))?;
    cpio::newc::trailer(&mut w).map_err(io("write", out))?;
    std::fs::write(out, &data).map_err(io("write", out))
}

fn write(
    out: &Path,
    init_binary: &Path,
    mut moddir: Option<(&mut Root, &Path)>,
    modules: &[String],
) -> Result<usize, InitrdError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| InitrdError::Io { what, path, source }
    };
    let file = std::fs::File::create(out).map_err(io("create", out))?;
    let mut w = std::io::BufWriter::new(file);
    let mut ino = 1u32;
    let mut entry =
        |w: &mut std::io::BufWriter<std::fs::File>, name: &str, mode: u32, data: &[u8]| {
            ino += 1;
            let b = cpio::newc::Builder::new(name)
                .ino(ino)
                .mode(mode)
                .nlink(if mode & 0o040000 != 0 { 2 } else { 1 });
            let mut fw = b.write(w, data.len() as u32);
            fw.write_all(data)?;
            fw.finish().map(|_| ())
        };
    for d in [
        "dev",
        "etc",
        "etc/banger",
        "lib",
        banger_contract::initrd::MODULE_DIR,
        "proc",
        "sys",
    ] {
        entry(&mut w, d, 0o040755, &[]).map_err(io("write", out))?;
    }
    let init = std::fs::read(init_binary).map_err(io("read guest init", init_binary))?;
    entry(&mut w, "init", 0o100755, &init).map_err(io("write", out))?;
    let mut list = String::new();
    for rel in modules {
        let Some((dir, path)) = moddir.as_mut() else {
            break;
        };
        let data = read_module(dir, path, rel)?;
        let file = rel.rsplit('/').next().unwrap_or(rel);
        entry(
            &mut w,
            &format!("{}/{file}", banger_contract::initrd::MODULE_DIR),
            0o100644,
            &data,
        )
        .map_err(io("write", out))?;
        list.push_str(file);
        list.push('\n');
    }
    entry(&mut w, MODULE_LIST, 0o100644, list.as_bytes()).map_err(io("write", out))?;
    cpio::newc::trailer(&mut w).map_err(io("write", out))?;
    w.flush().map_err(io("write", out))?;
    Ok(modules.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
";

    #[test]
    fn dependencies_come_first_and_once() {
        let order = resolve_from(
            DEP,
            &HashSet::new(),
            &["virtio_blk", "virtio-net", "overlay"],
        )
        .unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "virtio",
                "virtio_ring",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net",
                "overlay"
            ]
        );
    }

    /// A modules directory with every guest module as `kernel/<name>.ko`, plus `extra`
    /// lines in modules.dep; returns (tempdir, moddir, init binary).
    fn moddir_with(extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("moddir");
        std::fs::create_dir_all(m.join("kernel")).unwrap();
        let mut dep = String::new();
        for name in GUEST_MODULES {
            dep.push_str(&format!("kernel/{name}.ko:\n"));
            std::fs::write(m.join(format!("kernel/{name}.ko")), name).unwrap();
        }
        dep.push_str(extra);
        std::fs::write(m.join("modules.dep"), dep).unwrap();
        let init = d.path().join("init");
        std::fs::write(&init, b"#!init").unwrap();
        (d, m, init)
    }

    #[test]
    fn a_clean_modules_directory_builds() {
        let (d, m, init) = moddir_with("");
        let n = build(&d.path().join("initrd"), &init, &m).unwrap();
        assert_eq!(n, GUEST_MODULES.len());
    }

    #[test]
    fn module_paths_outside_the_tree_are_refused() {
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "host secret").unwrap();
        let abs = secret.path().display().to_string();
        let name = module_name(&abs);
        for (dep, bad) in [
            // An absolute dependency path, named like a module so the walk reaches it.
            (format!("kernel/ext4.ko: {abs}\n{abs}:\n"), abs.clone()),
            (
                "kernel/ext4.ko: ../../x/shadow.ko\n../../x/shadow.ko:\n".to_string(),
                "../../x/shadow.ko".to_string(),
            ),
            (
                "kernel/ext4.ko: kernel/a.ko.xz\nkernel/a.ko.xz:\n".to_string(),
                "kernel/a.ko.xz".to_string(),
            ),
        ] {
            let (d, m, init) = moddir_with("");
            // Later lines win: replace ext4's line by the hostile one.
            let text = std::fs::read_to_string(m.join("modules.dep")).unwrap();
            std::fs::write(m.join("modules.dep"), format!("{text}{dep}")).unwrap();
            let out = d.path().join("initrd");
            let e = build(&out, &init, &m).unwrap_err();
            assert!(
                matches!(&e, InitrdError::BadModulePath { path, .. } if *path == bad),
                "{name}: {e:?}"
            );
            let written = std::fs::read(&out).unwrap_or_default();
            assert!(!written.windows(11).any(|w| w == b"host secret"));
        }
    }

    #[test]
    fn symlinked_modules_and_directories_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("ext4.ko"), "host secret").unwrap();
        // The module itself is a symlink.
        let (d, m, init) = moddir_with("");
        std::fs::remove_file(m.join("kernel/ext4.ko")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("ext4.ko"), m.join("kernel/ext4.ko"))
            .unwrap();
        let e = build(&d.path().join("initrd"), &init, &m).unwrap_err();
        assert!(matches!(e, InitrdError::NotAModuleFile { .. }), "{e:?}");
        // A directory on the way is a symlink.
        let (d, m, init) = moddir_with("kernel/fs/ext4.ko:\n");
        std::os::unix::fs::symlink(outside.path(), m.join("kernel/fs")).unwrap();
        let e = build(&d.path().join("initrd"), &init, &m).unwrap_err();
        assert!(matches!(e, InitrdError::NotAModuleFile { .. }), "{e:?}");
        // modules.dep itself is a symlink.
        let (d, m, init) = moddir_with("");
        std::fs::rename(m.join("modules.dep"), outside.path().join("modules.dep")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("modules.dep"), m.join("modules.dep"))
            .unwrap();
        let e = build(&d.path().join("initrd"), &init, &m).unwrap_err();
        assert!(matches!(e, InitrdError::ModulesDep { .. }), "{e:?}");
    }

    #[test]
    fn module_path_rule() {
        assert!(check_module_path("kernel/fs/ext4/ext4.ko"));
        for bad in [
            "",
            "/lib/x.ko",
            "../x.ko",
            "a/../x.ko",
            "./x.ko",
            "a//x.ko",
            "x.ko.xz",
            "x.ko.zst",
            ".ko",
            "a/\nb.ko",
        ] {
            assert!(!check_module_path(bad), "{bad:?}");
        }
        assert!(!check_module_path(&format!("{}.ko", "a".repeat(2000))));
    }

    #[test]
    fn builtins_are_skipped_and_missing_refused() {
        let builtin: HashSet<String> = ["ext4".to_string()].into();
        assert!(resolve_from(DEP, &builtin, &["ext4"]).unwrap().is_empty());
        assert!(matches!(
            resolve_from(DEP, &HashSet::new(), &["ext4"]),
            Err(InitrdError::MissingModule(m)) if m == "ext4"
        ));
    }
}
