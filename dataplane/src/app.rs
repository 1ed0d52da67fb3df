//! Start-up, the main lcore's housekeeping loop, and shutdown of the dataplane.

use crate::clock::Clock;
use crate::dpdk::eal::{Eal, ProcessType};
use crate::dpdk::mempool::Mempool;
use crate::dpdk::port::Port;
use crate::dpdk::ring::Ring;
use crate::preflight;
use crate::rcu::Published;
use crate::shm::Shared;
use crate::worker::Worker;
use anyhow::{bail, Context, Result};
use siplb_core::config::Config;
use siplb_core::lb::balancer::{self, ArpRequests, WorkerCtx};
use siplb_core::lb::counters::{DropReason, WorkerCounters};
use siplb_core::lb::reassembly::Reassembler;
use siplb_core::lb::services::{Services, SlotRegistry};
use siplb_core::lb::snat::SnatAllocator;
use siplb_core::sip::{Limits, SipError};
use std::collections::HashMap;
use std::io::Write;
use std::os::raw::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// DPDK's headroom in front of packet data in every mbuf.
const MBUF_HEADROOM: u16 = 128;
const RX_TX_DESCRIPTORS: u16 = 1024;
/// Fragmented datagrams in progress per worker (64 KiB each) and their time limit.
const REASSEMBLY_SLOTS: usize = 32;
const REASSEMBLY_TIMEOUT_S: u32 = 5;

pub struct Options {
    pub config: PathBuf,
    /// EAL arguments appended to the config's `eal_args`.
    pub eal_extra: Vec<String>,
    /// Print a stats line this often.
    pub stats_interval: Option<Duration>,
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
}

fn sip_limits(cfg: &Config) -> Limits {
    let mut l = Limits::default();
    if let Some(n) = cfg.sip.max_headers {
        l.max_headers = n;
    }
    if let Some(n) = cfg.sip.max_line_len {
        l.max_line_len = n;
    }
    l
}

pub fn run(opts: Options) -> Result<()> {
    let cfg = Config::load(&opts.config)?;
    let mut eal_args = vec!["siplb-dataplane".to_string()];
    eal_args.extend(cfg.dataplane.eal_args.iter().cloned());
    eal_args.extend(opts.eal_extra.iter().cloned());
    preflight::check(&eal_args)?;
    let eal = Eal::init(&eal_args)
        .context("DPDK EAL initialisation failed (its own messages are above)")?;
    if eal.process_type() != ProcessType::Primary {
        bail!("siplb-dataplane must be the DPDK primary process: remove --proc-type from its EAL arguments");
    }
    let nports = usize::from(eal.port_count());
    if nports != cfg.ports.len() {
        bail!(
            "{}: {} [[port]] sections but DPDK found {nports} ports: give one --vdev or -a per port, in the order of the [[port]] sections",
            opts.config.display(),
            cfg.ports.len()
        );
    }
    let workers = usize::from(cfg.dataplane.workers);
    let lcores = eal.worker_lcores();
    if lcores.len() < workers {
        bail!(
            "{workers} workers need {workers} worker lcores besides the main one, the EAL has {}: pass e.g. `-l 0-{workers}` (or `--lcores`)",
            lcores.len()
        );
    }
    let data_room = cfg.dataplane.mbuf_data_size + MBUF_HEADROOM;
    let pool = Mempool::create("siplb_pkt", cfg.dataplane.mbufs, 256, data_room, -1)
        .context("creating the packet pool: reserve more hugepages or lower [dataplane] mbufs")?;
    let mut ports = Vec::with_capacity(nports);
    for (i, pc) in cfg.ports.iter().enumerate() {
        let p = Port::start(i as u16, workers as u16, RX_TX_DESCRIPTORS, pool, pc.mtu)
            .with_context(|| format!("starting port {i} (`{}`)", pc.name))?;
        ports.push(p);
    }
    let macs: Vec<_> = ports.iter().map(Port::mac).collect();
    let clock = Clock::calibrate();
    let shared = Shared::create(&cfg, clock)?;
    let mut registry = SlotRegistry::default();
    let svc = Services::build(&cfg, &macs, &HashMap::new(), &mut registry)?;
    let published: &'static Published<Services> =
        Box::leak(Box::new(Published::new(svc.clone(), workers)));
    let inject = Ring::create("siplb_inject", 1024, false)?;

    // SAFETY: installing async-signal-safe handlers (they only store an atomic).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let limits = sip_limits(&cfg);
    let idle_sleep = Duration::from_micros(u64::from(cfg.dataplane.idle_sleep_us));
    for (i, lcore) in lcores.iter().take(workers).enumerate() {
        let counters: &'static WorkerCounters = &shared.counters[i];
        let w = Worker {
            index: i as u16,
            ports: ports.clone(),
            pool,
            services: published,
            tables: shared.tables,
            counters,
            inject: (i == 0).then_some(inject),
            clock,
            idle_sleep,
            stop: &STOP,
            ctx: WorkerCtx {
                counters,
                limits,
                snat_ports: SnatAllocator::for_worker(i as u16, workers as u16),
                arp_requests: ArpRequests::default(),
                reassembly: Reassembler::new(REASSEMBLY_SLOTS, REASSEMBLY_TIMEOUT_S),
            },
            scratch: vec![0; 9000 + 14],
        };
        eal.launch(*lcore, move || w.run())?;
    }

    println!(
        "siplb-dataplane: pid {} running {workers} worker(s) on lcores {:?}",
        std::process::id(),
        &lcores[..workers]
    );
    for (i, p) in svc.ports.iter().enumerate() {
        println!(
            "  port {i} {} ({}) {} mac {}",
            p.name,
            ports[i].name(),
            p.net,
            p.mac
        );
    }
    for f in &svc.farms {
        let bs: Vec<String> = f
            .backends
            .iter()
            .map(|b| format!("{}:{} w{}", b.addr, b.port, b.weight))
            .collect();
        println!(
            "  farm {} vip {}:{} {:?} {:?} -> {}",
            f.name,
            f.vip,
            f.port,
            f.nat,
            f.affinity,
            bs.join(", ")
        );
    }
    let _ = std::io::stdout().flush();

    let mut hk = Housekeeping {
        svc,
        pool,
        inject,
        shared: &shared,
        clock,
        stats: StatsPrinter::new(shared.counters.len()),
    };
    hk.run(&cfg, opts.stats_interval, opts.duration);

    STOP.store(true, Ordering::SeqCst);
    eal.wait_all();
    hk.stats
        .print(&hk.svc, shared.counters, shared.tables, clock.now(), true);
    for p in &ports {
        p.stop();
    }
    eal.cleanup();
    Ok(())
}

struct Housekeeping<'a> {
    svc: Services,
    pool: Mempool,
    inject: Ring,
    shared: &'a Shared,
    clock: Clock,
    stats: StatsPrinter,
}

impl Housekeeping<'_> {
    fn run(&mut self, cfg: &Config, stats_every: Option<Duration>, duration: Option<Duration>) {
        let start = Instant::now();
        let mut next_arp = start;
        let mut arp_rounds = 0u32;
        let mut next_stats = stats_every.map(|d| start + d);
        while !STOP.load(Ordering::Relaxed) {
            let now = Instant::now();
            if duration.is_some_and(|d| now - start >= d) {
                break;
            }
            self.shared.header.heartbeat.fetch_add(1, Ordering::Relaxed);
            if now >= next_arp {
                self.announce();
                arp_rounds += 1;
                // A few quick rounds at start (ports may drop the first frames), then
                // the configured refresh.
                let gap = if arp_rounds < 3 {
                    Duration::from_secs(1)
                } else {
                    Duration::from_secs(u64::from(cfg.dataplane.arp_refresh_s.max(1)))
                };
                next_arp = now + gap;
            }
            if let (Some(at), Some(every)) = (next_stats, stats_every) {
                if now >= at {
                    self.stats.print(
                        &self.svc,
                        self.shared.counters,
                        self.shared.tables,
                        self.clock.now(),
                        false,
                    );
                    next_stats = Some(at + every);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// ARP requests for every backend and gateway, gratuitous ARP for our addresses.
    fn announce(&self) {
        let mut frames: Vec<*mut c_void> = Vec::new();
        let mut build = |port: u8, f: &dyn Fn(&mut [u8]) -> usize| {
            if let Some(mut m) = self.pool.alloc() {
                if m.set_len(60) {
                    let n = f(m.data_mut());
                    m.set_len(n);
                    m.set_port(u16::from(port));
                    frames.push(m.into_raw() as *mut c_void);
                }
            }
        };
        for (port, hop) in self.svc.next_hops() {
            build(port, &|b| {
                balancer::write_arp_request(&self.svc, port, hop, b)
            });
        }
        for port in 0..self.svc.ports.len() as u8 {
            for a in self.svc.announced(port) {
                build(port, &|b| {
                    balancer::write_gratuitous_arp(&self.svc, port, a, b)
                });
            }
        }
        let n = self.inject.enqueue_burst(&frames);
        for p in &frames[n..] {
            // SAFETY: not enqueued, so still ours.
            drop(unsafe {
                crate::dpdk::mbuf::Mbuf::from_raw(std::ptr::NonNull::new_unchecked(
                    *p as *mut dpdk_sys::rte_mbuf,
                ))
            });
        }
    }
}

/// Prints one line of totals per interval (and a final summary): what the demo shows.
pub struct StatsPrinter {
    last: Instant,
    last_rx: u64,
    last_tx: u64,
}

impl StatsPrinter {
    fn new(_workers: usize) -> Self {
        Self {
            last: Instant::now(),
            last_rx: 0,
            last_tx: 0,
        }
    }

    fn print(
        &mut self,
        svc: &Services,
        counters: &[WorkerCounters],
        tables: &siplb_core::lb::balancer::Tables<'_>,
        now: u32,
        final_summary: bool,
    ) {
        let sum = |f: &dyn Fn(&WorkerCounters) -> u64| counters.iter().map(f).sum::<u64>();
        let rx = sum(&|c| c.rx_packets.get());
        let tx = sum(&|c| c.tx_packets.get());
        let dt = self.last.elapsed().as_secs_f64().max(1e-3);
        let mut line = if final_summary {
            format!("siplb-dataplane: final rx={rx} tx={tx}")
        } else {
            format!(
                "stats: rx={rx} ({:.0}/s) tx={tx} ({:.0}/s)",
                (rx - self.last_rx) as f64 / dt,
                (tx - self.last_tx) as f64 / dt
            )
        };
        self.last = Instant::now();
        self.last_rx = rx;
        self.last_tx = tx;
        line.push_str(&format!(
            " sip req={} resp={} dialogs={} live={} registrations={} live={}",
            sum(&|c| c.sip_requests.get()),
            sum(&|c| c.sip_responses.get()),
            sum(&|c| c.dialogs_created.get()),
            tables.dialogs.count_live(now),
            sum(&|c| c.registrations_created.get()),
            tables.registrations.count_live(now),
        ));
        let frags = (
            sum(&|c| c.fragments_in.get()),
            sum(&|c| c.datagrams_reassembled.get()),
            sum(&|c| c.fragments_out.get()),
        );
        if frags != (0, 0, 0) {
            line.push_str(&format!(
                " fragments in={} reassembled={} out={}",
                frags.0, frags.1, frags.2
            ));
        }
        let snat = sum(&|c| c.snat_sessions_created.get());
        if snat > 0 {
            line.push_str(&format!(
                " snat_sessions={snat} live={}",
                tables.snat.count_live(now)
            ));
        }
        for f in &svc.farms {
            for b in &f.backends {
                let s = usize::from(b.slot);
                line.push_str(&format!(
                    " | {}:{} to={} from={}",
                    b.addr,
                    b.port,
                    sum(&|c| c.backends[s].to_packets.get()),
                    sum(&|c| c.backends[s].from_packets.get())
                ));
            }
        }
        let drops: Vec<String> = DropReason::ALL
            .iter()
            .filter_map(|r| {
                let n = sum(&|c| c.drops[*r as usize].get());
                (n > 0).then(|| format!("{}={n}", r.name()))
            })
            .chain(SipError::ALL.iter().filter_map(|e| {
                let n = sum(&|c| c.sip_errors[e.index()].get());
                (n > 0).then(|| format!("sip_{}={n}", e.name()))
            }))
            .collect();
        if !drops.is_empty() {
            line.push_str(&format!(" | drops {}", drops.join(" ")));
        }
        println!("{line}");
        let _ = std::io::stdout().flush();
    }
}
