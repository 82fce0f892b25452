//! End-to-end section for issue 18, second half: the real `--json` output of the
//! commands `agent_cli` does not cover, validated against docs/schemas.json (doctor,
//! network, ssh-config, host keys, copies, console lines, catalogs, the cache, kernels,
//! warm snapshots, completion, the daemon verbs, `system` against a scratch root), and
//! the error classes `failed` (a boot that fails through the daemon's failpoint, a
//! `system restart` without systemd) and `interrupted` (SIGINT to a waiting command, to
//! `vm run` while its VM boots, and to the command `vm run` runs).
//! `BANGER_E2E_ONLY=agent_json`.

use super::agent_cli_section::{assert_shape, json_err, json_out};
use super::{stderr, stdout, Env};
use serde_json::Value;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

pub fn agent_json(env: &Env) {
    host_and_store_commands(env);
    vm_commands(env);
    system_commands(env);
    failed_class(env);
    interrupted_class(env);
    env.assert_nothing_left();
}

/// The JSON document on stdout whatever the exit status (`doctor` and `system status`
/// exit 1 when a check fails and still print it).
fn json_doc(o: &Output, shape: &str) -> Value {
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}{}",
            stdout(o),
            stderr(o)
        )
    });
    assert_shape(shape, &v);
    v
}

fn host_and_store_commands(env: &Env) {
    let doc = json_doc(&env.banger(&["doctor", "--json"]), "doctor");
    assert!(!doc.as_array().unwrap().is_empty());
    json_out(&env.banger(&["completion", "bash", "--json"]), "completion");
    json_out(&env.banger(&["network", "show", "--json"]), "network");
    for verb in ["image", "kernel"] {
        json_out(&env.banger(&[verb, "catalog", "--json"]), "catalog");
    }
    let p = json_out(
        &env.banger(&["image", "cache", "prune", "--dry-run", "--json"]),
        "cache_prune",
    );
    assert_eq!(p["dry_run"], true);
    json_out(
        &env.banger(&["image", "cache", "prune", "--json"]),
        "cache_prune",
    );
    // ssh-config against a scratch file, never the user's.
    let dir = tempfile::tempdir().unwrap();
    env.give(dir.path());
    let cfg = dir.path().join("config");
    let cfg_s = cfg.to_str().unwrap();
    let shown = json_out(
        &env.banger(&["ssh-config", "show", "--config", cfg_s, "--json"]),
        "ssh_config",
    );
    assert_eq!(shown["installed"], false);
    assert!(shown["text"].is_string(), "{shown}");
    let inst = json_out(
        &env.banger(&["ssh-config", "install", "--config", cfg_s, "--json"]),
        "ssh_config",
    );
    assert_eq!(
        (&inst["installed"], &inst["changed"]),
        (&true.into(), &true.into())
    );
    let un = json_out(
        &env.banger(&["ssh-config", "uninstall", "--config", cfg_s, "--json"]),
        "ssh_config",
    );
    assert_eq!(un["installed"], false);
    // A kernel imported from the default image's files, then removed; removing it again
    // is `not_found` with the (empty) document still on stdout.
    let img = env.default_image_dir();
    let (k, i) = (img.join("vmlinuz"), img.join("initrd.img"));
    let k = json_out(
        &env.banger(&[
            "kernel",
            "import",
            k.to_str().unwrap(),
            "--initrd",
            i.to_str().unwrap(),
            "--name",
            "json-k",
            "--json",
        ]),
        "kernel",
    );
    assert_eq!(k["name"], "json-k");
    let rm = json_out(
        &env.banger(&["kernel", "rm", "json-k", "--json"]),
        "removed",
    );
    assert_eq!(rm["removed"], serde_json::json!(["json-k"]));
    let again = env.banger(&["kernel", "rm", "json-k", "--json"]);
    json_err(&again, "not_found", 3);
    assert_eq!(
        json_doc(&again, "removed")["removed"],
        serde_json::json!([])
    );
    // The daemon verbs print its status.
    for verb in ["restart", "start", "status"] {
        let s = json_out(&env.banger(&["daemon", verb, "--json"]), "daemon_status");
        assert_eq!(s["running"], true, "{verb}");
    }
    let s = json_out(&env.banger(&["daemon", "stop", "--json"]), "daemon_status");
    assert_eq!(s["running"], false);
    let o = env.banger(&["daemon", "status", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "not running: exit 1 (docs/json.md)"
    );
    assert_eq!(json_doc(&o, "daemon_status")["running"], false);
}

fn vm_commands(env: &Env) {
    json_out(&env.banger(&["vm", "create", "js", "--json"]), "vm");
    let k = json_out(&env.banger(&["vm", "host-key", "js", "--json"]), "host_key");
    assert_eq!(k["alias"], "js.vm");
    // vm cp, both ways.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.txt");
    std::fs::write(&src, "hello json\n").unwrap();
    env.give(dir.path());
    let c = json_out(
        &env.banger(&[
            "vm",
            "cp",
            src.to_str().unwrap(),
            "js:/root/in.txt",
            "--json",
        ]),
        "copied",
    );
    assert!(c["bytes"].as_u64().unwrap() > 0, "{c}");
    let back = dir.path().join("back.txt");
    let c = json_out(
        &env.banger(&[
            "vm",
            "cp",
            "js:/root/in.txt",
            back.to_str().unwrap(),
            "--json",
        ]),
        "copied",
    );
    assert!(c["bytes"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "hello json\n");
    // vm logs: one log_line per console line.
    let o = env.banger(&["vm", "logs", "js", "-n", "20", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = stdout(&o);
    assert!(lines.lines().count() > 0, "no console lines");
    for l in lines.lines() {
        assert_shape("log_line", &serde_json::from_str(l).unwrap());
    }
    // Warm snapshots: list, make one, list it, remove it.
    json_out(
        &env.banger(&["image", "warm", "--list", "--json"]),
        "warm_list",
    );
    let w = json_out(
        &env.banger(&["image", "warm", "debian-bookworm", "--json"]),
        "warm",
    );
    assert_eq!(w["status"], "ready", "{w}");
    let l = json_out(
        &env.banger(&["image", "warm", "--list", "--json"]),
        "warm_list",
    );
    assert!(
        l.as_array()
            .unwrap()
            .iter()
            .any(|x| x["shape"] == w["shape"]),
        "{l}"
    );
    let r = json_out(
        &env.banger(&["image", "warm", "debian-bookworm", "--rm", "--json"]),
        "warm_removed",
    );
    assert_eq!(r["removed"], 1);
    // network down is refused while a VM runs; then it runs.
    json_err(&env.banger(&["network", "down", "--json"]), "invalid", 5);
    assert!(env.banger(&["vm", "delete", "-f", "js"]).status.success());
    json_out(&env.banger(&["network", "down", "--json"]), "removed");
}

/// `system` against a scratch root (BANGER_SYSTEM_ROOT) and a home with no daemon, so
/// nothing of this host or of the e2e daemon is touched. `install` needs an
/// unprivileged owner: the first user of this host with a uid from 1000.
fn system_commands(env: &Env) {
    let root = tempfile::Builder::new()
        .prefix("banger-sysroot-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    // `banger system` is root's whatever the e2e's mode: it installs the services.
    eprintln!("system commands: run as root (banger system installs root's services)");
    let sys = |args: &[&str]| -> Output {
        let mut c = env.cmd_as_root(true, args);
        c.env("BANGER_SYSTEM_ROOT", root.path())
            .env("BANGER_HOME", home.path());
        let o = c.output().unwrap();
        super::log(args, &o);
        o
    };
    let s = sys(&["system", "status", "--json"]);
    assert_eq!(s.status.code(), Some(1), "nothing installed: a check fails");
    assert_eq!(json_doc(&s, "system_status")["owner"], Value::Null);
    json_err(&sys(&["system", "restart", "--json"]), "failed", 1);
    let Some(owner) = unprivileged_user() else {
        eprintln!("system install --json: skipped (no user with a uid from 1000 on this host)");
        return;
    };
    let i = json_out(
        &sys(&["system", "install", "--owner", &owner, "--json"]),
        "system_install",
    );
    assert_eq!(i["owner"], owner.as_str());
    assert!(root.path().join("etc/banger/install.toml").exists());
    let s = sys(&["system", "status", "--json"]);
    assert_eq!(json_doc(&s, "system_status")["owner"], owner.as_str());
    let u = json_out(&sys(&["system", "uninstall", "--json"]), "system_uninstall");
    assert!(!u["removed"].as_array().unwrap().is_empty(), "{u}");
    assert!(!root.path().join("usr/local/bin/banger").exists());
}

fn unprivileged_user() -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let uid: u32 = f.get(2)?.parse().ok()?;
        ((1000..60000).contains(&uid)).then(|| f[0].to_string())
    })
}

/// `failed`: the daemon operation fails for a runtime reason (the boot fails through
/// the failpoint `boot@jf`, armed for that VM only).
fn failed_class(env: &Env) {
    assert!(env.banger(&["daemon", "stop"]).status.success());
    let mut c = env.cmd(true, &["daemon", "start"]);
    c.env("BANGER_FAIL_AT", "boot@jf");
    assert!(c.status().unwrap().success());
    let e = json_err(&env.banger(&["vm", "create", "jf", "--json"]), "failed", 1);
    assert!(e["error"]["op_id"].is_string(), "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected failure at stage boot"),
        "{e}"
    );
    let shown = json_out(&env.banger(&["vm", "show", "jf", "--json"]), "vm");
    assert_eq!(shown["state"], "error");
    assert!(env.banger(&["vm", "delete", "-f", "jf"]).status.success());
    assert!(env.banger(&["daemon", "stop"]).status.success());
}

/// A banger started in the e2e's namespace without `timeout` (or `runuser`) in
/// between, so the signal reaches banger itself (`ip netns exec` and `setpriv` exec it).
fn spawn(env: &Env, args: &[&str]) -> std::process::Child {
    env.cmd_direct(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigint(child: &std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(r, 0);
}

/// Poll `vm list` until a VM whose name starts with `prefix` is in `state`.
fn wait_for_vm(env: &Env, prefix: &str, state: &str, within: Duration) -> String {
    let end = Instant::now() + within;
    loop {
        let o = env.cmd(true, &["vm", "list", "--json"]).output().unwrap();
        let vms: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        let hit = vms.as_array().into_iter().flatten().find(|v| {
            v["name"].as_str().is_some_and(|n| n.starts_with(prefix)) && v["state"] == state
        });
        if let Some(v) = hit {
            return v["name"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < end,
            "no {prefix}* VM {state} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Its output once it exits; killed (and the test failed) if it has not within 15
/// minutes.
fn finish(child: std::process::Child, what: &str) -> Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let dog = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(900)).is_err() {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let o = child.wait_with_output().unwrap();
    let _ = tx.send(());
    dog.join().unwrap();
    super::log(&[what], &o);
    o
}

fn interrupted_class(env: &Env) {
    assert!(env
        .banger(&["vm", "create", "ji", "--no-start"])
        .status
        .success());
    // A command that only waits: Ctrl-C is `interrupted`, exit 130.
    let w = spawn(
        env,
        &[
            "vm",
            "wait",
            "ji",
            "--for",
            "running",
            "--json",
            "--timeout",
            "10m",
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    sigint(&w);
    let o = finish(w, "vm wait ji --for running --json (SIGINT)");
    json_err(&o, "interrupted", 130);
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    assert!(env.banger(&["vm", "delete", "ji"]).status.success());

    // vm run interrupted while its VM is being created: `interrupted`, 125 (vm run's
    // own failures), and the VM is deleted.
    let r = spawn(
        env,
        &[
            "vm", "run", "--name", "jr-boot", "--json", "--", "sleep", "30",
        ],
    );
    wait_for_vm(env, "jr-boot", "creating", Duration::from_secs(120));
    sigint(&r);
    let o = finish(
        r,
        "vm run --name jr-boot --json -- sleep 30 (SIGINT while creating)",
    );
    json_err(&o, "interrupted", 125);
    env.assert_nothing_left();

    // vm run interrupted while its command runs: the signal is the command's (docs/json.md),
    // so the result is the run document with the command's 130, and the VM is deleted.
    let r = spawn(
        env,
        &[
            "vm",
            "run",
            "--name",
            "jr-cmd",
            "--json",
            "--",
            "sh",
            "-c",
            "touch /root/started; exec sleep 30",
        ],
    );
    wait_for_vm(env, "jr-cmd", "running", Duration::from_secs(600));
    let ready = env.banger(&[
        "vm",
        "wait",
        "jr-cmd",
        "--for",
        "file:/root/started",
        "--timeout",
        "2m",
    ]);
    assert!(ready.status.success(), "{}", stderr(&ready));
    sigint(&r);
    let o = finish(
        r,
        "vm run --name jr-cmd --json -- sh -c ... (SIGINT while running)",
    );
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_shape("run", &v);
    assert_eq!(v["exit_code"], 130);
    env.assert_nothing_left();
}
