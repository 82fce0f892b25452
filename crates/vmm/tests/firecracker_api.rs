//! The API client against a fake Firecracker on a unix socket: the configure sequence
//! arrives in order with the exact bodies, and Firecracker's error answers (4xx with a
//! `fault_message`, 5xx without one, no server, a server that never answers) become
//! errors that say what happened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use banger_vmm::firecracker::client::{ApiClient, ApiError, ApiRequest};
use banger_vmm::firecracker::Firecracker;
use common::{Behaviour, FakeServer};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_configure_sequence_arrives_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let server = FakeServer::spawn(&sock, Behaviour::default(), None);
    let client = ApiClient::new(&sock).unwrap();

    let info = client.get_json("/").await.unwrap();
    assert_eq!(info["app_name"], "Firecracker");

    let fc = Firecracker {
        metrics: true,
        ..Firecracker::default()
    };
    let planned = fc.all_requests(&common::full_spec(dir.path())).unwrap();
    for r in &planned {
        client.send(r).await.unwrap();
    }
    let seen = server.requests();
    assert_eq!(seen.len(), planned.len() + 1);
    for (got, want) in seen[1..].iter().zip(&planned) {
        assert_eq!(got.method, want.method.as_str());
        assert_eq!(got.path, want.path);
        assert_eq!(got.body, want.body, "{want}");
    }
    let order: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        order,
        [
            "GET /",
            "PUT /logger",
            "PUT /metrics",
            "PUT /machine-config",
            "PUT /boot-source",
            "PUT /drives/disk0",
            "PUT /drives/disk1",
            "PUT /drives/disk2",
            "PUT /network-interfaces/eth0",
            "PUT /vsock",
            "PUT /actions",
            "PUT /actions",
        ]
    );
    let actions: Vec<_> = seen
        .iter()
        .filter(|s| s.path == "/actions")
        .map(|s| s.body.as_ref().unwrap()["action_type"].clone())
        .collect();
    assert_eq!(actions, ["InstanceStart", "SendCtrlAltDel"]);
}

#[tokio::test]
async fn a_400_fault_message_reaches_the_error_text() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let fault = "Unable to create the block device: No such file or directory (os error 2)";
    let behaviour = Behaviour {
        fail: Some((
            "PUT".into(),
            "/drives/disk1".into(),
            400,
            serde_json::json!({ "fault_message": fault }).to_string(),
        )),
        hang: false,
    };
    let _server = FakeServer::spawn(&sock, behaviour, None);
    let client = ApiClient::new(&sock).unwrap();
    let reqs = Firecracker::default()
        .configure_requests(&common::full_spec(dir.path()))
        .unwrap();
    let mut failure = None;
    for r in &reqs {
        if let Err(e) = client.send(r).await {
            failure = Some(e);
            break;
        }
    }
    let e = failure.expect("the fake refused /drives/disk1");
    assert!(
        matches!(&e, ApiError::Rejected { status: 400, message, .. } if message == fault),
        "{e:?}"
    );
    let text = e.to_string();
    assert_eq!(
        text,
        format!("Firecracker rejected PUT /drives/disk1 with 400: {fault}")
    );
}

#[tokio::test]
async fn a_5xx_without_fault_message_shows_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let behaviour = Behaviour {
        fail: Some((
            "PUT".into(),
            "/actions".into(),
            500,
            "internal trouble".into(),
        )),
        hang: false,
    };
    let _server = FakeServer::spawn(&sock, behaviour, None);
    let client = ApiClient::new(&sock).unwrap();
    let e = client
        .send(&Firecracker::start_request().unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Firecracker rejected PUT /actions with 500: internal trouble"
    );
}

#[tokio::test]
async fn no_server_is_a_transport_error_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("absent.sock");
    let client = ApiClient::new(&sock).unwrap();
    let e = client.send(&ApiRequest::get("/")).await.unwrap_err();
    assert!(matches!(e, ApiError::Transport { .. }), "{e:?}");
    let text = e.to_string();
    println!("{text}");
    assert!(text.contains(&sock.display().to_string()), "{text}");
    assert!(text.contains("GET /"), "{text}");
    assert!(text.contains("still running"), "{text}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let _server = FakeServer::spawn(
        &sock,
        Behaviour {
            fail: None,
            hang: true,
        },
        None,
    );
    let client = ApiClient::with_timeout(&sock, Duration::from_millis(300)).unwrap();
    let t = Instant::now();
    let e = client
        .send(&Firecracker::start_request().unwrap())
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(matches!(e, ApiError::Transport { .. }), "{e:?}");
    println!("{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
}
