//! Endpoints for an operator's actions on one instance — relocate a replica, start or
//! stop its replication, set read_only — and the ranked candidates for a cluster's
//! primary, with the reason each may or may not take over (what the web page's
//! "Recover" offers), and what would happen if the primary died now (`what-if`). Every action answers `{instance, message}` or an error sentence.

use super::{ApiError, ApiResult, ApiState, Caller};
use crate::recovery::operate::OperateError;
use crate::recovery::plan::{plan_promotion, CandidateVerdict, PlanError};
use crate::topology::InstanceKey;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/instances/{key}/relocate", post(relocate))
        .route("/api/v1/instances/{key}/replication", post(replication))
        .route("/api/v1/instances/{key}/read_only", put(read_only))
        .route("/api/v1/clusters/{name}/candidates", get(candidates))
        .route("/api/v1/clusters/{name}/what-if", get(what_if))
}

/// What an action did.
#[derive(Debug, Serialize, Deserialize)]
pub struct Done {
    pub instance: InstanceKey,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RelocateRequest {
    /// The instance to replicate from.
    pub below: InstanceKey,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReplicationRequest {
    pub running: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReadOnlyRequest {
    pub read_only: bool,
}

fn key_of(text: &str) -> Result<InstanceKey, ApiError> {
    text.parse()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, e))
}

/// The request body, or a 400 that says what is wrong with it.
fn required<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, error.body_text()))
}

fn answer(key: InstanceKey, result: Result<String, OperateError>) -> ApiResult<Done> {
    result
        .map(|message| {
            Json(Done {
                instance: key,
                message,
            })
        })
        .map_err(|error| {
            let status = match error {
                OperateError::Refused(_) | OperateError::Busy(_) => StatusCode::CONFLICT,
                OperateError::Failed(_) => StatusCode::BAD_GATEWAY,
            };
            ApiError::new(status, error.to_string())
        })
}

async fn relocate(
    State(state): State<ApiState>,
    Caller(who): Caller,
    Path(key): Path<String>,
    body: Result<Json<RelocateRequest>, JsonRejection>,
) -> ApiResult<Done> {
    let key = key_of(&key)?;
    let request = required(body)?;
    let result = state.coordinator.relocate(&key, &request.below, &who).await;
    answer(key, result)
}

async fn replication(
    State(state): State<ApiState>,
    Caller(who): Caller,
    Path(key): Path<String>,
    body: Result<Json<ReplicationRequest>, JsonRejection>,
) -> ApiResult<Done> {
    let key = key_of(&key)?;
    let request = required(body)?;
    let result = state
        .coordinator
        .set_replication(&key, request.running, &who)
        .await;
    answer(key, result)
}

async fn read_only(
    State(state): State<ApiState>,
    Caller(who): Caller,
    Path(key): Path<String>,
    body: Result<Json<ReadOnlyRequest>, JsonRejection>,
) -> ApiResult<Done> {
    let key = key_of(&key)?;
    let request = required(body)?;
    let result = state
        .coordinator
        .set_read_only_by_hand(&key, request.read_only, &who)
        .await;
    answer(key, result)
}

/// Who could replace a cluster's primary, best first, and why the others may not.
#[derive(Debug, Serialize, Deserialize)]
pub struct Candidates {
    pub cluster: String,
    pub failed: InstanceKey,
    pub verdicts: Vec<CandidateVerdict>,
    /// Why no replica can be judged at all (no replicas, no GTID).
    pub error: Option<String>,
}

/// The cluster called `name` in `snapshot`, or a 404 saying so.
fn named_cluster(
    state: &ApiState,
    snapshot: &crate::topology::Snapshot,
    name: &str,
) -> Result<crate::topology::ClusterView, ApiError> {
    state
        .discovery
        .clusters(snapshot, &state.aliases)
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no cluster named \"{name}\" (`pointsman clusters` lists them)"),
            )
        })
}

/// If the cluster's primary died now: who would take over, and what would keep the
/// agent from acting by itself. Changes nothing.
async fn what_if(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<crate::recovery::what_if::WhatIf> {
    let snapshot = state.discovery.snapshot();
    let cluster = named_cluster(&state, &snapshot, &name)?;
    Ok(Json(state.coordinator.what_if(&cluster, &snapshot)))
}

async fn candidates(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Candidates> {
    let snapshot = state.discovery.snapshot();
    let cluster = named_cluster(&state, &snapshot, &name)?;
    let (verdicts, error) =
        match plan_promotion(&cluster.primary, &snapshot, &state.coordinator.policy, None) {
            Ok(plan) => (plan.verdicts, None),
            Err(PlanError::NoCandidate { verdicts, .. }) => (verdicts, None),
            Err(other) => (Vec::new(), Some(other.to_string())),
        };
    Ok(Json(Candidates {
        cluster: cluster.name,
        failed: cluster.primary,
        verdicts,
        error,
    }))
}
