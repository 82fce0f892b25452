//! `banger image build debian`: a Debian root filesystem from Debian's archive with
//! mmdebstrap, customised for banger, turned into an ext4 base image without
//! mounting, with the image's own kernel and a banger initrd beside it.
//!
//! The build happens entirely inside a staging directory the caller provides; the
//! caller publishes it with one rename. A failure at any point leaves nothing but the
//! staging directory, which the caller removes (or the daemon sweeps on start).

use crate::ext4::{self, Ext4Error};
use crate::initrd::{self, InitrdError};
use crate::run::ToolError;
use crate::{customize, customize::CustomizeError, files, LABEL_ROOT};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Packages every banger Debian image has: init, ssh, the cloud kernel (virtio, small)
/// and the basics a development sandbox is expected to have.
pub const BASE_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "openssh-server",
    "linux-image-cloud-amd64",
    "iproute2",
    "ca-certificates",
    "git",
    "curl",
    "procps",
    "less",
    // `rsync -a dir dev.vm:` from the host (banger ssh-config) needs it in the guest.
    "rsync",
    // `banger vm run ./repo -- make test` is the main job: a compiler and make.
    "build-essential",
];

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Debian release (suite), e.g. `bookworm`.
    pub release: String,
    /// Extra packages beyond [`BASE_PACKAGES`].
    pub extra_packages: Vec<String>,
    /// Debian mirror URL; `None` lets mmdebstrap use its default.
    pub mirror: Option<String>,
    /// The static guest agent binary to install (and use as the initrd's init).
    pub agent: PathBuf,
    /// An empty directory the build may fill; the published image is this directory.
    pub staging: PathBuf,
}

/// A finished build, ready to publish.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuiltImage {
    /// The staging directory holding the image files.
    pub dir: PathBuf,
    /// Kernel release of the bundled kernel.
    pub kernel_release: String,
    /// Size of rootfs.ext4 in bytes (apparent).
    pub size_bytes: u64,
    /// Where it came from, e.g. `debian:bookworm`.
    pub source: String,
}

/// Why a Debian build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An external tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// mmdebstrap failed; the tail of its log says why.
    #[error("mmdebstrap could not build Debian {release}: {tail} (check network access to the Debian mirror, or pass a reachable mirror)")]
    Mmdebstrap {
        /// The release asked for.
        release: String,
        /// Last lines of its output.
        tail: String,
    },
    /// The guest agent binary is unusable.
    #[error("guest agent {0}; {hint}", hint = banger_hostcheck::agent::BUILD_HINT)]
    Agent(#[from] banger_hostcheck::agent::AgentError),
    /// The tree has no kernel, or more than one.
    #[error("expected exactly one kernel in the image's /boot, found {0}")]
    Kernel(usize),
    /// A package or release name contains characters apt would not accept.
    #[error("{0:?} is not a valid Debian package or release name")]
    BadName(String),
    /// A build without root cannot run on this host as this user.
    #[error("building an image without root needs user namespaces with a subordinate id range: {reason}; install Debian's uidmap (apt-get install uidmap) and give this user a range (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER), or build as root")]
    Rootless {
        /// What is missing.
        reason: String,
    },
    /// Unpacking mmdebstrap's tar (unprivileged build) failed.
    #[error("unpacking the Debian tree: {0}")]
    Unpack(#[from] crate::oci::ApplyError),
    /// Writing the ext4 image with recorded owners (unprivileged build) failed.
    #[error(transparent)]
    Rootfs(#[from] crate::oci::RootfsError),
    /// Editing the tree without following symlinks failed.
    #[error(transparent)]
    Tree(#[from] crate::oci::TreeError),
    /// Sanitising the image's /root failed.
    #[error(transparent)]
    Seed(#[from] crate::seed::SeedError),
    /// Customising the tree failed.
    #[error(transparent)]
    Customize(#[from] CustomizeError),
    /// Building the initrd failed.
    #[error(transparent)]
    Initrd(#[from] InitrdError),
    /// Creating the ext4 image failed.
    #[error(transparent)]
    Ext4(#[from] Ext4Error),
    /// A file operation in the staging directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { what, path, source }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.:".contains(&b))
}

/// Check that `agent` is a static x86-64 executable (banger-hostcheck's check, the
/// one `banger doctor` runs).
pub fn check_agent(agent: &Path) -> Result<(), BuildError> {
    Ok(banger_hostcheck::agent::check(agent)?)
}

/// Build a Debian image into `req.staging`. `progress(stage, detail)` is called as the
/// build advances (mmdebstrap's own status lines arrive as details of `debootstrap`).
///
/// As root, mmdebstrap writes the tree directly (owners and device nodes real on the
/// host) and `mkfs.ext4 -d` copies it. Any other user builds without root
/// ([`crate::debian_unshare`]): mmdebstrap's unshare mode writes a tar, which the
/// no-follow applier unpacks recording owners, and debugfs writes them into the image.
pub fn build_debian(
    req: &BuildRequest,
    progress: &mut dyn FnMut(&str, Option<String>),
) -> Result<BuiltImage, BuildError> {
    check_request(req)?;
    if !rustix::process::geteuid().is_root() {
        return crate::debian_unshare::build_debian_unshare(req, progress);
    }
    let tree = req.staging.join("tree");
    std::fs::create_dir_all(&req.staging).map_err(io("create", &req.staging))?;

    progress(
        "debootstrap",
        Some(format!("Debian {} from the archive", req.release)),
    );
    mmdebstrap(req, &[], &tree, progress)?;

    progress("customize", None);
    customize::apply(&tree, &req.agent)?;
    let kernel_release = take_kernel(req, &tree)?;

    progress("initrd", Some(format!("kernel {kernel_release}")));
    let moddir = tree.join("lib/modules").join(&kernel_release);
    initrd::build(&req.staging.join(files::INITRD), &req.agent, &moddir)?;

    progress("work-seed", None);
    let seed = req.staging.join(files::WORK_SEED);
    std::fs::rename(tree.join("root"), &seed).map_err(io("move /root of", &tree))?;
    std::fs::create_dir(tree.join("root")).map_err(io("create", &tree))?;
    warn_dropped(&crate::seed::sanitize_work_seed(&seed, None)?, progress);

    progress("ext4", None);
    let rootfs = req.staging.join(files::ROOTFS);
    let size_mib = tree_size_mib(&tree).map_err(io("measure", &tree))?;
    ext4::mkfs(&rootfs, size_mib, LABEL_ROOT, Some(&tree))?;
    std::fs::remove_dir_all(&tree).map_err(io("remove", &tree))?;
    finish(req, kernel_release, &rootfs)
}

/// Names apt would accept, and a static agent: checked before anything runs.
pub(crate) fn check_request(req: &BuildRequest) -> Result<(), BuildError> {
    if !valid_name(&req.release) {
        return Err(BuildError::BadName(req.release.clone()));
    }
    if let Some(bad) = req.extra_packages.iter().find(|p| !valid_name(p)) {
        return Err(BuildError::BadName(bad.clone()));
    }
    check_agent(&req.agent)
}

/// Log and report (as progress of the `work-seed` stage) what sanitising the work
/// seed dropped: the image's /root should not carry it, and whoever made the image
/// should know.
pub(crate) fn warn_dropped(
    dropped: &[crate::seed::Dropped],
    progress: &mut dyn FnMut(&str, Option<String>),
) {
    if let Some(w) = crate::seed::warning(dropped) {
        tracing::warn!("{w}");
        progress("work-seed", Some(w));
    }
}

/// Copy the tree's only kernel out as the image's kernel and drop Debian's own
/// initramfs (banger's replaces it: 30 MB less). Returns the kernel release.
pub(crate) fn take_kernel(req: &BuildRequest, tree: &Path) -> Result<String, BuildError> {
    let (kernel_release, vmlinuz) = find_kernel(tree)?;
    std::fs::copy(&vmlinuz, req.staging.join(files::KERNEL))
        .map_err(io("copy kernel", &vmlinuz))?;
    for e in std::fs::read_dir(tree.join("boot"))
        .map_err(io("read", tree))?
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("initrd.img") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(kernel_release)
}

/// The manifest and the [`BuiltImage`] of a finished staging directory.
pub(crate) fn finish(
    req: &BuildRequest,
    kernel_release: String,
    rootfs: &Path,
) -> Result<BuiltImage, BuildError> {
    let size_bytes = std::fs::metadata(rootfs).map_err(io("stat", rootfs))?.len();
    let built = BuiltImage {
        dir: req.staging.clone(),
        kernel_release,
        size_bytes,
        source: format!("debian:{}", req.release),
    };
    let manifest = req.staging.join(files::MANIFEST);
    let json = serde_json::to_vec_pretty(&built).unwrap_or_default();
    std::fs::write(&manifest, json).map_err(io("write", &manifest))?;
    Ok(built)
}

/// Run mmdebstrap for `req` with `extra` options (e.g. unshare mode) into `target`
/// (a directory, or a tar file with `--format=tar`).
pub(crate) fn mmdebstrap(
    req: &BuildRequest,
    extra: &[&str],
    target: &Path,
    progress: &mut dyn FnMut(&str, Option<String>),
) -> Result<(), BuildError> {
    let mut pkgs: Vec<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
    pkgs.extend(req.extra_packages.iter().cloned());
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--variant=minbase")
        .args(extra)
        .arg(format!("--include={}", pkgs.join(",")))
        .arg("--verbose")
        .arg(&req.release)
        .arg(target);
    if let Some(m) = &req.mirror {
        cmd.arg(m);
    }
    // The daemon's umask is 077; a Debian tree needs Debian's (files that maintainer
    // scripts create, such as /etc/ld.so.cache, must be readable by everyone in the
    // guest).
    // SAFETY: umask is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BuildError::Tool(ToolError::Missing {
                tool: "mmdebstrap".into(),
                package: "mmdebstrap".into(),
            }),
            _ => BuildError::Tool(ToolError::Spawn {
                tool: "mmdebstrap".into(),
                source: e,
            }),
        })?;
    let mut tail: Vec<String> = vec![];
    if let Some(err) = child.stderr.take() {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(status) = line.strip_prefix("I: ") {
                progress("debootstrap", Some(status.to_string()));
            }
            tail.push(line);
            if tail.len() > 12 {
                tail.remove(0);
            }
        }
    }
    let status = child
        .wait()
        .map_err(io("wait for mmdebstrap building", target))?;
    if !status.success() {
        return Err(BuildError::Mmdebstrap {
            release: req.release.clone(),
            tail: tail.join(" | "),
        });
    }
    Ok(())
}

fn find_kernel(tree: &Path) -> Result<(String, PathBuf), BuildError> {
    let boot = tree.join("boot");
    let mut found = vec![];
    for e in std::fs::read_dir(&boot)
        .map_err(io("read", &boot))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(rel) = name.strip_prefix("vmlinuz-") {
            found.push((rel.to_string(), e.path()));
        }
    }
    if found.len() != 1 {
        return Err(BuildError::Kernel(found.len()));
    }
    Ok(found.remove(0))
}

/// ext4 size for a tree: its content rounded up to 4 KiB blocks, plus a third for
/// metadata and a fixed margin. The base is read-only, so slack is wasted space.
fn tree_size_mib(root: &Path) -> std::io::Result<u64> {
    fn walk(p: &Path, total: &mut u64, inodes: &mut u64) -> std::io::Result<()> {
        for e in std::fs::read_dir(p)? {
            let e = e?;
            let md = e.metadata()?;
            *inodes += 1;
            if md.is_dir() {
                walk(&e.path(), total, inodes)?;
            } else if md.is_file() {
                *total += md.len().div_ceil(4096) * 4096;
            }
        }
        Ok(())
    }
    let (mut total, mut inodes) = (0u64, 0u64);
    walk(root, &mut total, &mut inodes)?;
    let bytes = total + total / 3 + inodes * 512 + 128 * 1024 * 1024;
    Ok(bytes.div_ceil(1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_runs() {
        let t = tempfile::tempdir().unwrap();
        let req = BuildRequest {
            release: "bookworm; rm -rf /".into(),
            extra_packages: vec![],
            mirror: None,
            agent: t.path().join("agent"),
            staging: t.path().join("s"),
        };
        assert!(matches!(
            build_debian(&req, &mut |_, _| {}),
            Err(BuildError::BadName(_))
        ));
        let req = BuildRequest {
            release: "bookworm".into(),
            extra_packages: vec!["--option=x".into()],
            ..req
        };
        assert!(matches!(
            build_debian(&req, &mut |_, _| {}),
            Err(BuildError::BadName(_))
        ));
        assert!(!t.path().join("s").exists());
    }

    #[test]
    fn dynamic_agent_is_refused() {
        assert!(matches!(
            check_agent(Path::new("/bin/ls")),
            Err(BuildError::Agent(_))
        ));
    }
}
