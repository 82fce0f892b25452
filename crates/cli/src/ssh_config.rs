//! `banger ssh-config install | uninstall | show`: one managed `Include` block at the
//! top of the user's `~/.ssh/config`, pointing to a file banger writes, so `ssh
//! dev.vm`, `scp` and `rsync` work from any terminal.
//!
//! The user's file is edited as text and only ever by adding or removing exactly the
//! lines of banger's block: every other byte stays as it was, and `uninstall` after
//! `install` gives back the original file byte for byte (or no file, if banger created
//! it). Anything we cannot edit safely (not UTF-8, a half block, someone else's file,
//! not a regular file, over 1 MiB) is refused with the reason; a symlinked config is
//! followed only after saying so.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// First line of banger's block.
const BEGIN: &str =
    "# >>> banger: managed by `banger ssh-config`; remove with `banger ssh-config uninstall`";
/// First line of banger's block in a file banger created (uninstall then removes the
/// file if nothing else was added to it).
const BEGIN_CREATED: &str = "# >>> banger: managed by `banger ssh-config` (banger created this file); remove with `banger ssh-config uninstall`";
/// Last line of banger's block.
const END: &str = "# <<< banger";
/// The largest config we edit.
const MAX_CONFIG: u64 = 1 << 20;

/// Why the config was left alone.
#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    /// Reading, writing or renaming failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is something we must not edit.
    #[error("{} cannot be edited safely: {why}; add the line `Include {}` yourself, at the top", path.display(), include.display())]
    Unsafe {
        /// The config file.
        path: PathBuf,
        /// Why not.
        why: String,
        /// The line the user can add by hand.
        include: PathBuf,
    },
    /// The include target cannot be written in ssh_config syntax.
    #[error("{0} cannot be named in ssh_config (it contains a double quote or a newline)")]
    BadInclude(PathBuf),
}

/// What `install` or `uninstall` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The file that was (or would have been) edited.
    pub edited: PathBuf,
    /// Set when `~/.ssh/config` is a symlink: the file it points to, which was edited.
    pub followed_symlink: Option<PathBuf>,
    /// Whether anything changed (false: already installed / not installed).
    pub changed: bool,
    /// Whether the file was created (install) or removed (uninstall).
    pub file_created_or_removed: bool,
}

fn block(include: &Path, created: bool) -> Result<String, SshConfigError> {
    let p = include.display().to_string();
    if p.contains('"') || p.contains('\n') {
        return Err(SshConfigError::BadInclude(include.to_path_buf()));
    }
    let begin = if created { BEGIN_CREATED } else { BEGIN };
    Ok(format!("{begin}\nInclude \"{p}\"\n{END}\n"))
}

/// Where banger's block is: the byte range of its lines (newline included) and
/// whether banger created the file.
fn find_block(text: &str) -> Result<Option<(std::ops::Range<usize>, bool)>, String> {
    let mut start = None;
    let mut found = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let l = line.trim_end_matches(['\n', '\r']);
        if l == BEGIN || l == BEGIN_CREATED {
            if start.is_some() || found.is_some() {
                return Err("it holds more than one banger block".into());
            }
            start = Some((pos, l == BEGIN_CREATED));
        } else if l == END {
            match start.take() {
                Some((s, created)) => found = Some((s..pos + line.len(), created)),
                None => return Err("it has a banger end marker without a start".into()),
            }
        }
        pos += line.len();
    }
    if start.is_some() {
        return Err("its banger block has no end marker".into());
    }
    Ok(found)
}

/// `text` with banger's block for `include` at the top; `None` when it is already
/// there unchanged.
pub fn add_block(text: &str, include: &Path, created: bool) -> Result<Option<String>, String> {
    match find_block(text)? {
        Some((range, was_created)) => {
            let want = block(include, was_created).map_err(|e| e.to_string())?;
            if text[range.clone()] == want {
                return Ok(None);
            }
            let mut out = text.to_string();
            out.replace_range(range, &want);
            Ok(Some(out))
        }
        None => {
            let b = block(include, created).map_err(|e| e.to_string())?;
            Ok(Some(format!("{b}{text}")))
        }
    }
}

/// `text` without banger's block and whether banger had created the file; `None` when
/// there is no block.
pub fn remove_block(text: &str) -> Result<Option<(String, bool)>, String> {
    Ok(find_block(text)?.map(|(range, created)| {
        let mut out = text.to_string();
        out.replace_range(range, "");
        (out, created)
    }))
}

/// A config file resolved and read: the file to edit, the symlink target when
/// `config` was a link, and its text and mode (None: absent).
struct Opened {
    real: PathBuf,
    followed: Option<PathBuf>,
    current: Option<(String, u32)>,
}

/// Resolve `config` (following one symlink, reported) and check it is ours to edit.
fn open_config(config: &Path, include: &Path) -> Result<Opened, SshConfigError> {
    let unsafe_ = |path: &Path, why: String| SshConfigError::Unsafe {
        path: path.to_path_buf(),
        why,
        include: include.to_path_buf(),
    };
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| SshConfigError::Io { what, path, source }
    };
    let (real, followed) = match std::fs::symlink_metadata(config) {
        Ok(md) if md.file_type().is_symlink() => {
            let target = std::fs::canonicalize(config).map_err(io("resolving", config))?;
            (target.clone(), Some(target))
        }
        _ => (config.to_path_buf(), None),
    };
    let md = match std::fs::metadata(&real) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Opened {
                real,
                followed,
                current: None,
            })
        }
        Err(e) => return Err(io("reading", &real)(e)),
    };
    if !md.is_file() {
        return Err(unsafe_(&real, "it is not a regular file".into()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me && me != 0 {
        return Err(unsafe_(
            &real,
            format!("it belongs to uid {}, not to you", md.uid()),
        ));
    }
    if md.len() > MAX_CONFIG {
        return Err(unsafe_(
            &real,
            format!("it is larger than {MAX_CONFIG} bytes"),
        ));
    }
    let bytes = std::fs::read(&real).map_err(io("reading", &real))?;
    let text =
        String::from_utf8(bytes).map_err(|_| unsafe_(&real, "it is not UTF-8 text".into()))?;
    Ok(Opened {
        real,
        followed,
        current: Some((text, md.mode() & 0o7777)),
    })
}

/// Replace `path` with `text` atomically: a temp file beside it, fsync, rename,
/// fsync of the directory. A crash leaves the old file or the new one.
fn write_atomically(path: &Path, text: &str, mode: u32) -> Result<(), SshConfigError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".banger-ssh-config.{}", std::process::id()));
    let io = |what, p: &Path| {
        let p = p.to_path_buf();
        move |source| SshConfigError::Io {
            what,
            path: p,
            source,
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    let r = (|| {
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(io("writing", path))
}

/// Add banger's block to `config` (creating it, and its directory 0700, if needed).
pub fn install(config: &Path, include: &Path) -> Result<Outcome, SshConfigError> {
    let Opened {
        real,
        followed,
        current,
    } = open_config(config, include)?;
    let created = current.is_none();
    let (text, mode) = current.unwrap_or((String::new(), 0o600));
    let new = add_block(&text, include, created).map_err(|why| SshConfigError::Unsafe {
        path: real.clone(),
        why,
        include: include.to_path_buf(),
    })?;
    let mut out = Outcome {
        edited: real.clone(),
        followed_symlink: followed,
        ..Outcome::default()
    };
    if let Some(new) = new {
        if let Some(dir) = real.parent().filter(|d| !d.exists()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| SshConfigError::Io {
                    what: "creating",
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        write_atomically(&real, &new, mode)?;
        out.changed = true;
        out.file_created_or_removed = created;
    }
    Ok(out)
}

/// Remove banger's block from `config`; the file goes too if banger created it and
/// nothing else is in it.
pub fn uninstall(config: &Path, include: &Path) -> Result<Outcome, SshConfigError> {
    let Opened {
        real,
        followed,
        current,
    } = open_config(config, include)?;
    let mut out = Outcome {
        edited: real.clone(),
        followed_symlink: followed,
        ..Outcome::default()
    };
    let Some((text, mode)) = current else {
        return Ok(out);
    };
    let removed = remove_block(&text).map_err(|why| SshConfigError::Unsafe {
        path: real.clone(),
        why,
        include: include.to_path_buf(),
    })?;
    if let Some((rest, created)) = removed {
        if created && rest.is_empty() {
            std::fs::remove_file(&real).map_err(|source| SshConfigError::Io {
                what: "removing",
                path: real.clone(),
                source,
            })?;
            out.file_created_or_removed = true;
        } else {
            write_atomically(&real, &rest, mode)?;
        }
        out.changed = true;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INC: &str = "/var/lib/banger/ssh/config";

    #[test]
    fn install_then_uninstall_is_byte_identical() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("config");
        let original = "Host work\r\n  User me\n\n# no trailing newline";
        std::fs::write(&cfg, original).unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).unwrap();
        let o = install(&cfg, Path::new(INC)).unwrap();
        assert!(o.changed && !o.file_created_or_removed);
        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.starts_with(BEGIN), "{text}");
        assert!(text.contains("Include \"/var/lib/banger/ssh/config\"\n"));
        assert!(text.ends_with(original));
        // Idempotent.
        assert!(!install(&cfg, Path::new(INC)).unwrap().changed);
        let o = uninstall(&cfg, Path::new(INC)).unwrap();
        assert!(o.changed);
        assert_eq!(std::fs::read(&cfg).unwrap(), original.as_bytes());
        let mode = std::fs::metadata(&cfg).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(!uninstall(&cfg, Path::new(INC)).unwrap().changed);
    }

    #[test]
    fn a_file_banger_created_goes_away_again() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join(".ssh/config");
        let o = install(&cfg, Path::new(INC)).unwrap();
        assert!(o.file_created_or_removed);
        let md = std::fs::metadata(&cfg).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(d.path().join(".ssh")).unwrap().mode() & 0o777,
            0o700
        );
        assert!(
            uninstall(&cfg, Path::new(INC))
                .unwrap()
                .file_created_or_removed
        );
        assert!(!cfg.exists());
        // But not when the user added to it meanwhile.
        install(&cfg, Path::new(INC)).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&cfg).unwrap();
        f.write_all(b"Host x\n").unwrap();
        uninstall(&cfg, Path::new(INC)).unwrap();
        assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "Host x\n");
    }

    #[test]
    fn a_moved_include_target_is_updated_in_place() {
        let t = "Host a\n";
        let with = add_block(t, Path::new("/old"), false).unwrap().unwrap();
        let moved = add_block(&with, Path::new("/new"), false).unwrap().unwrap();
        assert!(moved.contains("Include \"/new\"") && !moved.contains("/old"));
        assert_eq!(remove_block(&moved).unwrap().unwrap().0, t);
    }

    #[test]
    fn unsafe_configs_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("config");
        std::fs::write(&cfg, [0xff, 0xfe, b'\n']).unwrap();
        assert!(matches!(
            install(&cfg, Path::new(INC)),
            Err(SshConfigError::Unsafe { .. })
        ));
        std::fs::write(&cfg, format!("{BEGIN}\nInclude x\n")).unwrap();
        let e = install(&cfg, Path::new(INC)).unwrap_err().to_string();
        assert!(
            e.contains("no end marker") && e.contains("Include /var/lib"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(&cfg).unwrap(),
            format!("{BEGIN}\nInclude x\n")
        );
        std::fs::remove_file(&cfg).unwrap();
        std::fs::create_dir(&cfg).unwrap();
        assert!(install(&cfg, Path::new(INC)).is_err());
        assert!(matches!(
            install(&d.path().join("c2"), Path::new("/a\"b")),
            Err(SshConfigError::Unsafe { .. }) | Err(SshConfigError::BadInclude(_))
        ));
    }

    #[test]
    fn a_symlinked_config_is_followed_and_reported() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("dotfiles-config");
        std::fs::write(&real, "Host a\n").unwrap();
        let link = d.path().join("config");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let o = install(&link, Path::new(INC)).unwrap();
        assert_eq!(
            o.followed_symlink.as_deref(),
            Some(real.canonicalize().unwrap().as_path())
        );
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::read_to_string(&real).unwrap().contains("Include"));
        uninstall(&link, Path::new(INC)).unwrap();
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "Host a\n");
    }
}
