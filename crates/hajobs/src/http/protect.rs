//! What every request passes before a route sees it: the Host it names, the
//! token it carries, where a browser sent it from, and the room left; and
//! the headers every answer carries.
//!
//! | check | refused with |
//! |---|---|
//! | `Host` is a loopback name, an IP address or one of `http.public_names` (DNS rebinding) | 403 `bad_host` |
//! | GET routes, with a read token set: the read or the admin token | 401 `unauthorized` |
//! | other methods, with an admin token set: the admin token (the read token is refused) | 401 / 403 `forbidden` |
//! | other methods: not sent by another site (`Sec-Fetch-Site`, `Origin`) | 403 `cross_site` |
//! | other methods: JSON (`Content-Type: application/json`) or with `Authorization`, so no plain form of another page can send it | 415 `unsupported_media_type` |
//! | at most `http.max_concurrent_requests` at once (the probes, the page and `/metrics` aside) | 503 `busy` |
//! | each done within `http.request_timeout` | 503 `timed_out` |
//!
//! `/health`, `/ready`, `/openapi.json`, the page and its script and style
//! need no token: they say nothing about the jobs. Nor does `POST /wake`,
//! which tells nothing and changes nothing: it asks the replica to read the
//! trigger requests in Cassandra now (at most one read per 25 ms however
//! often it is called).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hajobs_core::Secret;
use tokio::sync::Semaphore;

use super::Failure;
use crate::config::HttpConfig;

/// The page may load its own script and style and call its own API; nothing
/// inline, nothing from elsewhere, never in a frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Who a request is, by the token it showed; recorded as `requested_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// No token is configured for what it asked.
    Open,
    /// It showed the read token.
    Reader,
    /// It showed the admin token.
    Admin,
}

impl Caller {
    /// The name a trigger records for it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Open => "http",
            Self::Reader => "http:read-token",
            Self::Admin => "http:admin-token",
        }
    }
}

/// The rules of [this module](self), from `[http]`.
pub(crate) struct Protection {
    admin_token: Option<Secret>,
    read_token: Option<Secret>,
    /// Lower-cased names a `Host` header may carry besides loopback ones and IPs.
    public_names: Vec<String>,
    /// Permits for requests in progress.
    room: Arc<Semaphore>,
    /// `http.max_concurrent_requests`, for the 503's words.
    max_concurrent: usize,
    request_timeout: Duration,
}

impl Protection {
    pub(crate) fn new(http: &HttpConfig) -> Self {
        Self {
            admin_token: http.admin_token.clone(),
            read_token: http.read_token.clone(),
            public_names: http.public_names.clone(),
            room: Arc::new(Semaphore::new(http.max_concurrent_requests)),
            max_concurrent: http.max_concurrent_requests,
            request_timeout: http.request_timeout,
        }
    }

    /// No token, loopback names only, the default limits (tests).
    #[cfg(test)]
    pub(crate) fn open() -> Self {
        Self::new(&HttpConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
            admin_token: None,
            read_token: None,
            allow_unauthenticated: false,
            public_names: Vec::new(),
            max_concurrent_requests: crate::config::http::DEFAULT_MAX_CONCURRENT_REQUESTS,
            request_timeout: crate::config::http::DEFAULT_REQUEST_TIMEOUT,
            advertise: None,
        })
    }

    fn host_allowed(&self, headers: &HeaderMap) -> Result<(), Failure> {
        // HTTP/1.0 clients may send none; browsers always do.
        let Some(host) = headers.get(header::HOST) else {
            return Ok(());
        };
        let host = host.to_str().unwrap_or("").to_ascii_lowercase();
        let name = host_name(&host);
        let allowed = name == "localhost"
            || name.ends_with(".localhost")
            || name.parse::<std::net::IpAddr>().is_ok()
            || self.public_names.iter().any(|p| *p == host || *p == name);
        if allowed {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::FORBIDDEN,
                "bad_host",
                format!(
                    "Host `{}` is not a name this API answers to: add it to `http.public_names`",
                    host.escape_default()
                ),
            ))
        }
    }

    /// The caller a token makes of a request, or 401 / 403.
    fn caller(&self, headers: &HeaderMap, reading: bool) -> Result<Caller, Failure> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let is = |token: &Option<Secret>, g: &str| {
            token
                .as_ref()
                .is_some_and(|t| constant_time_eq(g.as_bytes(), t.expose().as_bytes()))
        };
        let needed = if reading {
            self.read_token.is_some()
        } else {
            self.admin_token.is_some()
        };
        match given {
            Some(g) if is(&self.admin_token, g) => Ok(Caller::Admin),
            Some(g) if is(&self.read_token, g) => {
                if reading {
                    Ok(Caller::Reader)
                } else {
                    Err(Failure::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "the read token cannot change anything: this route needs the admin token",
                    ))
                }
            }
            Some(_) if needed => Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token does not match",
            )),
            None if needed => Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                if reading {
                    "this route needs `Authorization: Bearer TOKEN` (the read or the admin token)"
                } else {
                    "this route needs `Authorization: Bearer TOKEN` (the admin token)"
                },
            )),
            _ => Ok(Caller::Open),
        }
    }
}

/// The name of a `Host` value, without its port (`[::1]:7070` → `::1`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

/// Whether a browser says another site sent this request.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return Some(format!("Sec-Fetch-Site: {}", site.escape_default()));
        }
    }
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("?");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    (!origin_host.eq_ignore_ascii_case(host))
        .then(|| format!("Origin {} is not this API's", origin.escape_default()))
}

/// The route that wakes the request watcher: it carries nothing, grants
/// nothing and costs at most one read per wake gap, so any other replica or
/// CLI may call it without a token (a browser's still cannot: the
/// cross-site and JSON rules apply).
const WAKE: &str = "/wake";

/// Routes that say nothing about the jobs: no token, no limit.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/page.js" | "/page.css" | "/health" | "/ready" | "/openapi.json"
    )
}

/// The checks of [this module](self), then the route; every answer gets
/// the security headers.
pub(crate) async fn protect(
    State(p): State<Arc<Protection>>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut response = match check(&p, &mut request) {
        Ok(()) => limited(&p, request, next).await,
        Err(failure) => failure.into_response(),
    };
    let h = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn check(p: &Protection, request: &mut Request) -> Result<(), Failure> {
    let headers = request.headers();
    p.host_allowed(headers)?;
    let path = request.uri().path();
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let caller = if (is_public(path) && reading) || (path == WAKE && !reading) {
        Caller::Open
    } else {
        p.caller(headers, reading)?
    };
    if !reading {
        if let Some(why) = cross_site(headers) {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "cross_site",
                format!("a request sent by another site is refused ({why})"),
            ));
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if !json && !headers.contains_key(header::AUTHORIZATION) {
            return Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send `Content-Type: application/json` (or an `Authorization` header) with this method",
            ));
        }
    }
    request.extensions_mut().insert(caller);
    Ok(())
}

/// Routes that answer from memory or for probes: never refused for lack
/// of room, so that a flooded replica still reports its health and metrics.
fn is_unlimited(path: &str) -> bool {
    is_public(path) || path == "/metrics"
}

/// The route within the room and the time it has.
async fn limited(p: &Protection, request: Request, next: Next) -> Response {
    if is_unlimited(request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_permit) = p.room.clone().try_acquire_owned() else {
        let mut r = Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "{} requests in progress (http.max_concurrent_requests): try again",
                p.max_concurrent
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    match tokio::time::timeout(p.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timed_out",
            format!(
                "not answered within {} (http.request_timeout)",
                humantime::format_duration(p.request_timeout)
            ),
        )
        .into_response(),
    }
}

/// The protections in the OpenAPI document: the `admin_token` and
/// `read_token` schemes, and on every route the answers they add (so that
/// every answer a route can give is documented).
pub(crate) struct Documented;

impl utoipa::Modify for Documented {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        for scheme in ["admin_token", "read_token"] {
            components.add_security_scheme(
                scheme,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
        let error = |why: &str| {
            ResponseBuilder::new()
                .description(why)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ApiError")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = is_public(path);
            let unlimited = is_unlimited(path);
            let with_params = path.contains('{');
            for (reading, op) in [
                (true, item.get.as_mut()),
                (false, item.post.as_mut()),
                (false, item.delete.as_mut()),
            ] {
                let Some(op) = op else { continue };
                let mut add = |code: &str, why: &str| {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error(why).into());
                };
                add(
                    "403",
                    "`bad_host`: the Host is not one this API answers to; `cross_site`, `forbidden` (the read token on a mutating route)",
                );
                if public {
                    continue;
                }
                if !unlimited {
                    add(
                        "503",
                        "`busy`: http.max_concurrent_requests in progress; `timed_out`: http.request_timeout passed; `unavailable`: Cassandra",
                    );
                }
                if path != WAKE {
                    add(
                        "401",
                        "`unauthorized`: a token is configured for this route and none, or another, was shown",
                    );
                }
                if with_params || !reading {
                    add(
                        "400",
                        "`bad_input`: a path, query or body that cannot be read",
                    );
                }
                if !reading {
                    add(
                        "415",
                        "`unsupported_media_type`: neither `Content-Type: application/json` nor `Authorization`",
                    );
                    add("413", "`too_large`: a body over 16 KiB");
                }
                if reading && op.security.is_none() {
                    op.security = Some(vec![
                        SecurityRequirement::new("read_token", Vec::<String>::new()),
                        SecurityRequirement::new("admin_token", Vec::<String>::new()),
                    ]);
                }
            }
        }
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("localhost:7070"), "localhost");
        assert_eq!(host_name("[::1]:7070"), "::1");
        assert_eq!(host_name("10.0.0.1"), "10.0.0.1");
        assert_eq!(host_name("jobs.example.com:80"), "jobs.example.com");
    }

    #[test]
    fn only_loopback_names_ips_and_public_names_are_answered() {
        let mut p = Protection::open();
        for ok in [
            "localhost:7070",
            "127.0.0.1:7070",
            "[::1]:7070",
            "10.1.2.3:7070",
        ] {
            assert!(p.host_allowed(&headers(&[("host", ok)])).is_ok(), "{ok}");
        }
        assert!(
            p.host_allowed(&headers(&[("host", "evil.example:7070")]))
                .is_err()
        );
        p.public_names = vec!["jobs.example.com".into()];
        assert!(
            p.host_allowed(&headers(&[("host", "jobs.example.com:7070")]))
                .is_ok()
        );
        assert!(
            p.host_allowed(&headers(&[("host", "JOBS.example.com")]))
                .is_ok()
        );
    }

    #[test]
    fn tokens_make_callers_and_the_read_token_cannot_act() {
        let mut p = Protection::open();
        assert_eq!(p.caller(&headers(&[]), false).ok(), Some(Caller::Open));
        p.admin_token = Some(Secret::new("admin-t"));
        p.read_token = Some(Secret::new("read-t"));
        let bearer = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
        assert_eq!(
            p.caller(&bearer("admin-t"), false).ok(),
            Some(Caller::Admin)
        );
        assert_eq!(p.caller(&bearer("admin-t"), true).ok(), Some(Caller::Admin));
        assert_eq!(p.caller(&bearer("read-t"), true).ok(), Some(Caller::Reader));
        assert_eq!(
            p.caller(&bearer("read-t"), false).err().unwrap().0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            p.caller(&bearer("nope"), true).err().unwrap().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            p.caller(&headers(&[]), true).err().unwrap().0,
            StatusCode::UNAUTHORIZED
        );
        // Without a read token, reading is open even with an admin token.
        p.read_token = None;
        assert_eq!(p.caller(&headers(&[]), true).ok(), Some(Caller::Open));
    }

    #[test]
    fn requests_from_other_sites_are_seen() {
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])).is_some());
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-origin")])).is_none());
        assert!(
            cross_site(&headers(&[
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:7070")
            ]))
            .is_some()
        );
        assert!(
            cross_site(&headers(&[
                ("origin", "http://127.0.0.1:7070"),
                ("host", "127.0.0.1:7070")
            ]))
            .is_none()
        );
        assert!(cross_site(&headers(&[])).is_none());
    }
}
