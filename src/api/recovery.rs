//! Recovery endpoints: recover a cluster by hand, switch its primary over, list
//! recoveries, acknowledge them, switch automatic recovery, downtime instances, and
//! re-attach a fenced old primary.

use super::{ApiError, ApiResult, ApiState, Caller};
use crate::recovery::coordinator::{ReattachError, RecoverError};
use crate::recovery::switchover::{SwitchoverError, SwitchoverReport};
use crate::store::recovery::{Downtime, RecoveryRecord};
use crate::store::AuditEntry;
use crate::topology::InstanceKey;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/clusters/{name}/recover", post(recover))
        .route("/api/v1/clusters/{name}/ack", post(acknowledge))
        .route("/api/v1/clusters/{name}/switchover", post(switchover))
        .route("/api/v1/clusters/{name}/drill", post(drill))
        .route("/api/v1/recoveries", get(recoveries))
        .route("/api/v1/recovery", get(switch).put(set_switch))
        .route(
            "/api/v1/instances/{key}/downtime",
            put(downtime).delete(end_downtime),
        )
        .route("/api/v1/instances/{key}/reattach", post(reattach))
}

/// The JSON body, or the default request when the body is empty. (That the call says
/// `Content-Type: application/json` is checked before: `api::origin`.)
fn body_or_default<T: Default + DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not the JSON this call takes (or leave it empty): {error}"),
        )
    })
}

fn key_of(text: &str) -> Result<InstanceKey, ApiError> {
    text.parse()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, e))
}

/// The body of `POST /api/v1/clusters/{name}/recover` and `.../switchover`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RecoverRequest {
    /// Promote this replica instead of the best candidate.
    #[serde(default)]
    pub to: Option<InstanceKey>,
}

async fn recover(
    State(state): State<ApiState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<RecoveryRecord> {
    let request: RecoverRequest = body_or_default(&body)?;
    state
        .coordinator
        .recover_by_hand(&name, request.to, &who)
        .await
        .map(Json)
        .map_err(|error| {
            let status = match error {
                RecoverError::UnknownCluster(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            };
            ApiError::new(status, error.to_string())
        })
}

/// Moves the primary role while the primary is healthy (the body's `to` is optional).
async fn switchover(
    State(state): State<ApiState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<SwitchoverReport> {
    let request: RecoverRequest = body_or_default(&body)?;
    state
        .coordinator
        .switchover(&name, request.to, &who)
        .await
        .map(Json)
        .map_err(switchover_error)
}

/// A switchover there and back with a verdict (`pointsman drill`); refused as a
/// switchover would be.
async fn drill(
    State(state): State<ApiState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<crate::recovery::drill::DrillReport> {
    state
        .coordinator
        .drill(&name, &who)
        .await
        .map(Json)
        .map_err(switchover_error)
}

fn switchover_error(error: SwitchoverError) -> ApiError {
    let status = match error {
        SwitchoverError::UnknownCluster(_) | SwitchoverError::UnknownInstance { .. } => {
            StatusCode::NOT_FOUND
        }
        SwitchoverError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::CONFLICT,
    };
    ApiError::new(status, error.to_string())
}

#[derive(Deserialize)]
struct ListQuery {
    cluster: Option<String>,
    limit: Option<usize>,
}

async fn recoveries(
    State(state): State<ApiState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Vec<RecoveryRecord>> {
    let limit = query.limit.unwrap_or(50).min(1000);
    match super::cluster_names(&state, query.cluster.as_deref()) {
        Some(names) => state.store.recoveries_named(&names, limit),
        None => state.store.recoveries(None, limit),
    }
    .map(Json)
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The body of `POST /api/v1/clusters/{name}/ack`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AckRequest {
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Acknowledged {
    pub cluster: String,
    pub acknowledged: usize,
}

async fn acknowledge(
    State(state): State<ApiState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Acknowledged> {
    let request: AckRequest = body_or_default(&body)?;
    let cluster = state.detail_named(&name);
    let known = cluster.is_some();
    let members: Vec<InstanceKey> = cluster
        .map(|d| d.instances.into_iter().map(|v| v.instance.key).collect())
        .unwrap_or_default();
    let count = state
        .store
        .acknowledge(&name, &who, &request.comment)
        .and_then(|by_name| {
            // Also under the names the cluster had before its failovers renamed it.
            Ok(by_name
                + state
                    .store
                    .acknowledge_of(&members, &who, &request.comment)?)
        })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // An old name of a cluster (before a failover renamed it) may still have recoveries
    // to acknowledge; a name with neither a cluster nor recoveries is a typo.
    if count == 0 && !known {
        // The refusal that lists the clusters there are.
        super::find_cluster(&state, &name)?;
    }
    let entry = AuditEntry {
        actor: who.clone(),
        action: "acknowledge".into(),
        cluster: Some(name.clone()),
        instance: None,
        message: format!("{count} recoveries acknowledged: {}", request.comment),
    };
    let _ = if count == 0 {
        state.store.audit_no_op(entry)
    } else {
        state.store.audit(entry)
    };
    Ok(Json(Acknowledged {
        cluster: name,
        acknowledged: count,
    }))
}

/// The global switch for automatic recovery.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecoverySwitch {
    pub automatic: bool,
}

async fn switch(State(state): State<ApiState>) -> ApiResult<RecoverySwitch> {
    state
        .store
        .automatic_recovery_enabled()
        .map(|automatic| Json(RecoverySwitch { automatic }))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn set_switch(
    State(state): State<ApiState>,
    Caller(who): Caller,
    body: Result<Json<RecoverySwitch>, JsonRejection>,
) -> ApiResult<RecoverySwitch> {
    let Json(request) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"automatic\": true|false}}: {}", e.body_text()),
        )
    })?;
    let was = state
        .store
        .automatic_recovery_enabled()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state
        .store
        .set_automatic_recovery(request.automatic)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let state_word = if request.automatic { "on" } else { "off" };
    let entry = |message: String| AuditEntry {
        actor: who.clone(),
        action: "recovery-switch".into(),
        cluster: None,
        instance: None,
        message,
    };
    let _ = if was == request.automatic {
        state.store.audit_no_op(entry(format!(
            "automatic recovery was already {state_word}"
        )))
    } else {
        state
            .store
            .audit(entry(format!("automatic recovery turned {state_word}")))
    };
    Ok(Json(request))
}

/// How long a downtime may last: from a second to a year (365.25 days, as `humantime`
/// counts it); a longer one is an instance to forget, and no clock may overflow adding it.
const DOWNTIME: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(31_557_600);

/// The body of `PUT /api/v1/instances/{key}/downtime`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DowntimeRequest {
    /// How long, like "1h" or "30m".
    pub duration: String,
    pub reason: String,
}

async fn downtime(
    State(state): State<ApiState>,
    Caller(who): Caller,
    Path(key): Path<String>,
    body: Result<Json<DowntimeRequest>, JsonRejection>,
) -> ApiResult<Downtime> {
    let key = key_of(&key)?;
    let Json(request) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "expected {{\"duration\": \"1h\", \"reason\": \"...\"}}: {}",
                e.body_text()
            ),
        )
    })?;
    let duration = humantime::parse_duration(request.duration.trim()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "duration: expected a duration like \"1h\", got \"{}\"",
                request.duration
            ),
        )
    })?;
    if !DOWNTIME.contains(&duration) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "duration: {} is outside 1s..1year: to end a downtime, DELETE it (`pointsman downtime {key} --end`); to keep an instance out for good, forget it",
                humantime::format_duration(duration)
            ),
        ));
    }
    if request.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "reason: say why the instance is downtimed",
        ));
    }
    if state.discovery.snapshot().get(&key).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{key} is not a known instance: check the address (`pointsman clusters`), or discover it first"),
        ));
    }
    let downtime = Downtime {
        instance: key.clone(),
        until: SystemTime::now() + duration,
        reason: request.reason,
        owner: who.clone(),
    };
    state
        .store
        .set_downtime(&downtime)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let _ = state.store.audit(AuditEntry {
        actor: who.clone(),
        action: "downtime".into(),
        cluster: None,
        instance: Some(key),
        message: format!(
            "downtimed for {}: {}",
            humantime::format_duration(duration),
            downtime.reason
        ),
    });
    Ok(Json(downtime))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DowntimeEnded {
    pub instance: InstanceKey,
    pub ended: bool,
}

async fn end_downtime(
    State(state): State<ApiState>,
    Path(key): Path<String>,
) -> ApiResult<DowntimeEnded> {
    let key = key_of(&key)?;
    let ended = state
        .store
        .end_downtime(&key)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(DowntimeEnded {
        instance: key,
        ended,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reattached {
    pub instance: InstanceKey,
    pub source: InstanceKey,
}

async fn reattach(
    State(state): State<ApiState>,
    Caller(who): Caller,
    Path(key): Path<String>,
) -> ApiResult<Reattached> {
    let key = key_of(&key)?;
    state
        .coordinator
        .reattach(&key, &who)
        .await
        .map(|source| {
            Json(Reattached {
                instance: key.clone(),
                source,
            })
        })
        .map_err(|error| {
            let status = match error {
                ReattachError::NotFenced(_) | ReattachError::Diverged { .. } => {
                    StatusCode::CONFLICT
                }
                ReattachError::Unreachable(_) | ReattachError::NoPrimary(_) => StatusCode::CONFLICT,
                _ => StatusCode::BAD_GATEWAY,
            };
            ApiError::new(status, error.to_string())
        })
}
