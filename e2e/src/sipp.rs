//! Real SIPp peers (Debian `sip-tester`) and parsers for what they logged.

use crate::netns::Netns;
use crate::process::Proc;
use crate::topology::{backend_ip, Topology, CLIENT_IP, VIP};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// A scenario file shipped in `e2e/scenarios/`.
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.xml"))
}

/// Now, in seconds since the Unix epoch: the clock of `Traced::time`.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// A SIPp UAS (server) logging every message it sends and receives.
pub struct Uas {
    pub proc: Proc,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub messages: PathBuf,
}

/// Starts `sipp -sn uas` (or `scenario`) on `ip:port` inside `ns`.
pub fn start_uas(
    ns: &Netns,
    ip: Ipv4Addr,
    port: u16,
    dir: &Path,
    name: &str,
    scenario: Option<&Path>,
    extra: &[&str],
) -> Result<Uas> {
    let messages = dir.join(format!("{name}.msg"));
    let mut cmd = ns.command("sipp");
    cmd.env("TZ", "UTC");
    match scenario {
        Some(s) => cmd.arg("-sf").arg(s),
        None => cmd.args(["-sn", "uas"]),
    };
    cmd.args([
        "-i",
        &ip.to_string(),
        "-p",
        &port.to_string(),
        "-nostdin",
        "-trace_msg",
    ])
    .arg("-message_file")
    .arg(&messages)
    .args(extra);
    let mut proc = Proc::spawn(name, cmd, &dir.join(format!("{name}.out")))?;
    // SIPp binds at start; give it a moment and make sure it did not die on a bad option.
    std::thread::sleep(Duration::from_millis(300));
    if !proc.running() {
        bail!("{name} (sipp uas) exited at start:\n{}", proc.output());
    }
    Ok(Uas {
        proc,
        ip,
        port,
        messages,
    })
}

/// Starts a SIPp UAS for backend `i` of a test bed: in `ns`, on `backend_ip(i)`:5060.
pub fn start_backend_uas(
    ns: &Netns,
    i: usize,
    dir: &Path,
    name: &str,
    scenario: Option<&str>,
    extra: &[&str],
) -> Result<Uas> {
    let sc = scenario.map(self::scenario);
    start_uas(ns, backend_ip(i), 5060, dir, name, sc.as_deref(), extra)
}

/// Starts a SIPp UAS on every backend (`backends[i]` is backend `i`), named
/// `{prefix}{i}`.
pub fn start_backend_uases(
    backends: &[Netns],
    dir: &Path,
    prefix: &str,
    scenario: Option<&str>,
    extra: &[&str],
) -> Result<Vec<Uas>> {
    backends
        .iter()
        .enumerate()
        .map(|(i, ns)| start_backend_uas(ns, i, dir, &format!("{prefix}{i}"), scenario, extra))
        .collect()
}

impl Uas {
    /// Stops the UAS (SIGTERM ends SIPp reliably) and returns what it logged.
    pub fn finish(mut self) -> Vec<Traced> {
        self.proc.stop(Duration::from_secs(5));
        parse_trace(&self.messages)
    }

    pub fn messages_so_far(&self) -> Vec<Traced> {
        parse_trace(&self.messages)
    }
}

/// How to run a SIPp UAC: `Uac::new` and the settings that differ from its defaults.
pub struct Uac<'a> {
    ns: &'a Netns,
    local_ip: Ipv4Addr,
    local_port: u16,
    target: String,
    calls: u32,
    rate: u32,
    limit: u32,
    /// Scenario file; `None` = SIPp's built-in `uac`.
    scenario: Option<PathBuf>,
    extra: Vec<String>,
    timeout: Duration,
    name: String,
    trace: bool,
}

pub struct UacRun {
    pub status: ExitStatus,
    pub successful: u64,
    pub failed: u64,
    pub output: String,
    pub messages: Vec<Traced>,
}

impl<'a> Uac<'a> {
    /// `calls` calls at `rate` per second from `ns` at the client address
    /// (`CLIENT_IP`:5060) to the VIP's port 5060, with SIPp's built-in `uac`: at most 200
    /// at once, bounded by a 60 s `-timeout`, no message log. Its files are `name.*`.
    pub fn new(ns: &'a Netns, name: &str, calls: u32, rate: u32) -> Uac<'a> {
        Uac {
            ns,
            local_ip: CLIENT_IP,
            local_port: 5060,
            target: format!("{VIP}:5060"),
            calls,
            rate,
            limit: 200,
            scenario: None,
            extra: Vec::new(),
            timeout: Duration::from_secs(60),
            name: name.to_string(),
            trace: false,
        }
    }

    /// At most `n` calls at once (`-l`).
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = n;
        self
    }

    /// Ends the run with an error after `s` seconds (`-timeout`).
    pub fn timeout_s(mut self, s: u64) -> Self {
        self.timeout = Duration::from_secs(s);
        self
    }

    /// Holds each call `ms` milliseconds before its BYE (`-d`).
    pub fn hold_ms(self, ms: u32) -> Self {
        self.args(["-d".to_string(), ms.to_string()])
    }

    /// More SIPp options, after those given so far.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// A scenario of `e2e/scenarios/` instead of the built-in `uac`.
    pub fn scenario(mut self, name: &str) -> Self {
        self.scenario = Some(scenario(name));
        self
    }

    /// A scenario file outside `e2e/scenarios/` (one written next to the pcap it plays:
    /// SIPp looks for `play_pcap_audio` files beside the scenario).
    pub fn scenario_file(mut self, path: &Path) -> Self {
        self.scenario = Some(path.to_path_buf());
        self
    }

    /// Calls from `ip:port` instead of `CLIENT_IP`:5060.
    pub fn local(mut self, ip: Ipv4Addr, port: u16) -> Self {
        self.local_ip = ip;
        self.local_port = port;
        self
    }

    /// Calls `target` (`address:port`) instead of the VIP.
    pub fn target(mut self, target: &str) -> Self {
        self.target = target.to_string();
        self
    }

    /// Logs every message (`-trace_msg`), returned in `UacRun::messages`.
    pub fn traced(mut self) -> Self {
        self.trace = true;
        self
    }

    /// Runs the UAC to completion (bounded by `-m` and `-timeout`).
    pub fn run(&self, dir: &Path) -> Result<UacRun> {
        let mut running = self.spawn(dir)?;
        running.wait(self.timeout + Duration::from_secs(10))
    }

    /// Starts the UAC and returns at once.
    pub fn spawn(&self, dir: &Path) -> Result<RunningUac> {
        let stats = dir.join(format!("{}.csv", self.name));
        let messages = dir.join(format!("{}.msg", self.name));
        let mut cmd = self.ns.command("sipp");
        cmd.env("TZ", "UTC");
        match &self.scenario {
            Some(s) => cmd.arg("-sf").arg(s),
            None => cmd.args(["-sn", "uac"]),
        };
        cmd.arg(&self.target)
            .args(["-i", &self.local_ip.to_string()])
            .args(["-p", &self.local_port.to_string()])
            .args(["-m", &self.calls.to_string()])
            .args(["-r", &self.rate.to_string()])
            .args(["-l", &self.limit.to_string()])
            .args(["-nostdin", "-trace_stat", "-fd", "1"])
            .arg("-stf")
            .arg(&stats)
            .args(["-timeout", &format!("{}s", self.timeout.as_secs().max(1))])
            .arg("-timeout_error")
            .args(&self.extra);
        if self.trace {
            cmd.arg("-trace_msg").arg("-message_file").arg(&messages);
        }
        let proc = Proc::spawn(&self.name, cmd, &dir.join(format!("{}.out", self.name)))?;
        Ok(RunningUac {
            proc,
            stats,
            messages: self.trace.then_some(messages),
        })
    }
}

/// A UAC started with `Uac::spawn`.
pub struct RunningUac {
    pub proc: Proc,
    stats: PathBuf,
    messages: Option<PathBuf>,
}

impl RunningUac {
    /// Waits for the UAC to end by itself (its `-m` and `-timeout` bound it).
    pub fn wait(&mut self, limit: Duration) -> Result<UacRun> {
        let status = self
            .proc
            .wait_timeout(limit)
            .context("sipp uac did not stop after its -timeout")?;
        let (successful, failed) = read_stats(&self.stats).with_context(|| {
            format!("reading {}:\n{}", self.stats.display(), self.proc.output())
        })?;
        Ok(UacRun {
            status,
            successful,
            failed,
            output: self.proc.output(),
            messages: self
                .messages
                .as_deref()
                .map(parse_trace)
                .unwrap_or_default(),
        })
    }
}

/// Final SuccessfulCall(C) and FailedCall(C) of a SIPp `-trace_stat` CSV.
pub fn read_stats(path: &Path) -> Result<(u64, u64)> {
    let s = std::fs::read_to_string(path)?;
    let mut lines = s.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("empty stats file")?
        .split(';')
        .collect();
    let last: Vec<&str> = lines
        .next_back()
        .context("no stats rows")?
        .split(';')
        .collect();
    let col = |name: &str| -> Result<u64> {
        let i = header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("no {name} column"))?;
        Ok(last.get(i).and_then(|v| v.trim().parse().ok()).unwrap_or(0))
    };
    Ok((col("SuccessfulCall(C)")?, col("FailedCall(C)")?))
}

/// One message from a SIPp `-trace_msg` log.
#[derive(Debug, Clone)]
pub struct Traced {
    /// When SIPp logged it, in seconds since the Unix epoch (SIPp runs with TZ=UTC).
    pub time: f64,
    pub sent: bool,
    /// Bytes, as SIPp logged them.
    pub size: usize,
    /// User parts of the From and To URIs.
    pub from_user: String,
    pub to_user: String,
    /// `INVITE`, `ACK`, ... for requests, the status code (`"200"`) for responses.
    pub kind: String,
    pub call_id: String,
    pub cseq_method: String,
    /// The top Via's sent-by (`host:port`) and the first Contact URI's `host:port`, as
    /// written (empty when absent): where a balancer in `snat` put the client's flow.
    pub via: String,
    pub contact: String,
}

/// Parses a SIPp message log into messages.
pub fn parse_trace(path: &Path) -> Vec<Traced> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for block in text
        .split("----------------------------------------------- ")
        .skip(1)
    {
        let time = block.lines().next().map(parse_utc).unwrap_or(0.0);
        let mut lines = block.lines().skip(1);
        let Some(dir_line) = lines.next() else {
            continue;
        };
        let sent = dir_line.contains("message sent");
        if !sent && !dir_line.contains("message received") {
            continue;
        }
        let size = dir_line
            .split(|c: char| !c.is_ascii_digit())
            .find(|t| !t.is_empty())
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let mut lines = lines.skip_while(|l| l.trim().is_empty());
        let Some(first) = lines.next() else { continue };
        let kind = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            rest.split_whitespace().next().unwrap_or("").to_string()
        } else {
            first.split_whitespace().next().unwrap_or("").to_string()
        };
        let mut call_id = String::new();
        let mut cseq_method = String::new();
        let mut from_user = String::new();
        let mut to_user = String::new();
        let mut via = String::new();
        let mut contact = String::new();
        for l in lines {
            if l.trim().is_empty() {
                break;
            }
            let (name, value) = match l.split_once(':') {
                Some(x) => x,
                None => continue,
            };
            let name = name.trim().to_ascii_lowercase();
            if name == "call-id" || name == "i" {
                call_id = value.trim().to_string();
            } else if name == "cseq" {
                cseq_method = value.split_whitespace().nth(1).unwrap_or("").to_string();
            } else if name == "from" || name == "f" {
                from_user = uri_user(value);
            } else if name == "to" || name == "t" {
                to_user = uri_user(value);
            } else if (name == "via" || name == "v") && via.is_empty() {
                via = value
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .to_string();
            } else if (name == "contact" || name == "m") && contact.is_empty() {
                contact = uri_host_port(value);
            }
        }
        out.push(Traced {
            time,
            sent,
            size,
            from_user,
            to_user,
            kind,
            call_id,
            cseq_method,
            via,
            contact,
        });
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` (UTC) as seconds since the Unix epoch.
fn parse_utc(s: &str) -> f64 {
    let parse = || -> Option<f64> {
        let (date, time) = s.trim().split_once(' ')?;
        let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
        let (y, m, day) = (d.next()??, d.next()??, d.next()??);
        let mut t = time.split(':');
        let (hh, mm) = (
            t.next()?.parse::<f64>().ok()?,
            t.next()?.parse::<f64>().ok()?,
        );
        let ss: f64 = t.next()?.parse().ok()?;
        // Days from the civil date (proleptic Gregorian), H. Hinnant's algorithm.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146097 + doe - 719468;
        Some(days as f64 * 86400.0 + hh * 3600.0 + mm * 60.0 + ss)
    };
    parse().unwrap_or(0.0)
}

/// The user part of the first `sip:user@host` in a header value.
fn uri_user(value: &str) -> String {
    value
        .split_once("sip:")
        .and_then(|(_, r)| r.split_once('@'))
        .map(|(u, _)| u.to_string())
        .unwrap_or_default()
}

/// The `host:port` of the first `sip:[user@]host:port` in a header value.
fn uri_host_port(value: &str) -> String {
    let Some((_, r)) = value.split_once("sip:") else {
        return String::new();
    };
    let r = r.split_once('@').map_or(r, |(_, h)| h);
    r.split(|c: char| c == '>' || c == ';' || c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_string()
}

/// What each backend saw, by Call-ID, and whether any call was split.
#[derive(Debug)]
pub struct Stickiness {
    /// Calls (distinct Call-IDs) per backend.
    pub calls_per_backend: Vec<usize>,
    /// Messages per backend.
    pub messages_per_backend: Vec<usize>,
    /// Call-IDs seen by more than one backend.
    pub split: Vec<String>,
    /// For each backend, Call-ID → the message kinds it saw, in order.
    pub by_call: Vec<BTreeMap<String, Vec<String>>>,
}

/// Groups each backend's messages by Call-ID and finds calls seen by several backends.
pub fn stickiness(backends: &[Vec<Traced>]) -> Stickiness {
    let by_call: Vec<BTreeMap<String, Vec<String>>> = backends
        .iter()
        .map(|msgs| {
            let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for t in msgs {
                let k = if t.kind.chars().all(|c| c.is_ascii_digit()) {
                    format!("{}/{}", t.kind, t.cseq_method)
                } else {
                    t.kind.clone()
                };
                m.entry(t.call_id.clone()).or_default().push(k);
            }
            m
        })
        .collect();
    let mut owners: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, m) in by_call.iter().enumerate() {
        for cid in m.keys() {
            owners.entry(cid.as_str()).or_default().insert(i);
        }
    }
    let split = owners
        .iter()
        .filter(|(_, o)| o.len() > 1)
        .map(|(c, _)| c.to_string())
        .collect();
    Stickiness {
        calls_per_backend: by_call.iter().map(|m| m.len()).collect(),
        messages_per_backend: backends.iter().map(|m| m.len()).collect(),
        split,
        by_call,
    }
}

impl Stickiness {
    /// Panics unless every call at every backend has each kind of `want` (`METHOD` for
    /// requests, `code/METHOD` for responses; a kind listed twice must be seen twice).
    /// `what` names the step in the message.
    pub fn assert_every_call_has(&self, what: &str, want: &[&str]) {
        for (b, by_call) in self.by_call.iter().enumerate() {
            for (cid, kinds) in by_call {
                for w in want {
                    let need = want.iter().filter(|x| *x == w).count();
                    let have = kinds.iter().filter(|k| k == w).count();
                    assert!(
                        have >= need,
                        "{what}: backend {b} call {cid}: {need}× {w} wanted, saw {kinds:?}"
                    );
                }
            }
        }
    }
}

/// The test bed's UAS starters (here, so that `topology` needs nothing of SIPp).
impl Topology {
    /// A SIPp UAS on every backend (built-in `uas` with `extra` options), named `uas<i>`.
    pub fn start_uas_backends(&self, extra: &[&str]) -> Result<Vec<Uas>> {
        start_backend_uases(&self.backends, &self.dir, "uas", None, extra)
    }

    /// A SIPp UAS on backend `i` (`scenario` of `e2e/scenarios/`, None = built-in `uas`).
    pub fn start_uas(
        &self,
        i: usize,
        name: &str,
        scenario: Option<&str>,
        extra: &[&str],
    ) -> Result<Uas> {
        start_backend_uas(&self.backends[i], i, &self.dir, name, scenario, extra)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sipp_timestamps_are_utc_epoch_seconds() {
        assert_eq!(super::parse_utc("1970-01-01 00:00:01.5"), 1.5);
        assert_eq!(
            super::parse_utc("2026-11-25 03:37:07.000000"),
            1_795_577_827.0
        );
        assert_eq!(super::parse_utc("garbage"), 0.0);
    }

    #[test]
    fn contact_host_port_with_and_without_user() {
        let hp = super::uri_host_port;
        assert_eq!(
            hp(" <sip:bob@198.18.1.254:1024>;expires=60"),
            "198.18.1.254:1024"
        );
        assert_eq!(
            hp(" <sip:198.18.1.11:5060;transport=UDP>"),
            "198.18.1.11:5060"
        );
        assert_eq!(hp(" sip:sipp@198.18.0.10:5060"), "198.18.0.10:5060");
        assert_eq!(hp(" *"), "");
    }
}
