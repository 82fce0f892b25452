//! End-to-end: the CLI as a user drives it, booting real guests.
//!
//! Runs only with `BANGER_E2E=1` (set by `make test`) and as root: it builds the
//! default image (on the host network, which reaches Debian's archive) and then boots
//! guests through a daemon that runs inside a network namespace this test creates, so
//! the bridge, taps and guest traffic never touch the host's network.
//!
//! **Modes** (issue 11; `e2e_sections/mode.rs`). By default (`privsep`) the suite runs
//! as banger is deployed: the test creates an unprivileged owner, makes its
//! `BANGER_HOME` the owner's, starts `banger-helper` as root (a config for the test's
//! bridge and subnet, inside the test's namespace), and every `banger` command runs as
//! the owner (`runuser -u OWNER --`, with `BANGER_HELPER_SOCKET`), so the daemon it
//! starts, and every VMM, runs as the owner. Root-side plumbing (namespaces, servers,
//! debugfs inspection of state files, kills, pgrep) stays root. While each section
//! runs, and after it, the test checks the uids of every `bangerd`, VMM and `banger`
//! of the test: the owner's, with only the helper root. `BANGER_E2E_MODE=root` runs
//! every section the old way (the CLI and daemon as root, privileged operations
//! in-process); the `root_smoke` section always runs that way, with its own namespace
//! and home, so `make test` keeps testing it. The `privsep` section tests
//! `banger system run` itself, in a namespace of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "e2e_sections/agent_cli.rs"]
mod agent_cli_section;
#[path = "e2e_sections/agent_json.rs"]
mod agent_json_section;
#[path = "e2e_sections/agent.rs"]
mod agent_section;
#[path = "e2e_sections/cli.rs"]
mod cli_section;
#[path = "e2e_sections/faults.rs"]
mod faults_section;
#[path = "e2e_sections/mode.rs"]
mod mode;
#[path = "e2e_sections/net.rs"]
mod net_section;
#[path = "e2e_sections/privsep.rs"]
mod privsep_section;
#[path = "e2e_sections/rootless.rs"]
mod rootless_section;
mod support;
#[path = "e2e_sections/system_install.rs"]
mod system_install_section;
#[path = "e2e_sections/update.rs"]
mod update_section;
#[path = "e2e_sections/warm.rs"]
mod warm_section;

struct Env {
    home: tempfile::TempDir,
    netns: String,
    /// The unprivileged owner and its root helper (privsep mode); `None` as root.
    owner: Option<mode::Owner>,
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort: stop the daemon (it keeps VMs running), kill any guest this
        // test left, remove the namespace (the owner and its helper go with `owner`).
        let _ = self.banger_host(&["daemon", "stop"]);
        let home = self.home.path().display().to_string();
        let _ = Command::new("pkill").args(["-9", "-f", &home]).status();
        self.owner.take();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn skip_reason() -> Option<&'static str> {
    if std::env::var("BANGER_E2E").as_deref() != Ok("1") {
        return Some("set BANGER_E2E=1 to boot real guests (make test does)");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespace, bridge, taps, the owner user and its helper)");
    }
    None
}

fn banger_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_banger"))
}

impl Env {
    /// The suite's environment in the mode `BANGER_E2E_MODE` picks.
    fn new() -> Env {
        Env::new_in(mode::Mode::from_env(), "")
    }

    /// A namespace (`banger-e2e-<pid><tag>`) and a BANGER_HOME; in privsep mode also
    /// the owner, who gets the home, and its helper in the namespace.
    fn new_in(mode: mode::Mode, tag: &str) -> Env {
        let bangerd = banger_bin().with_file_name("bangerd");
        assert!(
            bangerd.exists(),
            "{} missing: run `cargo build --workspace` first (make test does)",
            bangerd.display()
        );
        let home = tempfile::Builder::new()
            .prefix("banger-e2e-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let netns = format!("banger-e2e-{}{tag}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &netns]));
        run_ok(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]));
        let owner = match mode {
            mode::Mode::Privsep => Some(mode::Owner::create(&netns, home.path())),
            mode::Mode::Rootless => Some(mode::Owner::user("bgrrl", home.path())),
            mode::Mode::Root => {
                eprintln!("e2e mode root: the CLI and the daemon run as root, privileged operations in-process");
                None
            }
        };
        Env { home, netns, owner }
    }

    /// `timeout SECS [ip netns exec NS] [runuser -u OWNER --] PROG` with the test's
    /// BANGER_HOME (and the helper's socket in privsep mode): how every banger program
    /// of the test runs.
    fn program(&self, in_netns: bool, timeout: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("timeout");
        c.arg(timeout);
        if in_netns {
            c.args(["ip", "netns", "exec", &self.netns]);
        }
        if let Some(o) = &self.owner {
            c.args(["runuser", "-u", &o.user, "--"]);
            o.helper_env(&mut c);
            // Somewhere the owner may be (cargo runs tests in the crate's directory).
            c.current_dir(self.home.path());
        }
        c.arg(prog);
        c.env("BANGER_HOME", self.home.path());
        c.env_remove("XDG_RUNTIME_DIR");
        c
    }

    fn cmd(&self, in_netns: bool, args: &[&str]) -> Command {
        let mut c = self.program(in_netns, "900", banger_bin());
        c.args(args);
        c
    }

    /// `banger ARGS` as root whatever the mode, for what only root may do (`banger
    /// system ...`), with the test's BANGER_HOME.
    fn cmd_as_root(&self, in_netns: bool, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.arg("900");
        if in_netns {
            c.args(["ip", "netns", "exec", &self.netns]);
        }
        c.arg(banger_bin()).args(args);
        c.env("BANGER_HOME", self.home.path());
        c.env_remove("XDG_RUNTIME_DIR");
        c
    }

    /// `banger ARGS` in the namespace with nothing in between that would stand between
    /// it and a signal the test sends (`ip netns exec` and `setpriv` exec it): as the
    /// owner in privsep mode (`runuser` would turn SIGINT into SIGTERM).
    fn cmd_direct(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]);
        if let Some(o) = &self.owner {
            c.args(["setpriv", "--reuid", &o.uid.to_string(), "--regid"])
                .arg(o.gid.to_string())
                .arg("--init-groups");
            c.env("HOME", o.home());
            c.env("USER", &o.user);
            c.env("LOGNAME", &o.user);
            o.helper_env(&mut c);
            c.current_dir(self.home.path());
        }
        c.arg(banger_bin()).args(args);
        c.env("BANGER_HOME", self.home.path());
        c.env_remove("XDG_RUNTIME_DIR");
        c
    }

    /// What a shell line puts before a banger program to run it as `program` does
    /// (inside `ip netns exec`): `runuser -u OWNER -- env BANGER_HELPER_SOCKET=...`
    /// in privsep mode, nothing as root.
    fn shell_prefix(&self) -> String {
        match &self.owner {
            Some(o) => match o.socket() {
                Some(sock) => format!(
                    "runuser -u {} -- env BANGER_HELPER_SOCKET={} ",
                    o.user,
                    sock.display()
                ),
                None => format!("runuser -u {} -- env -u BANGER_HELPER_SOCKET ", o.user),
            },
            None => String::new(),
        }
    }

    /// Give `path` (recursively) to the owner: files the test makes for banger to read
    /// or write as its user would (git repositories, trees to register). No-op as root.
    fn give(&self, path: &Path) {
        if let Some(o) = &self.owner {
            run_ok(
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{}:{}", o.uid, o.gid))
                    .arg(path),
            );
        }
    }

    /// Run banger inside the test's network namespace.
    fn banger(&self, args: &[&str]) -> Output {
        let out = self.cmd(true, args).output().unwrap();
        log(args, &out);
        out
    }

    /// Run banger on the host network (image builds need Debian's archive).
    fn banger_host(&self, args: &[&str]) -> Output {
        let out = self.cmd(false, args).output().unwrap();
        log(args, &out);
        out
    }

    /// Run banger on the host network with extra environment (a daemon it starts
    /// inherits it).
    fn banger_host_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut c = self.cmd(false, args);
        c.envs(envs.iter().copied());
        let out = c.output().unwrap();
        log(args, &out);
        out
    }

    fn state(&self) -> PathBuf {
        self.home.path().join("state")
    }

    /// The directory of the (only built) default image.
    fn default_image_dir(&self) -> PathBuf {
        std::fs::read_dir(self.state().join("images"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("rootfs.ext4").exists() && p.join("vmlinuz").exists())
            .unwrap()
    }

    /// Unpack the default image's root filesystem into `dest` (debugfs, no mount).
    fn dump_default_rootfs(&self, dest: &Path) {
        std::fs::create_dir_all(dest).unwrap();
        run_ok(
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("rdump / {}", dest.display()))
                .arg(self.default_image_dir().join("rootfs.ext4")),
        );
    }

    /// Nothing of any VM is left: no VMM process, no tap, no VM dir, no row.
    fn assert_nothing_left(&self) {
        let home = self.home.path().display().to_string();
        let ps = Command::new("pgrep")
            .args(["-af", "qemu-system"])
            .output()
            .unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(
            !ps.lines().any(|l| l.contains(&home)),
            "a VMM process is left: {ps}"
        );
        let links = Command::new("ip")
            .args(["-n", &self.netns, "-br", "link"])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(!links.contains("bgr"), "a tap is left: {links}");
        for d in [self.state().join("vms"), self.home.path().join("run/vms")] {
            let n = std::fs::read_dir(&d).map(|r| r.count()).unwrap_or(0);
            assert_eq!(n, 0, "{} is not empty", d.display());
        }
        let list = self.banger(&["vm", "list", "--json"]);
        let vms: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(vms, serde_json::json!([]), "VM rows are left");
    }
}

fn log(args: &[&str], out: &Output) {
    eprintln!(
        "$ banger {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_ok(c: &mut Command) {
    let s = c.status().unwrap();
    assert!(s.success(), "{c:?} failed: {s}");
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A named e2e section (`BANGER_E2E_ONLY` picks them by name).
type Section = (&'static str, fn(&Env));

/// Sections that run only when `BANGER_E2E_ONLY` names them: they measure rather than
/// check (`scripts/bench` is the benchmark), and would add minutes to every `make test`.
const OPT_IN: &[&str] = &["boot_bench"];

/// One image build, then every section on it (a section per issue's acceptance list).
#[test]
fn end_to_end() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping e2e end_to_end: {why}");
        return;
    }
    let env = Env::new();
    let watch = mode::Watch::start(&env);
    let t = std::time::Instant::now();
    image_build_failures_and_default_image(&env);
    if let Some(w) = watch {
        w.finish("image_build");
    }
    eprintln!(
        "=== e2e image build: passed in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let sections: &[Section] = &[
        ("run_keep_ssh_delete", run_keep_ssh_delete),
        // Root in-process mode, in its own namespace and home (privsep mode only).
        ("root_smoke", mode::root_smoke),
        ("lifecycle", lifecycle_survives_stop_and_restarts),
        ("failures", failures_at_each_start_step_leave_nothing),
        ("concurrency", concurrent_creates_and_prune),
        ("nat", outbound_nat_reaches_an_upstream),
        ("workspaces", workspaces_round_trip),
        ("oci", oci_pull_boots),
        ("catalog", catalog_kernels_register_promote),
        ("update", update_section::vm_survives_update),
        ("faults", faults_section::faults),
        ("cli", cli_section::cli_as_users_expect_it),
        ("agent_exec", agent_section::agent_exec),
        ("busybox", agent_section::busybox),
        ("musl", agent_section::musl),
        ("nosystemd", agent_section::debian_without_systemd),
        ("boot_bench", agent_section::boot_bench),
        ("net", net_section::net),
        ("privsep", privsep_section::privsep),
        ("agent_cli", agent_cli_section::agent_cli),
        ("agent_json", agent_json_section::agent_json),
        ("system_install", system_install_section::system_install),
        // Its own user, home and namespaces, with no helper (issue 17).
        ("rootless", rootless_section::rootless),
        // Ends by deleting the default image (image delete removes its snapshots).
        ("warm", warm_section::warm),
        // Last: it leaves a database no banger of this version opens.
        ("schema", newer_schema_is_refused),
    ];
    // BANGER_E2E_ONLY=a,b runs only those sections (the image build always runs):
    // for development; `make test` runs them all.
    let only = std::env::var("BANGER_E2E_ONLY").unwrap_or_default();
    let only: Vec<&str> = only.split(',').filter(|s| !s.is_empty()).collect();
    for (name, section) in sections {
        if only.is_empty() && OPT_IN.contains(name) {
            eprintln!(
                "=== e2e section {name}: skipped (a benchmark, not a test: `make bench` measures \
                 the same; run it here with BANGER_E2E_ONLY={name})"
            );
        } else if only.is_empty() || only.contains(name) {
            eprintln!("=== e2e section {name}");
            let t = std::time::Instant::now();
            let watch = mode::Watch::start(&env);
            section(&env);
            if let Some(w) = watch {
                w.finish(name);
            }
            eprintln!(
                "=== e2e section {name}: passed in {:.0} s",
                t.elapsed().as_secs_f64()
            );
        } else {
            eprintln!("=== e2e section {name}: skipped (BANGER_E2E_ONLY)");
        }
    }
}

fn image_build_failures_and_default_image(env: &Env) {
    // `vm run` whose image build fails (an unreachable mirror, on loopback): banger's
    // own failure status, no image, no VM, no staging debris.
    let mut c = env.cmd(false, &["vm", "run", "--", "true"]);
    c.env("BANGER_DEBIAN_MIRROR", "http://127.0.0.1:9/debian");
    let failed = c.output().unwrap();
    log(
        &["vm", "run", "--", "true", "(unreachable mirror)"],
        &failed,
    );
    assert_eq!(failed.status.code(), Some(125));
    assert!(
        stderr(&failed).contains("building image debian-bookworm failed"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(
        stdout(&env.banger_host(&["image", "list", "--json"])).trim(),
        "[]"
    );
    assert_eq!(
        stdout(&env.banger_host(&["vm", "list", "--json"])).trim(),
        "[]"
    );
    assert!(env.banger_host(&["daemon", "stop"]).status.success());

    // A build that fails half-way publishes nothing and leaves no staging debris.
    let bad = env.banger_host(&[
        "image",
        "build",
        "debian",
        "--release",
        "no-such-release",
        "--name",
        "broken",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("mmdebstrap"), "{}", stderr(&bad));
    let imgs = env.banger_host(&["image", "list", "--json"]);
    assert!(!stdout(&imgs).contains("broken"));
    let staging = env.state().join("images/.staging");
    assert_eq!(
        std::fs::read_dir(&staging).map(|r| r.count()).unwrap_or(0),
        0
    );

    // The default image, built from Debian's archive on the host network.
    // --packages adds to banger's base set (checked inside a guest below).
    let built = env.banger_host(&["image", "build", "debian", "--packages", "python3-minimal"]);
    assert!(built.status.success(), "{}", stderr(&built));
    assert!(stdout(&built).contains("debian-bookworm"));
    let shown = env.banger_host(&["image", "show", "debian-bookworm", "--json"]);
    let img: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(img["source"], "debian:bookworm");
    assert!(img["kernel_release"]
        .as_str()
        .unwrap()
        .ends_with("-cloud-amd64"));
    // From here on the daemon runs inside the namespace.
    assert!(env.banger_host(&["daemon", "stop"]).status.success());
}

fn run_keep_ssh_delete(env: &Env) {
    // Output and exit status come from the guest; nothing is left afterwards.
    let out = env.banger(&[
        "vm",
        "run",
        "--",
        "sh",
        "-c",
        "echo hello-from-guest; exit 7",
    ]);
    assert_eq!(stdout(&out), "hello-from-guest\n");
    assert_eq!(out.status.code(), Some(7));
    env.assert_nothing_left();

    // A kept VM is listed running with its IP and reachable by name.
    let keep = env.banger(&[
        "vm",
        "run",
        "--keep",
        "--name",
        "dev",
        "--timings",
        "--",
        "true",
    ]);
    assert!(keep.status.success(), "{}", stderr(&keep));
    for stage in ["disks", "network", "boot", "agent", "total"] {
        assert!(
            stderr(&keep).contains(stage),
            "no {stage} timing in {}",
            stderr(&keep)
        );
    }
    let list = env.banger(&["vm", "list", "--json"]);
    let vms: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(vms[0]["name"], "dev");
    assert_eq!(vms[0]["state"], "running");
    assert!(vms[0]["ip"].as_str().unwrap().starts_with("172.30.0."));
    assert!(stdout(&env.banger(&["vm", "list"])).contains("dev"));
    let host = env.banger(&["vm", "ssh", "dev", "--", "hostname"]);
    assert_eq!(stdout(&host), "dev\n");
    let py = env.banger(&["vm", "ssh", "dev", "--", "python3", "-c", "print(6*7)"]);
    assert_eq!(stdout(&py), "42\n", "{}", stderr(&py));
    // /root is the work disk, with banger's key; / is the overlay.
    let mounts = env.banger(&[
        "vm",
        "ssh",
        "dev",
        "--",
        "findmnt -n -o FSTYPE / ; findmnt -n -o FSTYPE /root",
    ]);
    assert_eq!(stdout(&mounts), "overlay\next4\n");
    // OpenSSH works too (the fast init started the image's sshd), checking the host
    // key banger generated and pinned before the guest's first boot.
    let via = env.banger(&["vm", "ssh", "dev", "--via-ssh", "--", "hostname"]);
    assert_eq!(stdout(&via), "dev\n", "{}", stderr(&via));
    let pinned = std::fs::read_to_string(env.state().join("ssh/known_hosts")).unwrap();
    assert!(
        pinned
            .lines()
            .any(|l| l.starts_with("dev.vm,") && l.contains(" ssh-ed25519 ")),
        "no pinned host key: {pinned}"
    );

    // Bad input: clear errors, nothing changes.
    let dup = env.banger(&["vm", "create", "dev"]);
    assert_eq!(dup.status.code(), Some(4));
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    let unknown = env.banger(&["vm", "ssh", "nope", "--", "true"]);
    assert_eq!(unknown.status.code(), Some(3));
    assert!(
        stderr(&unknown).contains("no VM named nope"),
        "{}",
        stderr(&unknown)
    );
    assert!(
        stderr(&unknown).contains("op-"),
        "no op id in {}",
        stderr(&unknown)
    );
    // A refused command line in `vm run` is banger's failure: 125, like docker run.
    let bad_name = env.banger(&["vm", "run", "--name", "Not_A_Host", "--", "true"]);
    assert_eq!(bad_name.status.code(), Some(125));
    assert!(
        stderr(&bad_name).contains("lower-case"),
        "{}",
        stderr(&bad_name)
    );
    assert!(env.banger(&["vm", "delete", "nope"]).status.code() == Some(3));
    // No Firecracker on this machine: an explicit --vmm firecracker is refused up front.
    let fc = env.banger(&["vm", "create", "fc", "--vmm", "firecracker"]);
    assert_eq!(fc.status.code(), Some(5));
    assert!(
        stderr(&fc).contains("--vmm firecracker cannot be used here"),
        "{}",
        stderr(&fc)
    );
    let list = env.banger(&["vm", "list", "--json"]);
    let vms: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(vms.as_array().unwrap().len(), 1);

    // Deleting a running VM without -f changes nothing (no terminal to ask on).
    let boot_id = |env: &Env| {
        stdout(&env.banger(&[
            "vm",
            "ssh",
            "dev",
            "--",
            "cat /proc/sys/kernel/random/boot_id",
        ]))
    };
    let before = boot_id(env);
    let refused = env.banger(&["vm", "delete", "dev"]);
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("-f"), "{}", stderr(&refused));
    assert_eq!(boot_id(env), before, "a refused delete touched the VM");

    // `vm run --name EXISTING` fails and leaves the existing VM alone, running or
    // stopped (it used to delete it in its cleanup).
    let clash = env.banger(&["vm", "run", "--name", "dev", "--", "true"]);
    assert_eq!(clash.status.code(), Some(125), "{}", stderr(&clash));
    assert!(
        stderr(&clash).contains("already exists"),
        "{}",
        stderr(&clash)
    );
    assert_eq!(
        boot_id(env),
        before,
        "vm run --name EXISTING touched the VM"
    );
    assert!(env
        .banger(&["vm", "create", "cz", "--no-start"])
        .status
        .success());
    let clash = env.banger(&["vm", "run", "--name", "cz", "--", "true"]);
    assert_eq!(clash.status.code(), Some(125), "{}", stderr(&clash));
    let shown = env.banger(&["vm", "show", "cz", "--json"]);
    let cz: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(cz["state"], "stopped", "{}", stderr(&shown));
    assert!(env.banger(&["vm", "delete", "cz"]).status.success());

    // Delete -f removes everything.
    assert!(env.banger(&["vm", "delete", "-f", "dev"]).status.success());
    env.assert_nothing_left();
}

impl Env {
    fn show(&self, name: &str) -> serde_json::Value {
        let out = self.banger(&["vm", "show", name, "--json"]);
        assert!(out.status.success(), "vm show {name}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn ssh(&self, name: &str, cmd: &str) -> String {
        let out = self.banger(&["vm", "ssh", name, "--", cmd]);
        assert!(out.status.success(), "ssh {name} {cmd}: {}", stderr(&out));
        stdout(&out)
    }

    fn taps(&self) -> String {
        let links = Command::new("ip")
            .args(["-n", &self.netns, "-br", "link"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter(|l| l.starts_with("bgr"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn daemon_pid(&self) -> u32 {
        let out = self.banger(&["daemon", "status"]);
        let text = stdout(&out);
        text.split("pid ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no daemon pid in {text:?}"))
    }
}

fn lifecycle_survives_stop_and_restarts(env: &Env) {
    let created = env.banger(&["vm", "create", "keeper", "--timings"]);
    assert!(created.status.success(), "{}", stderr(&created));
    // The guest agent reports listening ports (sshd, and a listener we start).
    env.ssh(
        "keeper",
        "nohup perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalPort=>8080,Listen=>5,ReuseAddr=>1) or die; sleep 600' >/dev/null 2>&1 &",
    );
    let t = std::time::Instant::now();
    loop {
        let ports = env.banger(&["vm", "ports", "keeper", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&ports.stdout).unwrap();
        let list: Vec<u64> = v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p.as_u64())
            .collect();
        if list.contains(&22) && list.contains(&8080) {
            break;
        }
        assert!(
            t.elapsed().as_secs() < 20,
            "ports never showed 22 and 8080: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(env.show("keeper")["backend"], "qemu");

    // Written right before stop, with no sync of our own: stop must flush it.
    env.ssh(
        "keeper",
        "echo precious > /root/data.txt && echo system > /etc/banger-marker",
    );
    let stop = env.banger(&["vm", "stop", "keeper"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    let v = env.show("keeper");
    assert_eq!(v["state"], "stopped");
    assert!(v["pid"].is_null());
    assert_eq!(env.taps(), "", "a stopped VM keeps no tap");
    let start = env.banger(&["vm", "start", "keeper", "--timings"]);
    assert!(start.status.success(), "{}", stderr(&start));
    assert_eq!(
        env.ssh("keeper", "cat /root/data.txt /etc/banger-marker"),
        "precious\nsystem\n"
    );
    let boot1 = env.ssh("keeper", "cat /proc/sys/kernel/random/boot_id");
    assert!(env.banger(&["vm", "restart", "keeper"]).status.success());
    let boot2 = env.ssh("keeper", "cat /proc/sys/kernel/random/boot_id");
    assert_ne!(boot1, boot2, "restart must reboot the guest");

    // kill -9 of the daemon with two running VMs: the next call restarts it and
    // both guests are the same guests (boot_id unchanged) and still answer ssh.
    assert!(env.banger(&["vm", "create", "second"]).status.success());
    let ids: Vec<String> = ["keeper", "second"]
        .iter()
        .map(|n| env.ssh(n, "cat /proc/sys/kernel/random/boot_id"))
        .collect();
    let pid = env.daemon_pid();
    run_ok(Command::new("kill").args(["-9", &pid.to_string()]));
    while Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let list = env.banger(&["vm", "list", "--json"]);
    let vms: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    for v in vms.as_array().unwrap() {
        assert_eq!(v["state"], "running", "{v}");
    }
    assert_ne!(env.daemon_pid(), pid, "a new daemon answers");
    let after: Vec<String> = ["keeper", "second"]
        .iter()
        .map(|n| env.ssh(n, "cat /proc/sys/kernel/random/boot_id"))
        .collect();
    assert_eq!(ids, after, "guests were re-adopted, not rebooted");

    // A VMM killed behind the daemon's back: reported stopped, its tap removed.
    let second = env.show("second");
    let tap = format!("bgr{}", second["id"].as_str().unwrap());
    run_ok(Command::new("kill").args(["-9", &second["pid"].to_string()]));
    let t = std::time::Instant::now();
    while env.show("second")["state"] != "stopped" {
        assert!(
            t.elapsed().as_secs() < 20,
            "VM with a dead VMM still reported running"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(!env.taps().contains(&tap), "tap {tap} left behind");
    assert!(env
        .banger(&["vm", "delete", "-f", "keeper", "second"])
        .status
        .success());
    env.assert_nothing_left();
}

fn failures_at_each_start_step_leave_nothing(env: &Env) {
    for stage in ["disks", "network", "boot", "agent"] {
        // The daemon reads BANGER_FAIL_AT at start: restart it with the hook set.
        assert!(env.banger(&["daemon", "stop"]).status.success());
        let name = format!("fail-{stage}");
        let mut c = env.cmd(true, &["vm", "create", &name]);
        c.env("BANGER_FAIL_AT", stage);
        let out = c.output().unwrap();
        log(
            &["vm", "create", &name, &format!("(BANGER_FAIL_AT={stage})")],
            &out,
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains(&format!("injected failure at stage {stage}")),
            "{}",
            stderr(&out)
        );
        let v = env.show(&name);
        assert_eq!(v["state"], "error");
        assert!(v["error"].as_str().unwrap().contains("injected failure"));
        assert_eq!(env.taps(), "", "tap leaked at {stage}");
        let home = env.home.path().display().to_string();
        let ps = Command::new("pgrep")
            .args(["-af", "qemu-system"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&ps.stdout).contains(&home),
            "VMM leaked at {stage}"
        );
        for d in [env.state().join("vms"), env.home.path().join("run/vms")] {
            let n = std::fs::read_dir(&d).map(|r| r.count()).unwrap_or(0);
            assert_eq!(n, 0, "files leaked at {stage} in {}", d.display());
        }
        assert!(env.banger(&["vm", "delete", "-f", &name]).status.success());
    }
    assert!(env.banger(&["daemon", "stop"]).status.success());
    env.assert_nothing_left();
}

fn concurrent_creates_and_prune(env: &Env) {
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    env.cmd(
                        true,
                        &["vm", "create", &format!("c{i}"), "--memory", "512M"],
                    )
                    .output()
                    .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, o) in outs.iter().enumerate() {
        log(&["vm", "create", &format!("c{i}"), "(concurrent)"], o);
        assert!(o.status.success(), "c{i}: {}", stderr(o));
    }
    let list = env.banger(&["vm", "list", "--json"]);
    let vms: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let mut ips: Vec<&str> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 4);
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), 4, "IPs collided: {vms}");

    // prune -f deletes exactly the VMs that are not running.
    assert!(env.banger(&["vm", "stop", "c0"]).status.success());
    assert!(env.banger(&["vm", "kill", "c1"]).status.success());
    assert!(env
        .banger(&["vm", "create", "c4", "--no-start"])
        .status
        .success());
    assert_eq!(env.show("c4")["state"], "stopped");
    let pruned = env.banger(&["vm", "prune", "-f"]);
    assert!(pruned.status.success());
    let pruned_out = stdout(&pruned);
    let mut deleted: Vec<&str> = pruned_out
        .lines()
        .filter_map(|l| l.strip_prefix("deleted "))
        .map(str::trim)
        .collect::<Vec<_>>();
    deleted.sort_unstable();
    assert_eq!(deleted, ["c0", "c1", "c4"]);
    let list = env.banger(&["vm", "list", "--json"]);
    let vms: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let mut left: Vec<&str> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    left.sort_unstable();
    assert_eq!(left, ["c2", "c3"]);
    assert!(env
        .banger(&["vm", "delete", "-f", "c2", "c3"])
        .status
        .success());
    env.assert_nothing_left();
}

/// Guests reach networks beyond the host through banger's NAT. A second namespace
/// stands in for "the internet" (198.18.0.0/24, the benchmarking range, on a veth
/// pair): nothing leaves the machine. Its server must see the host's address, not
/// the guest's.
/// A second network namespace standing in for the internet, joined to the test's by a
/// veth pair: `198.18.<n>.2` on the test's side (`e2e<tag>0`), `198.18.<n>.1` on its
/// own (`e2e<tag>1`). Deleted on drop (which also ends every process left in it).
pub(crate) struct Upstream {
    /// Its name: the test's namespace with `-<tag>`.
    pub netns: String,
}

impl Upstream {
    /// Make it: `tag` names it and its veth ends, `n` picks its /24.
    pub(crate) fn new(env: &Env, tag: &str, n: u8) -> Self {
        let netns = format!("{}-{tag}", env.netns);
        let ip = |args: &[&str]| run_ok(Command::new("ip").args(args));
        ip(&["netns", "add", &netns]);
        let me = Self { netns };
        let up = me.netns.as_str();
        let (near, far) = (format!("e2e{tag}0"), format!("e2e{tag}1"));
        ip(&["-n", up, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &env.netns, "link", "add", &near, "type", "veth", "peer", "name", &far, "netns",
            up,
        ]);
        ip(&[
            "-n",
            &env.netns,
            "addr",
            "add",
            &format!("198.18.{n}.2/24"),
            "dev",
            &near,
        ]);
        ip(&["-n", &env.netns, "link", "set", &near, "up"]);
        ip(&[
            "-n",
            up,
            "addr",
            "add",
            &format!("198.18.{n}.1/24"),
            "dev",
            &far,
        ]);
        ip(&["-n", up, "link", "set", &far, "up"]);
        me
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn outbound_nat_reaches_an_upstream(env: &Env) {
    let upstream = Upstream::new(env, "up", 0);
    let up = upstream.netns.clone();
    run_ok(Command::new("ip").args([
        "-n",
        &env.netns,
        "route",
        "add",
        "default",
        "via",
        "198.18.0.1",
    ]));
    let log_path = env.home.path().join("upstream.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &up,
            "python3",
            "-m",
            "http.server",
            "8099",
            "--bind",
            "198.18.0.1",
        ])
        .current_dir(env.home.path())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _server = HttpServer(server, 8099);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let out = env.banger(&[
        "vm",
        "run",
        "--",
        "curl -sS -m 20 -o /dev/null -w '%{http_code}' http://198.18.0.1:8099/",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "200", "{}", stderr(&out));
    let seen = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        seen.contains("198.18.0.2"),
        "the upstream saw the guest unmasqueraded: {seen}"
    );
    let nft = Command::new("ip")
        .args([
            "netns", "exec", &env.netns, "nft", "list", "table", "ip", "banger",
        ])
        .output()
        .unwrap();
    assert!(stdout(&nft).contains("masquerade"), "{}", stdout(&nft));
    env.assert_nothing_left();
}

/// A shell script in `dir` as banger's user would run it: the owner in privsep mode,
/// who is first given `dir` (git refuses repositories of other users, and banger runs
/// git as its user).
fn git(env: &Env, dir: &Path, script: &str) {
    env.give(dir);
    let mut c = env.program(false, "300", "sh");
    run_ok(c.arg("-c").arg(script).current_dir(dir));
}

/// Every file under `root` except `.git`: bytes (or link target) and the exec bit.
fn tree(root: &Path) -> std::collections::BTreeMap<PathBuf, (Vec<u8>, bool)> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut std::collections::BTreeMap<PathBuf, (Vec<u8>, bool)>,
    ) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.file_name().unwrap() == ".git" {
                continue;
            }
            let md = p.symlink_metadata().unwrap();
            if md.is_dir() {
                walk(root, &p, out);
                continue;
            }
            use std::os::unix::fs::PermissionsExt;
            let content = if md.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .to_string_lossy()
                    .as_bytes()
                    .to_vec()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                (content, md.permissions().mode() & 0o111 != 0),
            );
        }
    }
    let mut out = Default::default();
    walk(root, root, &mut out);
    out
}

fn workspaces_round_trip(env: &Env) {
    let src = env.home.path().join("src");
    let repo = src.join("proj");
    std::fs::create_dir_all(&repo).unwrap();
    git(env, &repo, "git init -q -b main . && git config user.email dev@example.com && git config user.name Dev");
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    std::fs::write(
        repo.join("bin.dat"),
        (0..200_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(repo.join("old.txt"), "to be renamed\n".repeat(20)).unwrap();
    std::fs::write(repo.join(".gitignore"), "*.log\n").unwrap();
    git(env, &repo, "git add -A && git commit -q -m base");
    // Uncommitted host state ships as it is: a staged rename, an untracked file; not ignored files.
    git(
        env,
        &repo,
        "git mv old.txt renamed.txt && echo new > new.txt && echo noise > build.log",
    );
    let repo_s = repo.to_str().unwrap();

    // A plain directory is refused before anything boots.
    let plain = env.home.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let refused = env.banger(&["vm", "run", plain.to_str().unwrap(), "--", "true"]);
    assert_eq!(refused.status.code(), Some(125));
    assert!(
        stderr(&refused).contains("not a git repository"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(stdout(&env.banger(&["vm", "list", "--json"])).trim(), "[]");

    let run = env.banger(&[
        "vm",
        "run",
        "--keep",
        "--name",
        "wsvm",
        repo_s,
        "--",
        "sh",
        "-c",
        "pwd; git status --porcelain; ls build.log 2>&1 || true",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = stdout(&run);
    assert!(out.starts_with("/root/proj\n"), "{out}");
    assert!(out.contains("R  old.txt -> renamed.txt"), "{out}");
    assert!(out.contains("?? new.txt"), "{out}");
    assert!(out.contains("No such file"), "ignored file shipped: {out}");
    let v = env.show("wsvm");
    assert_eq!(v["workspace"]["guest_path"], "/root/proj");
    assert!(stdout(&env.banger(&["vm", "list"])).contains("/root/proj"));

    // Edit, add, delete, rename, chmod, binary change in the guest; export; apply on a
    // fresh clone of the shipped commit; the trees are identical byte for byte.
    let edit = env.banger(&[
        "vm", "exec", "wsvm", "--",
        "echo changed >> README && rm new.txt && git mv renamed.txt moved.txt && printf '\\001\\002' >> bin.dat \
         && mkdir -p d && echo added > d/a.sh && chmod +x d/a.sh && echo x > again.log",
    ]);
    assert!(edit.status.success(), "{}", stderr(&edit));
    let patch = env.home.path().join("ws.patch");
    let export = env.banger(&[
        "vm",
        "workspace",
        "export",
        "wsvm",
        "--output",
        patch.to_str().unwrap(),
    ]);
    assert!(export.status.success(), "{}", stderr(&export));
    let guest_tar = env.banger(&[
        "vm",
        "ssh",
        "wsvm",
        "--",
        "tar -C /root/proj --exclude=./.git --exclude=./again.log -cf - .",
    ]);
    assert!(guest_tar.status.success());
    let guest_copy = env.home.path().join("guest-copy");
    std::fs::create_dir_all(&guest_copy).unwrap();
    std::fs::write(env.home.path().join("guest.tar"), &guest_tar.stdout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(env.home.path().join("guest.tar"))
            .arg("-C")
            .arg(&guest_copy),
    );
    let head = v["workspace"]["head"].as_str().unwrap().to_string();
    git(env, &src, &format!("git clone -q proj check && cd check && git checkout -q {head} && git apply --binary {}", patch.display()));
    let check = src.join("check");
    assert_eq!(
        tree(&check),
        tree(&guest_copy),
        "applied export differs from the guest's tree"
    );

    // Exit codes propagate from the workspace.
    for code in [0, 1, 42] {
        let o = env.banger(&[
            "vm",
            "exec",
            "wsvm",
            "--",
            "sh",
            "-c",
            &format!("test -f moved.txt && exit {code}"),
        ]);
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
    }
    // The host repo moves: a warning; --auto-prepare re-ships; then no warning.
    git(env, &repo, "git add -A && git commit -q -m 'host moves on' && echo later > later.txt && git add later.txt && git commit -q -m later");
    let warned = env.banger(&["vm", "exec", "wsvm", "--", "true"]);
    assert!(warned.status.success());
    assert!(
        stderr(&warned).contains("moved from"),
        "{}",
        stderr(&warned)
    );
    let auto = env.banger(&[
        "vm",
        "exec",
        "wsvm",
        "--auto-prepare",
        "--",
        "test",
        "-f",
        "later.txt",
    ]);
    assert!(auto.status.success(), "{}", stderr(&auto));
    assert!(stderr(&auto).contains("shipped"), "{}", stderr(&auto));
    let quiet = env.banger(&["vm", "exec", "wsvm", "--", "true"]);
    assert!(!stderr(&quiet).contains("moved from"), "{}", stderr(&quiet));

    // The workspace survives stop/start (disk and record).
    assert!(env.banger(&["vm", "stop", "wsvm"]).status.success());
    assert!(env.banger(&["vm", "start", "wsvm"]).status.success());
    let after = env.banger(&["vm", "exec", "wsvm", "--", "test", "-f", "later.txt"]);
    assert!(after.status.success(), "{}", stderr(&after));
    assert_eq!(env.show("wsvm")["workspace"]["guest_path"], "/root/proj");

    // A guest path outside /root is refused.
    let bad = env.banger(&[
        "vm",
        "workspace",
        "prepare",
        "wsvm",
        repo_s,
        "--guest-path",
        "/tmp/x",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("must be inside /root"),
        "{}",
        stderr(&bad)
    );

    assert!(env.banger(&["vm", "delete", "-f", "wsvm"]).status.success());
    env.assert_nothing_left();
}

/// Debian's `docker-registry` on a free loopback port, storage under `dir`.
struct Registry(std::process::Child, String);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry(dir: &Path) -> Result<Registry, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let host = format!("127.0.0.1:{port}");
    let config = dir.join("registry.yml");
    std::fs::write(&config, format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n", dir.join("data").display()))
        .map_err(|e| e.to_string())?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("docker-registry is not installed ({e}); apt-get install docker-registry")
        })?;
    let reg = Registry(child, host);
    let t = std::time::Instant::now();
    while t.elapsed().as_secs() < 15 {
        if std::net::TcpStream::connect(&reg.1).is_ok() {
            return Ok(reg);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err("docker-registry did not listen within 15 s".into())
}

fn push_image(host: &str, repo: &str, layers: Vec<Vec<u8>>) {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use sha2::Digest;
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{:x}", sha2::Sha256::digest(l)))
        .collect();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/sbin/init"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference = format!("{host}/{repo}").parse().unwrap();
    let layers: Vec<ImageLayer> = layers
        .into_iter()
        .map(|l| ImageLayer::new(l, "application/vnd.oci.image.layer.v1.tar".into(), None))
        .collect();
    let config = Config::new(
        serde_json::to_vec(&config).unwrap(),
        "application/vnd.oci.image.config.v1+json".into(),
        None,
    );
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        client
            .push(
                &reference,
                &layers,
                config,
                &oci_client::secrets::RegistryAuth::Anonymous,
                None,
            )
            .await
            .unwrap();
    });
}

fn tar_dir(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn oci_pull_boots(env: &Env) {
    let work = env.home.path().join("oci");
    std::fs::create_dir_all(&work).unwrap();
    let reg = match start_registry(&work) {
        Ok(r) => r,
        Err(why) => {
            eprintln!("skipping e2e oci_pull_boots: {why}");
            return;
        }
    };
    // Layer 1: a bootable Debian tree (the default image's own root filesystem).
    let base = work.join("base");
    env.dump_default_rootfs(&base);
    std::fs::create_dir_all(base.join("opt/gone")).unwrap();
    std::fs::write(base.join("opt/gone/x"), "hidden by an opaque dir\n").unwrap();
    // Layer 2: a whiteout, a hardlink pair, a setuid file, a file owned 1000:1000.
    let l2 = work.join("l2");
    for d in ["etc", "opt/data", "usr/local/bin", "home/dev"] {
        std::fs::create_dir_all(l2.join(d)).unwrap();
    }
    std::fs::write(l2.join("etc/.wh.motd"), "").unwrap();
    std::fs::write(l2.join("opt/data/a"), "linked\n").unwrap();
    std::fs::hard_link(l2.join("opt/data/a"), l2.join("opt/data/b")).unwrap();
    std::fs::write(l2.join("usr/local/bin/suidtool"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        l2.join("usr/local/bin/suidtool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::write(l2.join("home/dev/owned.txt"), "mine\n").unwrap();
    std::os::unix::fs::chown(l2.join("home/dev/owned.txt"), Some(1000), Some(1000)).unwrap();
    // Layer 3: an opaque directory replaces /opt/gone's lower content.
    let l3 = work.join("l3");
    std::fs::create_dir_all(l3.join("opt/gone")).unwrap();
    std::fs::write(l3.join("opt/gone/.wh..wh..opq"), "").unwrap();
    std::fs::write(l3.join("opt/gone/y"), "new\n").unwrap();
    push_image(
        &reg.1,
        "banger/devbox:1",
        vec![tar_dir(&base), tar_dir(&l2), tar_dir(&l3)],
    );
    let _ = std::fs::remove_dir_all(&base);

    // Pull on the host network (the registry is on the host's loopback).
    assert!(env.banger(&["daemon", "stop"]).status.success());
    let t = std::time::Instant::now();
    let pulled = env.banger_host(&["image", "pull", &format!("{}/banger/devbox:1", reg.1)]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    eprintln!(
        "image pull + flatten took {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(stdout(&pulled).contains("devbox-1"));
    assert!(env.banger_host(&["daemon", "stop"]).status.success());

    let out = env.banger(&["vm", "run", "--keep", "--name", "oci", "--image", "devbox-1", "--",
        "stat -c '%u:%g %a %h %n' /usr/local/bin/suidtool /home/dev/owned.txt /opt/data/a; test ! -e /etc/motd && echo no-motd; ls /opt/gone"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("0:0 4755 1 /usr/local/bin/suidtool"),
        "{text}"
    );
    assert!(
        text.contains("1000:1000 644 1 /home/dev/owned.txt"),
        "{text}"
    );
    assert!(text.contains(" 2 /opt/data/a"), "hardlink lost: {text}");
    assert!(text.contains("no-motd"), "{text}");
    assert!(
        text.contains("y") && !text.lines().any(|l| l == "x"),
        "{text}"
    );
    // An image in use cannot be deleted; afterwards it can.
    let busy = env.banger(&["image", "delete", "devbox-1"]);
    assert_eq!(busy.status.code(), Some(1), "{}", stderr(&busy));
    assert!(env.banger(&["vm", "delete", "-f", "oci"]).status.success());
    assert!(env
        .banger(&["image", "delete", "devbox-1"])
        .status
        .success());
    env.assert_nothing_left();
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

fn artifact(dir: &Path, rel: &str) -> serde_json::Value {
    let p = dir.join(rel);
    serde_json::json!({"url": rel, "sha256": sha256_file(&p), "size": std::fs::metadata(&p).unwrap().len()})
}

/// A static catalog on loopback; killed on drop.
struct HttpServer(std::process::Child, u16);

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_dir(dir: &Path) -> HttpServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 is needed to serve the test catalog");
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed().as_secs() < 15, "http.server did not listen");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    HttpServer(child, port)
}

/// Issue 5: catalog pulls (good, hash mismatch, oversize, coalesced), the kernel
/// store, `image register` (tar and ext4), `image promote` and `image cache prune`.
fn catalog_kernels_register_promote(env: &Env) {
    let work = env.home.path().join("catalog");
    let cat = work.join("www");
    std::fs::create_dir_all(cat.join("k")).unwrap();
    std::fs::create_dir_all(cat.join("i")).unwrap();
    // The catalog's kernel and root filesystem come from the default image.
    let img_dir = env.default_image_dir();
    let tree = work.join("tree");
    env.dump_default_rootfs(&tree);
    std::fs::write(tree.join("etc/catalog-marker"), "from the catalog\n").unwrap();
    std::fs::copy(img_dir.join("vmlinuz"), cat.join("k/vmlinuz")).unwrap();
    let release = std::fs::read_dir(tree.join("usr/lib/modules"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .to_string();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(tree.join("usr/lib/modules"))
            .arg("-cf")
            .arg(cat.join("k/modules.tar"))
            .arg("."),
    );
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&tree)
            .arg("-cf")
            .arg(cat.join("i/rootfs.tar"))
            .arg("."),
    );
    std::fs::write(cat.join("i/short.tar"), b"not what the catalog says").unwrap();
    let rootfs = artifact(&cat, "i/rootfs.tar");
    let mut wrong_hash = rootfs.clone();
    wrong_hash["sha256"] = serde_json::json!("0".repeat(64));
    let mut too_small = rootfs.clone();
    too_small["size"] = serde_json::json!(1 << 20);
    let index = serde_json::json!({
        "version": 1,
        "kernels": [{"name": "deb-k", "release": release, "description": "the default image's kernel",
                     "kernel": artifact(&cat, "k/vmlinuz"), "modules": artifact(&cat, "k/modules.tar")}],
        "images": [
            {"name": "deb-cat", "kernel": "deb-k", "description": "test image", "rootfs": rootfs},
            {"name": "bad-hash", "kernel": "deb-k", "rootfs": wrong_hash},
            {"name": "oversize", "kernel": "deb-k", "rootfs": too_small},
        ]
    });
    std::fs::write(
        cat.join("index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
    let srv = serve_dir(&cat);
    let url = format!("http://127.0.0.1:{}/index.json", srv.1);
    let cenv = [("BANGER_CATALOG", url.as_str())];

    assert!(env.banger(&["daemon", "stop"]).status.success());
    let listing = env.banger_host_env(&["image", "catalog", "--json"], &cenv);
    assert!(listing.status.success(), "{}", stderr(&listing));
    assert!(stdout(&listing).contains("deb-cat"));
    // Shell completion offers catalog names for `pull` and local names elsewhere.
    let complete = |words: &[&str]| -> String {
        let mut args = vec!["--", "banger"];
        args.extend_from_slice(words);
        let out = env
            .cmd(false, &args)
            .env("COMPLETE", "bash")
            .env("_CLAP_COMPLETE_INDEX", words.len().to_string())
            .env("_CLAP_COMPLETE_COMP_TYPE", "9")
            .output()
            .unwrap();
        stdout(&out)
    };
    let pull = complete(&["image", "pull", ""]);
    assert!(pull.lines().any(|l| l == "deb-cat"), "{pull}");
    let kpull = complete(&["kernel", "pull", ""]);
    assert!(kpull.lines().any(|l| l == "deb-k"), "{kpull}");
    let show = complete(&["image", "show", ""]);
    assert!(show.lines().any(|l| l == "debian-bookworm"), "{show}");
    // Hash mismatch and oversize are refused before anything is unpacked.
    let bad = env.banger_host(&["image", "pull", "bad-hash"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("sha256"), "{}", stderr(&bad));
    let big = env.banger_host(&["image", "pull", "oversize"]);
    assert_eq!(big.status.code(), Some(1));
    assert!(
        stderr(&big).contains("but the catalog says 1048576"),
        "{}",
        stderr(&big)
    );
    let tmp = env.home.path().join("cache/blobs/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).map(|r| r.count()).unwrap_or(0),
        0,
        "download debris left"
    );
    let unknown = env.banger_host(&["image", "pull", "nope"]);
    assert_eq!(unknown.status.code(), Some(3));
    assert!(
        stderr(&unknown).contains("deb-cat"),
        "lists what exists: {}",
        stderr(&unknown)
    );

    // Two concurrent pulls of one name coalesce into one image.
    let t = std::time::Instant::now();
    let a = env
        .cmd(false, &["image", "pull", "deb-cat"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = env
        .cmd(false, &["image", "pull", "deb-cat"])
        .output()
        .unwrap();
    let a = a.wait_with_output().unwrap();
    log(&["image", "pull", "deb-cat", "(x2)"], &b);
    assert!(a.status.success() && b.status.success());
    eprintln!(
        "catalog pull of a {} MiB rootfs took {:.1} s",
        std::fs::metadata(cat.join("i/rootfs.tar")).unwrap().len() >> 20,
        t.elapsed().as_secs_f64()
    );
    let imgs = env.banger_host(&["image", "list", "--json"]);
    let imgs: serde_json::Value = serde_json::from_slice(&imgs.stdout).unwrap();
    let n = imgs
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"] == "deb-cat")
        .count();
    assert_eq!(n, 1, "{imgs}");
    let ks = env.banger_host(&["kernel", "list", "--json"]);
    let ks: serde_json::Value = serde_json::from_slice(&ks.stdout).unwrap();
    assert!(
        ks.as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "deb-k" && k["release"] == release.as_str()),
        "{ks}"
    );
    assert!(
        ks.as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "debian-bookworm"),
        "the built image's kernel is in the store: {ks}"
    );

    // kernel import / show / rm.
    let imp = env.banger_host(
        &["kernel", "import"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                img_dir.join("vmlinuz").display().to_string(),
                "--modules".into(),
                tree.join("usr/lib/modules").display().to_string(),
                "--name".into(),
                "imported".into(),
            ])
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(imp.status.success(), "{}", stderr(&imp));
    let show = env.banger_host(&["kernel", "show", "imported", "--json"]);
    assert!(stdout(&show).contains(&release));
    let junk = env.banger_host(&["kernel", "import", "/etc/hostname"]);
    assert_eq!(junk.status.code(), Some(5));
    assert!(stderr(&junk).contains("not a Linux kernel"));

    // image register: a tar with a store kernel, and an ext4 read by the export guest.
    let reg_tar = cat.join("i/rootfs.tar").display().to_string();
    let r1 = env.banger_host(&[
        "image", "register", "reg-tar", "--rootfs", &reg_tar, "--kernel", "imported",
    ]);
    assert!(r1.status.success(), "{}", stderr(&r1));
    let t = std::time::Instant::now();
    let ext4 = img_dir.join("rootfs.ext4").display().to_string();
    let r2 = env.banger_host(&["image", "register", "reg-ext4", "--rootfs", &ext4]);
    assert!(r2.status.success(), "{}", stderr(&r2));
    eprintln!(
        "register of a {} MiB ext4 took {:.1} s",
        std::fs::metadata(&ext4).unwrap().len() >> 20,
        t.elapsed().as_secs_f64()
    );
    assert!(env
        .banger_host(&["kernel", "rm", "imported"])
        .status
        .success());
    let _ = std::fs::remove_dir_all(&tree);
    drop(srv);
    assert!(env.banger_host(&["daemon", "stop"]).status.success());

    // They all boot; images keep their kernel after `kernel rm`.
    for (img, check) in [
        ("deb-cat", "cat /etc/catalog-marker"),
        ("reg-tar", "cat /etc/catalog-marker"),
        ("reg-ext4", "test ! -e /etc/catalog-marker && uname -r"),
    ] {
        let out = env.banger(&["vm", "run", "--image", img, "--", check]);
        assert!(out.status.success(), "{img}: {}", stderr(&out));
    }

    // image promote: a stopped VM's changes (root and /root) become an image.
    assert!(env.banger(&["vm", "create", "pro"]).status.success());
    let edit = env.banger(&["vm", "ssh", "pro", "--", "echo promoted > /etc/promoted && rm /etc/issue && mkdir -p /opt/tool && echo v1 > /opt/tool/v && echo seed > /root/seed.txt && sync"]);
    assert!(edit.status.success(), "{}", stderr(&edit));
    let running = env.banger(&["image", "promote", "pro", "pro-img"]);
    assert_eq!(
        running.status.code(),
        Some(5),
        "promote of a running VM is refused"
    );
    assert!(env.banger(&["vm", "stop", "pro"]).status.success());
    let t = std::time::Instant::now();
    let pro = env.banger(&["image", "promote", "pro", "pro-img"]);
    assert!(pro.status.success(), "{}", stderr(&pro));
    eprintln!("promote took {:.1} s", t.elapsed().as_secs_f64());
    let out = env.banger(&[
        "vm",
        "run",
        "--image",
        "pro-img",
        "--",
        "cat /etc/promoted /opt/tool/v /root/seed.txt; test ! -e /etc/issue && echo issue-gone",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in ["promoted", "v1", "seed", "issue-gone"] {
        assert!(text.contains(want), "{want} missing: {text}");
    }
    assert!(env.banger(&["vm", "delete", "pro"]).status.success());

    // image cache prune: dry run reports, then deleting the image frees its blob.
    let dry = env.banger(&["image", "cache", "prune", "--dry-run", "--json"]);
    let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert!(
        dry["kept"].as_u64().unwrap() >= 1,
        "deb-cat's rootfs is kept: {dry}"
    );
    for img in ["deb-cat", "reg-tar", "reg-ext4", "pro-img"] {
        assert!(env.banger(&["image", "delete", img]).status.success());
    }
    let pruned = env.banger(&["image", "cache", "prune", "--json"]);
    let pruned: serde_json::Value = serde_json::from_slice(&pruned.stdout).unwrap();
    assert!(pruned["bytes"].as_u64().unwrap() > 500 << 20, "{pruned}");
    let left = env.banger(&["image", "cache", "prune", "--dry-run", "--json"]);
    let left: serde_json::Value = serde_json::from_slice(&left.stdout).unwrap();
    assert_eq!(left["blobs"], 0, "{left}");
    env.assert_nothing_left();
}

fn newer_schema_is_refused(env: &Env) {
    // A database written by a newer banger is refused, not modified.
    assert!(env.banger(&["daemon", "stop"]).status.success());
    let bangerd = banger_bin().with_file_name("bangerd");
    // As the owner (privsep mode): files root made here would lock the owner out.
    let check = env
        .program(false, "120", &bangerd)
        .arg("--check-migrations")
        .status()
        .unwrap();
    assert!(check.success());
    let db = env.state().join("banger.db");
    run_ok(env.program(false, "120", "python3").args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version=999'); c.commit()"]).arg(&db));
    let check = env
        .program(false, "120", &bangerd)
        .arg("--check-migrations")
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains("newer"));
    let refused = env.banger(&["vm", "list"]);
    // The daemon cannot start on that database: daemon_unavailable (docs/json.md).
    assert_eq!(refused.status.code(), Some(6));
    assert!(stderr(&refused).contains("newer"), "{}", stderr(&refused));
}

#[test]
fn refuses_a_socket_owned_by_another_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipping refuses_a_socket_owned_by_another_user: needs root to chown the socket"
        );
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let run = home.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let sock = run.join("bangerd.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::os::unix::fs::chown(&sock, Some(65534), Some(65534)).unwrap();
    let out = Command::new(banger_bin())
        .args(["vm", "list"])
        .env("BANGER_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "unauthorized (docs/json.md)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to uid 65534"), "{err}");
    assert!(
        !Path::new(&home.path().join("state/banger.db")).exists(),
        "a daemon was started"
    );
    // The same as a JSON error (docs/json.md: `unauthorized`, 7).
    let out = Command::new(banger_bin())
        .args(["vm", "list", "--json"])
        .env("BANGER_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized", "{err}");
    assert!(out.stdout.is_empty());
}

/// Something that is not bangerd answers on the socket: `daemon_unavailable` (exit 6),
/// and no daemon of banger's is started in its place. Needs no guest and no root.
#[test]
fn a_socket_that_is_not_bangerd_is_daemon_unavailable() {
    let home = tempfile::tempdir().unwrap();
    let run = home.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(run.join("bangerd.sock")).unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.write_all(b"HTTP/1.0 400 not bangerd\r\n\r\n");
        }
    });
    let out = Command::new(banger_bin())
        .args(["vm", "list", "--json"])
        .env("BANGER_HOME", home.path())
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(err.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("not a JSON error ({e}): {err}"));
    assert_eq!(v["error"]["code"], "daemon_unavailable", "{err}");
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        !home.path().join("state/banger.db").exists(),
        "a daemon was started"
    );
}
