//! The main lcore's loop: commands from the control plane (apply a new state, report
//! the state, shut down), ARP refresh and gratuitous ARP, the heartbeat, HA liveness
//! (standing down when the control plane falls silent), stats lines, the table sweeps,
//! and freeing retired service snapshots. Nothing here is on the
//! packet path, but the main lcore may share a worker's core: every tick's work is
//! bounded (no whole-table pass).

use crate::limits::sip_limits;
use crate::rcu::Published;
use crate::sweeps::{Live, TableSweeps};
use dpdk::channel::Channel;
use dpdk::mbuf::Burst;
use dpdk::mempool::Mempool;
use dpdk::ring::Ring;
use dpdk::telemetry;
use runtime::clock::Clock;
use runtime::shm::Shared;
use runtime::stop::STOP;
use siplb_core::control::{needs_restart, Command, DesiredState, Envelope, Reply};
use siplb_core::lb::counters::{DropReason, WorkerCounters};
use siplb_core::lb::security::feed::{self, FeedsFile};
use siplb_core::lb::security::PrefixSet;
use siplb_core::lb::services::{BackendOverride, Services, SlotRegistry};
use siplb_core::lb::{self, Tables, TcpAlgSkip};
use siplb_core::sip::SipError;
use siplb_core::wire::MacAddr;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub struct Housekeeping<'a> {
    /// The state in force (what `GetState` returns).
    pub state: DesiredState,
    /// The services published to the workers, as built from `state`.
    pub svc: Services,
    pub registry: SlotRegistry,
    pub macs: Vec<MacAddr>,
    pub published: &'static Published<Services>,
    pub pool: Mempool,
    pub inject: Ring,
    pub channel: Channel,
    pub shared: &'a Shared,
    pub clock: Clock,
    pub stats: StatsPrinter,
}

impl Housekeeping<'_> {
    pub fn run(&mut self, stats_every: Option<Duration>, duration: Option<Duration>) {
        let start = Instant::now();
        let mut next_arp = start;
        let mut arp_rounds = 0u32;
        let mut next_stats = stats_every.map(|d| start + d);
        let mut sweeps = TableSweeps::new(self.shared, self.clock.now());
        while !STOP.load(Ordering::Relaxed) {
            let now = Instant::now();
            if duration.is_some_and(|d| now - start >= d) {
                break;
            }
            self.shared.header.heartbeat.fetch_add(1, Ordering::Relaxed);
            while let Some(msg) = self.channel.try_recv() {
                self.command(&msg);
            }
            self.published.reclaim();
            self.check_control_plane();
            sweeps.tick(self.clock.now());
            if now >= next_arp {
                self.announce();
                arp_rounds += 1;
                // A few quick rounds at start (ports may drop the first frames), then
                // the configured refresh.
                let gap = if arp_rounds < 3 {
                    Duration::from_secs(1)
                } else {
                    Duration::from_secs(u64::from(self.state.config.dataplane.arp_refresh_s.max(1)))
                };
                next_arp = now + gap;
            }
            if let (Some(at), Some(every)) = (next_stats, stats_every) {
                if now >= at {
                    self.stats.print(
                        &self.svc,
                        self.shared.counters,
                        &sweeps.live(),
                        Some(self.shared.header),
                        false,
                    );
                    next_stats = Some(at + every);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn command(&mut self, msg: &[u8]) {
        let env = match Envelope::<Command>::decode(msg) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("siplb-dataplane: ignoring a control message: {e}");
                return;
            }
        };
        let reply = match env.body {
            Command::Apply { state } => self.apply(*state),
            Command::GetState => Reply::State {
                state: Box::new(self.state.clone()),
                pid: std::process::id(),
            },
            Command::Shutdown => {
                STOP.store(true, Ordering::SeqCst);
                Reply::ShuttingDown
            }
        };
        let out = Envelope {
            id: env.id,
            body: reply,
        }
        .encode();
        if let Err(e) = self.channel.send(&out) {
            eprintln!("siplb-dataplane: cannot reply to the control plane: {e}");
        }
    }

    /// HA: how long the control plane's HA thread has been silent past the peer's dead
    /// time (`heartbeat_ms * dead_after`), if it has; `None` without HA.
    fn control_silent(&self) -> Option<u64> {
        let ha = &self.state.config.ha;
        if !ha.enabled {
            return None;
        }
        let beat = self.shared.header.control_beat.load(Ordering::Acquire);
        let silent = self.clock.millis().saturating_sub(beat);
        (silent > ha.heartbeat_ms * u64::from(ha.dead_after)).then_some(silent)
    }

    /// HA: the unit that forwards is the unit that says it is alive. When the control
    /// plane stops sending heartbeats, the peer takes the VIPs over after the dead
    /// time; by then this dataplane must have stopped answering for them, or there
    /// are two active units. It stands down (as on a role change to standby) and
    /// stays down until the control plane applies the active role again.
    fn check_control_plane(&mut self) {
        if !self.state.active {
            return;
        }
        let Some(silent) = self.control_silent() else {
            return;
        };
        self.state.active = false;
        self.svc = self.svc.clone().with_active(false);
        self.published.publish(self.svc.clone());
        self.shared
            .header
            .stood_down
            .fetch_add(1, Ordering::Release);
        println!(
            "siplb-dataplane: HA: the control plane has sent no heartbeat for {silent} ms: standing down (no ARP, no traffic for the VIPs) until it applies the active role again"
        );
        let _ = std::io::stdout().flush();
    }

    /// Builds services from `state` and publishes them; the old state stays in force on
    /// any error. In HA, the active role is refused while the control plane is silent
    /// (its main loop may outlive its HA thread).
    fn apply(&mut self, mut state: DesiredState) -> Reply {
        if state.active && self.control_silent().is_some() {
            state.active = false;
        }
        if let Some(why) = needs_restart(&self.state.config, &state.config) {
            return Reply::Rejected { reason: why };
        }
        if let Err(e) = state.config.check() {
            return Reply::Rejected {
                reason: e.to_string(),
            };
        }
        if sip_limits(&state.config) != sip_limits(&self.state.config) {
            return Reply::Rejected {
                reason: "[sip] limits are fixed while the dataplane runs".into(),
            };
        }
        let overrides: HashMap<_, _> = state
            .overrides
            .iter()
            .map(|o| {
                (
                    (o.farm.clone(), o.address, o.port),
                    BackendOverride {
                        state: o.state,
                        weight: o.weight,
                    },
                )
            })
            .collect();
        let (feeds, feeds_file) = self.feeds(state.feeds.take());
        state.feeds = feeds_file;
        // Build on a copy of the slot registry so a failed build assigns nothing.
        let mut registry = self.registry.clone();
        match Services::build(&state.config, &self.macs, &overrides, &mut registry).map(|mut s| {
            s.security.feeds = feeds;
            s.with_active(state.active)
        }) {
            Ok(svc) => {
                publish_directory(self.shared, &registry);
                self.published.publish(svc.clone());
                self.svc = svc;
                self.registry = registry;
                let generation = state.generation;
                self.state = state;
                println!("siplb-dataplane: applied configuration generation {generation}");
                let _ = std::io::stdout().flush();
                self.announce();
                Reply::Applied { generation }
            }
            Err(e) => Reply::Rejected {
                reason: e.to_string(),
            },
        }
    }

    /// The feeds' prefix set for a state that names `want`, and the file it was read
    /// from: the set in force when the version is the same (role and health changes
    /// rebuild nothing), else the file read and a new table built here, aside, while
    /// the workers go on with the old one. A file that cannot be read keeps the set in
    /// force (said in the log): a feed never blocks a role or health change.
    fn feeds(&self, want: Option<FeedsFile>) -> (PrefixSet, Option<FeedsFile>) {
        let Some(want) = want else {
            return (PrefixSet::default(), None);
        };
        let now = (self.svc.security.feeds.clone(), self.state.feeds.clone());
        if self.state.feeds.as_ref() == Some(&want) {
            return now;
        }
        let t = Instant::now();
        let read = std::fs::read(&want.path)
            .map_err(|e| format!("{}: {e}", want.path))
            .and_then(|b| feed::decode(&b, &want.path));
        match read {
            Ok(p) => {
                let set = PrefixSet::new(&p);
                println!(
                    "siplb-dataplane: feeds: {} prefixes from {} in {} ms",
                    set.len(),
                    want.path,
                    t.elapsed().as_millis()
                );
                (set, Some(want))
            }
            Err(e) => {
                eprintln!(
                    "siplb-dataplane: feeds: {e}: the {} prefixes in force stay",
                    now.0.len()
                );
                now
            }
        }
    }

    /// ARP requests for every backend and gateway, gratuitous ARP for our addresses,
    /// handed to worker 0 through the inject ring.
    fn announce(&self) {
        let mut frames = Burst::<32>::default();
        let mut build = |port: u8, f: &dyn Fn(&mut [u8]) -> usize| {
            let Some(mut m) = self.pool.alloc() else {
                return;
            };
            if !m.set_len(60) {
                return;
            }
            let n = f(m.data_mut());
            m.set_len(n);
            m.set_port(u16::from(port));
            if frames.is_full() {
                // What the ring has no room for is freed with the burst's leftovers.
                self.inject.enqueue_burst(&mut frames);
                frames.clear();
            }
            let _ = frames.push(m);
        };
        for (port, hop) in self.svc.next_hops() {
            build(port, &|b| lb::write_arp_request(&self.svc, port, hop, b));
        }
        for port in 0..self.svc.ports.len() as u8 {
            for a in self.svc.announced(port) {
                build(port, &|b| lb::write_gratuitous_arp(&self.svc, port, a, b));
            }
        }
        self.inject.enqueue_burst(&mut frames);
    }
}

/// Writes newly assigned backend slots into the shared directory.
pub fn publish_directory(shared: &Shared, registry: &SlotRegistry) {
    for ((farm, addr, port), slot) in registry.iter() {
        if let Some(e) = shared.directory.get(usize::from(*slot)) {
            e.set(farm, *addr, *port);
        }
    }
}

/// Totals over all workers.
pub fn totals(counters: &[WorkerCounters], f: impl Fn(&WorkerCounters) -> u64) -> u64 {
    counters.iter().map(f).sum()
}

/// Registers `/siplb/stats` and `/siplb/drops` with DPDK telemetry.
pub fn register_telemetry(shared: &Shared) {
    let c: &'static [WorkerCounters] = shared.counters;
    let t: &'static Tables<'static> = shared.tables;
    let clock = shared.header.clock;
    let stats: telemetry::Source = Box::new(move || {
        let s = |f: &dyn Fn(&WorkerCounters) -> u64| totals(c, f);
        let now = clock.now();
        vec![
            ("rx_packets".into(), s(&|w| w.rx_packets.get())),
            ("rx_bytes".into(), s(&|w| w.rx_bytes.get())),
            ("tx_packets".into(), s(&|w| w.tx_packets.get())),
            ("tx_bytes".into(), s(&|w| w.tx_bytes.get())),
            ("drops".into(), s(&|w| w.total_drops())),
            ("sip_requests".into(), s(&|w| w.sip_requests.get())),
            ("sip_responses".into(), s(&|w| w.sip_responses.get())),
            ("sip_steered".into(), s(&|w| w.sip_steered.get())),
            ("alg_rewritten".into(), s(&|w| w.alg_rewritten.get())),
            ("tcp_seq_mapped".into(), s(&|w| w.tcp_seq_mapped.get())),
            ("dialogs_created".into(), s(&|w| w.dialogs_created.get())),
            ("dialogs_live".into(), t.dialogs.count_live(now) as u64),
            (
                "registrations_created".into(),
                s(&|w| w.registrations_created.get()),
            ),
            (
                "registrations_live".into(),
                t.registrations.count_live(now) as u64,
            ),
        ]
    });
    let drops: telemetry::Source = Box::new(move || {
        DropReason::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_string(),
                    totals(c, |w| w.drops[*r as usize].get()),
                )
            })
            .chain(SipError::ALL.iter().map(|e| {
                (
                    format!("sip_{}", e.name()),
                    totals(c, |w| w.sip_errors[e.index()].get()),
                )
            }))
            .collect()
    });
    for (cmd, help, src) in [
        (
            "/siplb/stats",
            "siplb totals: packets, bytes, SIP messages, dialogs, registrations",
            stats,
        ),
        (
            "/siplb/drops",
            "siplb drops by reason, SIP scanner errors by reason",
            drops,
        ),
    ] {
        if let Err(e) = telemetry::register(cmd, help, src) {
            eprintln!("siplb-dataplane: telemetry unavailable: {e}");
        }
    }
}

/// Prints one line of totals per interval (and a final summary): what the demo shows.
pub struct StatsPrinter {
    last: Instant,
    last_rx: u64,
    last_tx: u64,
}

impl Default for StatsPrinter {
    fn default() -> Self {
        Self::new()
    }
}

impl StatsPrinter {
    pub fn new() -> Self {
        Self {
            last: Instant::now(),
            last_rx: 0,
            last_tx: 0,
        }
    }

    /// `live`: the sweeps' counts in the loop, `Live::count` at exit.
    pub fn print(
        &mut self,
        svc: &Services,
        counters: &[WorkerCounters],
        live: &Live,
        expired: Option<&runtime::shm::Header>,
        final_summary: bool,
    ) {
        let n = |v: Option<usize>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
        let sum = |f: &dyn Fn(&WorkerCounters) -> u64| totals(counters, f);
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
            n(live.dialogs),
            sum(&|c| c.registrations_created.get()),
            n(live.registrations),
        ));
        if let Some(h) = expired {
            line.push_str(&format!(
                " expired dialogs={} registrations={}",
                h.dialogs_expired.load(Ordering::Relaxed),
                h.registrations_expired.load(Ordering::Relaxed)
            ));
        }
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
        let finished = sum(&|c| c.checksums_finished.get());
        if finished > 0 {
            line.push_str(&format!(" checksums_finished={finished}"));
        }
        let kernel = (sum(&|c| c.to_kernel.get()), sum(&|c| c.from_kernel.get()));
        if kernel != (0, 0) {
            line.push_str(&format!(" kernel to={} from={}", kernel.0, kernel.1));
        }
        let snat = sum(&|c| c.snat_sessions_created.get());
        if snat > 0 {
            line.push_str(&format!(
                " snat_sessions={snat} live={}",
                n(live.snat_sessions)
            ));
        }
        let alg = (
            sum(&|c| c.alg_rewritten.get()),
            sum(&|c| c.tcp_seq_mapped.get()),
        );
        if alg != (0, 0) {
            line.push_str(&format!(
                " alg rewritten={} tcp_seq_mapped={}",
                alg.0, alg.1
            ));
        }
        for why in TcpAlgSkip::ALL {
            let n = sum(&|c| c.tcp_alg_skipped[why as usize].get());
            if n > 0 {
                line.push_str(&format!(" tcp_alg_skipped_{}={n}", why.name()));
            }
        }
        let security = [
            ("sources_banned", sum(&|c| c.sources_banned.get())),
            ("rate_table_full_ops", sum(&|c| c.rate_table_full.get())),
            ("stray_sip_forwarded", sum(&|c| c.stray_sip_forwarded.get())),
            ("stray_tcp_forwarded", sum(&|c| c.stray_tcp_forwarded.get())),
        ];
        for (name, n) in security.iter().filter(|(_, n)| *n > 0) {
            line.push_str(&format!(" {name}={n}"));
        }
        let media = (
            sum(&|c| c.media.iter().map(|m| m.flows.get()).sum()),
            sum(&|c| c.media.iter().map(|m| m.packets.get()).sum()),
        );
        if media != (0, 0) {
            line.push_str(&format!(
                " media flows={} live={} packets={}",
                media.0,
                n(live.media_mappings),
                media.1
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
