//! The guard: a small process per command attempt that makes the command's
//! whole process tree live and die with the lease, whatever happens to the
//! daemon.
//!
//! The daemon starts `hajobs __guard GRACE_MS -- PROGRAM ARGS…` (its own
//! executable, through `/proc/self/exe`) with one end of a Unix socket pair
//! as the guard's standard input, and the command's output pipes as its
//! standard output and error. The guard
//!
//! - makes itself a **child sub-reaper** (`PR_SET_CHILD_SUBREAPER`): whatever
//!   the command leaves behind, even a process that double-forks into a new
//!   session, is re-parented to the guard instead of `init`, so the guard can
//!   always find and end it;
//! - runs in a process group of its own (the daemon starts it so), and
//!   starts the command in another **process group of its own**: `Ctrl-C`
//!   on the daemon's terminal reaches neither (the daemon decides), and one
//!   `killpg` reaches the command's children;
//! - starts the command only once the daemon has told it the lease's
//!   **deadline**, and only while that deadline is still ahead: a daemon or
//!   guard delayed past it starts nothing;
//! - learns the deadline again after every confirmed renewal, on
//!   `CLOCK_MONOTONIC`, and kills the tree itself when it passes
//!   unextended — so a daemon that is paused (`SIGSTOP`, a stuck runtime)
//!   cannot leave a command running past its lease;
//! - kills the tree at once when the socket closes: the daemon died
//!   (`kill -9`, OOM kill, abort) — the kernel closes its end, the guard
//!   notices in microseconds;
//! - on `term` (a cancel by request, timeout or shutdown) sends `SIGTERM` to
//!   the tree, then `SIGKILL` after the grace; on `kill` (lease lost)
//!   `SIGKILL` at once;
//! - when the command exits by itself, ends what it left running (`SIGTERM`,
//!   `SIGKILL` after the grace), as systemd ends a service's control group;
//! - exits only when every process of the tree is gone and reaped, so the
//!   daemon releases the lease after the tree, never before.
//!
//! Why a guard process rather than `PR_SET_PDEATHSIG` or cgroups: the death
//! signal reaches one process (not its children), fires when the spawning
//! *thread* ends (tokio's threads come and go), and cannot see a paused
//! daemon; cgroups need privileges or systemd delegation that a replica may
//! not have. A guard needs nothing but fork, and covers death, pause and
//! escape alike. What no process can cover is a freeze of everything (a VM
//! pause): there the fencing token is the defence (`docs/guarantees.md`).
//!
//! The protocol, one line per message. Daemon → guard: `env NAME=VALUE`
//! (before the first deadline: what the command's environment gains, so
//! that a guard can be started before its attempt's ids are known),
//! `payload JSON` (before the first deadline: one line of compact JSON, the
//! command's standard input; without it, the command's input is empty),
//! `deadline NANOS` (`CLOCK_MONOTONIC`; the first before anything starts),
//! `term`, `kill`. Guard → daemon: `started PID`,
//! `exited CODE` or `signalled SIGNAL` (the command's own end),
//! `deadline-passed`, `error MESSAGE`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The argument that turns `hajobs` into a guard.
pub(crate) const GUARD_ARG: &str = "__guard";

/// How often the guard looks for what is left of a tree it is ending.
const SWEEP: Duration = Duration::from_millis(10);

/// A message from the daemon.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    /// A variable of the command's environment (only before it starts).
    Env(String, String),
    /// The command's standard input (only before it starts).
    Payload(String),
    /// The lease is confirmed until this `CLOCK_MONOTONIC` instant (ns).
    Deadline(u128),
    /// End the tree gracefully.
    Term,
    /// End the tree now.
    Kill,
}

impl Control {
    fn parse(line: &str) -> Option<Self> {
        // Only the line's end is cut: a variable's value keeps its spaces.
        let line = line.trim_end_matches(['\n', '\r']);
        match line.split_once(' ') {
            Some(("deadline", n)) => n.trim().parse().ok().map(Self::Deadline),
            Some(("payload", json)) => Some(Self::Payload(json.to_owned())),
            Some(("env", pair)) => {
                let (name, value) = pair.split_once('=')?;
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                valid.then(|| Self::Env(name.to_owned(), value.to_owned()))
            }
            None if line.trim() == "term" => Some(Self::Term),
            None if line.trim() == "kill" => Some(Self::Kill),
            _ => None,
        }
    }
}

/// What the guard waits for.
enum Event {
    Control(Control),
    /// The daemon's end of the socket closed: it is gone.
    DaemonGone,
    /// The command itself ended (not reaped yet: its pid, and so its
    /// process group id, cannot be reused until we reap it).
    Exited,
}

/// The `CLOCK_MONOTONIC` reading now, in nanoseconds: shared by every
/// process of the machine, so the daemon and the guard agree on deadlines.
pub(crate) fn monotonic_nanos() -> u128 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    u128::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u128::try_from(t.tv_nsec()).unwrap_or(0)
}

/// The guard's `main`: `args` are what follows [`GUARD_ARG`].
pub(crate) fn main(args: Vec<OsString>) -> ExitCode {
    let Some((grace, command)) = parse_args(&args) else {
        eprintln!("hajobs {GUARD_ARG}: usage: hajobs {GUARD_ARG} GRACE_MS -- PROGRAM [ARGS…]");
        return ExitCode::from(2);
    };
    // The socket to the daemon is our standard input.
    let socket = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("hajobs {GUARD_ARG}: no control socket on stdin: {e}");
            return ExitCode::from(2);
        }
    };
    match Guard::start(socket, grace, command) {
        Ok(guard) => guard.run(),
        Err(()) => ExitCode::from(1),
    }
}

fn parse_args(args: &[OsString]) -> Option<(Duration, Vec<OsString>)> {
    let grace: u64 = args.first()?.to_str()?.parse().ok()?;
    if args.get(1)? != "--" || args.len() < 3 {
        return None;
    }
    Some((Duration::from_millis(grace), args[2..].to_vec()))
}

struct Guard {
    report: UnixStream,
    events: mpsc::Receiver<Event>,
    grace: Duration,
    /// The command's pid, which is also its process group's id.
    pgid: Pid,
    /// The lease's deadline (`CLOCK_MONOTONIC` ns): the first one came
    /// before the command started, later ones with each renewal.
    deadline: Option<u128>,
    /// Whether the command itself has been reaped (by the waiter thread).
    reaped: bool,
}

impl Guard {
    fn start(socket: UnixStream, grace: Duration, command: Vec<OsString>) -> Result<Self, ()> {
        let mut report = socket.try_clone().map_err(|_| ())?;
        // Orphans of the tree come to us, not to init.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            let _ = writeln!(report, "error cannot become a sub-reaper: {e}");
            return Err(());
        }
        let (program, args) = command.split_first().ok_or(())?;
        // Never a command without a lease: it starts only once the daemon
        // has told a deadline, and only while that deadline is ahead — a
        // daemon or guard delayed past it (a stall, a slow start) starts
        // nothing.
        let mut socket = BufReader::new(socket);
        let (deadline, Told { env, payload }) = match first_deadline(&mut socket) {
            Ok(d) => d,
            Err(why) => {
                let _ = writeln!(
                    report,
                    "error `{}` not started: {why}",
                    program.to_string_lossy()
                );
                return Err(());
            }
        };
        let child = match std::process::Command::new(program)
            .args(args)
            .envs(env)
            .stdin(if payload.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .process_group(0)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                let _ = writeln!(
                    report,
                    "error cannot start `{}`: {e}",
                    program.to_string_lossy()
                );
                return Err(());
            }
        };
        let mut child = child;
        if let (Some(mut input), Some(payload)) = (child.stdin.take(), payload) {
            // Written apart: a command that does not read its input must
            // not block the guard (a write to a gone reader just fails).
            std::thread::spawn(move || {
                let _ = input.write_all(payload.as_bytes());
                let _ = input.write_all(b"\n");
            });
        }
        let pgid = Pid::from_raw(i32::try_from(child.id()).map_err(|_| ())?);
        let _ = writeln!(report, "started {pgid}");

        let (tx, events) = mpsc::channel();
        let waiter = tx.clone();
        // Waits for the command's end *without* reaping it (WNOWAIT): the
        // main thread reaps it, and signals its group only before that, so
        // `killpg` never reaches a group id the kernel could have reused.
        drop(child);
        std::thread::spawn(move || {
            while let Err(Errno::EINTR) = nix::sys::wait::waitid(
                nix::sys::wait::Id::Pid(pgid),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            ) {}
            let _ = waiter.send(Event::Exited);
        });
        std::thread::spawn(move || {
            for line in socket.lines() {
                let Ok(line) = line else { break };
                if let Some(c) = Control::parse(&line) {
                    if tx.send(Event::Control(c)).is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(Event::DaemonGone);
        });
        Ok(Self {
            report,
            events,
            grace,
            pgid,
            deadline: Some(deadline),
            reaped: false,
        })
    }

    fn say(&mut self, line: &str) {
        // The daemon may be gone; then nobody listens.
        let _ = writeln!(self.report, "{line}");
    }

    fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| monotonic_nanos() >= d)
    }

    /// How long until the deadline, if there is one.
    fn until_deadline(&self) -> Option<Duration> {
        self.deadline.map(|d| {
            let left = d.saturating_sub(monotonic_nanos());
            Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX))
        })
    }

    /// Runs the command to its end, then ends the rest of its tree.
    fn run(mut self) -> ExitCode {
        // Phase 1: the command runs.
        let first_signal = loop {
            if self.deadline_passed() {
                self.say("deadline-passed");
                break Signal::SIGKILL;
            }
            let event = match self.until_deadline() {
                Some(left) => match self.events.recv_timeout(left) {
                    Ok(e) => e,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => Event::DaemonGone,
                },
                None => self.events.recv().unwrap_or(Event::DaemonGone),
            };
            match event {
                Event::Control(Control::Deadline(d)) => self.deadline = Some(d),
                // The command runs: its environment and input are what they were.
                Event::Control(Control::Env(..) | Control::Payload(_)) => {}
                Event::Control(Control::Term) => break Signal::SIGTERM,
                Event::Control(Control::Kill) | Event::DaemonGone => break Signal::SIGKILL,
                Event::Exited => {
                    self.reap_command();
                    // What the command left behind goes too.
                    break Signal::SIGTERM;
                }
            }
        };
        // Phase 2: end the tree.
        self.end_tree(first_signal);
        ExitCode::SUCCESS
    }

    /// Reaps the ended command and reports how it ended. From here on its
    /// process group id may be reused: it is never signalled again.
    fn reap_command(&mut self) {
        let status = loop {
            match nix::sys::wait::waitpid(self.pgid, None) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        };
        self.reaped = true;
        match status {
            Ok(WaitStatus::Exited(_, code)) => self.say(&format!("exited {code}")),
            Ok(WaitStatus::Signaled(_, sig, _)) => self.say(&format!("signalled {}", sig as i32)),
            Ok(_) => self.say("error the command ended without a status"),
            Err(e) => self.say(&format!("error waiting for the command: {e}")),
        }
    }

    /// Signals the command's group and every orphan re-parented to us until
    /// nothing is left: `SIGTERM` first (if asked), `SIGKILL` once the grace
    /// is over, the deadline passes, the daemon says `kill` or goes away.
    fn end_tree(&mut self, first: Signal) {
        let mut signal = first;
        let kill_at = Instant::now() + self.grace;
        // Who got SIGTERM already (the group as its negated id): once each.
        let mut termed: HashSet<i32> = HashSet::new();
        loop {
            if signal == Signal::SIGTERM && (Instant::now() >= kill_at || self.deadline_passed()) {
                signal = Signal::SIGKILL;
            }
            // SIGTERM once per process, SIGKILL on every sweep. The group
            // only while its leader is unreaped (its id is ours until then);
            // after that, our own children: their pids are ours until we
            // reap them, and the rest of the tree comes to us as they die.
            if !self.reaped && (signal == Signal::SIGKILL || termed.insert(-self.pgid.as_raw())) {
                let _ = nix::sys::signal::killpg(self.pgid, signal);
            }
            for pid in self.tree_roots() {
                if signal == Signal::SIGKILL || termed.insert(pid.as_raw()) {
                    let _ = nix::sys::signal::kill(pid, signal);
                }
            }
            if self.reaped && self.reap_orphans() {
                return;
            }
            match self.events.recv_timeout(SWEEP) {
                Ok(Event::Exited) => self.reap_command(),
                Ok(Event::Control(Control::Kill) | Event::DaemonGone) => signal = Signal::SIGKILL,
                Ok(Event::Control(Control::Deadline(d))) => self.deadline = Some(d),
                Ok(Event::Control(Control::Term | Control::Env(..) | Control::Payload(_))) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => signal = Signal::SIGKILL,
            }
        }
    }

    /// Reaps what has ended; true once no child is left at all.
    fn reap_orphans(&self) -> bool {
        loop {
            match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return false,
                Ok(_) => continue,
                Err(Errno::ECHILD) => return true,
                Err(Errno::EINTR) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Our direct children other than the command: orphans of the tree
    /// re-parented to us, possibly in groups or sessions of their own. Only
    /// we reap them, so each pid names our child until we do.
    fn tree_roots(&self) -> Vec<Pid> {
        let me = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| parent_of(pid) == Some(me))
            .map(Pid::from_raw)
            .collect()
    }
}

/// What the daemon told before the first deadline: the command's
/// variables and, perhaps, its standard input.
#[derive(Debug, Default, PartialEq, Eq)]
struct Told {
    env: Vec<(String, String)>,
    payload: Option<String>,
}

/// Reads the daemon's messages until the first deadline, which must still
/// be ahead, with the variables told before it; anything else (the daemon
/// gone, `term`, `kill`, a deadline already passed) is why the command must
/// not start.
fn first_deadline(socket: &mut impl BufRead) -> Result<(u128, Told), &'static str> {
    let mut line = String::new();
    let mut told = Told::default();
    loop {
        line.clear();
        match socket.read_line(&mut line) {
            Ok(0) | Err(_) => {
                return Err("the daemon went away before it told the lease's deadline");
            }
            Ok(_) => {}
        }
        match Control::parse(&line) {
            Some(Control::Deadline(d)) if monotonic_nanos() < d => return Ok((d, told)),
            // At most a handful: the attempt's ids and its parameters.
            Some(Control::Env(name, value)) if told.env.len() < 64 => {
                told.env.push((name, value));
            }
            Some(Control::Payload(json)) => told.payload = Some(json),
            Some(Control::Env(..)) => return Err("the daemon sent too many variables"),
            Some(Control::Deadline(_)) => {
                return Err("the lease's deadline had passed before it could start");
            }
            Some(Control::Term | Control::Kill) => {
                return Err("the daemon asked to stop before it started");
            }
            None => {}
        }
    }
}

/// The parent pid of `pid`, from `/proc/PID/stat` (field 4, after the
/// command name in parentheses, which may itself hold spaces and parentheses).
fn parent_of(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_parse() {
        assert_eq!(Control::parse("deadline 42\n"), Some(Control::Deadline(42)));
        assert_eq!(Control::parse("term"), Some(Control::Term));
        assert_eq!(Control::parse("kill\n"), Some(Control::Kill));
        assert_eq!(Control::parse("deadline soon"), None);
        assert_eq!(Control::parse("bogus"), None);
        assert_eq!(
            Control::parse("env HAJOBS_FENCING_TOKEN=7\n"),
            Some(Control::Env("HAJOBS_FENCING_TOKEN".into(), "7".into()))
        );
        assert_eq!(
            Control::parse("env A_1=x=y"),
            Some(Control::Env("A_1".into(), "x=y".into()))
        );
        assert_eq!(
            Control::parse("env HAJOBS_PARAM_NOTE= two words \n"),
            Some(Control::Env(
                "HAJOBS_PARAM_NOTE".into(),
                " two words ".into()
            )),
            "a value keeps its spaces"
        );
        assert_eq!(
            Control::parse("payload {\"a\": [1, 2]}\n"),
            Some(Control::Payload("{\"a\": [1, 2]}".into()))
        );
        for bad in ["env =x", "env lower=x", "env LD PRELOAD=x", "env NOVALUE"] {
            assert_eq!(Control::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn args_need_a_grace_and_a_command() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let (grace, cmd) = parse_args(&a(&["250", "--", "sh", "-c", "true"])).unwrap();
        assert_eq!(grace, Duration::from_millis(250));
        assert_eq!(cmd, a(&["sh", "-c", "true"]));
        assert!(parse_args(&a(&["250", "--"])).is_none());
        assert!(parse_args(&a(&["x", "--", "sh"])).is_none());
        assert!(parse_args(&a(&["250", "sh"])).is_none());
    }

    #[test]
    fn a_command_starts_only_under_a_deadline_still_ahead() {
        let ahead = monotonic_nanos() + 10_000_000_000;
        let mut told = std::io::Cursor::new(format!(
            "bogus\nenv HAJOBS_JOB_ID=j\nenv HAJOBS_FENCING_TOKEN=3\ndeadline {ahead}\n"
        ));
        assert_eq!(
            first_deadline(&mut told),
            Ok((
                ahead,
                Told {
                    env: vec![
                        ("HAJOBS_JOB_ID".into(), "j".into()),
                        ("HAJOBS_FENCING_TOKEN".into(), "3".into())
                    ],
                    payload: None,
                }
            ))
        );
        let past = monotonic_nanos();
        let mut late = std::io::Cursor::new(format!("deadline {past}\n"));
        assert!(
            first_deadline(&mut late)
                .unwrap_err()
                .contains("had passed")
        );
        let mut gone = std::io::Cursor::new("");
        assert!(first_deadline(&mut gone).unwrap_err().contains("went away"));
        let mut stop = std::io::Cursor::new("kill\n");
        assert!(
            first_deadline(&mut stop)
                .unwrap_err()
                .contains("asked to stop")
        );
    }

    #[test]
    fn a_guard_told_a_passed_deadline_never_starts_its_command() {
        let dir = std::env::temp_dir().join(format!("hajobs-guard-late-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let (ours, theirs) = UnixStream::pair().unwrap();
        writeln!(&ours, "deadline {}", monotonic_nanos()).unwrap();
        let command = ["sh", "-c", &format!("touch {}", dir.display())]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(Guard::start(theirs, Duration::from_millis(10), command).is_err());
        let mut said = String::new();
        BufReader::new(&ours).read_line(&mut said).unwrap();
        assert!(
            said.starts_with("error `sh` not started: the lease's deadline had passed"),
            "{said}"
        );
        assert!(!dir.exists(), "the command ran");
    }

    #[test]
    fn a_guard_started_early_gives_its_command_the_variables_and_input_told_before_the_deadline() {
        let out = std::env::temp_dir().join(format!("hajobs-guard-env-{}", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let (ours, theirs) = UnixStream::pair().unwrap();
        writeln!(&ours, "env HAJOBS_FENCING_TOKEN=42").unwrap();
        writeln!(&ours, "payload {{\"files\":[\"a.csv\"]}}").unwrap();
        writeln!(&ours, "deadline {}", monotonic_nanos() + 10_000_000_000).unwrap();
        let command = [
            "sh",
            "-c",
            &format!(
                "read -r input; echo \"$HAJOBS_FENCING_TOKEN $input\" > {}",
                out.display()
            ),
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let guard = Guard::start(theirs, Duration::from_millis(10), command).unwrap();
        // Not `run`: in this test process it would end every child of the
        // process, other tests' included. The command is reaped here.
        let _ = nix::sys::wait::waitpid(guard.pgid, None);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "42 {\"files\":[\"a.csv\"]}",
            "the variables and the payload on standard input"
        );
        let _ = std::fs::remove_file(&out);
    }

    #[test]
    fn parent_pid_survives_odd_command_names() {
        assert_eq!(
            parent_of(std::process::id() as i32),
            Some(std::os::unix::process::parent_id())
        );
    }
}
