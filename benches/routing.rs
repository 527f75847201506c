//! Routing benchmark (`cargo bench --bench routing`): how long after the new primary is
//! writable each backend names it. Each run starts the whole routed stack of the tests
//! (tests/support/stack.rs: a real 3-node sandbox, the ProxySQL admin stand-in with its
//! read_only monitor at ProxySQL's default 1000 ms, the Consul stand-in, the embedded
//! DNS), kills the primary with kill -9 and reads, from the recovery's own record, each
//! backend's lag behind the promotion (from read_only OFF on the new primary to the
//! backend confirming the change: ProxySQL's `LOAD ... TO RUNTIME` answered and
//! `runtime_mysql_servers` read back, Consul's `/v1/txn` applied, DNS answers swapped).
//! The stand-in's monitor runs at ProxySQL's default 1000 ms alongside, as in production;
//! routing by that monitor alone costs about half a second on average (the reference
//! measured 18–909 ms, mean 487, on a real ProxySQL at that interval).
//!
//! BENCH_FLAVOR=mariadb|mysql (default mariadb), BENCH_RUNS (default 5).

#[path = "../tests/support/mod.rs"]
mod support;

use pointsman::routing::engine::RoutesView;
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::RecoveryRecord;
use std::collections::BTreeMap;
use std::time::Duration;
use support::eventually;
use support::stack::Stack;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let flavor = support::bench_flavor();
    let runs = support::bench_runs();
    println!("routing benchmark: {flavor}, {runs} kill -9 failovers");
    let mut lags: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for run in 1..=runs {
        let measured = one_run(flavor).await;
        println!("run {run}: {measured:?}");
        for (backend, ms) in measured {
            lags.entry(backend).or_default().push(ms);
        }
    }
    println!("\nms from the new primary writable to each backend naming it, median (min–max):");
    for (backend, mut values) in lags {
        values.sort_unstable();
        println!(
            "  {backend:40} {} ({}–{})",
            values[values.len() / 2],
            values[0],
            values[values.len() - 1]
        );
    }
}

/// One failover; each backend's lag in ms, by backend kind (`dns`, `consul`, `proxysql`).
async fn one_run(flavor: Flavor) -> BTreeMap<String, u64> {
    let stack = Stack::start(flavor, Duration::from_millis(1000)).await;
    stack.consul_names(LIMIT, "node1").await;
    assert!(routes(&stack)
        .await
        .backends
        .iter()
        .all(|b| b.error.is_none()));

    let mut sandbox = stack.topology.sandbox.clone();
    sandbox.kill("node1").expect("kill node1");
    let recovery: RecoveryRecord = eventually(LIMIT, "the failover", || async {
        let records: Vec<RecoveryRecord> =
            stack.watcher.api.get("/api/v1/recoveries").await.ok()?;
        records.into_iter().find(|r| r.finished_at.is_some())
    })
    .await;
    let promote_end = recovery
        .steps
        .iter()
        .position(|s| s.step == "promote" && s.ok)
        .expect("a promotion");
    assert!(recovery.steps[promote_end..]
        .iter()
        .any(|s| s.step == "route"));
    let view = routes(&stack).await;
    let mut lags = BTreeMap::new();
    for backend in view.backends {
        let kind = backend
            .status
            .backend
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let lag = backend
            .status
            .last_promotion_lag_ms
            .unwrap_or_else(|| panic!("{} has no promotion lag: {:?}", kind, backend.status));
        lags.insert(kind, lag);
    }
    lags
}

async fn routes(stack: &Stack) -> RoutesView {
    stack
        .watcher
        .api
        .get("/api/v1/routes")
        .await
        .expect("routes")
}
