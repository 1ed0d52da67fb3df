//! The external-command check: the configured command line with HOST and PORT
//! replaced, run by `sh -c` in its own process group; exit status 0 means up. A
//! command still running at the timeout is killed with its whole group.

use super::{Outcome, Target};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What is kept of the command's output for the result: its last line, at most this.
const KEEP: usize = 200;

pub fn command_line(template: &str, t: &Target) -> String {
    template
        .replace("HOST", &t.address.to_string())
        .replace("PORT", &t.port.to_string())
}

pub fn run(t: &Target) -> Outcome {
    let line = command_line(&t.cfg.command, t);
    let timeout = Duration::from_millis(t.cfg.timeout_ms);
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&line)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run `{line}`: {e}"))?;
    // Output is read on threads so a chatty command never blocks on a full pipe.
    let (tx, rx) = mpsc::channel();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
                if all.len() > 64 * 1024 {
                    all.drain(..all.len() - 16 * 1024);
                }
            }
            let _ = tx.send(all);
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for `{line}`: {e}")),
        }
    };
    let Some(status) = status else {
        // SAFETY: signalling the process group we created (its id is the child's pid).
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        return Err(format!(
            "`{line}` did not finish within {} ms (killed)",
            timeout.as_millis()
        ));
    };
    // Whatever the pipes held; a descendant that kept them open is not waited for.
    let mut out = Vec::new();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
        out.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&out);
    let last = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    let last: String = last.chars().take(KEEP).collect();
    match status.code() {
        Some(0) if last.is_empty() => Ok("exit 0".into()),
        Some(0) => Ok(format!("exit 0: {last}")),
        Some(c) if last.is_empty() => Err(format!("`{line}` exited {c}")),
        Some(c) => Err(format!("`{line}` exited {c}: {last}")),
        None => Err(format!("`{line}` was killed by a signal")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siplb_core::health::{CheckKind, HealthConfig};

    fn target(cmd: &str, timeout_ms: u64) -> Target {
        Target {
            farm: "pbx".into(),
            address: "198.18.1.11".parse().unwrap(),
            port: 5080,
            tls_port: 5061,
            protocols: vec![siplb_core::config::Protocol::Udp],
            cfg: HealthConfig {
                check: CheckKind::Command,
                command: cmd.into(),
                timeout_ms,
                ..Default::default()
            },
        }
    }

    #[test]
    fn host_and_port_are_substituted_and_exit_status_decides() {
        let t = target("echo checking HOST:PORT; test PORT = 5080", 2000);
        assert_eq!(run(&t), Ok("exit 0: checking 198.18.1.11:5080".into()));
        let t = target("echo no route to HOST >&2; exit 3", 2000);
        let e = run(&t).unwrap_err();
        assert!(e.contains("exited 3: no route to 198.18.1.11"), "{e}");
    }

    #[test]
    fn a_hung_command_is_killed_with_its_children_at_the_timeout() {
        let t = target("sleep 30 & sleep 30; echo HOST", 300);
        let start = Instant::now();
        let e = run(&t).unwrap_err();
        assert!(e.contains("did not finish within 300 ms"), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
}
