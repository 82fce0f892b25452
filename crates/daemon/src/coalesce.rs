//! Coalescing of concurrent requests for the same result (image pulls and builds).
//!
//! The first request for a key does the work; later ones wait on a watch channel
//! and get a clone of its result. Handlers run in their own tasks, so a client that
//! goes away only drops its own wait; and if the leader itself is dropped mid-way,
//! the next waiter in line takes over instead of waiting forever.

use crate::error::{DaemonError, Result};
use banger_rpc::ProgressSink;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A finished run: its value, or its error shared by everyone who waited for it.
type Outcome<T> = Option<std::result::Result<T, Arc<DaemonError>>>;

/// In-flight work by key.
pub struct Coalescer<T> {
    inflight: Mutex<HashMap<String, watch::Receiver<Outcome<T>>>>,
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes the leader's entry however the leader ends (result, error or drop).
struct Leader<'a, T> {
    map: &'a Mutex<HashMap<String, watch::Receiver<Outcome<T>>>>,
    key: String,
}

impl<T> Drop for Leader<'_, T> {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&self.key);
    }
}

enum Role<T> {
    Lead(watch::Sender<Outcome<T>>),
    Wait(watch::Receiver<Outcome<T>>),
}

impl<T: Clone> Coalescer<T> {
    /// Run `work` for `key` unless it is already running; then share its result.
    pub async fn run<F, Fut>(&self, key: &str, progress: &ProgressSink, work: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut work = Some(work);
        loop {
            let role = {
                let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                match m.get(key) {
                    Some(rx) => Role::Wait(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        m.insert(key.to_string(), rx);
                        Role::Lead(tx)
                    }
                }
            };
            match role {
                Role::Wait(mut rx) => {
                    progress.send(
                        "waiting",
                        Some(format!(
                            "{key} is already being made by another request; waiting for it"
                        )),
                    );
                    if let Ok(done) = rx.wait_for(Option::is_some).await {
                        if let Some(result) = done.clone() {
                            return result.map_err(DaemonError::Shared);
                        }
                    }
                    // The leader was dropped without a result: try again, maybe as leader.
                }
                Role::Lead(tx) => {
                    let _leader = Leader {
                        map: &self.inflight,
                        key: key.to_string(),
                    };
                    // The loop leads at most once: a leader always returns.
                    let Some(work) = work.take() else {
                        return Err(DaemonError::BadRequest(
                            "internal error: coalesced work ran twice; please report this".into(),
                        ));
                    };
                    let result = work().await.map_err(Arc::new);
                    tx.send_replace(Some(result.clone()));
                    return result.map_err(DaemonError::Shared);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    fn sink() -> ProgressSink {
        ProgressSink::detached()
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_run() {
        let c = Arc::new(Coalescer::<u32>::default());
        let runs = Arc::new(AtomicU32::new(0));
        let mut tasks = vec![];
        for _ in 0..5 {
            let (c, runs) = (c.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                c.run("img", &sink(), || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(7)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Finished work leaves no entry: a later request runs again.
        let again = c.run("img", &sink(), || async { Ok(8) }).await.unwrap();
        assert_eq!(again, 8);
    }

    #[tokio::test]
    async fn different_keys_run_in_parallel() {
        let c = Arc::new(Coalescer::<u32>::default());
        // Each run waits for the other to have started: only parallel runs finish.
        let both = tokio::sync::Barrier::new(2);
        let s = sink();
        let (a, b) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(
                c.run("a", &s, || async {
                    both.wait().await;
                    Ok(1)
                }),
                c.run("b", &s, || async {
                    both.wait().await;
                    Ok(2)
                })
            )
        })
        .await
        .expect("the two keys ran one after the other");
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    }

    #[tokio::test]
    async fn errors_are_shared_and_a_cancelled_waiter_blocks_nobody() {
        let c = Arc::new(Coalescer::<u32>::default());
        let c1 = c.clone();
        let leader = tokio::spawn(async move {
            c1.run("x", &sink(), || async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Err(DaemonError::Injected("boom".into()))
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c2 = c.clone();
        let cancelled = tokio::spawn(async move { c2.run("x", &sink(), || async { Ok(1) }).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancelled.abort();
        let waiter = c.run("x", &sink(), || async { Ok(2) }).await;
        let e = waiter.unwrap_err();
        assert!(
            matches!(&e, DaemonError::Shared(inner) if matches!(**inner, DaemonError::Injected(ref p) if p == "boom")),
            "{e}"
        );
        assert!(leader.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_dropped_leader_hands_over_to_a_waiter() {
        let c = Arc::new(Coalescer::<u32>::default());
        let c1 = c.clone();
        let leader = tokio::spawn(async move {
            c1.run("y", &sink(), || async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(1)
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.run("y", &sink(), || async { Ok(2) }).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        leader.abort();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter took over")
            .unwrap();
        assert_eq!(got.unwrap(), 2);
    }
}
