//! `banger-agent`: one static binary, two roles.
//!
//! * As PID 1 of banger's initrd ([`init`]): load the virtio modules, find banger's
//!   disks by ext4 label, build the overlay root, configure eth0 from the kernel
//!   command line, and hand over to the image's real init.
//!   With `banger.mode=export` it instead tars a stopped VM's merged disks onto an
//!   export disk for the host ([`export`]).
//! * As `banger-agent serve` inside the running guest ([`agent`]): answer the host on
//!   the virtio-serial port `org.banger.agent` (ping, health, listening ports).
//!
//! It is one binary so the initrd and the image carry the same, version-matched code.

mod agent;
mod cmdline;
mod export;
mod init;
mod netconf;
mod sys;
mod vsock;

fn main() {
    if std::process::id() == 1 {
        init::run(); // never returns
    }
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let port = args
                .get(2)
                .cloned()
                .unwrap_or_else(|| agent::DEFAULT_PORT.to_string());
            if let Err(e) = agent::serve(&port) {
                eprintln!("banger-agent: {e}");
                std::process::exit(1);
            }
        }
        Some("--version") => println!("banger-agent {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!(
                "usage: banger-agent serve [PORT]\n\
                 (as PID 1 it acts as banger's initrd init)"
            );
            std::process::exit(2);
        }
    }
}
