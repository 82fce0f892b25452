//! The JSON shapes of `--json` output are documented as JSON Schema in
//! `docs/schemas.json` (one `$defs` entry per shape; docs/json.md names them). These
//! tests pin the documents against what the code serialises: a field added, renamed
//! or retyped without updating the schema fails here (the schemas forbid unknown
//! fields). The e2e sections `agent_cli`, `agent_json` and `update` validate real
//! command output against them.

#![cfg(test)]

/// The schemas document.
pub const SCHEMAS: &str = include_str!("../../../docs/schemas.json");

/// Panic unless `value` matches the shape `shape` of docs/schemas.json.
pub fn assert_shape(shape: &str, value: &serde_json::Value) {
    let mut doc: serde_json::Value = serde_json::from_str(SCHEMAS).unwrap();
    assert!(
        doc["$defs"].get(shape).is_some(),
        "docs/schemas.json has no shape {shape}"
    );
    doc["$ref"] = serde_json::Value::String(format!("#/$defs/{shape}"));
    let v = jsonschema::validator_for(&doc).unwrap();
    let errors: Vec<String> = v.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{shape}: {errors:?}\n{value:#}");
}

/// Every shape docs/json.md lists has a schema, and the reverse.
#[test]
fn the_documented_shapes_are_the_schemas() {
    let doc: serde_json::Value = serde_json::from_str(SCHEMAS).unwrap();
    let md = include_str!("../../../docs/json.md");
    for name in doc["$defs"].as_object().unwrap().keys() {
        assert!(
            md.contains(&format!("`{name}`")),
            "docs/json.md does not mention the shape `{name}`"
        );
    }
}

#[test]
fn vm_records_match_the_vm_shape() {
    use banger_model::{InitMode, VmName, VmRecord, VmState, VmmChoice};
    let rec = VmRecord {
        id: "a1b2c3".into(),
        name: VmName::parse("dev").unwrap(),
        image_id: "i1".into(),
        state: VmState::Running,
        ip: "172.30.0.2".parse().unwrap(),
        cpus: 2,
        memory_mib: 1024,
        disk_mib: 8192,
        created_at: 1,
        error: None,
        vmm: VmmChoice::Auto,
        created_op: None,
        init: InitMode::Agent,
    };
    let mut info = banger_rpc::VmInfo::from_record(&rec, "debian-bookworm");
    info.timings = vec![banger_rpc::StageTiming {
        stage: "boot".into(),
        ms: 5,
    }];
    info.workspace = Some(banger_model::WorkspaceRecord {
        host_path: "/src/x".into(),
        guest_path: "/root/x".into(),
        head: "abc".into(),
        prepared_at: 2,
    });
    let v = serde_json::to_value(&info).unwrap();
    assert_shape("vm", &v);
    assert_shape("vm_list", &serde_json::json!([v]));
    let ev = banger_rpc::VmEvent {
        at_ms: 1,
        vm: "dev".into(),
        id: "a1".into(),
        state: "deleted".into(),
        error: None,
    };
    assert_shape("event", &serde_json::to_value(&ev).unwrap());
}

#[test]
fn errors_match_the_error_shape() {
    for c in crate::errors::Class::ALL {
        let e = crate::errors::fail(c, "what failed; what to do");
        let v = serde_json::json!({ "error": crate::errors::body(&e) });
        assert_shape("error", &v);
    }
}

#[test]
fn daemon_replies_match_their_shapes() {
    use banger_rpc::{
        CachePruneResult, CatalogItem, NetworkDownResult, NetworkInfo, VmHostKeyInfo, WarmInfo,
        WarmRmResult,
    };
    let net = NetworkInfo {
        bridge: "bgr0".into(),
        subnet: "172.30.0.0/24".into(),
        gateway: "172.30.0.1".into(),
        bridge_up: true,
        dns_host: "127.0.0.1:42069".into(),
        dns_guests: "off".into(),
        upstreams: vec!["10.0.0.1:53".into()],
        names: vec!["dev.vm".into()],
        isolation: true,
        guest_host_ports: vec![8080],
        nat: false,
        ssh_config: "/h/ssh_config".into(),
        known_hosts: "/h/known_hosts".into(),
    };
    assert_shape("network", &to(&net));
    let down = NetworkDownResult {
        removed: vec!["bridge bgr0".into()],
    };
    assert_shape("removed", &to(&down));
    for (pinned, guest, err) in [
        (Some("ssh-ed25519 AAAA"), Some("ssh-ed25519 BBBB"), None),
        (None, None, Some("the VM is stopped")),
    ] {
        let k = VmHostKeyInfo {
            name: "dev".into(),
            alias: "dev.vm".into(),
            pinned: pinned.map(Into::into),
            guest: guest.map(Into::into),
            guest_error: err.map(Into::into),
            accepted: false,
            known_hosts_path: "/h/known_hosts".into(),
        };
        assert_shape("host_key", &to(&k));
    }
    let items = vec![CatalogItem {
        name: "debian-bookworm".into(),
        description: "Debian 12".into(),
        detail: "debian-6.1-cloud".into(),
        size_bytes: 1,
    }];
    assert_shape("catalog", &to(&items));
    let prune = CachePruneResult {
        blobs: 1,
        bytes: 2,
        kept: 3,
        dry_run: true,
    };
    assert_shape("cache_prune", &to(&prune));
    let w = WarmInfo {
        image: "debian-bookworm".into(),
        shape: "2c-1024m-4096d-agent".into(),
        cpus: 2,
        memory_mib: 1024,
        disk_mib: 4096,
        init: "agent".into(),
        vmm: "qemu".into(),
        created_at: 1,
        bytes: 5,
        warm_ms: 6,
        status: "ready".into(),
    };
    assert_shape("warm", &to(&w));
    assert_shape("warm_list", &to(&vec![w.clone(), WarmInfo::default()]));
    assert_shape("warm_removed", &to(&WarmRmResult { removed: 2 }));
}

#[test]
fn doctor_checks_match_the_doctor_shape() {
    use crate::doctor::{Check, Status};
    let checks: Vec<Check> = [Status::Ok, Status::Info, Status::Warn, Status::Fail]
        .into_iter()
        .enumerate()
        .map(|(i, status)| Check {
            name: "git".into(),
            status,
            detail: "found".into(),
            fix: (i % 2 == 0).then(|| "apt-get install git".into()),
        })
        .collect();
    assert_shape("doctor", &serde_json::to_value(&checks).unwrap());
    // What runs here, too.
    let layout = banger_model::Layout::from_env();
    assert_shape(
        "doctor",
        &serde_json::to_value(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(crate::doctor::checks(&layout)),
        )
        .unwrap(),
    );
}

#[test]
fn cli_reports_match_their_shapes() {
    let r = crate::images::Removed {
        removed: vec!["k1".into()],
    };
    assert_shape("removed", &serde_json::to_value(&r).unwrap());
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let c = crate::Completion {
            shell: shell.into(),
            script: "complete …".into(),
        };
        assert_shape("completion", &serde_json::to_value(&c).unwrap());
    }
}

/// `v` as a JSON value.
fn to<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

/// The shapes from before the schemas' second half, pinned here too: every `$defs`
/// entry is now checked against the type that prints it.
#[test]
fn store_and_daemon_replies_match_their_shapes() {
    use banger_model::{ImageRecord, KernelRecord, PortForward, VmState};
    use banger_rpc::{OperationInfo, PruneResult, VmPortsResult, VmStatsResult};
    let img = ImageRecord {
        id: "i1".into(),
        name: "debian-bookworm".into(),
        source: "debian:bookworm".into(),
        kernel_release: "6.1.0-40-cloud-amd64".into(),
        size_bytes: 1,
        created_at: 2,
        kernel: None,
        run_config: Default::default(),
    };
    assert_shape("image", &to(&img));
    assert_shape("image_list", &to(&vec![img]));
    let k = KernelRecord {
        id: "k1".into(),
        name: "debian-6.1-cloud".into(),
        release: "6.1.0-40-cloud-amd64".into(),
        source: "catalog".into(),
        size_bytes: 3,
        created_at: 4,
    };
    assert_shape("kernel", &to(&k));
    assert_shape("kernel_list", &to(&vec![k]));
    let ports = VmPortsResult {
        name: "dev".into(),
        ip: "172.30.0.2".parse().unwrap(),
        ports: vec![22, 8000],
        forwards: vec![PortForward {
            host_ip: "127.0.0.1".parse().unwrap(),
            host_port: 8080,
            guest_port: 8000,
        }],
        rootless: true,
        ssh_port: Some(41022),
    };
    assert_shape("ports", &to(&ports));
    for (pct, rss) in [(Some(1.5), Some(7)), (None, None)] {
        let st = VmStatsResult {
            name: "dev".into(),
            state: VmState::Running,
            cpu_percent: pct,
            cpu_seconds: pct,
            rss_bytes: rss,
            memory_mib: 1024,
            overlay_bytes: 5,
            work_bytes: 6,
            disk_mib: 8192,
        };
        assert_shape("stats", &to(&st));
    }
    let pruned = PruneResult {
        deleted: vec!["old".into()],
    };
    assert_shape("deleted", &to(&pruned));
    let op = OperationInfo {
        op_id: "op-1".into(),
        method: "vm.create".into(),
        target: "dev".into(),
        stage: "boot".into(),
        elapsed_ms: 9,
    };
    assert_shape("operations", &to(&vec![op]));
    assert_shape("version", &to(&banger_buildinfo::BuildInfo::current()));
    for (pid, version) in [(Some(1), Some("0.1.0")), (None, None)] {
        let s = crate::daemon_cmd::DaemonStatus {
            running: pid.is_some(),
            pid,
            version: version.map(Into::into),
            socket: "/run/banger/bangerd.sock".into(),
            log: "the daemon log".into(),
        };
        assert_shape("daemon_status", &to(&s));
    }
}
