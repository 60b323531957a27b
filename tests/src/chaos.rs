//! The chaos suite's harness: real `hajobs serve` processes on the test
//! cluster, a command job that writes its own records, and a checker that
//! judges only from those records.
//!
//! Each record is one line `NANOS TOKEN NODE JOB_TYPE JOB_ID TRIGGER_ID KIND`,
//! appended (`O_APPEND`, one `write` per line) by the job's shell script
//! and by a subprocess it leaves running, at the wall-clock instant of the
//! write. A run is the span from its first to its last line; two runs of one
//! lock type whose spans intersect are an overlap. The verdict orders lines
//! by their place in the file, the order in which the appends happened: a
//! step of the wall clock (which `date` reads) can neither hide an overlap
//! nor invent one. The timestamps only measure durations.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::contact_list;

/// The job script: `sh job.sh RECORDS TICKS` writes `start`, a `tick` every
/// 100 ms (`TICKS` of them), `end`; a background subprocess writes `sub`
/// every 100 ms and is left running when the script ends.
pub const JOB_SCRIPT: &str = r#"rec=$1; n=$2
line() { echo "$(date +%s%N) $HAJOBS_FENCING_TOKEN $HAJOBS_NODE_ID $HAJOBS_JOB_TYPE $HAJOBS_JOB_ID $HAJOBS_TRIGGER_ID $1" >> "$rec"; }
line start
( while :; do line sub; sleep 0.1; done ) &
i=0
while [ "$i" -lt "$n" ]; do line tick; sleep 0.1; i=$((i+1)); done
line end
"#;

/// Now on the wall clock, in nanoseconds since the epoch (as `date +%s%N`).
pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

/// One line a job wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its place in the records file (0 for the first line).
    pub seq: usize,
    /// When it was written (ns since the epoch).
    pub at: u128,
    /// The attempt's fencing token.
    pub token: u64,
    /// The replica that ran it.
    pub node: String,
    /// The job type.
    pub job_type: String,
    /// The attempt.
    pub job_id: String,
    /// The trigger it served.
    pub trigger_id: String,
    /// `start`, `tick`, `sub` or `end`.
    pub kind: String,
}

/// One attempt as its records show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The job type.
    pub job_type: String,
    /// The attempt.
    pub job_id: String,
    /// The trigger it served.
    pub trigger_id: String,
    /// Its fencing token.
    pub token: u64,
    /// Its replica.
    pub node: String,
    /// Its first line (ns).
    pub first: u128,
    /// Its last line, subprocess included (ns).
    pub last: u128,
    /// The place of its first line in the records file.
    pub first_seq: usize,
    /// The place of its last line in the records file.
    pub last_seq: usize,
    /// Whether it wrote `end`.
    pub ended: bool,
}

/// Reads a records file; a torn or foreign line fails the test loudly.
pub fn read_records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A line still being written (no newline yet) is read next time.
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(seq, l)| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 7, "malformed record line `{l}`");
            Record {
                seq,
                at: f[0].parse().expect("record time"),
                token: f[1].parse().expect("record token"),
                node: f[2].to_owned(),
                job_type: f[3].to_owned(),
                job_id: f[4].to_owned(),
                trigger_id: f[5].to_owned(),
                kind: f[6].to_owned(),
            }
        })
        .collect()
}

/// The runs in `records`, ordered by their first line's place in the file.
pub fn runs(records: &[Record]) -> Vec<Run> {
    let mut by_id: BTreeMap<&str, Run> = BTreeMap::new();
    for r in records {
        let run = by_id.entry(&r.job_id).or_insert_with(|| Run {
            job_type: r.job_type.clone(),
            job_id: r.job_id.clone(),
            trigger_id: r.trigger_id.clone(),
            token: r.token,
            node: r.node.clone(),
            first: r.at,
            last: r.at,
            first_seq: r.seq,
            last_seq: r.seq,
            ended: false,
        });
        run.first = run.first.min(r.at);
        run.last = run.last.max(r.at);
        run.first_seq = run.first_seq.min(r.seq);
        run.last_seq = run.last_seq.max(r.seq);
        run.ended |= r.kind == "end";
    }
    let mut runs: Vec<Run> = by_id.into_values().collect();
    runs.sort_by_key(|r| r.first_seq);
    runs
}

/// What the checker found in a history of runs sharing one lock type.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Pairs of runs whose spans intersect.
    pub overlaps: usize,
    /// The longest intersection (ms).
    pub max_overlap_ms: u128,
    /// Runs whose token is not above every earlier run's.
    pub token_regressions: usize,
    /// Human-readable details of each violation.
    pub details: Vec<String>,
}

/// Checks that no two runs overlap and that tokens strictly increase in the
/// order the runs started, both judged by the order of the appends (the
/// lines' places in the file), whatever the wall clock did.
pub fn check(runs: &[Run]) -> Verdict {
    let mut runs = runs.to_vec();
    runs.sort_by_key(|r| r.first_seq);
    let mut v = Verdict::default();
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            if b.first_seq <= a.last_seq {
                let ms = a.last.min(b.last).saturating_sub(b.first) / 1_000_000;
                v.overlaps += 1;
                v.max_overlap_ms = v.max_overlap_ms.max(ms);
                v.details.push(format!(
                    "overlap {ms} ms: {} (token {}, {}) and {} (token {}, {})",
                    a.job_id, a.token, a.node, b.job_id, b.token, b.node
                ));
            }
        }
    }
    let mut highest = 0;
    for r in &runs {
        if r.token <= highest {
            v.token_regressions += 1;
            v.details.push(format!(
                "token {} of {} not above {highest}",
                r.token, r.job_id
            ));
        }
        highest = highest.max(r.token);
    }
    if v.overlaps + v.token_regressions > 0 {
        // The whole history, to tell a late start from a clock step.
        for r in &runs {
            v.details.push(format!(
                "  run {} token {} on {}: lines {}..={} at {}..={} ns{}",
                r.job_id,
                r.token,
                r.node,
                r.first_seq,
                r.last_seq,
                r.first,
                r.last,
                if r.ended { ", ended" } else { "" }
            ));
        }
    }
    v
}

/// The `p`-quantile (0..=1) of `sorted`, 0 when empty.
pub fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Trials for a scenario: `ci` by default, `full` with `HAJOBS_CHAOS_FULL=1`.
pub fn trials(ci: usize, full: usize) -> usize {
    if std::env::var("HAJOBS_CHAOS_FULL").is_ok_and(|v| v == "1") {
        full
    } else {
        ci
    }
}

/// Polls `f` every 50 ms until it returns `Some`, failing after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The descendants of `pid` (children first, then theirs), from `/proc`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.filter_map(Result::ok) {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            if let Some(ppid) = stat[close + 1..]
                .split_whitespace()
                .nth(1)
                .and_then(|f| f.parse().ok())
            {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, _) in parents.iter().filter(|(_, pp)| *pp == parent) {
            out.push(child);
            frontier.push(child);
        }
    }
    out
}

/// Sends `signal` to each of `pids`.
pub fn signal_pids(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(ToString::to_string))
        .status();
}

/// Real daemons sharing one keyspace, one configuration and one records file.
pub struct Daemons {
    /// The test's keyspace.
    pub keyspace: String,
    /// Config, script, records and logs live here.
    pub dir: PathBuf,
    /// The records every job appends to.
    pub records: PathBuf,
    bin: PathBuf,
    config: PathBuf,
    procs: Vec<Option<Child>>,
    /// Each daemon's spawn count, to keep their log files apart.
    spawns: Vec<usize>,
}

impl Daemons {
    /// Writes the configuration (`jobs_toml`, where `{script}` and
    /// `{records}` are replaced by their paths), applies the schema, and
    /// starts `n` daemons `node-0` … `node-{n-1}`.
    pub fn start(bin: &Path, keyspace: String, n: usize, jobs_toml: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hajobs-chaos-{keyspace}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("job.sh");
        let records = dir.join("records");
        std::fs::write(&script, JOB_SCRIPT).unwrap();
        std::fs::write(&records, "").unwrap();
        let config = dir.join("hajobs.toml");
        let toml = jobs_toml
            .replace("{script}", script.to_str().unwrap())
            .replace("{records}", records.to_str().unwrap());
        std::fs::write(&config, toml).unwrap();
        let mut me = Self {
            keyspace,
            dir,
            records,
            bin: bin.to_owned(),
            config,
            procs: (0..n).map(|_| None).collect(),
            spawns: vec![0; n],
        };
        let out = me.cli(&["schema", "apply"]).output().unwrap();
        assert!(
            out.status.success(),
            "schema apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 0..n {
            me.spawn(i);
        }
        me
    }

    /// A `hajobs` CLI command against the test's keyspace and configuration.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["--keyspace", &self.keyspace, "--config"])
            .arg(&self.config)
            .args(args)
            .env("HAJOBS_CQL_NODES", contact_list())
            .env("HAJOBS_LOG", "warn")
            .stdin(Stdio::null());
        c
    }

    /// Starts daemon `i` (again), its log in `dir/node-i.N.log`.
    pub fn spawn(&mut self, i: usize) {
        self.spawns[i] += 1;
        let log = File::create(self.dir.join(format!("node-{i}.{}.log", self.spawns[i]))).unwrap();
        let child = self
            .cli(&["serve"])
            .env("HAJOBS_NODE_ID", format!("node-{i}"))
            .env("HAJOBS_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs[i] = Some(child);
    }

    /// The pid of daemon `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.procs[i].as_ref().expect("daemon running").id()
    }

    /// The index of the daemon named `node`.
    pub fn index_of(node: &str) -> usize {
        node.trim_start_matches("node-")
            .parse()
            .expect("a node-N id")
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to daemon `i` alone.
    pub fn signal(&self, i: usize, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.pid(i).to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} node-{i}");
    }

    /// Kills daemon `i` with SIGKILL and reaps it.
    pub fn kill9(&mut self, i: usize) {
        self.signal(i, "KILL");
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.wait();
        }
    }

    /// Stops daemon `i` with SIGTERM (a graceful stop) and waits for it to exit.
    pub fn terminate(&mut self, i: usize) {
        self.signal(i, "TERM");
        if let Some(mut c) = self.procs[i].take() {
            let deadline = Instant::now() + Duration::from_secs(60);
            while c.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "node-{i} did not stop on SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Every record so far.
    pub fn records(&self) -> Vec<Record> {
        read_records(&self.records)
    }

    /// The run writing right now (a line in the last 300 ms), if any.
    pub fn active_run(&self) -> Option<Run> {
        let now = now_nanos();
        runs(&self.records())
            .into_iter()
            .rev()
            .find(|r| now.saturating_sub(r.last) < 300_000_000)
    }

    /// Stops every daemon gracefully (SIGTERM), killing what does not stop in 30 s.
    pub fn stop(&mut self) {
        for i in 0..self.procs.len() {
            if self.procs[i].is_some() {
                self.signal(i, "CONT");
                self.signal(i, "TERM");
            }
        }
        for p in self.procs.iter_mut().filter_map(Option::take) {
            let mut p = p;
            let deadline = Instant::now() + Duration::from_secs(30);
            while p.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = p.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = p.wait();
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().filter_map(Option::as_mut) {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run whose lines' places in the file follow their times.
    fn run(id: &str, token: u64, first: u128, last: u128) -> Run {
        Run {
            job_type: "j".into(),
            job_id: id.into(),
            trigger_id: "t".into(),
            token,
            node: "n".into(),
            first,
            last,
            first_seq: first as usize,
            last_seq: last as usize,
            ended: true,
        }
    }

    #[test]
    fn the_checker_sees_overlaps_and_token_regressions() {
        let ok = [run("a", 1, 0, 10), run("b", 2, 11, 20), run("c", 5, 30, 40)];
        assert_eq!(check(&ok), Verdict::default());
        let bad = [
            run("a", 1, 0, 2_000_000_000),
            run("b", 2, 1_000_000_000, 3_000_000_000),
            run("c", 2, 4_000_000_000, 5_000_000_000),
        ];
        let v = check(&bad);
        assert_eq!(v.overlaps, 1);
        assert_eq!(v.max_overlap_ms, 1000);
        assert_eq!(v.token_regressions, 1);
    }

    #[test]
    fn the_checker_judges_by_the_order_of_the_appends_not_the_clock() {
        // The wall clock stepped back 5 s between run a and run b: by their
        // times b came first, by the file a did, and the tokens agree.
        let mut a = run("a", 1, 10_000_000_000, 11_000_000_000);
        (a.first_seq, a.last_seq) = (0, 10);
        let mut b = run("b", 2, 6_000_000_000, 7_000_000_000);
        (b.first_seq, b.last_seq) = (11, 20);
        assert_eq!(check(&[b.clone(), a.clone()]), Verdict::default());
        // Lines of b appended between a's are an overlap, whatever the times say.
        b.first_seq = 5;
        let v = check(&[a, b]);
        assert_eq!(v.overlaps, 1);
    }

    #[test]
    fn records_group_into_runs() {
        let dir = std::env::temp_dir().join(format!("hajobs-records-{}", std::process::id()));
        std::fs::write(
            &dir,
            "5 1 node-0 j a t1 start\n9 1 node-0 j a t1 sub\n7 1 node-0 j a t1 end\n12 2 node-1 j b t2 start\n",
        )
        .unwrap();
        let runs = runs(&read_records(&dir));
        let _ = std::fs::remove_file(&dir);
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].first, runs[0].last, runs[0].ended), (5, 9, true));
        assert_eq!(
            (runs[0].first_seq, runs[0].last_seq, runs[1].first_seq),
            (0, 2, 3)
        );
        assert_eq!((runs[1].job_id.as_str(), runs[1].ended), ("b", false));
    }
}
