//! What a job can and cannot do to the daemon that runs it: it sees a
//! declared environment (never the daemon's secrets), and whatever it
//! prints, the daemon's memory stays bounded.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hajobs_core::{JobState, JobType};
use serde_json::Value;

use super::{Env, expect, text};

/// A daemon of `env`, with `vars` in its environment, and its log.
fn serve(env: &Env, vars: &[(&str, &str)]) -> Child {
    let mut c = env.command(&["serve"]);
    c.envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.spawn().unwrap()
}

/// `hajobs trigger JOB --wait` until `daemon` has registered the job.
async fn trigger_and_wait(env: &Env, daemon: &mut Child, job: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            panic!("the daemon exited ({status}) before running {job}");
        }
        let out = env.run(&["trigger", job, "--wait"]);
        if out.status.success() {
            return;
        }
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            said.contains("no live replica") && Instant::now() < deadline,
            "trigger {job}: {said}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The content of the newest status of `job`, which must be FINISHED.
async fn finished_content(env: &Env, job: &str) -> Value {
    let statuses = env.statuses().await;
    let latest = statuses
        .latest(&JobType::new(job).unwrap())
        .await
        .unwrap()
        .unwrap();
    let status = latest.status().unwrap();
    assert_eq!(status.state, JobState::Finished, "{job}: {status:?}");
    let full = statuses
        .get(&status.job_type, status.job_id)
        .await
        .unwrap()
        .unwrap();
    full.status().unwrap().content.clone().unwrap()
}

fn stop(mut daemon: Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
}

#[tokio::test]
async fn a_command_sees_a_declared_environment_and_never_a_secret() {
    let dump = std::env::temp_dir().join(format!("hajobs-env-{}", std::process::id()));
    let env = Env::new(
        "jobenv",
        &format!(
            r#"
node_id = "env-1"
[[job]]
name = "envdump"
command = ["sh", "-c", "env > {dump}; env"]
env = {{ FROM_FILE = "yes" }}
inherit_env = ["ASKED_FOR"]
"#,
            dump = dump.display()
        ),
    );
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    let secrets = [
        ("HAJOBS_ADMIN_TOKEN", "admin-secret-6d1f"),
        ("HAJOBS_READ_TOKEN", "read-secret-93ab"),
        ("HAJOBS_CASSANDRA_USER", "cassandra-user-0c7d"),
        ("HAJOBS_CASSANDRA_PASSWORD", "cassandra-secret-41c2"),
    ];
    let mut vars = secrets.to_vec();
    vars.extend([
        ("ASKED_FOR", "inherited"),
        ("NOT_ASKED_FOR", "kept-back"),
        ("LC_TIME", "C"),
    ]);
    let mut daemon = serve(&env, &vars);
    trigger_and_wait(&env, &mut daemon, "envdump").await;
    let seen = std::fs::read_to_string(&dump).unwrap();
    let content = finished_content(&env, "envdump").await;
    stop(daemon);
    for line in [
        "FROM_FILE=yes",
        "ASKED_FOR=inherited",
        "LC_TIME=C",
        "HAJOBS_JOB_TYPE=envdump",
        "HAJOBS_NODE_ID=env-1",
    ] {
        assert!(seen.lines().any(|l| l == line), "{line} not in\n{seen}");
    }
    assert!(seen.lines().any(|l| l.starts_with("PATH=")), "{seen}");
    assert!(!seen.contains("NOT_ASKED_FOR"), "{seen}");
    for (name, value) in secrets {
        assert!(
            !seen.contains(name) && !seen.contains(value),
            "{name} in\n{seen}"
        );
        assert!(!content.to_string().contains(value), "{name} in the status");
    }
    let _ = std::fs::remove_file(&dump);

    // Naming a secret is a configuration error, placed.
    let bad = Env::new(
        "jobenvbad",
        "[[job]]\nname = \"x\"\ncommand = [\"true\"]\ninherit_env = [\"HAJOBS_ADMIN_TOKEN\"]\n",
    );
    expect(
        &bad.run(&["jobs"]),
        2,
        "job `x`: field `inherit_env`: `HAJOBS_ADMIN_TOKEN` is one of the daemon's secrets",
    );
    env.drop().await;
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_job_printing_400_mb_leaves_the_daemon_memory_bounded() {
    // 400 MB in all: 150 MB without a line end, 150 MB of progress lines
    // (each an update: coalesced), one progress line of 1 MB (refused),
    // 100 MB on stderr, then a last line.
    let script = r#"head -c 150000000 /dev/zero; echo;
yes 'HAJOBS_PROGRESS {"n": 1}' | head -c 150000000;
printf 'HAJOBS_PROGRESS '; head -c 1000000 /dev/zero | tr '\0' x; echo;
head -c 100000000 /dev/zero >&2;
echo done"#;
    let env = Env::new(
        "chatty",
        &format!(
            "node_id = \"chatty-1\"\n[[job]]\nname = \"chatty\"\ncommand = [\"sh\", \"-c\", '''{script}''']\n"
        ),
    );
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    let mut daemon = serve(&env, &[]);
    let pid = daemon.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.run(&["nodes", "--json"]).stdout.is_empty() {
        assert!(Instant::now() < deadline, "the daemon never registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = rss_kib(pid);
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while rx.try_recv().is_err() {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let started = Instant::now();
    trigger_and_wait(&env, &mut daemon, "chatty").await;
    let took = started.elapsed();
    let _ = tx.send(());
    let peak = sampler.join().unwrap();
    let content = finished_content(&env, "chatty").await;
    let statuses = env.statuses().await;
    let latest = statuses
        .latest(&JobType::new("chatty").unwrap())
        .await
        .unwrap()
        .unwrap();
    let attempt = latest.status().unwrap();
    let history = statuses
        .run_history(&attempt.job_type, attempt.job_id)
        .await
        .unwrap();
    stop(daemon);
    println!(
        "chatty: 400 MB in {took:?}, daemon RSS {before} KiB before, peak {peak} KiB (+{} KiB), {} statuses",
        peak.saturating_sub(before),
        history.len()
    );
    assert!(
        peak < before + 16 * 1024,
        "the daemon grew by {} KiB while the job printed 400 MB",
        peak - before
    );
    assert_eq!(content["stdout"].as_str().unwrap().len(), 4096, "{content}");
    assert!(content["stdout"].as_str().unwrap().ends_with("done\n"));
    assert_eq!(
        content["stdout_bytes"].as_u64(),
        Some(150_000_001 + 150_000_000 + 16 + 1_000_000 + 1 + 5)
    );
    assert_eq!(content["stderr_bytes"].as_u64(), Some(100_000_000));
    assert!(
        content["progress_refused"]
            .as_str()
            .is_some_and(|s| s.starts_with("1 progress line")),
        "{content}"
    );
    // Millions of progress lines, a bounded number of writes: at most one
    // every 250 ms, plus the first, the last and the final status.
    let most = took.as_millis() / 250 + 4;
    assert!(
        (history.len() as u128) <= most,
        "{} statuses in {took:?}",
        history.len()
    );
    env.drop().await;
}

/// The direct children of `pid` (from `/proc`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let after = &s[s.rfind(')')? + 1..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s[s.rfind(')').unwrap_or(0) + 1..]
                .split_whitespace()
                .next()
                .is_some_and(|state| state != "Z")
        })
        .unwrap_or(false)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_work_run_ends_the_tree_when_its_guard_dies() {
    let env = Env::new("guarddies", "");
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    let pids = std::env::temp_dir().join(format!("hajobs-guard-dies-{}", std::process::id()));
    let _ = std::fs::remove_file(&pids);
    // A command with a child in a session of its own: not in the group.
    let script = format!(
        "sleep 300 & echo $! >> {p}; setsid sleep 300 & echo $! >> {p}; wait",
        p = pids.display()
    );
    let work = env
        .command(&["work", "run", "guarded", "k1", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    until("the command's two children", || {
        std::fs::read_to_string(&pids).is_ok_and(|t| t.lines().count() == 2)
    })
    .await;
    let tree: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(tree.iter().all(|&p| alive(p)));
    let guard = children_of(work.id())
        .into_iter()
        .find(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with("hajobs-guard"))
        })
        .expect("work run's guard");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &guard.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = work.wait_with_output().unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("process(es) left of its tree were killed"),
        "{said}"
    );
    for p in &tree {
        until(&format!("process {p} of the tree to end"), || !alive(*p)).await;
    }
    let _ = std::fs::remove_file(&pids);
    env.drop().await;
}
