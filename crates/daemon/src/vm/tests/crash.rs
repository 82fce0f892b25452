//! What a daemon killed at the worst moment leaves, and that the next start (or the
//! monitor) cleans it up: a torn `handles.json`, a VMM launched but not recorded, a
//! published directory without its row, an unfinished blob download, and a guest
//! flooding its console.

use super::fakes::app_with;
use super::{create_vm, dirs};
use crate::vm::{query, reconcile};
use crate::{handles, publish};
use banger_model::{ImageRecord, KernelRecord, VmState};
use banger_rpc::VmLogsParams;

#[tokio::test]
async fn a_torn_handles_file_never_orphans_a_running_vmm() {
    let (_d, app, world) = app_with(|_| {});
    let info = create_vm(&app, "dev").await.unwrap();
    let (vm_dir, _) = dirs(&app, "dev");
    // What a crash in the middle of a non-durable write leaves: half the JSON.
    let whole = std::fs::read(handles::path(&vm_dir)).unwrap();
    std::fs::write(handles::path(&vm_dir), &whole[..whole.len() / 2]).unwrap();
    assert!(handles::read(&vm_dir).is_none());
    reconcile::reconcile(&app).await;
    assert_eq!(query::show(&app, "dev").unwrap().state, VmState::Stopped);
    assert!(
        world.alive().is_empty(),
        "VMM left running: {:?}",
        world.alive()
    );
    assert!(world.taps().is_empty());
    assert!(
        world
            .log()
            .contains(&format!("kill-orphan {}", info.pid.unwrap())),
        "{:?}",
        world.log()
    );
}

#[tokio::test]
async fn a_vmm_launched_but_not_yet_recorded_is_found_and_killed() {
    let (_d, app, world) = app_with(|_| {});
    let info = create_vm(&app, "dev").await.unwrap();
    let (vm_dir, _) = dirs(&app, "dev");
    // The daemon died between the launch and writing handles.json, mid-start.
    std::fs::remove_file(handles::path(&vm_dir)).unwrap();
    app.db(|s| s.set_vm_state(&info.id, VmState::Creating, None))
        .unwrap();
    reconcile::reconcile(&app).await;
    let v = query::show(&app, "dev").unwrap();
    assert_eq!(v.state, VmState::Error);
    assert!(world.alive().is_empty(), "VMM left running");
    crate::vm::delete::delete(
        &app,
        banger_rpc::VmDeleteParams {
            name: "dev".into(),
            force: false,
            created_op: None,
        },
    )
    .await
    .unwrap();
    let rt = app.layout.vm_runtime(&info.id);
    assert!(!vm_dir.exists(), "{} left", vm_dir.display());
    assert!(!rt.exists(), "{} left", rt.display());
    assert!(world.taps().is_empty(), "taps left: {:?}", world.taps());
    assert!(world.alive().is_empty(), "VMMs left: {:?}", world.alive());
}

#[test]
fn handles_are_replaced_whole_and_leave_no_temporary() {
    let d = tempfile::tempdir().unwrap();
    let h = handles::VmHandles {
        vmm: banger_vmm::Handles {
            backend: "qemu".into(),
            pid: 42,
            control_socket: "/r/qmp.sock".into(),
            agent_socket: "/r/agent.sock".into(),
            console_log: "/r/console.log".into(),
            accel: banger_vmm::Accel::Tcg,
            start_time: Some(7),
            tag: None,
        },
        tap: "bgr1".into(),
    };
    handles::write(d.path(), &h).unwrap();
    handles::write(d.path(), &h).unwrap();
    assert_eq!(handles::read(d.path()), Some(h));
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [handles::FILE]);
    // A temporary a crash left mid-write is ignored, then removed with the handles.
    std::fs::write(d.path().join(".handles.json.tmp"), b"{\"vmm\":").unwrap();
    assert!(handles::read(d.path()).is_some());
    handles::remove(d.path());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_published_directory_without_its_row_is_swept_and_named_ones_are_kept() {
    let (_d, app, _world) = app_with(|_| {});
    let images = app.layout.image_staging().parent().unwrap().to_path_buf();
    let kernels = app.layout.kernel_staging().parent().unwrap().to_path_buf();
    // A crash between the publish rename and the row insert.
    let orphan = app.layout.image_dir("0123456789ab");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("rootfs.ext4"), b"x").unwrap();
    let orphan_kernel = app.layout.kernel_dir("ba9876543210");
    std::fs::create_dir_all(&orphan_kernel).unwrap();
    // Images and kernels that rows name, whatever their id looks like.
    let named = ImageRecord {
        id: "aaaaaaaaaaaa".into(),
        name: "kept".into(),
        source: "test".into(),
        kernel_release: "6.1".into(),
        size_bytes: 1,
        created_at: 1,
        kernel: None,
        run_config: Default::default(),
    };
    app.db(|s| s.insert_image(&named, &[])).unwrap();
    std::fs::create_dir_all(app.layout.image_dir(&named.id)).unwrap();
    let k = KernelRecord {
        id: "bbbbbbbbbbbb".into(),
        name: "k".into(),
        release: "6.1".into(),
        source: "test".into(),
        size_bytes: 1,
        created_at: 1,
    };
    app.db(|s| s.insert_kernel(&k)).unwrap();
    std::fs::create_dir_all(app.layout.kernel_dir(&k.id)).unwrap();
    // Not ours to judge: other names, and a symlink that looks like an id.
    std::fs::create_dir_all(images.join("notes")).unwrap();
    std::fs::create_dir_all(images.join(".staging")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), images.join("cccccccccccc")).unwrap();

    publish::sweep_orphans(&app);
    assert!(!orphan.exists(), "the unrecorded image is left");
    assert!(!orphan_kernel.exists(), "the unrecorded kernel is left");
    assert!(app.layout.image_dir(&named.id).exists());
    assert!(
        app.layout.image_dir("img0001").exists(),
        "the default image"
    );
    assert!(app.layout.kernel_dir(&k.id).exists());
    assert!(images.join("notes").exists() && images.join(".staging").exists());
    assert!(images.join("cccccccccccc").exists() && outside.path().exists());
    assert!(kernels.exists());
}

#[tokio::test]
async fn an_unfinished_blob_download_is_swept_at_start() {
    let (_d, app, _world) = app_with(|_| {});
    let cache = app.layout.blob_cache();
    std::fs::create_dir_all(cache.join("tmp")).unwrap();
    std::fs::create_dir_all(cache.join("sha256")).unwrap();
    std::fs::write(cache.join("tmp/layer.123.0"), b"half a layer").unwrap();
    let blob = cache.join("sha256").join("ab".repeat(32));
    std::fs::write(&blob, b"a finished blob").unwrap();
    publish::sweep_blob_temps(&app);
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
    assert!(blob.exists(), "finished blobs stay");
}

#[tokio::test]
async fn a_flooded_console_is_capped_by_the_monitor_and_logs_read_its_tail() {
    use banger_vmm::console::{previous, ROTATE_AT};
    let (_d, app, _world) = app_with(|_| {});
    create_vm(&app, "dev").await.unwrap();
    let (_, rt) = dirs(&app, "dev");
    let log = rt.join(banger_vmm::CONSOLE_LOG);
    let line = b"flood flood flood flood flood flood flood flood flood flood\n";
    let flood: Vec<u8> = line.repeat((3 * ROTATE_AT as usize) / line.len());
    std::fs::write(&log, &flood).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"the last line\n"))
        .unwrap();
    reconcile::tick(&app).await;
    let cur = std::fs::metadata(&log).unwrap().len();
    let prev = std::fs::metadata(previous(&log)).unwrap().len();
    eprintln!(
        "console after one monitor round: {cur} + {prev} bytes (was {})",
        flood.len() + 14
    );
    assert!(cur <= ROTATE_AT && prev <= ROTATE_AT, "{cur} {prev}");
    let tail = query::logs(
        &app,
        VmLogsParams {
            name: "dev".into(),
            offset: None,
            since: None,
        },
    )
    .unwrap();
    assert!(tail.data.len() <= 64 * 1024);
    assert!(
        tail.data.ends_with("the last line\n"),
        "the tail spans the rotation"
    );
    // A follower whose offset is past the rotated file starts over at its beginning.
    std::fs::write(&log, b"after rotation\n").unwrap();
    let follow = query::logs(
        &app,
        VmLogsParams {
            name: "dev".into(),
            offset: Some(ROTATE_AT * 2),
            since: None,
        },
    )
    .unwrap();
    assert_eq!(follow.data, "after rotation\n");
    assert_eq!(follow.next_offset, 15);

    // `--since`: the monitor marks the length; what is written later is what a
    // reader asking for "since now" gets.
    reconcile::tick(&app).await;
    let now = banger_vmm::console::now_secs();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"later\n"))
        .unwrap();
    let since = |secs| {
        query::logs(
            &app,
            VmLogsParams {
                name: "dev".into(),
                offset: None,
                since: Some(secs),
            },
        )
        .unwrap()
        .data
    };
    assert_eq!(since(now + 1), "later\n");
    assert_eq!(since(0), "after rotation\nlater\n");
}
