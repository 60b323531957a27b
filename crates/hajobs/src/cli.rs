//! The command line: raw flags ([`Cli`]) and what each command does.

use clap::{Args, Parser, Subcommand};
use hajobs_core::{CassandraConfig, schema};

/// An error of the CLI with its exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    code: u8,
    error: anyhow::Error,
}

impl CliError {
    pub(crate) fn exit_code(&self) -> u8 {
        self.code
    }

    /// Bad input: exit code 2.
    pub(crate) fn input(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: error.into(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(error: E) -> Self {
        Self {
            code: 1,
            error: error.into(),
        }
    }
}

/// hajobs: jobs that run on exactly one replica at a time, with their state
/// in Cassandra or ScyllaDB.
#[derive(Debug, Parser)]
#[command(name = "hajobs", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// Contact points, comma-separated host:port.
    #[arg(long, global = true, env = "HAJOBS_CQL_NODES", default_value = hajobs_core::config::DEFAULT_CONTACT_POINT)]
    nodes: String,
    /// The keyspace holding hajobs' tables.
    #[arg(long, global = true, env = "HAJOBS_KEYSPACE", default_value = hajobs_core::config::DEFAULT_KEYSPACE)]
    keyspace: String,
    /// The local data centre (preferred coordinators, LOCAL_QUORUM scope).
    #[arg(long, global = true, env = "HAJOBS_DATACENTER")]
    datacenter: Option<String>,
}

impl ClusterArgs {
    fn config(&self) -> CassandraConfig {
        let mut config =
            CassandraConfig::from_contact_list(&self.nodes).with_keyspace(self.keyspace.clone());
        if let Some(dc) = &self.datacenter {
            config = config.with_local_datacenter(dc.clone());
        }
        config
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or print the CQL schema.
    #[command(subcommand)]
    Schema(SchemaCommand),
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Create the keyspace and apply every migration not yet applied (idempotent).
    Apply(ReplicationArg),
    /// Print the whole schema as CQL, for applying by hand.
    Print(ReplicationArg),
}

#[derive(Debug, Args)]
struct ReplicationArg {
    /// Keyspace replication: `simple:RF` (SimpleStrategy) or `DC:RF[,DC:RF…]`
    /// (NetworkTopologyStrategy). Used only when the keyspace is created.
    #[arg(long, default_value = "simple:1")]
    replication: String,
}

impl ReplicationArg {
    fn parse(&self) -> Result<schema::Replication, CliError> {
        schema::Replication::parse(&self.replication)
            .map_err(|e| CliError::input(anyhow::anyhow!("--replication: {e}")))
    }
}

impl Cli {
    pub(crate) async fn run(self) -> Result<(), CliError> {
        match self.command {
            Command::Schema(SchemaCommand::Print(r)) => {
                let cql =
                    schema::print(&self.cluster.keyspace, &r.parse()?).map_err(CliError::input)?;
                print!("{cql}");
                Ok(())
            }
            Command::Schema(SchemaCommand::Apply(r)) => {
                let replication = r.parse()?;
                schema::validate_keyspace(&self.cluster.keyspace).map_err(CliError::input)?;
                let config = self.cluster.config();
                let session = config.connect().await?;
                let report = schema::apply(&session, &config.keyspace, &replication).await?;
                println!(
                    "keyspace {}: applied migrations {:?}, already applied {:?}",
                    config.keyspace, report.applied, report.already_applied
                );
                Ok(())
            }
        }
    }
}
