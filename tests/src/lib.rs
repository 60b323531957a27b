//! # hajobs-tests
//!
//! Multi-process and end-to-end tests of hajobs against a real Cassandra:
//! replicas as real OS processes, killed with SIGKILL, paused with SIGSTOP,
//! Cassandra nodes killed and restarted through `deploy/local/cassandra`,
//! with the state read back from Cassandra.
//!
//! This library holds what those tests share: how to reach the test
//! cluster, how to drive the local Cassandra script, and [`chaos`], the
//! harness of the chaos suite (real daemons, the jobs' own records, the
//! checker). Its binaries: `replica` (a job manager driven over stdin),
//! `hajobs-under-test` (the `hajobs` binary, built with the tests) and
//! `fenced-write` (the fencing example, see `docs/guarantees.md`).

pub mod chaos;
pub mod http;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// The contact points of the test cluster (`HAJOBS_CQL_NODES`, default one local node).
pub fn contact_list() -> String {
    std::env::var("HAJOBS_CQL_NODES").unwrap_or_else(|_| "127.0.0.1:9042".to_owned())
}

/// The root of the hajobs repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs `deploy/local/cassandra ARGS…`, failing with its output when it fails.
pub fn local_cassandra(args: &[&str]) -> anyhow::Result<String> {
    let script = repo_root().join("deploy/local/cassandra");
    let out = Command::new(&script)
        .args(args)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "deploy/local/cassandra {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
