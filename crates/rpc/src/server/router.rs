//! The method table: names to async handlers.
//!
//! Handlers take and return `serde_json::Value` so the table is one concrete
//! type; [`Router::add`] wraps typed functions so handlers never touch JSON.

use super::context::CallCtx;
use crate::error::RpcError;
use crate::methods::Method;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// What a raw handler returns.
pub type HandlerFuture = BoxFuture<'static, Result<Value, RpcError>>;

/// A registered handler.
pub(crate) type Handler = Arc<dyn Fn(CallCtx, Value) -> HandlerFuture + Send + Sync>;

/// Why a handler could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouterError {
    /// Two handlers under one name: the second would silently shadow the first.
    #[error("RPC method {0:?} is registered twice; remove one of the registrations")]
    Duplicate(String),
}

/// Method name -> handler. Built once at daemon start, then shared (`Arc`).
#[derive(Default)]
pub struct Router {
    handlers: BTreeMap<String, Handler>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("methods", &self.methods())
            .finish()
    }
}

impl Router {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a handler working on raw JSON.
    pub fn add_raw<F>(&mut self, name: &str, f: F) -> Result<&mut Self, RouterError>
    where
        F: Fn(CallCtx, Value) -> HandlerFuture + Send + Sync + 'static,
    {
        if self.handlers.contains_key(name) {
            return Err(RouterError::Duplicate(name.to_string()));
        }
        self.handlers.insert(name.to_string(), Arc::new(f));
        Ok(self)
    }

    /// Register the handler of method `M` (`router.add(VmCreate, handler)`). Its
    /// error type converts into the wire [`RpcError`] here, so services keep their
    /// own error enums and the mapping to codes lives in one `From` impl.
    pub fn add<M, F, Fut, E>(&mut self, _method: M, f: F) -> Result<&mut Self, RouterError>
    where
        M: Method,
        F: Fn(CallCtx, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Result, E>> + Send + 'static,
        E: Into<RpcError> + 'static,
    {
        self.add_named(M::NAME, move |ctx, p| {
            let fut = f(ctx, p);
            async move { fut.await.map_err(Into::into) }
        })
    }

    /// Register a typed handler under a name of the caller's choosing (tests, and
    /// methods outside [`crate::methods`]). Params that do not deserialise into `P`
    /// are answered with `bad_request` carrying serde's message; a `null` or
    /// missing `params` is read as `{}` when `P` does not accept `null`, so
    /// methods whose params are all optional can be called without any.
    pub fn add_named<P, R, F, Fut>(&mut self, name: &str, f: F) -> Result<&mut Self, RouterError>
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        F: Fn(CallCtx, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let method = name.to_string();
        self.add_raw(name, move |ctx, params| {
            let f = Arc::clone(&f);
            let method = method.clone();
            async move {
                let params: P = decode_params(&method, params)?;
                let result = f(ctx, params).await?;
                serde_json::to_value(result).map_err(|e| {
                    RpcError::operation_failed(format!(
                        "bangerd could not encode the result of {method} ({e}); this is a bug, please report it"
                    ))
                })
            }
            .boxed()
        })
    }

    /// Registered method names, sorted.
    pub fn methods(&self) -> Vec<&str> {
        self.handlers.keys().map(String::as_str).collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<Handler> {
        self.handlers.get(name).cloned()
    }

    /// Invoke a method in-process, bypassing the socket. Unknown names give
    /// `unknown_method` just as over the wire.
    pub async fn call(&self, ctx: CallCtx, method: &str, params: Value) -> Result<Value, RpcError> {
        match self.get(method) {
            Some(h) => h(ctx, params).await,
            None => Err(unknown_method(method)),
        }
    }
}

/// The error for a name with no handler. It names only the requested method,
/// not the table: the list of methods is not the caller's business, and a
/// version mismatch is the usual cause.
pub(crate) fn unknown_method(method: &str) -> RpcError {
    RpcError::new(
        crate::ErrorCode::UnknownMethod,
        format!(
            "bangerd does not know the method {method:?}; banger and bangerd are probably different versions (restart bangerd after upgrading)"
        ),
    )
}

fn decode_params<P: DeserializeOwned>(method: &str, params: Value) -> Result<P, RpcError> {
    let was_null = params.is_null();
    match serde_json::from_value::<P>(params) {
        Ok(p) => Ok(p),
        Err(first) => {
            if was_null {
                if let Ok(p) = serde_json::from_value::<P>(Value::Object(Default::default())) {
                    return Ok(p);
                }
            }
            Err(RpcError::bad_request(format!(
                "invalid params for {method}: {first}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::{NoParams, VmCreateParams, VmNameParams};
    use crate::ErrorCode;
    use serde_json::json;

    fn table() -> Router {
        let mut r = Router::new();
        r.add_named("vm.show", |_ctx, p: VmNameParams| async move {
            Ok::<_, RpcError>(format!("shown {}", p.name))
        })
        .unwrap()
        .add_named("vm.create", |_ctx, p: VmCreateParams| async move {
            Ok::<_, RpcError>(p.cpus)
        })
        .unwrap()
        .add_named(
            "ping",
            |_ctx, _p: NoParams| async move { Ok::<_, RpcError>(()) },
        )
        .unwrap();
        r
    }

    /// A service error type with its own conversion, as the daemon has.
    #[derive(Debug)]
    struct Gone(String);
    impl From<Gone> for RpcError {
        fn from(g: Gone) -> RpcError {
            RpcError::not_found(format!("{} is gone", g.0))
        }
    }

    #[tokio::test]
    async fn typed_methods_convert_service_errors() {
        use crate::methods::{Ping, PingResult, VmShow};
        let mut r = Router::new();
        r.add(VmShow, |_ctx, p| async move { Err(Gone(p.name)) })
            .unwrap()
            .add(Ping, |_ctx, _p| async move {
                Ok::<_, Gone>(PingResult {
                    version: "t".into(),
                    pid: 1,
                })
            })
            .unwrap();
        let e = r
            .call(ctx(), "vm.show", json!({"name": "dev"}))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert_eq!(e.message, "dev is gone");
        let v = r.call(ctx(), "ping", Value::Null).await.unwrap();
        assert_eq!(v, json!({"version": "t", "pid": 1}));
    }

    fn ctx() -> CallCtx {
        CallCtx::detached("op-test", 0)
    }

    #[tokio::test]
    async fn typed_handlers_decode_and_encode() {
        let r = table();
        let v = r
            .call(ctx(), "vm.show", json!({"name": "dev"}))
            .await
            .unwrap();
        assert_eq!(v, json!("shown dev"));
        assert_eq!(
            r.call(ctx(), "ping", Value::Null).await.unwrap(),
            Value::Null
        );
        assert_eq!(r.call(ctx(), "ping", json!({})).await.unwrap(), Value::Null);
        // All-optional params may be omitted entirely.
        assert_eq!(
            r.call(ctx(), "vm.create", Value::Null).await.unwrap(),
            Value::Null
        );
        assert_eq!(
            r.call(ctx(), "vm.create", json!({"cpus": 3}))
                .await
                .unwrap(),
            json!(3)
        );
    }

    #[tokio::test]
    async fn bad_params_are_bad_requests_with_serde_detail() {
        let r = table();
        let e = r
            .call(ctx(), "vm.show", json!({"nom": "x"}))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("missing field `name`"), "{}", e.message);
        let e = r.call(ctx(), "vm.show", Value::Null).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = r
            .call(ctx(), "vm.create", json!({"cpus": "many"}))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[tokio::test]
    async fn unknown_methods_are_reported() {
        let e = table()
            .call(ctx(), "vm.explode", Value::Null)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownMethod);
        assert!(e.message.contains("vm.explode"));
        assert!(!e.message.contains("vm.show"), "must not list the table");
    }

    #[test]
    fn methods_are_sorted_and_duplicates_refused() {
        let mut r = table();
        assert_eq!(r.methods(), ["ping", "vm.create", "vm.show"]);
        let dup = r.add_named(
            "ping",
            |_ctx, _p: NoParams| async move { Ok::<_, RpcError>(()) },
        );
        assert_eq!(dup.err(), Some(RouterError::Duplicate("ping".into())));
    }
}
