//! Health checks. One thread per checked backend runs its farm's check (`[farm.health]`)
//! every `interval_ms`: SIP OPTIONS, a TCP connection, a dummy call, or an external
//! command. `fall` failures in a row take an up backend down, `rise` successes bring
//! it back; each change goes to the daemon's main loop as an [`Event::Health`], which
//! marks the backend and applies the new state to the dataplane (whose Maglev tables
//! are rebuilt without it: only its share of new work moves).
//!
//! Checks use the host's own sockets; with the exception path they leave through the
//! dataplane's port toward the backends, as Kamailio's dispatcher probes would.

mod call;
mod command;
mod rtp;
mod sipclient;

use super::Event;
use rsip::headers::UntypedHeader;
use serde::{Deserialize, Serialize};
use sipclient::{status_text, transaction, Leg, Transport};
use siplb_core::config::{Config, Protocol};
use siplb_core::health::{CheckKind, HealthConfig};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// (farm, backend address, backend port).
pub type Key = (String, Ipv4Addr, u16);

/// One backend to check, with everything the check needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub farm: String,
    pub address: Ipv4Addr,
    pub port: u16,
    pub tls_port: u16,
    pub protocols: Vec<Protocol>,
    pub cfg: HealthConfig,
}

impl Target {
    pub fn key(&self) -> Key {
        (self.farm.clone(), self.address, self.port)
    }

    /// A transport to the backend's SIP port: UDP if the farm takes SIP over UDP, else
    /// a TCP connection.
    fn transport(&self, timeout: Duration) -> Result<Transport, String> {
        let remote = SocketAddr::from((self.address, self.port));
        if self.protocols.contains(&Protocol::Udp) {
            Transport::udp(remote)
        } else {
            Transport::tcp(remote, timeout)
        }
    }
}

/// Every backend of every farm whose checks are on.
pub fn targets(config: &Config) -> Vec<Target> {
    config
        .farms
        .iter()
        .filter(|f| f.health.check != CheckKind::None)
        .flat_map(|f| {
            f.backends.iter().map(|b| Target {
                farm: f.name.clone(),
                address: b.address,
                port: b.port,
                tls_port: b.tls_port,
                protocols: f.protocols.clone(),
                cfg: f.health.clone(),
            })
        })
        .collect()
}

/// A check's result: what it saw, as an operator would want to read it.
pub type Outcome = Result<String, String>;

/// Runs one check of `t` (blocking, bounded by its timeout).
pub fn check(t: &Target, stop: &AtomicBool) -> Outcome {
    match t.cfg.check {
        CheckKind::None => Ok("not checked".into()),
        CheckKind::Options => options(t).map_err(|e| format!("OPTIONS: {e}")),
        CheckKind::Tcp => tcp(t),
        CheckKind::Call => call::run(t, stop).map_err(|e| format!("call: {e}")),
        CheckKind::Command => command::run(t),
    }
}

fn options(t: &Target) -> Outcome {
    let timeout = Duration::from_millis(t.cfg.timeout_ms);
    let mut tp = t.transport(timeout)?;
    let host = format!("{}:{}", t.address, t.port);
    let mut leg = Leg::new(
        format!("sip:siplb-check@{}", tp.local.ip()),
        format!("sip:{host}"),
    );
    let accept = rsip::Header::Accept(rsip::headers::Accept::new("application/sdp"));
    let req = leg.request(
        &tp,
        rsip::Method::Options,
        &format!("sip:{host}"),
        false,
        vec![accept],
        None,
    )?;
    let start = Instant::now();
    let resp = transaction(&mut tp, &req, timeout)?;
    let code = resp.status_code.code();
    let text = format!(
        "{} over {} in {} ms",
        status_text(&resp),
        tp.name(),
        start.elapsed().as_millis()
    );
    if t.cfg.accepts(code) {
        Ok(text)
    } else {
        Err(format!(
            "{text}: not one of the accepted codes {}",
            t.cfg.reply_codes.join(", ")
        ))
    }
}

fn tcp(t: &Target) -> Outcome {
    let timeout = Duration::from_millis(t.cfg.timeout_ms);
    let mut ports = Vec::new();
    if t.protocols.iter().any(|p| *p != Protocol::Tls) {
        ports.push(t.port);
    }
    if t.protocols.contains(&Protocol::Tls) {
        ports.push(t.tls_port);
    }
    let start = Instant::now();
    for p in &ports {
        sipclient::connect(SocketAddr::from((t.address, *p)), timeout)?;
    }
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    Ok(format!(
        "TCP connect to port {} in {} ms",
        list.join(" and "),
        start.elapsed().as_millis()
    ))
}

/// Rise/fall: the state changes after `rise` successes (down → up) or `fall`
/// failures (up → down) in a row.
#[derive(Debug, Clone)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    pub up: bool,
    streak: u32,
}

impl Tracker {
    pub fn new(rise: u32, fall: u32, up: bool) -> Tracker {
        Tracker {
            rise: rise.max(1),
            fall: fall.max(1),
            up,
            streak: 0,
        }
    }

    /// Records one check; returns the new state if it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(ok)
    }

    #[cfg(test)]
    pub fn streak(&self) -> u32 {
        self.streak
    }
}

/// What the checks of one backend have seen, for `siplb status`, JSON and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckStatus {
    /// options, tcp, call or command.
    pub check: String,
    /// Up as far as the checks are concerned.
    pub up: bool,
    /// Checks run, and how many failed.
    pub checks: u64,
    pub failed: u64,
    /// State changes decided by the checks.
    pub went_down: u64,
    pub came_up: u64,
    pub last_ok: bool,
    pub last_result: String,
    /// Unix time (ms) when the last check ended, and how long it took.
    pub last_at_ms: u64,
    pub last_took_ms: u64,
    /// Good checks in a row up to the last one (ends a passive mark: `passive.rs`).
    #[serde(default)]
    pub ok_streak: u32,
}

pub type Board = Arc<Mutex<BTreeMap<Key, CheckStatus>>>;

struct Running {
    target: Target,
    stop: Arc<AtomicBool>,
}

/// The running checkers, kept in line with the configuration by [`Checkers::sync`].
pub struct Checkers {
    running: HashMap<Key, Running>,
    tx: Sender<Event>,
    pub board: Board,
}

impl Checkers {
    pub fn new(tx: Sender<Event>) -> Checkers {
        Checkers {
            running: HashMap::new(),
            tx,
            board: Board::default(),
        }
    }

    /// Starts checkers for backends that need one, and stops (or restarts) those
    /// whose backend is gone or whose check changed. `down` says whether a backend is
    /// down now, so a restarted daemon carries on from the dataplane's state.
    pub fn sync(&mut self, config: &Config, down: impl Fn(&Key) -> bool) {
        let want = targets(config);
        let board = self.board.clone();
        self.running.retain(|_, r| {
            let keep = want.contains(&r.target);
            if !keep {
                r.stop.store(true, Ordering::SeqCst);
            }
            keep
        });
        // Counters live as long as the backend stays checked, across check changes.
        lock(&board).retain(|k, _| want.iter().any(|t| &t.key() == k));
        for (i, t) in want.into_iter().enumerate() {
            let key = t.key();
            if self.running.contains_key(&key) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let up = !down(&key);
            {
                let mut b = lock(&board);
                let entry = b.entry(key.clone()).or_default();
                if entry.check != kind_name(t.cfg.check) {
                    // A new kind of check: the last result was another check's. The
                    // counters go on (they are Prometheus counters).
                    entry.last_result.clear();
                }
                entry.check = kind_name(t.cfg.check).into();
                entry.up = up;
            }
            let (s, tx, b, tt) = (stop.clone(), self.tx.clone(), board.clone(), t.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("health {}:{}", t.address, t.port))
                .spawn(move || checker(tt, up, i, s, tx, b));
            match spawned {
                Ok(_) => {
                    self.running.insert(key, Running { target: t, stop });
                }
                Err(e) => eprintln!(
                    "siplb: health: cannot start the checker of {}:{}: {e}",
                    t.address, t.port
                ),
            }
        }
    }

    /// Backends that are checked now.
    pub fn checked(&self, key: &Key) -> bool {
        self.running.contains_key(key)
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        for r in self.running.values() {
            r.stop.store(true, Ordering::SeqCst);
        }
    }
}

fn lock(b: &Board) -> std::sync::MutexGuard<'_, BTreeMap<Key, CheckStatus>> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn kind_name(k: CheckKind) -> &'static str {
    match k {
        CheckKind::None => "none",
        CheckKind::Options => "options",
        CheckKind::Tcp => "tcp",
        CheckKind::Call => "call",
        CheckKind::Command => "command",
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sleeps until `t`; false if asked to stop meanwhile.
fn sleep_until(t: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = t.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// The life of one backend's checker thread.
fn checker(
    t: Target,
    up: bool,
    index: usize,
    stop: Arc<AtomicBool>,
    tx: Sender<Event>,
    board: Board,
) {
    let mut tracker = Tracker::new(t.cfg.rise, t.cfg.fall, up);
    let interval = Duration::from_millis(t.cfg.interval_ms);
    // Spread a farm's first checks over the interval rather than probing all at once.
    let mut next = Instant::now() + interval * (index % 10) as u32 / 10;
    while sleep_until(next, &stop) {
        let started = Instant::now();
        let outcome = check(&t, &stop);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        next = started + interval;
        let ok = outcome.is_ok();
        let text = match &outcome {
            Ok(s) | Err(s) => s.clone(),
        };
        let change = tracker.record(ok);
        {
            let mut b = lock(&board);
            let s = b.entry(t.key()).or_default();
            s.checks += 1;
            s.failed += u64::from(!ok);
            s.last_ok = ok;
            s.ok_streak = if ok { s.ok_streak + 1 } else { 0 };
            s.last_result = text.clone();
            s.last_at_ms = unix_ms();
            s.last_took_ms = started.elapsed().as_millis() as u64;
            s.up = tracker.up;
            match change {
                Some(true) => s.came_up += 1,
                Some(false) => s.went_down += 1,
                None => {}
            }
        }
        if let Some(now_up) = change {
            let reason = if now_up {
                format!("{} good checks in a row: {text}", t.cfg.rise)
            } else {
                format!("{} failed checks in a row: {text}", t.cfg.fall)
            };
            let ev = Event::Health {
                farm: t.farm.clone(),
                address: t.address,
                port: t.port,
                up: now_up,
                reason,
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn rise_and_fall_need_streaks() {
        let mut t = Tracker::new(2, 3, true);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a success breaks the streak");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert!(!t.up);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.streak(), 1);
        assert_eq!(t.record(true), Some(true));
        assert!(t.up);
    }

    fn target(check: CheckKind, port: u16, timeout_ms: u64) -> Target {
        Target {
            farm: "pbx".into(),
            address: Ipv4Addr::LOCALHOST,
            port,
            tls_port: 5061,
            protocols: vec![Protocol::Udp],
            cfg: HealthConfig {
                check,
                timeout_ms,
                ..Default::default()
            },
        }
    }

    /// A one-shot UDP SIP server on loopback answering the first request with `code`.
    fn answer_once(code: u16) -> (u16, std::thread::JoinHandle<String>) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let (n, from) = s.recv_from(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let copy = |name: &str| {
                req.lines()
                    .find(|l| {
                        l.to_ascii_lowercase()
                            .starts_with(&name.to_ascii_lowercase())
                    })
                    .unwrap_or("")
                    .to_string()
            };
            let resp = format!(
                "SIP/2.0 {code} Whatever\r\n{}\r\n{}\r\n{};tag=b\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
                copy("Via:"),
                copy("From:"),
                copy("To:"),
                copy("Call-ID:"),
                copy("CSeq:")
            );
            // A provisional answer and a stray one first: neither is the answer.
            let stray = resp.replace(&copy("Call-ID:"), "Call-ID: other@x");
            s.send_to(stray.as_bytes(), from).unwrap();
            s.send_to(resp.as_bytes(), from).unwrap();
            req
        });
        (port, h)
    }

    #[test]
    fn options_accepts_configured_codes_and_names_the_rest() {
        let (port, h) = answer_once(200);
        let out = check(
            &target(CheckKind::Options, port, 2000),
            &AtomicBool::new(false),
        );
        let req = h.join().unwrap();
        assert!(out.as_ref().is_ok_and(|s| s.starts_with("200")), "{out:?}");
        // The request is one rsip and siplb's own scanner both read.
        assert!(rsip::Request::try_from(req.as_bytes()).is_ok(), "{req}");
        let m = siplb_core::sip::SipMessage::parse(req.as_bytes(), &Default::default()).unwrap();
        assert_eq!(m.method(), Some(siplb_core::sip::Method::Options));

        let (port, h) = answer_once(503);
        let out = check(
            &target(CheckKind::Options, port, 2000),
            &AtomicBool::new(false),
        );
        h.join().unwrap();
        let e = out.unwrap_err();
        assert!(
            e.contains("503") && e.contains("not one of the accepted codes 2xx"),
            "{e}"
        );
    }

    #[test]
    fn options_without_an_answer_is_a_timeout_not_a_reply() {
        // A socket that reads and never answers: a hung server.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let start = Instant::now();
        let e = check(
            &target(CheckKind::Options, port, 700),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(e.contains("no answer to OPTIONS within 700 ms"), "{e}");
        assert!(start.elapsed() < Duration::from_millis(1500));
        // Resent after T1 (500 ms): two copies arrived.
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let mut n = 0;
        while s.recv(&mut buf).is_ok() {
            n += 1;
        }
        assert_eq!(n, 2, "the OPTIONS and its retransmission");
    }

    #[test]
    fn tcp_connect_sees_open_and_closed_ports() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap().port();
        let mut t = target(CheckKind::Tcp, open, 500);
        t.protocols = vec![Protocol::Tcp];
        assert!(check(&t, &AtomicBool::new(false)).is_ok());
        drop(l);
        let e = check(&t, &AtomicBool::new(false)).unwrap_err();
        assert!(e.contains("connection refused"), "{e}");
    }
}
