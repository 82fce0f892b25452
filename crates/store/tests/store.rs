//! Behaviour of the store against real database files in temp dirs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_model::{ImageRecord, KernelRecord, Subnet, VmName, VmState};
use banger_store::{MigrationStatus, ReserveVm, Store, StoreError, SCHEMA_VERSION};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state/banger.db")
}

fn image(id: &str, name: &str) -> ImageRecord {
    ImageRecord {
        id: id.into(),
        name: name.into(),
        source: "debian:bookworm".into(),
        kernel_release: "6.1.0-40-cloud-amd64".into(),
        size_bytes: 2 * 1024 * 1024 * 1024,
        created_at: 1_700_000_000,
        kernel: Some("debian-bookworm".into()),
        run_config: Default::default(),
    }
}

fn reserve(name: &str, image_id: &str, subnet: Subnet) -> ReserveVm {
    ReserveVm {
        vmm: banger_model::VmmChoice::Auto,
        name: VmName::parse(name).unwrap(),
        image_id: image_id.into(),
        cpus: 2,
        memory_mib: 1024,
        disk_mib: 8192,
        subnet,
        created_op: Some(format!("op-{name}")),
        init: banger_model::InitMode::Agent,
    }
}

fn set_user_version(path: &Path, v: u32) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "user_version", v).unwrap();
}

#[test]
fn open_creates_the_schema_and_reopen_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    assert_eq!(
        Store::check_migrations(&path).unwrap(),
        MigrationStatus::Missing
    );
    assert!(
        !path.exists(),
        "check_migrations must not create the database"
    );

    let store = Store::open(&path).unwrap();
    store
        .insert_image(&image("img1", "debian-bookworm"), &[])
        .unwrap();
    drop(store);
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let files_before = listing();
    let bytes_before = std::fs::read(&path).unwrap();
    assert_eq!(
        Store::check_migrations(&path).unwrap(),
        MigrationStatus::Current(SCHEMA_VERSION)
    );
    assert_eq!(
        listing(),
        files_before,
        "check_migrations must leave no files behind"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes_before);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.list_images().unwrap().len(), 1, "reopen keeps data");
    // While a daemon has the database open (WAL side files exist).
    assert_eq!(
        Store::check_migrations(&path).unwrap(),
        MigrationStatus::Current(SCHEMA_VERSION)
    );
    drop(store);
    assert_eq!(listing(), files_before, "closing checkpoints and cleans up");

    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn check_migrations_reports_pending_without_migrating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    // An empty database: schema 0.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE unrelated (x INTEGER);")
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    assert_eq!(
        Store::check_migrations(&path).unwrap(),
        MigrationStatus::Pending {
            db: 0,
            binary: SCHEMA_VERSION
        }
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "file must be untouched"
    );
    Store::open(&path).unwrap();
    assert_eq!(
        Store::check_migrations(&path).unwrap(),
        MigrationStatus::Current(SCHEMA_VERSION)
    );
}

#[test]
fn newer_database_is_refused_by_open_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    drop(Store::open(&path).unwrap());
    set_user_version(&path, SCHEMA_VERSION + 1);

    assert_eq!(
        Store::check_migrations(&path).unwrap(),
        MigrationStatus::TooNew {
            db: SCHEMA_VERSION + 1,
            binary: SCHEMA_VERSION
        }
    );
    let err = Store::open(&path).unwrap_err();
    match &err {
        StoreError::TooNew { db, binary, .. } => {
            assert_eq!((*db, *binary), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("newer banger") && msg.contains("upgrade banger"),
        "{msg}"
    );
    // Refusing must not have changed the version.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION + 1);
}

#[test]
fn garbage_file_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    assert!(matches!(Store::open(&path), Err(StoreError::Open { .. })));
    assert!(matches!(
        Store::check_migrations(&path),
        Err(StoreError::Open { .. })
    ));
}

#[test]
fn vm_crud() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store
        .insert_image(&image("img1", "debian-bookworm"), &[])
        .unwrap();
    let subnet = Subnet::default();

    let dev = store.reserve_vm(reserve("dev", "img1", subnet)).unwrap();
    assert_eq!(dev.state, VmState::Creating);
    assert_eq!(dev.ip, Ipv4Addr::new(172, 30, 0, 2));
    assert_eq!(dev.id.len(), 12);
    let web = store.reserve_vm(reserve("web", "img1", subnet)).unwrap();
    assert_eq!(web.ip, Ipv4Addr::new(172, 30, 0, 3));

    assert_eq!(store.get_vm_by_name("dev").unwrap(), dev);
    assert_eq!(store.get_vm(&web.id).unwrap(), web);
    let names: Vec<String> = store
        .list_vms()
        .unwrap()
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    assert_eq!(names, ["dev", "web"]);

    let err = store
        .reserve_vm(reserve("dev", "img1", subnet))
        .unwrap_err();
    assert!(matches!(err, StoreError::NameTaken(ref n) if n == "dev"));
    assert_eq!(
        err.to_string(),
        "a VM named dev already exists (see banger vm list)"
    );
    assert!(err.is_name_taken());

    store
        .set_vm_state(&dev.id, VmState::Error, Some("boot timed out"))
        .unwrap();
    let got = store.get_vm(&dev.id).unwrap();
    assert_eq!(
        (got.state, got.error.as_deref()),
        (VmState::Error, Some("boot timed out"))
    );
    store.set_vm_state(&dev.id, VmState::Running, None).unwrap();
    let got = store.get_vm(&dev.id).unwrap();
    assert_eq!((got.state, got.error), (VmState::Running, None));

    assert_eq!(store.get_workspace(&dev.id).unwrap(), None);
    let ws = banger_model::WorkspaceRecord {
        host_path: "/home/me/repo".into(),
        guest_path: "/root/repo".into(),
        head: "0123abcd".into(),
        prepared_at: 0,
    };
    store.set_workspace(&dev.id, &ws).unwrap();
    let mut moved = ws.clone();
    moved.head = "feedbeef".into();
    store.set_workspace(&dev.id, &moved).unwrap();
    let got = store.get_workspace(&dev.id).unwrap().unwrap();
    assert_eq!(
        (got.head.as_str(), got.guest_path.as_str()),
        ("feedbeef", "/root/repo")
    );
    assert!(got.prepared_at > 0);

    store.set_vm_resources(&dev.id, 4, 4096, 20480).unwrap();
    let got = store.get_vm(&dev.id).unwrap();
    assert_eq!((got.cpus, got.memory_mib, got.disk_mib), (4, 4096, 20480));

    // Deleting frees the IP: the next VM gets the lowest free address again.
    store.delete_vm(&dev.id).unwrap();
    assert_eq!(
        store.get_workspace(&dev.id).unwrap(),
        None,
        "workspace row cascades"
    );
    let err = store.get_vm_by_name("dev").unwrap_err();
    assert_eq!(err.to_string(), "no VM named dev (see banger vm list)");
    assert!(err.is_not_found());
    assert!(matches!(
        store.delete_vm(&dev.id),
        Err(StoreError::VmIdNotFound(_))
    ));
    assert!(matches!(
        store.set_vm_state(&dev.id, VmState::Stopped, None),
        Err(StoreError::VmIdNotFound(_))
    ));
    assert!(matches!(
        store.set_vm_resources(&dev.id, 1, 512, 1024),
        Err(StoreError::VmIdNotFound(_))
    ));
    let again = store.reserve_vm(reserve("again", "img1", subnet)).unwrap();
    assert_eq!(again.ip, Ipv4Addr::new(172, 30, 0, 2));
}

#[test]
fn reserving_needs_an_existing_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    let err = store
        .reserve_vm(reserve("dev", "nope", Subnet::default()))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::ImageIdNotFound(ref id) if id == "nope"),
        "{err:?}"
    );
    assert!(store.list_vms().unwrap().is_empty());
}

#[test]
fn image_crud_and_in_use_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    let mut b = image("bbb", "bookworm");
    let mut a = image("aaa", "alpine");
    a.created_at = 10;
    b.created_at = 20;
    store.insert_image(&b, &[]).unwrap();
    store.insert_image(&a, &[]).unwrap();
    assert_eq!(store.list_images().unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(store.get_image_by_name("bookworm").unwrap(), b);
    assert_eq!(store.get_image("aaa").unwrap(), a);

    let mut dup = image("ccc", "bookworm");
    dup.source = "other".into();
    let err = store.insert_image(&dup, &[]).unwrap_err();
    assert!(
        matches!(err, StoreError::ImageNameTaken(ref n) if n == "bookworm"),
        "{err:?}"
    );
    assert!(err.is_name_taken());

    let err = store.get_image_by_name("sid").unwrap_err();
    assert!(err.is_not_found());
    assert!(err.to_string().contains("no image named sid"), "{err}");

    let vm1 = store
        .reserve_vm(reserve("one", "bbb", Subnet::default()))
        .unwrap();
    store
        .reserve_vm(reserve("two", "bbb", Subnet::default()))
        .unwrap();
    let err = store.delete_image("bbb").unwrap_err();
    match &err {
        StoreError::ImageInUse { image, vms } => {
            assert_eq!(image, "bookworm");
            assert_eq!(vms, &["one", "two"]);
        }
        other => panic!("expected ImageInUse, got {other:?}"),
    }
    assert!(err.to_string().contains("one, two"), "{err}");
    assert!(
        store.get_image("bbb").is_ok(),
        "refused delete keeps the image"
    );

    store.delete_vm(&vm1.id).unwrap();
    let two = store.get_vm_by_name("two").unwrap();
    store.delete_vm(&two.id).unwrap();
    store.delete_image("bbb").unwrap();
    assert!(matches!(
        store.get_image("bbb"),
        Err(StoreError::ImageIdNotFound(_))
    ));
    assert!(matches!(
        store.delete_image("bbb"),
        Err(StoreError::ImageIdNotFound(_))
    ));
}

#[test]
fn foreign_keys_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = Store::open(&path).unwrap();
    store.insert_image(&image("img1", "i"), &[]).unwrap();
    store
        .reserve_vm(reserve("dev", "img1", Subnet::default()))
        .unwrap();
    // delete_image checks first, but the schema must hold on its own too.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    assert!(conn
        .execute("DELETE FROM images WHERE id = 'img1'", [])
        .is_err());
}

#[test]
fn exhausted_subnet_surfaces_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    store.insert_image(&image("img1", "i"), &[]).unwrap();
    // A /29 has five guest addresses (.2 to .6).
    let subnet: Subnet = "10.9.0.0/29".parse().unwrap();
    for i in 0..5 {
        let vm = store
            .reserve_vm(reserve(&format!("vm{i}"), "img1", subnet))
            .unwrap();
        assert_eq!(vm.ip, Ipv4Addr::new(10, 9, 0, 2 + i));
    }
    let err = store
        .reserve_vm(reserve("vm5", "img1", subnet))
        .unwrap_err();
    assert!(matches!(err, StoreError::NoFreeAddress(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("no free guest address left in 10.9.0.0/29"),
        "{err}"
    );
    assert!(matches!(
        store.get_vm_by_name("vm5"),
        Err(StoreError::VmNotFound(_))
    ));
}

#[test]
fn concurrent_reservations_from_separate_stores_get_distinct_ips() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    // The threads also race to create and migrate the database.
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let store = Store::open(&path).unwrap();
                // Only one insert of the shared image wins.
                match store.insert_image(&image("img1", "shared"), &[]) {
                    Ok(()) | Err(StoreError::ImageNameTaken(_)) => {}
                    Err(e) => panic!("insert_image: {e}"),
                }
                let mut mine = vec![];
                let mut clashes = 0;
                for i in 0..PER_THREAD {
                    // Half the names are shared between all threads.
                    let name = if i % 2 == 0 {
                        format!("shared-{i}")
                    } else {
                        format!("t{t}-{i}")
                    };
                    match store.reserve_vm(reserve(&name, "img1", Subnet::default())) {
                        Ok(vm) => mine.push(vm),
                        Err(StoreError::NameTaken(_)) => clashes += 1,
                        Err(e) => panic!("thread {t} reserving {name}: {e}"),
                    }
                }
                (mine, clashes)
            })
        })
        .collect();

    let mut all = vec![];
    let mut clashes = 0;
    for h in handles {
        let (mine, c) = h.join().unwrap();
        all.extend(mine);
        clashes += c;
    }
    let shared_names = PER_THREAD / 2;
    let expected = THREADS * (PER_THREAD - shared_names) + shared_names;
    assert_eq!(all.len(), expected);
    assert_eq!(clashes, THREADS * PER_THREAD - expected);

    let ips: HashSet<Ipv4Addr> = all.iter().map(|v| v.ip).collect();
    assert_eq!(ips.len(), all.len(), "every VM got its own IP");
    let names: HashSet<String> = all.iter().map(|v| v.name.to_string()).collect();
    assert_eq!(names.len(), all.len());
    // Lowest-free allocation with no deletes: exactly .2 .. .(N+1).
    let want: HashSet<Ipv4Addr> = (0..expected)
        .map(|i| Ipv4Addr::new(172, 30, 0, 2 + i as u8))
        .collect();
    assert_eq!(ips, want);
    assert_eq!(
        Store::open(&path).unwrap().list_vms().unwrap().len(),
        expected
    );
}

#[test]
fn store_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn kernels_are_unique_by_name_and_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    let k = |id: &str, name: &str| KernelRecord {
        id: id.into(),
        name: name.into(),
        release: "6.1.0-40-cloud-amd64".into(),
        source: "file:/boot/vmlinuz".into(),
        size_bytes: 8 << 20,
        created_at: 1_700_000_000,
    };
    store.insert_kernel(&k("k1", "a")).unwrap();
    store.insert_kernel(&k("k2", "b")).unwrap();
    let err = store.insert_kernel(&k("k3", "a")).unwrap_err();
    assert!(matches!(err, StoreError::KernelNameTaken(_)) && err.is_name_taken());
    assert_eq!(store.get_kernel_by_name("b").unwrap(), k("k2", "b"));
    let names: Vec<_> = store
        .list_kernels()
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(store.delete_kernel("a").unwrap().id, "k1");
    let err = store.get_kernel_by_name("a").unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(store.delete_kernel("a").unwrap_err().is_not_found());
}

#[test]
fn image_blobs_are_recorded_and_forgotten_with_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir)).unwrap();
    let (d1, d2, d3) = (
        "sha256:01".to_string(),
        "sha256:02".to_string(),
        "sha256:03".to_string(),
    );
    store
        .insert_image(&image("img1", "a"), &[d1.clone(), d2.clone()])
        .unwrap();
    store
        .insert_image(&image("img2", "b"), &[d2.clone(), d3.clone()])
        .unwrap();
    assert_eq!(
        store.referenced_blobs().unwrap(),
        [d1.clone(), d2.clone(), d3.clone()]
    );
    assert_eq!(store.image_blobs("img1").unwrap(), [d1.clone(), d2.clone()]);
    assert_eq!(
        store.get_image("img1").unwrap().kernel.as_deref(),
        Some("debian-bookworm")
    );
    store.delete_image("img1").unwrap();
    assert_eq!(store.referenced_blobs().unwrap(), [d2, d3]);
}

#[test]
fn init_mode_and_run_config_round_trip_and_old_vms_keep_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = Store::open(&path).unwrap();
    let mut img = image("img1", "py");
    img.run_config = banger_model::RunConfig {
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "LANG=C.UTF-8".into(),
        ],
        entrypoint: vec![],
        cmd: vec!["python3".into()],
        user: Some("1000:1000".into()),
        working_dir: Some("/srv".into()),
    };
    store.insert_image(&img, &[]).unwrap();
    assert_eq!(store.get_image_by_name("py").unwrap(), img);
    store.insert_image(&image("img2", "plain"), &[]).unwrap();
    assert!(store
        .get_image_by_name("plain")
        .unwrap()
        .run_config
        .is_empty());
    let subnet: Subnet = "172.30.0.0/24".parse().unwrap();
    let mut r = reserve("sysd", "img1", subnet);
    r.init = banger_model::InitMode::Systemd;
    store.reserve_vm(r).unwrap();
    store.reserve_vm(reserve("fast", "img1", subnet)).unwrap();
    assert_eq!(
        store.get_vm_by_name("sysd").unwrap().init,
        banger_model::InitMode::Systemd
    );
    assert_eq!(
        store.get_vm_by_name("fast").unwrap().init,
        banger_model::InitMode::Agent
    );
    drop(store);

    // A VM row written before the column existed (schema 5) booted systemd.
    let old = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&old).unwrap();
    for sql in [
        include_str!("../src/migrations/001_initial.sql"),
        include_str!("../src/migrations/002_workspaces.sql"),
        include_str!("../src/migrations/003_vmm.sql"),
        include_str!("../src/migrations/004_kernels.sql"),
        include_str!("../src/migrations/005_created_op.sql"),
    ] {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch(
        "INSERT INTO images (id, name, source, kernel_release, size_bytes, created_at) VALUES ('i', 'img', 's', 'k', 1, 1);
         INSERT INTO vms (id, name, image_id, state, ip, cpus, memory_mib, disk_mib, created_at) VALUES ('v', 'oldvm', 'i', 'stopped', '172.30.0.2', 1, 512, 1024, 1);",
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 5).unwrap();
    drop(conn);
    let store = Store::open(&old).unwrap();
    assert_eq!(
        store.get_vm_by_name("oldvm").unwrap().init,
        banger_model::InitMode::Systemd
    );
    assert!(store
        .get_image_by_name("img")
        .unwrap()
        .run_config
        .is_empty());
}
