//! Triggers with parameters and a payload, end to end: refused before
//! anything is recorded when they do not fit the job (exit 2, naming the
//! parameter); otherwise the command sees `HAJOBS_PARAM_<NAME>` and reads
//! the payload on its standard input — run here or by a replica.

use std::process::Stdio;
use std::time::{Duration, Instant};

use hajobs_core::JobType;

use super::{Env, expect, text};

fn jobs_toml(records: &std::path::Path) -> String {
    format!(
        r#"
node_id = "params-1"
[[job]]
name = "import"
command = ["sh", "-c", "printf '%s date=%s region=%s payload=%s\n' \"$HAJOBS_FENCING_TOKEN\" \"$HAJOBS_PARAM_DATE\" \"$HAJOBS_PARAM_REGION\" \"$(cat)\" >> \"$RECORDS\""]
params = {{ date = {{ required = true, pattern = "[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}" }}, region = {{ default = "eu" }} }}
payload = "optional"
env = {{ RECORDS = "{}" }}
"#,
        records.display()
    )
}

/// The job's own records: one line per run.
fn records(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn parameters_and_payload_reach_the_command_and_bad_ones_are_refused_first() {
    let records_path = std::env::temp_dir().join(format!(
        "hajobs-params-{}-{}.log",
        std::process::id(),
        hajobs_core::TriggerId::new()
    ));
    let env = Env::new("cli_params", &jobs_toml(&records_path));
    expect(&env.run(&["schema", "apply"]), 0, "applied");

    // Refused before anything is recorded, each naming the problem.
    let refusals: [(&[&str], &str); 6] = [
        (&["trigger", "import"], "missing required parameter `date`"),
        (
            &["trigger", "import", "-p", "date=28.11.2026"],
            "parameter `date`: the value does not match its pattern",
        ),
        (
            &[
                "trigger",
                "import",
                "-p",
                "date=2026-11-28",
                "-p",
                "colour=red",
            ],
            "unknown parameter `colour` (declared: date, region)",
        ),
        (
            &["trigger", "import", "-p", "date"],
            "-p `date`: expected NAME=VALUE",
        ),
        (
            &[
                "trigger",
                "import",
                "-p",
                "date=2026-11-28",
                "--payload",
                "{bad",
            ],
            "--payload: not JSON",
        ),
        (
            &[
                "trigger",
                "--here",
                "import",
                "-p",
                "date=2026-11-28",
                "-p",
                "date=2026-11-29",
            ],
            "parameter `date` given twice",
        ),
    ];
    for (args, said) in refusals {
        expect(&env.run(args), 2, said);
    }
    let statuses = env.statuses().await;
    let import = JobType::new("import").unwrap();
    assert!(statuses.history(&import, 10).await.unwrap().is_empty());
    assert!(records(&records_path).is_empty());

    // Run here: the defaults are added, the payload is on standard input.
    let out = env.run(&[
        "trigger",
        "--here",
        "import",
        "-p",
        "date=2026-11-28",
        "--payload",
        r#"{"files": ["a.csv"]}"#,
    ]);
    expect(&out, 0, "started import attempt");
    let lines = records(&records_path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].ends_with(r#" date=2026-11-28 region=eu payload={"files":["a.csv"]}"#),
        "{lines:?}"
    );

    // Through the cluster: a replica claims it and reads what it carries.
    let mut daemon = env
        .command(&["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let payload_file = records_path.with_extension("json");
    std::fs::write(&payload_file, "[1, 2, 3]\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = loop {
        let out = env.run(&[
            "trigger",
            "import",
            "-p",
            "date=2026-11-29",
            "-p",
            "region=us",
            "--payload-file",
            payload_file.to_str().unwrap(),
            "--wait",
        ]);
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        if out.status.success() {
            break said;
        }
        assert!(
            said.contains("no live replica") && Instant::now() < deadline,
            "{said}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lines = records(&records_path);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].ends_with(" date=2026-11-29 region=us payload=[1,2,3]"),
        "{lines:?}"
    );
    // The attempt's statuses say what it was given.
    let job_id = started
        .split_whitespace()
        .skip_while(|w| *w != "as")
        .nth(1)
        .expect("started … as JOB_ID")
        .to_owned();
    let out = env.run(&["history", "import", &job_id]);
    expect(&out, 0, r#""params":{"date":"2026-11-29","region":"us"}"#);
    expect(&out, 0, r#""payload_bytes":7"#);
    // The job's declaration is listed.
    expect(
        &env.run(&["jobs"]),
        0,
        "params: date (required), region=eu; payload optional",
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_file(&records_path);
    let _ = std::fs::remove_file(&payload_file);
    env.drop().await;
}
