//! `hajobs schema apply | check | print`.

use hajobs_core::schema;

use super::*;
use crate::cli::ReplicationArg;

/// Prints the schema as CQL.
pub(crate) fn print(settings: &Settings, r: ReplicationArg) -> Result<(), CliError> {
    let cql = schema::print(&settings.cassandra.keyspace, &replication(&r, settings)?)
        .map_err(CliError::input)?;
    print!("{cql}");
    Ok(())
}

/// Creates or adopts the schema.
pub(crate) async fn apply(settings: &Settings, r: ReplicationArg) -> Result<(), CliError> {
    let replication = replication(&r, settings)?;
    let ks = &settings.cassandra.keyspace;
    let session = settings.cassandra.connect().await?;
    let before = schema::check(&session, ks).await?;
    let report = schema::apply(&session, ks, &replication).await?;
    for r in &report.repaired {
        println!("repaired: {r}");
    }
    println!(
        "keyspace {ks}: applied migrations {:?}, already applied {:?}",
        report.applied, report.already_applied
    );
    if before.ha_jobs_keyspace {
        println!("{}", ha_jobs_advice(settings));
    }
    Ok(())
}

/// Lists what differs from what hajobs needs.
pub(crate) async fn check(settings: &Settings) -> Result<(), CliError> {
    let ks = &settings.cassandra.keyspace;
    let session = settings.cassandra.connect().await?;
    let report = schema::check(&session, ks).await?;
    if report.is_clean() {
        println!("keyspace {ks}: the schema is what hajobs needs");
        return Ok(());
    }
    if !report.unrecorded.is_empty() {
        println!("migrations not recorded: {:?}", report.unrecorded);
    }
    for d in &report.drifts {
        println!("- {d}");
        if let Some(fix) = d.fix(ks) {
            println!("    fix: {fix}");
        }
    }
    if report.ha_jobs_keyspace {
        println!("{}", ha_jobs_advice(settings));
    }
    let repairable = report.drifts.iter().all(|d| d.repairable());
    Err(anyhow::anyhow!(
        "keyspace {ks} differs from what hajobs needs{}",
        if repairable {
            ": `hajobs schema apply` repairs all of it"
        } else {
            "; some of it no statement can repair (see docs/migrating-from-ha-jobs.md)"
        }
    )
    .into())
}

fn replication(arg: &ReplicationArg, settings: &Settings) -> Result<schema::Replication, CliError> {
    match &arg.replication {
        Some(r) => schema::Replication::parse(r)
            .map_err(|e| CliError::input(anyhow::anyhow!("--replication: {e}"))),
        None => Ok(settings.replication.clone()),
    }
}

/// What a team adopting an ha-jobs keyspace must keep in mind.
fn ha_jobs_advice(settings: &Settings) -> String {
    let mut advice = String::from(
        "this keyspace was made by ha-jobs: while ha-jobs replicas still run, keep \
         `consistency = \"local\"` (ha-jobs uses LOCAL_SERIAL; mixing SERIAL and LOCAL_SERIAL on one \
         lock is unsafe across data centres); see docs/migrating-from-ha-jobs.md",
    );
    if settings.cassandra.serial_consistency != scylla::statement::SerialConsistency::LocalSerial {
        advice.push_str(
            "\nWARNING: this configuration uses consistency = \"global\" (SERIAL): switch to \"local\" until every ha-jobs replica is retired",
        );
    }
    advice
}
