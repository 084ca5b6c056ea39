//! Commands in pseudo-terminals (`portable-pty`): start, stream output, send input, resize,
//! kill, with a time cap (the command is killed when it runs out) and an output cap (output
//! past it is dropped and the command killed, so a runaway `yes` cannot fill memory).
//!
//! A command runs through the platform shell (`/bin/sh -c`, `cmd.exe /C`) in the jail's root
//! folder. The PTY is not confined by the filesystem jail — a shell can reach whatever the
//! user running `pa-device` can — which is why every PTY tool is high privilege.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use portable_pty::{ChildKiller, CommandBuilder, MasterPty, PtySize, native_pty_system};
use serde::Serialize;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct PtyLimits {
    pub max_sessions: usize,
    /// The longest a command may run; also the default when a call gives none.
    pub max_runtime: Duration,
    /// Output bytes kept per command; past this the command is killed.
    pub max_output_bytes: usize,
}

impl Default for PtyLimits {
    fn default() -> Self {
        Self {
            max_sessions: 8,
            max_runtime: Duration::from_secs(600),
            max_output_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("no PTY session {0:?} (it may have finished and been collected)")]
    UnknownSession(String),
    #[error("too many PTY sessions (at most {0}): kill one first")]
    TooManySessions(usize),
    #[error("the command is empty")]
    EmptyCommand,
    #[error("cannot start the command: {0}")]
    Spawn(String),
    #[error("PTY I/O: {0}")]
    Io(String),
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Why we killed it: "time limit", "output limit", "killed on request".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed: Option<String>,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    total: usize,
    truncated: bool,
    reader_done: bool,
    exit: Option<ExitInfo>,
    killed: Option<String>,
}

pub struct Session {
    pub id: String,
    pub command: String,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    killer: Mutex<Box<dyn ChildKiller + Send + Sync>>,
    master: Mutex<Box<dyn MasterPty + Send>>,
    writer: Mutex<Box<dyn Write + Send>>,
    pid: Option<u32>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a read returns: the output since the last read (ANSI escapes removed, CR LF → LF).
#[derive(Debug, Serialize)]
pub struct Chunk {
    pub session: String,
    pub output: String,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
}

impl Session {
    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn kill(&self, reason: &str) {
        tracing::debug!(session = %self.id, reason, "pty kill");
        {
            let mut st = lock(&self.state);
            if st.exit.is_some() {
                return;
            }
            st.killed.get_or_insert_with(|| reason.to_string());
        }
        // The shell leads its own session and process group: kill the whole group, so a
        // command it started does not outlive it.
        #[cfg(unix)]
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok())
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = lock(&self.killer).kill();
        self.bump();
    }

    fn finished(&self) -> bool {
        let st = lock(&self.state);
        st.exit.is_some() && st.reader_done
    }

    fn take(&self) -> Chunk {
        let mut st = lock(&self.state);
        let raw = std::mem::take(&mut st.pending);
        Chunk {
            session: self.id.clone(),
            output: clean(&String::from_utf8_lossy(&raw)),
            truncated: st.truncated,
            exit: if st.reader_done {
                st.exit.clone()
            } else {
                None
            },
        }
    }

    /// Waits until the command exited and its output is drained, or `wait` passed. After the
    /// exit, trailing output gets a short grace (a background child may hold the terminal).
    async fn settle(&self, wait: Duration) {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (exited, done) = {
                let st = lock(&self.state);
                (st.exit.is_some(), st.reader_done)
            };
            if exited && done {
                return;
            }
            let until = if exited {
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(300))
            } else {
                deadline
            };
            if tokio::time::timeout_at(until, rx.changed()).await.is_err() {
                if exited {
                    lock(&self.state).reader_done = true;
                }
                return;
            }
        }
    }

    /// Waits for new output (or the exit) for at most `wait`.
    async fn wait_output(&self, wait: Duration) {
        let mut rx = self.changed.subscribe();
        {
            let st = lock(&self.state);
            if !st.pending.is_empty() || (st.exit.is_some() && st.reader_done) {
                return;
            }
        }
        let _ = tokio::time::timeout(wait, rx.changed()).await;
        // The exit may come a moment before the last bytes: give them a breath.
        if lock(&self.state).exit.is_some() {
            self.settle(Duration::from_millis(300)).await;
        }
    }
}

/// Removes ANSI escape sequences and carriage returns before line feeds: the model reads text.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' if chars.peek() == Some(&'\n') => {}
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone)]
pub struct PtyManager {
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
    next: Arc<AtomicU64>,
    limits: PtyLimits,
    cwd: PathBuf,
}

fn shell(command: &str) -> CommandBuilder {
    #[cfg(windows)]
    {
        let mut cmd = CommandBuilder::new("cmd.exe");
        cmd.args(["/C", command]);
        cmd
    }
    #[cfg(not(windows))]
    {
        let mut cmd = CommandBuilder::new("/bin/sh");
        cmd.args(["-c", command]);
        cmd
    }
}

impl PtyManager {
    pub fn new(cwd: PathBuf, limits: PtyLimits) -> Self {
        Self {
            sessions: Arc::default(),
            next: Arc::new(AtomicU64::new(1)),
            limits,
            cwd,
        }
    }

    pub fn limits(&self) -> &PtyLimits {
        &self.limits
    }

    fn get(&self, id: &str) -> Result<Arc<Session>, PtyError> {
        lock(&self.sessions)
            .get(id)
            .cloned()
            .ok_or_else(|| PtyError::UnknownSession(id.to_string()))
    }

    /// Starts `command` in a new terminal of `cols`×`rows`; it is killed after `timeout`
    /// (capped by the limit). Must be called inside a tokio runtime.
    pub fn start(
        &self,
        command: &str,
        cols: u16,
        rows: u16,
        timeout: Option<Duration>,
    ) -> Result<Arc<Session>, PtyError> {
        if command.trim().is_empty() {
            return Err(PtyError::EmptyCommand);
        }
        tracing::debug!(command, "pty start");
        {
            let mut sessions = lock(&self.sessions);
            sessions.retain(|_, s| !s.finished());
            if sessions.len() >= self.limits.max_sessions {
                return Err(PtyError::TooManySessions(self.limits.max_sessions));
            }
        }
        let size = PtySize {
            rows: rows.clamp(2, 500),
            cols: cols.clamp(10, 1000),
            pixel_width: 0,
            pixel_height: 0,
        };
        let pair = native_pty_system()
            .openpty(size)
            .map_err(|e| PtyError::Spawn(e.to_string()))?;
        let mut cmd = shell(command);
        cmd.cwd(&self.cwd);
        cmd.env("TERM", "dumb");
        let mut child = pair
            .slave
            .spawn_command(cmd)
            .map_err(|e| PtyError::Spawn(e.to_string()))?;
        tracing::debug!(pid = ?child.process_id(), "pty spawned");
        // Only the child holds the terminal's slave side now: its exit ends our reads.
        drop(pair.slave);
        let mut reader = pair
            .master
            .try_clone_reader()
            .map_err(|e| PtyError::Io(e.to_string()))?;
        let writer = pair
            .master
            .take_writer()
            .map_err(|e| PtyError::Io(e.to_string()))?;
        let id = format!("pty-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let session = Arc::new(Session {
            id: id.clone(),
            command: command.to_string(),
            state: Mutex::default(),
            changed: watch::channel(0).0,
            killer: Mutex::new(child.clone_killer()),
            master: Mutex::new(pair.master),
            writer: Mutex::new(writer),
            pid: child.process_id(),
        });

        let max_output = self.limits.max_output_bytes;
        let s = session.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let over = {
                            let mut st = lock(&s.state);
                            let room = max_output.saturating_sub(st.total);
                            let keep = n.min(room);
                            st.pending.extend_from_slice(&buf[..keep]);
                            st.total += keep;
                            if keep < n {
                                st.truncated = true;
                            }
                            keep < n
                        };
                        if over {
                            s.kill("output limit");
                        }
                        s.bump();
                    }
                }
            }
            lock(&s.state).reader_done = true;
            s.bump();
        });

        let s = session.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            {
                let mut st = lock(&s.state);
                let killed = st.killed.clone();
                st.exit = Some(match status {
                    Ok(status) => ExitInfo {
                        code: status.exit_code(),
                        signal: status.signal().map(str::to_string),
                        killed,
                    },
                    Err(_) => ExitInfo {
                        code: u32::MAX,
                        signal: None,
                        killed,
                    },
                });
            }
            s.bump();
        });

        let cap = timeout
            .unwrap_or(self.limits.max_runtime)
            .min(self.limits.max_runtime);
        let s = session.clone();
        tokio::spawn(async move {
            let mut rx = s.changed.subscribe();
            let deadline = tokio::time::Instant::now() + cap;
            loop {
                if lock(&s.state).exit.is_some() {
                    return;
                }
                if tokio::time::timeout_at(deadline, rx.changed())
                    .await
                    .is_err()
                {
                    s.kill("time limit");
                    return;
                }
            }
        });

        lock(&self.sessions).insert(id, session.clone());
        Ok(session)
    }

    /// Output since the last read, waiting up to `wait` for some. A finished session is
    /// collected once its exit has been read.
    pub async fn read(&self, id: &str, wait: Duration) -> Result<Chunk, PtyError> {
        let session = self.get(id)?;
        session.wait_output(wait).await;
        let chunk = session.take();
        if chunk.exit.is_some() {
            lock(&self.sessions).remove(id);
        }
        Ok(chunk)
    }

    pub fn write(&self, id: &str, input: &str) -> Result<(), PtyError> {
        let session = self.get(id)?;
        let mut writer = lock(&session.writer);
        writer
            .write_all(input.as_bytes())
            .and_then(|()| writer.flush())
            .map_err(|e| PtyError::Io(e.to_string()))
    }

    pub fn resize(&self, id: &str, cols: u16, rows: u16) -> Result<(), PtyError> {
        let session = self.get(id)?;
        let size = PtySize {
            rows: rows.clamp(2, 500),
            cols: cols.clamp(10, 1000),
            pixel_width: 0,
            pixel_height: 0,
        };
        lock(&session.master)
            .resize(size)
            .map_err(|e| PtyError::Io(e.to_string()))
    }

    /// Kills the command and returns its last output.
    pub async fn kill(&self, id: &str) -> Result<Chunk, PtyError> {
        let session = self.get(id)?;
        session.kill("killed on request");
        session.settle(Duration::from_secs(5)).await;
        lock(&self.sessions).remove(id);
        Ok(session.take())
    }

    /// Runs `command` to its end (or its time cap) and returns all its output.
    pub async fn exec(&self, command: &str, timeout: Option<Duration>) -> Result<Chunk, PtyError> {
        let session = self.start(command, 120, 40, timeout)?;
        let mut guard = KillOnDrop(Some(session.clone()));
        session
            .settle(self.limits.max_runtime + Duration::from_secs(5))
            .await;
        guard.0 = None;
        lock(&self.sessions).remove(&session.id);
        Ok(session.take())
    }

    /// Kills every running command (the connection that asked for them is gone).
    pub fn kill_all(&self) {
        let sessions: Vec<_> = lock(&self.sessions).drain().map(|(_, s)| s).collect();
        for s in sessions {
            s.kill("device agent stopping");
        }
    }
}

/// An `exec` whose caller went away (the call was cancelled) does not leave its command running.
struct KillOnDrop(Option<Arc<Session>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(session) = &self.0 {
            session.kill("call cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_escapes_and_crlf() {
        assert_eq!(clean("\u{1b}[1;32mhello\u{1b}[0m\r\n"), "hello\n");
        assert_eq!(clean("\u{1b}]0;title\u{7}x\r\ny"), "x\ny");
        assert_eq!(clean("a\rb"), "a\rb");
    }
}
