//! Consul stand-in: a **test double** for the parts of Consul's HTTP API that pointsman
//! uses. Consul cannot be installed on these machines, so routing and leader-election
//! tests talk to this in-process axum server on 127.0.0.1 instead. It plays one node that
//! is both the agent and the only server of its datacenter, and it follows
//! `shared/reference/consul-api.md` point by point. It owns nothing of the product: it
//! lives in tests/support and must never be used from src/.
//!
//! A double that accepts anything proves nothing, so it refuses what Consul refuses, with
//! Consul's status codes and texts. Where the reference is silent or unsure, the behaviour
//! was looked up in hashicorp/consul:
//! website/content/api-docs/{kv,txn,session,catalog,health}.mdx,
//! api-docs/agent/{service,check}.mdx, api-docs/features/blocking.mdx;
//! agent/{http,kvs_endpoint,txn_endpoint,session_endpoint,agent_endpoint,acl}.go;
//! agent/consul/{kvs_endpoint,txn_endpoint,session_endpoint}.go;
//! agent/consul/state/{kvs,txn,session}.go; agent/structs/errors.go.
//!
//! The reference, point by point:
//! - General — implemented. Every route under `/v1/`; token from `X-Consul-Token`,
//!   `Authorization: Bearer` or the deprecated `?token=`; reads carry X-Consul-Index,
//!   X-Consul-KnownLeader and X-Consul-LastContact. ACLs: with `acl_token` set, that is
//!   the one (management) token; no token is Consul's anonymous token under
//!   `default_policy = deny` (403 `Permission denied...` on single objects, empty lists
//!   where Consul filters, 409 per-op errors in a transaction); any other token → 403
//!   `ACL not found` (agent/http.go maps ACL errors to 403). `?dc=` naming another
//!   datacenter → 500 `No path to datacenter`; other RPC errors are 500 with their text.
//! - KV — implemented. GET: the JSON array shape; a missing key → 404 with an empty body
//!   and the table index (0 reported as 1); `recurse` (index = highest ModifyIndex or
//!   tombstone under the prefix); `keys` (`[]` for the root, 404 for an empty non-root
//!   prefix, as kvs_endpoint.go does), `separator`; `raw`; no key → 400 `Missing key
//!   name`. PUT: raw body → `true`/`false`; `flags`; `cas=0`/`cas=N`; `acquire`/`release`
//!   (an unknown session → 500 `invalid session "<id>"`, lock delay → `false`); a plain
//!   PUT keeps the lock holder (and, as kvsSetTxn does, resets LockIndex to 0); an
//!   unchanged PUT keeps ModifyIndex; cas/acquire/release together → 400 `Conflicting
//!   flags: ...`; over 512 KB → 413. Keys follow the newest Consul's validateKVKey:
//!   `[A-Za-z0-9,-_./]`, no leading `/`, no `../`, no file-like suffix (`.json`, `.com`,
//!   ...) → 400. DELETE: `true`, `recurse`, `cas=N` → `true`/`false` (a missing key counts
//!   as deleted). One Raft-like index bumped by every write.
//! - Blocking reads — implemented for KV, catalog and health: `index` + `wait` (default
//!   5 min, max 10 min; bad values → 400 `Invalid wait time` / `Invalid index`); a read
//!   returns when what it watches changes (not on unrelated writes) or when `wait` runs
//!   out. Not implemented: the jitter of up to wait/16. The client-side rules (reset on a
//!   backwards index, index ≥ 1, rate limit) are the client's to follow;
//!   `restore_snapshot` makes indexes go backwards so that tests can check them.
//! - Transactions — implemented for KV: all thirteen verbs, read-only and read-write, all
//!   or nothing; 200 `{"Results":[..],"Errors":null}` or 409 `{"Results":null,
//!   "Errors":[{"OpIndex","What"}]}` with every failing op and Consul's texts; an unknown
//!   verb or an empty key is a per-op error (409), as state/txn.go and txn_endpoint.go
//!   have it; more than 128 ops → 413 `Transaction contains too many operations`; bad
//!   JSON or base64 → 400 `Failed to parse body: ...`; a value over 512 KB → 413. Not
//!   implemented: Node, Service, Check and Session ops (→ 501 `consul stand-in: ...`).
//! - Sessions — implemented: create (Name, Node, TTL, LockDelay, Behavior, Checks /
//!   NodeChecks, ServiceChecks; defaults serfHealth, 15 s, `release`) → `{"ID"}`; renew →
//!   array, a gone session → 404 `Session id '<id>' not found`; destroy → `true`. A TTL
//!   outside [session_ttl_min, 24h] or a bad Behavior is refused by Consul's RPC layer,
//!   which its HTTP layer answers **500** (`Invalid Session TTL '<ns>', must be between
//!   [10s=24h0m0s]`), and so does the stand-in. The server expires a session TTL × 2
//!   after its last renewal; invalidation (expiry, destroy, a linked check going critical
//!   or away) releases or deletes held keys and sets a lock delay (capped at 60 s) during
//!   which acquires answer `false`. Not implemented: session info/list/node endpoints.
//! - Services — implemented: register (ID defaults to Name; Tags, Address, Port, Meta,
//!   Weights, EnableTagOverride; Check or Checks with TTL, HTTP or TCP, Interval,
//!   Timeout, Status, DeregisterCriticalServiceAfter; check id `service:<ID>`, or
//!   `service:<ID>:<n>` with several; `?replace-existing-checks`), with Consul's 400s;
//!   deregister (404 `Unknown service ID ...`); `check/pass|warn|fail` (404 `Unknown check
//!   ID ...`; 500 `CheckID "<id>" does not have associated TTL` for HTTP/TCP checks);
//!   `GET /v1/agent/services`, `/v1/agent/checks`, `/v1/catalog/service/<name>` (`tag`,
//!   repeatable, case-insensitive), `/v1/health/service/<name>` (`tag`, `passing`, which
//!   also drops warnings). Checks start critical unless given a Status; re-registering
//!   keeps a check's status; a TTL check lapses to critical (`TTL expired`); HTTP and TCP
//!   checks really probe their target (the first probe at once, where Consul staggers it
//!   within the interval). DeregisterCriticalServiceAfter (at least
//!   `check_deregister_interval_min`, 1 min as in Consul) is honoured by a sweep every
//!   20 ms, where Consul's reaper runs every 30 s. Not implemented: script, gRPC, UDP,
//!   H2PING, alias, Docker and OS-service checks, Connect/proxy/`Kind` services (→ 501),
//!   `/v1/agent/check/register|deregister|update`, hash blocking on agent endpoints.
//! - orchestrator's key layout — plain KV to the stand-in. Note for key design: the newest
//!   Consul refuses `host:port` in a key and also a key ending in a "file extension", so
//!   `mysql/master/db.example.com` is refused just as `mysql/master/db1:3306` is.
//!
//! Also not implemented: `?filter`, `?near`, `?node-meta`, peering (→ 501); namespaces
//! and partitions (`?ns` ignored); consistency modes beyond echoing them; agent caching;
//! ACL policies other than one management token; a second node or datacenter;
//! persistence. Unknown paths → 404 with an empty body, as Consul's mux answers.
//!
//! Test controls: `set_failure` (down, slow, 500), `restore_snapshot`, hand edits
//! (`set_key`, `delete_key`, `invalidate_session`) and inspection (`kv`, `kv_entry`,
//! `services`, `check_status`, `sessions`, `index`, `requests`) that bypass HTTP. For
//! timing claims (who could hold a lock when), `requests_at` gives each request's
//! arrival time and `acquisitions` the moment each lock was granted to a new holder
//! (through `?acquire` or a transaction's `lock`): a test can compare what the server
//! saw instead of what a client believed.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as Shared};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Consul's `kv_max_value_size` and `txn_max_req_len` defaults (raft's suggested size).
const MAX_VALUE_SIZE: usize = 512 * 1024;
/// agent/txn_endpoint.go `maxTxnOps`.
const MAX_TXN_OPS: usize = 128;
/// agent/structs `SessionTTLMax`, `SessionTTLMultiplier`, `MaxLockDelay`.
const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
const SESSION_TTL_MULTIPLIER: u32 = 2;
const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// agent/consul/rpc.go: blocking queries wait 5 minutes unless told, 10 at most.
const DEFAULT_QUERY_TIME: Duration = Duration::from_secs(300);
const MAX_QUERY_TIME: Duration = Duration::from_secs(600);
/// checks.MinInterval and the default probe timeout.
const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const SERF_HEALTH: &str = "serfHealth";
const NO_LEADER: &str = "No cluster leader";
const NODE_ADDRESS: &str = "127.0.0.1";
const PASSING: &str = "passing";
const WARNING: &str = "warning";
const CRITICAL: &str = "critical";
/// How often sessions, TTL checks, probes and the critical-service reaper are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(20);

/// How to start the stand-in.
#[derive(Debug, Clone)]
pub struct ConsulOptions {
    /// With a token, ACLs are on (`default_policy = deny`) and this is the only token
    /// that exists (a management token). Without, ACLs are off.
    pub acl_token: Option<String>,
    pub datacenter: String,
    pub node_name: String,
    /// Consul's `session_ttl_min` (10 s); tests may lower it, as a server's config can.
    pub session_ttl_min: Duration,
    /// The floor Consul puts under DeregisterCriticalServiceAfter (1 minute); tests may
    /// lower it.
    pub check_deregister_interval_min: Duration,
}

impl Default for ConsulOptions {
    fn default() -> ConsulOptions {
        ConsulOptions {
            acl_token: None,
            datacenter: "dc1".into(),
            node_name: "pointsman-test".into(),
            session_ttl_min: Duration::from_secs(10),
            check_deregister_interval_min: Duration::from_secs(60),
        }
    }
}

/// What the stand-in does to every request from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    None,
    /// Not listening: connections in progress are dropped and new ones refused. Setting
    /// anything else listens again on the same port, with the same data.
    Down,
    /// Every response is delayed this long.
    Slow(Duration),
    /// Every request answers 500 `No cluster leader`, as a server without quorum does.
    Error500,
}

/// A key as stored, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub flags: u64,
    pub session: Option<String>,
    pub lock_index: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A lock granted to a session that did not hold it, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquisition {
    /// When the server granted it (after any lock-delay had run out).
    pub at: Instant,
    pub key: String,
    pub session: String,
    pub lock_index: u64,
}

/// A service registered with the agent, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredService {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: i64,
    pub meta: BTreeMap<String, String>,
}

/// The running stand-in. Dropping it stops the server and drops its connections.
pub struct ConsulStandIn {
    inner: Arc<Inner>,
    address: SocketAddr,
    serving: Mutex<Option<Serving>>,
    sweeper: JoinHandle<()>,
}

impl ConsulStandIn {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start(options: ConsulOptions) -> ConsulStandIn {
        let inner = Arc::new(Inner::new(options));
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind 127.0.0.1:0");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let serving = serve(inner.clone(), listener);
        let sweeper = tokio::spawn({
            let inner = inner.clone();
            async move {
                let mut ticks = tokio::time::interval(SWEEP_EVERY);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    ticks.tick().await;
                    sweep(&inner);
                }
            }
        });
        ConsulStandIn {
            inner,
            address,
            serving: Mutex::new(Some(serving)),
            sweeper,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Changes how every request is treated. `Down` returns once the port is closed and
    /// the open connections are being dropped; leaving `Down` listens again first.
    pub async fn set_failure(&self, failure: Failure) {
        *lock(&self.inner.failure) = failure;
        if failure == Failure::Down {
            let taken = lock(&self.serving).take();
            if let Some(serving) = taken {
                serving.kill.send_replace(true);
                serving.task.abort();
                let _ = serving.task.await;
            }
            return;
        }
        if lock(&self.serving).is_some() {
            return;
        }
        // Killed connections may linger a moment on the port; SO_REUSEADDR and a few
        // tries cover that.
        let mut tries = 0;
        let listener = loop {
            match bind(self.address) {
                Ok(listener) => break listener,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!(error = %e, "consul stand-in: port still busy");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!(
                    "consul stand-in: cannot listen again on {}: {e}",
                    self.address
                ),
            }
        };
        *lock(&self.serving) = Some(serve(self.inner.clone(), listener));
    }

    /// The value of a key (an empty or null value is `Some(vec![])`).
    pub fn kv(&self, key: &str) -> Option<Vec<u8>> {
        let state = lock(&self.inner.state);
        state
            .kv
            .entries
            .get(key)
            .map(|e| e.value.clone().unwrap_or_default())
    }

    pub fn kv_string(&self, key: &str) -> Option<String> {
        self.kv(key)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    pub fn kv_entry(&self, key: &str) -> Option<KvEntry> {
        let state = lock(&self.inner.state);
        state.kv.entries.get(key).map(|e| KvEntry {
            key: e.key.clone(),
            value: e.value.clone(),
            flags: e.flags,
            session: (!e.session.is_empty()).then(|| e.session.clone()),
            lock_index: e.lock_index,
            create_index: e.create_index,
            modify_index: e.modify_index,
        })
    }

    /// Every key under a prefix, in order.
    pub fn kv_keys(&self, prefix: &str) -> Vec<String> {
        let state = lock(&self.inner.state);
        state
            .kv
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// A hand edit, as an operator's `consul kv put` would make it (keeps a lock holder).
    pub fn set_key(&self, key: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        let mut state = lock(&self.inner.state);
        let idx = state.next();
        let value = (!value.is_empty()).then(|| value.to_vec());
        state.kv.put(idx, Entry::new(key, value, 0), false);
        self.inner.notify(&state);
    }

    /// A hand delete, as an operator's `consul kv delete` would make it.
    pub fn delete_key(&self, key: &str) {
        let mut state = lock(&self.inner.state);
        let idx = state.next();
        state.kv.delete(idx, key);
        self.inner.notify(&state);
    }

    /// The Raft-like index: bumped by every write.
    pub fn index(&self) -> u64 {
        lock(&self.inner.state).index
    }

    /// The agent's registered services, by ID.
    pub fn services(&self) -> Vec<RegisteredService> {
        let state = lock(&self.inner.state);
        state
            .services
            .values()
            .map(|s| RegisteredService {
                id: s.id.clone(),
                name: s.name.clone(),
                tags: s.tags.clone(),
                address: s.address.clone(),
                port: s.port,
                meta: s.meta.clone(),
            })
            .collect()
    }

    /// "passing", "warning" or "critical".
    pub fn check_status(&self, check_id: &str) -> Option<String> {
        if check_id == SERF_HEALTH {
            return Some(PASSING.into());
        }
        let state = lock(&self.inner.state);
        state.checks.get(check_id).map(|c| c.status.clone())
    }

    pub fn check_output(&self, check_id: &str) -> Option<String> {
        let state = lock(&self.inner.state);
        state.checks.get(check_id).map(|c| c.output.clone())
    }

    /// IDs of the live sessions.
    pub fn sessions(&self) -> Vec<String> {
        lock(&self.inner.state).sessions.keys().cloned().collect()
    }

    /// Invalidates a session as the server does when its TTL or a check fails: held keys
    /// are released or deleted and get the lock delay. False if there was none.
    pub fn invalidate_session(&self, id: &str) -> bool {
        let mut state = lock(&self.inner.state);
        if !state.sessions.contains_key(id) {
            return false;
        }
        let idx = state.next();
        state.invalidate_session(idx, id, Instant::now());
        self.inner.notify(&state);
        true
    }

    /// Simulates a Raft snapshot restore of the same data on rebuilt servers: every
    /// index is renumbered from the start (so indexes go backwards wherever there was
    /// history), tombstones are gone, and every blocking query returns at once, as the
    /// state store's abandon channel makes it do. Clients must reset their index.
    pub fn restore_snapshot(&self) {
        let mut state = lock(&self.inner.state);
        state.restore();
        self.inner.notify(&state);
    }

    /// Every request received, in order: (method, path and query as sent).
    pub fn requests(&self) -> Vec<(String, String)> {
        lock(&self.inner.requests)
            .iter()
            .map(|(_, method, path)| (method.clone(), path.clone()))
            .collect()
    }

    /// As `requests`, each with the moment it arrived (before it was handled).
    pub fn requests_at(&self) -> Vec<(Instant, String, String)> {
        lock(&self.inner.requests).clone()
    }

    /// Every grant of `key`'s lock to a new holder, in order.
    pub fn acquisitions(&self, key: &str) -> Vec<Acquisition> {
        lock(&self.inner.state)
            .acquisitions
            .iter()
            .filter(|a| a.key == key)
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }
}

impl Drop for ConsulStandIn {
    fn drop(&mut self) {
        self.sweeper.abort();
        if let Some(serving) = lock(&self.serving).take() {
            serving.kill.send_replace(true);
            serving.task.abort();
        }
    }
}

/// reqwest is built with rustls but no crypto provider (see Cargo.toml): one must be
/// installed before any client is built, even one that only speaks plain HTTP. Tests
/// call this before building their own clients; installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not take the double down with it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------
// Listening, and dropping every connection on demand.
// ---------------------------------------------------------------------------------------

struct Serving {
    task: JoinHandle<()>,
    kill: watch::Sender<bool>,
}

fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

fn serve(inner: Arc<Inner>, listener: TcpListener) -> Serving {
    let (kill, killed) = watch::channel(false);
    let app = Router::new().fallback(handle).with_state(inner);
    let task = tokio::spawn(async move {
        let listener = KillableListener { listener, killed };
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "consul stand-in stopped serving");
        }
    });
    Serving { task, kill }
}

/// Hands out connections that fail all I/O once the kill switch flips, so hyper drops
/// them (and the requests in flight) the way a dying server would.
struct KillableListener {
    listener: TcpListener,
    killed: watch::Receiver<bool>,
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (KillableStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let mut killed = self.killed.clone();
                    let switch = Box::pin(async move {
                        // Resolves once the switch is on; never if the sender is gone
                        // without flipping it.
                        if killed.wait_for(|on| *on).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    });
                    return (
                        KillableStream {
                            stream,
                            switch,
                            dead: false,
                        },
                        peer,
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "consul stand-in: accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

struct KillableStream {
    stream: TcpStream,
    switch: Pin<Box<dyn Future<Output = ()> + Send>>,
    dead: bool,
}

impl KillableStream {
    fn killed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.dead && self.switch.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        self.dead
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "consul stand-in is down")
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------
// State.
// ---------------------------------------------------------------------------------------

struct Inner {
    options: ConsulOptions,
    node_id: String,
    state: Mutex<State>,
    /// The index after every change, for blocking readers.
    changes: watch::Sender<u64>,
    failure: Mutex<Failure>,
    /// (arrival, method, path and query).
    requests: Mutex<Vec<(Instant, String, String)>>,
    probes: reqwest::Client,
}

impl Inner {
    fn new(options: ConsulOptions) -> Inner {
        install_crypto_provider();
        let state = State {
            // The node and its serfHealth check were registered at index 1.
            index: 1,
            ..State::default()
        };
        Inner {
            options,
            node_id: new_uuid(),
            state: Mutex::new(state),
            changes: watch::channel(1).0,
            failure: Mutex::new(Failure::None),
            requests: Mutex::new(Vec::new()),
            probes: reqwest::Client::new(),
        }
    }

    fn notify(&self, state: &State) {
        self.changes.send_replace(state.index);
    }

    fn resolve(&self, ctx: &Ctx) -> Result<Access, Refused> {
        let Some(configured) = &self.options.acl_token else {
            return Ok(Access::Full);
        };
        let token = ctx.token();
        if token.is_empty() {
            Ok(Access::Anonymous)
        } else if &token == configured {
            Ok(Access::Full)
        } else {
            Err(Box::new(text(403, "ACL not found")))
        }
    }

    fn check_dc(&self, ctx: &Ctx) -> Result<(), Refused> {
        let dc = ctx.get("dc");
        if !dc.is_empty() && dc != self.options.datacenter {
            return Err(Box::new(text(500, "No path to datacenter")));
        }
        Ok(())
    }

    /// agent/consul/rpc.go blockingQuery: without `?index` answer at once; otherwise
    /// answer as soon as what `compute` watches has changed and its index passed the
    /// client's, or when the wait runs out.
    async fn block<T, F>(&self, opts: &QueryOpts, mut compute: F) -> (u64, T)
    where
        F: FnMut(&State) -> (u64, Fingerprint, T),
    {
        let mut changes = self.changes.subscribe();
        let ((index, mut seen, value), restores) = {
            let state = lock(&self.state);
            (compute(&state), state.restores)
        };
        if opts.min_index == 0 || index > opts.min_index {
            return (index, value);
        }
        drop(value);
        let deadline = Instant::now() + opts.wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    let (index, _, value) = compute(&lock(&self.state));
                    return (index, value);
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep_until(deadline).await;
                    }
                }
            }
            let ((index, fingerprint, value), restored) = {
                let state = lock(&self.state);
                (compute(&state), state.restores != restores)
            };
            if restored {
                return (index, value);
            }
            if fingerprint != seen {
                seen = fingerprint;
                if index > opts.min_index {
                    return (index, value);
                }
            }
        }
    }

    fn node_json(&self) -> Value {
        json!({
            "ID": self.node_id,
            "Node": self.options.node_name,
            "Address": NODE_ADDRESS,
            "Datacenter": self.options.datacenter,
            "TaggedAddresses": tagged_addresses(),
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": 1,
            "ModifyIndex": 1,
        })
    }

    fn serf_check_json(&self) -> Value {
        json!({
            "Node": self.options.node_name,
            "CheckID": SERF_HEALTH,
            "Name": "Serf Health Status",
            "Status": PASSING,
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "Interval": "",
            "Timeout": "",
            "ExposedPort": 0,
            "Definition": {},
            "CreateIndex": 1,
            "ModifyIndex": 1,
        })
    }

    fn check_json(&self, check: &Check, service_tags: &[String]) -> Value {
        let (kind, interval, timeout) = match &check.probe {
            Probe::Ttl(_) => ("ttl", String::new(), String::new()),
            Probe::Http {
                interval, timeout, ..
            } => ("http", go_duration(*interval), go_duration(*timeout)),
            Probe::Tcp {
                interval, timeout, ..
            } => ("tcp", go_duration(*interval), go_duration(*timeout)),
        };
        json!({
            "Node": self.options.node_name,
            "CheckID": check.id,
            "Name": check.name,
            "Status": check.status,
            "Notes": check.notes,
            "Output": check.output,
            "ServiceID": check.service_id,
            "ServiceName": check.service_name,
            "ServiceTags": service_tags,
            "Type": kind,
            "Interval": interval,
            "Timeout": timeout,
            "ExposedPort": 0,
            "Definition": {},
            "CreateIndex": check.create_index,
            "ModifyIndex": check.modify_index,
        })
    }
}

fn tagged_addresses() -> Value {
    json!({
        "lan": NODE_ADDRESS,
        "lan_ipv4": NODE_ADDRESS,
        "wan": NODE_ADDRESS,
        "wan_ipv4": NODE_ADDRESS,
    })
}

/// A refusal, boxed: a Response is too big to travel in every Result.
type Refused = Box<Response>;

/// What a blocking reader watches; a change of it (not of the index alone) wakes it.
type Fingerprint = (u64, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// ACLs off, or the management token.
    Full,
    /// No token while ACLs are on: Consul's anonymous token, allowed nothing.
    Anonymous,
}

#[derive(Default)]
struct State {
    index: u64,
    kv: Kv,
    lock_delay: HashMap<String, Instant>,
    sessions: BTreeMap<String, Session>,
    services: BTreeMap<String, Service>,
    checks: BTreeMap<String, Check>,
    /// Per lower-cased service name: the catalog index of that service (registrations,
    /// deregistrations and health changes), as Consul's `service.<name>` index.
    service_index: HashMap<String, u64>,
    services_table: u64,
    /// When the last instance of some service went away (`service_last_extinction`).
    extinction: u64,
    generation: u64,
    /// Bumped by every simulated snapshot restore.
    restores: u64,
    /// Locks granted to new holders (inspection only; Consul keeps no such log).
    acquisitions: Vec<Acquisition>,
}

impl State {
    /// Every Raft apply takes the next index, whether or not it changes a table.
    fn next(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn invalidate_session(&mut self, idx: u64, id: &str, now: Instant) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        let delay = session.lock_delay.min(MAX_LOCK_DELAY);
        let held: Vec<Entry> = self
            .kv
            .entries
            .values()
            .filter(|e| e.session == id)
            .cloned()
            .collect();
        for entry in held {
            if session.behavior == "delete" {
                self.kv.delete(idx, &entry.key);
            } else {
                let mut released = entry.clone();
                released.session.clear();
                self.kv.put(idx, released, true);
            }
            if !delay.is_zero() {
                self.lock_delay.insert(entry.key.clone(), now + delay);
            }
        }
    }

    /// Records the locks on `keys` that changed hands from `before` to now.
    fn note_acquisitions<'a>(
        &mut self,
        before: &Kv,
        keys: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) {
        for key in keys {
            let Some(entry) = self.kv.entries.get(key) else {
                continue;
            };
            let held_before = before.entries.get(key).map(|e| e.session.as_str());
            if !entry.session.is_empty() && held_before != Some(entry.session.as_str()) {
                self.acquisitions.push(Acquisition {
                    at: now,
                    key: key.to_owned(),
                    session: entry.session.clone(),
                    lock_index: entry.lock_index,
                });
            }
        }
    }

    /// A check that went critical or away takes its sessions with it.
    fn invalidate_sessions_of_check(&mut self, idx: u64, check_id: &str, now: Instant) {
        let doomed: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                s.node_checks.iter().any(|c| c == check_id)
                    || s.service_checks.iter().any(|c| c == check_id)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in doomed {
            self.invalidate_session(idx, &id, now);
        }
    }

    fn bump_service(&mut self, name: &str, idx: u64) {
        self.service_index.insert(name.to_ascii_lowercase(), idx);
        self.services_table = idx;
    }

    /// Sets a check's status and output. Only a status change reaches the catalog (an
    /// output change alone waits for Consul's check_update_interval).
    fn update_check(&mut self, id: &str, status: &str, output: String, now: Instant) {
        let Some(check) = self.checks.get_mut(id) else {
            return;
        };
        check.output = output;
        if check.status == status {
            return;
        }
        let idx = self.next();
        let check = self.checks.get_mut(id).expect("looked up above");
        check.status = status.to_owned();
        check.modify_index = idx;
        check.critical_since = (status == CRITICAL).then_some(now);
        let service = check.service_name.clone();
        if !service.is_empty() {
            self.bump_service(&service, idx);
        }
        if status == CRITICAL {
            self.invalidate_sessions_of_check(idx, id, now);
        }
    }

    fn remove_service(&mut self, id: &str, now: Instant) -> bool {
        let Some(service) = self.services.remove(id) else {
            return false;
        };
        let idx = self.next();
        let checks: Vec<String> = self
            .checks
            .values()
            .filter(|c| c.service_id == id)
            .map(|c| c.id.clone())
            .collect();
        for check in checks {
            self.checks.remove(&check);
            self.invalidate_sessions_of_check(idx, &check, now);
        }
        self.bump_service(&service.name, idx);
        if !self
            .services
            .values()
            .any(|s| s.name.eq_ignore_ascii_case(&service.name))
        {
            self.extinction = idx;
        }
        true
    }

    fn register_service(&mut self, def: ServiceDef, replace_existing_checks: bool, now: Instant) {
        let idx = self.next();
        let mut changed = false;
        let mut service = def.service;
        match self.services.get(&service.id) {
            Some(old) if old.same_definition(&service) => {
                service.create_index = old.create_index;
                service.modify_index = old.modify_index;
            }
            Some(old) => {
                service.create_index = old.create_index;
                service.modify_index = idx;
                let old_name = old.name.clone();
                if !old_name.eq_ignore_ascii_case(&service.name) {
                    self.bump_service(&old_name, idx);
                }
                changed = true;
            }
            None => {
                service.create_index = idx;
                service.modify_index = idx;
                changed = true;
            }
        }

        let several = def.checks.len() > 1;
        let mut wanted = Vec::new();
        for (i, check_def) in def.checks.into_iter().enumerate() {
            let id = if check_def.id.is_empty() {
                let mut id = format!("service:{}", service.id);
                if several {
                    id.push_str(&format!(":{}", i + 1));
                }
                id
            } else {
                check_def.id.clone()
            };
            wanted.push(id.clone());
            let name = if check_def.name.is_empty() {
                format!("Service '{}' check", service.name)
            } else {
                check_def.name.clone()
            };
            self.generation += 1;
            let previous = self.checks.get(&id);
            // agent.go addServiceLocked: a re-registered check keeps its status and
            // output (checkStateSnapshot); a new one starts as told, or critical.
            let (status, output, critical_since, create_index) = match previous {
                Some(p) => (
                    p.status.clone(),
                    p.output.clone(),
                    p.critical_since,
                    p.create_index,
                ),
                None => {
                    let status = if check_def.status.is_empty() {
                        CRITICAL.to_owned()
                    } else {
                        check_def.status.clone()
                    };
                    let since = (status == CRITICAL).then_some(now);
                    changed = true;
                    (status, String::new(), since, idx)
                }
            };
            let probe = check_def.probe();
            let (ttl_expires, next_run) = match &probe {
                Probe::Ttl(ttl) => (Some(now + *ttl), None),
                _ => (None, Some(now)),
            };
            let check = Check {
                id: id.clone(),
                name,
                status,
                notes: check_def.notes.clone(),
                output,
                service_id: service.id.clone(),
                service_name: service.name.clone(),
                probe,
                deregister_after: check_def.deregister_after,
                critical_since,
                ttl_expires,
                next_run,
                running: false,
                generation: self.generation,
                create_index,
                modify_index: previous.map_or(idx, |p| p.modify_index),
            };
            self.checks.insert(id, check);
        }
        if replace_existing_checks {
            let stale: Vec<String> = self
                .checks
                .values()
                .filter(|c| c.service_id == service.id && !wanted.contains(&c.id))
                .map(|c| c.id.clone())
                .collect();
            for id in stale {
                self.checks.remove(&id);
                self.invalidate_sessions_of_check(idx, &id, now);
                changed = true;
            }
        }
        let name = service.name.clone();
        self.services.insert(service.id.clone(), service);
        if changed {
            self.bump_service(&name, idx);
        }
    }

    /// Renumbers everything compactly from index 1 (see `restore_snapshot`).
    fn restore(&mut self) {
        let mut next = 1;
        let mut take = || {
            next += 1;
            next
        };
        let mut entries: Vec<&mut Entry> = self.kv.entries.values_mut().collect();
        entries.sort_by_key(|e| e.modify_index);
        let mut kv_table = 0;
        for entry in entries {
            let idx = take();
            entry.create_index = idx;
            entry.modify_index = idx;
            kv_table = idx;
        }
        self.kv.table_index = kv_table;
        self.kv.tombstones.clear();
        for session in self.sessions.values_mut() {
            session.create_index = take();
        }
        self.service_index.clear();
        self.services_table = 0;
        self.extinction = 0;
        for service in self.services.values_mut() {
            let idx = take();
            service.create_index = idx;
            service.modify_index = idx;
            self.service_index
                .insert(service.name.to_ascii_lowercase(), idx);
            self.services_table = idx;
        }
        for check in self.checks.values_mut() {
            let idx = take();
            check.create_index = idx;
            check.modify_index = idx;
            if let Some(service) = self.services.get(&check.service_id) {
                self.service_index
                    .insert(service.name.to_ascii_lowercase(), idx);
            }
            self.services_table = idx;
        }
        self.index = next;
        self.restores += 1;
    }

    /// agent/consul/state/catalog.go maxIndexForService.
    fn service_query_index(&self, name: &str) -> u64 {
        let exists = self
            .services
            .values()
            .any(|s| s.name.eq_ignore_ascii_case(name));
        let index = if !exists && self.extinction > 0 {
            self.extinction
        } else if let Some(i) = self.service_index.get(&name.to_ascii_lowercase()) {
            *i
        } else {
            self.services_table
        };
        index.max(1)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: Option<Vec<u8>>,
    flags: u64,
    session: String,
    lock_index: u64,
    create_index: u64,
    modify_index: u64,
}

impl Entry {
    fn new(key: &str, value: Option<Vec<u8>>, flags: u64) -> Entry {
        Entry {
            key: key.to_owned(),
            value,
            flags,
            session: String::new(),
            lock_index: 0,
            create_index: 0,
            modify_index: 0,
        }
    }

    /// structs.DirEntry.Equal (nil and empty values are equal, as bytes.Equal has it).
    fn same(&self, other: &Entry) -> bool {
        let bytes = |v: &Option<Vec<u8>>| v.clone().unwrap_or_default();
        self.lock_index == other.lock_index
            && self.key == other.key
            && self.flags == other.flags
            && bytes(&self.value) == bytes(&other.value)
            && self.session == other.session
    }

    fn json(&self, with_value: bool) -> Value {
        let mut m = Map::new();
        m.insert("LockIndex".into(), json!(self.lock_index));
        m.insert("Key".into(), json!(self.key));
        m.insert("Flags".into(), json!(self.flags));
        let value = match (&self.value, with_value) {
            (Some(v), true) => json!(BASE64.encode(v)),
            _ => Value::Null,
        };
        m.insert("Value".into(), value);
        if !self.session.is_empty() {
            m.insert("Session".into(), json!(self.session));
        }
        m.insert("CreateIndex".into(), json!(self.create_index));
        m.insert("ModifyIndex".into(), json!(self.modify_index));
        Value::Object(m)
    }
}

/// The KV table, its index and its tombstones: what a transaction works on a copy of.
#[derive(Clone, Default)]
struct Kv {
    entries: BTreeMap<String, Entry>,
    /// Max index of the kvs and tombstones tables.
    table_index: u64,
    tombstones: BTreeMap<String, u64>,
}

impl Kv {
    /// kvsSetTxn: keeps CreateIndex, keeps the lock holder unless `update_session`, and
    /// does not touch an entry that would not change.
    fn put(&mut self, idx: u64, mut entry: Entry, update_session: bool) -> Entry {
        let existing = self.entries.get(&entry.key);
        entry.create_index = existing.map_or(idx, |e| e.create_index);
        if !update_session {
            entry.session = existing.map(|e| e.session.clone()).unwrap_or_default();
        }
        if let Some(existing) = existing {
            if existing.same(&entry) {
                entry.modify_index = existing.modify_index;
                return entry;
            }
        }
        entry.modify_index = idx;
        self.entries.insert(entry.key.clone(), entry.clone());
        self.table_index = idx;
        entry
    }

    fn delete(&mut self, idx: u64, key: &str) {
        if self.entries.remove(key).is_some() {
            self.tombstones.insert(key.to_owned(), idx);
            self.table_index = idx;
        }
    }

    fn delete_tree(&mut self, idx: u64, prefix: &str) {
        let keys: Vec<String> = self
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for key in keys {
            self.delete(idx, &key);
        }
    }

    /// kvsSetCASTxn: 0 means "only if absent".
    fn cas(&mut self, idx: u64, entry: Entry, cas: u64) -> Option<Entry> {
        match (cas, self.entries.get(&entry.key)) {
            (0, Some(_)) => None,
            (n, None) if n != 0 => None,
            (n, Some(e)) if n != 0 && e.modify_index != n => None,
            _ => Some(self.put(idx, entry, false)),
        }
    }

    /// kvsDeleteCASTxn: a missing key counts as deleted.
    fn delete_cas(&mut self, idx: u64, key: &str, cas: u64) -> bool {
        match self.entries.get(key) {
            None => true,
            Some(e) if e.modify_index != cas => false,
            Some(_) => {
                self.delete(idx, key);
                true
            }
        }
    }

    /// kvsLockTxn.
    fn lock(
        &mut self,
        idx: u64,
        mut entry: Entry,
        session_exists: bool,
    ) -> Result<Option<Entry>, String> {
        if entry.session.is_empty() {
            return Err("missing session".into());
        }
        if !session_exists {
            return Err(format!("invalid session {:?}", entry.session));
        }
        match self.entries.get(&entry.key) {
            Some(e) if e.session == entry.session => entry.lock_index = e.lock_index,
            Some(e) if !e.session.is_empty() => return Ok(None),
            Some(e) => entry.lock_index = e.lock_index + 1,
            None => entry.lock_index = 1,
        }
        Ok(Some(self.put(idx, entry, true)))
    }

    /// kvsUnlockTxn.
    fn unlock(&mut self, idx: u64, mut entry: Entry) -> Result<Option<Entry>, String> {
        if entry.session.is_empty() {
            return Err("missing session".into());
        }
        let Some(existing) = self.entries.get(&entry.key) else {
            return Ok(None);
        };
        if existing.session != entry.session {
            return Ok(None);
        }
        entry.session.clear();
        entry.lock_index = existing.lock_index;
        Ok(Some(self.put(idx, entry, true)))
    }

    /// kvsListTxn: the entries under a prefix and the index a reader gets for them.
    fn list(&self, prefix: &str) -> (u64, Vec<Entry>) {
        let entries: Vec<Entry> = self
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect();
        let lindex = if prefix.is_empty() {
            self.table_index
        } else {
            let live = entries.iter().map(|e| e.modify_index).max().unwrap_or(0);
            let dead = self
                .tombstones
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, i)| *i)
                .max()
                .unwrap_or(0);
            live.max(dead)
        };
        let index = if lindex != 0 {
            lindex
        } else {
            self.table_index
        };
        (index.max(1), entries)
    }
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    name: String,
    node: String,
    lock_delay: Duration,
    behavior: String,
    ttl: String,
    ttl_duration: Duration,
    node_checks: Vec<String>,
    service_checks: Vec<String>,
    create_index: u64,
    expires: Option<Instant>,
}

impl Session {
    fn json(&self) -> Value {
        let service_checks = if self.service_checks.is_empty() {
            Value::Null
        } else {
            Value::Array(
                self.service_checks
                    .iter()
                    .map(|id| json!({"ID": id, "Namespace": ""}))
                    .collect(),
            )
        };
        json!({
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": self.lock_delay.as_nanos() as u64,
            "Behavior": self.behavior,
            "TTL": self.ttl,
            "NodeChecks": self.node_checks,
            "ServiceChecks": service_checks,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.create_index,
        })
    }

    /// The server's timer: TTL × SessionTTLMultiplier from the last renewal.
    fn renewed(&mut self, now: Instant) {
        if !self.ttl_duration.is_zero() {
            self.expires = Some(now + self.ttl_duration * SESSION_TTL_MULTIPLIER);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Service {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: i64,
    meta: BTreeMap<String, String>,
    enable_tag_override: bool,
    weights: (i64, i64),
    create_index: u64,
    modify_index: u64,
}

impl Service {
    fn same_definition(&self, other: &Service) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.tags == other.tags
            && self.address == other.address
            && self.port == other.port
            && self.meta == other.meta
            && self.enable_tag_override == other.enable_tag_override
            && self.weights == other.weights
    }

    fn has_tags(&self, tags: &[&str]) -> bool {
        tags.iter()
            .all(|t| self.tags.iter().any(|own| own.eq_ignore_ascii_case(t)))
    }

    fn weights_json(&self) -> Value {
        json!({"Passing": self.weights.0, "Warning": self.weights.1})
    }

    fn agent_json(&self, datacenter: &str) -> Value {
        json!({
            "ID": self.id,
            "Service": self.name,
            "Tags": self.tags,
            "Meta": self.meta,
            "Port": self.port,
            "Address": self.address,
            "Weights": self.weights_json(),
            "EnableTagOverride": self.enable_tag_override,
            "Datacenter": datacenter,
        })
    }
}

#[derive(Debug, Clone)]
enum Probe {
    Ttl(Duration),
    Http {
        url: String,
        method: String,
        headers: Vec<(String, String)>,
        body: String,
        interval: Duration,
        timeout: Duration,
    },
    Tcp {
        address: String,
        interval: Duration,
        timeout: Duration,
    },
}

impl Probe {
    fn interval(&self) -> Option<Duration> {
        match self {
            Probe::Ttl(_) => None,
            Probe::Http { interval, .. } | Probe::Tcp { interval, .. } => Some(*interval),
        }
    }
}

#[derive(Debug, Clone)]
struct Check {
    id: String,
    name: String,
    status: String,
    notes: String,
    output: String,
    service_id: String,
    service_name: String,
    probe: Probe,
    deregister_after: Option<Duration>,
    critical_since: Option<Instant>,
    ttl_expires: Option<Instant>,
    next_run: Option<Instant>,
    running: bool,
    generation: u64,
    create_index: u64,
    modify_index: u64,
}

// ---------------------------------------------------------------------------------------
// The server's clock: session expiry, TTL checks, probes, the critical-service reaper.
// ---------------------------------------------------------------------------------------

fn sweep(inner: &Arc<Inner>) {
    let now = Instant::now();
    let mut probes = Vec::new();
    {
        let mut state = lock(&inner.state);
        let before = state.index;

        let expired: Vec<String> = state
            .sessions
            .values()
            .filter(|s| s.expires.is_some_and(|at| at <= now))
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            let idx = state.next();
            state.invalidate_session(idx, &id, now);
        }

        let lapsed: Vec<(String, String)> = state
            .checks
            .values()
            .filter(|c| c.ttl_expires.is_some_and(|at| at <= now))
            .map(|c| (c.id.clone(), c.output.clone()))
            .collect();
        for (id, last) in lapsed {
            if let Some(check) = state.checks.get_mut(&id) {
                check.ttl_expires = None;
            }
            // checks/check.go CheckTTL.getExpiredOutput
            let output = if last.is_empty() {
                "TTL expired".to_owned()
            } else {
                format!("TTL expired (last output before timeout follows): {last}")
            };
            state.update_check(&id, CRITICAL, output, now);
        }

        for check in state.checks.values_mut() {
            if !check.running && check.next_run.is_some_and(|at| at <= now) {
                check.running = true;
                probes.push((check.id.clone(), check.generation, check.probe.clone()));
            }
        }

        let floor = inner.options.check_deregister_interval_min;
        let reap: Vec<String> = state
            .checks
            .values()
            .filter(|c| {
                matches!((c.deregister_after, c.critical_since),
                    (Some(after), Some(since)) if now >= since + after.max(floor))
            })
            .map(|c| c.service_id.clone())
            .collect();
        for service in reap {
            state.remove_service(&service, now);
        }

        if state.index != before {
            inner.notify(&state);
        }
    }
    for (id, generation, probe) in probes {
        tokio::spawn(run_probe(inner.clone(), id, generation, probe));
    }
}

/// checks/check.go CheckHTTP and CheckTCP: 2xx passing, 429 warning, anything else or
/// no answer critical; a TCP connect that succeeds is passing.
async fn run_probe(inner: Arc<Inner>, id: String, generation: u64, probe: Probe) {
    let (status, output) = match &probe {
        Probe::Ttl(_) => return,
        Probe::Http {
            url,
            method,
            headers,
            body,
            timeout,
            ..
        } => {
            let verb =
                reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
            let mut request = inner
                .probes
                .request(verb, url)
                .timeout(*timeout)
                .header("User-Agent", "Consul Health Check")
                .header("Accept", "text/plain, text/*, */*");
            for (name, value) in headers {
                request = request.header(name.as_str(), value.as_str());
            }
            if !body.is_empty() {
                request = request.body(body.clone());
            }
            match request.send().await {
                Ok(response) => {
                    let code = response.status();
                    let mut text = response.text().await.unwrap_or_default();
                    text.truncate(4096);
                    let output = format!("HTTP {method} {url}: {code} Output: {text}");
                    let status = if code.is_success() {
                        PASSING
                    } else if code.as_u16() == 429 {
                        WARNING
                    } else {
                        CRITICAL
                    };
                    (status, output)
                }
                Err(e) => (CRITICAL, format!("{method} {url:?}: {e}")),
            }
        }
        Probe::Tcp {
            address, timeout, ..
        } => match tokio::time::timeout(*timeout, TcpStream::connect(address.as_str())).await {
            Ok(Ok(_)) => (PASSING, format!("TCP connect {address}: Success")),
            Ok(Err(e)) => (CRITICAL, format!("dial tcp {address}: {e}")),
            Err(_) => (CRITICAL, format!("dial tcp {address}: i/o timeout")),
        },
    };
    let now = Instant::now();
    let mut state = lock(&inner.state);
    let before = state.index;
    match state.checks.get_mut(&id) {
        Some(check) if check.generation == generation => {
            check.running = false;
            check.next_run = probe.interval().map(|every| now + every);
        }
        _ => return,
    }
    state.update_check(&id, status, output, now);
    if state.index != before {
        inner.notify(&state);
    }
}

// ---------------------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------------------

/// A request as Consul's handlers see it: the path decoded, the query as url.Values.
struct Ctx {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl Ctx {
    fn new(method: Method, uri: &Uri, headers: HeaderMap, body: Bytes) -> Ctx {
        Ctx {
            method,
            path: percent_decode(uri.path(), false),
            query: parse_query(uri.query().unwrap_or("")),
            headers,
            body,
        }
    }

    fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }

    /// url.Values.Get: the first value, or "".
    fn get(&self, name: &str) -> &str {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// agent/http.go parseToken: `?token`, then X-Consul-Token, then a Bearer token.
    fn token(&self) -> String {
        let query = self.get("token");
        if !query.is_empty() {
            return query.to_owned();
        }
        let header = |name: &str| {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let consul = header("X-Consul-Token");
        if !consul.is_empty() {
            return consul;
        }
        let authorization = header("Authorization");
        let parts: Vec<&str> = authorization.split(' ').collect();
        if parts.len() == 2 && parts[0].eq_ignore_ascii_case("bearer") {
            return parts[1].trim().to_owned();
        }
        String::new()
    }
}

async fn handle(Shared(inner): Shared<Arc<Inner>>, request: Request) -> Response {
    let path_and_query = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    );
    lock(&inner.requests).push((
        Instant::now(),
        request.method().as_str().to_owned(),
        path_and_query,
    ));
    let failure = *lock(&inner.failure);
    match failure {
        Failure::Slow(delay) => tokio::time::sleep(delay).await,
        Failure::Error500 => return text(500, NO_LEADER),
        Failure::None | Failure::Down => {}
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(body) => body,
        Err(_) => return text(413, "http: request body too large"),
    };
    let ctx = Ctx::new(parts.method, &parts.uri, parts.headers, body);
    route(&inner, &ctx).await
}

async fn route(inner: &Inner, ctx: &Ctx) -> Response {
    let path = ctx.path.as_str();
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return kv_endpoint(inner, ctx, key).await;
    }
    if let Some(id) = path.strip_prefix("/v1/session/renew/") {
        return only(ctx, &[Method::PUT]).unwrap_or_else(|| session_renew(inner, ctx, id));
    }
    if let Some(id) = path.strip_prefix("/v1/session/destroy/") {
        return only(ctx, &[Method::PUT]).unwrap_or_else(|| session_destroy(inner, ctx, id));
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        return only(ctx, &[Method::PUT]).unwrap_or_else(|| agent_deregister(inner, ctx, id));
    }
    for (prefix, status) in [
        ("/v1/agent/check/pass/", PASSING),
        ("/v1/agent/check/warn/", WARNING),
        ("/v1/agent/check/fail/", CRITICAL),
    ] {
        if let Some(id) = path.strip_prefix(prefix) {
            return only(ctx, &[Method::PUT])
                .unwrap_or_else(|| agent_check_update(inner, ctx, id, status));
        }
    }
    if let Some(name) = path.strip_prefix("/v1/catalog/service/") {
        if let Some(refused) = only(ctx, &[Method::GET]) {
            return refused;
        }
        return service_nodes(inner, ctx, name, false).await;
    }
    if let Some(name) = path.strip_prefix("/v1/health/service/") {
        if let Some(refused) = only(ctx, &[Method::GET]) {
            return refused;
        }
        return service_nodes(inner, ctx, name, true).await;
    }
    match path {
        "/v1/txn" => only(ctx, &[Method::PUT]).unwrap_or_else(|| txn(inner, ctx)),
        "/v1/session/create" => {
            only(ctx, &[Method::PUT]).unwrap_or_else(|| session_create(inner, ctx))
        }
        "/v1/agent/service/register" => {
            only(ctx, &[Method::PUT]).unwrap_or_else(|| agent_register(inner, ctx))
        }
        "/v1/agent/services" => {
            only(ctx, &[Method::GET]).unwrap_or_else(|| agent_services(inner, ctx))
        }
        "/v1/agent/checks" => only(ctx, &[Method::GET]).unwrap_or_else(|| agent_checks(inner, ctx)),
        "/v1/status/leader" => only(ctx, &[Method::GET])
            .unwrap_or_else(|| json_response(200, &json!("127.0.0.1:8300"))),
        // http.ServeMux's fallback for paths nobody registered.
        _ => empty(404),
    }
}

/// agent/http.go: 405 with an Allow header for a method the endpoint does not take.
fn only(ctx: &Ctx, allowed: &[Method]) -> Option<Response> {
    if allowed.contains(&ctx.method) {
        return None;
    }
    let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let mut response = text(405, format!("method {} not allowed", ctx.method));
    if let Ok(value) = HeaderValue::from_str(&allow.join(",")) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    Some(response)
}

/// Query options every read parses first (agent/http.go parse).
struct QueryOpts {
    min_index: u64,
    wait: Duration,
    consistency: &'static str,
}

fn query_opts(ctx: &Ctx) -> Result<QueryOpts, Refused> {
    let stale = ctx.has("stale");
    let consistent = ctx.has("consistent");
    if stale && consistent {
        return Err(Box::new(text(
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        )));
    }
    let mut wait = DEFAULT_QUERY_TIME;
    let raw_wait = ctx.get("wait");
    if !raw_wait.is_empty() {
        let nanos =
            parse_go_duration(raw_wait).map_err(|_| Box::new(text(400, "Invalid wait time")))?;
        wait = if nanos <= 0 {
            DEFAULT_QUERY_TIME
        } else {
            Duration::from_nanos(nanos as u64).min(MAX_QUERY_TIME)
        };
    }
    let mut min_index = 0;
    let raw_index = ctx.get("index");
    if !raw_index.is_empty() {
        min_index = raw_index
            .parse::<u64>()
            .map_err(|_| Box::new(text(400, "Invalid index")))?;
    }
    let consistency = if stale {
        "stale"
    } else if consistent {
        "consistent"
    } else {
        "leader"
    };
    Ok(QueryOpts {
        min_index,
        wait,
        consistency,
    })
}

// ---------------------------------------------------------------------------------------
// KV.
// ---------------------------------------------------------------------------------------

async fn kv_endpoint(inner: &Inner, ctx: &Ctx, key: &str) -> Response {
    let opts = match query_opts(ctx) {
        Ok(opts) => opts,
        Err(refused) => return *refused,
    };
    if ctx.path.contains("../") || ctx.path.contains("..\\") {
        return text(400, "URL path contains invalid traversal sequence");
    }
    if !key.is_empty() {
        if let Err(e) = validate_key(key) {
            return text(400, e);
        }
    }
    match ctx.method {
        Method::GET if ctx.has("keys") => kv_keys(inner, ctx, key, &opts).await,
        Method::GET => kv_get(inner, ctx, key, &opts).await,
        Method::PUT => kv_put(inner, ctx, key),
        Method::DELETE => kv_delete(inner, ctx, key),
        _ => only(ctx, &[Method::GET, Method::PUT, Method::DELETE]).unwrap_or_else(|| empty(405)),
    }
}

async fn kv_get(inner: &Inner, ctx: &Ctx, key: &str, opts: &QueryOpts) -> Response {
    let recurse = ctx.has("recurse");
    if !recurse && key.is_empty() {
        return text(400, "Missing key name");
    }
    if let Err(refused) = inner.check_dc(ctx) {
        return *refused;
    }
    let access = match inner.resolve(ctx) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    if !recurse && access == Access::Anonymous {
        return denied("key", "read", key);
    }
    let (index, entries) = inner
        .block(opts, |state| {
            if recurse {
                let (index, mut entries) = state.kv.list(key);
                if access == Access::Anonymous {
                    entries.clear();
                }
                (index, (index, 0), entries)
            } else {
                let entry = state.kv.entries.get(key).cloned();
                let tombstone = state.kv.tombstones.get(key).copied().unwrap_or(0);
                let modify = entry.as_ref().map_or(0, |e| e.modify_index);
                let index = entry
                    .as_ref()
                    .map_or(state.kv.table_index.max(1), |e| e.modify_index);
                (index, (modify, tombstone), entry.into_iter().collect())
            }
        })
        .await;
    if entries.is_empty() {
        return with_meta(empty(404), index, opts);
    }
    if !recurse && ctx.has("raw") {
        let value = entries[0].value.clone().unwrap_or_default();
        let mut response = Response::new(Body::from(value));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
        return with_meta(response, index, opts);
    }
    let body = Value::Array(entries.iter().map(|e| e.json(true)).collect());
    with_meta(json_response(200, &body), index, opts)
}

async fn kv_keys(inner: &Inner, ctx: &Ctx, prefix: &str, opts: &QueryOpts) -> Response {
    if let Err(refused) = inner.check_dc(ctx) {
        return *refused;
    }
    let access = match inner.resolve(ctx) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    // The historic misspelling is still read; the right spelling wins.
    let separator = if ctx.has("separator") {
        ctx.get("separator")
    } else {
        ctx.get("seperator")
    };
    let (index, keys) = inner
        .block(opts, |state| {
            let (index, entries) = state.kv.list(prefix);
            let mut keys: Vec<String> = Vec::new();
            if access == Access::Full {
                for entry in &entries {
                    if separator.is_empty() {
                        keys.push(entry.key.clone());
                        continue;
                    }
                    let after = &entry.key[prefix.len()..];
                    match after.find(separator) {
                        Some(at) => {
                            let key = entry.key[..prefix.len() + at + separator.len()].to_owned();
                            if !keys.contains(&key) {
                                keys.push(key);
                            }
                        }
                        None => keys.push(entry.key.clone()),
                    }
                }
            }
            (index, (index, 0), keys)
        })
        .await;
    if keys.is_empty() && !prefix.is_empty() {
        return with_meta(empty(404), index, opts);
    }
    with_meta(json_response(200, &json!(keys)), index, opts)
}

fn kv_put(inner: &Inner, ctx: &Ctx, key: &str) -> Response {
    if key.is_empty() {
        return text(400, "Missing key name");
    }
    if let Some(refused) = conflicting(ctx, &["cas", "acquire", "release"]) {
        return refused;
    }
    let flags = if ctx.has("flags") {
        match parse_uint(ctx.get("flags")) {
            Ok(flags) => flags,
            Err(e) => return text(500, e),
        }
    } else {
        0
    };
    let cas = if ctx.has("cas") {
        match parse_uint(ctx.get("cas")) {
            Ok(cas) => Some(cas),
            Err(e) => return text(500, e),
        }
    } else {
        None
    };
    if ctx.body.len() > MAX_VALUE_SIZE {
        return text(
            413,
            format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See {}.",
                ctx.body.len(),
                "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size"
            ),
        );
    }
    if let Err(refused) = inner.check_dc(ctx) {
        return *refused;
    }
    match inner.resolve(ctx) {
        Ok(Access::Full) => {}
        Ok(Access::Anonymous) => return denied("key", "write", key),
        Err(refused) => return *refused,
    }
    let value = (!ctx.body.is_empty()).then(|| ctx.body.to_vec());
    let mut entry = Entry::new(key, value, flags);
    let now = Instant::now();
    let mut state = lock(&inner.state);
    let outcome = if ctx.has("acquire") {
        // kvsPreApply: the lock delay is enforced before anything reaches Raft.
        if state.lock_delay.get(key).is_some_and(|until| *until > now) {
            return json_response(200, &json!(false));
        }
        entry.session = ctx.get("acquire").to_owned();
        let exists = state.sessions.contains_key(&entry.session);
        let idx = state.next();
        let before = state.kv.clone();
        let locked = state.kv.lock(idx, entry, exists).map(|e| e.is_some());
        state.note_acquisitions(&before, [key], now);
        locked
    } else if ctx.has("release") {
        entry.session = ctx.get("release").to_owned();
        let idx = state.next();
        state.kv.unlock(idx, entry).map(|e| e.is_some())
    } else if let Some(cas) = cas {
        let idx = state.next();
        Ok(state.kv.cas(idx, entry, cas).is_some())
    } else {
        let idx = state.next();
        state.kv.put(idx, entry, false);
        Ok(true)
    };
    inner.notify(&state);
    drop(state);
    match outcome {
        Ok(done) => json_response(200, &json!(done)),
        Err(e) => text(500, e),
    }
}

fn kv_delete(inner: &Inner, ctx: &Ctx, key: &str) -> Response {
    if let Some(refused) = conflicting(ctx, &["recurse", "cas"]) {
        return refused;
    }
    let recurse = ctx.has("recurse");
    if !recurse && key.is_empty() {
        return text(400, "Missing key name");
    }
    let cas = if ctx.has("cas") {
        match parse_uint(ctx.get("cas")) {
            Ok(cas) => Some(cas),
            Err(e) => return text(500, e),
        }
    } else {
        None
    };
    if let Err(refused) = inner.check_dc(ctx) {
        return *refused;
    }
    match inner.resolve(ctx) {
        Ok(Access::Full) => {}
        Ok(Access::Anonymous) => return denied("key", "write", key),
        Err(refused) => return *refused,
    }
    let mut state = lock(&inner.state);
    let idx = state.next();
    let done = if recurse {
        state.kv.delete_tree(idx, key);
        true
    } else if let Some(cas) = cas {
        state.kv.delete_cas(idx, key, cas)
    } else {
        state.kv.delete(idx, key);
        true
    };
    inner.notify(&state);
    json_response(200, &json!(done))
}

/// agent/kvs_endpoint.go conflictingFlags.
fn conflicting(ctx: &Ctx, flags: &[&str]) -> Option<Response> {
    let mut found = false;
    for flag in flags {
        if ctx.has(flag) {
            if found {
                return Some(text(
                    400,
                    format!("Conflicting flags: {}\n", encode_query(&ctx.query)),
                ));
            }
            found = true;
        }
    }
    None
}

/// agent/kvs_endpoint.go validateKVKey (the newest Consul's rules).
fn validate_key(key: &str) -> Result<(), String> {
    if key.starts_with('/') {
        return Err("key must not begin with a '/'".into());
    }
    for (i, c) in key.char_indices() {
        if !(c.is_ascii_alphanumeric() || matches!(c, ',' | '-' | '_' | '.' | '/')) {
            return Err(format!(
                "key contains invalid character '{c}' at position {i}. Only alphanumeric characters and ,-_./ are allowed"
            ));
        }
    }
    if key.contains("../") {
        return Err("key contains path traversal sequence".into());
    }
    const SUSPICIOUS: &[&str] = &[
        ".js", ".css", ".html", ".htm", ".xml", ".json", ".txt", ".log", ".php", ".asp", ".jsp",
        ".cgi", ".pl", ".py", ".rb", ".sh", ".exe", ".dll", ".bat", ".cmd", ".com", ".scr", ".vbs",
        ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".zip", ".rar", ".tar", ".gz",
        ".7z", ".bz2", ".jpg", ".jpeg", ".png", ".gif", ".svg", ".ico", ".bmp", ".mp3", ".mp4",
        ".avi", ".mov", ".wmv", ".flv", ".swf", ".woff", ".woff2", ".ttf", ".eot", ".otf",
    ];
    let lower = key.to_ascii_lowercase();
    if let Some(ext) = SUSPICIOUS.iter().find(|ext| lower.ends_with(*ext)) {
        return Err(format!(
            "key contains suspicious file extension '{ext}' that may be cached by proxies"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Transactions.
// ---------------------------------------------------------------------------------------

struct KvOp {
    verb: String,
    key: String,
    value: Option<Vec<u8>>,
    flags: u64,
    index: u64,
    session: String,
}

impl KvOp {
    /// agent/txn_endpoint.go isWrite.
    fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "set" | "delete" | "delete-cas" | "delete-tree" | "cas" | "lock" | "unlock"
        )
    }

    fn entry(&self) -> Entry {
        let mut entry = Entry::new(&self.key, self.value.clone(), self.flags);
        entry.session = self.session.clone();
        entry
    }

    fn parse(raw: &Value) -> Result<KvOp, String> {
        const OWNER: &str = "TxnOp.KV";
        let Value::Object(m) = raw else {
            return Err(format!(
                "json: cannot unmarshal {} into Go struct field {OWNER} of type api.KVTxnOp",
                kind(raw)
            ));
        };
        let value = match field(m, &["Value"]) {
            None => None,
            Some(Value::String(s)) => Some(
                BASE64
                    .decode(s)
                    .map_err(|e| format!("illegal base64 data: {e}"))?,
            ),
            Some(other) => return Err(mismatch(other, OWNER, "Value", "[]uint8")),
        };
        Ok(KvOp {
            verb: get_string(m, &["Verb"], OWNER)?,
            key: get_string(m, &["Key"], OWNER)?,
            value,
            flags: get_u64(m, &["Flags"], OWNER)?,
            index: get_u64(m, &["Index"], OWNER)?,
            session: get_string(m, &["Session"], OWNER)?,
        })
    }
}

fn txn(inner: &Inner, ctx: &Ctx) -> Response {
    if ctx.body.len() > MAX_VALUE_SIZE {
        return text(
            413,
            format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See {}.",
                ctx.body.len(),
                "https://www.consul.io/docs/agent/config/config-files#txn_max_req_len"
            ),
        );
    }
    let parse_failed = |e: String| text(400, format!("Failed to parse body: {e}"));
    let raw: Value = match serde_json::from_slice(&ctx.body) {
        Ok(raw) => raw,
        Err(e) => return parse_failed(e.to_string()),
    };
    let Value::Array(items) = raw else {
        return parse_failed(format!(
            "json: cannot unmarshal {} into Go value of type api.TxnOps",
            kind(&raw)
        ));
    };
    let mut parsed = Vec::new();
    for item in &items {
        let Value::Object(m) = item else {
            return parse_failed(format!(
                "json: cannot unmarshal {} into Go value of type api.TxnOp",
                kind(item)
            ));
        };
        if let Some(kv) = field(m, &["KV"]) {
            match KvOp::parse(kv) {
                Ok(op) => parsed.push(op),
                Err(e) => return parse_failed(e),
            }
        } else if ["Node", "Service", "Check", "Session", "Intention"]
            .iter()
            .any(|k| field(m, &[k]).is_some())
        {
            return text(
                501,
                "consul stand-in: only KV operations are implemented in /v1/txn",
            );
        }
        // An element naming no operation is dropped, as convertOps drops it.
    }
    if items.len() > MAX_TXN_OPS {
        return text(
            413,
            format!(
                "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                items.len()
            ),
        );
    }
    for op in &parsed {
        let size = op.value.as_ref().map_or(0, Vec::len);
        if size > MAX_VALUE_SIZE {
            return text(
                413,
                format!(
                    "Value for key {:?} is too large ({size} > {MAX_VALUE_SIZE} bytes)",
                    op.key
                ),
            );
        }
    }
    let writes = parsed.iter().filter(|op| op.is_write()).count();
    if writes == 0 {
        // A read-only transaction goes the way of reads (Txn.Read) and parses like one.
        if let Err(refused) = query_opts(ctx) {
            return *refused;
        }
    }
    if let Err(refused) = inner.check_dc(ctx) {
        return *refused;
    }
    let access = match inner.resolve(ctx) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    let now = Instant::now();
    let mut state = lock(&inner.state);
    let errors = precheck(&state, &parsed, access, now);
    if !errors.is_empty() {
        return txn_response(409, None, Some(errors), writes == 0);
    }
    let idx = if writes == 0 { 0 } else { state.next() };
    let mut scratch = state.kv.clone();
    let outcome = dispatch(&mut scratch, &state.sessions, idx, &parsed);
    let response = match outcome {
        Ok(mut results) => {
            if writes > 0 {
                let before = std::mem::replace(&mut state.kv, scratch);
                let locked = parsed
                    .iter()
                    .filter(|op| op.verb == "lock")
                    .map(|op| op.key.as_str());
                state.note_acquisitions(&before, locked, now);
            }
            // FilterTxnResults: what the token may not read is left out.
            if access == Access::Anonymous {
                results.clear();
            }
            txn_response(200, Some(results), None, writes == 0)
        }
        Err(errors) => txn_response(409, None, Some(errors), writes == 0),
    };
    if writes > 0 {
        inner.notify(&state);
    }
    drop(state);
    response
}

/// agent/consul/txn_endpoint.go preCheck with kvsPreApply.
fn precheck(state: &State, ops: &[KvOp], access: Access, now: Instant) -> Vec<(usize, String)> {
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if op.key.is_empty() && op.verb != "delete-tree" {
            errors.push((i, "Must provide key".to_owned()));
            continue;
        }
        if access == Access::Anonymous {
            let level = match op.verb.as_str() {
                "get" | "get-tree" => None,
                "check-session" | "check-index" => Some("read"),
                _ => Some("write"),
            };
            if let Some(level) = level {
                errors.push((i, permission_denied("key", level, &op.key)));
                continue;
            }
        }
        if op.verb == "lock" && state.lock_delay.get(&op.key).is_some_and(|t| *t > now) {
            errors.push((
                i,
                format!("failed to lock key {:?} due to lock delay", op.key),
            ));
        }
    }
    errors
}

/// agent/consul/state/txn.go txnKVS over every op: the results, or every op's error.
fn dispatch(
    kv: &mut Kv,
    sessions: &BTreeMap<String, Session>,
    idx: u64,
    ops: &[KvOp],
) -> Result<Vec<Value>, Vec<(usize, String)>> {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let meta = |e: &Entry| json!({"KV": e.json(false)});
    for (i, op) in ops.iter().enumerate() {
        let key = &op.key;
        let outcome: Result<Vec<Value>, String> = match op.verb.as_str() {
            "set" => Ok(vec![meta(&kv.put(idx, op.entry(), false))]),
            "delete" => {
                kv.delete(idx, key);
                Ok(vec![])
            }
            "delete-cas" => {
                if kv.delete_cas(idx, key, op.index) {
                    Ok(vec![])
                } else {
                    Err(format!("failed to delete key {key:?}, index is stale"))
                }
            }
            "delete-tree" => {
                kv.delete_tree(idx, key);
                Ok(vec![])
            }
            "cas" => match kv.cas(idx, op.entry(), op.index) {
                Some(e) => Ok(vec![meta(&e)]),
                None => Err(format!("failed to set key {key:?}, index is stale")),
            },
            "lock" => match kv.lock(idx, op.entry(), sessions.contains_key(&op.session)) {
                Ok(Some(e)) => Ok(vec![meta(&e)]),
                Ok(None) => Err(format!("failed to lock key {key:?}, lock is already held")),
                Err(e) => Err(e),
            },
            "unlock" => match kv.unlock(idx, op.entry()) {
                Ok(Some(e)) => Ok(vec![meta(&e)]),
                Ok(None) => Err(format!(
                    "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                )),
                Err(e) => Err(e),
            },
            "get" => match kv.entries.get(key) {
                Some(e) => Ok(vec![json!({"KV": e.json(true)})]),
                None => Err(format!("key {key:?} doesn't exist")),
            },
            "get-or-empty" => match kv.entries.get(key) {
                Some(e) => Ok(vec![json!({"KV": e.json(true)})]),
                None => {
                    // The op's own entry comes back, value blanked.
                    let mut blank = op.entry();
                    blank.value = None;
                    blank.modify_index = op.index;
                    Ok(vec![json!({"KV": blank.json(true)})])
                }
            },
            "get-tree" => Ok(kv
                .list(key)
                .1
                .iter()
                .map(|e| json!({"KV": e.json(true)}))
                .collect()),
            "check-session" => match kv.entries.get(key) {
                None => Err(format!(
                    "failed to check session, key {key:?} doesn't exist"
                )),
                Some(e) if e.session != op.session => Err(format!(
                    "failed session check for key {key:?}, current session {:?} != {:?}",
                    e.session, op.session
                )),
                Some(e) => Ok(vec![meta(e)]),
            },
            "check-index" => match kv.entries.get(key) {
                None => Err(format!("failed to check index, key {key:?} doesn't exist")),
                Some(e) if e.modify_index != op.index => Err(format!(
                    "failed index check for key {key:?}, current modify index {} != {}",
                    e.modify_index, op.index
                )),
                Some(e) => Ok(vec![meta(e)]),
            },
            "check-not-exists" => match kv.entries.get(key) {
                Some(_) => Err(format!("key {key:?} exists")),
                None => Ok(vec![]),
            },
            other => Err(format!("unknown KV verb {other:?}")),
        };
        match outcome {
            Ok(mut done) => results.append(&mut done),
            Err(what) => errors.push((i, what)),
        }
    }
    if errors.is_empty() {
        Ok(results)
    } else {
        Err(errors)
    }
}

fn txn_response(
    status: u16,
    results: Option<Vec<Value>>,
    errors: Option<Vec<(usize, String)>>,
    read_only: bool,
) -> Response {
    let errors = errors.map(|errors| {
        Value::Array(
            errors
                .into_iter()
                .map(|(i, what)| json!({"OpIndex": i, "What": what}))
                .collect(),
        )
    });
    let body = json!({
        "Results": results.map(Value::Array).unwrap_or(Value::Null),
        "Errors": errors.unwrap_or(Value::Null),
    });
    let mut response = json_response(status, &body);
    if read_only {
        // Txn.Read sets these two and no index: transactions do not block.
        let headers = response.headers_mut();
        headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
        headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    }
    response
}

// ---------------------------------------------------------------------------------------
// Sessions.
// ---------------------------------------------------------------------------------------

struct SessionRequest {
    name: String,
    node: String,
    lock_delay: Duration,
    behavior: String,
    ttl: String,
    node_checks: Vec<String>,
    service_checks: Vec<String>,
}

/// agent/session_endpoint.go SessionCreate's decoding, with FixupLockDelay and
/// FixupChecks.
fn parse_session_body(body: &[u8], request: &mut SessionRequest) -> Result<(), String> {
    const OWNER: &str = "Session";
    let m = decode_object(body, "structs.Session")?;
    request.name = get_string(&m, &["Name"], OWNER)?;
    if field(&m, &["Node"]).is_some() {
        request.node = get_string(&m, &["Node"], OWNER)?;
    }
    // Small numbers are taken as seconds.
    if let Some(nanos) = get_duration(&m, &["LockDelay"], OWNER)? {
        let nanos = nanos.max(0) as u64;
        request.lock_delay = if nanos < 1000 {
            Duration::from_secs(nanos)
        } else {
            Duration::from_nanos(nanos)
        };
    }
    request.behavior = get_string(&m, &["Behavior"], OWNER)?;
    request.ttl = get_string(&m, &["TTL"], OWNER)?;
    // Naming the checks at all replaces the serfHealth default.
    let named = m
        .keys()
        .any(|k| k.eq_ignore_ascii_case("checks") || k.eq_ignore_ascii_case("nodechecks"));
    if named {
        request.node_checks = get_strings(&m, &["Checks"], OWNER)?;
        for check in get_strings(&m, &["NodeChecks"], OWNER)? {
            if !request.node_checks.contains(&check) {
                request.node_checks.push(check);
            }
        }
    }
    if let Some(raw) = field(&m, &["ServiceChecks"]) {
        let Value::Array(list) = raw else {
            return Err(mismatch(
                raw,
                OWNER,
                "ServiceChecks",
                "[]structs.ServiceCheck",
            ));
        };
        for item in list {
            let Value::Object(check) = item else {
                return Err(mismatch(
                    item,
                    OWNER,
                    "ServiceChecks",
                    "structs.ServiceCheck",
                ));
            };
            request
                .service_checks
                .push(get_string(check, &["ID"], "ServiceCheck")?);
        }
    }
    Ok(())
}

fn session_create(inner: &Inner, ctx: &Ctx) -> Response {
    let options = &inner.options;
    let mut request = SessionRequest {
        name: String::new(),
        node: options.node_name.clone(),
        lock_delay: DEFAULT_LOCK_DELAY,
        behavior: String::new(),
        ttl: String::new(),
        node_checks: vec![SERF_HEALTH.to_owned()],
        service_checks: Vec::new(),
    };
    if !ctx.body.is_empty() {
        if let Err(e) = parse_session_body(&ctx.body, &mut request) {
            return text(400, format!("Request decode failed: {e}"));
        }
    }
    let SessionRequest {
        name,
        node,
        lock_delay,
        mut behavior,
        ttl,
        node_checks,
        service_checks,
    } = request;
    if let Err(refused) = inner.check_dc(ctx) {
        return *refused;
    }
    if node.is_empty() {
        return text(500, "Must provide Node");
    }
    match inner.resolve(ctx) {
        Ok(Access::Full) => {}
        Ok(Access::Anonymous) => return denied("session", "write", &node),
        Err(refused) => return *refused,
    }
    match behavior.as_str() {
        "" => behavior = "release".into(),
        "release" | "delete" => {}
        other => return text(500, format!("Invalid Behavior setting '{other}'")),
    }
    let mut ttl_duration = Duration::ZERO;
    if !ttl.is_empty() {
        let nanos = match parse_go_duration(&ttl) {
            Ok(nanos) => nanos,
            Err(e) => return text(500, format!("Session TTL '{ttl}' invalid: {e}")),
        };
        let min = options.session_ttl_min.as_nanos() as i128;
        let max = SESSION_TTL_MAX.as_nanos() as i128;
        if nanos != 0 && (nanos < min || nanos > max) {
            return text(
                500,
                format!(
                    "Invalid Session TTL '{nanos}', must be between [{}={}]",
                    go_duration(options.session_ttl_min),
                    go_duration(SESSION_TTL_MAX)
                ),
            );
        }
        ttl_duration = Duration::from_nanos(nanos.max(0) as u64);
    }
    let now = Instant::now();
    let mut state = lock(&inner.state);
    let idx = state.next();
    // agent/consul/state/session.go sessionCreateTxn.
    if node != options.node_name {
        return text(500, "Missing node registration");
    }
    for check in node_checks.iter().chain(&service_checks) {
        let status = if check == SERF_HEALTH {
            Some(PASSING)
        } else {
            state.checks.get(check).map(|c| c.status.as_str())
        };
        match status {
            None => return text(500, format!("Missing check '{check}' registration")),
            Some(CRITICAL) => return text(500, format!("Check '{check}' is in critical state")),
            Some(_) => {}
        }
    }
    let mut session = Session {
        id: new_uuid(),
        name,
        node,
        lock_delay,
        behavior,
        ttl,
        ttl_duration,
        node_checks,
        service_checks,
        create_index: idx,
        expires: None,
    };
    session.renewed(now);
    let id = session.id.clone();
    state.sessions.insert(id.clone(), session);
    inner.notify(&state);
    json_response(200, &json!({ "ID": id }))
}

fn session_renew(inner: &Inner, ctx: &Ctx, id: &str) -> Response {
    if let Err(refused) = query_opts(ctx) {
        return *refused;
    }
    if id.is_empty() {
        return text(400, "Missing session");
    }
    if let Err(refused) = inner.check_dc(ctx) {
        return *refused;
    }
    let mut state = lock(&inner.state);
    if !state.sessions.contains_key(id) {
        return text(404, format!("Session id '{id}' not found"));
    }
    match inner.resolve(ctx) {
        Ok(Access::Full) => {}
        Ok(Access::Anonymous) => {
            let node = state.sessions[id].node.clone();
            return denied("session", "write", &node);
        }
        Err(refused) => return *refused,
    }
    let session = state.sessions.get_mut(id).expect("looked up above");
    session.renewed(Instant::now());
    json_response(200, &json!([session.json()]))
}

fn session_destroy(inner: &Inner, ctx: &Ctx, id: &str) -> Response {
    if id.is_empty() {
        return text(400, "Missing session");
    }
    if let Err(refused) = inner.check_dc(ctx) {
        return *refused;
    }
    match inner.resolve(ctx) {
        Ok(Access::Full) => {}
        Ok(Access::Anonymous) => {
            let node = inner.options.node_name.clone();
            return denied("session", "write", &node);
        }
        Err(refused) => return *refused,
    }
    let mut state = lock(&inner.state);
    let idx = state.next();
    state.invalidate_session(idx, id, Instant::now());
    inner.notify(&state);
    json_response(200, &json!(true))
}

// ---------------------------------------------------------------------------------------
// Agent: services and checks.
// ---------------------------------------------------------------------------------------

struct ServiceDef {
    service: Service,
    checks: Vec<CheckDef>,
}

#[derive(Default)]
struct CheckDef {
    id: String,
    name: String,
    status: String,
    notes: String,
    ttl: Option<i128>,
    http: String,
    method: String,
    headers: Vec<(String, String)>,
    body: String,
    tcp: String,
    interval: Option<i128>,
    timeout: Option<i128>,
    deregister_after: Option<Duration>,
}

impl CheckDef {
    fn parse(raw: &Value) -> Result<CheckDef, Refused> {
        let bad = |e: String| Box::new(text(400, format!("Request decode failed: {e}")));
        let Value::Object(m) = raw else {
            return Err(bad(mismatch(
                raw,
                "ServiceDefinition",
                "Check",
                "structs.CheckType",
            )));
        };
        for unsupported in [
            "Args",
            "ScriptArgs",
            "GRPC",
            "UDP",
            "H2PING",
            "AliasNode",
            "AliasService",
            "DockerContainerID",
            "OSService",
        ] {
            if field(m, &[unsupported]).is_some() {
                return Err(Box::new(text(
                    501,
                    format!("consul stand-in: {unsupported} checks are not implemented"),
                )));
            }
        }
        CheckDef::parse_fields(m).map_err(bad)
    }

    fn parse_fields(m: &Map<String, Value>) -> Result<CheckDef, String> {
        const OWNER: &str = "CheckType";
        let mut headers = Vec::new();
        if let Some(raw) = field(m, &["Header"]) {
            let Value::Object(map) = raw else {
                return Err(mismatch(raw, OWNER, "Header", "map[string][]string"));
            };
            for (name, values) in map {
                let Value::Array(values) = values else {
                    return Err(mismatch(values, OWNER, "Header", "map[string][]string"));
                };
                for value in values {
                    let Value::String(value) = value else {
                        return Err(mismatch(value, OWNER, "Header", "map[string][]string"));
                    };
                    headers.push((name.clone(), value.clone()));
                }
            }
        }
        let deregister = get_duration(
            m,
            &[
                "DeregisterCriticalServiceAfter",
                "deregister_critical_service_after",
            ],
            OWNER,
        )?;
        Ok(CheckDef {
            id: get_string(m, &["CheckID", "check_id", "ID"], OWNER)?,
            name: get_string(m, &["Name"], OWNER)?,
            status: get_string(m, &["Status"], OWNER)?,
            notes: get_string(m, &["Notes"], OWNER)?,
            ttl: get_duration(m, &["TTL"], OWNER)?,
            http: get_string(m, &["HTTP"], OWNER)?,
            method: get_string(m, &["Method"], OWNER)?,
            headers,
            body: get_string(m, &["Body"], OWNER)?,
            tcp: get_string(m, &["TCP"], OWNER)?,
            interval: get_duration(m, &["Interval"], OWNER)?,
            timeout: get_duration(m, &["Timeout"], OWNER)?,
            deregister_after: deregister
                .filter(|n| *n > 0)
                .map(|n| Duration::from_nanos(n as u64)),
        })
    }

    /// CheckType.Empty.
    fn is_empty(&self) -> bool {
        self.id.is_empty()
            && self.name.is_empty()
            && self.status.is_empty()
            && self.notes.is_empty()
            && self.ttl.is_none()
            && self.http.is_empty()
            && self.tcp.is_empty()
            && self.interval.is_none()
            && self.timeout.is_none()
            && self.deregister_after.is_none()
    }

    /// CheckType.Validate for the kinds the stand-in runs.
    fn validate(&self) -> Result<(), String> {
        let interval_check = !self.http.is_empty() || !self.tcp.is_empty();
        let interval = self.interval.unwrap_or(0);
        let ttl = self.ttl.unwrap_or(0);
        if interval > 0 && ttl > 0 {
            return Err("Interval and TTL cannot both be specified".into());
        }
        if interval_check && interval <= 0 {
            return Err(
                "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks".into(),
            );
        }
        if !interval_check && ttl <= 0 {
            return Err("TTL must be > 0 for TTL checks".into());
        }
        Ok(())
    }

    fn probe(&self) -> Probe {
        let positive =
            |n: Option<i128>| n.filter(|n| *n > 0).map(|n| Duration::from_nanos(n as u64));
        let interval = positive(self.interval)
            .unwrap_or(MIN_CHECK_INTERVAL)
            .max(MIN_CHECK_INTERVAL);
        let timeout = positive(self.timeout).unwrap_or(DEFAULT_CHECK_TIMEOUT);
        if !self.http.is_empty() {
            Probe::Http {
                url: self.http.clone(),
                method: if self.method.is_empty() {
                    "GET".into()
                } else {
                    self.method.clone()
                },
                headers: self.headers.clone(),
                body: self.body.clone(),
                interval,
                timeout,
            }
        } else if !self.tcp.is_empty() {
            Probe::Tcp {
                address: self.tcp.clone(),
                interval,
                timeout,
            }
        } else {
            Probe::Ttl(positive(self.ttl).unwrap_or(Duration::from_secs(1)))
        }
    }
}

/// structs.ValidateServiceMetadata.
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("Node metadata cannot contain more than 64 key/value pairs".into());
    }
    for (key, value) in meta {
        if key.is_empty() {
            return Err("Key cannot be blank".into());
        }
        if key.len() > 128 {
            return Err("Key is too long (limit: 128 characters)".into());
        }
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err("Key contains invalid characters".into());
        }
        if key.starts_with("consul-") {
            return Err("Key prefix 'consul-' is reserved for internal use".into());
        }
        if value.len() > 512 {
            return Err("Value is too long (limit: 512 characters)".into());
        }
    }
    Ok(())
}

/// The service half of agent_endpoint.go AgentRegisterService's decoding.
fn parse_service(m: &Map<String, Value>) -> Result<(Service, Option<(i64, i64)>), String> {
    const OWNER: &str = "ServiceDefinition";
    if !get_string(m, &["Kind"], OWNER)?.is_empty() {
        return Err("consul stand-in: service kinds are not implemented".into());
    }
    let weights = match field(m, &["Weights"]) {
        None => None,
        Some(Value::Object(w)) => Some((
            get_i64(w, &["Passing"], "Weights")?,
            get_i64(w, &["Warning"], "Weights")?,
        )),
        Some(other) => return Err(mismatch(other, OWNER, "Weights", "structs.Weights")),
    };
    let name = get_string(m, &["Name"], OWNER)?;
    let mut id = get_string(m, &["ID"], OWNER)?;
    if id.is_empty() {
        id = name.clone();
    }
    let service = Service {
        id,
        name,
        tags: get_strings(m, &["Tags"], OWNER)?,
        address: get_string(m, &["Address"], OWNER)?,
        port: get_i64(m, &["Port"], OWNER)?,
        meta: get_string_map(m, &["Meta"], OWNER)?,
        enable_tag_override: get_bool(m, &["EnableTagOverride", "enable_tag_override"], OWNER)?,
        weights: weights.unwrap_or((1, 1)),
        create_index: 0,
        modify_index: 0,
    };
    Ok((service, weights))
}

fn agent_register(inner: &Inner, ctx: &Ctx) -> Response {
    const OWNER: &str = "ServiceDefinition";
    let bad = |e: String| text(400, format!("Request decode failed: {e}"));
    let m = match decode_object(&ctx.body, "structs.ServiceDefinition") {
        Ok(m) => m,
        Err(e) => return bad(e),
    };
    for unsupported in ["Proxy", "Connect"] {
        if field(&m, &[unsupported]).is_some() {
            return text(
                501,
                format!("consul stand-in: {unsupported} in a service is not implemented"),
            );
        }
    }
    let decoded = parse_service(&m);
    let (service, weights) = match decoded {
        Ok(decoded) => decoded,
        Err(e) if e.starts_with("consul stand-in") => return text(501, e),
        Err(e) => return bad(e),
    };
    let mut checks = Vec::new();
    if let Some(raw) = field(&m, &["Check"]) {
        match CheckDef::parse(raw) {
            Ok(check) => checks.push(check),
            Err(refused) => return *refused,
        }
    }
    if let Some(raw) = field(&m, &["Checks"]) {
        let Value::Array(list) = raw else {
            return bad(mismatch(raw, OWNER, "Checks", "structs.CheckTypes"));
        };
        for item in list {
            match CheckDef::parse(item) {
                Ok(check) => checks.push(check),
                Err(refused) => return *refused,
            }
        }
    }
    checks.retain(|c| !c.is_empty());

    // agent_endpoint.go AgentRegisterService, in its order.
    if service.name.is_empty() {
        return text(400, "Missing service name");
    }
    if matches!(service.address.as_str(), "0.0.0.0" | "::" | "[::]") {
        return text(400, "Invalid service address");
    }
    let access = match inner.resolve(ctx) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    if let Some((passing, _)) = weights {
        if passing <= 0 {
            return text(400, "Invalid Weights: Passing must be greater than 0");
        }
    }
    if let Err(e) = validate_meta(&service.meta) {
        return text(400, format!("Invalid Service Meta: {e}"));
    }
    for check in &checks {
        if let Err(e) = check.validate() {
            return text(400, format!("Invalid check: {e}"));
        }
    }
    for check in &checks {
        if !check.status.is_empty()
            && ![PASSING, WARNING, CRITICAL].contains(&check.status.as_str())
        {
            return text(
                400,
                "Status for checks must 'passing', 'warning', 'critical'",
            );
        }
    }
    if access == Access::Anonymous {
        return denied("service", "write", &service.name);
    }
    let replace = ctx.has("replace-existing-checks")
        && matches!(ctx.get("replace-existing-checks"), "" | "true");
    let mut state = lock(&inner.state);
    state.register_service(ServiceDef { service, checks }, replace, Instant::now());
    inner.notify(&state);
    empty(200)
}

fn agent_deregister(inner: &Inner, ctx: &Ctx, id: &str) -> Response {
    let access = match inner.resolve(ctx) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    let mut state = lock(&inner.state);
    let Some(service) = state.services.get(id) else {
        return text(
            404,
            format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            ),
        );
    };
    if access == Access::Anonymous {
        let name = service.name.clone();
        return denied("service", "write", &name);
    }
    state.remove_service(id, Instant::now());
    inner.notify(&state);
    empty(200)
}

fn agent_check_update(inner: &Inner, ctx: &Ctx, id: &str, status: &str) -> Response {
    let access = match inner.resolve(ctx) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    let now = Instant::now();
    let mut state = lock(&inner.state);
    let Some(check) = state.checks.get_mut(id) else {
        return text(
            404,
            format!(
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            ),
        );
    };
    if access == Access::Anonymous {
        let name = check.service_name.clone();
        return denied("service", "write", &name);
    }
    let Probe::Ttl(ttl) = check.probe else {
        return text(500, format!("CheckID {id:?} does not have associated TTL"));
    };
    // CheckTTL.SetStatus restarts the TTL timer.
    check.ttl_expires = Some(now + ttl);
    let note = ctx.get("note").to_owned();
    state.update_check(id, status, note, now);
    inner.notify(&state);
    empty(200)
}

fn agent_services(inner: &Inner, ctx: &Ctx) -> Response {
    let access = match inner.resolve(ctx) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    let state = lock(&inner.state);
    let mut services = Map::new();
    if access == Access::Full {
        for service in state.services.values() {
            services.insert(
                service.id.clone(),
                service.agent_json(&inner.options.datacenter),
            );
        }
    }
    json_response(200, &Value::Object(services))
}

fn agent_checks(inner: &Inner, ctx: &Ctx) -> Response {
    let access = match inner.resolve(ctx) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    let state = lock(&inner.state);
    let mut checks = Map::new();
    if access == Access::Full {
        for check in state.checks.values() {
            let tags = state
                .services
                .get(&check.service_id)
                .map(|s| s.tags.clone())
                .unwrap_or_default();
            checks.insert(check.id.clone(), inner.check_json(check, &tags));
        }
    }
    json_response(200, &Value::Object(checks))
}

// ---------------------------------------------------------------------------------------
// Catalog and health.
// ---------------------------------------------------------------------------------------

async fn service_nodes(inner: &Inner, ctx: &Ctx, name: &str, health: bool) -> Response {
    let opts = match query_opts(ctx) {
        Ok(opts) => opts,
        Err(refused) => return *refused,
    };
    if name.is_empty() {
        return text(400, "Missing service name");
    }
    for unsupported in ["filter", "near", "node-meta", "peer", "sameness-group"] {
        if ctx.has(unsupported) {
            return text(
                501,
                format!("consul stand-in: ?{unsupported} is not implemented"),
            );
        }
    }
    let mut passing_only = false;
    if health && ctx.has("passing") {
        let raw = ctx.get("passing");
        passing_only = if raw.is_empty() {
            true
        } else {
            match parse_go_bool(raw) {
                Some(b) => b,
                None => return text(400, "Invalid value for ?passing"),
            }
        };
    }
    if let Err(refused) = inner.check_dc(ctx) {
        return *refused;
    }
    let access = match inner.resolve(ctx) {
        Ok(access) => access,
        Err(refused) => return *refused,
    };
    let tags = ctx.all("tag");
    let (index, items) = inner
        .block(&opts, |state| {
            let index = state.service_query_index(name);
            let mut items = Vec::new();
            if access == Access::Full {
                for service in state.services.values() {
                    if !service.name.eq_ignore_ascii_case(name) || !service.has_tags(&tags) {
                        continue;
                    }
                    if health {
                        let mut checks: Vec<&Check> = state
                            .checks
                            .values()
                            .filter(|c| c.service_id == service.id)
                            .collect();
                        checks.sort_by(|a, b| a.id.cmp(&b.id));
                        if passing_only && checks.iter().any(|c| c.status != PASSING) {
                            continue;
                        }
                        let mut rendered = vec![inner.serf_check_json()];
                        rendered.extend(checks.iter().map(|c| inner.check_json(c, &service.tags)));
                        items.push(json!({
                            "Node": inner.node_json(),
                            "Service": {
                                "ID": service.id,
                                "Service": service.name,
                                "Tags": service.tags,
                                "Address": service.address,
                                "Meta": service.meta,
                                "Port": service.port,
                                "Weights": service.weights_json(),
                                "EnableTagOverride": service.enable_tag_override,
                                "CreateIndex": service.create_index,
                                "ModifyIndex": service.modify_index,
                            },
                            "Checks": rendered,
                        }));
                    } else {
                        items.push(json!({
                            "ID": inner.node_id,
                            "Node": inner.options.node_name,
                            "Address": NODE_ADDRESS,
                            "Datacenter": inner.options.datacenter,
                            "TaggedAddresses": tagged_addresses(),
                            "NodeMeta": {"consul-network-segment": ""},
                            "ServiceKind": "",
                            "ServiceID": service.id,
                            "ServiceName": service.name,
                            "ServiceTags": service.tags,
                            "ServiceAddress": service.address,
                            "ServiceWeights": service.weights_json(),
                            "ServiceMeta": service.meta,
                            "ServicePort": service.port,
                            "ServiceEnableTagOverride": service.enable_tag_override,
                            "CreateIndex": service.create_index,
                            "ModifyIndex": service.modify_index,
                        }));
                    }
                }
            }
            (index, (index, 0), items)
        })
        .await;
    with_meta(json_response(200, &Value::Array(items)), index, &opts)
}

// ---------------------------------------------------------------------------------------
// Responses.
// ---------------------------------------------------------------------------------------

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Errors: Consul writes the text with fmt.Fprint and lets Go sniff the type.
fn text(code: u16, message: impl Into<String>) -> Response {
    let mut response = Response::new(Body::from(message.into()));
    *response.status_mut() = status(code);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(code: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status(code);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn empty(code: u16) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status(code);
    response
}

/// agent/http.go setMeta.
fn with_meta(mut response: Response, index: u64, opts: &QueryOpts) -> Response {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&index.to_string()) {
        headers.insert("X-Consul-Index", value);
    }
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    headers.insert(
        "X-Consul-Effective-Consistency",
        HeaderValue::from_static(opts.consistency),
    );
    response
}

/// acl.PermissionDeniedError as Consul words it for the anonymous token.
fn permission_denied(resource: &str, level: &str, name: &str) -> String {
    format!("Permission denied: anonymous token lacks permission '{resource}:{level}' on {name:?}")
}

fn denied(resource: &str, level: &str, name: &str) -> Response {
    text(403, permission_denied(resource, level, name))
}

// ---------------------------------------------------------------------------------------
// Go's ways with URLs, durations, booleans and JSON.
// ---------------------------------------------------------------------------------------

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(raw: &str, plus_is_space: bool) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high * 16 + low);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// url.ParseQuery.
fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(key, true), percent_decode(value, true))
        })
        .collect()
}

/// url.QueryEscape.
fn query_escape(raw: &str) -> String {
    let mut out = String::new();
    for b in raw.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// url.Values.Encode: sorted by key.
fn encode_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = query.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// strconv.ParseUint(s, 10, 64) with its error text.
fn parse_uint(raw: &str) -> Result<u64, String> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "strconv.ParseUint: parsing {raw:?}: invalid syntax"
        ));
    }
    raw.parse()
        .map_err(|_| format!("strconv.ParseUint: parsing {raw:?}: value out of range"))
}

/// strconv.ParseBool.
fn parse_go_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// time.ParseDuration, in nanoseconds.
fn parse_go_duration(raw: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {raw:?}");
    let (negative, mut rest) = match raw.as_bytes().first() {
        Some(b'-') => (true, &raw[1..]),
        Some(b'+') => (false, &raw[1..]),
        _ => (false, raw),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(digits);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let n = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(n)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .bytes()
            .take_while(|b| *b != b'.' && !b.is_ascii_digit())
            .count();
        let (unit, after) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "" => return Err(format!("time: missing unit in duration {raw:?}")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(format!("time: unknown unit {other:?} in duration {raw:?}")),
        };
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        total += whole * scale;
        if !fraction.is_empty() {
            let fraction: f64 = format!("0.{fraction}").parse().map_err(|_| invalid())?;
            total += (fraction * scale as f64) as i128;
        }
        if total > i64::MAX as i128 {
            return Err(invalid());
        }
        rest = after;
    }
    Ok(if negative { -total } else { total })
}

/// time.Duration.String.
fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let fraction = |value: u128, unit: u128| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let width = unit.to_string().len() - 1;
        let digits = format!("{rest:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

fn new_uuid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = RandomState::new().hash_one((n, 'a'));
    let b = RandomState::new().hash_one((n, 'b'));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn mismatch(value: &Value, owner: &str, name: &str, go_type: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go struct field {owner}.{name} of type {go_type}",
        kind(value)
    )
}

fn decode_object(body: &[u8], go_type: &str) -> Result<Map<String, Value>, String> {
    if body.is_empty() {
        return Err("EOF".into());
    }
    match serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())? {
        Value::Object(m) => Ok(m),
        other => Err(format!(
            "json: cannot unmarshal {} into Go value of type {go_type}",
            kind(&other)
        )),
    }
}

/// encoding/json's field matching: the exact name first, then any case; null is absent.
fn field<'a>(m: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    let found = names.iter().find_map(|n| m.get(*n)).or_else(|| {
        names.iter().find_map(|n| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v)
        })
    });
    found.filter(|v| !v.is_null())
}

fn get_string(m: &Map<String, Value>, names: &[&str], owner: &str) -> Result<String, String> {
    match field(m, names) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(mismatch(other, owner, names[0], "string")),
    }
}

fn get_u64(m: &Map<String, Value>, names: &[&str], owner: &str) -> Result<u64, String> {
    match field(m, names) {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| mismatch(v, owner, names[0], "uint64")),
    }
}

fn get_i64(m: &Map<String, Value>, names: &[&str], owner: &str) -> Result<i64, String> {
    match field(m, names) {
        None => Ok(0),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| mismatch(v, owner, names[0], "int")),
    }
}

fn get_bool(m: &Map<String, Value>, names: &[&str], owner: &str) -> Result<bool, String> {
    match field(m, names) {
        None => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| mismatch(v, owner, names[0], "bool")),
    }
}

fn get_strings(m: &Map<String, Value>, names: &[&str], owner: &str) -> Result<Vec<String>, String> {
    match field(m, names) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(mismatch(other, owner, names[0], "string")),
            })
            .collect(),
        Some(other) => Err(mismatch(other, owner, names[0], "[]string")),
    }
}

fn get_string_map(
    m: &Map<String, Value>,
    names: &[&str],
    owner: &str,
) -> Result<BTreeMap<String, String>, String> {
    match field(m, names) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(items)) => items
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(mismatch(other, owner, names[0], "string")),
            })
            .collect(),
        Some(other) => Err(mismatch(other, owner, names[0], "map[string]string")),
    }
}

/// A duration field: a Go duration string or a number of nanoseconds.
fn get_duration(
    m: &Map<String, Value>,
    names: &[&str],
    owner: &str,
) -> Result<Option<i128>, String> {
    match field(m, names) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_go_duration(s).map(Some),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(|f| Some(f as i128))
            .ok_or_else(|| mismatch(&Value::Number(n.clone()), owner, names[0], "time.Duration")),
        Some(other) => Err(mismatch(other, owner, names[0], "time.Duration")),
    }
}
