//! The `hajobs` binary end to end on a real Cassandra: the admin commands,
//! their exit codes and errors, and the daemon serving cron jobs.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hajobs_core::testing::{connect, contact_list, unique_keyspace};
use hajobs_core::{
    Acquired, CassandraConfig, JobId, JobResult, JobState, JobType, LeaseStore, LeaseTtl, LockType,
    NodeId, StatusStore,
};

struct Env {
    keyspace: String,
    config: PathBuf,
}

impl Env {
    fn new(prefix: &str, jobs_toml: &str) -> Self {
        let keyspace = unique_keyspace(prefix);
        let config = std::env::temp_dir().join(format!("{keyspace}.toml"));
        std::fs::write(&config, jobs_toml).unwrap();
        Self { keyspace, config }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hajobs"));
        c.args([
            "--keyspace",
            &self.keyspace,
            "--config",
            self.config.to_str().unwrap(),
        ])
        .args(args)
        .env("HAJOBS_CQL_NODES", contact_list())
        .env("HAJOBS_LOG", "warn");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn cassandra(&self) -> CassandraConfig {
        CassandraConfig::from_contact_list(&contact_list()).with_keyspace(self.keyspace.clone())
    }

    async fn statuses(&self) -> StatusStore {
        StatusStore::new(
            connect().await,
            &self.cassandra(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap()
    }

    async fn drop(self) {
        let _ = std::fs::remove_file(&self.config);
        connect()
            .await
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", self.keyspace), ())
            .await
            .unwrap();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn expect(out: &Output, code: i32, stream_has: &str) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains(stream_has) || stderr.contains(stream_has),
        "`{stream_has}` not in\nstdout: {stdout}\nstderr: {stderr}"
    );
}

const JOBS: &str = r#"
node_id = "cli-test"
[[job]]
name = "echo"
command = ["sh", "-c", "echo hi token=$HAJOBS_FENCING_TOKEN"]
[[job]]
name = "fails"
command = ["sh", "-c", "echo broken >&2; exit 3"]
"#;

#[tokio::test]
async fn admin_commands_do_what_they_say_and_exit_with_their_codes() {
    let env = Env::new("cli", JOBS);
    expect(
        &env.run(&["schema", "apply"]),
        0,
        "applied migrations [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]",
    );
    expect(
        &env.run(&["schema", "apply"]),
        0,
        "already applied [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]",
    );

    let out = env.run(&["trigger", "--here", "echo"]);
    expect(&out, 0, "\"state\":\"FINISHED\"");
    assert!(
        text(&out.stdout).contains("hi token=1"),
        "{}",
        text(&out.stdout)
    );
    let out = env.run(&["trigger", "--here", "fails"]);
    expect(&out, 1, "ended FAILED");
    assert!(
        text(&out.stdout).contains("broken"),
        "the output tail is in the status"
    );
    expect(
        &env.run(&["trigger", "nope"]),
        2,
        "unknown job type `nope` (configured: echo, fails)",
    );

    let out = env.run(&["status"]);
    expect(&out, 0, "FINISHED");
    assert!(text(&out.stdout).contains("echo") && text(&out.stdout).contains("fails"));
    expect(
        &env.run(&["status", "fails", "--json"]),
        0,
        "\"state\":\"FAILED\"",
    );
    expect(&env.run(&["jobs"]), 0, "(manual)");
    let out = env.run(&["jobs", "--json"]);
    expect(&out, 0, "\"job_type\":\"echo\"");
    assert_eq!(text(&out.stdout).lines().count(), 2);
    expect(
        &env.run(&["watch", "echo", "--wait", "1s"]),
        1,
        "echo has no running attempt",
    );
    // Statistics per job type.
    let out = env.run(&["stats", "--json"]);
    expect(&out, 0, "\"job_type\":\"echo\"");
    let stats: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |t: &str| stats.iter().find(|s| s["job_type"] == t).unwrap().clone();
    assert_eq!(of("echo")["finished"], 1);
    assert_eq!(of("echo")["success_rate"], 1.0);
    assert!(of("echo")["max_ms"].as_u64().is_some());
    assert_eq!(of("fails")["failed"], 1);
    assert!(of("fails")["last_failure_ms"].as_i64().is_some());
    expect(&env.run(&["stats", "fails"]), 0, "0.0%");

    // A lock held elsewhere: listed, refused to a trigger, released by force.
    let store = LeaseStore::new(connect().await, &env.cassandra())
        .await
        .unwrap();
    let holder = JobId::new();
    let ttl = LeaseTtl::from_secs(60).unwrap();
    let lock = LockType::new("echo").unwrap();
    assert!(matches!(
        store
            .acquire(&lock, holder, &NodeId::new("elsewhere").unwrap(), ttl)
            .await
            .unwrap(),
        Acquired::Acquired(_)
    ));
    let out = env.run(&["locks"]);
    expect(&out, 0, &holder.to_string());
    assert!(text(&out.stdout).contains("elsewhere"));
    expect(
        &env.run(&["trigger", "--here", "echo"]),
        3,
        &format!("held by job {holder} on elsewhere"),
    );
    // A holder that neither stops nor lets go: the safe unlock waits, then
    // says so; `--force` deletes the lock.
    expect(
        &env.run(&["unlock", "echo", "--wait", "1s"]),
        1,
        &format!("echo is still held by job {holder} on elsewhere after 1s"),
    );
    expect(
        &env.run(&["unlock", "echo", "--force"]),
        0,
        &format!("released echo by force, held by job {holder}"),
    );
    expect(&env.run(&["unlock", "echo"]), 0, "echo was not held");
    assert!(!text(&env.run(&["locks"]).stdout).contains(&holder.to_string()));

    expect(
        &env.run(&["history", "echo", "not-a-uuid"]),
        2,
        "job id `not-a-uuid`",
    );
    env.drop().await;
}

#[tokio::test]
async fn bad_input_and_no_cassandra_get_clear_errors_and_exit_codes() {
    let env = Env::new(
        "cli_bad",
        "[[job]]\nname = \"x\"\ncommand = [\"true\"]\ncron = \"every minute\"\n",
    );
    let path = env.config.display().to_string();
    expect(
        &env.run(&["jobs"]),
        2,
        &format!("{path}:4: job `x`: field `cron`: invalid cron `every minute`"),
    );
    std::fs::write(&env.config, JOBS).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hajobs"))
        .args(["--nodes", "127.0.0.1:1", "--config", &path, "status"])
        .output()
        .unwrap();
    expect(&out, 1, "cannot reach Cassandra at \"127.0.0.1:1\"");
    expect(&env.run(&["status"]), 1, "has no hajobs schema");
    let out = Command::new(env!("CARGO_BIN_EXE_hajobs"))
        .args(["serve"])
        .env_remove("HAJOBS_CONFIG")
        .output()
        .unwrap();
    expect(&out, 2, "needs the jobs' configuration");
    expect(&env.run(&["frobnicate"]), 2, "unrecognized subcommand");
    env.drop().await;
}

#[tokio::test]
async fn the_daemon_runs_cron_jobs_cancels_on_request_and_stops_gracefully() {
    let env = Env::new(
        "daemon",
        r#"
node_id = "daemon-1"
shutdown_grace = "10s"
[supervisor]
interval = "1s"
[[job]]
name = "tick"
command = ["sh", "-c", "echo tick"]
cron = "* * * * * *"
[[job]]
name = "long"
command = ["sleep", "600"]
cron = "*/2 * * * * *"
lease_ttl = "3s"
"#,
    );
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    let mut daemon = env
        .command(&["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let statuses = env.statuses().await;
    let (tick, long) = (JobType::new("tick").unwrap(), JobType::new("long").unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let running_long = loop {
        assert!(Instant::now() < deadline, "the daemon ran nothing in 30 s");
        let ticks = statuses.history(&tick, 5).await.unwrap();
        let longs = statuses.history(&long, 5).await.unwrap();
        let ticked = ticks
            .iter()
            .any(|e| e.status().is_some_and(|s| s.state == JobState::Finished));
        if let Some(s) = longs
            .iter()
            .filter_map(|e| e.status())
            .find(|s| s.state == JobState::Running)
        {
            if ticked {
                break s.job_id;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Cancel from another process: the daemon's attempt stops.
    expect(
        &env.run(&["cancel", "long"]),
        0,
        &format!("cancelled long attempt {running_long}"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = statuses
            .get(&long, running_long)
            .await
            .unwrap()
            .and_then(|e| e.status().cloned())
            .unwrap();
        if s.state == JobState::Canceled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "long still {} 10 s after cancel",
            s.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGTERM: graceful stop, exit 0, nothing left RUNNING, no lock held.
    assert!(
        Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "the daemon did not stop within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "daemon exit: {status}");
    for job_type in [&tick, &long] {
        for e in statuses.history(job_type, 50).await.unwrap() {
            let s = e.status().unwrap();
            assert_ne!(
                s.result(),
                JobResult::Pending,
                "{job_type} {} left {}",
                s.job_id,
                s.state
            );
        }
    }
    let leases = LeaseStore::new(connect().await, &env.cassandra())
        .await
        .unwrap();
    assert!(leases.list().await.unwrap().is_empty(), "locks left held");
    env.drop().await;
}

#[tokio::test]
async fn a_cancelled_command_gets_sigterm_first() {
    let marker = std::env::temp_dir().join(format!("hajobs-term-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let env = Env::new(
        "sigterm",
        &format!(
            r#"
[[job]]
name = "graceful"
command = ["sh", "-c", "trap 'echo got-term > {}; exit 0' TERM; sleep 600 & wait"]
lease_ttl = "3s"
"#,
            marker.display()
        ),
    );
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    // `trigger` runs the job in its own process; cancel it from another.
    let runner = env
        .command(&["trigger", "--here", "graceful"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let statuses = env.statuses().await;
    let job_type = JobType::new("graceful").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while statuses.latest(&job_type).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect(
        &env.run(&["cancel", "graceful"]),
        0,
        "cancelled graceful attempt",
    );
    let out = runner.wait_with_output().unwrap();
    expect(&out, 1, "ended CANCELED");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default().trim(),
        "got-term",
        "no SIGTERM reached the command"
    );
    let _ = std::fs::remove_file(&marker);
    env.drop().await;
}

#[tokio::test]
async fn serve_waits_for_its_database_and_starts_once_it_is_ready() {
    // The keyspace has no schema yet: as for a daemon started before its
    // database (or before the schema job), `serve` retries with backoff.
    let env = Env::new(
        "serve_wait",
        r#"
[[job]]
name = "tick"
command = ["true"]
cron = "* * * * * *"
"#,
    );
    let log = std::env::temp_dir().join(format!("{}.log", env.keyspace));
    let mut daemon = env
        .command(&["serve"])
        .env("HAJOBS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("cannot start serving yet; retrying")
    {
        assert!(Instant::now() < deadline, "no retry logged");
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "serve exited instead of waiting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    let statuses = env.statuses().await;
    let tick = JobType::new("tick").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !statuses
        .history(&tick, 5)
        .await
        .unwrap()
        .iter()
        .any(|e| e.status().is_some_and(|s| s.state == JobState::Finished))
    {
        assert!(Instant::now() < deadline, "the daemon never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    assert!(daemon.wait().unwrap().success());
    let _ = std::fs::remove_file(&log);
    env.drop().await;
}

#[tokio::test]
async fn rows_written_by_another_tool_never_stop_a_replica_or_hide_a_good_run() {
    let env = Env::new(
        "bad_rows",
        r#"
[supervisor]
interval = "1s"
# Every pass sweeps every job type: the corrupt rows are read each pass.
sweep_period = "1s"
[[job]]
name = "echo"
command = ["sh", "-c", "echo hi"]
[[job]]
name = "tick"
command = ["true"]
cron = "* * * * * *"
"#,
    );
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    expect(&env.run(&["trigger", "--here", "echo"]), 0, "FINISHED");
    // Newer rows than the good run: an unknown state, a wrong type, bad
    // JSON; and a lock row with a value no hajobs holder writes.
    let session = connect().await;
    let ks = &env.keyspace;
    for cql in [
        format!(
            "INSERT INTO {ks}.job_status_meta (job_type, job_id, trigger_id, job_status_ts, job_state, job_result) VALUES ('echo', now(), now(), toTimestamp(now()), 'EXPLODED', 'FAILED')"
        ),
        format!(
            "INSERT INTO {ks}.job_status_meta (job_type, job_id, job_status_ts, job_state, job_result) VALUES ('tick', now(), toTimestamp(now()), 'RUNNING', 'PENDING')"
        ),
        format!(
            "INSERT INTO {ks}.job_status_data (job_type, job_id, job_status_ts, trigger_id, job_state, job_result, content) VALUES ('echo', now(), toTimestamp(now()), now(), 'RUNNING', 'PENDING', '{{not json')"
        ),
        format!(
            "INSERT INTO {ks}.lock (lock_type, job_lock, owner) VALUES ('foreign', now(), '\u{1F4A3} \"quoted\"')"
        ),
    ] {
        session.query_unpaged(cql, ()).await.unwrap();
    }
    let out = env.run(&["status"]);
    expect(&out, 0, "CORRUPT ROW job_status_meta job_type=\"echo\"");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("EXPLODED")
            && stdout
                .lines()
                .any(|l| l.starts_with("echo") && l.contains("FINISHED")),
        "the last good run of echo is hidden:\n{stdout}"
    );
    expect(&env.run(&["locks"]), 0, "foreign");

    // A daemon on these rows keeps running its jobs, and its supervisor
    // names each corrupt row once, not on every pass.
    let log = std::env::temp_dir().join(format!("{ks}.log"));
    let mut daemon = env
        .command(&["serve"])
        .env("HAJOBS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let statuses = env.statuses().await;
    let tick = JobType::new("tick").unwrap();
    let finished = || async {
        statuses
            .history(&tick, 20)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.status().is_some_and(|s| s.state == JobState::Finished))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while finished().await < 4 {
        assert!(
            Instant::now() < deadline,
            "the daemon stopped running `tick`"
        );
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    assert!(daemon.wait().unwrap().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    let warnings = logged.matches("corrupt status row skipped").count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings for the 2 corrupt meta rows over 4+ passes:\n{logged}"
    );
    let _ = std::fs::remove_file(&log);
    env.drop().await;
}

/// Whether process `pid` still exists (a zombie counts as gone).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|state| state != "Z"))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_command_process_tree_lives_and_dies_with_its_attempt() {
    let dir = std::env::temp_dir().join(format!("hajobs-tree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (left, kids) = (dir.join("left"), dir.join("kids"));
    let env = Env::new(
        "tree",
        &format!(
            r#"
[[job]]
name = "leaves-a-child"
command = ["sh", "-c", "sleep 300 & echo $! > {left}; echo hi"]
[[job]]
name = "no-such-program"
command = ["/nonexistent/hajobs-test-program", "--flag"]
[[job]]
name = "has-children"
command = ["sh", "-c", "sleep 300 & echo $! >> {kids}; setsid sleep 300 & echo $! >> {kids}; wait"]
lease_ttl = "3s"
"#,
            left = left.display(),
            kids = kids.display()
        ),
    );
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    // A child left running (and holding stdout) neither keeps the attempt
    // RUNNING nor outlives it.
    let started = Instant::now();
    expect(
        &env.run(&["trigger", "--here", "leaves-a-child"]),
        0,
        "FINISHED",
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the attempt waited for its child: {:?}",
        started.elapsed()
    );
    let pid = std::fs::read_to_string(&left).unwrap();
    assert!(!alive(pid.trim()), "the child {pid} outlived its attempt");
    // A program that does not exist: FAILED, saying which.
    let out = env.run(&["trigger", "--here", "no-such-program"]);
    expect(&out, 1, "ended FAILED");
    expect(&out, 1, "cannot start `/nonexistent/hajobs-test-program`");

    // Cancelled: the children die too, even one in a session of its own.
    let runner = env
        .command(&["trigger", "--here", "has-children"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&kids)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the children never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pids: Vec<String> = std::fs::read_to_string(&kids)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(pids.iter().all(|p| alive(p)));
    expect(&env.run(&["cancel", "has-children"]), 0, "cancelled");
    let out = runner.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the attempt ended CANCELED");
    for p in &pids {
        assert!(!alive(p), "process {p} outlived its cancelled attempt");
    }
    let _ = std::fs::remove_dir_all(&dir);
    env.drop().await;
}

#[tokio::test]
async fn the_node_registry_lists_live_replicas_and_drops_vanished_ones() {
    let env = Env::new(
        "nodes",
        r#"
[[job]]
name = "tick"
command = ["sleep", "2"]
cron = "* * * * * *"
"#,
    );
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    let spawn = |node: &str| {
        env.command(&["serve"])
            .env("HAJOBS_NODE_ID", node)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("reg-a"), spawn("reg-b"));
    let nodes = || -> Vec<serde_json::Value> {
        let out = env.run(&["nodes", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let ids = |n: &[serde_json::Value]| -> Vec<String> {
        n.iter()
            .map(|v| v["node_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let n = nodes();
        if ids(&n) == ["reg-a", "reg-b"]
            && n.iter()
                .any(|v| !v["running"].as_array().unwrap().is_empty())
        {
            break n;
        }
        assert!(Instant::now() < deadline, "registry: {n:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let a_entry = listed.iter().find(|v| v["node_id"] == "reg-a").unwrap();
    assert_eq!(a_entry["pid"].as_i64(), Some(i64::from(a.id())));
    assert_eq!(a_entry["job_types"], serde_json::json!(["tick"]));
    expect(&env.run(&["nodes"]), 0, "reg-a");

    // kill -9: the entry expires within its TTL (15 s).
    a.kill().unwrap();
    let killed = Instant::now();
    let _ = a.wait();
    while ids(&nodes()).contains(&"reg-a".to_owned()) {
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "a killed replica still listed after 25 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("killed replica dropped out after {:?}", killed.elapsed());
    // A graceful stop removes it at once.
    let _ = Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status();
    assert!(b.wait().unwrap().success());
    assert!(nodes().is_empty(), "a stopped replica is still listed");
    env.drop().await;
}

#[tokio::test]
async fn completions_and_json_logs_for_shippers() {
    let out = Command::new(env!("CARGO_BIN_EXE_hajobs"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    expect(&out, 0, "_hajobs()");
    for shell in ["zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_hajobs"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    // A daemon that cannot reach its database says so, as JSON lines.
    let env = Env::new("json_logs", "[[job]]\nname = \"x\"\ncommand = [\"true\"]\n");
    let mut daemon = env
        .command(&["--log-format", "json", "--nodes", "127.0.0.1:1", "serve"])
        .env("HAJOBS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(daemon.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in std::io::BufRead::lines(stderr).take(50) {
        let line = line.unwrap();
        // Every line is a JSON object, the driver's own warnings included.
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let found = v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot start serving yet"));
        seen.push(line);
        if found {
            assert_eq!(v["level"], "WARN");
            break;
        }
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("cannot start serving yet")),
        "{seen:#?}"
    );
    env.drop().await;
}

#[tokio::test]
async fn watch_follows_a_running_attempt_to_its_end() {
    let env = Env::new(
        "watch",
        "[[job]]\nname = \"slow\"\ncommand = [\"sh\", \"-c\", \"sleep 2; echo done\"]\n",
    );
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    let runner = env
        .command(&["trigger", "--here", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = env.run(&["watch", "slow", "--wait", "20s"]);
    expect(&out, 0, "watching slow attempt");
    assert!(
        text(&out.stdout).contains("\"state\":\"FINISHED\""),
        "{}",
        text(&out.stdout)
    );
    assert!(runner.wait_with_output().unwrap().status.success());
    env.drop().await;
}

#[tokio::test]
async fn work_commands_show_list_and_purge_work_items() {
    use hajobs_core::{CheckIn, WorkKey, WorkSet, WorkStore};
    let env = Env::new("cli_work", JOBS);
    expect(&env.run(&["schema", "apply"]), 0, "applied migrations");
    let store = WorkStore::new(connect().await, &env.cassandra(), Duration::from_secs(3600))
        .await
        .unwrap();
    let set = WorkSet::new("orders").unwrap();
    let (node, ttl) = (NodeId::new("w1").unwrap(), LeaseTtl::from_secs(30).unwrap());
    let mut claims = Vec::new();
    for key in ["4711", "4712", "4713"] {
        match store
            .checkin(&set, &WorkKey::new(key).unwrap(), &node, ttl)
            .await
            .unwrap()
        {
            CheckIn::Proceed(claim) => claims.push(claim),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        store
            .checkout(&claims[0], &serde_json::json!({"shipped": true}))
            .await
            .unwrap()
    );
    assert!(store.fail(&claims[1], "carrier down").await.unwrap());

    let out = env.run(&["work", "check", "orders", "4711"]);
    expect(&out, 0, "DONE");
    assert!(
        text(&out.stdout).contains(r#"{"shipped":true}"#),
        "{}",
        text(&out.stdout)
    );
    expect(
        &env.run(&["work", "check", "orders", "4712"]),
        0,
        "carrier down",
    );
    let out = env.run(&["work", "check", "orders", "4713", "--json"]);
    expect(&out, 0, "\"state\":\"IN_PROGRESS\"");
    assert!(text(&out.stdout).contains("\"node\":\"w1\""));
    expect(
        &env.run(&["work", "check", "orders", "9999"]),
        1,
        "work item `9999` of work set `orders` was never checked in",
    );
    expect(
        &env.run(&["work", "check", "", "1"]),
        2,
        "work set is empty",
    );
    let out = env.run(&["work", "list", "orders", "--retention", "30d"]);
    expect(&out, 0, "4713");
    let out = env.run(&["work", "list", "orders"]);
    expect(&out, 0, "KEY");
    let listed = text(&out.stdout);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    expect(
        &env.run(&["work", "list", "orders", "--limit", "0"]),
        2,
        "limit 0 is out of range",
    );
    expect(
        &env.run(&["work", "purge", "orders", "--older-than", "0s"]),
        0,
        "purged 2 work item(s)",
    );
    let out = env.run(&["work", "list", "orders", "--json"]);
    expect(&out, 0, "4713");
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "only the item in progress is left"
    );
    expect(
        &env.run(&["work", "purge", "orders", "--older-than", "soon"]),
        2,
        "--older-than",
    );

    // `work run`: a command processes an item exactly once.
    let script = "echo shipping $HAJOBS_WORK_SET/$HAJOBS_WORK_KEY token=$HAJOBS_FENCING_TOKEN attempt=$HAJOBS_ATTEMPT";
    let out = env.run(&["work", "run", "files", "a.csv", "--", "sh", "-c", script]);
    expect(&out, 0, "checked out DONE");
    assert!(
        text(&out.stdout).contains("shipping files/a.csv token=1 attempt=1"),
        "{}",
        text(&out.stdout)
    );
    let again = env.run(&["work", "run", "files", "a.csv", "--", "sh", "-c", script]);
    expect(&again, 0, "already done");
    assert!(!text(&again.stdout).contains("shipping"), "not run twice");
    expect(
        &env.run(&["work", "run", "files", "b.csv", "--", "sh", "-c", "exit 3"]),
        1,
        "recorded FAILED",
    );
    expect(
        &env.run(&["work", "check", "files", "b.csv"]),
        0,
        "exit status: 3",
    );
    let retry = env.run(&["work", "run", "files", "b.csv", "--", "sh", "-c", script]);
    expect(&retry, 0, "checked out DONE");
    assert!(
        text(&retry.stdout).contains("token=2 attempt=2"),
        "{}",
        text(&retry.stdout)
    );
    expect(
        &env.run(&[
            "work",
            "run",
            "files",
            "c.csv",
            "--timeout",
            "300ms",
            "--",
            "sleep",
            "30",
        ]),
        1,
        "the check-in timeout of 300ms fired",
    );
    expect(
        &env.run(&["work", "check", "files", "c.csv"]),
        0,
        "checkin_timeout",
    );
    // The command's process tree lives and dies with the item: what it
    // leaves running is ended before the item is checked out.
    let pid_file = std::env::temp_dir().join(format!("{}-left.pid", env.keyspace));
    let leaves = format!("sleep 60 & echo $! > {}; exit 0", pid_file.display());
    expect(
        &env.run(&["work", "run", "files", "e.csv", "--", "sh", "-c", &leaves]),
        0,
        "checked out DONE",
    );
    let left = std::fs::read_to_string(&pid_file).unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{}", left.trim())).exists(),
        "the subprocess the command left running was ended"
    );
    let _ = std::fs::remove_file(&pid_file);
    // A worker process killed mid-item (SIGKILL: no check-out, no release):
    // the item stays in progress until its lease TTL, then exactly one
    // later `work run` takes it over with the next fencing token.
    let mut victim = env
        .command(&[
            "work",
            "run",
            "files",
            "d.csv",
            "--lease-ttl",
            "2s",
            "--",
            "sleep",
            "30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = WorkKey::new("d.csv").unwrap();
    let files = WorkSet::new("files").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.read(&files, &d, true).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the victim never checked in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed_at = Instant::now();
    let takeover = "echo took over token=$HAJOBS_FENCING_TOKEN attempt=$HAJOBS_ATTEMPT";
    let out = loop {
        let out = env.run(&["work", "run", "files", "d.csv", "--", "sh", "-c", takeover]);
        match out.status.code() {
            Some(3) => {
                assert!(
                    killed_at.elapsed() < Duration::from_secs(20),
                    "never taken over"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break out,
        }
    };
    expect(&out, 0, "checked out DONE");
    assert!(
        text(&out.stdout).contains("took over token=2 attempt=2"),
        "{}",
        text(&out.stdout)
    );
    let again = env.run(&["work", "run", "files", "d.csv", "--", "sh", "-c", takeover]);
    expect(&again, 0, "already done");
    assert!(
        !text(&again.stdout).contains("took over"),
        "taken over once"
    );
    // Another worker holds it: exit 3.
    let CheckIn::Proceed(_held) = store
        .checkin(&set, &WorkKey::new("held").unwrap(), &node, ttl)
        .await
        .unwrap()
    else {
        panic!("first check-in");
    };
    expect(
        &env.run(&["work", "run", "orders", "held", "--", "true"]),
        3,
        "in progress on w1",
    );
    env.drop().await;
}

#[tokio::test]
async fn queue_commands_show_the_queue_and_remove_a_trigger_on_record() {
    use hajobs_core::{QueueStore, TriggerId};
    let env = Env::new("cli_queue", JOBS);
    expect(&env.run(&["schema", "apply"]), 0, "applied migrations");
    let queues = QueueStore::new(connect().await, &env.cassandra())
        .await
        .unwrap();
    let shared = LockType::new("shared").unwrap();
    let (first, second) = (TriggerId::new(), TriggerId::new());
    for (job, t) in [("echo", first), ("fails", second)] {
        queues
            .enqueue(
                &shared,
                job,
                t,
                "node-a",
                Duration::from_secs(3600),
                "lock_wait_timeout",
            )
            .await
            .unwrap();
    }
    let out = env.run(&["queue"]);
    expect(&out, 0, "POS");
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[1].contains(&first.to_string()) && lines[1].contains("  1 "),
        "{table}"
    );
    assert!(
        lines[2].contains(&second.to_string()) && lines[2].contains("  2 "),
        "{table}"
    );
    let out = env.run(&["queue", "shared", "--json"]);
    expect(&out, 0, "\"queued_by\":\"node-a\"");
    expect(
        &env.run(&["queue", "rm", &first.to_string()]),
        0,
        "removed trigger",
    );
    expect(
        &env.run(&["queue", "rm", &first.to_string()]),
        1,
        "is not queued",
    );
    expect(
        &env.run(&["queue", "rm", "nope"]),
        2,
        "`nope` is not a trigger id",
    );
    let out = env.run(&["queue", "shared", "--json"]);
    expect(&out, 0, "\"position\":1");
    assert!(text(&out.stdout).contains(&second.to_string()));
    assert_eq!(text(&out.stdout).lines().count(), 1);
    // The removal is on record as the trigger's SKIPPED status.
    let statuses = env.statuses().await;
    let echo = JobType::new("echo").unwrap();
    let history = statuses.history(&echo, 10).await.unwrap();
    let skipped = history
        .iter()
        .filter_map(hajobs_core::StatusEntry::status)
        .find(|s| s.trigger_id == first)
        .expect("the removal is recorded");
    assert_eq!(skipped.state, JobState::Skipped);
    let full = statuses.get(&echo, skipped.job_id).await.unwrap();
    assert!(
        format!("{full:?}").contains("removed from the queue"),
        "{full:?}"
    );
    env.drop().await;
}

#[path = "cli/hardening.rs"]
mod hardening;

#[path = "cli/params.rs"]
mod params;

#[path = "cli/scheduled.rs"]
mod scheduled;

#[path = "cli/steps.rs"]
mod steps;
