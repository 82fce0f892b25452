//! End-to-end section for issue 18 (banger for coding agents and scripts): `--json`
//! output of the commands validated against docs/schemas.json, a JSON error and exit
//! status per error class, `banger events`, `vm wait`, `vm run --json --capture`, and
//! parallel attempts as branches (work tree, index and HEAD untouched; one failed
//! attempt does not stop the others). Prints the wall time of `--parallel 3` against
//! three sequential runs (measured, never asserted). `BANGER_E2E_ONLY=agent_cli`.

use super::{stderr, stdout, Env};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const SCHEMAS: &str = include_str!("../../../../docs/schemas.json");

/// Panic unless `v` matches `shape` of docs/schemas.json.
pub(crate) fn assert_shape(shape: &str, v: &Value) {
    let mut doc: Value = serde_json::from_str(SCHEMAS).unwrap();
    doc["$ref"] = Value::String(format!("#/$defs/{shape}"));
    let val = jsonschema::validator_for(&doc).unwrap();
    let errors: Vec<String> = val.iter_errors(v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{shape}: {errors:?}\n{v:#}");
}

/// The JSON document on stdout, checked against `shape`.
pub(crate) fn json_out(o: &Output, shape: &str) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", stdout(o)));
    assert_shape(shape, &v);
    v
}

/// The JSON error on stderr, its class and the exit status.
pub(crate) fn json_err(o: &Output, code: &str, status: i32) -> Value {
    let line = stderr(o);
    let last = line.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("stderr's last line is not JSON ({e}): {line}"));
    assert_shape("error", &v);
    assert_eq!(v["error"]["code"], code, "{line}");
    assert_eq!(o.status.code(), Some(status), "{line}");
    v
}

/// git as banger's user runs it (privsep mode: the owner, whose repository the test
/// makes it: git refuses other users' repositories, and banger writes branches into
/// it). Not given here on every call: a chown changes the files' ctime, so the next
/// `git status` would rewrite the index the checkout's fingerprint holds.
fn git(env: &Env, dir: &Path, args: &[&str]) -> String {
    let out = env
        .program(false, "300", "git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Everything about a checkout a run must not change: HEAD, the index file's bytes,
/// the work tree's status and files.
fn checkout_fingerprint(env: &Env, repo: &Path) -> String {
    let index = std::fs::read(repo.join(".git/index")).unwrap();
    let head = std::fs::read_to_string(repo.join(".git/HEAD")).unwrap();
    let mut files = String::new();
    for e in std::fs::read_dir(repo).unwrap().flatten() {
        if e.file_name() != ".git" {
            let body = std::fs::read(e.path()).unwrap_or_default();
            files.push_str(&format!("{:?}={:?};", e.file_name(), body));
        }
    }
    format!(
        "{head}|{}|{:?}|{}|{files}",
        git(env, repo, &["rev-parse", "HEAD"]),
        index,
        git(env, repo, &["status", "--porcelain"])
    )
}

pub fn agent_cli(env: &Env) {
    schemas_and_classes(env);
    events_and_wait(env);
    run_json(env);
    parallel_attempts(env);
    env.assert_nothing_left();
}

fn schemas_and_classes(env: &Env) {
    let vm = json_out(&env.banger(&["vm", "create", "aj", "--json"]), "vm");
    assert_eq!(vm["state"], "running");
    assert!(!vm["timings"].as_array().unwrap().is_empty(), "{vm}");
    json_out(&env.banger(&["vm", "show", "aj", "--json"]), "vm");
    json_out(&env.banger(&["vm", "list", "--json"]), "vm_list");
    json_out(&env.banger(&["ps", "--json"]), "vm_list");
    json_out(&env.banger(&["vm", "ports", "aj", "--json"]), "ports");
    json_out(&env.banger(&["vm", "stats", "aj", "--json"]), "stats");
    json_out(&env.banger(&["image", "list", "--json"]), "image_list");
    json_out(
        &env.banger(&["image", "show", "debian-bookworm", "--json"]),
        "image",
    );
    json_out(&env.banger(&["kernel", "list", "--json"]), "kernel_list");
    json_out(&env.banger(&["operations", "--json"]), "operations");
    json_out(
        &env.banger(&["daemon", "status", "--json"]),
        "daemon_status",
    );
    json_out(&env.banger(&["version", "--json"]), "version");
    // BANGER_OUTPUT=json is --json.
    let mut c = env.cmd(true, &["vm", "show", "aj"]);
    c.env("BANGER_OUTPUT", "json");
    json_out(&c.output().unwrap(), "vm");

    // One JSON error and one exit status per class.
    json_err(
        &env.banger(&["vm", "show", "nope", "--json"]),
        "not_found",
        3,
    );
    json_err(
        &env.banger(&["vm", "create", "aj", "--json"]),
        "already_exists",
        4,
    );
    json_err(
        &env.banger(&["vm", "list", "--bogus", "--json"]),
        "usage",
        2,
    );
    json_err(&env.banger(&["vm", "delete", "aj", "--json"]), "invalid", 5);
    json_err(
        &env.banger(&[
            "vm",
            "wait",
            "aj",
            "--for",
            "file:/nonexistent",
            "--timeout",
            "3s",
            "--json",
        ]),
        "timeout",
        8,
    );
    json_err(
        &env.banger(&["vm", "run", "--name", "aj", "--json", "--", "true"]),
        "already_exists",
        125,
    );
    // A daemon that cannot start (its state directory is a file).
    let bad_home = tempfile::tempdir().unwrap();
    std::fs::write(bad_home.path().join("state"), "not a directory").unwrap();
    env.give(bad_home.path());
    let mut c = env.cmd(true, &["vm", "list", "--json"]);
    c.env("BANGER_HOME", bad_home.path());
    let o = c.output().unwrap();
    super::log(&["vm", "list", "--json", "(state is a file)"], &o);
    assert_ne!(o.status.code(), Some(0));
    let code = serde_json::from_str::<Value>(stderr(&o).lines().last().unwrap_or("{}"))
        .map(|v| v["error"]["code"].clone())
        .unwrap_or_default();
    assert!(
        code == "daemon_unavailable" || code == "failed",
        "{}",
        stderr(&o)
    );

    let stopped = json_out(&env.banger(&["vm", "stop", "aj", "--json"]), "vm_list");
    assert_eq!(stopped[0]["state"], "stopped");
    let del = json_out(&env.banger(&["vm", "delete", "aj", "--json"]), "deleted");
    assert_eq!(del["deleted"][0], "aj");
}

/// A child `banger` whose stdout lines are read on a thread.
struct Child {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Child {
    fn spawn(env: &Env, args: &[&str]) -> Child {
        let mut c = env.cmd(true, args);
        c.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = c.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Child { child, lines: rx }
    }

    fn line(&self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    /// Everything it printed, once it closed its stdout (it exited), as one JSON
    /// document.
    fn doc(&self, within: Duration) -> Value {
        let end = Instant::now() + within;
        let mut text = String::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => text.push_str(&l),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("no result within {within:?} ({e}): {text}"),
            }
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn events_and_wait(env: &Env) {
    let events = Child::spawn(env, &["events", "--json"]);
    std::thread::sleep(Duration::from_secs(2)); // let it subscribe
    assert!(env
        .banger(&["vm", "create", "ev", "--no-start"])
        .status
        .success());
    // vm wait --for running, started before the VM starts: woken by the event.
    let mut waiter = Child::spawn(
        env,
        &[
            "vm",
            "wait",
            "ev",
            "--for",
            "running",
            "--json",
            "--timeout",
            "10m",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(env.banger(&["vm", "start", "ev"]).status.success());
    let w = waiter.doc(Duration::from_secs(120));
    assert_shape("wait", &w);
    assert_eq!(w["state"], "running");
    assert!(waiter.child.wait().unwrap().success());
    // file: and port: conditions.
    let file = Child::spawn(
        env,
        &["vm", "wait", "ev", "--for", "file:/root/ready", "--json"],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(env
        .banger(&["vm", "ssh", "ev", "--", "touch", "/root/ready"])
        .status
        .success());
    let f = file.doc(Duration::from_secs(120));
    assert_eq!(f["condition"], "file:/root/ready");
    let server = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 8123))\ns.listen(1)\nimport time\ntime.sleep(600)\n";
    let start = format!(
        "printf %s {} > /root/s.py && setsid -f python3 /root/s.py >/dev/null 2>&1 </dev/null",
        banger_quote(server)
    );
    let port = Child::spawn(env, &["vm", "wait", "ev", "--for", "port:8123", "--json"]);
    assert!(env
        .banger(&["vm", "ssh", "ev", "--", &start])
        .status
        .success());
    let p = port.doc(Duration::from_secs(120));
    assert_eq!(p["condition"], "port:8123");
    // --for stopped, then the events seen.
    let stopped = Child::spawn(env, &["vm", "wait", "ev", "--for", "stopped", "--json"]);
    assert!(env.banger(&["vm", "stop", "ev"]).status.success());
    let s = stopped.doc(Duration::from_secs(120));
    assert_eq!(s["state"], "stopped");
    assert!(env.banger(&["vm", "delete", "ev"]).status.success());
    let mut seen = vec![];
    while let Some(l) = events.line(Duration::from_secs(10)) {
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_shape("event", &v);
        if v["vm"] == "ev" {
            seen.push(v["state"].as_str().unwrap().to_string());
        }
        if seen.last().map(String::as_str) == Some("deleted") {
            break;
        }
    }
    assert_eq!(
        seen,
        ["creating", "stopped", "creating", "running", "stopped", "deleted"]
    );
    // Waiting on a VM that does not exist fails at once.
    json_err(
        &env.banger(&["vm", "wait", "nope", "--for", "running", "--json"]),
        "not_found",
        3,
    );
}

/// `s` single-quoted for a POSIX shell.
fn banger_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn run_json(env: &Env) {
    let o = env.banger(&[
        "vm",
        "run",
        "--json",
        "--capture",
        "--",
        "sh",
        "-c",
        "echo hi; echo oops >&2; head -c 1500000 /dev/zero | tr '\\0' x; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_shape("run", &v);
    assert_eq!(v["exit_code"], 3);
    assert!(v["stdout"]["text"].as_str().unwrap().starts_with("hi\nxxx"));
    assert_eq!(v["stdout"]["bytes"], 3 + 1_500_000);
    assert_eq!(v["stdout"]["truncated"], true);
    assert_eq!(v["stdout"]["text"].as_str().unwrap().len(), 1024 * 1024);
    assert_eq!(v["stderr"]["text"], "oops\n");
    assert_eq!(v["stderr"]["truncated"], false);
    // Without --capture the command's output goes to stderr; stdout is the JSON alone.
    let o = env.banger(&["vm", "run", "--json", "--", "echo", "to-stderr"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_shape("run", &v);
    assert!(stderr(&o).contains("to-stderr"), "{}", stderr(&o));
}

fn parallel_attempts(env: &Env) {
    let dir = tempfile::Builder::new()
        .prefix("banger-attempts-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    env.give(dir.path());
    git(env, &repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "base\n").unwrap();
    git(env, &repo, &["add", "README"]);
    git(env, &repo, &["commit", "-qm", "base"]);
    // Local state a run must not touch: a staged file and an unstaged change.
    std::fs::write(repo.join("staged.txt"), "staged\n").unwrap();
    git(env, &repo, &["add", "staged.txt"]);
    std::fs::write(repo.join("README"), "base\nlocal edit\n").unwrap();
    let before = checkout_fingerprint(env, &repo);
    let repo_s = repo.to_str().unwrap();

    // Attempt i writes i and exits i % 2 (the VM name ends in -i).
    let cmd = "n=$(hostname); n=${n##*-}; echo $n > out.txt; exit $((n % 2))";
    // Attempt 2's boot fails (a failpoint armed for its VM only, read by the daemon
    // at start): it fails alone, and its VM is deleted like the others.
    assert!(env.banger(&["daemon", "stop"]).status.success());
    let mut c = env.cmd(true, &["daemon", "start"]);
    c.env("BANGER_FAIL_AT", "boot@run-pa-2");
    assert!(c.status().unwrap().success());
    let t = Instant::now();
    let o = env.banger(&[
        "vm",
        "run",
        repo_s,
        "--parallel",
        "3",
        "--run-id",
        "pa",
        "--json",
        "--",
        "sh",
        "-c",
        cmd,
    ]);
    let parallel_wall = t.elapsed();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_shape("attempts", &r);
    let a = r["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0]["exit_code"], 1);
    assert_eq!(a[2]["exit_code"], 1);
    assert_eq!(a[1]["exit_code"], Value::Null);
    assert_eq!(a[1]["error"]["code"], "failed", "{r}");
    assert!(
        a[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected failure at stage boot"),
        "{r}"
    );
    assert_eq!(a[1]["branch"], Value::Null);
    for i in [1, 3] {
        let b = format!("banger/pa/{i}");
        assert_eq!(a[i - 1]["branch"], b.as_str());
        assert_eq!(
            git(env, &repo, &["show", &format!("{b}:out.txt")]),
            format!("{i}\n")
        );
        // The guest's tree: the shipped files as they were (uncommitted changes too).
        assert_eq!(
            git(env, &repo, &["show", &format!("{b}:README")]),
            "base\nlocal edit\n"
        );
        assert_eq!(
            git(env, &repo, &["rev-parse", &format!("{b}^")]).trim(),
            r["base"].as_str().unwrap()
        );
    }
    let diff = git(
        env,
        &repo,
        &["diff", "--stat", "banger/pa/1", "banger/pa/3"],
    );
    assert!(diff.contains("out.txt | 2 +-"), "{diff}");
    assert_eq!(
        before,
        checkout_fingerprint(env, &repo),
        "the checkout changed"
    );
    // The failed attempt's VM is gone too; then a daemon without the failpoint.
    env.assert_nothing_left();
    assert!(env.banger(&["daemon", "stop"]).status.success());

    // --each with a table; the same run id is refused (its branches exist).
    let o = env.banger(&[
        "vm",
        "run",
        repo_s,
        "--each",
        "echo a > a.txt",
        "rm README; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let table = stdout(&o);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ATTEMPT", "EXIT", "DURATION", "FILES", "+/-", "BRANCH"],
        "{table}"
    );
    assert!(
        table.lines().nth(2).unwrap().split_whitespace().nth(1) == Some("4"),
        "{table}"
    );
    assert_eq!(
        before,
        checkout_fingerprint(env, &repo),
        "the checkout changed"
    );
    let again = env.banger(&[
        "vm",
        "run",
        repo_s,
        "--parallel",
        "1",
        "--run-id",
        "pa",
        "--",
        "true",
    ]);
    assert_ne!(again.status.code(), Some(0));
    env.assert_nothing_left();

    // Measured, not asserted: --parallel 3 against three sequential runs.
    let t = Instant::now();
    let p = env.banger(&["vm", "run", repo_s, "--parallel", "3", "--", "true"]);
    let par = t.elapsed();
    assert!(p.status.success(), "{}", stderr(&p));
    let t = Instant::now();
    for _ in 0..3 {
        assert!(env
            .banger(&["vm", "run", repo_s, "--", "true"])
            .status
            .success());
    }
    let seq = t.elapsed();
    eprintln!(
        "MEASURED: vm run --parallel 3 took {:.1} s; three sequential vm runs took {:.1} s \
         (first parallel run, with a failed attempt: {:.1} s)",
        par.as_secs_f64(),
        seq.as_secs_f64(),
        parallel_wall.as_secs_f64()
    );
    assert_eq!(
        before,
        checkout_fingerprint(env, &repo),
        "the checkout changed"
    );
}
