//! A helper process under test: its stdout arrives line by line on a channel (read by a thread),
//! its stderr is collected for failure messages, every wait has a deadline, and it is killed
//! when dropped, so a failing test leaves no process behind.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// stdout lines read but not yet taken. When full, the reader waits, then the pipe fills, and
/// then the child blocks on its next write: a test that stops reading slows the child down.
const LINE_QUEUE: usize = 1024;

/// A running helper process.
pub struct Spawned {
    name: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    reaped: bool,
}

/// What a helper process left when it ended.
#[derive(Debug)]
pub struct Finished {
    /// How it ended (killed by a signal, for one that was killed).
    pub status: ExitStatus,
    /// The stdout lines not yet taken with [`Spawned::next_line`] or [`Spawned::try_line`].
    pub lines: Vec<String>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// What [`Spawned::try_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum TryLine {
    /// A complete line, without its newline.
    Line(String),
    /// No line yet.
    Empty,
    /// stdout is closed: the process has ended (or closed it).
    Closed,
}

impl Spawned {
    /// Spawns `command` with stdin closed and stdout and stderr piped.
    pub fn spawn(mut command: Command) -> anyhow::Result<Self> {
        let name = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let (line_tx, lines) = sync_channel(LINE_QUEUE);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap_or_else(|e| format!("<stdout unreadable: {e}>"));
                if line_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (stderr_tx, stderr_rx) = sync_channel(1);
        thread::spawn(move || {
            let mut text = Vec::new();
            let _ = BufReader::new(stderr).read_to_end(&mut text);
            let _ = stderr_tx.send(String::from_utf8_lossy(&text).into_owned());
        });
        Ok(Self {
            name,
            child,
            lines,
            stderr: stderr_rx,
            reaped: false,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, waiting until `deadline`; `None` once stdout is closed. An error if
    /// the deadline passes first.
    pub fn next_line(&self, deadline: Instant) -> anyhow::Result<Option<String>> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(line) => Ok(Some(line)),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => bail!("{} printed no line in time", self.name),
        }
    }

    /// The next stdout line if one has arrived.
    pub fn try_line(&self) -> TryLine {
        match self.lines.try_recv() {
            Ok(line) => TryLine::Line(line),
            Err(TryRecvError::Empty) => TryLine::Empty,
            Err(TryRecvError::Disconnected) => TryLine::Closed,
        }
    }

    /// Whether the process has ended, without waiting.
    pub fn has_exited(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// Sends SIGKILL (on unix; `Child::kill` is SIGKILL there) and collects the rest.
    pub fn kill(mut self, deadline: Instant) -> anyhow::Result<Finished> {
        // An error here means it has already exited: collecting is all that is left to do.
        let _ = self.child.kill();
        self.finish(deadline)
    }

    /// Waits until `deadline` for the process to end by itself, and collects the rest.
    pub fn wait(self, deadline: Instant) -> anyhow::Result<Finished> {
        self.finish(deadline)
    }

    fn finish(mut self, deadline: Instant) -> anyhow::Result<Finished> {
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                bail!("{} did not end in time", self.name);
            }
            thread::sleep(Duration::from_millis(1));
        };
        self.reaped = true;
        let mut lines = Vec::new();
        while let Some(line) = self.next_line(deadline)? {
            lines.push(line);
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let stderr = self
            .stderr
            .recv_timeout(wait)
            .with_context(|| format!("{}'s stderr did not close in time", self.name))?;
        Ok(Finished {
            status,
            lines,
            stderr,
        })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
