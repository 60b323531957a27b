//! [`Settings`]: what the commands and the daemon need to know — the
//! validated configuration file (if any) under the flags and the
//! environment — and the sessions, admin layer and job manager made from it.

use std::path::Path;
use std::sync::Arc;

use hajobs_core::CassandraConfig;
use hajobs_core::schema::{self, MIGRATIONS};
use hajobs_scheduler::JobManager;
use scylla::client::session::Session;

use crate::admin::Admin;
use crate::config::{self, DaemonConfig, Overrides};
use crate::exit::CliError;

/// What the commands need to know: the file (if any) with overrides applied.
pub(crate) struct Settings {
    pub(crate) daemon: Option<Arc<DaemonConfig>>,
    pub(crate) cassandra: CassandraConfig,
    /// This process's node id (the file's, `--node-id`, or the host name).
    pub(crate) node: hajobs_core::NodeId,
    pub(crate) replication: schema::Replication,
}

impl Settings {
    /// The configuration `file` (if any) under `overrides`, validated.
    pub(crate) fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, CliError> {
        let daemon = match file {
            Some(path) => Some(Arc::new(
                config::load(path, overrides).map_err(CliError::input)?,
            )),
            None => None,
        };
        let (cassandra, replication, node) = match &daemon {
            Some(d) => (d.cassandra.clone(), d.replication.clone(), d.node.clone()),
            None => {
                // No file: flags, environment and defaults only.
                let parsed =
                    config::parse(Path::new("(flags)"), "", overrides).map_err(CliError::input)?;
                (parsed.cassandra, parsed.replication, parsed.node)
            }
        };
        Ok(Settings {
            daemon,
            cassandra,
            replication,
            node,
        })
    }

    pub(crate) fn daemon(&self, command: &str) -> Result<&Arc<DaemonConfig>, CliError> {
        self.daemon.as_ref().ok_or_else(|| {
            CliError::input(anyhow::anyhow!("`hajobs {command}` needs the jobs' configuration: pass --config FILE or set HAJOBS_CONFIG"))
        })
    }

    pub(crate) async fn session(&self) -> Result<Arc<Session>, CliError> {
        let session = self.cassandra.connect().await?;
        let ks = &self.cassandra.keyspace;
        let applied = schema::applied_versions(&session, ks).await.map_err(|e| {
            // Cassandra names a missing keyspace or table so; anything else
            // (no quorum, a timeout) is a problem of the cluster, said as is.
            let chain = anyhow::Error::from(e);
            let text = format!("{chain:#}");
            if text.contains("unconfigured table") || text.contains("does not exist") {
                anyhow::anyhow!(
                    "keyspace `{ks}` has no hajobs schema ({text}): run `hajobs schema apply`"
                )
            } else {
                chain.context(format!("cannot read the schema version of keyspace `{ks}`"))
            }
        })?;
        let missing: Vec<i32> = MIGRATIONS
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        if !missing.is_empty() {
            return Err(anyhow::anyhow!(
                "keyspace `{ks}` lacks schema versions {missing:?}: run `hajobs schema apply`"
            )
            .into());
        }
        Ok(session)
    }

    /// The admin layer.
    pub(crate) async fn admin(&self) -> Result<Admin, CliError> {
        let session = self.session().await?;
        Ok(Admin::new(&self.cassandra, session, self.daemon.clone(), None).await?)
    }

    /// The admin layer with a job manager of the jobs' configuration, for
    /// `command`s that run or cancel attempts from this process.
    pub(crate) async fn admin_with_manager(&self, command: &str) -> Result<Admin, CliError> {
        let session = self.session().await?;
        let manager = self.manager_on(command, session.clone()).await?;
        Ok(Admin::new(&self.cassandra, session, self.daemon.clone(), Some(manager)).await?)
    }

    pub(crate) async fn manager_on(
        &self,
        command: &str,
        session: Arc<Session>,
    ) -> Result<JobManager, CliError> {
        let daemon = self.daemon(command)?;
        let mut builder =
            JobManager::builder(self.cassandra.clone(), daemon.node.clone()).session(session);
        for lock in &daemon.locks {
            builder = builder.lock(lock.clone());
        }
        for job in &daemon.jobs {
            builder = builder.job(
                job.spec.clone(),
                crate::command_job::CommandJob::new(job.clone()),
            );
        }
        Ok(builder.build().await?)
    }
}
