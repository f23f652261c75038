//! A child process (the `worker` binary, usually) whose output lines are collected as they
//! arrive, so a test can wait for a printed line with a bound instead of sleeping. Killed on drop.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// One output line and when it arrived.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: SystemTime,
    pub text: String,
}

/// Where the child's stderr goes: the test's own stderr, or collected like stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stderr {
    Inherit,
    Capture,
}

/// Which collected stream to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

pub struct ChildProcess {
    child: Child,
    stdout: watch::Receiver<Vec<Line>>,
    stderr: watch::Receiver<Vec<Line>>,
}

impl ChildProcess {
    /// Spawn `cmd` with stdout piped (and stderr when `Capture`); panics when it cannot start.
    pub fn spawn(cmd: &mut Command, stderr: Stderr) -> Self {
        let capture = stderr == Stderr::Capture;
        cmd.stdout(Stdio::piped());
        cmd.stderr(if capture {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
        let mut child = cmd.spawn().expect("spawn child process");
        let stdout = collect(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = collect(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// The lines of `stream` so far.
    pub fn lines(&self, stream: Stream) -> Vec<Line> {
        self.receiver(stream).borrow().clone()
    }

    /// The text of the lines of `stream` so far.
    pub fn texts(&self, stream: Stream) -> Vec<String> {
        let lines = self.receiver(stream).borrow();
        lines.iter().map(|l| l.text.clone()).collect()
    }

    /// Wait until `check` holds for the lines of `stream`, at most `bound`. False when the bound
    /// passes or the stream ends (the process exited) first.
    pub async fn wait_for(
        &self,
        stream: Stream,
        bound: Duration,
        mut check: impl FnMut(&[Line]) -> bool,
    ) -> bool {
        let mut rx = self.receiver(stream).clone();
        let waited = tokio::time::timeout(bound, rx.wait_for(|lines| check(lines))).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// Wait until a line of `stream` satisfies `check`, at most `bound`.
    pub async fn wait_for_line(
        &self,
        stream: Stream,
        bound: Duration,
        mut check: impl FnMut(&str) -> bool,
    ) -> bool {
        self.wait_for(stream, bound, |lines| lines.iter().any(|l| check(&l.text)))
            .await
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then wait for the exit at most `bound`; `None` if it is still running.
    pub fn terminate(&mut self, bound: Duration) -> Option<ExitStatus> {
        let pid = i32::try_from(self.child.id()).expect("pid fits pid_t");
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("send SIGTERM");
        let deadline = Instant::now() + bound;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // std offers no wait with a timeout: poll the exit status.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap (a crash).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn receiver(&self, stream: Stream) -> &watch::Receiver<Vec<Line>> {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A thread that appends each line of `pipe` to a watched list; the sender drops at EOF, which
/// ends any wait on it.
fn collect(pipe: Option<Box<dyn Read + Send>>) -> watch::Receiver<Vec<Line>> {
    let (tx, rx) = watch::channel(Vec::new());
    if let Some(pipe) = pipe {
        std::thread::spawn(move || {
            for text in BufReader::new(pipe).lines().map_while(Result::ok) {
                let line = Line {
                    at: SystemTime::now(),
                    text,
                };
                tx.send_modify(|lines| lines.push(line));
            }
        });
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_arrive_and_waits_end_at_exit() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; echo three"]);
        let p = ChildProcess::spawn(&mut cmd, Stderr::Capture);
        let bound = Duration::from_secs(10);
        assert!(
            p.wait_for_line(Stream::Stdout, bound, |l| l == "three")
                .await
        );
        assert!(p.wait_for_line(Stream::Stderr, bound, |l| l == "two").await);
        assert_eq!(p.texts(Stream::Stdout), ["one", "three"]);
        assert!(
            !p.wait_for_line(Stream::Stdout, bound, |l| l == "four")
                .await
        );
    }

    #[test]
    fn terminate_sends_sigterm() {
        use std::os::unix::process::ExitStatusExt;
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut p = ChildProcess::spawn(&mut cmd, Stderr::Inherit);
        assert!(p.is_alive());
        let status = p
            .terminate(Duration::from_secs(10))
            .expect("exits on SIGTERM");
        assert_eq!(status.signal(), Some(15));
        assert!(!p.is_alive());
    }
}
