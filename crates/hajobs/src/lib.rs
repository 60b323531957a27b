//! # hajobs
//!
//! The daemon (a highly available cron on Cassandra/ScyllaDB) and the admin
//! CLI, as a library so that the binary and the end-to-end tests run one and
//! the same code. Its one entry point is [`main`]; everything else is
//! private to the binary.
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | `admin` | the admin layer: what an operator asks of the cluster, answered once for the CLI and HTTP |
//! | `cli` | the command line: flags, and which command runs |
//! | `cmd` | what each command does, one module per command group: parse, ask the admin layer, render |
//! | `settings` | `Settings`: the validated configuration under flags and environment; sessions, admin layer, manager |
//! | `exit` | `CliError`: an error and its exit code, decided in one place; an attempt's final status as an exit code |
//! | `http` | the HTTP API, the page and `/metrics` (axum), over the admin layer |
//! | `daemon` | `hajobs serve`: manager, supervisor, request watcher, registry, HTTP server, started and stopped in one place |
//! | `config` | the TOML configuration, validated, with placed errors |
//! | `command_job` | a configured command as a job, under its guard |
//! | `command_steps` | a job's `[[job.step]]`s run in order under one lease, resumed at the first unfinished one |
//! | `job_env` | a command's declared environment: never the daemon's secrets |
//! | `orphans` | what is left of a tree whose guard died: found by its mark, ended through pidfds |
//! | `output` | a command's output read in bounded memory: the tail for its status, its progress lines |
//! | `guard` | the per-attempt guard process: the command's tree lives and dies with the lease |
//! | `work_run` | `hajobs work run`: a command processes a work item under that guard and the item's lease |
//! | `registry` | the daemon's entry in the node registry, refreshed with a TTL |
//! | `wake` | a requester wakes the replicas that have its job (`POST /wake`, or in-process), so its trigger is claimed at once |
//!
//! Exit codes: 0 success, 1 a runtime failure (Cassandra unreachable, a
//! request failed, a triggered job failed), 2 bad input (flags,
//! configuration), 3 the lock is held by another attempt.

use std::process::ExitCode;

use clap::Parser;

mod admin;
mod cli;
mod cmd;
mod command_job;
mod command_steps;
mod config;
mod daemon;
mod exit;
mod guard;
mod http;
mod job_env;
mod orphans;
mod output;
mod registry;
mod settings;
mod wake;
mod work_run;

/// Runs `hajobs` with the process's arguments; returns its exit code.
pub fn main() -> ExitCode {
    // A command's guard (see `guard`): no runtime, no logging, no flags of ours.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == guard::GUARD_ARG) {
        return guard::main(args.collect());
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HAJOBS_LOG")
        .unwrap_or_else(|_| "info,scylla=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format() {
        cli::LogFormat::Json => logs.json().init(),
        // Colours for a person at a terminal, never for a file or journald.
        cli::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hajobs: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hajobs: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}
