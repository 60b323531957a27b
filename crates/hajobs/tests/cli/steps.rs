//! A job's steps, end to end (`hajobs trigger --here`): run in order, each
//! with `HAJOBS_STEP`; a failing step or one past its timeout ends the
//! attempt FAILED naming it, after its own retries; the steps after it do
//! not run.

use super::{Env, expect, text};

#[tokio::test]
async fn steps_run_in_order_and_a_failing_or_late_step_fails_the_attempt_naming_it() {
    let records = std::env::temp_dir().join(format!(
        "hajobs-steps-{}-{}.log",
        std::process::id(),
        hajobs_core::TriggerId::new()
    ));
    let r = records.display();
    let env = Env::new(
        "cli_steps",
        &format!(
            r#"
node_id = "steps-1"
[[job]]
name = "etl"
[[job.step]]
name = "extract"
command = ["sh", "-c", "echo \"$HAJOBS_STEP\" >> {r}"]
[[job.step]]
name = "load"
command = ["sh", "-c", "echo \"$HAJOBS_STEP\" >> {r}"]
[[job]]
name = "flaky"
[[job.step]]
name = "fetch"
command = ["sh", "-c", "echo \"$HAJOBS_STEP\" >> {r}; exit 3"]
retry_count = 1
[[job.step]]
name = "never"
command = ["sh", "-c", "echo never >> {r}"]
[[job]]
name = "slow"
[[job.step]]
name = "wait"
command = ["sleep", "30"]
timeout = "1s"
"#
        ),
    );
    expect(&env.run(&["schema", "apply"]), 0, "applied");
    let out = env.run(&["trigger", "--here", "etl"]);
    expect(&out, 0, "\"state\":\"FINISHED\"");
    assert_eq!(
        std::fs::read_to_string(&records).unwrap(),
        "extract\nload\n"
    );
    let _ = std::fs::remove_file(&records);

    let out = env.run(&["trigger", "--here", "flaky"]);
    expect(
        &out,
        1,
        "step 1 of 2: fetch failed: `sh` exited with exit status: 3",
    );
    assert_eq!(
        std::fs::read_to_string(&records).unwrap(),
        "fetch\nfetch\n",
        "tried twice (retry_count = 1), the next step never"
    );
    let _ = std::fs::remove_file(&records);

    let out = env.run(&["trigger", "--here", "slow"]);
    expect(&out, 1, "step 1 of 1: wait failed: timed out after 1s");
    assert!(
        text(&out.stdout).contains("FAILED"),
        "{}",
        text(&out.stdout)
    );
    env.drop().await;
}
