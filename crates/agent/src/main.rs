//! `banger-agent`: one static binary, three roles.
//!
//! * As PID 1 of banger's initrd ([`init`]): load the virtio modules, find banger's
//!   disks by ext4 label, build the overlay root, configure eth0 from the kernel
//!   command line, then either hand over to the image's init (systemd) or, with
//!   `banger.init=agent`, stay the guest's init itself ([`pid1`]).
//!   With `banger.mode=export` it instead tars a stopped VM's merged disks onto an
//!   export disk for the host ([`export`]).
//! * As `banger-agent serve` under the image's init: serve the agent channel
//!   (banger-channel: exec, file transfer, ping, ports, shutdown) on the virtio-serial
//!   port `org.banger.agent` and on vsock port 10789 ([`serve`]).
//! * As `banger-agent serve --listen PATH` on a host: the same on a unix socket, for
//!   tests and debugging (shutdown refused).
//!
//! It is one binary so the initrd and the image carry the same, version-matched code.

mod cmdline;
mod exec;
mod export;
mod files;
mod handler;
mod identity;
mod info;
mod init;
mod netconf;
mod pid1;
mod pty;
mod reap;
mod serve;
mod sshd;
mod sys;
mod users;
mod vsock;

fn usage() -> ! {
    eprintln!(
        "usage: banger-agent serve [PORT]          serve the virtio-serial PORT (default {}) and vsock\n\
         \x20      banger-agent serve --listen PATH   serve a unix socket (tests, debugging)\n\
         (as PID 1 it acts as banger's initrd init)",
        serve::DEFAULT_PORT
    );
    std::process::exit(2);
}

fn main() {
    if std::process::id() == 1 {
        init::run(); // never returns
    }
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match (arg(1), arg(2)) {
        (Some("serve"), second) => {
            // Before any thread exists: children are waited for by the reaper only.
            reap::block(&[libc::SIGCHLD]);
            reap::start_thread();
            let e = match (second, arg(3)) {
                (Some("--listen"), Some(path)) => match serve::listen_unix(path.as_ref()) {
                    Ok(()) => return,
                    Err(e) => e,
                },
                (Some("--listen"), None) => usage(),
                (port, _) => serve::as_service(port.unwrap_or(serve::DEFAULT_PORT)),
            };
            eprintln!("banger-agent: {e}");
            std::process::exit(1);
        }
        (Some("--version"), _) => println!("banger-agent {}", env!("CARGO_PKG_VERSION")),
        _ => usage(),
    }
}
