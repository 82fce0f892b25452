//! `Firecracker` through the `Vmm` trait against a fake firecracker *process*: this
//! test binary re-executed (see `fake_firecracker_process`) behind a small wrapper
//! script, serving the fake API on the `--api-sock` it was given and recording every
//! request to a file. No real Firecracker can run here; this checks spawning, the
//! readiness wait, the request order, error clean-up, liveness and both stop paths.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use banger_vmm::firecracker::{files, Firecracker, STOP_GRACE};
use banger_vmm::{MachineSpec, Vmm};
use common::{Behaviour, FakeServer, OnRequest, Seen};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const FAULT: &str = "Invalid kernel path: No such file or directory (os error 2)";

/// Entry point of the fake firecracker. A normal test run passes through here too and
/// does nothing; the launch tests start it with FAKE_FC_MODE set.
#[test]
fn fake_firecracker_process() {
    let Ok(mode) = std::env::var("FAKE_FC_MODE") else {
        println!("skipping: entry point of the fake firecracker; it only acts when a launch test spawns it");
        return;
    };
    let args: Vec<String> = std::env::args().collect();
    let sock = args
        .iter()
        .position(|a| a == "--api-sock")
        .map(|i| PathBuf::from(&args[i + 1]))
        .expect("--api-sock");
    let log = PathBuf::from(std::env::var("FAKE_FC_LOG").expect("FAKE_FC_LOG"));
    if mode == "exit" {
        eprintln!("Error: RunWithApi(FailedToBindSocket): this fake refuses to start");
        std::process::exit(1);
    }
    let behaviour = match mode.as_str() {
        "fault" => Behaviour {
            fail: Some((
                "PUT".into(),
                "/boot-source".into(),
                400,
                serde_json::json!({ "fault_message": FAULT }).to_string(),
            )),
            hang: false,
        },
        _ => Behaviour::default(),
    };
    let obedient = mode == "obedient";
    let on_request: OnRequest = Arc::new(move |seen: &Seen| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        writeln!(f, "{}", serde_json::to_string(seen).unwrap()).unwrap();
        let ctrl_alt_del = seen
            .body
            .as_ref()
            .is_some_and(|b| b["action_type"] == "SendCtrlAltDel");
        if obedient && ctrl_alt_del {
            // A guest with reboot=k resets through the keyboard controller and
            // Firecracker exits, after answering the request.
            std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(100));
                std::process::exit(0);
            });
        }
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let _server = FakeServer::spawn(&sock, behaviour, Some(on_request));
        std::future::pending::<()>().await;
    });
}

struct Setup {
    _dir: tempfile::TempDir,
    spec: MachineSpec,
    fc: Firecracker,
    log: PathBuf,
}

/// A runtime dir, an ELF "kernel", and a wrapper script that runs this test binary as
/// a fake firecracker in `mode`.
fn setup(mode: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("run");
    std::fs::create_dir(&rt).unwrap();
    let kernel = dir.path().join("vmlinux");
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(4096, 0);
    std::fs::write(&kernel, elf).unwrap();
    let log = dir.path().join("requests.jsonl");
    let exe = std::env::current_exe().unwrap();
    let script = dir.path().join("firecracker");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nFAKE_FC_MODE={mode} FAKE_FC_LOG='{}' exec '{}' --exact fake_firecracker_process --nocapture --test-threads=1 -- \"$@\"\n",
            log.display(),
            exe.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = common::full_spec(&rt);
    spec.kernel = kernel;
    let fc = Firecracker {
        binary: script.display().to_string(),
        ..Firecracker::default()
    };
    Setup {
        _dir: dir,
        spec,
        fc,
        log,
    }
}

fn recorded(log: &Path) -> Vec<Seen> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether any process still has `needle` in its command line.
fn any_process_with(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let pid: Option<u32> = e.file_name().to_str().and_then(|s| s.parse().ok());
        pid.is_some_and(|p| banger_vmm::process::alive_with_tag(p, needle))
    })
}

#[tokio::test]
async fn launch_configures_in_order_and_kill_stops_with_ctrl_alt_del() {
    let s = setup("obedient");
    let vmm: &dyn Vmm = &s.fc;
    let t = Instant::now();
    let h = vmm.launch(&s.spec).await.unwrap();
    println!("fake launch took {:?}", t.elapsed());
    let rt = &s.spec.runtime_dir;
    assert_eq!(h.backend, "firecracker");
    assert_eq!(h.control_socket, rt.join(files::API));
    assert_eq!(h.agent_socket, rt.join(files::VSOCK));
    assert_eq!(h.console_log, rt.join(files::CONSOLE));
    assert!(
        rt.join(files::LOG).exists(),
        "the log file exists before PUT /logger"
    );
    assert!(vmm.is_alive(&h, &s.spec.id));

    let puts: Vec<Seen> = recorded(&s.log)
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    let mut want = s.fc.configure_requests(&s.spec).unwrap();
    want.push(Firecracker::start_request().unwrap());
    assert_eq!(puts.len(), want.len(), "{puts:?}");
    for (got, want) in puts.iter().zip(&want) {
        assert_eq!(
            (got.path.as_str(), &got.body),
            (want.path.as_str(), &want.body)
        );
    }

    let t = Instant::now();
    vmm.kill(&h).await.unwrap();
    assert!(
        t.elapsed() < STOP_GRACE,
        "stopped by Ctrl+Alt+Del, not SIGKILL"
    );
    assert!(!vmm.is_alive(&h, &s.spec.id));
    let last = recorded(&s.log).pop().unwrap();
    assert_eq!(last.body.unwrap()["action_type"], "SendCtrlAltDel");
    // Killing a stopped VMM is fine.
    vmm.kill(&h).await.unwrap();
}

#[tokio::test]
async fn kill_falls_back_to_sigkill_when_the_guest_ignores_ctrl_alt_del() {
    let s = setup("stubborn");
    let h = s.fc.launch(&s.spec).await.unwrap();
    let t = Instant::now();
    s.fc.kill(&h).await.unwrap();
    let took = t.elapsed();
    assert!(took >= STOP_GRACE, "waited for the guest first ({took:?})");
    assert!(!s.fc.is_alive(&h, &s.spec.id));
}

#[tokio::test]
async fn a_rejected_request_fails_launch_and_leaves_nothing_running() {
    let s = setup("fault");
    let e = s.fc.launch(&s.spec).await.unwrap_err().to_string();
    println!("{e}");
    assert!(e.contains(FAULT), "{e}");
    assert!(e.contains("PUT /boot-source") && e.contains("400"), "{e}");
    let api = s.spec.runtime_dir.join(files::API);
    assert!(!any_process_with(&api.display().to_string()));
    assert!(!api.exists());
    let paths: Vec<String> = recorded(&s.log).into_iter().map(|r| r.path).collect();
    assert!(
        !paths.iter().any(|p| p == "/actions"),
        "never started: {paths:?}"
    );
}

#[tokio::test]
async fn an_early_exit_reports_firecrackers_own_words() {
    let s = setup("exit");
    let e = s.fc.launch(&s.spec).await.unwrap_err().to_string();
    println!("{e}");
    assert!(e.contains("exited during startup"), "{e}");
    assert!(e.contains("FailedToBindSocket"), "{e}");
}

#[tokio::test]
async fn missing_binary_and_compressed_kernel_are_clear_errors() {
    let mut s = setup("obedient");
    s.fc.binary = "/nonexistent/firecracker".into();
    let e = s.fc.launch(&s.spec).await.unwrap_err().to_string();
    assert!(e.contains("not installed") && e.contains("QEMU"), "{e}");

    let s = setup("obedient");
    let mut spec = s.spec.clone();
    std::fs::write(&spec.kernel, b"MZ\x00\x00 a bzImage starts like a PE file").unwrap();
    let e = s.fc.launch(&spec).await.unwrap_err().to_string();
    assert!(e.contains("not an ELF vmlinux"), "{e}");
    assert!(
        !spec.runtime_dir.join(files::CONSOLE).exists(),
        "nothing was spawned"
    );
    spec.kernel = "/nonexistent/vmlinux".into();
    assert!(s.fc.launch(&spec).await.is_err());
}

#[tokio::test]
async fn is_alive_is_false_for_a_reused_pid() {
    let s = setup("obedient");
    let h = banger_vmm::Handles {
        backend: "firecracker".into(),
        pid: std::process::id(),
        control_socket: s.spec.runtime_dir.join(files::API),
        agent_socket: s.spec.runtime_dir.join(files::VSOCK),
        console_log: s.spec.runtime_dir.join(files::CONSOLE),
        accel: banger_vmm::Accel::Kvm,
        start_time: None,
        tag: None,
    };
    assert!(!s.fc.is_alive(&h, &s.spec.id));
    // kill must not signal a pid that is not ours.
    s.fc.kill(&h).await.unwrap();
}
