//! The HTTP API, `/metrics` and the page of real `hajobs serve` daemons on
//! the real Cassandra: every route with its errors (401, 404, 409, 400,
//! 413), the OpenAPI document read by a parser of the specification, the
//! Prometheus series after a run (kill -9 included), and the page in a real
//! headless Chromium: Trigger clicked, the attempt seen RUNNING then FINISHED.

use std::path::Path;
use std::time::Duration;

use hajobs_core::testing::unique_keyspace;
use hajobs_tests::chaos::{Daemons, eventually};
use hajobs_tests::http::{Browser, Reply, addresses, request, request_with};
use serde_json::Value;

const TOKEN: &str = "test-admin-token-7f3a";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hajobs-under-test"))
}

const JOBS: &str = r#"
shutdown_grace = "5s"
[http]
listen = "127.0.0.1:0"
admin_token = "test-admin-token-7f3a"
[supervisor]
interval = "1s"
retrigger_backoff = "0s"
[[job]]
name = "slow"
command = ["sh", "-c", "echo 'HAJOBS_PROGRESS {\"step\": 1, \"of\": 2}'; sleep 30"]
lease_ttl = "4s"
retrigger_count = 1
[[job]]
name = "quick"
command = ["sh", "-c", "echo quick"]
[[job]]
name = "tick"
command = ["true"]
cron = "*/2 * * * * *"
[[job]]
name = "import"
command = ["sh", "-c", "printf 'date=%s region=%s payload=%s' \"$HAJOBS_PARAM_DATE\" \"$HAJOBS_PARAM_REGION\" \"$(cat)\" > /tmp/hajobs-http-import-$HAJOBS_TRIGGER_ID"]
params = { date = { required = true, pattern = "[0-9]{4}-[0-9]{2}-[0-9]{2}" }, region = { default = "eu" } }
payload = "optional"
"#;

fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, None, b"")
}

/// The newest state of `job` as `GET /jobs/{job}/latest` says it.
fn latest(addr: &str, job: &str) -> Option<Value> {
    let r = get(addr, &format!("/jobs/{job}/latest"));
    (r.status == 200).then(|| r.json())
}

fn assert_error(r: &Reply, status: u16, kind: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    assert_eq!(v["kind"], kind, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "an error names the problem: {v}"
    );
    v
}

/// Parses Prometheus' text format: every sample line is `name{labels} value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line `{l}`"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("bad value in `{l}`: {e}"));
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in `{l}`"
            );
            (series.to_owned(), value)
        })
        .collect()
}

fn metric_total(addrs: &[(String, String)], prefix: &str) -> f64 {
    addrs
        .iter()
        .flat_map(|(_, a)| samples(&get(a, "/metrics").body))
        .filter(|(s, _)| s.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn http_api_every_route_over_three_daemons() {
    let keyspace = unique_keyspace("http");
    let mut d = Daemons::start(bin(), keyspace, 3, JOBS);
    let addrs = addresses(&d, 3);
    let a = addrs[0].1.as_str();
    let b = addrs[1].1.as_str();

    // Liveness, readiness, the jobs.
    let h = get(a, "/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "live");
    let r = get(a, "/ready");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["schema_current"], true);
    let jobs = get(a, "/jobs").json();
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_type"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["slow", "quick", "tick", "import"]);
    assert_eq!(jobs[3]["params"]["date"]["required"], true, "{jobs}");
    assert_eq!(jobs[3]["params"]["region"]["default"], "eu", "{jobs}");
    assert_eq!(jobs[3]["payload"], "optional", "{jobs}");
    let tick = &jobs[2];
    assert_eq!(tick["on_locked"], "skip", "{tick}");
    assert_eq!(tick["concurrency"], "forbid", "{tick}");
    assert_eq!(tick["capacity"], 1, "{tick}");
    assert!(tick["cron_in_words"].as_str().is_some(), "{tick}");
    assert!(tick["next_firing"].as_str().is_some(), "{tick}");

    // Mutating routes need the token.
    let r = request(a, "POST", "/jobs/slow", None, b"");
    assert_error(&r, 401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_error(
        &request(a, "POST", "/jobs/slow", Some("wrong"), b""),
        401,
        "unauthorized",
    );
    assert_error(
        &request(a, "DELETE", "/jobs/slow", None, b""),
        401,
        "unauthorized",
    );
    // Unknown job, oversized body, unknown route, wrong method.
    assert_error(
        &request(a, "POST", "/jobs/nope", Some(TOKEN), b""),
        404,
        "unknown_job",
    );
    assert_error(
        &request(a, "POST", "/jobs/slow", Some(TOKEN), &vec![b'x'; 100_000]),
        413,
        "too_large",
    );
    assert_error(&get(a, "/nope"), 404, "not_found");
    assert_error(
        &request(a, "PUT", "/jobs", Some(TOKEN), b""),
        405,
        "method_not_allowed",
    );

    // Trigger through the cluster: 202, then 409 naming the holder.
    let t = request(a, "POST", "/jobs/slow", Some(TOKEN), b"");
    assert_eq!(t.status, 202, "{}", t.body);
    let t = t.json();
    let job_id = t["job_id"].as_str().unwrap().to_owned();
    assert!(t["fencing_token"].as_i64().unwrap() > 0, "{t}");
    assert!(
        addrs.iter().any(|(n, _)| n == t["node"].as_str().unwrap()),
        "{t}"
    );
    let again = request(b, "POST", "/jobs/slow", Some(TOKEN), b"");
    let v = assert_error(&again, 409, "locked");
    assert_eq!(v["holder"]["job_id"], job_id.as_str(), "{v}");
    assert_eq!(v["holder"]["owner"], t["node"], "{v}");

    // The running attempt, its progress, its history.
    let running = eventually(Duration::from_secs(15), "slow's progress", || {
        latest(b, "slow").filter(|l| l["content"]["step"] == 1)
    });
    assert_eq!(running["state"], "RUNNING");
    assert_eq!(running["job_id"], job_id.as_str());
    let history = get(b, &format!("/jobs/slow/{job_id}")).json();
    assert!(
        history.as_array().unwrap().len() >= 2,
        "PREPARING/RUNNING steps: {history}"
    );
    let jobs = get(b, "/jobs").json();
    assert_eq!(jobs[0]["holder"]["job_id"], job_id.as_str(), "{jobs}");
    assert_eq!(jobs[0]["latest"]["content"]["step"], 1, "{jobs}");

    // Bad input on reading routes.
    assert_error(&get(a, "/jobs/slow?limit=abc"), 400, "bad_input");
    assert_error(&get(a, "/jobs/slow?limit=0"), 400, "bad_input");
    assert_error(&get(a, "/jobs/slow/not-a-uuid"), 400, "bad_input");
    assert_error(
        &get(a, "/jobs/slow/0b3e2a40-e7e0-11f1-8000-000000000000"),
        404,
        "not_found",
    );
    assert_error(&get(a, "/jobs/nope/latest"), 404, "unknown_job");
    let list = get(a, "/jobs/slow?limit=5").json();
    assert_eq!(list[0]["job_id"], job_id.as_str(), "{list}");

    // A trigger's parameters and payload: refused with 400 naming the
    // parameter before anything is recorded, else seen by the command (its
    // own record, named by its trigger id).
    let bad = request(
        a,
        "POST",
        "/jobs/import",
        Some(TOKEN),
        br#"{"params": {"date": "soon"}}"#,
    );
    let v = assert_error(&bad, 400, "bad_input");
    assert!(
        v["error"].as_str().unwrap().contains("parameter `date`"),
        "{v}"
    );
    let bad = request(a, "POST", "/jobs/import", Some(TOKEN), br#"{"params": {}}"#);
    let v = assert_error(&bad, 400, "bad_input");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("missing required parameter `date`"),
        "{v}"
    );
    assert_error(
        &request(
            a,
            "POST",
            "/jobs/import",
            Some(TOKEN),
            br#"{"parameters": {}}"#,
        ),
        400,
        "bad_input",
    );
    assert!(
        get(a, "/jobs/import?limit=5")
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let t = request(
        b,
        "POST",
        "/jobs/import",
        Some(TOKEN),
        br#"{"params": {"date": "2026-11-28"}, "payload": {"n": 1}}"#,
    );
    assert_eq!(t.status, 202, "{}", t.body);
    let record = format!(
        "/tmp/hajobs-http-import-{}",
        t.json()["trigger_id"].as_str().unwrap()
    );
    let seen = eventually(Duration::from_secs(15), "import's record", || {
        std::fs::read_to_string(&record)
            .ok()
            .filter(|r| r.contains("payload="))
    });
    assert_eq!(seen, r#"date=2026-11-28 region=eu payload={"n":1}"#);
    let _ = std::fs::remove_file(&record);

    // One-time triggers at a time: scheduled on one daemon, listed on
    // another, one removed (once), the other run at its time by a replica.
    assert_error(
        &request(
            a,
            "POST",
            "/scheduled",
            Some(TOKEN),
            br#"{"job_type": "import", "in": "1h"}"#,
        ),
        400,
        "bad_input",
    );
    assert_error(
        &request(
            a,
            "POST",
            "/scheduled",
            Some(TOKEN),
            br#"{"job_type": "quick", "at": "2020-01-01T00:00:00Z"}"#,
        ),
        400,
        "bad_input",
    );
    assert_error(
        &request(a, "POST", "/scheduled", None, br#"{}"#),
        401,
        "unauthorized",
    );
    let later = request(
        a,
        "POST",
        "/scheduled",
        Some(TOKEN),
        br#"{"job_type": "quick", "in": "1h"}"#,
    );
    assert_eq!(later.status, 201, "{}", later.body);
    let later = later.json()["trigger_id"].as_str().unwrap().to_owned();
    let soon = request(
        a,
        "POST",
        "/scheduled",
        Some(TOKEN),
        br#"{"job_type": "import", "in": "2s", "params": {"date": "2026-12-01"}}"#,
    );
    assert_eq!(soon.status, 201, "{}", soon.body);
    let soon = soon.json();
    assert_eq!(soon["state"], "pending", "{soon}");
    let listed = get(b, "/scheduled").json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["trigger_id"] == later.as_str()),
        "{listed}"
    );
    let removed = request(
        b,
        "DELETE",
        &format!("/scheduled/{later}"),
        Some(TOKEN),
        b"",
    );
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.json()["state"], "removed");
    assert_error(
        &request(
            a,
            "DELETE",
            &format!("/scheduled/{later}"),
            Some(TOKEN),
            b"",
        ),
        409,
        "conflict",
    );
    let record = format!(
        "/tmp/hajobs-http-import-{}",
        soon["trigger_id"].as_str().unwrap()
    );
    let seen = eventually(
        Duration::from_secs(20),
        "the scheduled import's record",
        || {
            std::fs::read_to_string(&record)
                .ok()
                .filter(|r| r.contains("payload="))
        },
    );
    assert_eq!(seen, "date=2026-12-01 region=eu payload=");
    let _ = std::fs::remove_file(&record);

    // Cancel through any daemon: 202, and the attempt ends CANCELED.
    let c = request(a, "DELETE", "/jobs/slow", Some(TOKEN), b"");
    assert_eq!(c.status, 202, "{}", c.body);
    assert_eq!(c.json()["job_id"], job_id.as_str());
    eventually(Duration::from_secs(20), "slow CANCELED", || {
        latest(a, "slow").filter(|l| l["state"] == "CANCELED")
    });

    // A quick job to its end; its figures.
    let q = request(b, "POST", "/jobs/quick", Some(TOKEN), b"");
    assert_eq!(q.status, 202, "{}", q.body);
    eventually(Duration::from_secs(20), "quick FINISHED", || {
        latest(a, "quick").filter(|l| l["state"] == "FINISHED")
    });
    let s = get(a, "/jobs/quick/stats").json();
    assert_eq!(s["finished"], 1, "{s}");
    assert!(get(a, "/stats").json().as_array().unwrap().len() >= 2);
    assert_eq!(get(a, "/nodes").json().as_array().unwrap().len(), 3);
    assert!(get(a, "/locks").json().is_array());
    assert_eq!(get(a, "/queue").json(), serde_json::json!([]));
    assert_eq!(get(a, "/queue/slow").json(), serde_json::json!([]));
    assert_eq!(get(a, "/work/orders").json(), serde_json::json!([]));
    assert_error(&get(a, "/work/orders/4711"), 404, "not_found");
    assert_error(&get(a, "/work/orders?limit=0"), 400, "bad_input");

    // The OpenAPI document, by a parser of the specification.
    let doc = get(a, "/openapi.json");
    assert_eq!(doc.status, 200);
    let spec = oas3::from_json(&doc.body).expect("a valid OpenAPI 3.1 document");
    let paths = spec.paths.expect("paths");
    for p in [
        "/jobs",
        "/jobs/{job_type}",
        "/jobs/{job_type}/latest",
        "/jobs/{job_type}/{job_id}",
        "/jobs/{job_type}/stats",
        "/nodes",
        "/queue",
        "/work/{work_set}/{key}",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} documented");
    }
    let trigger = paths["/jobs/{job_type}"]
        .post
        .as_ref()
        .expect("POST documented");
    let codes: Vec<&String> = trigger.responses.as_ref().unwrap().keys().collect();
    for code in ["202", "401", "404", "409"] {
        assert!(codes.iter().any(|c| *c == code), "{code} documented");
    }

    // A replica killed while it runs slow: a survivor records it DEAD and
    // re-runs it; every named series is there.
    let t = request(a, "POST", "/jobs/slow", Some(TOKEN), b"").json();
    let holder = t["node"].as_str().unwrap().to_owned();
    let victim = Daemons::index_of(&holder);
    eventually(Duration::from_secs(15), "a renewal of slow's lease", || {
        let addr = &addrs[victim].1;
        samples(&get(addr, "/metrics").body)
            .iter()
            .any(|(s, v)| s.starts_with("hajobs_lease_renew_seconds_count") && *v > 0.0)
            .then_some(())
    });
    let mut all: String = addrs.iter().map(|(_, a)| get(a, "/metrics").body).collect();
    d.kill9(victim);
    let survivors: Vec<(String, String)> = addrs
        .iter()
        .filter(|(n, _)| *n != holder)
        .cloned()
        .collect();
    eventually(Duration::from_secs(30), "a survivor re-ran slow", || {
        (metric_total(&survivors, "hajobs_supervisor_retriggers_total") >= 1.0).then_some(())
    });
    assert!(metric_total(&survivors, "hajobs_supervisor_dead_total") >= 1.0);
    for (_, addr) in &survivors {
        let m = get(addr, "/metrics");
        assert_eq!(m.status, 200);
        assert!(
            m.header("content-type")
                .is_some_and(|c| c.starts_with("text/plain")),
            "{:?}",
            m.headers
        );
        samples(&m.body);
        all.push_str(&m.body);
    }
    for series in [
        "hajobs_lease_acquire_seconds_bucket",
        "hajobs_lease_release_seconds_count",
        "hajobs_attempts_started_total",
        "hajobs_attempts_ended_total",
        "hajobs_job_duration_seconds_bucket",
        "hajobs_cron_firing_lag_seconds_bucket",
        "hajobs_trigger_requests_claimed_total",
        "hajobs_trigger_requests_total",
        "hajobs_supervisor_dead_total",
        "hajobs_supervisor_retriggers_total",
        "# TYPE hajobs_lease_acquire_seconds histogram",
    ] {
        assert!(all.contains(series), "{series} exported");
    }
    d.stop();
}

const ROLES_JOBS: &str = r#"
shutdown_grace = "5s"
[http]
listen = "127.0.0.1:0"
admin_token = "roles-admin-token-1c9e"
read_token = "roles-read-token-5b2d"
public_names = ["jobs.example.test"]
[[job]]
name = "quick"
command = ["sh", "-c", "echo quick"]
"#;

#[test]
fn http_tokens_have_roles_and_browsers_cannot_be_abused() {
    const ADMIN: &str = "roles-admin-token-1c9e";
    const READ: &str = "roles-read-token-5b2d";
    let keyspace = unique_keyspace("roles");
    let mut d = Daemons::start(bin(), keyspace, 1, ROLES_JOBS);
    let a = addresses(&d, 1)[0].1.clone();
    let a = a.as_str();
    // Reads need the read (or admin) token; the probes and the page do not.
    assert_error(&get(a, "/jobs"), 401, "unauthorized");
    assert_error(
        &request(a, "GET", "/jobs", Some("wrong"), b""),
        401,
        "unauthorized",
    );
    assert_eq!(request(a, "GET", "/jobs", Some(READ), b"").status, 200);
    assert_eq!(request(a, "GET", "/metrics", Some(ADMIN), b"").status, 200);
    assert_error(&get(a, "/metrics"), 401, "unauthorized");
    for open in ["/health", "/ready", "/", "/page.js", "/page.css"] {
        assert_eq!(get(a, open).status, 200, "{open}");
    }
    // The read token cannot act; the admin token can, and is recorded by name.
    assert_error(
        &request(a, "POST", "/jobs/quick", Some(READ), b""),
        403,
        "forbidden",
    );
    let t = request(a, "POST", "/jobs/quick", Some(ADMIN), b"");
    assert_eq!(t.status, 202, "{}", t.body);
    let trigger: uuid::Uuid = t.json()["trigger_id"].as_str().unwrap().parse().unwrap();
    let requested_by = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let config = hajobs_core::CassandraConfig::from_contact_list(&hajobs_tests::contact_list())
            .with_keyspace(d.keyspace.clone());
        let requests = hajobs_core::RequestStore::new(config.connect().await.unwrap(), &config)
            .await
            .unwrap();
        let request = requests
            .get(hajobs_core::TriggerId::from_uuid(trigger))
            .await
            .unwrap();
        request
            .expect("the trigger's request on record")
            .requested_by
    });
    assert!(
        requested_by
            .as_deref()
            .is_some_and(|by| by.starts_with("http:admin-token@")),
        "{requested_by:?}"
    );
    // A wake needs no token (it carries and grants nothing) but is still
    // refused to another site's page; it is a POST only.
    assert_eq!(request(a, "POST", "/wake", None, b"{}").status, 204);
    let cross = request_with(
        a,
        "POST",
        "/wake",
        &[
            ("Host", a),
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_error(&cross, 403, "cross_site");
    assert_error(
        &request_with(a, "POST", "/wake", &[("Host", a)], b""),
        415,
        "unsupported_media_type",
    );
    assert_eq!(request(a, "GET", "/wake", Some(READ), b"").status, 405);
    // DNS rebinding: a Host that is not ours is refused, even with a token.
    let evil = request_with(
        a,
        "GET",
        "/jobs",
        &[
            ("Host", "evil.example:7070"),
            ("Authorization", &format!("Bearer {READ}")),
        ],
        b"",
    );
    assert_error(&evil, 403, "bad_host");
    let ours = request_with(
        a,
        "GET",
        "/health",
        &[("Host", "jobs.example.test:7070")],
        b"",
    );
    assert_eq!(ours.status, 200);
    // Another site's page cannot act, even where the token would match.
    let bearer = format!("Bearer {ADMIN}");
    let cross = request_with(
        a,
        "POST",
        "/jobs/quick",
        &[
            ("Host", a),
            ("Authorization", &bearer),
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/json"),
        ],
        b"",
    );
    assert_error(&cross, 403, "cross_site");
    let cross = request_with(
        a,
        "POST",
        "/jobs/quick",
        &[
            ("Host", a),
            ("Authorization", &bearer),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        b"",
    );
    assert_error(&cross, 403, "cross_site");
    // Every answer carries the headers that keep a browser safe.
    let page = get(a, "/");
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !page.body.contains("<script>"),
        "no inline script in the page"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        get(a, "/page.js").header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    d.stop();
}

const OPEN_JOBS: &str = r#"
[http]
listen = "127.0.0.1:0"
[[job]]
name = "quick"
command = ["true"]
"#;

#[test]
fn an_open_api_still_refuses_a_plain_form_of_another_page() {
    let keyspace = unique_keyspace("openapi");
    let mut d = Daemons::start(bin(), keyspace, 1, OPEN_JOBS);
    let a = addresses(&d, 1)[0].1.clone();
    let a = a.as_str();
    // What a form of any page can send without asking: refused.
    for content_type in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let r = request_with(
            a,
            "POST",
            "/jobs/quick",
            &[("Host", a), ("Content-Type", content_type)],
            b"",
        );
        assert_error(&r, 415, "unsupported_media_type");
    }
    let r = request_with(a, "POST", "/jobs/quick", &[("Host", a)], b"");
    assert_error(&r, 415, "unsupported_media_type");
    // A JSON request of its own origin is what the page sends.
    let r = request_with(
        a,
        "POST",
        "/jobs/quick",
        &[
            ("Host", a),
            ("Content-Type", "application/json"),
            ("Origin", &format!("http://{a}")),
        ],
        b"{}",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    d.stop();
}

const PAGE_JOBS: &str = r#"
shutdown_grace = "5s"
[http]
listen = "127.0.0.1:0"
admin_token = "test-admin-token-7f3a"
[[job]]
name = "nightly-import"
command = ["sh", "-c", "for i in 1 2 3; do echo \"HAJOBS_PROGRESS {\\\"rows\\\": $((i * 1000))}\"; sleep 1; done"]
[[job]]
name = "report"
command = ["true"]
cron = "0 0 6 * * Mon-Fri"
time_zone = "Europe/Berlin"
[[job]]
name = "rebuild"
command = ["sh", "-c", "echo \"HAJOBS_PROGRESS {\\\"rebuilding\\\": \\\"$HAJOBS_PARAM_REGION\\\"}\"; sleep 3"]
params = { region = { default = "eu", pattern = "[a-z]{2}" } }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn page_in_chromium_triggers_and_shows_running_then_finished() {
    let keyspace = unique_keyspace("page");
    let mut d = tokio::task::spawn_blocking(move || {
        let d = Daemons::start(bin(), keyspace, 1, PAGE_JOBS);
        let addrs = addresses(&d, 1);
        (d, addrs)
    })
    .await
    .unwrap();
    let addr = d.1[0].1.clone();
    let profile = d.0.dir.join("chromium-profile");
    let mut browser = Browser::start(&profile).await;
    browser
        .call(
            "Page.navigate",
            serde_json::json!({"url": format!("http://{addr}/")}),
        )
        .await;
    wait_for(
        &mut browser,
        "document.body.dataset.loaded === 'true'",
        "the page loaded",
    )
    .await;
    let row = "tr[data-job=\"nightly-import\"]";
    assert_eq!(
        browser
            .eval("document.getElementById('queue').textContent")
            .await,
        "nothing waits for a lock",
        "the queues are on the page"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('scheduled').textContent")
            .await,
        "nothing scheduled",
        "the scheduled triggers are on the page"
    );
    assert_eq!(
        browser
            .eval(&format!(
                "document.querySelector('{row} .state-cell').textContent"
            ))
            .await,
        "never ran"
    );
    // The admin token as an operator types it, then a real click on Trigger.
    browser
        .eval(&format!(
            "(() => {{ const t = document.getElementById('token'); t.value = '{TOKEN}'; t.dispatchEvent(new Event('change')); return true; }})()"
        ))
        .await;
    browser
        .click("button.trigger[data-job=\"nightly-import\"]")
        .await;
    wait_for(
        &mut browser,
        &format!("document.querySelector('{row} .state-cell').textContent === 'RUNNING'"),
        "nightly-import RUNNING on the page",
    )
    .await;
    let message = browser
        .eval("document.getElementById('message').textContent")
        .await;
    assert!(
        message
            .as_str()
            .unwrap()
            .starts_with("started nightly-import on node-0"),
        "{message}"
    );
    wait_for(
        &mut browser,
        &format!("document.querySelector('{row} .progress').textContent.includes('rows')"),
        "live progress on the page",
    )
    .await;
    let shot = browser.screenshot().await;
    wait_for(
        &mut browser,
        &format!("document.querySelector('{row} .state-cell').textContent === 'FINISHED'"),
        "nightly-import FINISHED on the page",
    )
    .await;
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    // A job with parameters asks for them, offering its defaults; a value
    // that does not fit is refused by the daemon, naming the parameter;
    // one that fits reaches the command (its own progress line says so).
    let rebuild = "tr[data-job=\"rebuild\"]";
    assert_eq!(
        browser
            .eval(&format!(
                "document.querySelector('{rebuild} .params').textContent"
            ))
            .await,
        " · takes region"
    );
    browser
        .eval("(() => { window.prompt = (m, offered) => { window.offered = offered; return 'region=usa'; }; return true; })()")
        .await;
    browser.click("button.trigger[data-job=\"rebuild\"]").await;
    wait_for(
        &mut browser,
        "document.getElementById('message').textContent.includes('parameter `region`')",
        "the refusal naming the parameter",
    )
    .await;
    assert_eq!(browser.eval("window.offered").await, "region=eu");
    browser
        .eval("(() => { window.prompt = () => 'region=us'; return true; })()")
        .await;
    browser.click("button.trigger[data-job=\"rebuild\"]").await;
    wait_for(
        &mut browser,
        &format!("document.querySelector('{rebuild} .progress').textContent.includes('\"rebuilding\":\"us\"')"),
        "the command's own progress with the parameter",
    )
    .await;
    // A trigger scheduled through the API shows on the page, pending, then
    // started at its time.
    let scheduled = request(
        &addr,
        "POST",
        "/scheduled",
        Some(TOKEN),
        br#"{"job_type": "report", "in": "3s"}"#,
    );
    assert_eq!(scheduled.status, 201, "{}", scheduled.body);
    let trigger = scheduled.json()["trigger_id"].as_str().unwrap().to_owned();
    wait_for(
        &mut browser,
        &format!("document.querySelector('tr[data-trigger=\"{trigger}\"] .sched-state').textContent === 'started'"),
        "the scheduled trigger started, on the page",
    )
    .await;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hajobs-page.png");
    std::fs::write(&out, &shot).unwrap();
    println!("page screenshot: {}", out.display());
    // Nothing on the page comes from elsewhere: no CDN, no external fonts.
    let external = browser
        .eval("performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin)).length")
        .await;
    assert_eq!(external, 0);
    drop(browser);
    tokio::task::spawn_blocking(move || d.0.stop())
        .await
        .unwrap();
}

async fn wait_for(browser: &mut Browser, condition: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // While the page loads, a condition may not be computable yet.
        let guarded = format!(
            "(() => {{ try {{ return ({condition}); }} catch (e) {{ return false; }} }})()"
        );
        if browser.eval(&guarded).await == true {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} ({condition})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A path segment or query value: plausible, odd, encoded wrongly, huge.
    fn value(&mut self) -> String {
        const PIECES: [&str; 16] = [
            "quick",
            "slow",
            "a",
            "0",
            "-1",
            "%00",
            "%ff",
            "%zz",
            "%2F",
            "%20",
            "%C3%A9",
            "%E2%9C%93",
            "~",
            "_",
            "..x",
            "18446744073709551616",
        ];
        match self.below(6) {
            0 => PIECES[self.below(PIECES.len())].to_owned(),
            1 => uuid::Uuid::new_v4().to_string(),
            2 => "x".repeat(1 + self.below(3000)),
            3 => format!(
                "{:08x}-0000-1000-8000-00000000000{}",
                self.next() as u32,
                self.below(10)
            ),
            _ => (0..1 + self.below(8))
                .map(|_| PIECES[self.below(PIECES.len())])
                .collect(),
        }
    }
}

#[test]
fn http_every_documented_route_keeps_its_contract_under_generated_input() {
    const ADMIN: &str = "roles-admin-token-1c9e";
    const READ: &str = "roles-read-token-5b2d";
    let keyspace = unique_keyspace("contract");
    let mut d = Daemons::start(bin(), keyspace, 1, ROLES_JOBS);
    let a = addresses(&d, 1)[0].1.clone();
    let a = a.as_str();
    let doc = request(a, "GET", "/openapi.json", None, b"").json();
    let seed = std::env::var("HAJOBS_CONTRACT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    let cases = std::env::var("HAJOBS_CONTRACT_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut g = Gen(seed);
    let mut sent = 0;
    let mut by_status: std::collections::BTreeMap<u16, usize> = Default::default();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            let documented = op["responses"].as_object().unwrap();
            for _ in 0..cases {
                let mut path = String::new();
                for part in template.split('/').filter(|p| !p.is_empty()) {
                    path.push('/');
                    if part.starts_with('{') {
                        path.push_str(&g.value());
                    } else {
                        path.push_str(part);
                    }
                }
                match g.below(3) {
                    0 => path.push_str(&format!("?limit={}", g.value())),
                    1 => path.push_str(&format!("?{}={}", g.value(), g.value())),
                    _ => {}
                }
                let token = [None, Some(ADMIN), Some(READ), Some("not-a-token")][g.below(4)];
                let body: Vec<u8> = match g.below(4) {
                    0 => Vec::new(),
                    1 => b"{}".to_vec(),
                    2 => (0..g.below(20_000)).map(|_| g.next() as u8).collect(),
                    _ => format!("{{\"{}\": [{}]}}", g.value(), g.value()).into_bytes(),
                };
                let auth = token.map(|t| format!("Bearer {t}"));
                let mut headers = vec![("Host", a)];
                if let Some(v) = &auth {
                    headers.push(("Authorization", v.as_str()));
                }
                let content_type = ["application/json", "text/plain", ""][g.below(3)];
                if !content_type.is_empty() {
                    headers.push(("Content-Type", content_type));
                }
                let r = request_with(a, &method, &path, &headers, &body);
                sent += 1;
                *by_status.entry(r.status).or_default() += 1;
                let what = format!("{method} {path:.200} (seed {seed})");
                assert!(
                    r.status < 500,
                    "{what}: a 5xx for generated input: {} {}",
                    r.status,
                    r.body
                );
                assert!(
                    documented.contains_key(&r.status.to_string()),
                    "{what}: {} is not documented for {method} {template}: {}",
                    r.status,
                    r.body
                );
                if r.status >= 400 {
                    let v = r.json();
                    assert!(
                        v["error"].as_str().is_some() && v["kind"].as_str().is_some(),
                        "{what}: an error is {{error, kind}}: {v}"
                    );
                } else if r.status == 204 {
                    assert!(r.body.is_empty(), "{what}: 204 with a body: {}", r.body);
                } else if template != "/metrics" {
                    let _ = r.json();
                }
            }
        }
    }
    println!("contract: {sent} generated requests, statuses {by_status:?}");
    d.stop();
}
