//! # The daemon's wiring (`hajobs serve`)
//!
//! Everything a replica runs, started and stopped in one place:
//!
//! 1. the Prometheus recorder (when the HTTP server is on), so that every
//!    metric from the start is counted;
//! 2. the job manager (cron schedules, attempts under leases), started once
//!    Cassandra answers — retried with backoff, a daemon may start first;
//! 3. the supervisor (re-runs dead attempts), the request watcher (claims
//!    triggers asked of the cluster), the node registry entry;
//! 4. the HTTP server (API, page, metrics) over the same admin layer as the
//!    CLI.
//!
//! SIGTERM / Ctrl-C stops them in reverse: no new work is taken (supervisor,
//! watcher), the running attempts end within the shutdown grace, each one
//! cancelled by the shutdown is handed over (a request resuming its trigger,
//! the replicas that have its job woken to claim it), then the registry
//! entry and the HTTP server go.

use std::time::Duration;

use hajobs_supervisor::Supervisor;

use crate::admin::Admin;
use crate::exit::CliError;
use crate::settings::Settings;

/// The longest wait between two tries to start serving.
const MAX_START_BACKOFF: Duration = Duration::from_secs(30);

/// Runs the daemon until SIGTERM / Ctrl-C.
pub(crate) async fn serve(settings: &Settings) -> Result<(), CliError> {
    let daemon = settings.daemon("serve")?.clone();
    let metrics = match &daemon.http {
        Some(_) => Some(crate::http::install_metrics()?),
        None => None,
    };
    // Bound before Cassandra is reached: a taken port is a configuration
    // error the operator sees at once.
    let listener = match &daemon.http {
        Some(http) => Some(
            tokio::net::TcpListener::bind(http.listen)
                .await
                .map_err(|e| {
                    CliError::input(anyhow::anyhow!(
                        "http.listen: cannot listen on {}: {e}",
                        http.listen
                    ))
                })?,
        ),
        None => None,
    };
    // A daemon may start before its database (systemd, Kubernetes): wait
    // and retry with backoff, saying why, until it answers or we are stopped.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_secs(1);
    // Requesters wake this replica's watcher: in this process through the
    // admin layer, from elsewhere through `POST /wake`.
    let wake = hajobs_scheduler::RequestWake::new();
    let (manager, admin, http_admin) = loop {
        let attempt = async {
            let session = settings.session().await?;
            let manager = settings.manager_on("serve", session.clone()).await?;
            let admin = Admin::new(
                &settings.cassandra,
                session,
                Some(daemon.clone()),
                Some(manager.clone()),
            )
            .await?
            .with_wake(wake.clone());
            // The HTTP API reads through a session of its own: a flood of
            // heavy reads queues there, never in front of lease renewals.
            let http_admin = match &daemon.http {
                Some(_) => Some(
                    Admin::new(
                        &settings.cassandra,
                        settings.cassandra.connect().await?,
                        Some(daemon.clone()),
                        Some(manager.clone()),
                    )
                    .await?
                    .with_wake(wake.clone()),
                ),
                None => None,
            };
            manager.start().await?;
            Ok::<_, CliError>((manager, admin, http_admin))
        };
        match attempt.await {
            Ok(ready) => break ready,
            Err(e) if e.exit_code() == 1 => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot start serving yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => {
                        tracing::info!("stopped before serving");
                        return Ok(());
                    }
                }
                backoff = (backoff * 2).min(MAX_START_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    };
    let supervisor = daemon
        .supervisor
        .clone()
        .map(|s| Supervisor::new(manager.clone(), s).spawn());
    // A replica that serves HTTP is woken by requesters (its registry entry
    // names its address): its poll is only the fallback.
    let watcher = hajobs_scheduler::RequestWatcher::spawn(
        manager.clone(),
        admin.requests().clone(),
        match &daemon.http {
            Some(_) => hajobs_scheduler::WatchConfig::wakeable(),
            None => hajobs_scheduler::WatchConfig::default(),
        },
        wake,
    );
    let (server, http_address) = match (listener, &daemon.http, metrics, http_admin) {
        (Some(listener), Some(http), Some(metrics), Some(http_admin)) => {
            let address = listener
                .local_addr()
                .map(|a| crate::wake::advertised(http.advertise.as_deref(), a))
                .ok();
            let server = crate::http::spawn(
                listener,
                crate::http::ServerState::new(http_admin, metrics, daemon.node.as_str()),
                http,
            )?;
            tracing::info!(address = ?address, admin_token = http.admin_token.is_some(), read_token = http.read_token.is_some(), "HTTP API, page and metrics served");
            if !http.is_loopback() {
                if http.admin_token.is_none() {
                    tracing::warn!(address = ?address, "the HTTP API is served to other machines WITHOUT an admin token (allow_unauthenticated = true): anyone who can reach it can trigger and cancel jobs");
                }
                if http.read_token.is_none() {
                    tracing::warn!(address = ?address, "the HTTP API's reads are open to other machines: set a read token (HAJOBS_READ_TOKEN) to protect them");
                }
            }
            (Some(server), address)
        }
        _ => (None, None),
    };
    let registry = crate::registry::Registry::spawn(
        admin.node_store().clone(),
        manager.clone(),
        &daemon,
        http_address,
    );
    tracing::info!(node = %daemon.node, jobs = daemon.jobs.len(), keyspace = %settings.cassandra.keyspace, "hajobs serving");
    // ha-jobs replicas use LOCAL_SERIAL: SERIAL on the same lock rows is
    // unsafe across data centres while they run.
    if settings.cassandra.serial_consistency != scylla::statement::SerialConsistency::LocalSerial {
        if let Ok(holders) = manager.leases().list().await {
            if let Some(h) = holders.iter().find(|h| h.is_foreign()) {
                tracing::warn!(lock_type = %h.lock_type, job_id = %h.job_id, "a lock is held by a holder that does not speak hajobs' protocol (ha-jobs?) while this replica uses consistency = \"global\": mixing SERIAL and LOCAL_SERIAL on one lock is unsafe across data centres; use \"local\" until every ha-jobs replica is retired");
            }
        }
    }
    shutdown.await;
    tracing::info!(grace = ?daemon.shutdown_grace, "shutting down");
    if let Some(s) = supervisor {
        s.stop().await;
    }
    // No new requests claimed here from now on; then the attempts end, and
    // those cancelled by the shutdown are handed to the other replicas.
    watcher.stop().await;
    let running = manager.running_triggers();
    manager.shutdown(daemon.shutdown_grace).await;
    if !running.is_empty() {
        for handover in hajobs_scheduler::hand_over(&manager, admin.requests(), &running).await {
            if let hajobs_scheduler::Handover::Requested {
                job_type,
                trigger_id,
            } = handover
            {
                admin.waker().wake_all(job_type.as_str(), trigger_id).await;
            }
        }
    }
    registry.stop().await;
    if let Some(server) = server {
        server.stop().await;
    }
    Ok(())
}

/// SIGTERM or Ctrl-C, whichever comes first.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
