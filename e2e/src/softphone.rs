//! A real softphone: baresip (Debian `baresip-core` 1.0) run headless in a namespace.
//!
//! Each phone gets its own configuration directory, registers one account at the VIP
//! (the account's domain, so REGISTER and INVITE go to `sip:<VIP>:5060`), sends a
//! generated tone (`ausine`, 48 kHz stereo resampled to PCMU) and plays into a bridge
//! device nothing reads (`aubridge`): no sound card. It is driven over its `ctrl_tcp`
//! interface (netstring-framed JSON: commands and answers, and call events), reached
//! by a socket opened inside the phone's namespace. `-t` makes baresip quit by itself
//! after the test's time limit, whatever happens to the test.

use crate::netns::Netns;
use crate::process::Proc;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// The ctrl_tcp port, on the phone namespace's loopback.
const CTRL_PORT: u16 = 4444;

/// One call event (`CALL_RINGING`, `CALL_ESTABLISHED`, `CALL_REMOTE_SDP`, ...).
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: String,
    /// `param`: the peer URI, `offer`/`answer` for SDP events, the reason of a close.
    pub param: String,
    pub at: Instant,
}

/// A command's answer.
#[derive(Debug)]
pub struct Answer {
    pub ok: bool,
    pub data: String,
}

pub struct Softphone {
    pub user: String,
    pub ip: Ipv4Addr,
    domain: Ipv4Addr,
    ctrl: TcpStream,
    buf: Vec<u8>,
    pub events: Vec<Event>,
    tokens: u32,
    proc: Proc,
}

/// baresip's configuration: SIP on the phone's address, PCMU only, generated audio.
fn config(ip: Ipv4Addr, iface: &str) -> String {
    format!(
        "poll_method epoll
sip_listen {ip}:5060
net_interface {iface}
call_local_timeout 30
call_max_calls 2
audio_player aubridge,nil
audio_alert aubridge,nil
audio_source ausine,440
ausrc_srate 48000
ausrc_channels 2
auplay_srate 48000
rtp_ports 40000-40099
rtcp_mux no
jitter_buffer_delay 5-10
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aubridge.so
module_tmp account.so
module_app menu.so
statmode_default off
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{CTRL_PORT}
"
    )
}

impl Softphone {
    /// Starts baresip in `ns` (its link `iface` holds `ip`) with the account
    /// `sip:<user>@<domain>`, which registers at once; quits by itself after `life`.
    pub fn start(
        ns: &Netns,
        iface: &str,
        dir: &Path,
        user: &str,
        ip: Ipv4Addr,
        domain: Ipv4Addr,
        life: Duration,
    ) -> Result<Softphone> {
        let conf = dir.join(format!("baresip-{user}"));
        std::fs::create_dir_all(&conf)?;
        std::fs::write(conf.join("config"), config(ip, iface))?;
        // Manual answer: the test accepts, so the callee rings (180) first.
        std::fs::write(
            conf.join("accounts"),
            format!(
                "<sip:{user}@{domain}>;regint=60;answermode=manual;audio_codecs=PCMU;ptime=20\n"
            ),
        )?;
        let mut cmd = ns.command("baresip");
        cmd.arg("-f")
            .arg(&conf)
            .args(["-t", &life.as_secs().max(1).to_string()]);
        let mut proc = Proc::spawn(
            &format!("baresip {user}"),
            cmd,
            &dir.join(format!("baresip-{user}.log")),
        )?;
        proc.wait_for_output("baresip is ready", Duration::from_secs(10))?;
        let ctrl = connect_in(ns, SocketAddr::from(([127, 0, 0, 1], CTRL_PORT)))
            .with_context(|| format!("baresip {user}: ctrl_tcp on port {CTRL_PORT}"))?;
        ctrl.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(Softphone {
            user: user.to_string(),
            ip,
            domain,
            ctrl,
            buf: Vec::new(),
            events: Vec::new(),
            tokens: 0,
            proc,
        })
    }

    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    /// The last registration outcome baresip logged (`200 OK`, `408 Request Timeout`),
    /// or None before the first answer.
    pub fn registration(&self) -> Option<String> {
        let prefix = format!("{}@{}: ", self.user, self.domain);
        self.proc
            .output()
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&prefix).map(|r| r.trim().to_string()))
    }

    /// Waits up to `d` for a 200 to the REGISTER.
    pub fn wait_registered(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            if self.registration().is_some_and(|r| r.contains(" 200 OK")) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.pump(Duration::from_millis(100));
        }
    }

    /// Sends a ctrl_tcp command and waits up to 5 s for its answer.
    pub fn command(&mut self, command: &str, params: &str) -> Result<Answer> {
        self.tokens += 1;
        let token = format!("t{}", self.tokens);
        let msg = serde_json::json!({"command": command, "params": params, "token": token});
        let body = msg.to_string();
        self.ctrl
            .write_all(format!("{}:{body},", body.len()).as_bytes())
            .with_context(|| format!("baresip {}: sending {command}", self.user))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            for v in self.read_messages()? {
                if v["response"] == true && v["token"] == token.as_str() {
                    return Ok(Answer {
                        ok: v["ok"] == true,
                        data: v["data"].as_str().unwrap_or("").to_string(),
                    });
                }
            }
        }
        bail!("baresip {}: no answer to {command} within 5 s", self.user)
    }

    pub fn dial(&mut self, uri: &str) -> Result<Answer> {
        self.command("dial", uri)
    }
    pub fn accept(&mut self) -> Result<Answer> {
        self.command("accept", "")
    }
    /// Puts the current call on hold: a re-INVITE with `a=sendonly`.
    pub fn hold(&mut self) -> Result<Answer> {
        self.command("hold", "")
    }
    /// Takes the call off hold: a re-INVITE with `a=sendrecv`.
    pub fn resume(&mut self) -> Result<Answer> {
        self.command("resume", "")
    }
    /// BYE for an established call, CANCEL for one still ringing.
    pub fn hangup(&mut self) -> Result<Answer> {
        self.command("hangup", "")
    }

    /// Reads events for `d`.
    pub fn pump(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if self.read_messages().is_err() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The first event `kind` at index `from` or later of `events`, waiting up to `d`.
    pub fn wait_event(&mut self, kind: &str, from: usize, d: Duration) -> Option<Event> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(e) = self.events.iter().skip(from).find(|e| e.kind == kind) {
                return Some(e.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.pump(Duration::from_millis(50));
        }
    }

    /// How many events `kind` arrived at index `from` or later.
    pub fn count(&self, kind: &str, from: usize) -> usize {
        self.events
            .iter()
            .skip(from)
            .filter(|e| e.kind == kind)
            .count()
    }

    /// Stops baresip (SIGTERM by PID) and returns its log.
    pub fn stop(&mut self) -> String {
        self.proc.stop(Duration::from_secs(3));
        self.proc.output()
    }

    /// Reads what the socket has (up to its 50 ms timeout); keeps events, returns every
    /// complete message.
    fn read_messages(&mut self) -> Result<Vec<Value>> {
        let mut chunk = [0u8; 8192];
        match self.ctrl.read(&mut chunk) {
            Ok(0) => bail!("baresip {}: ctrl_tcp closed", self.user),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading ctrl_tcp"),
        }
        let mut out = Vec::new();
        // Netstrings: `<length>:<json>,`.
        while let Some(colon) = self.buf.iter().position(|b| *b == b':') {
            let len: usize = std::str::from_utf8(&self.buf[..colon])
                .ok()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("baresip {}: bad netstring length", self.user))?;
            if self.buf.len() < colon + 1 + len + 1 {
                break;
            }
            let v: Value = serde_json::from_slice(&self.buf[colon + 1..colon + 1 + len])
                .with_context(|| format!("baresip {}: bad JSON on ctrl_tcp", self.user))?;
            self.buf.drain(..colon + 1 + len + 1);
            if v["event"] == true {
                self.events.push(Event {
                    kind: v["type"].as_str().unwrap_or("").to_string(),
                    param: v["param"].as_str().unwrap_or("").to_string(),
                    at: Instant::now(),
                });
            }
            out.push(v);
        }
        Ok(out)
    }
}

impl Drop for Softphone {
    fn drop(&mut self) {
        self.proc.stop(Duration::from_secs(3));
    }
}

/// A TCP connection opened from inside `ns` (a socket belongs to the namespace it was
/// made in), retried for up to 5 s while the listener starts.
pub fn connect_in(ns: &Netns, addr: SocketAddr) -> Result<TcpStream> {
    let path = format!("/var/run/netns/{}", ns.name());
    std::thread::spawn(move || -> Result<TcpStream> {
        let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns(2) with a namespace file we hold open; it changes only this
        // short-lived thread, which makes one socket and ends.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("connecting to {addr} in {path}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the connecting thread panicked"))?
}
