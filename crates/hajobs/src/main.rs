//! `hajobs`: the daemon and admin CLI of hajobs (see the library's front page).
//!
//! Exit codes: 0 success, 1 a runtime failure (Cassandra unreachable, a
//! request failed, a triggered job failed), 2 bad input (flags,
//! configuration), 3 the lock is held by another attempt.

fn main() -> std::process::ExitCode {
    hajobs::main()
}
