//! Shared helpers for the OCI tests: layers built entry by entry with raw header
//! bytes (so hostile names the tar crate's safe setters would refuse can be written),
//! blobs with real digests, and a snapshot of everything outside the staging dir.
#![allow(dead_code)]

use banger_image::oci::LayerDescriptor;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A layer under construction.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

/// Metadata for an entry.
#[derive(Clone, Copy)]
pub struct M {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

pub const ROOT: M = M {
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtime: 1_600_000_000,
};

pub fn m(mode: u32, uid: u64, gid: u64) -> M {
    M {
        mode,
        uid,
        gid,
        mtime: 1_600_000_000,
    }
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// Append one entry with raw name and link name bytes (each under 100 bytes).
    pub fn raw(
        &mut self,
        kind: EntryType,
        name: &[u8],
        link: Option<&[u8]>,
        meta: M,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        {
            let old = h.as_old_mut();
            assert!(name.len() < 100);
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                assert!(l.len() < 100);
                old.linkname = [0; 100];
                old.linkname[..l.len()].copy_from_slice(l);
            }
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str, meta: M) -> &mut Self {
        self.raw(EntryType::Directory, name.as_bytes(), None, meta, b"")
    }
    pub fn file(&mut self, name: &str, meta: M, data: &[u8]) -> &mut Self {
        self.raw(EntryType::Regular, name.as_bytes(), None, meta, data)
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            EntryType::Symlink,
            name.as_bytes(),
            Some(target.as_bytes()),
            m(0o777, 0, 0),
            b"",
        )
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            EntryType::Link,
            name.as_bytes(),
            Some(target.as_bytes()),
            ROOT,
            b"",
        )
    }
    pub fn whiteout(&mut self, name: &str) -> &mut Self {
        self.raw(
            EntryType::Regular,
            name.as_bytes(),
            None,
            m(0o600, 0, 0),
            b"",
        )
    }
    pub fn device(
        &mut self,
        name: &str,
        kind: EntryType,
        major: u32,
        minor: u32,
        meta: M,
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_path(name).unwrap();
        h.set_cksum();
        self.b.append(&h, &b""[..]).unwrap();
        self
    }
    /// A file with PAX records (xattrs as `SCHILY.xattr.<name>`).
    pub fn file_with_pax(
        &mut self,
        name: &str,
        meta: M,
        data: &[u8],
        pax: &[(&str, &[u8])],
    ) -> &mut Self {
        self.b.append_pax_extensions(pax.iter().copied()).unwrap();
        self.file(name, meta, data)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 1).unwrap()
}

pub fn sha256(bytes: &[u8]) -> String {
    let h = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Store `bytes` as a blob file in `dir` and describe it truthfully.
pub fn blob(dir: &Path, bytes: &[u8], media_type: &str) -> (PathBuf, LayerDescriptor) {
    let digest = sha256(bytes);
    let path = dir.join(digest.replace(':', "-"));
    std::fs::write(&path, bytes).unwrap();
    (
        path,
        LayerDescriptor {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as u64,
        },
    )
}

/// A workspace: `base/staging` (applied into), `base/outside/sentinel.txt` and an
/// empty `base/escape/` that symlinks in hostile layers point to, `base/blobs/`.
pub struct Site {
    pub base: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        let base = tempfile::tempdir().unwrap();
        for d in ["staging", "outside", "escape", "blobs"] {
            std::fs::create_dir(base.path().join(d)).unwrap();
        }
        std::fs::write(base.path().join("outside/sentinel.txt"), "sentinel\n").unwrap();
        Site { base }
    }
    pub fn staging(&self) -> PathBuf {
        self.base.path().join("staging")
    }
    pub fn outside(&self) -> PathBuf {
        self.base.path().join("outside")
    }
    pub fn escape(&self) -> PathBuf {
        self.base.path().join("escape")
    }
    pub fn blobs(&self) -> PathBuf {
        self.base.path().join("blobs")
    }
    /// Everything outside staging and blobs: path → (mode, uid, size, mtime, content).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, (u32, u32, u64, i64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        let base = self.base.path().to_path_buf();
        fn walk(p: &Path, out: &mut BTreeMap<PathBuf, (u32, u32, u64, i64, Vec<u8>)>) {
            for e in std::fs::read_dir(p).unwrap() {
                let e = e.unwrap();
                let md = e.metadata().unwrap();
                let content = if md.is_file() {
                    std::fs::read(e.path()).unwrap()
                } else {
                    vec![]
                };
                out.insert(
                    e.path(),
                    (md.mode(), md.uid(), md.len(), md.mtime(), content),
                );
                if md.is_dir() {
                    walk(&e.path(), out);
                }
            }
        }
        let md = std::fs::metadata(&base).unwrap();
        out.insert(base.clone(), (md.mode(), md.uid(), 0, 0, vec![]));
        for d in ["outside", "escape"] {
            let p = base.join(d);
            let md = std::fs::metadata(&p).unwrap();
            out.insert(p.clone(), (md.mode(), md.uid(), 0, md.mtime(), vec![]));
            walk(&p, &mut out);
        }
        out
    }
}

impl Default for Site {
    fn default() -> Self {
        Self::new()
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// What `debugfs -R 'stat PATH'` says about an inode in an ext4 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub links: u32,
    pub raw: String,
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let i = text.find(name)? + name.len();
    text[i..].split_whitespace().next()
}

pub fn have_e2fsprogs() -> bool {
    std::process::Command::new("debugfs")
        .arg("-V")
        .output()
        .is_ok()
}

pub fn debugfs_stat(img: &Path, path: &str) -> Option<Inode> {
    let out = std::process::Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat \"{}\"", path.replace('"', "\"\"")))
        .arg(img)
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    let kind_start = raw.find("Type: ")? + 6;
    let kind = raw[kind_start..].split("  ").next()?.trim().to_string();
    Some(Inode {
        kind,
        mode: u32::from_str_radix(field(&raw, "Mode:")?, 8).ok()?,
        uid: field(&raw, "User:")?.parse().ok()?,
        gid: field(&raw, "Group:")?.parse().ok()?,
        links: field(&raw, "Links:")?.parse().ok()?,
        raw,
    })
}

pub fn debugfs_cmd(img: &Path, cmd: &str) -> String {
    let out = std::process::Command::new("debugfs")
        .arg("-R")
        .arg(cmd)
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A `docker-registry serve` on a free loopback port, storage in a temp dir.
pub struct Registry {
    child: std::process::Child,
    pub host: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start one, or say why not (the caller skips).
pub fn start_registry() -> Result<Registry, String> {
    let bin = "docker-registry";
    if std::process::Command::new(bin)
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("docker-registry is not installed (apt-get install docker-registry)".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let host = format!("127.0.0.1:{port}");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = std::process::Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start docker-registry: {e}"))?;
    let mut reg = Registry { child, host, dir };
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(15) {
        if let Ok(Some(st)) = reg.child.try_wait() {
            return Err(format!("docker-registry exited at start ({st})"));
        }
        if std::net::TcpStream::connect(&reg.host).is_ok() {
            return Ok(reg);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = reg.child.kill();
    Err("docker-registry did not listen within 15 s".into())
}
