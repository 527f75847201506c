//! The web page: a handful of static files (`src/api/web/`) compiled into the binary
//! and served at `/`, so the agent needs no Node, no CDN and no network to show it.
//! The page is plain JavaScript modules and SVG that read and act through the same
//! `/api/v1` endpoints the CLI uses; this module only hands out the files.
//!
//! It owns the files' content types and caching: every answer carries an ETag (a hash
//! of the file, so a new binary is never served from a stale cache) and
//! `Cache-Control: no-cache`, which makes browsers revalidate — a 304 costs one round
//! trip and no body. The page may only load its own files and talk to its own agent
//! (Content-Security-Policy), and may not be framed by another site.
//!
//! It must not hold data or secrets: these routes are outside the token check
//! (`api::auth`), since the page asks for the token itself when the API wants one.

use super::ApiState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("web/index.html"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("web/app.css"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("web/app.js"),
    },
    Asset {
        path: "/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("web/api.js"),
    },
    Asset {
        path: "/dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("web/dom.js"),
    },
    Asset {
        path: "/topology.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("web/topology.js"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("web/favicon.svg"),
    },
];

/// What the page may load and talk to: only this agent. Inline scripts are refused.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The page's routes, to merge into the API router.
pub fn routes() -> Router<ApiState> {
    let mut router = Router::new();
    for (index, asset) in ASSETS.iter().enumerate() {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(index, &headers) }),
        );
    }
    // `/index.html` is what people type after years of web servers.
    router.route(
        "/index.html",
        get(|headers: HeaderMap| async move { serve(0, &headers) }),
    )
}

/// Every asset's ETag, computed once: FNV-1a over the bytes, quoted.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let hash = asset.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
                format!("\"{hash:016x}\"")
            })
            .collect()
    })
}

fn serve(index: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.path == "/" {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_module_the_page_imports_is_served() {
        // A module imported by the page but missing here would break it only in a
        // browser: check the imports against the table.
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        let mut checked = 0;
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(start) = line.find("'./") else {
                    continue;
                };
                let rest = &line[start + 2..];
                let path = &rest[..rest.find('\'').expect("closing quote")];
                assert!(
                    served.contains(&path),
                    "{} imports {path}, which is not served",
                    asset.path
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 3,
            "only {checked} imports found: the check reads nothing"
        );
    }

    #[test]
    fn etags_differ_between_files() {
        let tags = etags();
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
