//! Fencing at the downstream store: a job command whose writes a stale
//! holder cannot make.
//!
//! A lease protects against every failure of the replica *except* a freeze
//! of everything at once (a VM pause, `SIGSTOP` of the whole process tree):
//! a frozen command cannot be told it lost its lease, and wakes up believing
//! it still holds it. The fencing token is the defence: the store refuses a
//! write whose token is older than one it already took.
//!
//! `fenced-write KEYSPACE RESOURCE WRITES RECORDS` writes `WRITES` times,
//! every 100 ms, to the row `RESOURCE` of
//!
//! ```cql
//! CREATE TABLE KEYSPACE.fenced_resource (
//!     resource text PRIMARY KEY, fencing_token bigint, value text, writer text);
//! ```
//!
//! with one lightweight transaction per write:
//!
//! ```cql
//! UPDATE fenced_resource SET value = ?, writer = ?, fencing_token = ?
//! WHERE resource = ? IF fencing_token <= ?
//! ```
//!
//! (`<=`, so that one holder writes many times; the row is created once with
//! token 0 by `INSERT … IF NOT EXISTS`). Each outcome is appended to
//! `RECORDS` as `SENT_NANOS TOKEN NODE JOB_TYPE JOB_ID TRIGGER_ID accepted` (or
//! `rejected`, or `error`), the format of the chaos suite's records. The
//! token comes from `HAJOBS_FENCING_TOKEN`, set by the daemon.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hajobs_core::CassandraConfig;
use scylla::value::CqlValue;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, keyspace, resource, writes, records] = &args[..] else {
        anyhow::bail!("usage: fenced-write KEYSPACE RESOURCE WRITES RECORDS");
    };
    let writes: u32 = writes.parse()?;
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| "-".into());
    let token: i64 = env("HAJOBS_FENCING_TOKEN").parse()?;
    let who = format!(
        "{} {} {} {} {}",
        token,
        env("HAJOBS_NODE_ID"),
        env("HAJOBS_JOB_TYPE"),
        env("HAJOBS_JOB_ID"),
        env("HAJOBS_TRIGGER_ID")
    );
    let session = CassandraConfig::from_contact_list(&hajobs_tests::contact_list())
        .connect()
        .await?;
    session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.fenced_resource (resource, fencing_token) VALUES (?, 0) IF NOT EXISTS"
            ),
            (resource.as_str(),),
        )
        .await?;
    let mut update = session
        .prepare(format!(
            "UPDATE {keyspace}.fenced_resource SET value = ?, writer = ?, fencing_token = ? \
             WHERE resource = ? IF fencing_token <= ?"
        ))
        .await?;
    update.set_consistency(scylla::statement::Consistency::Quorum);
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(records)?;
    for i in 0..writes {
        let value = format!("write {i}");
        // The instant the write is *sent*: a write in flight when the replica
        // froze was sent before its successor's and may be accepted late;
        // what must be refused is a write sent after a newer token's.
        let sent = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let outcome = match session
            .execute_unpaged(&update, (&value, &who, token, resource.as_str(), token))
            .await
        {
            Ok(result) => {
                let rows = result.into_rows_result()?;
                let applied = rows
                    .rows::<scylla::value::Row>()?
                    .next()
                    .transpose()?
                    .and_then(|row| row.columns.into_iter().next().flatten())
                    == Some(CqlValue::Boolean(true));
                if applied { "accepted" } else { "rejected" }
            }
            Err(_) => "error",
        };
        // One write per line, so that concurrent writers never interleave.
        out.write_all(format!("{sent} {who} {outcome}\n").as_bytes())?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
