//! The HTTP API (axum) under `/api/v1`: clusters, one cluster's tree, one instance,
//! discover, forget, the audit log, and a health endpoint for load balancers. Errors
//! are JSON (`{"error": "..."}`) with a status code that says whose fault it is — 404
//! for an unknown path and 405 for a method a path does not take too.

pub mod auth;
pub mod live;
pub mod operate;
mod orchestrator;
pub mod origin;
pub mod recovery;
pub mod stalled;
pub mod views;
pub mod web;

use crate::analysis::ProblemRules;
use crate::discovery::{DiscoverError, DiscoveryHandle};
use crate::recovery::coordinator::Coordinator;
use crate::store::{AuditEntry, Store};
use crate::topology::cluster::ClusterAlias;
use crate::topology::{ClusterInstances, InstanceKey};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::SystemTime;
use views::{
    details_of, ClusterDetail, FencedMark, InstanceDepth, InstanceMarks, InstanceView,
    RecoveryIndex,
};

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub discovery: DiscoveryHandle,
    pub store: Store,
    pub aliases: Arc<Vec<ClusterAlias>>,
    pub rules: ProblemRules,
    pub coordinator: Arc<Coordinator>,
    /// Turns true when the agent stops, so long-lived replies (the event stream) end
    /// and the server can shut down.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The event stream's shared state (`live`).
    pub events: live::EventFeed,
    /// Where every cluster's detail is built, after the polling and the failovers.
    pub(crate) backroom: crate::workers::Backroom,
}

impl ApiState {
    /// Every cluster in full, as the API and the page show it.
    pub(crate) fn details(&self) -> Vec<ClusterDetail> {
        self.details_to(InstanceDepth::Whole, None)
    }

    /// The cluster called `name` now, in full, built without the others (not found by a
    /// former name). `None` also for the lone tree of a fenced old primary, which the
    /// whole view folds into another cluster.
    pub(crate) fn detail_named(&self, name: &str) -> Option<ClusterDetail> {
        views::the_detail_named(self.details_to(InstanceDepth::Whole, Some(name)), name)
    }

    /// The cluster `key` is in, in full, built alone.
    fn detail_holding(&self, key: &InstanceKey) -> Option<ClusterDetail> {
        let snapshot = self.discovery.snapshot();
        let name = self
            .discovery
            .clusters(&snapshot, &self.aliases)
            .iter()
            .find(|c| c.members.contains(key))
            .map(|c| c.name.clone())?;
        self.detail_named(&name)
    }

    /// Every cluster's summary, problems first: built without copying every instance's
    /// facts (`GET /api/v1/clusters` on a large fleet).
    /// `GET /api/v1/clusters`'s body: every cluster's summary, as JSON. Built, summed up,
    /// written out and freed in the backroom: at 10,002 instances the JSON and the
    /// freeing alone took milliseconds of the async workers per request, which two
    /// clients reading back to back took from the polling.
    pub(crate) fn summaries_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let this = self.clone();
        self.backroom.run(move || {
            let details = this.build_details(InstanceDepth::KeyOnly, None);
            let summaries = details.into_iter().map(ClusterDetail::into_summary);
            serde_json::to_vec(&live::problems_first(summaries.collect()))
        })
    }

    /// Every cluster's detail, or only the one called `only`. The whole fleet's (tens of
    /// ms on a large one) is built in the backroom, off the async workers, one at a time
    /// and after the polling and the failovers, so dashboards and scrapers never hold
    /// up the notice of a death or a failover; one cluster's (a fraction of a ms) here.
    fn details_to(&self, depth: InstanceDepth, only: Option<&str>) -> Vec<ClusterDetail> {
        match only {
            Some(name) => self.build_details(depth, Some(name)),
            None => {
                let this = self.clone();
                self.backroom.run(move || this.build_details(depth, None))
            }
        }
    }

    fn build_details(&self, depth: InstanceDepth, only: Option<&str>) -> Vec<ClusterDetail> {
        let now = SystemTime::now();
        // Outlines: the steps are read only for the recoveries a cluster announces.
        let recoveries = self.store.recovery_outlines(200).unwrap_or_default();
        let marks = InstanceMarks {
            fenced: self
                .store
                .fenced()
                .unwrap_or_default()
                .into_iter()
                .map(|f| FencedMark {
                    successor: recoveries
                        .iter()
                        .find(|r| Some(&r.id) == f.recovery_id.as_ref())
                        .and_then(|r| r.successor.clone()),
                    instance: f.instance,
                    cluster: f.cluster,
                })
                .collect(),
            downtimes: self.store.downtimes(now).unwrap_or_default(),
        };
        let snapshot = self.discovery.snapshot();
        let clusters = self.discovery.clusters(&snapshot, &self.aliases);
        let doubled = crate::analysis::multiple_primaries(&clusters, &snapshot, &self.aliases);
        let named: Vec<crate::topology::ClusterView>;
        let wanted = match only {
            Some(name) => {
                named = views::clusters_to_detail(name, &clusters, &marks);
                &named[..]
            }
            None => &clusters[..],
        };
        let mut details = details_of(&snapshot, wanted, &doubled, &self.rules, &marks, now, depth);
        let facts = self.coordinator.gate_facts();
        let index = RecoveryIndex::of(&recoveries);
        for detail in &mut details {
            detail.recovery_refused = self.coordinator.refusal(&detail.name);
            let members: Vec<InstanceKey> = detail
                .instances
                .iter()
                .map(|v| v.instance.key.clone())
                .collect();
            detail.coverage = Some(self.coordinator.coverage(
                &facts,
                &detail.name,
                detail.alias.as_deref(),
                &members,
                &detail.primary,
                &ClusterInstances::of(&members, &snapshot),
            ));
            detail.formerly = index.former_names(&detail.name);
            let mut names = detail.formerly.clone();
            names.push(detail.name.clone());
            detail.unacknowledged = index.unacknowledged(&names, &members).map(|outline| {
                self.store
                    .recovery_with_id(&outline.id)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| outline.clone())
            });
        }
        details
    }
}

/// Who made an API request, as the audit log and the recoveries record it: `api` and
/// the client's address (`api 127.0.0.1`), so an action taken from a page or a script
/// is told from another.
pub(crate) struct Caller(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let address = parts
            .extensions
            .get::<axum::extract::ConnectInfo<stalled::ClientAddress>>()
            .map(|info| info.0 .0.ip());
        Ok(Caller(match address {
            Some(ip) => format!("api {ip}"),
            None => "api".to_string(),
        }))
    }
}

/// Every route, each request checked in this order: where it comes from (`origin`),
/// its token (`auth`, API routes only), whether this agent leads (changes only).
pub fn router(state: ApiState, access: auth::Access, origins: origin::OriginRules) -> Router {
    let orchestrator = orchestrator::service(&state, &access, &origins);
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/clusters/{name}", get(cluster))
        .route("/api/v1/instances/{key}", get(instance).delete(forget))
        .route("/api/v1/discover", post(discover))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/routes", get(routes))
        .merge(recovery::routes())
        .merge(operate::routes())
        .merge(live::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            only_the_leader_changes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            access,
            auth::require_token,
        ))
        .merge(web::routes())
        // orchestrator's API: its own token rule, then pointsman's handlers behind it.
        .route_service("/api/{*rest}", orchestrator)
        // Set after the token and leader layers, so it is outside them: a method a path
        // does not take changes nothing and is refused the same way whoever asks.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            origins,
            origin::only_from_here,
        ))
        .with_state(state)
}

/// An error as the API returns it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    /// On a follower's refusal to change anything: the API of the agent that leads,
    /// where the CLI sends the call again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status: status.as_u16(),
            error: error.into(),
            leader: None,
        }
    }
}

/// Calls that change servers, routes or the shared recovery state are the leader's:
/// a follower answers 503 naming the leader's API (the CLI follows it). Reads, and
/// this agent's own discovery (`discover`, `forget`), are anyone's.
async fn only_the_leader_changes(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let path = request.uri().path();
    let reading = matches!(method, axum::http::Method::GET | axum::http::Method::HEAD);
    let own_discovery = path == "/api/v1/discover"
        || (method == axum::http::Method::DELETE
            && path.starts_with("/api/v1/instances/")
            && path.matches('/').count() == 4);
    if reading || own_discovery {
        return next.run(request).await;
    }
    match state.coordinator.executor.lease.gate() {
        Ok(_) => next.run(request).await,
        Err(not) => {
            let mut refusal = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, not.to_string());
            refusal.leader = not.leader.map(|leader| leader.api);
            refusal.into_response()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, ApiError>;

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see the README's API section for /api/v1 paths",
    )
}

/// A path that exists, asked with a method it does not take; axum's `Allow` header
/// lists the ones it does.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method} (the Allow header lists what it takes); see the README's API section",
            uri.path()
        ),
    )
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `degraded` when the agent itself has a problem (listed in `problems`).
    pub status: String,
    pub version: String,
    pub instances: usize,
    /// What is wrong with the agent itself (its store), each in a sentence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// `leader` (this agent acts), `follower` (another does) or `starting`.
    #[serde(default)]
    pub role: String,
    /// The agent that leads, when it is known (this one included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<crate::leader::LeaderInfo>,
}

async fn health(State(state): State<ApiState>) -> Json<Health> {
    let problems: Vec<String> = state.store.problem().into_iter().collect();
    let (role, leader) = match state.coordinator.executor.lease.role() {
        crate::leader::Role::Leader { .. } => ("leader", state.coordinator.executor.lease.agent()),
        crate::leader::Role::Follower { leader } => ("follower", leader),
        crate::leader::Role::Starting => ("starting", None),
    };
    Json(Health {
        status: if problems.is_empty() {
            "ok"
        } else {
            "degraded"
        }
        .into(),
        version: env!("CARGO_PKG_VERSION").into(),
        instances: state.discovery.snapshot().instances.len(),
        problems,
        role: role.into(),
        leader,
    })
}

async fn clusters(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let body = state.summaries_json().map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the clusters could not be written as JSON: {error}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The cluster called `name` now, or that was called so before a recovery renamed it.
pub(crate) fn find_cluster(state: &ApiState, name: &str) -> Result<ClusterDetail, ApiError> {
    if let Some(detail) = state.detail_named(name) {
        return Ok(detail);
    }
    let details = state.details();
    let known: Vec<String> = details.iter().map(|d| d.name.clone()).collect();
    let now = details.iter().position(|d| d.name == name);
    let formerly = || {
        details
            .iter()
            .position(|d| d.formerly.iter().any(|f| f == name))
    };
    let found = now.or_else(formerly);
    found.map(|index| details[index].clone()).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no cluster named \"{name}\"; known clusters: {}",
                if known.is_empty() {
                    "none yet".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
    })
}

/// `name` and the names the same cluster had before recoveries renamed it (or, for a
/// former name, the cluster's names now and before); every name when `None`.
pub(crate) fn cluster_names(state: &ApiState, name: Option<&str>) -> Option<Vec<String>> {
    let name = name?;
    Some(match find_cluster(state, name) {
        Ok(detail) => std::iter::once(detail.name)
            .chain(detail.formerly)
            .collect(),
        Err(_) => vec![name.to_string()],
    })
}

async fn cluster(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<ClusterDetail> {
    find_cluster(&state, &name).map(Json)
}

fn parse_key(text: &str) -> Result<InstanceKey, ApiError> {
    text.parse()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, e))
}

async fn instance(
    State(state): State<ApiState>,
    Path(key): Path<String>,
) -> ApiResult<InstanceView> {
    let key = parse_key(&key)?;
    // Its own cluster first; every cluster if the snapshot moved on in between (a
    // failover renames the cluster it touches).
    state
        .detail_holding(&key)
        .and_then(|d| d.instance(&key).cloned())
        .or_else(|| {
            state
                .details()
                .iter()
                .find_map(|d| d.instance(&key).cloned())
        })
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{key} is not a known instance; POST it to /api/v1/discover first"),
            )
        })
}

/// The body of `POST /api/v1/discover`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DiscoverRequest {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    3306
}

async fn discover(
    State(state): State<ApiState>,
    Caller(who): Caller,
    body: Result<Json<DiscoverRequest>, JsonRejection>,
) -> ApiResult<InstanceView> {
    let Json(request) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "expected a JSON body like {{\"host\": \"db1\", \"port\": 3306}}: {}",
                e.body_text()
            ),
        )
    })?;
    if request.host.trim().is_empty() || request.port == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "host must not be empty and port must be 1 to 65535",
        ));
    }
    if let Some(problem) = crate::topology::instance::host_problem(request.host.trim()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("host: {problem}"),
        ));
    }
    let key = InstanceKey::new(request.host.trim(), request.port);
    match state.discovery.discover(key.clone()).await {
        Ok(_) => {
            let _ = state.store.audit(AuditEntry {
                actor: who.clone(),
                action: "discover".into(),
                cluster: None,
                instance: Some(key.clone()),
                message: format!("discovery requested from {key}"),
            });
            instance(State(state), Path(key.to_string())).await
        }
        Err(DiscoverError::Mysql(error)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("cannot discover {key}: {error}"),
        )),
        Err(error) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error.to_string(),
        )),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Forgotten {
    pub forgotten: InstanceKey,
}

#[derive(Deserialize)]
struct ForgetQuery {
    /// Also lift the fence of a fenced old primary (it is being decommissioned).
    #[serde(default)]
    unfence: bool,
}

async fn forget(
    State(state): State<ApiState>,
    Caller(who): Caller,
    Path(key): Path<String>,
    Query(query): Query<ForgetQuery>,
) -> ApiResult<Forgotten> {
    let key = parse_key(&key)?;
    let fenced = state
        .store
        .fenced()
        .is_ok_and(|list| list.iter().any(|f| f.instance == key));
    if fenced && !query.unfence {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{key} is a fenced old primary: forgetting it would stop keeping it read_only. \
                 Re-attach it (`pointsman reattach {key}`), or, if it is being decommissioned, \
                 forget it with --unfence"
            ),
        ));
    }
    if fenced {
        let _ = state.store.unfence(&key);
    }
    let cluster = state
        .details()
        .into_iter()
        .find(|d| d.instance(&key).is_some())
        .map(|d| d.name);
    match state.discovery.forget(key.clone()).await {
        Ok(true) => {
            let _ = state.store.audit(AuditEntry {
                actor: who.clone(),
                action: "forget".into(),
                cluster,
                instance: Some(key.clone()),
                message: format!("{key} forgotten"),
            });
            Ok(Json(Forgotten { forgotten: key }))
        }
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{key} is not a known instance"),
        )),
        Err(error) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error.to_string(),
        )),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    cluster: Option<String>,
    limit: Option<usize>,
}

async fn audit(
    State(state): State<ApiState>,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Vec<crate::store::AuditRecord>> {
    let limit = query.limit.unwrap_or(100).min(10_000);
    match cluster_names(&state, query.cluster.as_deref()) {
        Some(names) => state.store.audit_log_named(&names, limit),
        None => state.store.audit_log(None, limit),
    }
    .map(Json)
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Debug, Deserialize)]
struct RoutesQuery {
    cluster: Option<String>,
}

/// Per backend, what it should say and what it says now (read from it live).
async fn routes(
    State(state): State<ApiState>,
    Query(query): Query<RoutesQuery>,
) -> ApiResult<crate::routing::engine::RoutesView> {
    let routing = &state.coordinator.routing;
    if let Some(cluster) = &query.cluster {
        let routes = routing.routes();
        if !routes.clusters.contains_key(cluster) {
            let routed: Vec<&str> = routes.clusters.keys().map(String::as_str).collect();
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no routed cluster named \"{cluster}\"; routed now: {} (only clusters with a [[cluster]] alias whose primary has been reached are routed)",
                    if routed.is_empty() { "none".to_string() } else { routed.join(", ") }
                ),
            ));
        }
    }
    Ok(Json(routing.inspect(query.cluster.as_deref()).await))
}
