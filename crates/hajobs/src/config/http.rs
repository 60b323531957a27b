//! `[http]`: where the daemon serves its API, page and metrics, who may
//! read and who may act, and the limits that keep it standing under load.
//!
//! Two tokens with two roles: the **read token** opens the GET routes
//! (except `/health` and `/ready`, which probes need), the **admin token**
//! every route. Either comes from the file or the environment
//! (`HAJOBS_READ_TOKEN`, `HAJOBS_ADMIN_TOKEN`, which win); an empty one from
//! any source is an error naming it. A listener other machines can reach
//! needs an admin token, or `allow_unauthenticated = true` said out loud.

use std::net::SocketAddr;
use std::time::Duration;

use hajobs_core::Secret;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Overrides, Source, shown};

/// The default HTTP address: this machine only.
pub(crate) const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7070";
/// Requests served at once by default; more are answered 503 at once.
pub(crate) const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;
/// How long one request may take by default, headers included.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    listen: Option<Spanned<String>>,
    admin_token: Option<Spanned<Secret>>,
    read_token: Option<Spanned<Secret>>,
    allow_unauthenticated: Option<bool>,
    public_names: Option<Vec<Spanned<String>>>,
    max_concurrent_requests: Option<Spanned<usize>>,
    request_timeout: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
}

/// `[http]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct HttpConfig {
    /// The address to listen on (`127.0.0.1:7070` unless said otherwise).
    pub(crate) listen: SocketAddr,
    /// Required (as `Authorization: Bearer …`) by every route but the probes.
    pub(crate) admin_token: Option<Secret>,
    /// When set, GET routes require it or the admin token.
    pub(crate) read_token: Option<Secret>,
    /// Serve a non-loopback address without an admin token (warned at start).
    pub(crate) allow_unauthenticated: bool,
    /// Host names (and `name:port`) the API answers to besides loopback
    /// ones: a request naming another host is refused (DNS rebinding).
    pub(crate) public_names: Vec<String>,
    /// Requests served at once; more are answered 503.
    pub(crate) max_concurrent_requests: usize,
    /// How long one request may take, reading its headers included.
    pub(crate) request_timeout: Duration,
    /// The `host:port` other replicas and the CLI reach this listener at
    /// (published in the node registry, where a requester finds whom to
    /// wake); by default the listen address, or this machine's host name
    /// with its port when listening on every interface.
    pub(crate) advertise: Option<String>,
}

impl HttpConfig {
    /// Whether only this machine can reach the listener.
    pub(crate) fn is_loopback(&self) -> bool {
        self.listen.ip().is_loopback()
    }
}

pub(super) fn http_config(
    src: &Source<'_>,
    raw: Option<&RawHttp>,
    overrides: &Overrides,
) -> Result<Option<HttpConfig>, ConfigError> {
    let listen: SocketAddr = match (&overrides.http_listen, raw) {
        (Some(addr), _) => addr.parse().map_err(|e| {
            ConfigError(format!(
                "HAJOBS_HTTP_LISTEN: `{}` is not an address like `127.0.0.1:7070` ({e})",
                shown(addr)
            ))
        })?,
        (
            None,
            Some(RawHttp {
                listen: Some(l), ..
            }),
        ) => l.get_ref().trim().parse().map_err(|e| {
            src.error(
                l,
                None,
                "http.listen",
                format!(
                    "`{}` is not an address like `127.0.0.1:7070` ({e})",
                    shown(l.get_ref())
                ),
            )
        })?,
        (None, Some(_)) => DEFAULT_HTTP_LISTEN.parse().expect("a valid default"),
        (None, None) => return Ok(None),
    };
    let raw_default = RawHttp::default();
    let raw = raw.unwrap_or(&raw_default);
    let admin_token = token(
        src,
        overrides.admin_token.as_ref(),
        "HAJOBS_ADMIN_TOKEN (or --admin-token)",
        raw.admin_token.as_ref(),
        "http.admin_token",
    )?;
    let read_token = token(
        src,
        overrides.read_token.as_ref(),
        "HAJOBS_READ_TOKEN",
        raw.read_token.as_ref(),
        "http.read_token",
    )?;
    if let (Some(a), Some(r)) = (&admin_token, &read_token) {
        if a == r {
            return Err(ConfigError(format!(
                "{}: http: the read token and the admin token are the same: a reader could act",
                src.path.display()
            )));
        }
    }
    let mut public_names = Vec::new();
    for name in raw.public_names.iter().flatten() {
        let n = name.get_ref().trim().to_ascii_lowercase();
        if n.is_empty() || n.contains(['/', ' ', '@']) {
            return Err(src.error(
                name,
                None,
                "http.public_names",
                format!("`{}` is not a host name", shown(name.get_ref())),
            ));
        }
        public_names.push(n);
    }
    let max_concurrent_requests = match &raw.max_concurrent_requests {
        Some(m) if *m.get_ref() == 0 => {
            return Err(src.error(m, None, "http.max_concurrent_requests", "0: at least 1"));
        }
        Some(m) => *m.get_ref(),
        None => DEFAULT_MAX_CONCURRENT_REQUESTS,
    };
    let request_timeout = match &raw.request_timeout {
        Some(t) => src.duration(t, None, "http.request_timeout")?,
        None => DEFAULT_REQUEST_TIMEOUT,
    };
    let advertise = match (&overrides.http_advertise, &raw.advertise) {
        (Some(a), _) => Some(
            advertised_address(a).ok_or_else(|| {
                ConfigError(format!(
                    "HAJOBS_HTTP_ADVERTISE: `{}` is not an address like `10.0.0.5:7070` or `node-1.internal:7070`",
                    shown(a)
                ))
            })?,
        ),
        (None, Some(a)) => Some(advertised_address(a.get_ref()).ok_or_else(|| {
            src.error(
                a,
                None,
                "http.advertise",
                format!(
                    "`{}` is not an address like `10.0.0.5:7070` or `node-1.internal:7070`",
                    shown(a.get_ref())
                ),
            )
        })?),
        (None, None) => None,
    };
    let http = HttpConfig {
        listen,
        admin_token,
        read_token,
        allow_unauthenticated: raw.allow_unauthenticated.unwrap_or(false),
        public_names,
        max_concurrent_requests,
        request_timeout,
        advertise,
    };
    if !http.is_loopback() && http.admin_token.is_none() && !http.allow_unauthenticated {
        return Err(ConfigError(format!(
            "{}: http: `{listen}` can be reached from other machines but no admin token is set: \
             set HAJOBS_ADMIN_TOKEN (or http.admin_token), or `allow_unauthenticated = true` to serve it open",
            src.path.display()
        )));
    }
    Ok(Some(http))
}

/// `text` as an advertised `host:port`, if it is one.
fn advertised_address(text: &str) -> Option<String> {
    let text = text.trim();
    let (host, port) = text.rsplit_once(':')?;
    let valid = !host.is_empty()
        && !host.contains(['/', ' ', '@'])
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    valid.then(|| text.to_owned())
}

/// A token from the environment (wins) or the file; empty is an error
/// naming where it came from.
fn token(
    src: &Source<'_>,
    from_env: Option<&Secret>,
    env_name: &str,
    from_file: Option<&Spanned<Secret>>,
    field: &str,
) -> Result<Option<Secret>, ConfigError> {
    match (from_env, from_file) {
        (Some(t), _) if t.expose().trim().is_empty() => Err(ConfigError(format!(
            "{env_name}: empty: unset it to use the file's, or set a secret"
        ))),
        (Some(t), _) => Ok(Some(t.clone())),
        (None, Some(t)) if t.get_ref().expose().trim().is_empty() => {
            Err(src.error(t, None, field, "empty: remove it, or set a secret"))
        }
        (None, Some(t)) => Ok(Some(t.get_ref().clone())),
        (None, None) => Ok(None),
    }
}
