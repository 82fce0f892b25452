//! HTTP/1.1 over Firecracker's API unix socket.
//!
//! reqwest (already the pick for downloads) connects through a unix socket with
//! `ClientBuilder::unix_socket`, so no hand-rolled HTTP is needed; the host in the URL
//! is never resolved. Requests are built as [`ApiRequest`] values first so the exact
//! bodies the backend sends can be checked against Firecracker's OpenAPI spec in tests
//! without a Firecracker.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one API call may take. Firecracker answers pre-boot configuration in
/// microseconds; seconds mean it is wedged.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP method of an API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Read a resource.
    Get,
    /// Create or replace a resource (all pre-boot configuration, actions).
    Put,
    /// Update a resource after boot.
    Patch,
}

impl Method {
    /// Upper-case method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// One request to the Firecracker API, body already encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// Method.
    pub method: Method,
    /// Path, e.g. `/drives/disk0`.
    pub path: String,
    /// JSON body (None for GET).
    pub body: Option<serde_json::Value>,
}

impl ApiRequest {
    /// `PUT path` with `body` serialised as JSON.
    pub fn put(path: impl Into<String>, body: &impl Serialize) -> Result<ApiRequest, ApiError> {
        let path = path.into();
        let body = serde_json::to_value(body).map_err(|e| ApiError::Encode {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(ApiRequest {
            method: Method::Put,
            path,
            body: Some(body),
        })
    }

    /// `GET path`.
    pub fn get(path: impl Into<String>) -> ApiRequest {
        ApiRequest {
            method: Method::Get,
            path: path.into(),
            body: None,
        }
    }
}

impl std::fmt::Display for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method.as_str(), self.path)
    }
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request body could not be encoded (a bug in banger).
    #[error("cannot encode the body of {path}: {reason}")]
    Encode {
        /// Request path.
        path: String,
        /// serde's message.
        reason: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the Firecracker API client: {0}")]
    Client(String),
    /// The socket could not be reached or the exchange broke off.
    #[error("{request} on Firecracker API socket {socket}: {reason}; check that firecracker is still running (its log and the console log are in the VM's runtime directory)")]
    Transport {
        /// Method and path.
        request: String,
        /// API socket.
        socket: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Firecracker answered with an error status; `message` is its `fault_message`
    /// (or the raw body when it sent none).
    #[error("Firecracker rejected {request} with {status}: {message}")]
    Rejected {
        /// Method and path.
        request: String,
        /// HTTP status code.
        status: u16,
        /// Firecracker's explanation.
        message: String,
    },
    /// A successful answer was not the JSON we expected.
    #[error("Firecracker answered {request} with unreadable JSON: {reason}")]
    Decode {
        /// Method and path.
        request: String,
        /// serde's message.
        reason: String,
    },
}

/// A client bound to one Firecracker API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    http: reqwest::Client,
}

/// Firecracker's error body.
#[derive(serde::Deserialize)]
struct Fault {
    fault_message: String,
}

impl ApiClient {
    /// A client for the API socket at `socket` (nothing is connected yet).
    pub fn new(socket: &Path) -> Result<ApiClient, ApiError> {
        ApiClient::with_timeout(socket, API_TIMEOUT)
    }

    /// Like [`ApiClient::new`] with a per-request timeout.
    pub fn with_timeout(socket: &Path, timeout: Duration) -> Result<ApiClient, ApiError> {
        let http = reqwest::Client::builder()
            .unix_socket(socket)
            .timeout(timeout)
            // One VMM, one connection at a time: no pool to keep warm.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| ApiError::Client(error_chain(&e)))?;
        Ok(ApiClient {
            socket: socket.to_path_buf(),
            http,
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send `req`; any 2xx is success, anything else an [`ApiError::Rejected`] carrying
    /// Firecracker's `fault_message`. Returns the response body (empty for 204).
    pub async fn send(&self, req: &ApiRequest) -> Result<Vec<u8>, ApiError> {
        let url = format!("http://localhost{}", req.path);
        let mut builder = match req.method {
            Method::Get => self.http.get(&url),
            Method::Put => self.http.put(&url),
            Method::Patch => self.http.patch(&url),
        }
        .header("Accept", "application/json");
        if let Some(body) = &req.body {
            builder = builder
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let transport = |e: reqwest::Error| ApiError::Transport {
            request: req.to_string(),
            socket: self.socket.clone(),
            reason: error_chain(&e),
        };
        let resp = builder.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let message = match serde_json::from_slice::<Fault>(&bytes) {
            Ok(f) => f.fault_message,
            Err(_) if bytes.is_empty() => status
                .canonical_reason()
                .unwrap_or("no explanation")
                .to_string(),
            Err(_) => String::from_utf8_lossy(&bytes).trim().to_string(),
        };
        Err(ApiError::Rejected {
            request: req.to_string(),
            status: status.as_u16(),
            message,
        })
    }

    /// `GET path`, decoded as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ApiError> {
        let req = ApiRequest::get(path);
        let body = self.send(&req).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode {
            request: req.to_string(),
            reason: e.to_string(),
        })
    }
}

/// reqwest's top-level message is often just "error sending request": the cause
/// (connection refused, no such file) is further down the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
