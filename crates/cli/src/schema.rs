//! The JSON shapes of `--json` output are documented as JSON Schema in
//! `docs/schemas.json` (one `$defs` entry per shape; docs/json.md names them). These
//! tests pin the documents against what the code serialises: a field added, renamed
//! or retyped without updating the schema fails here (the schemas forbid unknown
//! fields). The e2e section `agent_cli` validates real command output against them.

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
