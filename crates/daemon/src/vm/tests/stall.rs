//! A guest kernel that stalls before banger's init: restarted once, then reported.

use super::fakes::{app_with, Fail};
use super::{assert_nothing_left, create_vm};
use banger_model::VmState;
use std::time::Duration;

#[tokio::test]
async fn a_kernel_that_stalls_once_is_restarted_and_the_vm_runs() {
    let (_d, app, world) = app_with(|c| c.boot_timeout = Duration::from_secs(2));
    world.fail(Fail::StallOnce);
    let info = create_vm(&app, "dev").await.unwrap();
    assert_eq!(info.state, VmState::Running);
    let log = world.log();
    let boots: Vec<&String> = log
        .iter()
        .filter(|e| e.starts_with("launch ") || e.starts_with("kill ") || *e == "agent ready")
        .collect();
    assert_eq!(
        boots,
        [
            "launch 1001 disks=3",
            "kill 1001",
            "launch 1002 disks=3",
            "agent ready"
        ],
        "{log:?}"
    );
    assert_eq!(world.alive().into_iter().collect::<Vec<_>>(), [1002]);
}

#[tokio::test]
async fn a_kernel_that_stalls_twice_fails_the_start_and_leaves_nothing() {
    let (_d, app, world) = app_with(|c| c.boot_timeout = Duration::from_secs(2));
    world.fail(Fail::Stall);
    let err = create_vm(&app, "dev").await.unwrap_err().to_string();
    assert!(
        err.contains("stalled before running banger's init"),
        "{err}"
    );
    assert!(
        err.contains("then nothing"),
        "the console's last lines: {err}"
    );
    assert_eq!(
        world
            .log()
            .iter()
            .filter(|e| e.starts_with("launch "))
            .count(),
        2
    );
    assert_nothing_left(&app, &world, "dev");
}
