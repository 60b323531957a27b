//! One-time triggers at a given time, end to end: `hajobs trigger JOB --in
//! | --at` (bad times refused, exit 2), `hajobs scheduled` lists them, `rm`
//! removes one before it fires (once), and a daemon runs the other at its
//! time — judged from the command's own records.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Env, expect, text};

#[tokio::test]
async fn a_trigger_scheduled_from_the_cli_runs_once_at_its_time_and_a_removed_one_never() {
    let records = std::env::temp_dir().join(format!(
        "hajobs-scheduled-{}-{}.log",
        std::process::id(),
        hajobs_core::TriggerId::new()
    ));
    let env = Env::new(
        "cli_sched",
        &format!(
            r#"
node_id = "sched-1"
[http]
listen = "127.0.0.1:0"
[[job]]
name = "report"
command = ["sh", "-c", "echo \"$HAJOBS_TRIGGER_ID $HAJOBS_PARAM_REGION $(date +%s%3N)\" >> {}"]
params = {{ region = {{ default = "eu" }} }}
"#,
            records.display()
        ),
    );
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    // Bad times are refused before anything is recorded.
    expect(
        &env.run(&["trigger", "report", "--at", "tomorrow"]),
        2,
        "at `tomorrow` is not an RFC 3339 time",
    );
    expect(
        &env.run(&["trigger", "report", "--at", "2020-01-01T00:00:00Z"]),
        2,
        "is in the past",
    );
    expect(
        &env.run(&["trigger", "report", "--in", "400d"]),
        2,
        "days ahead",
    );
    expect(
        &env.run(&["trigger", "report", "--in", "1h", "-p", "colour=red"]),
        2,
        "unknown parameter `colour`",
    );
    let out = env.run(&["scheduled", "--json"]);
    expect(&out, 0, "");
    assert!(text(&out.stdout).trim().is_empty(), "{}", text(&out.stdout));

    let mut daemon = env
        .command(&["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // One in an hour, removed; one in 3 s, run by the daemon.
    let later = env.run(&["trigger", "report", "--in", "1h"]);
    expect(&later, 0, "scheduled report as trigger");
    let id_of = |out: &std::process::Output| {
        text(&out.stdout)
            .split_whitespace()
            .skip_while(|w| *w != "trigger")
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let later_id = id_of(&later);
    let soon = env.run(&["trigger", "report", "--in", "3s", "-p", "region=us"]);
    expect(&soon, 0, "scheduled report as trigger");
    let soon_id = id_of(&soon);
    let listed = env.run(&["scheduled", "report"]);
    expect(&listed, 0, "pending");
    assert!(
        text(&listed.stdout).contains(&later_id),
        "{}",
        text(&listed.stdout)
    );
    expect(
        &env.run(&["scheduled", "rm", &later_id]),
        0,
        "recorded as SKIPPED",
    );
    expect(
        &env.run(&["scheduled", "rm", &later_id]),
        1,
        "is removed (not pending)",
    );
    expect(
        &env.run(&["scheduled", "rm", "nope"]),
        2,
        "`nope` is not a trigger id",
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let lines = std::fs::read_to_string(&records).unwrap_or_default();
        if let Some(l) = lines.lines().find(|l| l.starts_with(&soon_id)) {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the scheduled trigger did not run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(line.contains(" us "), "its parameter: {line}");
    let states: Vec<Value> = loop {
        let out = env.run(&["scheduled", "--json"]);
        let states: Vec<Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if states
            .iter()
            .any(|s| s["trigger_id"] == soon_id.as_str() && s["state"] == "started")
        {
            break states;
        }
        assert!(
            Instant::now() < deadline,
            "outcome not recorded: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let removed = states
        .iter()
        .find(|s| s["trigger_id"] == later_id.as_str())
        .unwrap();
    assert_eq!(removed["state"], "removed", "{removed}");
    assert!(
        removed["removed_by"].as_str().unwrap().contains('@'),
        "{removed}"
    );
    // It ran once.
    let runs = std::fs::read_to_string(&records).unwrap();
    assert_eq!(runs.lines().filter(|l| l.starts_with(&soon_id)).count(), 1);
    assert!(!runs.contains(&later_id));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let _ = std::fs::remove_file(&records);
    env.drop().await;
}
