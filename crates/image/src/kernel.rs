//! Kernels for the local kernel store: recognise a kernel file, learn its release,
//! find its modules and build banger's initrd for it.
//!
//! A stored kernel is a directory with the kernel image ([`files::KERNEL`]) and
//! banger's initrd ([`files::INITRD`]); images copy (hard-link) both, so a kernel
//! can be removed without breaking the images made with it.

use crate::files;
use crate::initrd::{self, InitrdError};
use crate::vmlinux;
use std::path::{Path, PathBuf};

/// Why a kernel could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The file is neither an x86 bzImage nor an ELF vmlinux.
    #[error("{0} is not a Linux kernel (no x86 bzImage header and not ELF): pass a /boot/vmlinuz-* file or a vmlinux")]
    NotAKernel(PathBuf),
    /// The kernel's release string could not be found.
    #[error("cannot tell the release of kernel {0}: pass it with --release")]
    NoRelease(PathBuf),
    /// No modules directory for the release was found where it was looked for.
    #[error("no modules directory with a modules.dep for release {release} under {dir} (looked in lib/modules/{release}, usr/lib/modules/{release}, {release}/ and the directory itself)")]
    NoModules {
        /// The directory searched.
        dir: PathBuf,
        /// The kernel release looked for.
        release: String,
    },
    /// Building the initrd failed.
    #[error(transparent)]
    Initrd(#[from] InitrdError),
    /// Reading or writing a file failed.
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

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KernelError {
    let path = path.to_path_buf();
    move |source| KernelError::Io { what, path, source }
}

/// What kind of kernel image a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// x86 boot protocol image (`/boot/vmlinuz-*`): QEMU boots it; Firecracker
    /// gets a vmlinux extracted from it.
    BzImage,
    /// Uncompressed ELF `vmlinux`: what Firecracker boots.
    Elf,
}

/// Recognise a kernel image by its header.
pub fn format(bytes: &[u8]) -> Option<KernelFormat> {
    if bytes.get(0x202..0x206) == Some(b"HdrS".as_slice()) {
        Some(KernelFormat::BzImage)
    } else if vmlinux::is_elf(bytes) {
        Some(KernelFormat::Elf)
    } else {
        None
    }
}

/// The kernel release (`uname -r`) recorded in a kernel image: the setup header's
/// `kernel_version` string for a bzImage, the `Linux version` banner for an ELF.
pub fn release(bytes: &[u8]) -> Option<String> {
    let banner = match format(bytes)? {
        KernelFormat::BzImage => {
            // boot.rst: kernel_version (0x20E) is an offset from 0x200 to a NUL-terminated
            // string starting with the release.
            let off = u16::from_le_bytes(bytes.get(0x20E..0x210)?.try_into().ok()?);
            let start = usize::from(off) + 0x200;
            let rest = bytes.get(start..)?;
            let end = rest.iter().position(|&b| b == 0)?.min(256);
            &rest[..end]
        }
        KernelFormat::Elf => {
            const NEEDLE: &[u8] = b"Linux version ";
            let at = bytes.windows(NEEDLE.len()).position(|w| w == NEEDLE)?;
            let rest = &bytes[at + NEEDLE.len()..];
            &rest[..rest.len().min(256)]
        }
    };
    let text = std::str::from_utf8(banner).ok()?;
    let rel = text.split_whitespace().next()?;
    let ok = !rel.is_empty()
        && rel.len() <= 64
        && rel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b));
    ok.then(|| rel.to_string())
}

/// Find the modules directory of `release` in an unpacked tree (a modules tarball
/// or a root filesystem).
///
/// `dir` is trusted (the caller unpacked it); nothing below it is: every candidate
/// is walked one component at a time without following a symlink, so a symlinked
/// `lib`, `lib/modules` or `lib/modules/<release>` in a downloaded tree can never
/// lead outside it (a merged-usr root still works through `usr/lib/modules`).
pub fn find_moddir(dir: &Path, release: &str) -> Result<PathBuf, KernelError> {
    let none = || KernelError::NoModules {
        dir: dir.to_path_buf(),
        release: release.to_string(),
    };
    if release.is_empty() || release.contains('/') || release == "." || release == ".." {
        return Err(none());
    }
    let mut root = crate::oci::fsat::Root::open(dir, false).map_err(io("open", dir))?;
    let candidates: [&[&str]; 4] = [
        &["lib", "modules", release],
        &["usr", "lib", "modules", release],
        &[release],
        &[],
    ];
    for comps in candidates {
        let comps: Vec<String> = comps.iter().map(|c| c.to_string()).collect();
        let Ok(fd) = root.dir(&comps, false, &mut vec![]) else {
            continue;
        };
        let dep = crate::oci::fsat::kind_at(std::os::fd::AsFd::as_fd(&fd), "modules.dep");
        if matches!(dep, Ok(Some(rustix::fs::FileType::RegularFile))) {
            return Ok(comps.iter().fold(dir.to_path_buf(), |p, c| p.join(c)));
        }
    }
    Err(none())
}

/// Where banger's initrd comes from for an imported kernel.
#[derive(Debug, Clone)]
pub enum InitrdSource {
    /// Build it from the kernel's modules directory (`lib/modules/<release>`).
    Modules(PathBuf),
    /// Build it without modules: the kernel has virtio, ext4 and overlay built in.
    BuiltIn,
    /// Use this file as is (it must run banger's init).
    File(PathBuf),
}

/// A kernel ready in a staging directory.
#[derive(Debug, Clone)]
pub struct PreparedKernel {
    /// Kernel release.
    pub release: String,
    /// Kernel image size in bytes.
    pub size_bytes: u64,
    /// Kernel modules packed into the initrd.
    pub modules: usize,
}

/// Fill `staging` with [`files::KERNEL`] (a copy of `kernel`) and banger's
/// [`files::INITRD`]. `release` overrides the release read from the kernel.
pub fn prepare(
    staging: &Path,
    kernel: &Path,
    release: Option<&str>,
    initrd_from: &InitrdSource,
    agent: &Path,
) -> Result<PreparedKernel, KernelError> {
    let bytes = std::fs::read(kernel).map_err(io("read kernel", kernel))?;
    format(&bytes).ok_or_else(|| KernelError::NotAKernel(kernel.to_path_buf()))?;
    let release = match release {
        Some(r) => r.to_string(),
        None => self::release(&bytes).ok_or_else(|| KernelError::NoRelease(kernel.into()))?,
    };
    std::fs::create_dir_all(staging).map_err(io("create", staging))?;
    let dest = staging.join(files::KERNEL);
    std::fs::write(&dest, &bytes).map_err(io("write", &dest))?;
    let initrd = staging.join(files::INITRD);
    let modules = match initrd_from {
        InitrdSource::Modules(dir) => {
            let moddir = find_moddir(dir, &release)?;
            initrd::build(&initrd, agent, &moddir)?
        }
        InitrdSource::BuiltIn => initrd::build_builtin(&initrd, agent)?,
        InitrdSource::File(f) => {
            std::fs::copy(f, &initrd).map_err(io("copy initrd", f))?;
            0
        }
    };
    Ok(PreparedKernel {
        release,
        size_bytes: bytes.len() as u64,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage_with_version(v: &str) -> Vec<u8> {
        let mut b = vec![0u8; 0x1000];
        b[0x202..0x206].copy_from_slice(b"HdrS");
        let off: u16 = 0x300;
        b[0x20E..0x210].copy_from_slice(&off.to_le_bytes());
        let at = usize::from(off) + 0x200;
        b[at..at + v.len()].copy_from_slice(v.as_bytes());
        b
    }

    #[test]
    fn release_from_bzimage_header() {
        let b =
            bzimage_with_version("6.1.0-40-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        assert_eq!(format(&b), Some(KernelFormat::BzImage));
        assert_eq!(release(&b).as_deref(), Some("6.1.0-40-cloud-amd64"));
    }

    #[test]
    fn release_from_elf_banner() {
        let mut b = b"\x7fELF".to_vec();
        b.extend_from_slice(&[0; 100]);
        b.extend_from_slice(b"Linux version 6.6.0-fc (root@build) #3 SMP\0");
        assert_eq!(format(&b), Some(KernelFormat::Elf));
        assert_eq!(release(&b).as_deref(), Some("6.6.0-fc"));
    }

    #[test]
    fn junk_is_not_a_kernel_and_hostile_release_is_refused() {
        assert_eq!(format(b"hello"), None);
        assert_eq!(release(&bzimage_with_version("../../etc x")), None);
    }

    #[test]
    fn moddir_is_found_in_the_usual_places() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("usr/lib/modules/6.1.0-x");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("modules.dep"), "").unwrap();
        assert_eq!(find_moddir(d.path(), "6.1.0-x").unwrap(), m);
        assert!(matches!(
            find_moddir(d.path(), "6.2"),
            Err(KernelError::NoModules { .. })
        ));
    }

    #[test]
    fn symlinked_module_directories_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let m = outside.path().join("modules/6.1.0-x");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("modules.dep"), "").unwrap();
        // lib -> outside, lib/modules -> outside, lib/modules/<release> -> outside.
        for (link, target) in [
            ("lib", outside.path().to_path_buf()),
            ("lib/modules", outside.path().join("modules")),
            ("lib/modules/6.1.0-x", m.clone()),
            ("6.1.0-x", m.clone()),
        ] {
            let d = tempfile::tempdir().unwrap();
            let at = d.path().join(link);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&target, &at).unwrap();
            assert!(
                matches!(
                    find_moddir(d.path(), "6.1.0-x"),
                    Err(KernelError::NoModules { .. })
                ),
                "{link}"
            );
        }
        // A merged-usr root (relative lib -> usr/lib) is found through usr/lib.
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("usr/lib/modules/6.1.0-x");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("modules.dep"), "").unwrap();
        std::os::unix::fs::symlink("usr/lib", d.path().join("lib")).unwrap();
        assert_eq!(find_moddir(d.path(), "6.1.0-x").unwrap(), real);
        assert!(find_moddir(d.path(), "../x").is_err());
    }
}
