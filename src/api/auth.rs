//! Who may call the API. With `api.token` set, every call that changes something needs
//! `Authorization: Bearer <token>`, and with `api.token_for_reads` every read does too —
//! except `/api/v1/health`, which load balancers poll. Blanks around the offered token
//! are dropped, as around the configured one. The token is compared in constant time
//! and never appears in a log line or a reply. Which pages may call is `origin`'s job.

use super::ApiError;
use crate::config::Secret;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The API's access rule.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub token: Option<Secret>,
    pub token_for_reads: bool,
}

/// Lets a request through, or answers 401 saying how to pass the token.
pub async fn require_token(State(access): State<Access>, request: Request, next: Next) -> Response {
    let Some(token) = &access.token else {
        return next.run(request).await;
    };
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    if request.uri().path() == "/api/v1/health" || (reading && !access.token_for_reads) {
        return next.run(request).await;
    }
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, offered) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| offered.trim())
        });
    let refusal = match offered {
        Some(offered) if same(offered.as_bytes(), token.expose().as_bytes()) => {
            return next.run(request).await;
        }
        Some(_) => "the bearer token is not this agent's api.token",
        None => "this agent requires a token for this call: pass --token or set POINTSMAN_TOKEN (the value of the agent's api.token)",
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, refusal).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"pointsman\""),
    );
    response
}

/// Equal bytes, in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_by_every_byte() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3cres"));
        assert!(!same(b"s3cret", b"s3cre"));
    }
}
