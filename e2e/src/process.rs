//! Child processes that are stopped by PID on drop (SIGTERM, then SIGKILL), with their
//! output in a log file.

use anyhow::{Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let f = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let f2 = f.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            child: Some(child),
            name: name.to_string(),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits up to `d` for the process to exit by itself.
    pub fn wait_timeout(&mut self, d: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + d;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends a signal to the process (by its PID).
    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        if pid != 0 {
            // SAFETY: kill(2) on a PID we started and have not reaped yet.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if !self.running() {
            return self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
        }
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return Some(s);
        }
        self.signal(libc::SIGKILL);
        self.child.as_mut().and_then(|c| c.wait().ok())
    }

    /// The log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, the process exits, or `d` passes.
    pub fn wait_for_output(&mut self, needle: &str, d: Duration) -> Result<()> {
        let deadline = Instant::now() + d;
        loop {
            if self.output().contains(needle) {
                return Ok(());
            }
            if !self.running() {
                anyhow::bail!(
                    "{} exited before printing {needle:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} did not print {needle:?} within {d:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
