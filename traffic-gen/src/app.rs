//! siplb-gen on DPDK: EAL, the ports, and the one loop that runs the client and the
//! responder on the main lcore: rx burst → classify → answer / account → paced
//! requests → paced RTP (media mode) → tx burst.

use crate::client::{Client, ClientConfig};
use crate::flood::Flood;
use crate::frame::{self, Incoming};
use crate::options::{Mix, Mode, Options};
use crate::pacer::Pacer;
use crate::responder::{Action, Responder, ResponderConfig};
use crate::stats::{MediaSummary, PortSummary, Summary};
use anyhow::{bail, Context, Result};
use dpdk::eal::Eal;
use dpdk::lcore;
use dpdk::mbuf::{Burst, Mbuf};
use dpdk::mempool::Mempool;
use dpdk::port::{Port, TxBuffer};
use runtime::stop::{self, STOP};
use siplb_core::wire::arp;
use siplb_core::wire::MacAddr;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const BURST: usize = 32;
const DESCRIPTORS: u16 = 1024;
const MBUF_DATA_ROOM: u16 = 2048 + 128;
/// Without --duration or --budget the client stops after this long.
const DEFAULT_DURATION_S: f64 = 10.0;
/// Media mode: after the last RTP packet, wait this long for what is still in the
/// rings before ending the calls.
const RTP_DRAIN_MS: u64 = 100;

/// A port in use, with its TX buffer and counters of frames it could not send.
struct PortCtx {
    port: Port,
    mac: MacAddr,
    tx: TxBuffer,
    tx_dropped: u64,
}

impl PortCtx {
    fn send(&mut self, m: Mbuf) {
        if self.tx.is_full() {
            self.tx_dropped += self.tx.flush(&self.port, 0).dropped as u64;
        }
        self.tx.push(m);
    }

    fn flush(&mut self) {
        self.tx_dropped += self.tx.flush(&self.port, 0).dropped as u64;
    }
}

/// Allocates an mbuf, lets `write` fill up to its capacity, and trims it to what was
/// written; `None` if the pool is empty or nothing was written.
fn build(pool: &Mempool, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> Option<Mbuf> {
    let mut m = pool.alloc()?;
    let cap = m.capacity().min(usize::from(u16::MAX));
    if !m.set_len(cap) {
        return None;
    }
    let n = write(m.data_mut())?;
    m.set_len(n).then_some(m)
}

/// Runs the generator; whatever happens after the EAL is up, the ports are stopped
/// and the EAL cleaned up (its hugepage files removed) before returning.
pub fn run(eal_args: &[String], opts: Options) -> Result<Summary> {
    opts.validate().map_err(anyhow::Error::msg)?;
    let eal =
        Eal::init(eal_args).context("DPDK EAL initialisation failed (its messages are above)")?;
    let mut started: Vec<Port> = Vec::new();
    let result = run_on(&eal, &opts, &mut started);
    for p in &started {
        p.stop();
    }
    eal.cleanup();
    result
}

fn run_on(eal: &Eal, opts: &Options, started_ports: &mut Vec<Port>) -> Result<Summary> {
    let mut generator = Generator::start(eal, opts, started_ports)?;
    let end = loop {
        let now = lcore::tsc();
        if generator.poll_once(now) {
            break now;
        }
    };
    Ok(generator.summary(end))
}

/// Where the media mode is: calls being set up, RTP for --duration, the drain, then
/// the calls' BYEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaPhase {
    Setup,
    Sending { until: u64 },
    Draining { until: u64 },
    Ended,
}

/// The RTP clock of the media mode; the streams themselves are the client's and the
/// responder's `MediaSide`s.
struct MediaRun {
    phase: MediaPhase,
    pacer: Pacer,
    /// TSC of the first and of the last RTP packet sent.
    first: Option<u64>,
    last: u64,
    /// The next packet goes from the client (else from the backends).
    client_turn: bool,
    pacer_skipped: u64,
    build_failures: u64,
}

/// The client and/or the responder on their ports, and the clocks of the loop. One
/// `poll_once` is one turn: rx burst → classify → answer / account → gratuitous ARP
/// → ARP or paced requests → tx burst → stats line.
struct Generator<'o> {
    opts: &'o Options,
    pool: Mempool,
    ports: Vec<PortCtx>,
    /// The client and the index in `ports` of its port.
    client: Option<(Client, usize)>,
    /// The responder and the index in `ports` of the backends' port.
    responder: Option<(Responder, usize)>,
    /// The flood (`--mode flood`) and the index in `ports` of its port.
    flood: Option<(Flood, usize)>,
    /// With --rtp-streams.
    media: Option<MediaRun>,
    rx: Burst<BURST>,
    hz: u64,
    /// TSC ticks per millisecond.
    ms: u64,
    /// The client stops (or a lone responder ends) this long after the first request.
    duration: Option<f64>,
    budget: u64,
    idle_sleep: Duration,
    /// The peer's MAC: given, or learnt by ARP.
    dst_mac: Option<MacAddr>,
    /// No request before this TSC: the peer settles (learns the backends) first.
    warmup_until: Option<u64>,
    /// TSC at start, and when the pacer and the clock of --duration started (with the
    /// first request).
    t0: u64,
    started: Option<(u64, Pacer)>,
    last_send: u64,
    /// A stop was asked for (SIGINT/SIGTERM).
    stopped: bool,
    next_arp: u64,
    announcements: u32,
    next_announce: u64,
    next_expire: u64,
    stats_every: Option<u64>,
    next_stats: u64,
    /// (TSC, requests, responses) of the last stats line.
    last_stats: (u64, u64, u64),
}

impl<'o> Generator<'o> {
    /// Starts the ports the mode needs (recorded in `started_ports`, which the caller
    /// stops), waits for their links and builds the client and the responder.
    fn start(eal: &Eal, opts: &'o Options, started_ports: &mut Vec<Port>) -> Result<Self> {
        let nports = eal.port_count();
        let flood_on = opts.mode == Mode::Flood;
        let client_on = matches!(opts.mode, Mode::Client | Mode::Both);
        let responder_on = matches!(opts.mode, Mode::Responder | Mode::Both);
        for (on, p, what) in [
            (client_on || flood_on, opts.client_port, "--client-port"),
            (responder_on, opts.backend_port, "--backend-port"),
        ] {
            if on && p >= nports {
                bail!("{what} {p}: DPDK found {nports} port(s) (give them with --vdev or -a)");
            }
        }
        let pool = Mempool::create("siplb_gen_pkt", opts.mbufs, 256, MBUF_DATA_ROOM, -1)
            .context("creating the packet pool: lower --mbufs or reserve more hugepages")?;
        let mut ids: Vec<u16> = Vec::new();
        if client_on || flood_on {
            ids.push(opts.client_port);
        }
        if responder_on && !ids.contains(&opts.backend_port) {
            ids.push(opts.backend_port);
        }
        let mut ports = Vec::new();
        for &id in &ids {
            let port = Port::start(id, 1, DESCRIPTORS, pool, 1500)
                .with_context(|| format!("starting port {id}"))?;
            started_ports.push(port);
            ports.push(PortCtx {
                port,
                mac: port.mac(),
                tx: TxBuffer::default(),
                tx_dropped: 0,
            });
        }
        let index_of = |id: u16| ids.iter().position(|&i| i == id).expect("started");

        stop::on_signals();
        wait_for_links(&ports, opts.link_timeout)?;

        let hz = lcore::tsc_hz();
        let run_id = (lcore::tsc() >> 8) as u32 ^ std::process::id();
        let media = opts.rtp_streams > 0;
        // Media: one call per stream, each INVITE, ACK and (after the RTP) BYE, and an
        // INVITE and its ACK more when challenged.
        let (calls, mix, budget) = if media {
            let mix = Mix::parse("invite=1,ack=1,bye=1").expect("a valid mix");
            let per_call = 3 + 2 * u64::from(opts.challenge);
            (
                opts.rtp_streams,
                mix,
                per_call * u64::from(opts.rtp_streams),
            )
        } else {
            (opts.calls, opts.mix, opts.budget.unwrap_or(u64::MAX))
        };
        let rtp_payload = media.then_some(opts.rtp_payload);
        let client = client_on.then(|| {
            let c = Client::new(ClientConfig {
                src_ip: opts.src_ip,
                src_ips: opts.src_ips,
                src_port: opts.src_port,
                src_ports: opts.src_ports,
                dst_ip: opts.dst_ip,
                dst_port: opts.dst_port,
                users: opts.users,
                calls,
                mix,
                frame_size: opts.payload,
                timeout_tsc: opts.timeout_ms * hz / 1000,
                budget,
                challenge: opts.challenge,
                run: run_id,
                tsc_hz: hz,
                media: rtp_payload,
            });
            (c, index_of(opts.client_port))
        });
        let responder = responder_on.then(|| {
            let r = Responder::new(
                ResponderConfig {
                    first_backend: opts.backend_ip,
                    backends: opts.backends,
                    sip_port: opts.backend_sip_port,
                    challenge: opts.challenge,
                    media: rtp_payload,
                },
                calls as usize,
            );
            (r, index_of(opts.backend_port))
        });
        let flood = flood_on.then(|| {
            let f = Flood::new(opts.flood_config(run_id, opts.budget.unwrap_or(u64::MAX)));
            (f, index_of(opts.client_port))
        });
        let stats_every =
            (opts.stats_interval > 0.0).then_some((opts.stats_interval * hz as f64) as u64);
        let t0 = lcore::tsc();
        Ok(Generator {
            opts,
            pool,
            ports,
            client,
            responder,
            flood,
            media: media.then(|| MediaRun {
                phase: MediaPhase::Setup,
                pacer: Pacer::new(t0, hz, opts.rtp_pps),
                first: None,
                last: t0,
                client_turn: true,
                pacer_skipped: 0,
                build_failures: 0,
            }),
            rx: Burst::default(),
            hz,
            ms: hz / 1000,
            duration: match (opts.duration, opts.budget) {
                (Some(d), _) => Some(d),
                (None, None) if client_on || flood_on => Some(DEFAULT_DURATION_S),
                _ => None,
            },
            budget,
            idle_sleep: Duration::from_micros(opts.idle_sleep_us),
            dst_mac: opts.dst_mac,
            warmup_until: opts.dst_mac.map(|_| t0 + opts.warmup_ms * hz / 1000),
            t0,
            started: None,
            last_send: t0,
            stopped: false,
            next_arp: t0,
            announcements: 0,
            next_announce: t0,
            next_expire: t0,
            stats_every,
            next_stats: t0 + stats_every.unwrap_or(u64::MAX / 2),
            last_stats: (t0, 0, 0),
        })
    }

    /// One turn of the loop at TSC `now`; true once the run is finished.
    fn poll_once(&mut self, now: u64) -> bool {
        if STOP.load(Ordering::Relaxed) && !self.stopped {
            self.stopped = true;
            if let Some((f, _)) = self.flood.as_mut() {
                f.stop();
            }
            if let Some((c, _)) = self.client.as_mut() {
                c.stop();
                // Held calls end now (their BYEs go out).
                if let Some(run) = self.media.as_mut() {
                    run.phase = MediaPhase::Ended;
                    c.release();
                }
            }
        }
        let mut busy = false;
        for px in 0..self.ports.len() {
            let n = self.ports[px].port.rx_burst(0, &mut self.rx);
            busy |= n > 0;
            for i in 0..n {
                self.rx.prefetch(i + 2);
                if let Some(m) = self.rx.take(i) {
                    self.receive(px, &m, now);
                }
            }
            self.rx.clear();
        }
        self.announce_backends(now);
        busy |= self.send_requests(now);
        busy |= self.send_flood(now);
        busy |= self.send_media(now);
        for p in &mut self.ports {
            p.flush();
        }
        if now >= self.next_stats {
            self.next_stats = now + self.stats_every.unwrap_or(u64::MAX / 2);
            self.print_stats(now);
        }
        if !busy && !self.idle_sleep.is_zero() {
            std::thread::sleep(self.idle_sleep);
        }
        self.finished(now)
    }

    /// A frame that arrived on port `px`: for the responder if it is the backends'
    /// port and the responder wants it, else for the client if it is the client's.
    fn receive(&mut self, px: usize, m: &Mbuf, now: u64) {
        let incoming = frame::classify(m.data());
        if let Some((r, bx)) = self.responder.as_mut() {
            if px == *bx && r.wants(&incoming) {
                let action = r.handle(incoming);
                answer(r, action, &self.pool, &mut self.ports[px]);
                return;
            }
        }
        if self.requests_port() != Some(px) {
            return;
        }
        match incoming {
            Incoming::Udp { dst, payload, .. } => {
                if let Some((c, _)) = self.client.as_mut().filter(|(c, _)| c.owns(dst.ip)) {
                    c.on_datagram(dst.port, payload, now)
                } else if let Some((f, _)) = self.flood.as_mut().filter(|(f, _)| f.owns(dst.ip)) {
                    f.on_datagram(payload)
                }
            }
            Incoming::Arp {
                op,
                sender_mac,
                sender_ip,
                target_ip,
            } => {
                // The flood answers for its own address only (the balancer's gateway
                // to the spoofed sources), never for the spoofed ones.
                let ours = match &self.client {
                    Some((c, _)) => c.owns(target_ip),
                    None => target_ip == self.opts.src_ip,
                };
                let pc = &mut self.ports[px];
                if op == arp::OP_REQUEST && ours {
                    let mac = pc.mac;
                    if let Some(f) = build(&self.pool, |b| {
                        Some(frame::write_arp_reply(
                            b, mac, target_ip, sender_mac, sender_ip,
                        ))
                    }) {
                        pc.send(f);
                    }
                }
                if sender_ip == self.opts.dst_ip && self.dst_mac.is_none() {
                    self.dst_mac = Some(sender_mac);
                    self.warmup_until = Some(now + self.opts.warmup_ms * self.ms);
                    println!("siplb-gen: {} is at {sender_mac}", self.opts.dst_ip);
                }
            }
            _ => {}
        }
    }

    /// Announces the backends (gratuitous ARP) a few times at start.
    fn announce_backends(&mut self, now: u64) {
        let Some((r, bx)) = self.responder.as_ref() else {
            return;
        };
        if self.announcements >= 3 || now < self.next_announce {
            return;
        }
        self.announcements += 1;
        self.next_announce = now + 500 * self.ms;
        let port = &mut self.ports[*bx];
        let mac = port.mac;
        for b in 0..r.config().backends {
            let ip = r.backend_ip(b);
            if let Some(f) = build(&self.pool, |buf| {
                Some(frame::write_arp_request(buf, mac, ip, ip))
            }) {
                port.send(f);
            }
        }
    }

    /// The port requests leave by: the client's or the flood's.
    fn requests_port(&self) -> Option<usize> {
        let client = self.client.as_ref().map(|(_, x)| *x);
        client.or(self.flood.as_ref().map(|(_, x)| *x))
    }

    /// The peer's MAC once requests may go to it: ARPs for it on port `px` until it
    /// answers, then waits out the warm-up.
    fn peer_ready(&mut self, px: usize, now: u64) -> Option<MacAddr> {
        match self.dst_mac {
            None => {
                if now >= self.next_arp {
                    self.next_arp = now + 200 * self.ms;
                    let port = &mut self.ports[px];
                    let mac = port.mac;
                    let (src, dst) = (self.opts.src_ip, self.opts.dst_ip);
                    if let Some(f) = build(&self.pool, |b| {
                        Some(frame::write_arp_request(b, mac, src, dst))
                    }) {
                        port.send(f);
                    }
                }
                None
            }
            // Let the peer settle (learn the backends, finish its own ARP) first.
            Some(_) if now < self.warmup_until.unwrap_or(0) => None,
            Some(dmac) => Some(dmac),
        }
    }

    /// The client's turn: ARP for the peer until it answers, wait out the warm-up, then
    /// send what the pacer allows and expire what timed out. True if it sent requests.
    fn send_requests(&mut self, now: u64) -> bool {
        let Some(cx) = self.client.as_ref().map(|(_, x)| *x) else {
            return false;
        };
        let Some(dmac) = self.peer_ready(cx, now) else {
            return false;
        };
        let Some((c, _)) = self.client.as_mut() else {
            return false;
        };
        let port = &mut self.ports[cx];
        let (hz, rate) = (self.hz, self.opts.rate);
        let (start, pacer) = self.started.get_or_insert_with(|| {
            println!("siplb-gen: sending");
            (now, Pacer::new(now, hz, rate))
        });
        // With media, --duration is the RTP's (`send_media`).
        if let Some(d) = self.duration.filter(|_| self.media.is_none()) {
            if now - *start > (d * hz as f64) as u64 {
                c.stop();
            }
        }
        c.stats.pacer_skipped += pacer.forgive(now);
        let allowed = pacer.allowance(now, BURST);
        let smac = port.mac;
        let mut sent = 0;
        while sent < allowed {
            let Some(mut m) = self.pool.alloc() else {
                c.stats.build_failures += 1;
                break;
            };
            let cap = m.capacity().min(usize::from(u16::MAX));
            m.set_len(cap);
            let Some(n) = c.emit(now, smac, dmac, m.data_mut()) else {
                break;
            };
            m.set_len(n);
            port.send(m);
            sent += 1;
        }
        pacer.consume(sent);
        if sent > 0 {
            self.last_send = now;
        }
        if now >= self.next_expire {
            self.next_expire = now + 10 * self.ms;
            c.expire(now);
        }
        sent > 0
    }

    /// The flood's turn: once the peer is known, what the pacer allows until the budget
    /// or --duration is spent. True if it sent packets.
    fn send_flood(&mut self, now: u64) -> bool {
        let Some(px) = self.flood.as_ref().map(|(_, x)| *x) else {
            return false;
        };
        let Some(dmac) = self.peer_ready(px, now) else {
            return false;
        };
        let (hz, rate) = (self.hz, self.opts.rate);
        let (start, pacer) = self.started.get_or_insert_with(|| {
            println!("siplb-gen: flooding");
            (now, Pacer::new(now, hz, rate))
        });
        let Some((f, _)) = self.flood.as_mut() else {
            return false;
        };
        if let Some(d) = self.duration {
            if now - *start > (d * hz as f64) as u64 {
                f.stop();
            }
        }
        f.stats.pacer_skipped += pacer.forgive(now);
        let allowed = pacer.allowance(now, BURST);
        let port = &mut self.ports[px];
        let smac = port.mac;
        let mut sent = 0;
        while sent < allowed && !f.done() {
            let Some(mut m) = self.pool.alloc() else {
                f.stats.build_failures += 1;
                break;
            };
            let cap = m.capacity().min(usize::from(u16::MAX));
            m.set_len(cap);
            let Some(n) = f.emit(smac, dmac, m.data_mut()) else {
                f.stats.build_failures += 1;
                break;
            };
            m.set_len(n);
            port.send(m);
            sent += 1;
        }
        pacer.consume(sent);
        if sent > 0 {
            self.last_send = now;
        }
        sent > 0
    }

    /// The media mode's turn: once every call is held, RTP both ways at --rtp-pps for
    /// --duration (directions alternate, streams round robin), then the drain, then
    /// the calls are released (BYE). True if it sent packets.
    fn send_media(&mut self, now: u64) -> bool {
        let Generator {
            opts,
            pool,
            ports,
            client,
            responder,
            media,
            hz,
            ms,
            duration,
            ..
        } = self;
        let (Some(run), Some((c, cx)), Some((r, bx))) =
            (media.as_mut(), client.as_mut(), responder.as_mut())
        else {
            return false;
        };
        match run.phase {
            MediaPhase::Setup if c.settled() => {
                let secs = duration.unwrap_or(DEFAULT_DURATION_S);
                println!(
                    "siplb-gen: {} calls held; RTP at {} packets/s for {secs} s",
                    c.held(),
                    opts.rtp_pps
                );
                run.pacer = Pacer::new(now, *hz, opts.rtp_pps);
                run.phase = MediaPhase::Sending {
                    until: now + (secs * *hz as f64) as u64,
                };
            }
            MediaPhase::Sending { until } if now >= until => {
                run.phase = MediaPhase::Draining {
                    until: now + RTP_DRAIN_MS * *ms,
                };
                return false;
            }
            MediaPhase::Sending { .. } => {}
            MediaPhase::Draining { until } if now >= until => {
                run.phase = MediaPhase::Ended;
                c.release();
                return false;
            }
            _ => return false,
        }
        run.pacer_skipped += run.pacer.forgive(now);
        let allowed = run.pacer.allowance(now, BURST);
        let client_has = c.media.as_ref().is_some_and(|m| m.has_legs());
        let backend_has = r.media.as_ref().is_some_and(|m| m.has_legs());
        let mut sent = 0;
        while sent < allowed {
            // Directions alternate; a side without streams leaves its turns to the other.
            let from_client = client_has && (run.client_turn || !backend_has);
            let (side, px) = if from_client {
                (c.media.as_mut(), *cx)
            } else {
                (r.media.as_mut(), *bx)
            };
            let Some(side) = side.filter(|s| s.has_legs()) else {
                break;
            };
            run.client_turn = !from_client;
            let Some(mut m) = pool.alloc() else {
                run.build_failures += 1;
                break;
            };
            let cap = m.capacity().min(usize::from(u16::MAX));
            m.set_len(cap);
            let port = &mut ports[px];
            let Some(n) = side.emit(port.mac, m.data_mut()) else {
                run.build_failures += 1;
                break;
            };
            m.set_len(n);
            port.send(m);
            sent += 1;
        }
        run.pacer.consume(sent);
        if sent > 0 {
            run.first.get_or_insert(now);
            run.last = now;
        }
        sent > 0
    }

    /// The client is done, or a lone responder was stopped, ran its --duration or
    /// answered its --budget.
    fn finished(&self, now: u64) -> bool {
        if let Some((f, _)) = &self.flood {
            return f.done();
        }
        match (&self.client, &self.responder) {
            (Some((c, _)), _) => c.done(),
            (None, Some((r, _))) => {
                self.stopped
                    || self
                        .duration
                        .is_some_and(|d| now - self.t0 > (d * self.hz as f64) as u64)
                    || r.stats.per_backend.iter().sum::<u64>() >= self.budget
            }
            (None, None) => true,
        }
    }

    /// One line per port and one for the client and the responder, with rates since
    /// the last line.
    fn print_stats(&mut self, now: u64) {
        let last = self.last_stats;
        let dt = (now - last.0) as f64 / self.hz as f64;
        let mut out = String::new();
        for p in &self.ports {
            let s = p.port.stats();
            out += &format!(
                "port {}: RX-packets {} RX-missed {} RX-nombuf {} TX-packets {} TX-errors {} TX-dropped {}\n",
                p.port.id(),
                s.ipackets,
                s.imissed,
                s.rx_nombuf,
                s.opackets,
                s.oerrors,
                p.tx_dropped
            );
        }
        let (mut req, mut resp) = (last.1, last.2);
        if let Some((c, _)) = &self.client {
            let st = &c.stats;
            req = st.requests();
            resp = st.responses();
            out += &format!(
                "client: requests {} ({:.0}/s) responses {} ({:.0}/s) answered {} timeouts {} in-flight {} p50 {:.1} us p99 {:.1} us\n",
                req,
                (req - last.1) as f64 / dt,
                resp,
                (resp - last.2) as f64 / dt,
                st.answered,
                st.timeouts,
                c.in_flight(),
                st.latency_ns.value_at_quantile(0.5) as f64 / 1000.0,
                st.latency_ns.value_at_quantile(0.99) as f64 / 1000.0,
            );
        }
        if let Some((f, _)) = &self.flood {
            let st = &f.stats;
            req = f.sent();
            resp = st.responses.iter().sum();
            out += &format!(
                "flood: sent {} ({:.0}/s) by kind {:?} hot {} responses {} ({:.0}/s)\n",
                req,
                (req - last.1) as f64 / dt,
                st.sent,
                st.hot.iter().sum::<u64>(),
                resp,
                (resp - last.2) as f64 / dt,
            );
        }
        if let Some((r, _)) = &self.responder {
            out += &format!(
                "responder: per backend {:?} responses {} split dialogs {}\n",
                r.stats.per_backend, r.stats.responses, r.stickiness.split_dialogs
            );
        }
        if let (Some(run), Some((c, _)), Some((r, _))) =
            (&self.media, &self.client, &self.responder)
        {
            let (cs, bs) = (
                c.media.as_ref().map(|m| m.stats).unwrap_or_default(),
                r.media.as_ref().map(|m| m.stats).unwrap_or_default(),
            );
            out += &format!(
                "media: {:?} legs {}/{} client->backend {}/{} backend->client {}/{} (sent/received) misdelivered {}\n",
                run.phase,
                cs.legs,
                bs.legs,
                cs.sent,
                bs.received,
                bs.sent,
                cs.received,
                cs.misdelivered + bs.misdelivered
            );
        }
        print!("{out}");
        let _ = std::io::stdout().flush();
        self.last_stats = (now, req, resp);
    }

    /// What the run did, ended at TSC `end`.
    fn summary(&self, end: u64) -> Summary {
        let since_start = |t: u64| {
            self.started
                .as_ref()
                .map(|(s, _)| t.saturating_sub(*s) as f64 / self.hz as f64)
                .unwrap_or(0.0)
        };
        let (elapsed, sending) = (since_start(end), since_start(self.last_send));
        Summary {
            mode: format!("{:?}", self.opts.mode).to_lowercase(),
            rate_requested: self.opts.rate,
            tsc_hz: self.hz,
            client: self
                .client
                .as_ref()
                .map(|(c, _)| c.stats.summary(elapsed, sending)),
            responder: self
                .responder
                .as_ref()
                .map(|(r, _)| r.stats.summary(|i| r.backend_ip(i), &r.stickiness)),
            media: self.media_summary(),
            flood: self.flood.as_ref().map(|(f, _)| f.summary(sending)),
            ports: self
                .ports
                .iter()
                .map(|p| {
                    let s = p.port.stats();
                    PortSummary {
                        port: p.port.id(),
                        name: p.port.name(),
                        ipackets: s.ipackets,
                        opackets: s.opackets,
                        ibytes: s.ibytes,
                        obytes: s.obytes,
                        imissed: s.imissed,
                        ierrors: s.ierrors,
                        oerrors: s.oerrors,
                        rx_nombuf: s.rx_nombuf,
                        tx_dropped: p.tx_dropped,
                    }
                })
                .collect(),
        }
    }
}

impl Generator<'_> {
    fn media_summary(&self) -> Option<MediaSummary> {
        let run = self.media.as_ref()?;
        let stats = |m: Option<&crate::media::MediaSide>| m.map(|m| m.stats).unwrap_or_default();
        let client = stats(self.client.as_ref().and_then(|(c, _)| c.media.as_ref()));
        let backend = stats(self.responder.as_ref().and_then(|(r, _)| r.media.as_ref()));
        let sending_s = run
            .first
            .map_or(0.0, |f| run.last.saturating_sub(f) as f64 / self.hz as f64);
        let mut m = MediaSummary::new(
            self.opts.rtp_streams,
            self.opts.rtp_pps,
            self.opts.rtp_payload,
            &client,
            &backend,
            sending_s,
        );
        m.pacer_skipped = run.pacer_skipped;
        m.build_failures = run.build_failures;
        Some(m)
    }
}

/// Waits until every port has its link, up to `timeout` seconds (or a stop signal).
fn wait_for_links(ports: &[PortCtx], timeout: f64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    for p in ports {
        while !p.port.link_up() {
            if STOP.load(Ordering::Relaxed) {
                bail!("stopped while waiting for links");
            }
            if Instant::now() > deadline {
                bail!(
                    "port {} ({}) has no link after {timeout} s (a vhost-user port waits for its virtio-user peer)",
                    p.port.id(),
                    p.port.name(),
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for p in ports {
        println!(
            "siplb-gen: port {} ({}) mac {} link up",
            p.port.id(),
            p.port.name(),
            p.mac
        );
    }
    Ok(())
}

/// Sends what the responder decided.
fn answer(r: &Responder, action: Action, pool: &Mempool, port: &mut PortCtx) {
    let mac = port.mac;
    match action {
        Action::Ignore => {}
        Action::ArpReply {
            ip,
            asker_mac,
            asker_ip,
        } => {
            if let Some(f) = build(pool, |b| {
                Some(frame::write_arp_reply(b, mac, ip, asker_mac, asker_ip))
            }) {
                port.send(f);
            }
        }
        Action::Answer(a) => {
            for &code in a.codes {
                if let Some(f) = build(pool, |b| r.write(&a, code, mac, b)) {
                    port.send(f);
                }
            }
        }
    }
}
