//! Contract: every request body the Firecracker backend can send validates against the
//! schema Firecracker's own OpenAPI spec gives for that path and method.
//!
//! The spec (`fixtures/firecracker-v1.14.1.yaml`, Swagger 2.0) leaves its objects open,
//! while Firecracker's request structs are `#[serde(deny_unknown_fields)]`: a field it
//! does not know is a 400 at run time. So before validating, every object schema with
//! `properties` is closed (`additionalProperties: false`), which makes an unknown or
//! misspelt field fail here as it would against the real thing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use banger_vmm::firecracker::actions::{ActionType, InstanceActionInfo};
use banger_vmm::firecracker::boot_source::BootSource;
use banger_vmm::firecracker::client::{ApiRequest, Method};
use banger_vmm::firecracker::drive::{CacheType, Drive, IoEngine};
use banger_vmm::firecracker::logger::{LogLevel, Logger};
use banger_vmm::firecracker::machine_config::{HugePages, MachineConfig};
use banger_vmm::firecracker::metrics::Metrics;
use banger_vmm::firecracker::net::NetworkInterface;
use banger_vmm::firecracker::vsock::Vsock;
use banger_vmm::firecracker::{Firecracker, FirecrackerError};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

const SPEC: &str = include_str!("fixtures/firecracker-v1.14.1.yaml");

/// The OpenAPI document as JSON, with every object schema closed.
fn spec() -> Value {
    let mut v: Value = serde_norway::from_str(SPEC).expect("the fixture is valid YAML");
    assert_eq!(v["swagger"], "2.0");
    assert_eq!(v["info"]["version"], "1.14.1");
    close_objects(&mut v["definitions"]);
    v
}

fn close_objects(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            m.values_mut().for_each(close_objects);
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// Match a concrete path against the spec's templates; returns the template and the
/// path parameters (`/drives/disk0` → `/drives/{drive_id}`, `drive_id = disk0`).
fn find_path<'a>(spec: &'a Value, path: &str) -> Option<(&'a str, Vec<(String, String)>)> {
    let want: Vec<&str> = path.split('/').collect();
    spec["paths"].as_object()?.keys().find_map(|t| {
        let segs: Vec<&str> = t.split('/').collect();
        if segs.len() != want.len() {
            return None;
        }
        let mut params = vec![];
        for (s, w) in segs.iter().zip(&want) {
            if let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push((name.to_string(), w.to_string()));
            } else if s != w {
                return None;
            }
        }
        Some((t.as_str(), params))
    })
}

/// Validate one request against the spec; Err lists every violation.
fn validate(spec: &Value, req: &ApiRequest) -> Result<String, String> {
    let (template, params) =
        find_path(spec, &req.path).ok_or_else(|| format!("{req}: no such path in the spec"))?;
    let method = req.method.as_str().to_lowercase();
    let op = &spec["paths"][template][&method];
    if op.is_null() {
        return Err(format!("{req}: the spec has no {method} for {template}"));
    }
    let params_spec = op["parameters"].as_array().cloned().unwrap_or_default();
    for (name, value) in &params {
        if !params_spec
            .iter()
            .any(|p| p["in"] == "path" && p["name"] == *name)
        {
            return Err(format!("{req}: path parameter {name} is not in the spec"));
        }
        // Firecracker refuses a body whose id differs from the one in the path.
        if let Some(body_value) = req.body.as_ref().and_then(|b| b.get(name)) {
            if body_value != &Value::String(value.clone()) {
                return Err(format!(
                    "{req}: body {name} {body_value} differs from the path"
                ));
            }
        }
    }
    let body_param = params_spec.iter().find(|p| p["in"] == "body");
    let (Some(body_param), Some(body)) = (body_param, &req.body) else {
        return match (body_param, &req.body) {
            (None, None) => Ok(template.to_string()),
            (Some(p), None) if p["required"] != true => Ok(template.to_string()),
            (Some(_), None) => Err(format!("{req}: the spec requires a body")),
            _ => Err(format!("{req}: the spec takes no body")),
        };
    };
    let mut schema = body_param["schema"].clone();
    schema["definitions"] = spec["definitions"].clone();
    let validator =
        jsonschema::draft4::new(&schema).map_err(|e| format!("{template}: bad schema: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(template.to_string())
    } else {
        Err(format!("{req} {body}: {}", errors.join("; ")))
    }
}

fn backends() -> Vec<Firecracker> {
    let with_metrics = Firecracker {
        metrics: true,
        log_level: LogLevel::Debug,
        ..Firecracker::default()
    };
    vec![Firecracker::default(), with_metrics]
}

#[test]
fn every_request_the_backend_sends_matches_the_spec() {
    let spec = spec();
    let rt = Path::new("/run/banger/vms/0a1b2c3d4e5f");
    let mut specs = vec![common::full_spec(rt), common::minimal_spec(rt)];
    // With network but no initrd, and with an initrd but no network.
    let mut net_only = common::full_spec(rt);
    net_only.initrd = None;
    specs.push(net_only);
    let mut initrd_only = common::full_spec(rt);
    initrd_only.net = None;
    initrd_only.cpus = 32;
    specs.push(initrd_only);

    let mut covered = BTreeSet::new();
    let mut checked = 0;
    for fc in backends() {
        for s in &specs {
            for req in fc.all_requests(s).unwrap() {
                match validate(&spec, &req) {
                    Ok(t) => covered.insert(format!("{} {t}", req.method.as_str())),
                    Err(e) => panic!("contract violation: {e}"),
                };
                checked += 1;
            }
        }
    }
    let expected: BTreeSet<String> = [
        "PUT /actions",
        "PUT /boot-source",
        "PUT /drives/{drive_id}",
        "PUT /logger",
        "PUT /machine-config",
        "PUT /metrics",
        "PUT /network-interfaces/{iface_id}",
        "PUT /vsock",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(covered, expected);
    println!("{checked} request bodies validated against the spec, covering {covered:?}");
}

/// The serde types can express more than the backend sets today (SMT, huge pages,
/// io_uring, other actions and levels): every such value must be in the spec too.
#[test]
fn every_value_of_every_type_matches_the_spec() {
    let spec = spec();
    let put = |path: &str, body: &dyn erased::Body| body.request(path);
    let mut reqs = vec![];
    for huge_pages in [None, Some(HugePages::None), Some(HugePages::TwoMiB)] {
        reqs.push(put(
            "/machine-config",
            &MachineConfig {
                vcpu_count: 2,
                mem_size_mib: 512,
                smt: Some(true),
                track_dirty_pages: Some(true),
                huge_pages,
            },
        ));
    }
    for action_type in [
        ActionType::FlushMetrics,
        ActionType::InstanceStart,
        ActionType::SendCtrlAltDel,
    ] {
        reqs.push(put("/actions", &InstanceActionInfo { action_type }));
    }
    for level in [
        LogLevel::Error,
        LogLevel::Warning,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
        LogLevel::Off,
    ] {
        reqs.push(put(
            "/logger",
            &Logger {
                log_path: "/l".into(),
                level: Some(level),
                show_level: Some(false),
                show_log_origin: Some(true),
            },
        ));
    }
    for (cache_type, io_engine) in [
        (Some(CacheType::Unsafe), Some(IoEngine::Sync)),
        (Some(CacheType::Writeback), Some(IoEngine::Async)),
        (None, None),
    ] {
        reqs.push(put(
            "/drives/root",
            &Drive {
                drive_id: "root".into(),
                path_on_host: "/d".into(),
                is_root_device: true,
                is_read_only: false,
                cache_type,
                partuuid: Some("0eaa91a0-01".into()),
                io_engine,
            },
        ));
    }
    reqs.push(put(
        "/boot-source",
        &BootSource {
            kernel_image_path: "/k".into(),
            boot_args: None,
            initrd_path: None,
        },
    ));
    reqs.push(put(
        "/network-interfaces/eth0",
        &NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: None,
        },
    ));
    reqs.push(put(
        "/metrics",
        &Metrics {
            metrics_path: "/m".into(),
        },
    ));
    reqs.push(put(
        "/vsock",
        &Vsock {
            guest_cid: 3,
            uds_path: "/v".into(),
        },
    ));
    for r in &reqs {
        if let Err(e) = validate(&spec, r) {
            panic!("contract violation: {e}");
        }
    }
}

/// Warm snapshots: pausing and saving, loading in a fresh process with the VM's own
/// tap, resuming; and every value the snapshot types can hold.
#[test]
fn snapshot_requests_match_the_spec() {
    use banger_vmm::firecracker::snapshot::{
        BackendType, MemoryBackend, SnapshotCreateParams, SnapshotLoadParams, SnapshotType,
    };
    let spec = spec();
    let rt = Path::new("/run/banger/vms/0a1b2c3d4e5f");
    let state = Path::new("/var/lib/banger/warm/img/2c-1024m-4096d-agent/state.bin");
    let mut covered = BTreeSet::new();
    let mut reqs = Firecracker::snapshot_requests(state).unwrap();
    reqs.push(Firecracker::resume_request().unwrap());
    for fc in backends() {
        for s in [common::full_spec(rt), common::minimal_spec(rt)] {
            reqs.extend(fc.restore_requests(&s, state).unwrap());
        }
    }
    for (snapshot_type, backend_type) in [
        (None, BackendType::Uffd),
        (Some(SnapshotType::Diff), BackendType::File),
    ] {
        reqs.push(
            ApiRequest::put(
                "/snapshot/create",
                &SnapshotCreateParams {
                    mem_file_path: "/m".into(),
                    snapshot_path: "/s".into(),
                    snapshot_type,
                },
            )
            .unwrap(),
        );
        reqs.push(
            ApiRequest::put(
                "/snapshot/load",
                &SnapshotLoadParams {
                    snapshot_path: "/s".into(),
                    mem_backend: MemoryBackend {
                        backend_type,
                        backend_path: "/m".into(),
                    },
                    track_dirty_pages: Some(true),
                    resume_vm: Some(true),
                    network_overrides: vec![],
                },
            )
            .unwrap(),
        );
    }
    for r in &reqs {
        match validate(&spec, r) {
            Ok(t) => covered.insert(format!("{} {t}", r.method.as_str())),
            Err(e) => panic!("contract violation: {e}"),
        };
    }
    let load = reqs
        .iter()
        .find(|r| {
            r.path == "/snapshot/load" && r.body.as_ref().unwrap()["network_overrides"].is_array()
        })
        .unwrap();
    assert_eq!(
        load.body.as_ref().unwrap()["network_overrides"][0]["iface_id"],
        "eth0"
    );
    let expected: BTreeSet<String> = [
        "PATCH /vm",
        "PUT /logger",
        "PUT /metrics",
        "PUT /snapshot/create",
        "PUT /snapshot/load",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(covered, expected);
    // A load body with both memory fields, or none, is not what the spec allows.
    let mut both = load.clone();
    both.body.as_mut().unwrap()["mem_file_path"] = json!("/m");
    both.body.as_mut().unwrap()["bogus"] = json!(1);
    assert!(validate(&spec, &both).is_err());
}

/// Tiny helper so the test above can take any request type as a trait object.
mod erased {
    use super::ApiRequest;
    pub trait Body {
        fn request(&self, path: &str) -> ApiRequest;
    }
    impl<T: serde::Serialize> Body for T {
        fn request(&self, path: &str) -> ApiRequest {
            ApiRequest::put(path, self).unwrap()
        }
    }
}

fn machine_config_request() -> ApiRequest {
    let fc = Firecracker::default();
    let rt = Path::new("/run/x");
    fc.configure_requests(&common::full_spec(rt))
        .unwrap()
        .into_iter()
        .find(|r| r.path == "/machine-config")
        .unwrap()
}

/// The validator is not vacuous: a body missing a required field, with an unknown
/// field, with a wrong type, out of range or with a bad enum value all fail.
#[test]
fn the_contract_catches_broken_bodies() {
    let spec = spec();
    let good = machine_config_request();
    assert!(validate(&spec, &good).is_ok());

    let mut dropped = good.clone();
    dropped
        .body
        .as_mut()
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove("vcpu_count");
    let e = validate(&spec, &dropped).unwrap_err();
    assert!(e.contains("vcpu_count") && e.contains("required"), "{e}");

    let broken: [(&str, Value); 4] = [
        (
            "unknown field",
            json!({"vcpu_count": 2, "mem_size_mib": 1024, "vcpus": 2}),
        ),
        (
            "wrong type",
            json!({"vcpu_count": "2", "mem_size_mib": 1024}),
        ),
        (
            "above maximum",
            json!({"vcpu_count": 33, "mem_size_mib": 1024}),
        ),
        (
            "bad enum",
            json!({"vcpu_count": 2, "mem_size_mib": 1024, "huge_pages": "1G"}),
        ),
    ];
    for (what, body) in broken {
        let mut r = good.clone();
        r.body = Some(body);
        assert!(validate(&spec, &r).is_err(), "{what} was accepted");
    }

    let bad_action = ApiRequest {
        method: Method::Put,
        path: "/actions".into(),
        body: Some(json!({"action_type": "Reboot"})),
    };
    assert!(validate(&spec, &bad_action).is_err());
    let mismatched_id = ApiRequest::put(
        "/drives/disk1",
        &Drive {
            drive_id: "disk0".into(),
            path_on_host: "/d".into(),
            is_root_device: false,
            is_read_only: true,
            cache_type: None,
            partuuid: None,
            io_engine: None,
        },
    )
    .unwrap();
    assert!(validate(&spec, &mismatched_id)
        .unwrap_err()
        .contains("differs from the path"));
    let no_such_path = ApiRequest::get("/machine_config");
    assert!(validate(&spec, &no_such_path).is_err());
    let wrong_method = ApiRequest::put("/version", &json!({})).unwrap();
    assert!(validate(&spec, &wrong_method).is_err());
}

/// Bodies read back into our types (all `deny_unknown_fields`) unchanged: what the
/// fake server in the other tests relies on.
#[test]
fn bodies_round_trip_through_the_serde_types() {
    let fc = Firecracker {
        metrics: true,
        ..Firecracker::default()
    };
    let rt = Path::new("/run/x");
    for r in fc.all_requests(&common::full_spec(rt)).unwrap() {
        let body = r.body.clone().unwrap();
        let back = match r.path.as_str() {
            "/logger" => {
                serde_json::to_value(serde_json::from_value::<Logger>(body.clone()).unwrap())
            }
            "/metrics" => {
                serde_json::to_value(serde_json::from_value::<Metrics>(body.clone()).unwrap())
            }
            "/machine-config" => {
                serde_json::to_value(serde_json::from_value::<MachineConfig>(body.clone()).unwrap())
            }
            "/boot-source" => {
                serde_json::to_value(serde_json::from_value::<BootSource>(body.clone()).unwrap())
            }
            "/vsock" => {
                serde_json::to_value(serde_json::from_value::<Vsock>(body.clone()).unwrap())
            }
            "/actions" => serde_json::to_value(
                serde_json::from_value::<InstanceActionInfo>(body.clone()).unwrap(),
            ),
            p if p.starts_with("/drives/") => {
                serde_json::to_value(serde_json::from_value::<Drive>(body.clone()).unwrap())
            }
            p if p.starts_with("/network-interfaces/") => serde_json::to_value(
                serde_json::from_value::<NetworkInterface>(body.clone()).unwrap(),
            ),
            p => panic!("unexpected path {p}"),
        }
        .unwrap();
        assert_eq!(back, body, "{r}");
    }
    let unknown = serde_json::from_value::<MachineConfig>(
        json!({"vcpu_count": 1, "mem_size_mib": 1, "x": 1}),
    );
    assert!(unknown.is_err());
}

/// What the backend sends, field by field, for the representative machine.
#[test]
fn the_configuration_carries_the_machine() {
    let rt = Path::new("/run/banger/vms/0a1b2c3d4e5f");
    let reqs = Firecracker::default()
        .configure_requests(&common::full_spec(rt))
        .unwrap();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/logger",
            "/machine-config",
            "/boot-source",
            "/drives/disk0",
            "/drives/disk1",
            "/drives/disk2",
            "/network-interfaces/eth0",
            "/vsock"
        ]
    );
    let body = |p: &str| {
        reqs.iter()
            .find(|r| r.path == p)
            .unwrap()
            .body
            .clone()
            .unwrap()
    };
    assert_eq!(
        body("/machine-config"),
        json!({"vcpu_count": 2, "mem_size_mib": 1024})
    );
    let boot = body("/boot-source");
    assert_eq!(
        boot["boot_args"],
        "console=ttyS0 reboot=k panic=1 pci=off initcall_blacklist=pci_arch_init banger.ip=172.30.0.2/24 banger.gw=172.30.0.1 banger.hostname=dev"
    );
    assert_eq!(boot["initrd_path"], "/var/lib/banger/images/i1/initrd.img");
    assert_eq!(
        body("/drives/disk0"),
        json!({"drive_id": "disk0", "path_on_host": "/var/lib/banger/images/i1/rootfs.ext4",
               "is_root_device": false, "is_read_only": true})
    );
    assert_eq!(body("/drives/disk2")["cache_type"], "Writeback");
    assert_eq!(
        body("/network-interfaces/eth0"),
        json!({"iface_id": "eth0", "host_dev_name": "bgr0a1b2c3d", "guest_mac": "06:ba:ac:1e:00:02"})
    );
    assert_eq!(
        body("/vsock"),
        json!({"guest_cid": 3, "uds_path": "/run/banger/vms/0a1b2c3d4e5f/vsock.sock"})
    );
    // Without an initrd the kernel must mount the first disk itself.
    let minimal = Firecracker::default()
        .configure_requests(&common::minimal_spec(rt))
        .unwrap();
    let d0 = minimal.iter().find(|r| r.path == "/drives/disk0").unwrap();
    assert_eq!(d0.body.as_ref().unwrap()["is_root_device"], true);
    let boot = minimal.iter().find(|r| r.path == "/boot-source").unwrap();
    assert_eq!(
        boot.body.as_ref().unwrap()["boot_args"],
        "console=ttyS0 reboot=k panic=1 pci=off initcall_blacklist=pci_arch_init"
    );
    assert!(boot.body.as_ref().unwrap().get("initrd_path").is_none());
    assert_eq!(
        Firecracker::default().args(&common::full_spec(rt)),
        [
            "--api-sock",
            "/run/banger/vms/0a1b2c3d4e5f/firecracker.sock",
            "--id",
            "banger-0a1b2c3d4e5f"
        ]
    );
}

#[test]
fn machines_firecracker_cannot_run_are_refused_before_any_request() {
    let rt = Path::new("/run/x");
    let fc = Firecracker::default();
    for cpus in [0, 33] {
        let mut s = common::full_spec(rt);
        s.cpus = cpus;
        let e = fc.configure_requests(&s).unwrap_err();
        assert!(matches!(e, FirecrackerError::InvalidSpec(_)), "{e}");
        assert!(e.to_string().contains("1 to 32"), "{e}");
    }
    let long = Path::new("/").join("d".repeat(100));
    let e = fc
        .configure_requests(&common::full_spec(&long))
        .unwrap_err();
    assert!(e.to_string().contains("more than the 107"), "{e}");
}
