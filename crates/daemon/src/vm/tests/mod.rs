//! The VM service in-process, with fake host parts (no root, no VMM, no guest):
//! create, start, stop, kill, delete, set and reconcile, and, for every start step,
//! that its failure undoes exactly the steps before it.

mod crash;
pub mod fakes;
mod hostile;
mod issue19;
mod rootless;
mod stall;

use super::{create, delete, query, reconcile, set, start, stop};
use crate::app::App;
use crate::error::DaemonError;
use banger_model::{VmName, VmState, VmmChoice};
use banger_rpc::{ErrorCode, ProgressSink, RpcError, VmCreateParams, VmDeleteParams, VmSetParams};
use fakes::{app_with, Fail, World, FAKE_SOCKET};
use std::sync::Arc;

fn sink() -> ProgressSink {
    ProgressSink::detached()
}

fn params(name: &str) -> VmCreateParams {
    VmCreateParams {
        name: Some(VmName::parse(name).unwrap()),
        ..Default::default()
    }
}

async fn create_vm(app: &App, name: &str) -> Result<banger_rpc::VmInfo, DaemonError> {
    create::create(app, &format!("op-{name}"), params(name), &sink()).await
}

/// The VM's state and runtime directories.
fn dirs(app: &App, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let rec = app.db(|s| s.get_vm_by_name(name)).unwrap();
    (app.layout.vm_dir(&rec.id), app.layout.vm_runtime(&rec.id))
}

/// Nothing of the VM is left on the "host": no directories, taps or VMMs.
fn assert_nothing_left(app: &App, world: &World, name: &str) {
    let (vm_dir, rt) = dirs(app, name);
    assert!(!vm_dir.exists(), "{} left", vm_dir.display());
    assert!(!rt.exists(), "{} left", rt.display());
    assert!(world.taps().is_empty(), "taps left: {:?}", world.taps());
    assert!(world.alive().is_empty(), "VMMs left: {:?}", world.alive());
}

#[tokio::test]
async fn create_runs_every_step_and_records_running() {
    let (_d, app, world) = app_with(|_| {});
    let info = create_vm(&app, "dev").await.unwrap();
    assert_eq!(info.state, VmState::Running);
    let stages: Vec<&str> = info.timings.iter().map(|t| t.stage.as_str()).collect();
    assert_eq!(stages, ["reserve", "disks", "network", "boot", "agent"]);
    let log = world.log();
    let tap = banger_host::tap_name(&info.id);
    assert_eq!(
        log,
        [
            "overlay".to_string(),
            "work".into(),
            "bridge banger0".into(),
            "nat".into(),
            "isolation".into(),
            format!("create-tap {tap}"),
            format!("isolate-tap {tap} {}", info.ip),
            "launch 1001 disks=3".into(),
            "agent ready".into(),
        ]
    );
    let (vm_dir, rt) = dirs(&app, "dev");
    assert!(vm_dir.join(super::files::OVERLAY).exists());
    assert!(vm_dir.join(super::files::WORK).exists());
    assert!(
        crate::handles::read(&vm_dir).is_some(),
        "handles.json written"
    );
    assert!(rt.join(FAKE_SOCKET).exists());
    let shown = query::show(&app, "dev").unwrap();
    assert_eq!(
        (shown.pid, shown.backend.as_deref()),
        (Some(1001), Some("fake"))
    );
    // The host key was made with the overlay and pinned before the boot; the VM
    // resolves by name from now on.
    assert_eq!(
        std::fs::read_to_string(vm_dir.join(super::files::HOST_KEY)).unwrap(),
        "ssh-ed25519 AAAAfakehostkey\n"
    );
    assert_eq!(app.dns.names.get("dev"), Some(info.ip));
    // NAT and isolation are set up once per daemon; each tap gets its rules.
    world.clear_log();
    let second = create_vm(&app, "second").await.unwrap();
    let log = world.log();
    assert!(!log.contains(&"nat".to_string()));
    assert!(!log.contains(&"isolation".to_string()));
    let tap2 = banger_host::tap_name(&second.id);
    assert!(log.contains(&format!("isolate-tap {tap2} {}", second.ip)));
}

/// For each way a start step can fail: the error, and the exact undo that follows
/// (newest first) of what the steps before it made.
#[tokio::test]
async fn every_start_step_failure_undoes_exactly_the_steps_before_it() {
    // (fail point, the step it belongs to, what is undone after the failure)
    let cases: [(Fail, &str, &[&str]); 7] = [
        (Fail::Overlay, "creating the overlay disk failed", &[]),
        (Fail::Work, "creating the work disk failed", &[]),
        (Fail::Bridge, "setting up bridge banger0 failed", &[]),
        (Fail::Tap, "creating tap", &[]),
        (Fail::Isolate, "isolating tap", &["delete-tap"]),
        (Fail::Launch, "starting the VM failed", &["delete-tap"]),
        (
            Fail::Agent,
            "the guest agent never answered",
            &["kill", "delete-tap"],
        ),
    ];
    for (point, message, undone) in cases {
        let (_d, app, world) = app_with(|_| {});
        world.fail(point);
        let name = "dev";
        let e = create_vm(&app, name).await.unwrap_err();
        assert!(e.to_string().contains(message), "{point:?}: {e}");
        assert_eq!(RpcError::from(e).code, ErrorCode::OperationFailed);
        // The undo: the log after the failing step, in order.
        let log = world.log();
        let after: Vec<&str> = log
            .iter()
            .map(|l| l.split(' ').next().unwrap())
            .skip_while(|l| !matches!(*l, "kill" | "delete-tap"))
            .collect();
        assert_eq!(after, undone, "{point:?}: {log:?}");
        assert_nothing_left(&app, &world, name);
        let rec = app.db(|s| s.get_vm_by_name(name)).unwrap();
        assert_eq!(rec.state, VmState::Error);
        assert!(rec.error.unwrap().contains(message));
    }
}

/// The e2e's `BANGER_FAIL_AT=<stage>`: a failpoint fires as its stage ends, after
/// the stage's work and undo, and the rollback removes that stage's work too.
#[tokio::test]
async fn failpoints_at_each_stage_leave_nothing() {
    for stage in ["disks", "network", "boot", "agent"] {
        let (_d, app, world) = app_with(|c| {
            c.failpoints = crate::failpoint::Failpoints::parse(Some(stage));
        });
        let e = create_vm(&app, "dev").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("injected failure at stage {stage} (BANGER_FAIL_AT)")
        );
        assert_nothing_left(&app, &world, "dev");
        let made = world.log().iter().any(|l| l.starts_with("launch"));
        assert_eq!(made, matches!(stage, "boot" | "agent"), "{stage}");
    }
}

#[tokio::test]
async fn a_failed_start_of_a_stopped_vm_keeps_its_disks() {
    let (_d, app, world) = app_with(|_| {});
    create_vm(&app, "dev").await.unwrap();
    stop::stop(&app, "op-stop", "dev", &sink()).await.unwrap();
    let (vm_dir, _) = dirs(&app, "dev");
    world.fail(Fail::Agent);
    world.clear_log();
    start::start_vm(&app, "op-start", "dev", &sink())
        .await
        .unwrap_err();
    assert!(vm_dir.join(super::files::OVERLAY).exists(), "data kept");
    assert!(vm_dir.join(super::files::WORK).exists(), "data kept");
    assert!(
        !world.log().contains(&"overlay".to_string()),
        "disks reused"
    );
    assert!(world.taps().is_empty() && world.alive().is_empty());
    // It starts again once the guest answers.
    world.heal();
    let info = start::start_vm(&app, "op-start2", "dev", &sink())
        .await
        .unwrap();
    assert_eq!(info.state, VmState::Running);
}

#[tokio::test]
async fn stop_asks_the_guest_then_cleans_up() {
    let (_d, app, world) = app_with(|_| {});
    create_vm(&app, "dev").await.unwrap();
    let (vm_dir, rt) = dirs(&app, "dev");
    world.clear_log();
    let info = stop::stop(&app, "op-stop", "dev", &sink()).await.unwrap();
    assert_eq!(info.state, VmState::Stopped);
    let stages: Vec<&str> = info.timings.iter().map(|t| t.stage.as_str()).collect();
    assert_eq!(stages, ["sync", "poweroff", "cleanup"]);
    let log = world.log();
    assert_eq!(log[0], "shutdown dev");
    assert!(
        !log.iter().any(|l| l.starts_with("kill")),
        "no force needed: {log:?}"
    );
    assert!(log.iter().any(|l| l.starts_with("delete-tap")));
    assert!(crate::handles::read(&vm_dir).is_none());
    assert!(
        !rt.join(FAKE_SOCKET).exists(),
        "the backend's socket is removed"
    );
    assert!(
        rt.join("console.log").exists(),
        "the console log stays for vm logs"
    );
    assert!(vm_dir.join(super::files::WORK).exists(), "disks stay");
}

#[tokio::test]
async fn stop_forces_off_a_guest_that_ignores_it() {
    let (_d, app, world) = app_with(|_| {});
    create_vm(&app, "dev").await.unwrap();
    world.fail(Fail::Shutdown);
    world.clear_log();
    let info = stop::stop(&app, "op-stop", "dev", &sink()).await.unwrap();
    let stages: Vec<&str> = info.timings.iter().map(|t| t.stage.as_str()).collect();
    assert_eq!(stages, ["sync", "poweroff", "force-off", "cleanup"]);
    assert!(world.log().iter().any(|l| l.starts_with("kill")));
    assert!(world.alive().is_empty() && world.taps().is_empty());
}

#[tokio::test]
async fn kill_and_restart() {
    let (_d, app, world) = app_with(|_| {});
    create_vm(&app, "dev").await.unwrap();
    let killed = stop::kill(&app, "dev").await.unwrap();
    assert_eq!(killed.state, VmState::Stopped);
    assert!(world.alive().is_empty() && world.taps().is_empty());
    let again = stop::restart(&app, "op-r", "dev", &sink()).await.unwrap();
    assert_eq!(again.state, VmState::Running);
    assert_eq!(world.alive().len(), 1);
}

#[tokio::test]
async fn delete_refuses_a_running_vm_without_force_and_removes_everything_with_it() {
    let (_d, app, world) = app_with(|_| {});
    create_vm(&app, "dev").await.unwrap();
    let (vm_dir, rt) = dirs(&app, "dev");
    let p = |force, created_op: Option<&str>| VmDeleteParams {
        name: "dev".into(),
        force,
        created_op: created_op.map(str::to_string),
    };
    let e = delete::delete(&app, p(false, None)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    assert_eq!(world.alive().len(), 1, "refused means untouched");
    let e = delete::delete(&app, p(true, Some("op-other")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    delete::delete(&app, p(true, Some("op-dev"))).await.unwrap();
    assert!(!vm_dir.exists() && !rt.exists());
    assert!(world.alive().is_empty() && world.taps().is_empty());
    let e = query::show(&app, "dev").unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn prune_deletes_exactly_the_vms_that_are_not_running() {
    let (_d, app, world) = app_with(|_| {});
    create_vm(&app, "up").await.unwrap();
    create_vm(&app, "down").await.unwrap();
    stop::kill(&app, "down").await.unwrap();
    world.fail(Fail::Agent);
    create_vm(&app, "broken").await.unwrap_err();
    let r = delete::prune(&app).await.unwrap();
    let mut deleted = r.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, ["broken", "down"]);
    let names: Vec<String> = query::list(&app)
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["up"]);
}

#[tokio::test]
async fn set_grows_a_stopped_vm_and_refuses_the_rest() {
    let (_d, app, world) = app_with(|_| {});
    create_vm(&app, "dev").await.unwrap();
    let grow = |disk| VmSetParams {
        name: "dev".into(),
        cpus: Some(4),
        memory_mib: None,
        disk_mib: Some(disk),
    };
    let e = set::set(&app, grow(16384)).await.unwrap_err();
    assert!(e.to_string().contains("stop it first"), "{e}");
    stop::kill(&app, "dev").await.unwrap();
    let info = set::set(&app, grow(16384)).await.unwrap();
    assert_eq!((info.cpus, info.disk_mib), (4, 16384));
    assert!(world.log().contains(&"grow 16384".to_string()));
    let e = set::set(&app, grow(1024)).await.unwrap_err();
    assert!(e.to_string().contains("can only grow"), "{e}");
}

#[tokio::test]
async fn an_unusable_explicit_backend_is_refused_before_anything_exists() {
    let (_d, app, world) = app_with(|_| {});
    let mut p = params("fc");
    p.vmm = Some(VmmChoice::Firecracker);
    let e = create::create(&app, "op-fc", p, &sink()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    assert!(app.db(|s| s.get_vm_by_name("fc")).is_err(), "no record");
    assert_eq!(world.log(), ["refuse firecracker"]);
}

#[tokio::test]
async fn sizes_and_duplicate_names_are_refused() {
    let (_d, app, _world) = app_with(|_| {});
    let mut p = params("big");
    p.cpus = Some(65);
    let e = create::create(&app, "op-big", p, &sink())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--cpus 65 is out of range"), "{e}");
    create_vm(&app, "dev").await.unwrap();
    let e = create_vm(&app, "dev").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::AlreadyExists);
}

#[tokio::test]
async fn reconcile_readopts_live_vms_and_settles_the_rest() {
    let (_d, app, world) = app_with(|_| {});
    let live = create_vm(&app, "live").await.unwrap();
    let dead = create_vm(&app, "dead").await.unwrap();
    world.crash(dead.pid.unwrap());
    reconcile::reconcile(&app).await;
    assert_eq!(query::show(&app, "live").unwrap().state, VmState::Running);
    assert_eq!(query::show(&app, "live").unwrap().pid, live.pid);
    let d = query::show(&app, "dead").unwrap();
    assert_eq!((d.state, d.pid), (VmState::Stopped, None));
    assert_eq!(world.taps().len(), 1, "the dead VM's tap is removed");
    // A VM caught half-created by a daemon that died.
    app.db(|s| s.set_vm_state(&dead.id, VmState::Creating, None))
        .unwrap();
    reconcile::reconcile(&app).await;
    let d = query::show(&app, "dead").unwrap();
    assert_eq!(d.state, VmState::Error);
    assert!(d.error.unwrap().contains("bangerd stopped"));
}

#[tokio::test]
async fn reconcile_removes_taps_no_running_vm_uses() {
    let (_d, app, world) = app_with(|_| {});
    let live = create_vm(&app, "live").await.unwrap();
    create_vm(&app, "gone").await.unwrap();
    // A tap whose VM record never made it (a daemon killed mid-create), and one of a
    // VM deleted from the records behind the daemon's back.
    world.stray_tap("bgrdeadbeef");
    let gone = app.db(|s| s.get_vm_by_name("gone")).unwrap();
    app.db(|s| s.delete_vm(&gone.id)).unwrap();
    world.clear_log();
    reconcile::reconcile(&app).await;
    assert_eq!(
        world.taps().into_iter().collect::<Vec<_>>(),
        [banger_host::tap_name(&live.id)],
        "only the running VM keeps its tap"
    );
    let log = world.log();
    assert!(
        log.contains(&"delete-tap bgrdeadbeef".to_string()),
        "{log:?}"
    );
    assert!(
        log.contains(&format!("delete-tap {}", banger_host::tap_name(&gone.id))),
        "{log:?}"
    );
}

#[tokio::test]
async fn without_privilege_create_and_start_are_refused_before_anything_exists() {
    let (_d, app, world) = app_with(|_| {});
    create::create(
        &app,
        "op-x",
        VmCreateParams {
            no_start: true,
            ..params("later")
        },
        &sink(),
    )
    .await
    .unwrap();
    world.fail(Fail::NoPrivilege);
    world.clear_log();
    let e = create_vm(&app, "dev").await.unwrap_err();
    assert!(e.to_string().contains("sudo banger system install"), "{e}");
    assert!(
        app.db(|s| s.get_vm_by_name("dev")).is_err(),
        "nothing reserved"
    );
    let e = start::start_vm(&app, "op-s", "later", &sink())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sudo banger system install"), "{e}");
    assert_eq!(
        query::show(&app, "later").unwrap().state,
        VmState::Stopped,
        "a refused start leaves the VM as it was"
    );
    assert!(
        world.log().is_empty(),
        "nothing was done: {:?}",
        world.log()
    );
    // Reserving without starting needs no privilege.
    create::create(
        &app,
        "op-y",
        VmCreateParams {
            no_start: true,
            ..params("reserved")
        },
        &sink(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_vmm_that_cannot_open_taps_gets_one_from_the_privileged_side() {
    let (_d, app, world) = app_with(|_| {});
    world.fail(Fail::TapFd);
    let info = create_vm(&app, "dev").await.unwrap();
    let tap = banger_host::tap_name(&info.id);
    let log = world.log();
    let open = log.iter().position(|l| *l == format!("open-tap {tap}"));
    let launch = log.iter().position(|l| l == "launch-with-fd true");
    assert!(
        matches!((open, launch), (Some(o), Some(l)) if o < l),
        "the tap is opened, then handed to the VMM: {log:?}"
    );
}

#[tokio::test]
async fn ports_and_ssh_info_need_a_running_vm() {
    let (_d, app, _world) = app_with(|_| {});
    create_vm(&app, "dev").await.unwrap();
    assert_eq!(query::ports(&app, "dev").await.unwrap().ports, [22, 8080]);
    assert!(query::ssh_info(&app, "dev").is_ok());
    stop::kill(&app, "dev").await.unwrap();
    assert_eq!(
        query::ports(&app, "dev").await.unwrap_err().code(),
        ErrorCode::BadRequest
    );
    assert_eq!(
        query::ssh_info(&app, "dev").unwrap_err().code(),
        ErrorCode::BadRequest
    );
}

#[tokio::test]
async fn operations_on_one_vm_serialise() {
    let (_d, app, _world) = app_with(|_| {});
    create_vm(&app, "dev").await.unwrap();
    // Holding the VM's lock blocks a stop until it is released.
    let lock = app.vm_lock("dev");
    let guard = lock.lock().await;
    let app2 = Arc::clone(&app);
    let stopping = tokio::spawn(async move { stop::stop(&app2, "op-s", "dev", &sink()).await });
    // The stop registers its operation before taking the lock: wait until it has.
    for _ in 0..1000 {
        if app.ops.list().iter().any(|o| o.op_id == "op-s") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        app.ops.list().iter().any(|o| o.op_id == "op-s"),
        "the stop started"
    );
    tokio::task::yield_now().await;
    assert_eq!(query::show(&app, "dev").unwrap().state, VmState::Running);
    assert!(!stopping.is_finished(), "the stop waits for the lock");
    drop(guard);
    assert_eq!(stopping.await.unwrap().unwrap().state, VmState::Stopped);
}
