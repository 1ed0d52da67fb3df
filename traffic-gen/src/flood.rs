//! The flood mode (`--mode flood`): stateless requests to the VIP from spoofed sources,
//! what an IPDS faces, at a paced rate for a bounded count, counted by kind so a test
//! can account for every packet.
//!
//! Sources: `--flood-sources` "cold" addresses of `--flood-prefix` taken round robin
//! (each sends a little: a distributed flood no per-source limit sees), and
//! `--flood-hot-sources` "hot" ones after them that send `--flood-hot-share` percent
//! of the packets (what per-source limits and bans are for). Kinds: new INVITEs and
//! REGISTERs, in-dialog-looking requests of dialogs nobody knows (an INVITE with a To
//! tag, ACK, BYE, CANCEL), OPTIONS, and scanner requests (OPTIONS, REGISTER or INVITE
//! with the User-Agent of friendly-scanner, sipvicious...). Every Call-ID starts with
//! `flood-<kind>-`, so a backend can count what reached it by kind (an iptables string
//! match, a log); nothing is kept per request.

use crate::frame::{self, Endpoint};
use crate::text::Out;
use serde::Serialize;
use siplb_core::config::Ipv4Net;
use siplb_core::wire::MacAddr;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// What a flood packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodKind {
    Invite = 0,
    Register = 1,
    /// An INVITE with a To tag (a re-INVITE of an unknown dialog).
    Reinvite = 2,
    Ack = 3,
    Bye = 4,
    Cancel = 5,
    Options = 6,
    /// OPTIONS, REGISTER or INVITE in turn, with a scanner's User-Agent.
    Scanner = 7,
}

impl FloodKind {
    pub const ALL: [FloodKind; 8] = [
        FloodKind::Invite,
        FloodKind::Register,
        FloodKind::Reinvite,
        FloodKind::Ack,
        FloodKind::Bye,
        FloodKind::Cancel,
        FloodKind::Options,
        FloodKind::Scanner,
    ];

    /// The name in `--flood-mix`, the summary and the Call-ID.
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Invite => "invite",
            FloodKind::Register => "register",
            FloodKind::Reinvite => "reinvite",
            FloodKind::Ack => "ack",
            FloodKind::Bye => "bye",
            FloodKind::Cancel => "cancel",
            FloodKind::Options => "options",
            FloodKind::Scanner => "scanner",
        }
    }
}

/// User-Agents of the scanners Kamailio's default config drops (and siplb's defaults).
pub const SCANNER_AGENTS: [&str; 5] = [
    "friendly-scanner",
    "sipvicious",
    "sipcli/v1.8",
    "VaxSIPUserAgent/3.1",
    "pplsip",
];

/// Weights of the kinds (`--flood-mix invite=4,register=2,...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodMix(pub [u32; 8]);

/// At most this many packets in one round of the mix (the schedule is built once).
const MAX_ROUND: u32 = 10_000;

impl FloodMix {
    pub fn parse(s: &str) -> Result<FloodMix, String> {
        let mut w = [0u32; 8];
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected kind=weight"))?;
            let v: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the weight must be a whole number"))?;
            let k = k.trim().to_ascii_lowercase();
            let kind = FloodKind::ALL
                .into_iter()
                .find(|f| f.name() == k)
                .ok_or_else(|| {
                    let names: Vec<&str> = FloodKind::ALL.iter().map(|f| f.name()).collect();
                    format!("unknown kind `{k}` ({})", names.join(", "))
                })?;
            w[kind as usize] = v;
        }
        let total: u64 = w.iter().map(|&x| u64::from(x)).sum();
        if total == 0 {
            return Err("every weight is 0: nothing to send".into());
        }
        if total > u64::from(MAX_ROUND) {
            return Err(format!(
                "the weights add up to {total}: at most {MAX_ROUND}"
            ));
        }
        Ok(FloodMix(w))
    }

    /// One round of the mix, the kinds spread out (smooth weighted round robin): each
    /// kind appears as often as its weight.
    fn schedule(&self) -> Vec<FloodKind> {
        let total: i64 = self.0.iter().map(|&x| i64::from(x)).sum();
        let mut current = [0i64; 8];
        (0..total)
            .map(|_| {
                for (c, &w) in current.iter_mut().zip(&self.0) {
                    *c += i64::from(w);
                }
                let best = (0..8)
                    .max_by_key(|&i| (current[i], -(i as i64)))
                    .unwrap_or(0);
                current[best] -= total;
                FloodKind::ALL[best]
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FloodConfig {
    pub prefix: Ipv4Net,
    pub sources: u32,
    pub hot_sources: u32,
    /// Percent of the packets sent by the hot sources.
    pub hot_share: u32,
    pub mix: FloodMix,
    pub src_port: u16,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
    /// Identifies the run in Call-IDs.
    pub run: u32,
    pub budget: u64,
}

impl FloodConfig {
    /// Checks that the sources fit in the prefix; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        if self.sources == 0 {
            return Err("--flood-sources must be at least 1".into());
        }
        if self.hot_share > 100 || (self.hot_share > 0) != (self.hot_sources > 0) {
            return Err(
                "--flood-hot-share (0..=100) and --flood-hot-sources go together: both 0 or both set"
                    .into(),
            );
        }
        let room = 1u64 << (32 - u32::from(self.prefix.len));
        // The network and broadcast addresses are left out.
        if u64::from(self.sources) + u64::from(self.hot_sources) + 2 > room {
            return Err(format!(
                "--flood-sources + --flood-hot-sources: {} addresses do not fit in {}/{}",
                u64::from(self.sources) + u64::from(self.hot_sources),
                self.prefix.addr,
                self.prefix.len
            ));
        }
        Ok(())
    }

    fn nth_address(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.prefix.addr) & self.prefix.mask()) + 1 + i)
    }

    /// The hot sources, in order: the addresses right after the cold ones.
    pub fn hot_address(&self, i: u32) -> Ipv4Addr {
        self.nth_address(self.sources + i)
    }
}

/// What the flood sent and what came back.
#[derive(Debug, Clone, Default)]
pub struct FloodStats {
    /// Packets handed to the port, by `FloodKind`.
    pub sent: [u64; 8],
    /// Of them, from the hot sources.
    pub hot: [u64; 8],
    /// Responses to spoofed sources that came back (through a gateway that leads
    /// here), by status class 1xx..6xx.
    pub responses: [u64; 6],
    /// Frames that could not be built (no mbuf).
    pub build_failures: u64,
    /// Packets the pacer dropped from its schedule after a scheduling gap.
    pub pacer_skipped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloodSummary {
    pub sent: BTreeMap<String, u64>,
    /// Of them, from the hot sources.
    pub sent_hot: BTreeMap<String, u64>,
    pub total: u64,
    pub hot: u64,
    pub cold: u64,
    pub hot_sources: Vec<String>,
    pub cold_sources: u32,
    pub responses: BTreeMap<String, u64>,
    pub build_failures: u64,
    pub pacer_skipped: u64,
    pub sending_s: f64,
}

pub struct Flood {
    cfg: FloodConfig,
    schedule: Vec<FloodKind>,
    seq: u64,
    cold_seq: u32,
    hot_seq: u32,
    scanner_seq: u32,
    ident: u16,
    stopping: bool,
    pub stats: FloodStats,
}

/// splitmix64's finaliser: which packets are the hot sources' does not follow the mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Flood {
    pub fn new(cfg: FloodConfig) -> Self {
        Flood {
            schedule: cfg.mix.schedule(),
            cfg,
            seq: 0,
            cold_seq: 0,
            hot_seq: 0,
            scanner_seq: 0,
            ident: 0,
            stopping: false,
            stats: FloodStats::default(),
        }
    }

    pub fn config(&self) -> &FloodConfig {
        &self.cfg
    }

    /// No packet after this one (--duration ran out, or a signal).
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    pub fn done(&self) -> bool {
        self.stopping || self.seq >= self.cfg.budget
    }

    pub fn sent(&self) -> u64 {
        self.seq
    }

    /// A spoofed source of the prefix.
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        self.cfg.prefix.contains(ip)
    }

    /// Writes the next packet (Ethernet to SIP) into `out`; `None` when the budget is
    /// spent or it does not fit.
    pub fn emit(&mut self, src_mac: MacAddr, dst_mac: MacAddr, out: &mut [u8]) -> Option<usize> {
        if self.done() {
            return None;
        }
        let seq = self.seq;
        let kind = self.schedule[(seq % self.schedule.len() as u64) as usize];
        let hot = self.cfg.hot_sources > 0 && mix64(seq) % 100 < u64::from(self.cfg.hot_share);
        let src_ip = if hot {
            self.cfg.hot_address(self.hot_seq % self.cfg.hot_sources)
        } else {
            self.cfg.nth_address(self.cold_seq % self.cfg.sources)
        };
        let agent = if kind == FloodKind::Scanner {
            Some(SCANNER_AGENTS[self.scanner_seq as usize % SCANNER_AGENTS.len()])
        } else {
            None
        };
        let p = Packet {
            kind,
            scanner_turn: self.scanner_seq,
            agent,
            src_ip,
            src_port: self.cfg.src_port,
            dst_ip: self.cfg.dst_ip,
            dst_port: self.cfg.dst_port,
            run: self.cfg.run,
            seq,
        };
        let n = write_sip(&p, out.get_mut(frame::HEADERS_LEN..)?)?;
        let len = frame::write_udp_headers(
            out,
            Endpoint {
                mac: src_mac,
                ip: src_ip,
                port: self.cfg.src_port,
            },
            Endpoint {
                mac: dst_mac,
                ip: self.cfg.dst_ip,
                port: self.cfg.dst_port,
            },
            n,
            self.ident,
        );
        self.ident = self.ident.wrapping_add(1);
        self.seq += 1;
        if hot {
            self.hot_seq += 1;
            self.stats.hot[kind as usize] += 1;
        } else {
            self.cold_seq += 1;
        }
        if kind == FloodKind::Scanner {
            self.scanner_seq += 1;
        }
        self.stats.sent[kind as usize] += 1;
        Some(len)
    }

    /// A datagram to a spoofed source: a backend's answer that came back.
    pub fn on_datagram(&mut self, payload: &[u8]) {
        if let Some(class) = payload
            .strip_prefix(b"SIP/2.0 ")
            .and_then(|r| r.first())
            .filter(|c| (b'1'..=b'6').contains(c))
        {
            self.stats.responses[usize::from(class - b'1')] += 1;
        }
    }

    pub fn summary(&self, sending_s: f64) -> FloodSummary {
        let s = &self.stats;
        let total: u64 = s.sent.iter().sum();
        let hot: u64 = s.hot.iter().sum();
        let by_kind = |n: &[u64; 8]| {
            FloodKind::ALL
                .iter()
                .map(|k| (k.name().to_string(), n[*k as usize]))
                .collect()
        };
        FloodSummary {
            sent: by_kind(&s.sent),
            sent_hot: by_kind(&s.hot),
            total,
            hot,
            cold: total - hot,
            hot_sources: (0..self.cfg.hot_sources)
                .map(|i| self.cfg.hot_address(i).to_string())
                .collect(),
            cold_sources: self.cfg.sources,
            responses: (0..6)
                .map(|i| (format!("{}xx", i + 1), s.responses[i]))
                .collect(),
            build_failures: s.build_failures,
            pacer_skipped: s.pacer_skipped,
            sending_s,
        }
    }
}

/// Everything one flood request is made of.
struct Packet<'a> {
    kind: FloodKind,
    scanner_turn: u32,
    agent: Option<&'a str>,
    src_ip: Ipv4Addr,
    src_port: u16,
    dst_ip: Ipv4Addr,
    dst_port: u16,
    run: u32,
    seq: u64,
}

/// Writes the SIP text of `p` into `out`; `None` if it does not fit.
fn write_sip(p: &Packet<'_>, out: &mut [u8]) -> Option<usize> {
    let method: &[u8] = match p.kind {
        FloodKind::Invite | FloodKind::Reinvite => b"INVITE",
        FloodKind::Register => b"REGISTER",
        FloodKind::Ack => b"ACK",
        FloodKind::Bye => b"BYE",
        FloodKind::Cancel => b"CANCEL",
        FloodKind::Options => b"OPTIONS",
        FloodKind::Scanner => {
            [&b"OPTIONS"[..], b"REGISTER", b"INVITE"][p.scanner_turn as usize % 3]
        }
    };
    let register = method == b"REGISTER";
    let to_tag = matches!(
        p.kind,
        FloodKind::Reinvite | FloodKind::Ack | FloodKind::Bye
    );
    let user = p.seq % 10_000;
    let mut o = Out::new(out);
    o.put(method).put(b" sip:");
    if !register {
        o.put(b"u").dec(user).byte(b'@');
    }
    o.ip(p.dst_ip)
        .byte(b':')
        .dec(p.dst_port.into())
        .put(b" SIP/2.0\r\nVia: SIP/2.0/UDP ")
        .ip(p.src_ip)
        .byte(b':')
        .dec(p.src_port.into())
        .put(b";branch=z9hG4bK-fl")
        .hex(p.seq, 16)
        .put(b"\r\nMax-Forwards: 70\r\nFrom: <sip:u")
        .dec(user)
        .put(b"@flood.test>;tag=f")
        .hex(p.seq, 16)
        .put(b"\r\nTo: <sip:u")
        .dec(user)
        .put(b"@flood.test>");
    if to_tag {
        o.put(b";tag=t").hex(p.seq, 16);
    }
    o.put(b"\r\nCall-ID: flood-")
        .put(p.kind.name().as_bytes())
        .byte(b'-')
        .hex(p.run.into(), 8)
        .byte(b'-')
        .hex(p.seq, 16)
        .put(b"\r\nCSeq: ")
        .dec(if matches!(p.kind, FloodKind::Reinvite | FloodKind::Bye) {
            2
        } else {
            1
        })
        .byte(b' ')
        .put(method)
        .put(b"\r\n");
    if matches!(method, b"INVITE" | b"REGISTER") {
        o.put(b"Contact: <sip:u")
            .dec(user)
            .byte(b'@')
            .ip(p.src_ip)
            .byte(b':')
            .dec(p.src_port.into())
            .put(b">\r\n");
    }
    o.put(b"User-Agent: ")
        .put(p.agent.unwrap_or("siplb-gen-flood").as_bytes())
        .put(b"\r\nContent-Length: 0\r\n\r\n");
    o.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use siplb_core::sip::{Limits, Method, SipMessage};

    fn config(budget: u64) -> FloodConfig {
        FloodConfig {
            prefix: "198.19.0.0/16".parse().unwrap(),
            sources: 1000,
            hot_sources: 4,
            hot_share: 20,
            mix: FloodMix::parse(
                "invite=4,register=2,reinvite=1,ack=1,bye=1,cancel=1,options=1,scanner=1",
            )
            .unwrap(),
            src_port: 5060,
            dst_ip: Ipv4Addr::new(198, 18, 0, 2),
            dst_port: 5060,
            run: 0xabcd,
            budget,
        }
    }

    #[test]
    fn the_mix_parses_and_spreads_its_kinds() {
        let m = FloodMix::parse("invite=3,ack=1").unwrap();
        let s = m.schedule();
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|k| **k == FloodKind::Invite).count(), 3);
        assert!(FloodMix::parse("invite=0").is_err());
        assert!(FloodMix::parse("notify=1").is_err());
        assert!(FloodMix::parse("invite=20000").is_err());
    }

    #[test]
    fn sources_must_fit_the_prefix_and_hot_options_go_together() {
        let mut c = config(1);
        assert!(c.validate().is_ok());
        c.prefix = "198.19.0.0/23".parse().unwrap();
        assert!(c.validate().is_err());
        let mut c = config(1);
        c.hot_share = 0;
        assert!(c.validate().is_err());
    }

    /// Every packet parses with the balancer's own scanner as what it claims to be,
    /// comes from the prefix, and the counts add up to the budget.
    #[test]
    fn every_packet_parses_as_its_kind_and_the_counts_add_up() {
        let mut f = Flood::new(config(2000));
        let mut buf = [0u8; 2048];
        let (mut hot, mut scanners) = (0, 0);
        let hot_ips: Vec<Ipv4Addr> = (0..4).map(|i| f.cfg.hot_address(i)).collect();
        while let Some(n) = f.emit(MacAddr([2; 6]), MacAddr([4; 6]), &mut buf) {
            let crate::frame::Incoming::Udp { src, payload, .. } = frame::classify(&buf[..n])
            else {
                panic!("not UDP");
            };
            assert!(f.owns(src.ip));
            hot += usize::from(hot_ips.contains(&src.ip));
            let m = SipMessage::parse(payload, &Limits::default())
                .unwrap_or_else(|e| panic!("{e:?}\n{}", String::from_utf8_lossy(payload)));
            let cid = std::str::from_utf8(m.call_id()).unwrap();
            let kind = FloodKind::ALL
                .into_iter()
                .find(|k| cid.starts_with(&format!("flood-{}-", k.name())))
                .unwrap();
            let method = m.method().unwrap();
            let tagged = m.to().tag.is_some();
            match kind {
                FloodKind::Invite => assert!(method == Method::Invite && !tagged),
                FloodKind::Register => assert!(method == Method::Register && !tagged),
                FloodKind::Reinvite => assert!(method == Method::Invite && tagged),
                FloodKind::Ack => assert!(method == Method::Ack && tagged),
                FloodKind::Bye => assert!(method == Method::Bye && tagged),
                FloodKind::Cancel => assert!(method == Method::Cancel && !tagged),
                FloodKind::Options => assert_eq!(method, Method::Options),
                FloodKind::Scanner => {
                    scanners += 1;
                    let text = String::from_utf8_lossy(payload);
                    assert!(SCANNER_AGENTS.iter().any(|a| text.contains(a)), "{text}");
                }
            }
        }
        assert!(f.done());
        let s = f.summary(1.0);
        assert_eq!(s.total, 2000);
        assert_eq!(s.sent.values().sum::<u64>(), 2000);
        // 4 + 2 + 1 + 1 + 1 + 1 + 1 + 1 = 12 per round: 166 rounds and 8 more.
        let head = f.schedule[..8].iter().filter(|k| **k == FloodKind::Invite);
        assert_eq!(s.sent["invite"], 166 * 4 + head.count() as u64);
        assert_eq!(s.sent["scanner"], scanners);
        assert_eq!(s.hot, hot as u64);
        assert_eq!(s.sent_hot.values().sum::<u64>(), s.hot);
        // About 20 % from the hot sources.
        assert!((300..500).contains(&hot), "{hot}");
        assert_eq!(s.hot_sources[0], "198.19.3.233");
    }

    #[test]
    fn responses_are_counted_by_class() {
        let mut f = Flood::new(config(1));
        f.on_datagram(b"SIP/2.0 200 OK\r\n\r\n");
        f.on_datagram(b"SIP/2.0 404 Not here\r\n\r\n");
        f.on_datagram(b"INVITE sip:x SIP/2.0\r\n\r\n");
        let s = f.summary(0.0);
        assert_eq!((s.responses["2xx"], s.responses["4xx"]), (1, 1));
        assert_eq!(s.responses.values().sum::<u64>(), 2);
    }
}
