//! The process-wide governor through the HTTP service (`bucketfn::runtime::http::app` on a real
//! socket): concurrent requests share one memory budget, and an event past
//! `REQUEST_TIMEOUT_SECS` is stopped, its blocking work ends and its request is answered 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bucketfn::budget::Stopped;
use bucketfn::operations::Observer;
use bucketfn::operations::ledger::{LedgerSettings, Recorder};
use bucketfn::operations::metrics::Metrics;
use bucketfn::runtime::http::{Service, app};
use bucketfn::runtime::{Governor, RuntimeSettings};
use bucketfn::storage::MemoryStore;
use bucketfn::{Done, Env, Handler, HandlerError, Invocation, ObjectEvent, Outcome};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::function::{HttpReply, request};
use crate::support::{BoxError, TestResult};

/// What the test handlers saw.
#[derive(Default)]
struct Seen {
    holding: AtomicUsize,
    most_holding: AtomicUsize,
    most_reserved: AtomicU64,
    budgets: std::sync::Mutex<Vec<u64>>,
    let_go: AtomicBool,
}

/// Reserves `share` of the process's budget, as a decode does, and holds it a moment.
struct Hog {
    share: u64,
    seen: Arc<Seen>,
}

impl Handler for Hog {
    async fn handle(&self, event: &ObjectEvent, invocation: &Invocation) -> Outcome {
        if let Ok(mut budgets) = self.seen.budgets.lock() {
            budgets.push(invocation.memory.limit());
        }
        let what = format!("the decode of {}", event.key);
        let reservation = invocation
            .memory
            .reserve(&what, self.share, Duration::from_millis(50))
            .await?;
        let now = self.seen.holding.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen.most_holding.fetch_max(now, Ordering::SeqCst);
        let reserved = invocation.memory.limit() - invocation.memory.available();
        self.seen
            .most_reserved
            .fetch_max(reserved, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.seen.holding.fetch_sub(1, Ordering::SeqCst);
        drop(reservation);
        Ok(Done::Completed("decoded".into()))
    }
}

/// CPU work on a blocking thread that checks its stop and never ends otherwise.
struct Spinner(Arc<Seen>);

impl Handler for Spinner {
    async fn handle(&self, _event: &ObjectEvent, invocation: &Invocation) -> Outcome {
        let (stop, seen) = (invocation.stop.clone(), Arc::clone(&self.0));
        tokio::task::spawn_blocking(move || {
            while !stop.is_stopped() {
                std::hint::spin_loop();
            }
            seen.let_go.store(true, Ordering::SeqCst);
            Err::<Done, HandlerError>(Stopped.into())
        })
        .await
        .map_err(HandlerError::retryable)?
    }
}

/// The service with `handler` and the runtime settings `env` gives, on a loopback port.
async fn start<H: Handler>(handler: H, env: &[(&str, &str)]) -> Result<String, BoxError> {
    let no_auth = std::iter::once(("EVENT_AUTH", "none"));
    let mut env = Env::from_pairs(no_auth.chain(env.iter().copied()));
    let settings = RuntimeSettings::read(&mut env);
    env.finish()?;
    let ledger = LedgerSettings::in_memory(100).open("governed")?;
    let service = Service {
        name: "governed",
        handler: Arc::new(handler),
        store: Arc::new(MemoryStore::new()),
        observer: Observer {
            metrics: Arc::new(Metrics::default()),
            recorder: Recorder::start(ledger),
            instance: "test/1".into(),
        },
        governor: Governor::new(&settings),
    };
    let router = app(service, &settings)?.events;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(url)
}

async fn post(url: &str, key: &str) -> Result<HttpReply, BoxError> {
    let body = json!({"Records": [{"eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": 1}}}]});
    request(
        "POST",
        url,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

fn detail(reply: &HttpReply) -> String {
    serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v["records"][0]["detail"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_share_one_memory_budget() -> TestResult {
    const BUDGET: u64 = 10 * 1024 * 1024;
    let seen = Arc::new(Seen::default());
    let hog = Hog {
        share: BUDGET * 8 / 10,
        seen: Arc::clone(&seen),
    };
    let budget = BUDGET.to_string();
    let url = start(
        hog,
        &[
            ("MAX_DECODE_BYTES", budget.as_str()),
            // Enough event slots for every request: only the memory budget holds them back.
            ("BATCH_CONCURRENCY", "4"),
        ],
    )
    .await?;
    let requests: Vec<_> = (0..4)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &format!("big-{n}.jpg")).await })
        })
        .collect();
    let mut replies = Vec::new();
    for request in requests {
        replies.push(request.await?);
    }
    let mut decoded = 0;
    for reply in replies {
        let reply = reply?;
        match reply.status {
            202 => decoded += 1,
            503 => {
                let detail = detail(&reply);
                assert!(
                    detail.contains("the memory budget of 10.0 MiB is taken by other work"),
                    "{detail}"
                );
            }
            other => return Err(format!("answered {other}: {}", detail(&reply)).into()),
        }
    }
    assert!(decoded >= 1, "no request got the budget");
    assert_eq!(seen.most_holding.load(Ordering::SeqCst), 1);
    assert!(seen.most_reserved.load(Ordering::SeqCst) <= BUDGET);
    let budgets = seen.budgets.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(
        budgets, [BUDGET; 4],
        "every request got the configured budget"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn work_past_the_request_timeout_is_stopped_and_answered_503() -> TestResult {
    let seen = Arc::new(Seen::default());
    let url = start(Spinner(Arc::clone(&seen)), &[("REQUEST_TIMEOUT_SECS", "1")]).await?;
    let reply = post(&url, "endless.jpg").await?;
    assert_eq!(reply.status, 503, "{}", detail(&reply));
    let body: Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(body["records"][0]["status"], "retryable");
    let mut waited = Duration::ZERO;
    while !seen.let_go.load(Ordering::SeqCst) {
        if waited > Duration::from_secs(30) {
            return Err("the blocking work never saw its stop".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    Ok(())
}
