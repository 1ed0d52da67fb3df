//! The client: `calls` slots, each running one transaction or call at a time.
//!
//! A call is INVITE → 100/180/200 → ACK → BYE → 200 (ACK and BYE per the mix); a
//! registration REGISTER → 200; OPTIONS → 200. With a challenge the REGISTER or INVITE
//! is answered 401/407 first (the INVITE's is ACKed) and sent again with credentials.
//! Slots that have a request to send wait in the `ready` queue; the caller's pacer
//! decides how many go out per loop. Everything is allocated in `new`.
//!
//! With media (`ClientConfig::media`) a call is held after its ACK: its RTP stream goes
//! to the address the 200's SDP named until `release`, which sends the BYEs.

use crate::frame::{self, Endpoint};
use crate::media::{self, MediaSide};
use crate::options::Mix;
use crate::request::{self, Branch, Kind, Request};
use crate::scan;
use crate::stats::ClientStats;
use siplb_core::sip::Method;
use std::collections::VecDeque;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    pub src_ip: Ipv4Addr,
    pub src_ips: u32,
    pub src_port: u16,
    pub src_ports: u16,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
    pub users: u32,
    pub calls: u32,
    pub mix: Mix,
    /// INVITE frames are padded to this size (0: no padding).
    pub frame_size: usize,
    pub timeout_tsc: u64,
    /// Requests to send in all (`u64::MAX`: no budget). A call or registration starts
    /// only if its requests fit in what is left, so without losses exactly this many
    /// go out when it is a multiple of the calls' sizes.
    pub budget: u64,
    /// The responder challenges REGISTER and INVITE (each costs two more requests).
    pub challenge: bool,
    /// Distinguishes this run's Call-IDs.
    pub run: u32,
    pub tsc_hz: u64,
    /// RTP payload bytes per packet when calls carry media (`None`: signalling only).
    pub media: Option<usize>,
}

/// The next request a ready slot sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Start,
    Register,
    Invite,
    /// ACK of a 407 to the INVITE, then the INVITE again with credentials.
    AckChallenge,
    Ack,
    Bye,
    Options,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Ready(Next),
    Waiting(Kind),
    /// A call with media, established, until `release`.
    Held,
}

#[derive(Clone, Copy)]
struct Slot {
    phase: Phase,
    call: u64,
    user: u32,
    src_ip: Ipv4Addr,
    src_port: u16,
    cseq: u32,
    step: u32,
    auth: bool,
    sent_tsc: u64,
    to_tag: [u8; 32],
    to_tag_len: u8,
    /// Hash of the Call-ID (media: the streams' SSRCs).
    call_hash: u64,
    /// Where the 200's SDP said to send RTP.
    remote_media: Option<(Ipv4Addr, u16)>,
}

impl Slot {
    const IDLE: Slot = Slot {
        phase: Phase::Idle,
        call: 0,
        user: 0,
        src_ip: Ipv4Addr::UNSPECIFIED,
        src_port: 0,
        cseq: 0,
        step: 0,
        auth: false,
        sent_tsc: 0,
        to_tag: [0; 32],
        to_tag_len: 0,
        call_hash: 0,
        remote_media: None,
    };
}

pub struct Client {
    cfg: ClientConfig,
    slots: Vec<Slot>,
    ready: VecDeque<u32>,
    next_call: u64,
    /// Requests of the calls started so far (what they send when nothing is lost).
    reserved: u64,
    rng: u64,
    stopping: bool,
    /// Slots not idle.
    active: usize,
    /// Slots in `Phase::Held`.
    held: usize,
    pub stats: ClientStats,
    /// The calls' RTP streams, with `ClientConfig::media`.
    pub media: Option<MediaSide>,
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Self {
        let n = cfg.calls as usize;
        let mut ready = VecDeque::with_capacity(n);
        let mut slots = vec![Slot::IDLE; n];
        for (i, s) in slots.iter_mut().enumerate() {
            s.phase = Phase::Ready(Next::Start);
            ready.push_back(i as u32);
        }
        Client {
            cfg,
            slots,
            ready,
            next_call: 0,
            reserved: 0,
            rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(cfg.run),
            stopping: false,
            active: n,
            held: 0,
            stats: ClientStats::default(),
            media: cfg
                .media
                .map(|payload| MediaSide::new(media::CLIENT_RTP_BASE, n, payload)),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Whether `ip` is one of the client's source addresses.
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip).wrapping_sub(u32::from(self.cfg.src_ip)) < self.cfg.src_ips
    }

    /// Starts no new work from now on; what is in progress finishes or times out.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Everything finished (after `stop` or the budget).
    pub fn done(&self) -> bool {
        self.active == 0
    }

    /// Every call is held (or ended): with media, the streams are all up.
    pub fn settled(&self) -> bool {
        self.held == self.active
    }

    /// Calls held with media.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Ends the held calls: each sends its BYE next.
    pub fn release(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].phase == Phase::Held {
                self.make_ready(i as u32, Next::Bye);
            }
        }
        self.held = 0;
    }

    /// Handles a datagram to one of the client's addresses, at local port `port`: RTP
    /// of a call with media, else a SIP response.
    #[inline]
    pub fn on_datagram(&mut self, port: u16, payload: &[u8], now: u64) {
        match self.media.as_mut() {
            Some(m) if media::is_rtp(payload) => m.receive(port, payload),
            _ => self.on_response(payload, now),
        }
    }

    /// Slots waiting for a response.
    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.phase, Phase::Waiting(_)))
            .count()
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: cheap and good enough to pick from the mix.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn may_start(&self) -> bool {
        !self.stopping && self.reserved < self.cfg.budget
    }

    fn make_ready(&mut self, i: u32, next: Next) {
        self.slots[i as usize].phase = Phase::Ready(next);
        self.ready.push_back(i);
    }

    /// The slot's work is over: start a new call in it, or let it idle.
    fn finish(&mut self, i: u32) {
        if self.may_start() {
            self.make_ready(i, Next::Start);
        } else {
            self.slots[i as usize].phase = Phase::Idle;
            self.active -= 1;
        }
    }

    /// Picks what slot `i` does next and numbers the call; `None` (and the slot idles)
    /// when its requests would not fit in the budget.
    fn start(&mut self, i: u32) -> Option<Next> {
        let m = self.cfg.mix;
        let r = (self.random() % u64::from(m.total())) as u32;
        let next = if r < m.register {
            Next::Register
        } else if r < m.register + m.invite {
            Next::Invite
        } else {
            Next::Options
        };
        let challenge = u64::from(self.cfg.challenge);
        let cost = match next {
            Next::Register => 1 + challenge,
            Next::Invite => 1 + u64::from(m.ack) + u64::from(m.bye) + 2 * challenge,
            _ => 1,
        };
        if self.reserved + cost > self.cfg.budget {
            self.slots[i as usize].phase = Phase::Idle;
            self.active -= 1;
            return None;
        }
        self.reserved += cost;
        let call = self.next_call;
        self.next_call += 1;
        let sources = u64::from(self.cfg.src_ips) * u64::from(self.cfg.src_ports);
        let src = call % sources;
        let cfg = self.cfg;
        let call_hash = if cfg.media.is_some() {
            let mut id = [0u8; 64];
            let mut o = crate::text::Out::new(&mut id);
            request::write_call_id(&mut o, cfg.run, call);
            let n = o.finish().unwrap_or_default();
            siplb_core::hash::hash64(&id[..n])
        } else {
            0
        };
        let s = &mut self.slots[i as usize];
        *s = Slot {
            phase: Phase::Ready(next),
            call,
            user: (call % u64::from(cfg.users)) as u32,
            src_ip: Ipv4Addr::from(u32::from(cfg.src_ip) + (src % u64::from(cfg.src_ips)) as u32),
            src_port: cfg.src_port + (src / u64::from(cfg.src_ips)) as u16,
            cseq: 1,
            step: s.step,
            call_hash,
            ..Slot::IDLE
        };
        Some(next)
    }

    /// Builds the next request frame into `out` (from `src_mac` to `dst_mac`) and
    /// returns its length; `None` when no slot has anything to send.
    pub fn emit(
        &mut self,
        now: u64,
        src_mac: siplb_core::wire::MacAddr,
        dst_mac: siplb_core::wire::MacAddr,
        out: &mut [u8],
    ) -> Option<usize> {
        loop {
            let i = self.ready.pop_front()?;
            let Phase::Ready(mut next) = self.slots[i as usize].phase else {
                continue;
            };
            if next == Next::Start {
                if !self.may_start() {
                    self.slots[i as usize].phase = Phase::Idle;
                    self.active -= 1;
                    continue;
                }
                match self.start(i) {
                    Some(n) => next = n,
                    None => continue,
                }
            }
            let kind = match next {
                Next::Register => Kind::Register,
                Next::Invite => Kind::Invite,
                Next::AckChallenge | Next::Ack => Kind::Ack,
                Next::Bye => Kind::Bye,
                Next::Options => Kind::Options,
                Next::Start => unreachable!("started above"),
            };
            let cfg = self.cfg;
            let s = &mut self.slots[i as usize];
            s.step = s.step.wrapping_add(1);
            if kind == Kind::Bye {
                s.cseq += 1;
            }
            let req = Request {
                kind,
                src_ip: s.src_ip,
                src_port: s.src_port,
                dst_ip: cfg.dst_ip,
                dst_port: cfg.dst_port,
                run: cfg.run,
                call: s.call,
                user: s.user,
                cseq: s.cseq,
                branch: Branch {
                    tsc: now,
                    slot: i,
                    step: s.step,
                },
                to_tag: &s.to_tag[..usize::from(s.to_tag_len)],
                auth: s.auth,
                min_len: cfg.frame_size.saturating_sub(frame::HEADERS_LEN),
            };
            let Some(sip) = out.get_mut(frame::HEADERS_LEN..) else {
                self.stats.build_failures += 1;
                self.make_ready(i, next);
                return None;
            };
            let Some(n) = request::write(&req, sip) else {
                self.stats.build_failures += 1;
                self.make_ready(i, next);
                return None;
            };
            let len = frame::write_udp_headers(
                out,
                Endpoint {
                    mac: src_mac,
                    ip: s.src_ip,
                    port: s.src_port,
                },
                Endpoint {
                    mac: dst_mac,
                    ip: cfg.dst_ip,
                    port: cfg.dst_port,
                },
                n,
                s.step as u16,
            );
            s.sent_tsc = now;
            self.stats.sent[kind as usize] += 1;
            match next {
                // ACK gets no response: go on at once.
                Next::AckChallenge => {
                    s.cseq += 1;
                    self.make_ready(i, Next::Invite);
                }
                Next::Ack if cfg.media.is_some() => {
                    let (call, local_ip, hash) = (s.call, s.src_ip, s.call_hash);
                    let remote = s.remote_media;
                    s.phase = Phase::Held;
                    self.held += 1;
                    if let Some(m) = self.media.as_mut() {
                        match remote {
                            Some((ip, port)) => {
                                let (ours, theirs) = media::ssrcs(hash);
                                let to = Endpoint {
                                    mac: dst_mac,
                                    ip,
                                    port,
                                };
                                m.open((local_ip, m.port(call)), to, ours, theirs);
                            }
                            None => m.stats.no_sdp += 1,
                        }
                    }
                }
                Next::Ack if cfg.mix.bye => self.make_ready(i, Next::Bye),
                Next::Ack => {
                    self.stats.calls_completed += 1;
                    self.finish(i);
                }
                _ => s.phase = Phase::Waiting(kind),
            }
            return Some(len);
        }
    }

    /// Handles a datagram that arrived for one of the client's addresses.
    pub fn on_response(&mut self, payload: &[u8], now: u64) {
        let Some(m) = scan::response(payload) else {
            self.stats.stray += 1;
            return;
        };
        let code = m.code;
        self.stats.count_response(code);
        let Some(b) = m.branch.and_then(Branch::parse) else {
            self.stats.stray += 1;
            return;
        };
        let i = b.slot;
        let Some(s) = self.slots.get_mut(i as usize) else {
            self.stats.stray += 1;
            return;
        };
        let Phase::Waiting(kind) = s.phase else {
            if code >= 200 {
                self.stats.stray += 1;
            }
            return;
        };
        if s.step != b.step || m.cseq_method != method_of(kind) {
            if code >= 200 {
                self.stats.stray += 1;
            }
            return;
        }
        if code < 200 {
            return;
        }
        self.stats.answered += 1;
        let ticks = now.saturating_sub(b.tsc);
        let ns = (u128::from(ticks) * 1_000_000_000 / u128::from(self.cfg.tsc_hz.max(1))) as u64;
        let _ = self.stats.latency_ns.record(ns.max(1));
        let challenged =
            (code == 401 && kind == Kind::Register) || (code == 407 && kind == Kind::Invite);
        if challenged && !s.auth {
            s.auth = true;
            if kind == Kind::Register {
                s.cseq += 1;
                self.make_ready(i, Next::Register);
            } else {
                keep_to_tag(s, &m);
                self.make_ready(i, Next::AckChallenge);
            }
            return;
        }
        if !(200..300).contains(&code) {
            self.stats.failed += 1;
            self.finish(i);
            return;
        }
        match kind {
            Kind::Invite => {
                keep_to_tag(s, &m);
                if self.cfg.media.is_some() {
                    s.remote_media = media::sdp_audio(media::body_of(payload));
                }
                let mix = self.cfg.mix;
                if mix.ack {
                    self.make_ready(i, Next::Ack);
                } else if mix.bye {
                    self.make_ready(i, Next::Bye);
                } else {
                    self.stats.calls_completed += 1;
                    self.finish(i);
                }
            }
            Kind::Bye => {
                self.stats.calls_completed += 1;
                self.finish(i);
            }
            Kind::Register => {
                self.stats.registrations_completed += 1;
                self.finish(i);
            }
            Kind::Options => {
                self.stats.options_completed += 1;
                self.finish(i);
            }
            Kind::Ack => self.finish(i),
        }
    }

    /// Gives up on transactions older than the timeout (each counts once).
    pub fn expire(&mut self, now: u64) {
        let limit = self.cfg.timeout_tsc;
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if matches!(s.phase, Phase::Waiting(_)) && now.saturating_sub(s.sent_tsc) > limit {
                self.stats.timeouts += 1;
                self.finish(i as u32);
            }
        }
    }
}

fn method_of(k: Kind) -> Method {
    match k {
        Kind::Register => Method::Register,
        Kind::Invite => Method::Invite,
        Kind::Ack => Method::Ack,
        Kind::Bye => Method::Bye,
        Kind::Options => Method::Options,
    }
}

fn keep_to_tag(s: &mut Slot, m: &scan::Response<'_>) {
    let tag = m.to_tag.unwrap_or_default();
    let n = tag.len().min(s.to_tag.len());
    s.to_tag[..n].copy_from_slice(&tag[..n]);
    s.to_tag_len = n as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Incoming;
    use crate::responder::{Action, Responder, ResponderConfig};
    use siplb_core::sip::{Limits, SipMessage};
    use siplb_core::wire::MacAddr;

    const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
    const LB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn config(mix: &str, calls: u32, budget: u64) -> ClientConfig {
        ClientConfig {
            src_ip: Ipv4Addr::new(198, 18, 0, 10),
            src_ips: 2,
            src_port: 5070,
            src_ports: 3,
            dst_ip: Ipv4Addr::new(198, 18, 0, 2),
            dst_port: 5060,
            users: 10,
            calls,
            mix: Mix::parse(mix).unwrap(),
            frame_size: 0,
            timeout_tsc: 1000,
            budget,
            challenge: false,
            run: 7,
            tsc_hz: 1_000_000_000,
            media: None,
        }
    }

    /// Client and responder wired back to back, as a balancer would: each request is
    /// delivered to backend `call % 3`, each response back to the client.
    fn run_loop(client: &mut Client, responder: &mut Responder, drop_every: Option<u64>) -> u64 {
        let mut now = 1;
        let mut out = vec![0u8; 2048];
        let mut resp = vec![0u8; 2048];
        let mut n_sent = 0u64;
        while !client.done() && now < 1_000_000 {
            now += 10;
            while let Some(len) = client.emit(now, CLIENT_MAC, LB_MAC, &mut out) {
                n_sent += 1;
                if drop_every.is_some_and(|d| n_sent.is_multiple_of(d)) {
                    continue;
                }
                // The "balancer": rewrite the destination to a backend by Call-ID.
                let Incoming::Udp { src, payload, .. } = frame::classify(&out[..len]) else {
                    panic!("client sent a non-UDP frame");
                };
                let m = SipMessage::parse(payload, &Limits::default()).unwrap();
                let backend = siplb_core::hash::hash64(m.call_id()) % 3;
                let mut fwd = vec![0u8; 2048];
                fwd[frame::HEADERS_LEN..frame::HEADERS_LEN + payload.len()]
                    .copy_from_slice(payload);
                let dst = Endpoint {
                    mac: MacAddr([2, 0, 0, 0, 1, 1]),
                    ip: Ipv4Addr::new(198, 18, 1, 11 + backend as u8),
                    port: 5060,
                };
                let flen = frame::write_udp_headers(
                    &mut fwd,
                    Endpoint { mac: LB_MAC, ..src },
                    dst,
                    payload.len(),
                    0,
                );
                if let Action::Answer(a) = responder.handle(frame::classify(&fwd[..flen])) {
                    for &code in a.codes {
                        let rl = responder.write(&a, code, dst.mac, &mut resp).unwrap();
                        let Incoming::Udp {
                            dst: to, payload, ..
                        } = frame::classify(&resp[..rl])
                        else {
                            panic!();
                        };
                        assert!(client.owns(to.ip));
                        client.on_response(payload, now + 5);
                    }
                }
            }
            client.expire(now);
        }
        now
    }

    fn responder(challenge: bool) -> Responder {
        Responder::new(
            ResponderConfig {
                first_backend: Ipv4Addr::new(198, 18, 1, 11),
                backends: 3,
                sip_port: 5060,
                challenge,
                media: None,
            },
            64,
        )
    }

    #[test]
    fn calls_run_invite_ack_bye_and_stop_at_the_budget() {
        let mut c = Client::new(config("invite=1,ack=1,bye=1", 4, 30));
        let mut r = responder(false);
        run_loop(&mut c, &mut r, None);
        assert!(c.done());
        let s = &c.stats;
        assert_eq!(s.sent[Kind::Invite as usize], 10);
        assert_eq!(s.sent[Kind::Ack as usize], 10);
        assert_eq!(s.sent[Kind::Bye as usize], 10);
        assert_eq!(s.calls_completed, 10);
        assert_eq!(s.answered, 20);
        assert_eq!((s.timeouts, s.failed, s.stray), (0, 0, 0));
        assert_eq!(s.received[0..3], [10, 10, 20]);
        assert_eq!(s.latency_ns.len(), 20);
        assert_eq!(s.latency_ns.max(), 5);
        assert_eq!(r.stickiness.split_dialogs, 0);
        assert_eq!(r.stats.received[Kind::Ack as usize], 10);
        // Sources cycle over 2 addresses x 3 ports.
        assert_eq!(r.stickiness.call_ids, 10);
    }

    #[test]
    fn challenges_are_answered_with_credentials() {
        let mut cfg = config("register=1,invite=1,ack=1,bye=1", 3, 60);
        cfg.challenge = true;
        let mut c = Client::new(cfg);
        let mut r = responder(true);
        run_loop(&mut c, &mut r, None);
        let s = &c.stats;
        assert_eq!(
            s.received[3],
            s.sent[Kind::Register as usize] / 2,
            "one 401 per registration"
        );
        assert_eq!(
            s.received[4] as usize * 2,
            s.sent[Kind::Invite as usize] as usize
        );
        assert_eq!(
            s.registrations_completed + s.calls_completed,
            s.received[3] + s.received[4]
        );
        assert_eq!((s.timeouts, s.failed, s.stray), (0, 0, 0));
        assert_eq!(r.stats.challenges, s.received[3] + s.received[4]);
    }

    #[test]
    fn lost_requests_time_out_and_are_counted_once() {
        let mut c = Client::new(config("options=1", 2, 50));
        let mut r = responder(false);
        run_loop(&mut c, &mut r, Some(10));
        let s = &c.stats;
        assert_eq!(s.requests(), 50);
        assert_eq!(s.timeouts, 5);
        assert_eq!(s.answered, 45);
        assert_eq!(s.options_completed, 45);
    }

    #[test]
    fn stop_ends_new_work() {
        let mut c = Client::new(config("options=1", 2, u64::MAX));
        let mut out = vec![0u8; 2048];
        assert!(c.emit(1, CLIENT_MAC, LB_MAC, &mut out).is_some());
        c.stop();
        assert!(c.emit(1, CLIENT_MAC, LB_MAC, &mut out).is_none());
        assert!(!c.done());
        c.expire(5000);
        assert!(c.done());
        assert_eq!(c.stats.timeouts, 1);
    }

    /// A media relay in dnat, as siplb's: it rewrites each SDP to name a leg of its own
    /// on the VIP and forwards RTP sent to a leg to the endpoint the other side's SDP
    /// named.
    #[derive(Default)]
    struct Relay {
        /// Leg port on the VIP → where its packets go.
        legs: std::collections::HashMap<u16, Endpoint>,
        next_leg: u16,
    }

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    impl Relay {
        /// `msg` with its SDP naming a new leg on the VIP (Content-Length fixed up);
        /// the leg forwards to the address the SDP named, at `mac`.
        fn rewrite_sdp(&mut self, msg: &[u8], mac: MacAddr) -> Vec<u8> {
            let (ip, port) = media::sdp_audio(media::body_of(msg)).expect("an SDP");
            let leg = 40_000 + 2 * self.next_leg;
            self.next_leg += 1;
            self.legs.insert(leg, Endpoint { mac, ip, port });
            let mut body = [0u8; 256];
            let n = media::write_sdp(&mut body, 1, VIP, leg).unwrap();
            let head_len = msg.len() - media::body_of(msg).len();
            let head = String::from_utf8_lossy(&msg[..head_len]);
            let head: String = head
                .split_inclusive("\r\n")
                .map(|l| {
                    if l.starts_with("Content-Length:") {
                        format!("Content-Length: {n}\r\n")
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            [head.as_bytes(), &body[..n]].concat()
        }

        /// An RTP frame sent to a leg, forwarded from the VIP to the leg's endpoint.
        fn forward(&self, frame: &[u8]) -> (Endpoint, Vec<u8>) {
            let Incoming::Udp { dst, payload, .. } = frame::classify(frame) else {
                panic!("not UDP");
            };
            assert_eq!(dst.ip, VIP, "RTP goes to the relay, as the SDP said");
            let to = self.legs[&dst.port];
            let mut out = vec![0u8; frame::HEADERS_LEN + payload.len()];
            out[frame::HEADERS_LEN..].copy_from_slice(payload);
            let from = Endpoint {
                mac: LB_MAC,
                ip: VIP,
                port: dst.port,
            };
            frame::write_udp_headers(&mut out, from, to, payload.len(), 0);
            (to, out)
        }
    }

    #[test]
    fn media_calls_stream_both_ways_where_the_received_sdp_says() {
        const BACKEND_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
        let mut cfg = config("invite=1,ack=1,bye=1", 4, 12);
        cfg.media = Some(160);
        let mut c = Client::new(cfg);
        let mut r = Responder::new(
            ResponderConfig {
                first_backend: Ipv4Addr::new(198, 18, 1, 11),
                backends: 1,
                sip_port: 5060,
                challenge: false,
                media: Some(160),
            },
            4,
        );
        let mut relay = Relay::default();
        // SIP through the relay: requests to the one backend, responses back; each SDP
        // rewritten to name a relay leg.
        let sip = |c: &mut Client, r: &mut Responder, relay: &mut Relay, now: u64| {
            let (mut out, mut resp) = (vec![0u8; 2048], vec![0u8; 2048]);
            while let Some(len) = c.emit(now, CLIENT_MAC, LB_MAC, &mut out) {
                let Incoming::Udp { src, payload, .. } = frame::classify(&out[..len]) else {
                    panic!();
                };
                let payload = if payload.starts_with(b"INVITE") {
                    relay.rewrite_sdp(payload, CLIENT_MAC)
                } else {
                    payload.to_vec()
                };
                let mut fwd = vec![0u8; frame::HEADERS_LEN + payload.len()];
                fwd[frame::HEADERS_LEN..].copy_from_slice(&payload);
                let backend = Endpoint {
                    mac: BACKEND_MAC,
                    ip: Ipv4Addr::new(198, 18, 1, 11),
                    port: 5060,
                };
                let n = frame::write_udp_headers(
                    &mut fwd,
                    Endpoint { mac: LB_MAC, ..src },
                    backend,
                    payload.len(),
                    0,
                );
                let Action::Answer(a) = r.handle(frame::classify(&fwd[..n])) else {
                    panic!("no answer");
                };
                for &code in a.codes {
                    let rl = r.write(&a, code, BACKEND_MAC, &mut resp).unwrap();
                    let Incoming::Udp { dst, payload, .. } = frame::classify(&resp[..rl]) else {
                        panic!();
                    };
                    let payload = if code == 200 && payload.ends_with(b"PCMU/8000\r\n") {
                        relay.rewrite_sdp(payload, BACKEND_MAC)
                    } else {
                        payload.to_vec()
                    };
                    c.on_datagram(dst.port, &payload, now + 5);
                }
            }
        };
        let mut now = 1;
        while !c.settled() {
            now += 10;
            sip(&mut c, &mut r, &mut relay, now);
        }
        assert_eq!((c.held(), c.stats.calls_completed), (4, 0));
        let legs = |m: &Option<MediaSide>| m.as_ref().unwrap().stats.legs;
        assert_eq!((legs(&c.media), legs(&r.media)), (4, 4));
        let mut out = vec![0u8; 2048];
        // RTP: 10 packets per stream each way, each through the relay.
        for _ in 0..40 {
            let n = c
                .media
                .as_mut()
                .unwrap()
                .emit(CLIENT_MAC, &mut out)
                .unwrap();
            let (to, f) = relay.forward(&out[..n]);
            assert!(matches!(r.handle(frame::classify(&f)), Action::Ignore));
            assert_eq!(to.mac, BACKEND_MAC);
            let n = r
                .media
                .as_mut()
                .unwrap()
                .emit(BACKEND_MAC, &mut out)
                .unwrap();
            let (to, f) = relay.forward(&out[..n]);
            let Incoming::Udp { dst, payload, .. } = frame::classify(&f) else {
                panic!();
            };
            assert!(c.owns(dst.ip) && to.mac == CLIENT_MAC);
            c.on_datagram(dst.port, payload, now);
        }
        let (cs, rs) = (
            c.media.as_ref().unwrap().stats,
            r.media.as_ref().unwrap().stats,
        );
        assert_eq!((cs.sent, rs.received, rs.misdelivered), (40, 40, 0));
        assert_eq!((rs.sent, cs.received, cs.misdelivered), (40, 40, 0));
        assert_eq!(c.stats.stray, 0);
        c.release();
        while !c.done() && now < 10_000 {
            now += 10;
            sip(&mut c, &mut r, &mut relay, now);
        }
        assert!(c.done());
        assert_eq!(c.stats.calls_completed, 4);
        assert_eq!(c.stats.sent[Kind::Bye as usize], 4);
        assert_eq!(r.stats.received[Kind::Bye as usize], 4);
    }
}
