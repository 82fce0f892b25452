//! banger's initrd: the static guest init plus the few kernel modules it needs,
//! resolved from the image's own `modules.dep`.
//!
//! Debian's initramfs is ~15 MB and spends over a second in udev and networking we do
//! not need; ours is the agent binary and ~9 modules, written as an uncompressed newc
//! archive (decompression under software emulation costs more than reading it).

use std::collections::{HashMap, HashSet};
use std::io::Write;
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
pub fn resolve_modules(moddir: &Path, wanted: &[&str]) -> Result<Vec<String>, InitrdError> {
    let dep_path = moddir.join("modules.dep");
    let dep = std::fs::read_to_string(&dep_path).map_err(|source| InitrdError::ModulesDep {
        path: dep_path.clone(),
        source,
    })?;
    let builtin: HashSet<String> = std::fs::read_to_string(moddir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
    resolve_from(&dep, &builtin, wanted)
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
pub fn build(out: &Path, init_binary: &Path, moddir: &Path) -> Result<usize, InitrdError> {
    let modules = resolve_modules(moddir, GUEST_MODULES)?;
    write(out, init_binary, moddir, &modules)
}

/// Write banger's initrd with no modules at all, for a kernel that has everything
/// banger's init needs built in (the usual Firecracker-style kernel). If it does not,
/// the guest's init reports the missing disk or filesystem on the console.
pub fn build_builtin(out: &Path, init_binary: &Path) -> Result<usize, InitrdError> {
    write(out, init_binary, Path::new("/nonexistent"), &[])
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
    moddir: &Path,
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
        let src = moddir.join(rel);
        let data = std::fs::read(&src).map_err(io("read module", &src))?;
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
