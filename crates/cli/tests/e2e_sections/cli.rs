//! End-to-end section for issue 19 (the CLI as Docker and Lima users expect it):
//! `banger ps`, verbs over several names, `vm cp` both ways (a directory with modes
//! and a binary file), `-p` reaching a guest server from the host's 127.0.0.1,
//! `vm exec` without a workspace, one progress line per stage when stderr is not a
//! terminal, no stray NUL byte under a pty, and exit statuses. Runs in `e2e.rs`'s environment (`BANGER_E2E_ONLY=cli`).

use super::{stderr, stdout, Env};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The host port `-p` publishes in this section (inside the test's namespace).
const HOST_PORT: &str = "18080";

/// A tiny HTTP server for the guest (python3-minimal has sockets, not http.server).
const SERVER: &str = r#"import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8000))
s.listen(8)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 14\r\n\r\nhello-from-vm\n")
    c.close()
"#;

impl Env {
    /// Run a host program inside the test's namespace.
    fn in_netns(&self, prog: &str, args: &[&str]) -> Output {
        let out = Command::new("timeout")
            .arg("120")
            .args(["ip", "netns", "exec", &self.netns, prog])
            .args(args)
            .env("BANGER_HOME", self.home.path())
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .unwrap();
        eprintln!(
            "$ {prog} {} -> {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `curl` the published port from the namespace's loopback.
    fn curl_published(&self) -> Output {
        let url = format!("http://127.0.0.1:{HOST_PORT}/");
        self.in_netns("curl", &["-sS", "--max-time", "10", &url])
    }

    /// `banger ARGS` under a pseudo-terminal (`script`), its raw output bytes.
    ///
    /// `script`'s own stdin stays open, as a person's terminal does: when it reaches
    /// EOF (stdin `/dev/null`), util-linux `script` writes a NUL to the terminal as if
    /// typed, which `ssh -t` (like any terminal program) forwards and the guest's tty
    /// echoes as `^@` (docs/cli.md).
    fn under_pty(&self, args: &[&str]) -> Vec<u8> {
        let line = std::iter::once(format!(
            "{}{}",
            self.shell_prefix(),
            super::banger_bin().display()
        ))
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
        let mut child = Command::new("timeout")
            .arg("300")
            .args([
                "ip",
                "netns",
                "exec",
                &self.netns,
                "script",
                "-qec",
                &line,
                "/dev/null",
            ])
            .env("BANGER_HOME", self.home.path())
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let keep_open = child.stdin.take();
        let out = child.wait_with_output().unwrap();
        drop(keep_open);
        eprintln!(
            "$ script -qec '{line}' -> {}\n{:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "under a pty: {line}");
        out.stdout
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

pub fn cli_as_users_expect_it(env: &Env) {
    // Usage errors in `vm run` exit 125 like its other failures; elsewhere 2.
    assert_eq!(
        env.banger(&["vm", "run", "--bogus"]).status.code(),
        Some(125)
    );
    assert_eq!(
        env.banger(&["vm", "list", "--bogus"]).status.code(),
        Some(2)
    );
    let none = env.banger(&["vm", "prune"]);
    assert!(none.status.success(), "{}", stderr(&none));
    assert!(
        stderr(&none).contains("there are no VMs"),
        "{}",
        stderr(&none)
    );

    // `ps` and verbs over several names, on VMs that do not run.
    for n in ["cz1", "cz2"] {
        assert!(env
            .banger(&["vm", "create", n, "--no-start"])
            .status
            .success());
    }
    let ps = env.banger(&["ps", "-q"]);
    assert_eq!(stdout(&ps), "cz1\ncz2\n");
    let table = stdout(&env.banger(&["ps"]));
    assert!(
        table.starts_with("NAME") && table.contains("CREATED"),
        "{table}"
    );
    assert!(
        table.lines().all(|l| l == l.trim()),
        "padded table: {table:?}"
    );
    let killed = env.banger(&["vm", "kill", "cz1", "cz2"]);
    assert!(killed.status.success());
    assert_eq!(stderr(&killed).matches("was not running").count(), 2);
    let unset = env.banger(&["vm", "set", "cz1"]);
    assert_eq!(unset.status.code(), Some(2));
    assert!(stderr(&unset).contains("--cpus"), "{}", stderr(&unset));
    let unitless = env.banger(&["vm", "set", "cz1", "--memory", "2048"]);
    assert!(stderr(&unitless).contains("2048M"), "{}", stderr(&unitless));

    // A VM with a published port; stderr is a pipe, so one line per stage, in words.
    let created = env.banger(&[
        "vm",
        "create",
        "web",
        "-p",
        &format!("127.0.0.1:{HOST_PORT}:8000"),
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let err = stderr(&created);
    for stage in ["preparing disks", "starting the VM", "booting guest"] {
        assert_eq!(
            err.lines()
                .filter(|l| l.contains(&format!(": {stage}")))
                .count(),
            1,
            "no single {stage:?} line in {err}"
        );
    }
    assert!(err.contains("next: banger vm ssh web"), "{err}");
    assert!(
        !err.contains('\r') && !err.contains('\x1b'),
        "terminal codes: {err:?}"
    );

    // The console, piped: plain text, no escape codes.
    let logs = env.banger(&["vm", "logs", "web"]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert!(!logs.stdout.contains(&0x1b), "escape codes in piped logs");
    assert!(stdout(&logs).contains("banger-init"), "{}", stdout(&logs));
    assert!(
        !stdout(&logs).contains("PCI: Fatal"),
        "the microvm's missing PCI is reported as fatal: {}",
        stdout(&logs)
    );
    let last = env.banger(&["vm", "logs", "web", "-n", "3"]);
    assert!(stdout(&last).lines().count() <= 3, "{}", stdout(&last));
    // `--since`: a line printed well before is left out, one printed after is in.
    let say = |what: &str| {
        let o = env.banger(&[
            "vm",
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            &format!("echo {what} > /dev/console"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    say("marker-old");
    std::thread::sleep(std::time::Duration::from_secs(7));
    say("marker-new");
    let recent = env.banger(&["vm", "logs", "web", "--since", "3s"]);
    assert!(recent.status.success(), "{}", stderr(&recent));
    let text = stdout(&recent);
    assert!(
        text.contains("marker-new") && !text.contains("marker-old"),
        "vm logs --since 3s: {text}"
    );
    let bad = env.banger(&["vm", "logs", "web", "--since", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    // `vm exec` without a workspace runs in /root.
    let pwd = env.banger(&["vm", "exec", "web", "--", "pwd"]);
    assert_eq!(stdout(&pwd), "/root\n", "{}", stderr(&pwd));

    // `vm cp` in: a directory with modes and a binary file (also the server).
    let src = env.home.path().join("cp-src/tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 256) as u8).collect();
    std::fs::write(src.join("blob.bin"), &binary).unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::write(src.join("sub/secret"), "s\n").unwrap();
    std::fs::write(src.join("srv.py"), SERVER).unwrap();
    std::fs::set_permissions(src.join("run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(src.join("sub/secret"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(src.join("sub"), PermissionsExt::from_mode(0o710)).unwrap();
    // The user's own files (privsep mode: the owner's; sub/secret is 0600).
    env.give(&env.home.path().join("cp-src"));
    let cp_in = env.banger(&["vm", "cp", src.to_str().unwrap(), "web:/root/"]);
    assert!(cp_in.status.success(), "{}", stderr(&cp_in));
    let seen = env.ssh(
        "web",
        "cd /root/tree && stat -c '%a %n' run.sh sub sub/secret && ./run.sh && sha256sum blob.bin",
    );
    let want_sum = {
        let o = Command::new("sha256sum")
            .arg(src.join("blob.bin"))
            .output()
            .unwrap();
        stdout(&o).split_whitespace().next().unwrap().to_string()
    };
    assert_eq!(
        seen,
        format!("755 run.sh\n710 sub\n600 sub/secret\nran\n{want_sum}  blob.bin\n")
    );

    // ... and out again, into a new host directory.
    env.ssh(
        "web",
        "echo made-in-guest > /root/tree/sub/new && chmod 640 /root/tree/sub/new",
    );
    let back = env.home.path().join("cp-back");
    let cp_out = env.banger(&["vm", "cp", "web:/root/tree", back.to_str().unwrap()]);
    assert!(cp_out.status.success(), "{}", stderr(&cp_out));
    assert_eq!(std::fs::read(back.join("blob.bin")).unwrap(), binary);
    assert_eq!(mode(&back.join("run.sh")), 0o755);
    assert_eq!(mode(&back.join("sub")), 0o710);
    assert_eq!(mode(&back.join("sub/secret")), 0o600);
    assert_eq!(mode(&back.join("sub/new")), 0o640);
    assert_eq!(
        std::fs::read_to_string(back.join("sub/new")).unwrap(),
        "made-in-guest\n"
    );
    // A missing guest path is an error that says so, and leaves nothing behind.
    let missing = env.banger(&["vm", "cp", "web:/nope", back.to_str().unwrap()]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        stderr(&missing).contains("no such file"),
        "{}",
        stderr(&missing)
    );
    assert!(!back.join("nope").exists());

    // `-p`: the guest's server answers on the host's 127.0.0.1.
    env.ssh(
        "web",
        "setsid -f python3 /root/tree/srv.py >/root/srv.log 2>&1 </dev/null",
    );
    let mut got = String::new();
    for _ in 0..30 {
        got = stdout(&env.curl_published());
        if !got.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert_eq!(
        got,
        "hello-from-vm\n",
        "server log: {}",
        env.ssh("web", "cat /root/srv.log")
    );
    let ports = env.banger(&["vm", "ports", "web", "--json"]);
    let ports: serde_json::Value = serde_json::from_slice(&ports.stdout).unwrap();
    assert_eq!(ports["forwards"][0]["host_port"], 18080, "{ports}");
    assert!(
        ports["ports"].as_array().unwrap().contains(&8000.into()),
        "{ports}"
    );
    assert!(stdout(&env.banger(&["ps"])).contains("127.0.0.1:18080->8000/tcp"));
    // vm port-forward adds one at run time; a taken host port is refused.
    let taken = env.banger(&["vm", "port-forward", "cz1", &format!("{HOST_PORT}:80")]);
    assert_eq!(taken.status.code(), Some(5), "{}", stderr(&taken));
    let added = env.banger(&["vm", "port-forward", "web", "18081:8000"]);
    assert!(added.status.success(), "{}", stderr(&added));
    let url = "http://127.0.0.1:18081/";
    let second = env.in_netns("curl", &["-sS", "--max-time", "10", url]);
    assert_eq!(stdout(&second), "hello-from-vm\n");

    // Nothing stray (no NUL, no ^@) before the output under a pty.
    let tty = env.under_pty(&["vm", "ssh", "web", "--", "tty"]);
    assert!(tty.starts_with(b"/dev/pts/"), "{tty:?}");
    assert!(!tty.contains(&0), "NUL under a pty: {tty:?}");
    let hi = env.under_pty(&["vm", "exec", "web", "--", "echo", "hi"]);
    assert_eq!(hi, b"hi\r\n", "{hi:?}");

    // Several names at once: one failure (nope) does not stop the others; the
    // status is the failure's class (3, not found). A stopped VM's published port is closed.
    let stopped = env.banger(&["vm", "stop", "web", "nope", "cz1"]);
    assert_eq!(stopped.status.code(), Some(3), "{}", stderr(&stopped));
    assert!(stderr(&stopped).contains("no VM named nope"));
    assert_eq!(env.show("web")["state"], "stopped");
    assert!(!env.curl_published().status.success(), "port still open");
    // All stopped now: deleted without -f.
    let deleted = env.banger(&["vm", "delete", "web", "cz1", "cz2"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    env.assert_nothing_left();
}
