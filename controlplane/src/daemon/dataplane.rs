//! Finding, starting and talking to the dataplane of a file prefix.

use anyhow::{anyhow, bail, Context, Result};
use dpdk::channel::Channel;
use dpdk::eal::{Eal, ProcessType};
use runtime::names;
use runtime::shm::Shared;
use siplb_core::control::{Command, Envelope, Reply};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}

/// The PID of the running dataplane of `prefix`, if one is up and ready.
pub fn running(prefix: &str) -> Option<u32> {
    let s = std::fs::read_to_string(names::ready_file(&names::dpdk_runtime_dir(prefix))).ok()?;
    let pid: u32 = s.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// Starts `siplb-dataplane` in its own process group, so it outlives this process
/// and ignores the terminal's signals, and waits until it is ready.
pub fn start(
    bin: &Path,
    config: &Path,
    eal_extra: &[String],
    prefix: &str,
    log: &Path,
) -> Result<Child> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("-c").arg(config);
    if !eal_extra.is_empty() {
        cmd.arg("--").args(eal_extra);
    }
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = running(prefix) {
            if pid == child.id() {
                return Ok(child);
            }
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            bail!(
                "the dataplane exited ({status}) before it was ready; the end of {}:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the dataplane was not ready within 60 s (see {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// This process attached to a dataplane as a DPDK secondary.
pub struct Attached {
    _eal: Eal,
    pub shared: Shared,
    channel: Channel,
    next_id: u64,
}

impl Attached {
    pub fn attach(prefix: &str) -> Result<Attached> {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let args: Vec<String> = vec![
            "siplb".into(),
            "--proc-type=secondary".into(),
            "--file-prefix".into(),
            prefix.into(),
            "--no-pci".into(),
            // One lcore that may run on any CPU: the control plane must not steal a
            // worker's core, and its threads inherit this affinity.
            "--lcores".into(),
            format!("0@(0-{})", cpus - 1),
            "--log-level".into(),
            "lib.eal:error".into(),
        ];
        let eal = Eal::init(&args)
            .context("attaching to the dataplane's shared memory (DPDK secondary)")?;
        if eal.process_type() != ProcessType::Secondary {
            bail!("expected to attach as a DPDK secondary");
        }
        let shared = Shared::attach()?;
        let channel = Channel::attach(names::COMMAND_RING, names::REPLY_RING)
            .context("the dataplane's control rings are missing")?;
        Ok(Attached {
            _eal: eal,
            shared,
            channel,
            next_id: (u64::from(std::process::id()) << 32) | 1,
        })
    }

    /// Sends `cmd` and waits for its reply.
    pub fn call(&mut self, cmd: Command, timeout: Duration) -> Result<Reply> {
        let id = self.next_id;
        self.next_id += 1;
        self.channel
            .send(&Envelope { id, body: cmd }.encode())
            .map_err(|e| anyhow!("sending to the dataplane: {e}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(msg) = self.channel.try_recv() {
                match Envelope::<Reply>::decode(&msg) {
                    Ok(env) if env.id == id => return Ok(env.body),
                    // Replies to someone else (a previous control process): dropped.
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                bail!("the dataplane did not answer within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn dataplane_pid(&self) -> u32 {
        self.shared
            .header
            .pid
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
