//! The API token: with `api.token` set, calls that change something need it (401
//! otherwise, saying how to pass it), reads stay open unless `api.token_for_reads`,
//! and the health check is always open. No database is needed: the refusal comes
//! before anything is done.

mod support;

use pointsman::agent::RunningAgent;
use pointsman::client::{ApiClient, ClientError};
use pointsman::config::{Config, Secret};
use serde_json::json;
use support::api_error;

async fn agent(token_for_reads: bool) -> (RunningAgent, tempfile::TempDir) {
    let store = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.store.path = store.path().join("pointsman.db");
    config.api.listen = "127.0.0.1:0".into();
    config.api.token = Some(Secret::new("s3cret-token"));
    config.api.token_for_reads = token_for_reads;
    let settings = config.validate().expect("valid settings");
    let agent = RunningAgent::start(&settings).await.expect("agent starts");
    (agent, store)
}

fn client(agent: &RunningAgent, token: Option<&str>) -> ApiClient {
    ApiClient::new(&format!("http://{}", agent.api_address)).with_token(token.map(String::from))
}

fn status_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> u16 {
    api_error(result).0
}

#[tokio::test]
async fn changes_need_the_token_and_reads_stay_open() {
    let (agent, _store) = agent(false).await;
    let discover = json!({"host": "127.0.0.1", "port": 1});

    let anonymous = client(&agent, None);
    let refused = anonymous
        .post::<_, serde_json::Value>("/api/v1/discover", &discover)
        .await;
    match refused {
        Err(ClientError::Api {
            status, message, ..
        }) => {
            assert_eq!(status, 401);
            assert!(message.contains("--token"), "{message}");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    for (path, body) in [
        ("/api/v1/recovery", json!({"automatic": false})),
        (
            "/api/v1/instances/127.0.0.1:1/downtime",
            json!({"duration": "1h", "reason": "x"}),
        ),
    ] {
        assert_eq!(
            status_of(anonymous.put::<_, serde_json::Value>(path, &body).await),
            401,
            "PUT {path}"
        );
    }
    assert_eq!(
        status_of(
            anonymous
                .delete::<serde_json::Value>("/api/v1/instances/127.0.0.1:1")
                .await
        ),
        401
    );
    let wrong = client(&agent, Some("guess"));
    assert_eq!(
        status_of(
            wrong
                .post::<_, serde_json::Value>("/api/v1/discover", &discover)
                .await
        ),
        401
    );
    // Nothing was changed by the refused calls.
    let switch: serde_json::Value = anonymous.get("/api/v1/recovery").await.expect("read");
    assert_eq!(switch["automatic"], json!(true), "{switch}");

    // The right token passes: the call runs (and fails on its own terms).
    let owner = client(&agent, Some("s3cret-token"));
    assert_eq!(
        status_of(
            owner
                .post::<_, serde_json::Value>("/api/v1/discover", &discover)
                .await
        ),
        502,
        "the instance does not answer, which is the call's own error"
    );
    assert!(anonymous
        .get::<serde_json::Value>("/api/v1/clusters")
        .await
        .is_ok());
    agent.stop().await.expect("stops");
}

#[tokio::test]
async fn reads_can_be_closed_too_but_not_the_health_check() {
    let (agent, _store) = agent(true).await;
    let anonymous = client(&agent, None);
    assert_eq!(
        status_of(anonymous.get::<serde_json::Value>("/api/v1/clusters").await),
        401
    );
    assert!(anonymous
        .get::<serde_json::Value>("/api/v1/health")
        .await
        .is_ok());
    let owner = client(&agent, Some("s3cret-token"));
    assert!(owner
        .get::<serde_json::Value>("/api/v1/clusters")
        .await
        .is_ok());
    agent.stop().await.expect("stops");
}

#[test]
fn token_for_reads_without_a_token_is_a_configuration_error() {
    let mut config = Config::defaults();
    config.api.token_for_reads = true;
    let error = config.validate().expect_err("refused");
    assert!(error.to_string().contains("api.token_for_reads"), "{error}");
}

/// A token file as editors and `echo` write it: blanks around the token are not part of
/// it, on either side of the comparison.
#[tokio::test]
async fn a_token_file_with_blanks_around_the_token_matches_it() {
    let store = tempfile::tempdir().expect("temp dir");
    let token_file = store.path().join("api-token");
    std::fs::write(&token_file, "  s3cret-token \n\n").expect("write the token");
    let mut config = Config::defaults();
    config.store.path = store.path().join("pointsman.db");
    config.api.listen = "127.0.0.1:0".into();
    config.api.token_file = Some(token_file);
    let settings = config.validate().expect("valid settings");
    let agent = RunningAgent::start(&settings).await.expect("agent starts");
    for offered in ["s3cret-token", " s3cret-token  "] {
        let owner = client(&agent, Some(offered));
        let switch: serde_json::Value = owner
            .put("/api/v1/recovery", &json!({"automatic": true}))
            .await
            .unwrap_or_else(|e| panic!("the token {offered:?} is refused: {e}"));
        assert_eq!(switch["automatic"], json!(true));
    }
    assert_eq!(
        status_of(
            client(&agent, Some("s3cret"))
                .put::<_, serde_json::Value>("/api/v1/recovery", &json!({"automatic": true}))
                .await
        ),
        401
    );
    agent.stop().await.expect("stops");
}

/// An empty token would leave the API open while its owner believes it closed.
#[test]
fn an_empty_token_is_refused_at_start_up_by_its_key() {
    let blank = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(blank.path(), " \n").expect("write");
    let mut config = Config::defaults();
    config.api.token_file = Some(blank.path().to_path_buf());
    let error = config.validate().expect_err("refused").to_string();
    assert!(error.contains("api.token_file"), "{error}");
    assert!(error.contains("is empty"), "{error}");

    let mut config = Config::defaults();
    config.api.token = Some(Secret::new(""));
    let error = config.validate().expect_err("refused").to_string();
    assert!(error.contains("api.token: the token is empty"), "{error}");
}
