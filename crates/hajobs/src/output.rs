//! A command's output, read in bounded memory: the tail kept for its final
//! status, and the `HAJOBS_PROGRESS` lines published as its progress.
//!
//! A command may print gigabytes, or one line without an end: the daemon
//! reads its pipes in chunks and keeps at most twice [`OUTPUT_TAIL`] bytes
//! of each stream and one progress line of at most
//! [`MAX_PROGRESS_BYTES`](hajobs_scheduler::MAX_PROGRESS_BYTES), whatever it
//! prints.

use hajobs_core::checkpoint_store::MAX_CHECKPOINT_BYTES;
use hajobs_scheduler::MAX_PROGRESS_BYTES;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The last bytes of each of a command's streams kept in its final status.
pub(crate) const OUTPUT_TAIL: usize = 4096;

/// A stdout line starting so is the attempt's progress.
pub(crate) const PROGRESS_PREFIX: &str = "HAJOBS_PROGRESS ";

/// The start of a stdout line that records a checkpoint.
pub(crate) const CHECKPOINT_PREFIX: &str = "HAJOBS_CHECKPOINT ";

/// The special lines: their prefix and the most bytes after it.
const SPECIAL: [(&str, usize); 2] = [
    (PROGRESS_PREFIX, MAX_PROGRESS_BYTES),
    (CHECKPOINT_PREFIX, MAX_CHECKPOINT_BYTES),
];

/// How much is read from a pipe at a time.
const CHUNK: usize = 8 * 1024;

/// The last [`OUTPUT_TAIL`] bytes written to it, in at most twice that.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    bytes: Vec<u8>,
    /// Every byte written, kept or not: the status says what was cut.
    seen: u64,
}

impl Tail {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.seen += chunk.len() as u64;
        if chunk.len() >= OUTPUT_TAIL {
            self.bytes.clear();
            self.bytes
                .extend_from_slice(&chunk[chunk.len() - OUTPUT_TAIL..]);
            return;
        }
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * OUTPUT_TAIL {
            let cut = self.bytes.len() - OUTPUT_TAIL;
            self.bytes.drain(..cut);
        }
    }

    /// The kept tail as text (invalid UTF-8 replaced).
    pub(crate) fn text(&self) -> String {
        let start = self.bytes.len().saturating_sub(OUTPUT_TAIL);
        String::from_utf8_lossy(&self.bytes[start..]).into_owned()
    }

    /// How many bytes were written in all.
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }
}

/// What a line of stdout was, for progress.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ProgressLine {
    /// `HAJOBS_PROGRESS TEXT`: TEXT, trimmed.
    Update(String),
    /// `HAJOBS_CHECKPOINT JSON`: JSON, trimmed.
    Checkpoint(String),
    /// A progress or checkpoint line longer than its limit: not kept, only
    /// its size.
    TooLarge(usize),
}

/// Splits stdout into lines, keeping only a progress line being read, and
/// only up to the limit.
#[derive(Debug, Default)]
pub(crate) struct ProgressLines {
    /// The start of the current line while it may still be a progress line.
    line: Vec<u8>,
    /// The current line's length so far.
    len: usize,
    /// The current line is certainly not a progress line.
    other: bool,
}

impl ProgressLines {
    /// The most bytes a special line may have (the longer prefix, the
    /// larger limit and its line end).
    const LIMIT: usize = CHECKPOINT_PREFIX.len() + MAX_CHECKPOINT_BYTES + 2;

    /// Reads `chunk`, calling `found` for each progress line it ends.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], found: &mut impl FnMut(ProgressLine)) {
        while !chunk.is_empty() {
            let (part, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            self.take(part);
            if ended {
                self.end(found);
                chunk = &chunk[part.len() + 1..];
            } else {
                chunk = &[];
            }
        }
    }

    /// The output ended: a last line without its newline counts too.
    pub(crate) fn finish(&mut self, found: &mut impl FnMut(ProgressLine)) {
        if self.len > 0 {
            self.end(found);
        }
    }

    fn take(&mut self, part: &[u8]) {
        self.len += part.len();
        if self.other {
            return;
        }
        let room = Self::LIMIT.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
        let line = &self.line;
        let maybe = SPECIAL.iter().any(|(prefix, _)| {
            let n = line.len().min(prefix.len());
            line[..n] == prefix.as_bytes()[..n]
        });
        if !maybe {
            self.other = true;
            self.line.clear();
        }
    }

    fn end(&mut self, found: &mut impl FnMut(ProgressLine)) {
        let special = SPECIAL
            .iter()
            .find(|(prefix, _)| self.line.starts_with(prefix.as_bytes()));
        if let (false, Some((prefix, limit))) = (self.other, special) {
            let text = &self.line[prefix.len()..];
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if self.len > prefix.len() + limit + 2 || text.len() > *limit {
                found(ProgressLine::TooLarge(self.len - prefix.len()));
            } else {
                let text = String::from_utf8_lossy(text).trim().to_owned();
                found(if *prefix == CHECKPOINT_PREFIX {
                    ProgressLine::Checkpoint(text)
                } else {
                    ProgressLine::Update(text)
                });
            }
        }
        self.line.clear();
        self.len = 0;
        self.other = false;
    }
}

/// Reads `pipe` to its end into a [`Tail`], calling `progress` for each
/// progress line when given one. Memory stays bounded whatever it carries.
pub(crate) async fn read(
    pipe: impl AsyncRead + Unpin,
    mut progress: Option<&mut (dyn FnMut(ProgressLine) + Send)>,
) -> Tail {
    let mut pipe = pipe;
    let mut tail = Tail::default();
    let mut lines = ProgressLines::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.push(&buf[..n]);
                if let Some(found) = progress.as_mut() {
                    lines.feed(&buf[..n], &mut |l| found(l));
                }
            }
        }
    }
    if let Some(found) = progress.as_mut() {
        lines.finish(&mut |l| found(l));
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress_of(chunks: &[&[u8]]) -> Vec<ProgressLine> {
        let mut lines = ProgressLines::default();
        let mut out = Vec::new();
        for c in chunks {
            lines.feed(c, &mut |l| out.push(l));
        }
        lines.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn progress_lines_are_found_across_chunks() {
        let out = progress_of(&[
            b"hello\nHAJOBS_PRO",
            b"GRESS {\"rows\": 1}\r\nnot HAJOBS_PROGRESS x\n",
            b"HAJOBS_PROGRESS  half way \nHAJOBS_CHECK",
            b"POINT {\"step\": 3}\nHAJOBS_CHECKPOINTS no\nHAJOBS_PROGRESS last",
        ]);
        assert_eq!(
            out,
            vec![
                ProgressLine::Update("{\"rows\": 1}".into()),
                ProgressLine::Update("half way".into()),
                ProgressLine::Checkpoint("{\"step\": 3}".into()),
                ProgressLine::Update("last".into()),
            ]
        );
    }

    #[test]
    fn an_overlong_progress_line_is_refused_with_its_size_and_not_kept() {
        let big = vec![b'x'; 3 * MAX_PROGRESS_BYTES];
        let mut lines = ProgressLines::default();
        let mut out = Vec::new();
        lines.feed(PROGRESS_PREFIX.as_bytes(), &mut |l| out.push(l));
        for _ in 0..100 {
            lines.feed(&big, &mut |l| out.push(l));
            assert!(lines.line.len() <= ProgressLines::LIMIT);
        }
        lines.feed(b"\nHAJOBS_PROGRESS ok\n", &mut |l| out.push(l));
        assert_eq!(
            out,
            vec![
                ProgressLine::TooLarge(300 * MAX_PROGRESS_BYTES),
                ProgressLine::Update("ok".into())
            ]
        );
        // Exactly at the limit is accepted.
        let at_limit = format!("{PROGRESS_PREFIX}{}\n", "y".repeat(MAX_PROGRESS_BYTES));
        assert!(matches!(
            progress_of(&[at_limit.as_bytes()]).as_slice(),
            [ProgressLine::Update(t)] if t.len() == MAX_PROGRESS_BYTES
        ));
    }

    #[test]
    fn other_lines_keep_no_memory() {
        let mut lines = ProgressLines::default();
        let mut out = Vec::new();
        for _ in 0..1000 {
            lines.feed(&[b'z'; CHUNK], &mut |l| out.push(l));
            assert!(lines.line.is_empty());
        }
        assert!(out.is_empty());
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_in_bounded_memory() {
        let mut tail = Tail::default();
        let mut all = Vec::new();
        for i in 0..10_000u32 {
            let chunk = format!("line {i}\n");
            tail.push(chunk.as_bytes());
            all.extend_from_slice(chunk.as_bytes());
            assert!(tail.bytes.len() <= 2 * OUTPUT_TAIL);
        }
        assert_eq!(tail.seen(), all.len() as u64);
        assert_eq!(
            tail.text().as_bytes(),
            &all[all.len() - OUTPUT_TAIL..],
            "the last {OUTPUT_TAIL} bytes"
        );
        tail.push(&vec![b'q'; 3 * OUTPUT_TAIL]);
        assert_eq!(tail.text(), "q".repeat(OUTPUT_TAIL));
    }

    #[tokio::test]
    async fn reading_a_pipe_keeps_the_tail_and_finds_progress() {
        let mut data = Vec::new();
        for i in 0..2000 {
            data.extend_from_slice(format!("row {i}\n").as_bytes());
        }
        data.extend_from_slice(b"HAJOBS_PROGRESS {\"done\": true}\nbye");
        let mut found = Vec::new();
        let mut collect = |l: ProgressLine| found.push(l);
        let tail = read(&data[..], Some(&mut collect)).await;
        assert_eq!(found, vec![ProgressLine::Update("{\"done\": true}".into())]);
        assert!(
            tail.text()
                .ends_with("HAJOBS_PROGRESS {\"done\": true}\nbye")
        );
        assert_eq!(tail.seen(), data.len() as u64);
    }
}
