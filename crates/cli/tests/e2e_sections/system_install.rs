//! End-to-end section for issue 11 (`system_install`): `banger system install`,
//! `status`, `restart` and `uninstall` under a real systemd.
//!
//! The host's banger boots a kept VM of the default image with systemd as its init
//! (`--init systemd`), copies this build's `banger`, `bangerd`, `banger-helper` and
//! agent in (`vm cp`), creates an owner there and, as the guest's root, runs
//! `banger system install --owner USER`. Then:
//! - both units are active, `bangerd` runs as the owner and `banger-helper` as root;
//!   the helper has no_new_privs, the daemon not (mmdebstrap's setuid `newuidmap`);
//! - as the owner, the helper serves `ping`, `ensure_bridge`, `create_tap`, `open_tap`
//!   (a descriptor), `bind_dns` (a descriptor for port 53), `delete_tap` and
//!   `delete_bridge` inside its unit's sandbox, and bangerd listens on the gateway's
//!   port 53 with the socket the helper bound for it;
//! - `banger system status` passes; the owner's CLI finds the system daemon by itself
//!   (`daemon status`, `vm list`);
//! - `banger doctor --json`, as the owner, passes its system rows: install record,
//!   helper config, both unit files (present and hardened), both units active, the
//!   helper reachable with this version, the helper's and the daemon's sockets (the
//!   owner's, 0600), the state directories (the owner's, 0700). Rows about KVM, QEMU
//!   and other tools are printed, not asserted: the guest has neither;
//! - `banger system restart` gives a new daemon that answers;
//! - `systemd-analyze security` of both units is printed (not asserted);
//! - `banger system uninstall` stops and removes both units and the daemon stops
//!   answering.

use super::{stderr, stdout, Env};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VM: &str = "sysd";
const OWNER: &str = "bgrowner";
/// Where the build's binaries land in the guest (readable by the owner, unlike /root).
const STAGE: &str = "/opt/banger-release";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The guest sits on the outer banger's 172.30.0.0/24, which the helper rightly refuses
/// as overlapping a route: the install keeps an administrator's own subnet, so the
/// test writes one first.
const SUBNET: &str = "10.201.0.0/24";
const GATEWAY: &str = "10.201.0.1";

/// As the owner, one request per connection to the helper's socket; prints
/// `op ok|error fds=N` per request. Exercises what needs the unit's capabilities:
/// CAP_NET_ADMIN (bridge, tap), /dev/net/tun (open_tap), CAP_NET_BIND_SERVICE
/// (bind_dns on port 53; UDP only: the daemon already listens there on TCP, bound by
/// the helper at its start).
const HELPER_PROBE: &str = r#"
# python3-minimal: no json, no array.
import os, socket
def req(line):
    s = socket.socket(socket.AF_UNIX)
    s.connect("/run/banger-helper/helper.sock")
    s.sendall((line + "\n").encode())
    buf, fds = b"", []
    while not buf.endswith(b"\n"):
        m, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(16))
        if not m:
            break
        buf += m
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                n = len(data) - len(data) % 4
                fds += [int.from_bytes(data[i : i + 4], "little") for i in range(0, n, 4)]
    s.close()
    for fd in fds:
        os.close(fd)
    op = line.split('"op":"')[1].split('"')[0]
    reply = buf.decode().strip()
    print(op, "ok" if '"ok":true' in reply else reply, "fds=%d" % len(fds))
G = "GATEWAY"
for line in [
    '{"op":"ping"}',
    '{"op":"ensure_bridge","name":"banger0","gateway":"%s","prefix":24}' % G,
    '{"op":"create_tap","name":"bgr5e5d","bridge":"banger0"}',
    '{"op":"open_tap","name":"bgr5e5d"}',
    '{"op":"bind_dns","gateway":"%s","proto":"udp"}' % G,
    '{"op":"delete_tap","name":"bgr5e5d"}',
    '{"op":"delete_bridge","name":"banger0","gateway":"%s","prefix":24}' % G,
]:
    req(line)
"#;

/// Doctor rows that must pass under systemd (the rows issue 11 names).
const DOCTOR_ROWS: &[&str] = &[
    "system install",
    "helper config",
    "bangerd-root.service file",
    "bangerd.service file",
    "bangerd-root.service",
    "bangerd.service",
    "helper",
    "helper socket",
    "daemon socket",
    "state directories",
];

/// Run `script` with `sh -c` in the guest, as root.
fn guest(env: &Env, script: &str) -> Output {
    let script = format!("export PATH={PATH}; {script}");
    env.banger(&["vm", "exec", VM, "--", "sh", "-c", &script])
}

/// Run `script` in the guest and insist it succeeds; its stdout.
fn guest_ok(env: &Env, script: &str) -> String {
    let out = guest(env, script);
    assert!(
        out.status.success(),
        "{script}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `script` as the owner (a login-less `runuser`, no XDG variables: the CLI must find
/// the system daemon by itself).
fn as_owner(env: &Env, script: &str) -> Output {
    guest(
        env,
        &format!("runuser -u {OWNER} -- env -u XDG_RUNTIME_DIR -u BANGER_HOME sh -c '{script}'"),
    )
}

/// The daemon's pid from `banger daemon status` as the owner (`None` when it does not
/// answer).
fn daemon_pid(env: &Env, banger: &str) -> Option<u32> {
    let out = as_owner(env, &format!("{banger} daemon status"));
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains(" running, pid "))?;
    line.split(" running, pid ")
        .nth(1)?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// This build's binaries, stripped (the guest gets them over the agent channel), in a
/// directory named like [`STAGE`]'s last component.
fn stage_binaries(env: &Env) -> PathBuf {
    let bin_dir = super::banger_bin().parent().unwrap().to_path_buf();
    let agent = std::env::var("BANGER_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| bin_dir.join("../lib/banger/banger-agent"));
    let dir = env.home.path().join("banger-release");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<(PathBuf, &str)> = vec![
        (bin_dir.join("banger"), "banger"),
        (bin_dir.join("bangerd"), "bangerd"),
        (bin_dir.join("banger-helper"), "banger-helper"),
        (agent, "banger-agent"),
    ];
    for (src, name) in files {
        let dest = dir.join(name);
        std::fs::copy(&src, &dest).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
        // Debug symbols are most of a debug build's size; the guest needs none.
        let stripped = Command::new("strip").arg(&dest).status();
        if !matches!(stripped, Ok(s) if s.success()) {
            eprintln!(
                "system_install: could not strip {} (copying it whole)",
                dest.display()
            );
        }
    }
    // The owner's CLI copies them in (privsep mode).
    env.give(&dir);
    dir
}

/// The `Overall exposure level` line of `systemd-analyze security UNIT`.
fn exposure(env: &Env, unit: &str) -> String {
    let out = guest(env, &format!("systemd-analyze security --no-pager {unit}"));
    let text = stdout(&out);
    text.lines()
        .find(|l| l.contains("Overall exposure level"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| format!("no exposure line ({}): {}", out.status, stderr(&out)))
}

/// Doctor's rows (`--json`) as (name, status, detail).
fn doctor_rows(env: &Env) -> Vec<(String, String, String)> {
    let out = as_owner(env, "/usr/local/bin/banger doctor --json");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {}", stdout(&out)));
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
                r["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The issue-11 systemd section (see the module docs).
pub fn system_install(env: &Env) {
    let staged = stage_binaries(env);
    let create = env.banger(&["vm", "create", VM, "--init", "systemd"]);
    assert!(create.status.success(), "{}", stderr(&create));

    // systemd is the guest's PID 1 and has finished booting.
    let pid1 = guest_ok(
        env,
        "cat /proc/1/comm; systemctl is-system-running --wait || true",
    );
    assert!(
        pid1.starts_with("systemd\n"),
        "PID 1 is not systemd: {pid1}"
    );

    let cp = env.banger(&[
        "vm",
        "cp",
        staged.to_str().unwrap(),
        &format!("{VM}:{}/", Path::new(STAGE).parent().unwrap().display()),
    ]);
    assert!(cp.status.success(), "{}", stderr(&cp));
    let _ = std::fs::remove_dir_all(&staged);
    guest_ok(
        env,
        &format!("chmod 755 {STAGE} {STAGE}/*; useradd -m -s /bin/sh {OWNER}"),
    );
    let owner_uid: u32 = guest_ok(env, &format!("id -u {OWNER}"))
        .trim()
        .parse()
        .unwrap();
    guest_ok(
        env,
        &format!(
            "mkdir -p /etc/banger && chmod 755 /etc/banger && \
             printf 'owner_uid = %s\\nowner_gid = %s\\nbridge = \"banger0\"\\nsubnet = \"{SUBNET}\"\\n' \
               $(id -u {OWNER}) $(id -g {OWNER}) > /etc/banger/helper.toml && cat /etc/banger/helper.toml"
        ),
    );

    // Install: both units active, the daemon answering when it returns.
    let t = std::time::Instant::now();
    let install = guest_ok(
        env,
        &format!("{STAGE}/banger system install --owner {OWNER}"),
    );
    eprintln!(
        "system_install: install took {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        install.contains("bangerd-root.service and bangerd.service are running"),
        "{install}"
    );
    assert_eq!(
        guest_ok(
            env,
            "systemctl is-active bangerd-root.service bangerd.service"
        ),
        "active\nactive\n"
    );
    let main_uid = |unit: &str| -> u32 {
        let pid = guest_ok(env, &format!("systemctl show -P MainPID {unit}"));
        guest_ok(env, &format!("stat -c %u /proc/{}", pid.trim()))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        main_uid("bangerd.service"),
        owner_uid,
        "bangerd runs as the owner"
    );
    assert_eq!(
        main_uid("bangerd-root.service"),
        0,
        "the helper runs as root"
    );
    // The daemon may gain privileges (mmdebstrap's setuid newuidmap for image builds;
    // its bounding set is the limit), the helper may not.
    let nnp = |unit: &str| -> String {
        let pid = guest_ok(env, &format!("systemctl show -P MainPID {unit}"));
        guest_ok(env, &format!("grep NoNewPrivs /proc/{}/status", pid.trim()))
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    eprintln!(
        "system_install: NoNewPrivs bangerd {} banger-helper {}",
        nnp("bangerd.service"),
        nnp("bangerd-root.service")
    );
    assert_eq!(
        nnp("bangerd-root.service"),
        "1",
        "the helper lacks no_new_privs"
    );
    assert_eq!(
        nnp("bangerd.service"),
        "0",
        "bangerd.service has no_new_privs"
    );

    // The helper's operations work inside its unit's sandbox and bounding set.
    let probe = HELPER_PROBE.replace("GATEWAY", GATEWAY);
    guest_ok(
        env,
        &format!("cat > /tmp/probe.py <<'EOF'\n{probe}\nEOF\nchmod 644 /tmp/probe.py"),
    );
    let out = as_owner(env, "python3 /tmp/probe.py");
    let said = stdout(&out);
    eprintln!("system_install: helper probe:\n{said}{}", stderr(&out));
    for want in [
        "ping ok fds=0",
        "ensure_bridge ok fds=0",
        "create_tap ok fds=0",
        "open_tap ok fds=1",
        "bind_dns ok fds=1",
        "delete_tap ok fds=0",
        "delete_bridge ok fds=0",
    ] {
        assert!(said.contains(want), "helper probe: no {want:?} in {said}");
    }

    // The daemon serves the guests' DNS on the gateway's port 53 with the sockets the
    // helper bound for it at start (UDP shares the port, SO_REUSEADDR; TCP listens).
    let dns = guest_ok(
        env,
        &format!("ss -Hltnp 'sport = :53' | grep '{GATEWAY}:53'"),
    );
    assert!(
        dns.contains("bangerd"),
        "bangerd listens on {GATEWAY}:53: {dns}"
    );

    // status, as root; the owner's CLI reaches the system daemon by itself.
    let status = guest_ok(env, "banger system status");
    assert!(!status.contains("FAIL"), "{status}");
    let pid_before =
        daemon_pid(env, "/usr/local/bin/banger").expect("the owner reaches the system daemon");
    let list = as_owner(env, "/usr/local/bin/banger vm list --json");
    assert_eq!(stdout(&list).trim(), "[]", "{}", stderr(&list));
    // The owner's CLI started no daemon of its own.
    assert_eq!(guest_ok(env, "pgrep -c -x bangerd || true").trim(), "1");

    // doctor, as the owner: the system rows pass.
    let rows = doctor_rows(env);
    for (name, status, detail) in &rows {
        eprintln!("system_install: doctor {status:<4} {name}: {detail}");
    }
    for want in DOCTOR_ROWS {
        let row = rows
            .iter()
            .find(|(n, _, _)| n == want)
            .unwrap_or_else(|| panic!("doctor has no {want:?} row: {rows:?}"));
        assert_eq!(row.1, "ok", "doctor row {want}: {}", row.2);
    }

    // restart: a new daemon, answering when the command returns.
    let restarted = guest_ok(env, "banger system restart");
    assert!(restarted.contains("answers"), "{restarted}");
    let pid_after =
        daemon_pid(env, "/usr/local/bin/banger").expect("the daemon answers after restart");
    assert_ne!(pid_before, pid_after, "restart started a new daemon");
    assert_eq!(main_uid("bangerd.service"), owner_uid);
    assert_eq!(
        guest_ok(
            env,
            "systemctl is-active bangerd-root.service bangerd.service"
        ),
        "active\nactive\n"
    );

    let exposures = [
        exposure(env, "bangerd-root.service"),
        exposure(env, "bangerd.service"),
    ];

    // uninstall: units stopped and gone, the daemon no longer answers.
    let un = guest_ok(env, "banger system uninstall");
    assert!(
        un.contains("removed /etc/systemd/system/bangerd.service"),
        "{un}"
    );
    guest_ok(
        env,
        "test ! -e /etc/systemd/system/bangerd.service && test ! -e /etc/systemd/system/bangerd-root.service \
         && test ! -e /usr/local/bin/bangerd && test ! -e /etc/banger/helper.toml",
    );
    let states = stdout(&guest(
        env,
        "systemctl is-active bangerd-root.service bangerd.service",
    ));
    assert!(!states.lines().any(|l| l == "active"), "{states}");
    assert_eq!(guest_ok(env, "pgrep -c -x bangerd || true").trim(), "0");
    assert_eq!(
        guest_ok(env, "pgrep -c -x banger-helper || true").trim(),
        "0"
    );
    assert_eq!(
        daemon_pid(env, &format!("BANGER_DAEMON=/bin/false {STAGE}/banger")),
        None,
        "the daemon still answers after uninstall"
    );

    let del = env.banger(&["vm", "delete", "-f", VM]);
    assert!(del.status.success(), "{}", stderr(&del));
    eprintln!("=== system_install: systemd-analyze security (in a guest of the default image)");
    for e in &exposures {
        eprintln!("{e}");
    }
}
