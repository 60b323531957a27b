//! `[cassandra]` and `[cassandra.tls]`: where the cluster is, how to log in
//! and how to encrypt, from the file and the environment.
//!
//! Every setting can come from the environment as well as the file (the
//! environment wins): `HAJOBS_CASSANDRA_USER`, `HAJOBS_CASSANDRA_PASSWORD`
//! or `HAJOBS_CASSANDRA_PASSWORD_FILE`, `HAJOBS_CASSANDRA_TLS_CA`,
//! `HAJOBS_CASSANDRA_TLS_CERT`, `HAJOBS_CASSANDRA_TLS_KEY`,
//! `HAJOBS_CASSANDRA_TLS_VERIFY_HOSTNAME`. A password is never shown: not in
//! an error, not in `Debug`.

use std::path::{Path, PathBuf};

use hajobs_core::{CassandraConfig, ClientCert, Secret, TlsConfig};
use hajobs_scheduler::LockConsistency;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Overrides, Source};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCassandra {
    nodes: Option<Vec<String>>,
    keyspace: Option<String>,
    datacenter: Option<String>,
    /// `local` (LOCAL_QUORUM / LOCAL_SERIAL) or `global` (QUORUM / SERIAL).
    consistency: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<Secret>>,
    password_file: Option<Spanned<PathBuf>>,
    pub(super) replication: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<Spanned<PathBuf>>,
    cert_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
    verify_hostname: Option<bool>,
}

/// The cluster's configuration: the file's `[cassandra]` under the overrides.
pub(super) fn cassandra_config(
    src: &Source<'_>,
    c: &RawCassandra,
    overrides: &Overrides,
) -> Result<CassandraConfig, ConfigError> {
    let path = src.path;
    let mut cassandra = match (&overrides.nodes, &c.nodes) {
        (Some(list), _) => CassandraConfig::from_contact_list(list),
        (None, Some(nodes)) => CassandraConfig::new(nodes.clone()),
        (None, None) => CassandraConfig::default(),
    };
    if let Some(ks) = overrides.keyspace.clone().or_else(|| c.keyspace.clone()) {
        hajobs_core::schema::validate_keyspace(&ks)
            .map_err(|e| ConfigError(format!("{}: cassandra.keyspace: {e}", path.display())))?;
        cassandra = cassandra.with_keyspace(ks);
    }
    if let Some(dc) = overrides
        .datacenter
        .clone()
        .or_else(|| c.datacenter.clone())
    {
        cassandra = cassandra.with_local_datacenter(dc);
    }
    if let Some(consistency) = &c.consistency {
        match src.choice(consistency, None, "cassandra.consistency")? {
            LockConsistency::Local => {}
            LockConsistency::Global => cassandra = cassandra.with_global_consistency(),
        }
    }
    if let Some((user, password)) = credentials(src, c, overrides)? {
        cassandra = cassandra.with_credentials(user, password);
    }
    if let Some(tls) = tls(src, c.tls.as_ref(), overrides)? {
        cassandra = cassandra.with_tls(tls);
    }
    if let Some(t) = &c.request_timeout {
        cassandra =
            cassandra.with_request_timeout(src.duration(t, None, "cassandra.request_timeout")?);
    }
    Ok(cassandra)
}

/// User and password: the environment's over the file's; a password from
/// `HAJOBS_CASSANDRA_PASSWORD`, a password file, or the file itself.
fn credentials(
    src: &Source<'_>,
    c: &RawCassandra,
    o: &Overrides,
) -> Result<Option<(String, Secret)>, ConfigError> {
    let user = match (&o.cassandra_user, &c.user) {
        (Some(u), _) if u.trim().is_empty() => {
            return Err(ConfigError(
                "HAJOBS_CASSANDRA_USER: empty: unset it, or name the user".into(),
            ));
        }
        (Some(u), _) => Some(u.clone()),
        (None, Some(u)) if u.get_ref().trim().is_empty() => {
            return Err(src.error(
                u,
                None,
                "cassandra.user",
                "empty: remove it, or name the user",
            ));
        }
        (None, Some(u)) => Some(u.get_ref().clone()),
        (None, None) => None,
    };
    let password = if let Some(p) = &o.cassandra_password {
        Some(nonempty(p.clone(), "HAJOBS_CASSANDRA_PASSWORD")?)
    } else if let Some(file) = &o.cassandra_password_file {
        Some(read_password(file, "HAJOBS_CASSANDRA_PASSWORD_FILE")?)
    } else if let Some(file) = &c.password_file {
        let source = format!(
            "{}:{}: field `cassandra.password_file`",
            src.path.display(),
            src.line(file.span())
        );
        Some(read_password(file.get_ref(), &source)?)
    } else if let Some(p) = &c.password {
        if p.get_ref().expose().is_empty() {
            return Err(src.error(
                p,
                None,
                "cassandra.password",
                "empty: remove it, or set the password",
            ));
        }
        Some(p.get_ref().clone())
    } else {
        None
    };
    match (user, password) {
        (Some(u), Some(p)) => Ok(Some((u, p))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError(format!(
            "{}: cassandra: a user without a password: set HAJOBS_CASSANDRA_PASSWORD, \
             HAJOBS_CASSANDRA_PASSWORD_FILE, `password_file` or `password`",
            src.path.display()
        ))),
        (None, Some(_)) => Err(ConfigError(format!(
            "{}: cassandra: a password without a user: set HAJOBS_CASSANDRA_USER or `user`",
            src.path.display()
        ))),
    }
}

fn nonempty(secret: Secret, source: &str) -> Result<Secret, ConfigError> {
    if secret.expose().trim().is_empty() {
        return Err(ConfigError(format!(
            "{source}: empty: unset it, or give the password"
        )));
    }
    Ok(secret)
}

/// The first line of `file`, without its line end.
fn read_password(file: &Path, source: &str) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigError(format!(
            "{source}: cannot read the password file `{}`: {e}",
            file.display()
        ))
    })?;
    let first = text.lines().next().unwrap_or_default();
    nonempty(
        Secret::new(first),
        &format!("{source} (`{}`)", file.display()),
    )
}

/// `[cassandra.tls]` under the environment's settings; TLS is on when
/// either gives a CA file.
fn tls(
    src: &Source<'_>,
    raw: Option<&RawTls>,
    o: &Overrides,
) -> Result<Option<TlsConfig>, ConfigError> {
    let file = |f: Option<&Spanned<PathBuf>>| f.map(|p| p.get_ref().clone());
    let ca = o
        .tls_ca
        .clone()
        .or_else(|| raw.and_then(|r| file(r.ca_file.as_ref())));
    let cert = o
        .tls_cert
        .clone()
        .or_else(|| raw.and_then(|r| file(r.cert_file.as_ref())));
    let key = o
        .tls_key
        .clone()
        .or_else(|| raw.and_then(|r| file(r.key_file.as_ref())));
    let verify = match o.tls_verify_hostname.as_deref() {
        None => raw.and_then(|r| r.verify_hostname).unwrap_or(true),
        Some("true" | "1" | "yes") => true,
        Some("false" | "0" | "no") => false,
        Some(other) => {
            return Err(ConfigError(format!(
                "HAJOBS_CASSANDRA_TLS_VERIFY_HOSTNAME: `{}`: expected `true` or `false`",
                other.escape_default()
            )));
        }
    };
    let Some(ca) = ca else {
        if raw.is_some() || cert.is_some() || key.is_some() {
            return Err(ConfigError(format!(
                "{}: cassandra.tls: `ca_file` (or HAJOBS_CASSANDRA_TLS_CA) is required: the CA that signed the nodes' certificates",
                src.path.display()
            )));
        }
        return Ok(None);
    };
    let client_cert = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(ClientCert {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        _ => {
            return Err(ConfigError(format!(
                "{}: cassandra.tls: give both `cert_file` and `key_file` (HAJOBS_CASSANDRA_TLS_CERT / _KEY), or neither",
                src.path.display()
            )));
        }
    };
    Ok(Some(TlsConfig {
        ca_file: ca,
        client_cert,
        verify_hostname: verify,
    }))
}
