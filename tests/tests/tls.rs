//! A cluster that requires client encryption and passwords
//! (`deploy/local/cassandra start --tls --auth`, whose environment lines the
//! test command exports): hajobs connects with TLS and credentials, runs a
//! job under its lease there, and each wrong setting — another CA, no client
//! certificate, plaintext, a wrong password, no password — fails with exit 1
//! and an error naming what to fix. No secret appears in any output. Run by
//! the test command after the other suites.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hajobs_core::testing::unique_keyspace;
use hajobs_core::{CassandraConfig, ClientCert, Secret, TlsConfig};
use hajobs_tests::contact_list;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the TLS tests need the cluster of `deploy/local/cassandra start --tls --auth` \
             and the environment lines it prints"
        )
    })
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hajobs-under-test"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The superuser's session, over TLS (the cluster's own settings).
fn superuser() -> CassandraConfig {
    let password = std::fs::read_to_string(env("HAJOBS_CASSANDRA_PASSWORD_FILE")).unwrap();
    CassandraConfig::from_contact_list(&contact_list())
        .with_credentials(env("HAJOBS_CASSANDRA_USER"), Secret::new(password.trim()))
        .with_tls(TlsConfig {
            ca_file: env("HAJOBS_CASSANDRA_TLS_CA").into(),
            client_cert: Some(ClientCert {
                cert_file: env("HAJOBS_CASSANDRA_TLS_CERT").into(),
                key_file: env("HAJOBS_CASSANDRA_TLS_KEY").into(),
            }),
            verify_hostname: true,
        })
}

/// A CA that signed nothing of this cluster.
fn other_ca(dir: &Path) -> PathBuf {
    let ca = dir.join("other-ca.pem");
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another-ca", "-keyout"])
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&ca)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl made another CA");
    ca
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_cluster_connects_with_tls_and_passwords_and_names_every_wrong_setting() {
    // A role of its own, with a password no other text contains.
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let role = format!("hajobs_tls_{}", &unique[..8]);
    let role = role.as_str();
    let password = format!("pw-{unique}");
    // The superuser role may take a moment after start-up to exist.
    let deadline = Instant::now() + Duration::from_secs(90);
    let session = loop {
        match superuser().connect().await {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no TLS session as the superuser: {e:#}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    session
        .query_unpaged(
            format!(
                "CREATE ROLE {role} WITH PASSWORD = '{password}' AND LOGIN = true AND SUPERUSER = true"
            ),
            (),
        )
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("hajobs-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let password_file = dir.join("password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let keyspace = unique_keyspace("tls");
    let config = dir.join("hajobs.toml");
    let records = dir.join("records");
    std::fs::write(
        &config,
        format!(
            "[[job]]\nname = \"over-tls\"\ncommand = [\"sh\", \"-c\", \"echo token=$HAJOBS_FENCING_TOKEN >> {}\"]\n",
            records.display()
        ),
    )
    .unwrap();
    // Every setting from the environment; the password from a file.
    let hajobs = |args: &[&str], vars: &[(&str, &str)], unset: &[&str]| {
        let mut c = Command::new(bin());
        c.args(["--keyspace", &keyspace, "--config"])
            .arg(&config)
            .args(args)
            .env("HAJOBS_CQL_NODES", contact_list())
            .env("HAJOBS_CASSANDRA_USER", role)
            .env("HAJOBS_CASSANDRA_PASSWORD_FILE", &password_file)
            .env("HAJOBS_LOG", "debug")
            .stdin(Stdio::null());
        for (k, v) in vars {
            c.env(k, v);
        }
        for k in unset {
            c.env_remove(k);
        }
        let out = c.output().unwrap();
        let all = text(&out);
        assert!(
            !all.contains(&password),
            "the password in the output of hajobs {args:?}:\n{all}"
        );
        (out.status.code(), all)
    };

    let (code, out) = hajobs(&["schema", "apply"], &[], &[]);
    assert_eq!(code, Some(0), "{out}");
    // A job under its lease: the LWTs and statuses over TLS.
    let (code, out) = hajobs(&["trigger", "--here", "over-tls"], &[], &[]);
    assert_eq!(code, Some(0), "{out}");
    let recorded = std::fs::read_to_string(&records).unwrap();
    assert!(recorded.starts_with("token="), "{recorded}");
    let (code, out) = hajobs(&["status", "over-tls"], &[], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("FINISHED"), "{out}");
    // The password given directly works the same, and never shows.
    let (code, out) = hajobs(&["locks"], &[("HAJOBS_CASSANDRA_PASSWORD", &password)], &[]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = hajobs(&["--help"], &[("HAJOBS_ADMIN_TOKEN", &password)], &[]);
    assert_eq!(code, Some(0), "{out}");

    let other = other_ca(&dir);
    let other = other.to_str().unwrap();
    let wrong = format!("{password}-not");
    for (what, vars, unset, says) in [
        (
            "another CA",
            vec![("HAJOBS_CASSANDRA_TLS_CA", other)],
            vec![],
            "not signed by the configured CA",
        ),
        (
            "no client certificate",
            vec![],
            vec!["HAJOBS_CASSANDRA_TLS_CERT", "HAJOBS_CASSANDRA_TLS_KEY"],
            "does it require a client certificate?",
        ),
        (
            "plaintext",
            vec![],
            vec![
                "HAJOBS_CASSANDRA_TLS_CA",
                "HAJOBS_CASSANDRA_TLS_CERT",
                "HAJOBS_CASSANDRA_TLS_KEY",
            ],
            "does the cluster require TLS?",
        ),
        (
            "a wrong password",
            vec![("HAJOBS_CASSANDRA_PASSWORD", wrong.as_str())],
            vec![],
            "were refused: check HAJOBS_CASSANDRA_USER and the password",
        ),
        (
            "no user",
            vec![],
            vec!["HAJOBS_CASSANDRA_USER", "HAJOBS_CASSANDRA_PASSWORD_FILE"],
            "the cluster requires a user and password",
        ),
        (
            "a CA file that is not there",
            vec![("HAJOBS_CASSANDRA_TLS_CA", "/nonexistent/ca.pem")],
            vec![],
            "TLS: CA file `/nonexistent/ca.pem`",
        ),
    ] {
        let started = Instant::now();
        let (code, out) = hajobs(&["locks"], &vars, &unset);
        assert_eq!(code, Some(1), "{what}: {out}");
        assert!(out.contains(says), "{what}: `{says}` not in\n{out}");
        assert!(
            !out.contains(&wrong),
            "{what}: the wrong password shown:\n{out}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: took {:?}",
            started.elapsed()
        );
        println!("tls: {what}: {}", out.lines().last().unwrap_or_default());
    }
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
        .unwrap();
    session
        .query_unpaged(format!("DROP ROLE IF EXISTS {role}"), ())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
