//! What is left of a command's tree when its guard died (killed by hand, OOM
//! killed): found by the mark in its environment, ended through pidfds.
//!
//! The guard ends a tree in every other case (see [`crate::guard`]). When
//! the guard itself is gone, the tree's processes are orphans of someone
//! else, and a pid or process group id remembered from before may already
//! name a stranger. So the daemon (or `hajobs work run`) looks for the
//! processes whose environment carries the attempt's mark
//! ([`MARK`]`=<uuid>`, set for the guard and inherited by every process of
//! the tree that keeps its environment), opens a pidfd on each — which
//! pins the process: its pid cannot be reused while the pidfd is open —,
//! checks the mark again through that pin, and only then sends `SIGKILL`
//! through the pidfd. A stranger is never signalled.

use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

/// The variable that marks every process of one guarded tree.
pub(crate) const MARK: &str = "HAJOBS_TREE_ID";

/// How often the tree is looked for until none of it is left.
const SWEEPS: usize = 50;
const SWEEP_GAP: Duration = Duration::from_millis(20);

/// A new mark, for one guarded tree.
pub(crate) fn new_mark() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Ends every process marked `mark` (`SIGKILL`), sweeping until none is
/// found or the sweeps run out. Returns how many processes were signalled
/// (one still dying when the next sweep comes is signalled again, and
/// counted once).
pub(crate) async fn end(mark: &str) -> usize {
    let needle = format!("{MARK}={mark}");
    let mut signalled = std::collections::HashSet::new();
    for _ in 0..SWEEPS {
        let found = kill_marked(needle.as_bytes());
        if found.is_empty() {
            break;
        }
        signalled.extend(found);
        tokio::time::sleep(SWEEP_GAP).await;
    }
    signalled.len()
}

/// One sweep: every marked process gets `SIGKILL` through a pidfd; their pids.
fn kill_marked(needle: &[u8]) -> Vec<i32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| u32::try_from(p).is_ok_and(|p| p != me))
    {
        if !marked(pid, needle) {
            continue;
        }
        let Some(raw) = Pid::from_raw(pid) else {
            continue;
        };
        // Pinned: from here on `pid` is this process or no process.
        let Ok(fd) = pidfd_open(raw, PidfdFlags::empty()) else {
            continue;
        };
        // Still the marked one (not a new process under a reused pid)?
        if marked(pid, needle) && pidfd_send_signal(&fd, Signal::KILL).is_ok() {
            killed.push(pid);
        }
    }
    killed
}

/// Whether `/proc/PID/environ` holds `needle` as one of its entries.
fn marked(pid: i32, needle: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|&b| b == 0).any(|entry| entry == needle))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marked_processes_end_and_others_live() {
        let mark = new_mark();
        let spawn = |m: &str| {
            std::process::Command::new("sleep")
                .arg("300")
                .env(MARK, m)
                .spawn()
                .unwrap()
        };
        let mut ours = [spawn(&mark), spawn(&mark)];
        let mut stranger = spawn(&new_mark());
        assert_eq!(end(&mark).await, 2);
        for child in &mut ours {
            let status = child.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9)
            );
        }
        assert!(stranger.try_wait().unwrap().is_none(), "a stranger lives");
        stranger.kill().unwrap();
        let _ = stranger.wait();
    }
}
