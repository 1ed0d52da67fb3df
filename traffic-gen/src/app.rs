//! siplb-gen on DPDK: EAL, the ports, and the one loop that runs the client and the
//! responder on the main lcore: rx burst → classify → answer / account → paced
//! requests → tx burst.

use crate::client::{Client, ClientConfig};
use crate::frame::{self, Incoming};
use crate::options::{Mode, Options};
use crate::pacer::Pacer;
use crate::responder::{Action, Responder, ResponderConfig};
use crate::stats::{PortSummary, Summary};
use anyhow::{bail, Context, Result};
use dpdk::eal::Eal;
use dpdk::lcore;
use dpdk::mbuf::{Burst, Mbuf};
use dpdk::mempool::Mempool;
use dpdk::port::{Port, TxBuffer};
use siplb_core::wire::arp;
use siplb_core::wire::MacAddr;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BURST: usize = 32;
const DESCRIPTORS: u16 = 1024;
const MBUF_DATA_ROOM: u16 = 2048 + 128;
/// Without --duration or --budget the client stops after this long.
const DEFAULT_DURATION_S: f64 = 10.0;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

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
    let nports = eal.port_count();
    let client_on = opts.mode != Mode::Responder;
    let responder_on = opts.mode != Mode::Client;
    for (on, p, what) in [
        (client_on, opts.client_port, "--client-port"),
        (responder_on, opts.backend_port, "--backend-port"),
    ] {
        if on && p >= nports {
            bail!("{what} {p}: DPDK found {nports} port(s) (give them with --vdev or -a)");
        }
    }
    let pool = Mempool::create("siplb_gen_pkt", opts.mbufs, 256, MBUF_DATA_ROOM, -1)
        .context("creating the packet pool: lower --mbufs or reserve more hugepages")?;
    let mut ids: Vec<u16> = Vec::new();
    if client_on {
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
    let client_px = ids.iter().position(|&i| client_on && i == opts.client_port);
    let backend_px = ids
        .iter()
        .position(|&i| responder_on && i == opts.backend_port);

    // SAFETY: async-signal-safe handlers that only store an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let link_deadline = Instant::now() + Duration::from_secs_f64(opts.link_timeout);
    for p in &ports {
        while !p.port.link_up() {
            if STOP.load(Ordering::Relaxed) {
                bail!("stopped while waiting for links");
            }
            if Instant::now() > link_deadline {
                bail!(
                    "port {} ({}) has no link after {} s (a vhost-user port waits for its virtio-user peer)",
                    p.port.id(),
                    p.port.name(),
                    opts.link_timeout
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for p in &ports {
        println!(
            "siplb-gen: port {} ({}) mac {} link up",
            p.port.id(),
            p.port.name(),
            p.mac
        );
    }

    let hz = lcore::tsc_hz();
    let run_id = (lcore::tsc() >> 8) as u32 ^ std::process::id();
    let budget = opts.budget.unwrap_or(u64::MAX);
    let duration = match (opts.duration, opts.budget) {
        (Some(d), _) => Some(d),
        (None, None) if client_on => Some(DEFAULT_DURATION_S),
        _ => None,
    };
    let mut client = client_on.then(|| {
        Client::new(ClientConfig {
            src_ip: opts.src_ip,
            src_ips: opts.src_ips,
            src_port: opts.src_port,
            src_ports: opts.src_ports,
            dst_ip: opts.dst_ip,
            dst_port: opts.dst_port,
            users: opts.users,
            calls: opts.calls,
            mix: opts.mix,
            frame_size: opts.payload,
            timeout_tsc: opts.timeout_ms * hz / 1000,
            budget,
            challenge: opts.challenge,
            run: run_id,
            tsc_hz: hz,
        })
    });
    let mut responder = responder_on.then(|| {
        Responder::new(
            ResponderConfig {
                first_backend: opts.backend_ip,
                backends: opts.backends,
                sip_port: opts.backend_sip_port,
                challenge: opts.challenge,
            },
            opts.calls as usize,
        )
    });

    let mut dst_mac = opts.dst_mac;
    let mut warmup_until = dst_mac.map(|_| lcore::tsc() + opts.warmup_ms * hz / 1000);
    let ms = hz / 1000;
    let stats_every =
        (opts.stats_interval > 0.0).then_some((opts.stats_interval * hz as f64) as u64);
    let t0 = lcore::tsc();
    let mut next_arp = t0;
    let mut announcements = 0;
    let mut next_announce = t0;
    let mut next_expire = t0;
    let mut next_stats = t0 + stats_every.unwrap_or(u64::MAX / 2);
    let mut last_stats = (t0, 0u64, 0u64);
    // The pacer and the clock of --duration start with the first request.
    let mut started: Option<(u64, Pacer)> = None;
    let mut rx = Burst::<BURST>::default();
    let mut stopped = false;
    let mut last_send = t0;
    let idle_sleep = Duration::from_micros(opts.idle_sleep_us);

    let end_tsc = loop {
        let now = lcore::tsc();
        let mut busy = false;
        if STOP.load(Ordering::Relaxed) && !stopped {
            stopped = true;
            if let Some(c) = client.as_mut() {
                c.stop();
            }
        }
        for (px, pc) in ports.iter_mut().enumerate() {
            let n = pc.port.rx_burst(0, &mut rx);
            busy |= n > 0;
            for i in 0..n {
                rx.prefetch(i + 2);
                let Some(m) = rx.take(i) else { continue };
                let incoming = frame::classify(m.data());
                let for_backend = px == backend_px.unwrap_or(usize::MAX)
                    && responder.as_ref().is_some_and(|r| r.wants(&incoming));
                if for_backend {
                    let r = responder.as_mut().expect("checked");
                    let action = r.handle(incoming);
                    answer(r, action, &pool, pc);
                } else if px == client_px.unwrap_or(usize::MAX) {
                    let c = client.as_mut().expect("client port implies a client");
                    match incoming {
                        Incoming::Udp { dst, payload, .. } if c.owns(dst.ip) => {
                            c.on_response(payload, now);
                        }
                        Incoming::Arp {
                            op,
                            sender_mac,
                            sender_ip,
                            target_ip,
                        } => {
                            if op == arp::OP_REQUEST && c.owns(target_ip) {
                                let mac = pc.mac;
                                if let Some(f) = build(&pool, |b| {
                                    Some(frame::write_arp_reply(
                                        b, mac, target_ip, sender_mac, sender_ip,
                                    ))
                                }) {
                                    pc.send(f);
                                }
                            }
                            if sender_ip == opts.dst_ip && dst_mac.is_none() {
                                dst_mac = Some(sender_mac);
                                warmup_until = Some(now + opts.warmup_ms * ms);
                                println!("siplb-gen: {} is at {sender_mac}", opts.dst_ip);
                            }
                        }
                        _ => {}
                    }
                }
            }
            rx.clear();
        }

        // Announce the backends (gratuitous ARP) a few times at start.
        if let (Some(r), Some(bx)) = (responder.as_ref(), backend_px) {
            if announcements < 3 && now >= next_announce {
                announcements += 1;
                next_announce = now + 500 * ms;
                let mac = ports[bx].mac;
                for b in 0..r.config().backends {
                    let ip = r.backend_ip(b);
                    if let Some(f) = build(&pool, |buf| {
                        Some(frame::write_arp_request(buf, mac, ip, ip))
                    }) {
                        ports[bx].send(f);
                    }
                }
            }
        }

        if let (Some(c), Some(cx)) = (client.as_mut(), client_px) {
            match dst_mac {
                None if now >= next_arp => {
                    next_arp = now + 200 * ms;
                    let mac = ports[cx].mac;
                    let (src, dst) = (opts.src_ip, opts.dst_ip);
                    if let Some(f) =
                        build(&pool, |b| Some(frame::write_arp_request(b, mac, src, dst)))
                    {
                        ports[cx].send(f);
                    }
                }
                None => {}
                // Let the peer settle (learn the backends, finish its own ARP) first.
                Some(_) if now < warmup_until.unwrap_or(0) => {}
                Some(dmac) => {
                    let (start, pacer) = started.get_or_insert_with(|| {
                        println!("siplb-gen: sending");
                        (now, Pacer::new(now, hz, opts.rate))
                    });
                    if let Some(d) = duration {
                        if now - *start > (d * hz as f64) as u64 {
                            c.stop();
                        }
                    }
                    c.stats.pacer_skipped += pacer.forgive(now);
                    let allowed = pacer.allowance(now, BURST);
                    let smac = ports[cx].mac;
                    let mut sent = 0;
                    while sent < allowed {
                        let Some(mut m) = pool.alloc() else {
                            c.stats.build_failures += 1;
                            break;
                        };
                        let cap = m.capacity().min(usize::from(u16::MAX));
                        m.set_len(cap);
                        let Some(n) = c.emit(now, smac, dmac, m.data_mut()) else {
                            break;
                        };
                        m.set_len(n);
                        ports[cx].send(m);
                        sent += 1;
                    }
                    pacer.consume(sent);
                    if sent > 0 {
                        busy = true;
                        last_send = now;
                    }
                    if now >= next_expire {
                        next_expire = now + 10 * ms;
                        c.expire(now);
                    }
                }
            }
        }
        for p in &mut ports {
            p.flush();
        }

        if now >= next_stats {
            next_stats = now + stats_every.unwrap_or(u64::MAX / 2);
            last_stats = print_periodic(
                &ports,
                client.as_ref(),
                responder.as_ref(),
                last_stats,
                now,
                hz,
            );
        }

        if !busy && !idle_sleep.is_zero() {
            std::thread::sleep(idle_sleep);
        }

        let finished = match (&client, &responder) {
            (Some(c), _) => c.done(),
            (None, Some(r)) => {
                stopped
                    || duration.is_some_and(|d| now - t0 > (d * hz as f64) as u64)
                    || r.stats.per_backend.iter().sum::<u64>() >= budget
            }
            (None, None) => true,
        };
        if finished {
            break now;
        }
    };

    let since_start = |t: u64| {
        started
            .as_ref()
            .map(|(s, _)| t.saturating_sub(*s) as f64 / hz as f64)
            .unwrap_or(0.0)
    };
    let (elapsed, sending) = (since_start(end_tsc), since_start(last_send));
    let summary = Summary {
        mode: format!("{:?}", opts.mode).to_lowercase(),
        rate_requested: opts.rate,
        tsc_hz: hz,
        client: client.as_ref().map(|c| c.stats.summary(elapsed, sending)),
        responder: responder
            .as_ref()
            .map(|r| r.stats.summary(|i| r.backend_ip(i), &r.stickiness)),
        ports: ports
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
    };
    Ok(summary)
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

/// One line per port and one for the client and the responder, with rates since the
/// last line; returns the new reference point.
fn print_periodic(
    ports: &[PortCtx],
    client: Option<&Client>,
    responder: Option<&Responder>,
    last: (u64, u64, u64),
    now: u64,
    hz: u64,
) -> (u64, u64, u64) {
    let dt = (now - last.0) as f64 / hz as f64;
    let mut out = String::new();
    for p in ports {
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
    if let Some(c) = client {
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
    if let Some(r) = responder {
        out += &format!(
            "responder: per backend {:?} responses {} split dialogs {}\n",
            r.stats.per_backend, r.stats.responses, r.stickiness.split_dialogs
        );
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
    (now, req, resp)
}
