//! An ha-jobs replica, emulated by its statements: exactly the CQL ha-jobs
//! issues for its locks and statuses (see `shared/DESIGN.md`), so that the
//! tests can race it against real hajobs daemons during a migration.
//!
//! `ha-jobs-emulator KEYSPACE JOB_TYPE LOCK_TYPE RECORDS SECS RUN_MS`
//! tries every 100 ms for `SECS` seconds to run `JOB_TYPE` under
//! `LOCK_TYPE`: acquire (`INSERT … IF NOT EXISTS` with a long TTL, then
//! `UPDATE … USING TTL 5 SET job_lock = <id> IF job_lock = null`), status
//! RUNNING in ha-jobs' columns only, `RUN_MS` of work appending records
//! (token `0`: ha-jobs has none) while renewing every TTL/2 (`IF job_lock =
//! <id>`), status FINISHED, release (`SET job_lock = null IF job_lock =
//! <id>`). Then it reads the job type's statuses as ha-jobs reads them and
//! prints `read N statuses, M written by hajobs`; it fails on a row ha-jobs
//! could not read. Prints `acquired JOB_ID` when it takes the lock.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hajobs_core::{CassandraConfig, JobId};
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlTimestamp, CqlTimeuuid, CqlValue, Row};

/// ha-jobs' lock TTL in this emulation, and its status retention.
const LOCK_TTL: i32 = 5;
const STATUS_TTL: i32 = 14 * 24 * 3600;

fn applied(result: scylla::response::query_result::QueryResult) -> anyhow::Result<bool> {
    let rows = result.into_rows_result()?;
    let first = rows.rows::<Row>()?.next().transpose()?;
    Ok(first.and_then(|r| r.columns.into_iter().next().flatten()) == Some(CqlValue::Boolean(true)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ks, job_type, lock_type, records, secs, run_ms] = &args[..] else {
        anyhow::bail!("usage: ha-jobs-emulator KEYSPACE JOB_TYPE LOCK_TYPE RECORDS SECS RUN_MS");
    };
    let (secs, run_ms): (u64, u64) = (secs.parse()?, run_ms.parse()?);
    let session = CassandraConfig::from_contact_list(&hajobs_tests::contact_list())
        .connect()
        .await?;
    let prepare = |cql: String| {
        let session = session.clone();
        async move {
            let mut p = session.prepare(cql).await?;
            p.set_consistency(Consistency::LocalQuorum);
            p.set_serial_consistency(Some(SerialConsistency::LocalSerial));
            anyhow::Ok(p)
        }
    };
    let insert_row = prepare(format!(
        "INSERT INTO {ks}.lock (lock_type) VALUES (?) IF NOT EXISTS USING TTL 2592000"
    ))
    .await?;
    let take = prepare(format!(
        "UPDATE {ks}.lock USING TTL ? SET job_lock = ? WHERE lock_type = ? IF job_lock = null"
    ))
    .await?;
    let renew = prepare(format!(
        "UPDATE {ks}.lock USING TTL ? SET job_lock = ? WHERE lock_type = ? IF job_lock = ?"
    ))
    .await?;
    let release = prepare(format!(
        "UPDATE {ks}.lock SET job_lock = null WHERE lock_type = ? IF job_lock = ?"
    ))
    .await?;
    let meta = prepare(format!(
        "INSERT INTO {ks}.job_status_meta (job_type, job_id, trigger_id, job_status_ts, job_state, job_result) \
         VALUES (?, ?, ?, ?, ?, ?) USING TTL {STATUS_TTL}"
    ))
    .await?;
    let data = prepare(format!(
        "INSERT INTO {ks}.job_status_data (job_type, job_id, trigger_id, job_status_ts, job_state, job_result, content) \
         VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL {STATUS_TTL}"
    ))
    .await?;
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(records)?;
    let nanos = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let job_id = JobId::new();
        let id = CqlTimeuuid::from(job_id.uuid());
        session
            .execute_unpaged(&insert_row, (lock_type.as_str(),))
            .await?;
        let taken = match session
            .execute_unpaged(&take, (LOCK_TTL, id, lock_type.as_str()))
            .await
        {
            Ok(r) => applied(r)?,
            Err(_) => false,
        };
        if !taken {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        println!("acquired {job_id}");
        let trigger = CqlTimeuuid::from(JobId::new().uuid());
        let status = |state: &'static str, result: &'static str| {
            let now = CqlTimestamp(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
            );
            (now, state, result)
        };
        let (ts, st, res) = status("RUNNING", "PENDING");
        session
            .execute_unpaged(&meta, (job_type.as_str(), id, trigger, ts, st, res))
            .await?;
        session
            .execute_unpaged(&data, (job_type.as_str(), id, trigger, ts, st, res, "{}"))
            .await?;
        let who = format!(
            "0 ha-jobs {job_type} {job_id} {}",
            uuid::Uuid::from(trigger)
        );
        let started = Instant::now();
        let mut renewed = Instant::now();
        let mut lost = false;
        while started.elapsed() < Duration::from_millis(run_ms) {
            out.write_all(format!("{} {who} tick\n", nanos()).as_bytes())?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if renewed.elapsed() >= Duration::from_millis(LOCK_TTL as u64 * 500) {
                let ok = session
                    .execute_unpaged(&renew, (LOCK_TTL, id, lock_type.as_str(), id))
                    .await
                    .map(applied)
                    .unwrap_or(Ok(false))?;
                if !ok {
                    lost = true;
                    break;
                }
                renewed = Instant::now();
            }
        }
        out.write_all(format!("{} {who} end\n", nanos()).as_bytes())?;
        let (ts, st, res) = if lost {
            status("CANCELED", "FAILED")
        } else {
            status("FINISHED", "SUCCESS")
        };
        session
            .execute_unpaged(&meta, (job_type.as_str(), id, trigger, ts, st, res))
            .await?;
        session
            .execute_unpaged(&data, (job_type.as_str(), id, trigger, ts, st, res, "{}"))
            .await?;
        session
            .execute_unpaged(&release, (lock_type.as_str(), id))
            .await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Read the statuses as ha-jobs reads them: its columns, its states.
    let rows = session
        .query_unpaged(
            format!("SELECT job_type, job_id, trigger_id, job_status_ts, job_state, job_result FROM {ks}.job_status_meta WHERE job_type = ?"),
            (job_type.as_str(),),
        )
        .await?
        .into_rows_result()?;
    let states = [
        "RUNNING",
        "PREPARING",
        "FINISHED",
        "WARNING",
        "SKIPPED",
        "NO_ACTION_NEEDED",
        "FAILED",
        "CANCELED",
        "DEAD",
    ];
    let (mut read, mut from_hajobs) = (0, 0);
    for row in rows.rows::<(
        String,
        CqlTimeuuid,
        Option<CqlTimeuuid>,
        CqlTimestamp,
        String,
        String,
    )>()? {
        let (_, _, trigger, _, state, result) = row?;
        anyhow::ensure!(trigger.is_some(), "a status without trigger id");
        anyhow::ensure!(states.contains(&state.as_str()), "unknown state {state}");
        anyhow::ensure!(
            ["PENDING", "SUCCESS", "FAILED"].contains(&result.as_str()),
            "unknown result {result}"
        );
        read += 1;
    }
    let owners = session
        .query_unpaged(
            format!("SELECT owner FROM {ks}.job_status_meta WHERE job_type = ?"),
            (job_type.as_str(),),
        )
        .await?
        .into_rows_result()?;
    for o in owners.rows::<(Option<String>,)>()? {
        if o?.0.is_some() {
            from_hajobs += 1;
        }
    }
    println!("read {read} statuses, {from_hajobs} written by hajobs");
    Ok(())
}
