//! `banger vm cp SRC DEST`: files and directories between the host and a running VM,
//! one side written `NAME:PATH`, as with `docker cp` and `limactl copy`.
//!
//! Both directions stream one tar through the guest agent, the channel `vm exec`
//! uses (no sshd needed in the image, no ssh crypto in the emulated guest): the
//! guest side is the image's own `tar` (GNU or busybox) under `sh`. Where it lands follows `docker cp`: onto DEST when DEST does
//! not exist, into DEST when DEST is an existing directory (a directory copied onto
//! an existing directory of the same name merges into it). Modes and modification
//! times are kept; files belong to whoever copies them (root in the guest, you on
//! the host). Symlinks are copied as symlinks, never followed. A relative guest path
//! is relative to `/root`.
//!
//! The guest is not trusted with the host: what comes back is unpacked by the `tar`
//! crate into a fresh directory beside DEST, refusing anything but regular files,
//! directories and symlinks, any path outside the one top-level name, `..` and
//! absolute paths (the crate also refuses to write through a symlink it unpacked),
//! and only then moved into place.

use crate::errors::{fail, Class};
use crate::exec::{self, Input, Request};
use crate::output;
use anyhow::Context;
use banger_channel::Command;
use banger_model::VmName;
use banger_rpc::Client;
use banger_workspace::shell_quote;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// A path on the host.
    Host(PathBuf),
    /// A path in a VM.
    Guest {
        /// The VM.
        vm: String,
        /// The path in it (absolute, or relative to /root).
        path: String,
    },
}

/// `NAME:PATH` is a guest path when NAME is a valid VM name; anything starting with
/// `/` or `.`, or without a colon, is a host path (write `./a:b` for a host file
/// with a colon in its name).
pub fn parse_side(s: &str) -> Side {
    if !s.starts_with(['/', '.']) {
        if let Some((vm, path)) = s.split_once(':') {
            if VmName::parse(vm).is_ok() {
                return Side::Guest {
                    vm: vm.to_string(),
                    path: if path.is_empty() {
                        "/root".to_string()
                    } else {
                        path.to_string()
                    },
                };
            }
        }
    }
    Side::Host(PathBuf::from(s))
}

/// What `vm cp --json` prints (the `copied` shape).
#[derive(Debug, serde::Serialize)]
struct Copied<'a> {
    /// SRC as given.
    from: &'a str,
    /// DEST as given.
    to: &'a str,
    /// Bytes copied.
    bytes: u64,
}

/// In JSON mode, the `copied` document.
fn copied(from: &str, to: &str, bytes: u64) -> anyhow::Result<()> {
    if output::json() {
        output::print_json(&Copied { from, to, bytes })?;
    }
    Ok(())
}

/// `banger vm cp SRC DEST`.
///
/// The client is unused: each direction opens its own exec connection.
pub async fn cp(_c: &mut Client, src: String, dest: String) -> anyhow::Result<ExitCode> {
    match (parse_side(&src), parse_side(&dest)) {
        (Side::Host(from), Side::Guest { vm, path }) => {
            let n = to_guest(&vm, from.clone(), path.clone()).await?;
            output::hint(format!("copied {} to {vm}:{path} ({n} bytes)", from.display()));
            copied(&src, &dest, n)?;
        }
        (Side::Guest { vm, path }, Side::Host(to)) => {
            let n = from_guest(&vm, path.clone(), to.clone()).await?;
            output::hint(format!("copied {vm}:{path} to {} ({n} bytes)", to.display()));
            copied(&src, &dest, n)?;
        }
        (Side::Host(_), Side::Host(_)) => {
            return Err(fail(
                Class::Usage,
                "neither side names a VM: write one as NAME:PATH (banger vm cp ./file dev:/root/)",
            ))
        }
        (Side::Guest { .. }, Side::Guest { .. }) => {
            return Err(fail(
                Class::Usage,
                "both sides name a VM: copy through the host (banger vm cp a:/x ./x, then banger vm cp ./x b:/x)",
            ))
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The last component of `p`, as the name the copy carries.
fn base_name(p: &Path) -> anyhow::Result<String> {
    p.components()
        .next_back()
        .and_then(|c| match c {
            Component::Normal(n) => n.to_str().map(str::to_string),
            _ => None,
        })
        .with_context(|| format!("{}: name a file or directory", p.display()))
}

/// The guest shell line that unpacks a tar with one top-level `name` from stdin at
/// `dest`, following `docker cp`'s placement rules.
fn unpack_script(dest: &str, name: &str) -> String {
    format!(
        r#"set -e
cd /root
dest={dest} name={name}
if [ -d "$dest" ]; then target="${{dest%/}}/$name"; else target="$dest"; fi
parent=$(dirname -- "$target")
[ -d "$parent" ] || {{ echo "$parent: no such directory in the guest" >&2; exit 2; }}
tmp=$(mktemp -d "$parent/.banger-cp.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
tar -C "$tmp" --no-same-owner -xpf -
if [ -d "$tmp/$name" ] && [ ! -L "$tmp/$name" ]; then
  if [ -d "$target" ] && [ ! -L "$target" ]; then cp -a -- "$tmp/$name/." "$target/"
  elif [ -e "$target" ] || [ -L "$target" ]; then echo "$target: cannot overwrite a non-directory with a directory" >&2; exit 2
  else mv -- "$tmp/$name" "$target"; fi
else
  if [ -d "$target" ] && [ ! -L "$target" ]; then echo "$target: cannot overwrite a directory with a non-directory" >&2; exit 2; fi
  mv -f -- "$tmp/$name" "$target"
fi
"#,
        dest = shell_quote(dest),
        name = shell_quote(name),
    )
}

/// The guest shell line that writes `path` as a tar with one top-level name.
fn pack_script(path: &str) -> String {
    format!(
        r#"set -e
cd /root
p={p}
[ -e "$p" ] || [ -L "$p" ] || {{ echo "$p: no such file or directory in the guest" >&2; exit 2; }}
cd -- "$(dirname -- "$p")"
# GNU tar stores hard links as plain files on request; busybox tar cannot, and a
# hard link it sends is refused on the host with a clear message.
h=; tar --help 2>&1 | grep -q -- --hard-dereference && h=--hard-dereference
exec tar $h -cf - -- "$(basename -- "$p")"
"#,
        p = shell_quote(match path.trim_end_matches('/') {
            "" => "/",
            t => t,
        })
    )
}

/// The exec request for a guest-side shell script (no pty, no entrypoint).
fn script(line: String) -> Request {
    let mut req = Request::from_argv(&[]);
    req.command = Command::Shell(line);
    req
}

/// Host → guest; returns the bytes sent. A thread writes the tar into a pipe whose
/// other end is the unpacking script's stdin.
async fn to_guest(vm: &str, from: PathBuf, dest: String) -> anyhow::Result<u64> {
    let md = std::fs::symlink_metadata(&from)
        .with_context(|| format!("{}: cannot read it on the host", from.display()))?;
    let name = base_name(&std::path::absolute(&from)?)?;
    let (reader, writer) = std::io::pipe().context("making a pipe for the tar stream")?;
    let (name2, from2) = (name.clone(), from.clone());
    let packer = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut counted = Counting {
            inner: std::io::BufWriter::with_capacity(1 << 20, writer),
            n: 0,
        };
        {
            let mut b = tar::Builder::new(&mut counted);
            b.follow_symlinks(false);
            b.mode(tar::HeaderMode::Complete);
            if md.is_dir() {
                b.append_dir_all(&name2, &from2)?;
            } else {
                b.append_path_with_name(&from2, &name2)?;
            }
            b.finish()?;
        }
        counted.flush()?;
        Ok(counted.n)
    });
    let code = exec::run(
        vm,
        script(unpack_script(&dest, &name)),
        Input::Reader(Box::new(reader)),
        &mut tokio::io::sink(),
    )
    .await?;
    let packed = packer
        .join()
        .map_err(|_| anyhow::anyhow!("writing the tar stream stopped unexpectedly"))?;
    if code != 0 {
        return Err(fail(
            Class::Failed,
            format!("copying into {vm} failed (the guest's tar exited with status {code})"),
        ));
    }
    packed.with_context(|| format!("reading {}", from.display()))
}

/// A writer that counts what passes.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Guest → host; returns the bytes received.
async fn from_guest(vm: &str, path: String, to: PathBuf) -> anyhow::Result<u64> {
    let name = base_name(Path::new(&path))
        .or_else(|_| base_name(Path::new(path.trim_end_matches('/'))))?;
    let target = if to.is_dir() { to.join(&name) } else { to };
    let parent = std::path::absolute(&target)?
        .parent()
        .map(Path::to_path_buf)
        .context("the destination has no parent directory")?;
    if !parent.is_dir() {
        return Err(fail(
            Class::NotFound,
            format!("{}: no such directory on the host", parent.display()),
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".banger-cp.")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    // The guest's tar goes into a pipe; a blocking task unpacks from its other end.
    // When the unpacker refuses the stream it closes the pipe, the guest's tar gets
    // a broken pipe, and the unpacker's reason is what the user sees.
    let (reader, writer) = std::io::pipe().context("making a pipe for the tar stream")?;
    let dir = tmp.path().to_path_buf();
    let name2 = name.clone();
    let unpacker = tokio::task::spawn_blocking(move || unpack(reader, &dir, &name2));
    let mut sink = tokio::fs::File::from_std(std::fs::File::from(OwnedFd::from(writer)));
    let code = exec::run(vm, script(pack_script(&path)), Input::Null, &mut sink).await;
    drop(sink);
    let unpacked = unpacker.await?;
    // A failed exec explains itself best; then a refused stream (the guest's tar
    // then saw a broken pipe); then the guest's own failure.
    let code = code?;
    let n = unpacked?;
    if code != 0 {
        return Err(fail(
            Class::Failed,
            format!("copying from {vm} failed (the guest's tar exited with status {code})"),
        ));
    }
    place(&tmp.path().join(&name), &target)?;
    Ok(n)
}

/// Unpack a guest's tar into `dir`, accepting only entries under `name`; returns
/// the bytes read.
fn unpack(r: impl Read, dir: &Path, name: &str) -> anyhow::Result<u64> {
    let mut counted = CountingReader { inner: r, n: 0 };
    unpack_from(&mut counted, dir, name)?;
    Ok(counted.n)
}

fn unpack_from(r: impl Read, dir: &Path, name: &str) -> anyhow::Result<()> {
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    a.set_preserve_mtime(true);
    a.set_unpack_xattrs(false);
    a.set_overwrite(false);
    for e in a.entries().context("reading the guest's tar stream")? {
        let mut e = e.context("reading the guest's tar stream")?;
        let p = e
            .path()
            .context("a path in the guest's tar stream")?
            .into_owned();
        let mut comps = p.components();
        let first_ok = matches!(comps.next(), Some(Component::Normal(n)) if n == name);
        if !first_ok || !comps.all(|c| matches!(c, Component::Normal(_))) {
            anyhow::bail!("the guest sent {} outside {name}: refused", ui_path(&p));
        }
        use tar::EntryType as T;
        match e.header().entry_type() {
            T::Regular | T::Directory | T::Symlink => {}
            other => anyhow::bail!(
                "the guest sent {} of type {other:?}; only files, directories and symlinks are copied",
                ui_path(&p)
            ),
        }
        if !e
            .unpack_in(dir)
            .context("unpacking the guest's tar stream")?
        {
            anyhow::bail!(
                "the guest sent {}, which escapes its directory",
                ui_path(&p)
            );
        }
    }
    Ok(())
}

fn ui_path(p: &Path) -> String {
    crate::ui::printable(&p.display().to_string())
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Move the unpacked `src` to `target`: renamed there when `target` does not exist,
/// merged into it when both are directories, replacing it when both are not.
fn place(src: &Path, target: &Path) -> anyhow::Result<()> {
    let s = std::fs::symlink_metadata(src).context("the guest sent nothing")?;
    let t = std::fs::symlink_metadata(target).ok();
    match t {
        None => std::fs::rename(src, target)
            .with_context(|| format!("moving the copy to {}", target.display())),
        Some(t) if t.is_dir() && s.is_dir() => merge(src, target),
        Some(t) if t.is_dir() => Err(fail(
            Class::Failed,
            format!(
                "{}: cannot overwrite a directory with a non-directory",
                target.display()
            ),
        )),
        Some(_) if s.is_dir() => Err(fail(
            Class::Failed,
            format!(
                "{}: cannot overwrite a non-directory with a directory",
                target.display()
            ),
        )),
        Some(_) => {
            std::fs::rename(src, target).with_context(|| format!("replacing {}", target.display()))
        }
    }
}

fn merge(src: &Path, dst: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(src)? {
        let e = e?;
        place(&e.path(), &dst.join(e.file_name()))?;
    }
    // The directory's own mode comes from the source, as cp -a would do.
    let mode = std::fs::symlink_metadata(src)?.permissions();
    std::fs::set_permissions(dst, mode)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_match_the_copied_shape() {
        let c = Copied {
            from: "./a",
            to: "dev:/root/a",
            bytes: 3,
        };
        crate::schema::assert_shape("copied", &serde_json::to_value(&c).unwrap());
    }

    #[test]
    fn sides_parse_like_docker_cp() {
        assert_eq!(
            parse_side("dev:/etc/hosts"),
            Side::Guest {
                vm: "dev".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(
            parse_side("dev:"),
            Side::Guest {
                vm: "dev".into(),
                path: "/root".into()
            }
        );
        assert_eq!(parse_side("./a:b"), Side::Host("./a:b".into()));
        assert_eq!(parse_side("/x:y"), Side::Host("/x:y".into()));
        assert_eq!(parse_side("Not_A_Vm:x"), Side::Host("Not_A_Vm:x".into()));
        assert_eq!(parse_side("file"), Side::Host("file".into()));
    }

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h
    }

    #[test]
    fn a_directory_comes_back_with_its_modes() {
        let t = tar_of(|b| {
            b.append_data(
                &mut header(tar::EntryType::Directory, 0o750, 0),
                "d",
                &[][..],
            )
            .unwrap();
            b.append_data(
                &mut header(tar::EntryType::Regular, 0o755, 3),
                "d/run",
                &b"\0\x01\xff"[..],
            )
            .unwrap();
            let mut l = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut l, "d/link", "run").unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        unpack(&t[..], dir.path(), "d").unwrap();
        let run = dir.path().join("d/run");
        assert_eq!(std::fs::read(&run).unwrap(), b"\0\x01\xff");
        assert_eq!(
            std::fs::metadata(&run).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("d/link")).unwrap(),
            Path::new("run")
        );
    }

    #[test]
    fn hostile_streams_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Outside the one name.
        let t = tar_of(|b| {
            b.append_data(
                &mut header(tar::EntryType::Regular, 0o644, 1),
                "other",
                &b"x"[..],
            )
            .unwrap();
        });
        assert!(unpack(&t[..], dir.path(), "d").is_err());
        // A device node.
        let t = tar_of(|b| {
            b.append_data(&mut header(tar::EntryType::Char, 0o644, 0), "d", &[][..])
                .unwrap();
        });
        assert!(unpack(&t[..], dir.path(), "d").is_err());
        // Writing through a symlink it sent.
        let outside = tempfile::tempdir().unwrap();
        let t = tar_of(|b| {
            let mut l = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut l, "d", outside.path()).unwrap();
            b.append_data(
                &mut header(tar::EntryType::Regular, 0o644, 1),
                "d/pwned",
                &b"x"[..],
            )
            .unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        assert!(unpack(&t[..], dir.path(), "d").is_err());
        assert!(!outside.path().join("pwned").exists());
    }

    #[test]
    fn placing_follows_docker_cp() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d/sub")).unwrap();
        std::fs::write(src.join("d/sub/new"), "new").unwrap();
        std::fs::write(src.join("d/same"), "theirs").unwrap();
        let target = dir.path().join("d");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("same"), "mine").unwrap();
        std::fs::write(target.join("kept"), "kept").unwrap();
        place(&src.join("d"), &target).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("same")).unwrap(),
            "theirs"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("kept")).unwrap(),
            "kept"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("sub/new")).unwrap(),
            "new"
        );
        // A file onto a directory is refused.
        std::fs::write(dir.path().join("f"), "f").unwrap();
        assert!(place(&dir.path().join("f"), &target).is_err());
    }

    #[test]
    fn scripts_quote_paths() {
        let s = unpack_script("/root/it's here", "a b");
        assert!(s.contains("dest='/root/it'\\''s here' name='a b'"), "{s}");
        assert!(pack_script("/").contains("p=/"));
        assert!(pack_script("/root/d/").contains("p=/root/d\n"));
    }
}
