//! Thin wrappers over the few syscalls early boot needs. libc directly (not nix) keeps
//! the static guest binary small; each wrapper turns errno into an `io::Error` that
//! names the operation, because the console is the only place a boot failure shows.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(p: impl AsRef<std::ffi::OsStr>) -> io::Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| io::Error::other("path contains NUL"))
}

fn check(rc: libc::c_int, what: impl FnOnce() -> String) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{}: {e}", what())))
    }
}

/// mount(2).
pub fn mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let (s, t, f) = (cstr(src)?, cstr(target)?, cstr(fstype)?);
    let d = data.map(cstr).transpose()?;
    let dp = d
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void);
    // SAFETY: all pointers are valid NUL-terminated strings or null for the lifetime of the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, dp) };
    check(rc, || {
        format!("mount {src} on {} ({fstype})", target.display())
    })
}

/// Move an existing mount (MS_MOVE).
pub fn mount_move(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: valid C strings; MS_MOVE ignores fstype and data.
    let rc = unsafe {
        libc::mount(
            f.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    };
    check(rc, || {
        format!("move mount {} to {}", from.display(), to.display())
    })
}

/// Load a kernel module from a file (finit_module(2)). Already loaded is success.
pub fn load_module(path: &Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    use std::os::fd::AsRawFd;
    let params = cstr("")?;
    // SAFETY: fd is open for the duration of the call; params is a valid C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(io::Error::new(
        e.kind(),
        format!("load module {}: {e}", path.display()),
    ))
}

/// sethostname(2).
pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe a valid byte slice.
    let rc = unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) };
    check(rc, || format!("set hostname {name}"))
}

/// chroot(2) then chdir("/").
pub fn chroot_here() -> io::Result<()> {
    let dot = cstr(".")?;
    // SAFETY: valid C string.
    check(unsafe { libc::chroot(dot.as_ptr()) }, || "chroot .".into())?;
    std::env::set_current_dir("/")
}

/// execv(2): only returns on failure.
pub fn exec(path: &str, args: &[&str]) -> io::Error {
    let Ok(p) = cstr(path) else {
        return io::Error::other("init path contains NUL");
    };
    let cargs: Vec<CString> = args.iter().filter_map(|a| cstr(a).ok()).collect();
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: argv is a NULL-terminated array of valid C strings that outlive the call.
    unsafe { libc::execv(p.as_ptr(), argv.as_ptr()) };
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("exec {path}: {e}"))
}

/// Power the machine off (after a failed boot, an export, or the agent init's shutdown).
pub fn power_off() -> ! {
    // SAFETY: plain syscalls; as PID 1 we may reboot.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Open a directory as an `O_PATH` handle (close-on-exec), to return to it later.
pub fn open_dir_handle(p: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = cstr(p)?;
    // SAFETY: valid C string; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("open {}: {e}", p.display()),
        ));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Make the directory `dir` (an [`open_dir_handle`]) the root and working directory.
pub fn chroot_to(dir: &std::os::fd::OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fchdir on a descriptor we own.
    check(unsafe { libc::fchdir(dir.as_raw_fd()) }, || {
        "fchdir to the initrd's root".into()
    })?;
    chroot_here()
}

/// Remount `target` read-only.
pub fn remount_ro(target: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid C string; null source, type and data are allowed for a remount.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    check(rc, || format!("remount {} read-only", target.display()))
}

/// umount(2).
pub fn umount(target: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(t.as_ptr(), 0) }, || {
        format!("unmount {}", target.display())
    })
}
