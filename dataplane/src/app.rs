//! Start-up, the main lcore's housekeeping loop, and shutdown of the dataplane.

use crate::housekeeping::{self, Housekeeping, StatsPrinter};
use crate::limits::sip_limits;
use crate::preflight;
use crate::rcu::Published;
use crate::sweeps::Live;
use crate::worker::{Worker, RESEND_BUF};
use anyhow::{bail, Context, Result};
use dpdk::channel::Channel;
use dpdk::eal::{Eal, ProcessType};
use dpdk::mempool::Mempool;
use dpdk::pdump;
use dpdk::port::Port;
use dpdk::ring::Ring;
use runtime::clock::Clock;
use runtime::ip::{ip, ip_output};
use runtime::names;
use runtime::shm::Shared;
use runtime::stop::{self, STOP};
use siplb_core::alg::Edits;
use siplb_core::config::Config;
use siplb_core::control::DesiredState;
use siplb_core::lb::counters::{WorkerCounters, NO_FARM};
use siplb_core::lb::failover::Resends;
use siplb_core::lb::reassembly::Reassembler;
use siplb_core::lb::services::{Services, SlotRegistry};
use siplb_core::lb::snat::SnatAllocator;
use siplb_core::lb::{ArpRequests, WorkerCtx};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

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

pub fn run(opts: Options) -> Result<()> {
    let cfg = Config::load(&opts.config)?;
    let mut eal_args = vec!["siplb-dataplane".to_string()];
    eal_args.extend(cfg.eal_args(&opts.eal_extra));
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
    let pool = Mempool::create(names::PACKET_POOL, cfg.dataplane.mbufs, 256, data_room, -1)
        .context("creating the packet pool: reserve more hugepages or lower [dataplane] mbufs")?;
    let mut ports = Vec::with_capacity(nports);
    for (i, pc) in cfg.ports.iter().enumerate() {
        let p = Port::start(i as u16, workers as u16, RX_TX_DESCRIPTORS, pool, pc.mtu)
            .with_context(|| format!("starting port {i} (`{}`)", pc.name))?;
        ports.push(p);
    }
    let mut kernel = Vec::new();
    let mut isolated = Vec::new();
    if cfg.dataplane.exception_path {
        // An af_packet port's kernel interface sees every frame too; with our own
        // addresses now local to this namespace (on the TAPs), the kernel would answer
        // them a second time (RSTs, ICMP unreachables, ARP). Keep it out.
        for p in &ports {
            if let Some(iface) = p.af_packet_iface() {
                isolate_af_packet_iface(&iface).with_context(|| {
                    format!("keeping the kernel off af_packet interface `{iface}`")
                })?;
                isolated.push(iface);
            }
        }
        for (i, pc) in cfg.ports.iter().enumerate() {
            let iface = pc.kernel_iface_name(i);
            let tap = Port::create_tap(&format!("net_tap_siplb{i}"), &iface)?;
            let tap = Port::start(tap.id(), workers as u16, RX_TX_DESCRIPTORS, pool, pc.mtu)
                .with_context(|| {
                    format!(
                        "starting the kernel interface `{iface}` of port `{}`",
                        pc.name
                    )
                })?;
            // The kernel's interface answers for the port's address with the port's MAC.
            tap.set_mac(ports[i].mac())?;
            configure_kernel_iface(&iface, pc)?;
            kernel.push(tap);
        }
    }
    if let Err(e) = pdump::enable() {
        eprintln!("siplb-dataplane: packet capture unavailable: {e}");
    }
    let macs: Vec<_> = ports.iter().map(Port::mac).collect();
    let clock = Clock::calibrate();
    let shared = Shared::create(&cfg, clock)?;
    let mut registry = SlotRegistry::new(shared.tables.snat.addresses());
    let svc = Services::build(&cfg, &macs, &HashMap::new(), &mut registry)?;
    housekeeping::publish_directory(&shared, &registry);
    let published: &'static Published<Services> =
        Box::leak(Box::new(Published::new(svc.clone(), workers)));
    let inject = Ring::create(names::INJECT_RING, 1024, false)?;
    let channel = Channel::create(names::COMMAND_RING, names::REPLY_RING)?;

    stop::on_signals();

    let limits = sip_limits(&cfg);
    let idle_sleep = Duration::from_micros(u64::from(cfg.dataplane.idle_sleep_us));
    for (i, lcore) in lcores.iter().take(workers).enumerate() {
        let counters: &'static WorkerCounters = &shared.counters[i];
        let w = Worker {
            index: i as u16,
            ports: ports.clone(),
            kernel: kernel.clone(),
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
                edits: Edits::new(),
                out_len: 0,
                farm: NO_FARM,
                now_us: 0,
                now_ms: 0,
                resends: Resends::default(),
                resend: None,
                // Workers scan the held requests' timeouts from spread-out points.
                held_cursor: i * shared.tables.held.capacity() / workers,
            },
            scratch: vec![0; 9000 + 14],
            resend_buf: vec![0; RESEND_BUF],
        };
        eal.launch(*lcore, move || w.run())?;
    }
    housekeeping::register_telemetry(&shared);

    println!(
        "siplb-dataplane: pid {} running {workers} worker(s) on lcores {:?}, runtime dir {}",
        std::process::id(),
        &lcores[..workers],
        eal.runtime_dir().display()
    );
    print_services(&svc, &ports);
    let ready = names::ready_file(&eal.runtime_dir());
    std::fs::write(&ready, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", ready.display()))?;

    let mut hk = Housekeeping {
        state: DesiredState {
            generation: 0,
            active: !cfg.ha.enabled,
            config: cfg,
            overrides: Vec::new(),
            deny_file: None,
            feeds: None,
        },
        svc,
        registry,
        macs,
        published,
        pool,
        inject,
        channel,
        shared: &shared,
        clock,
        stats: StatsPrinter::new(),
    };
    hk.run(opts.stats_interval, opts.duration);

    let _ = std::fs::remove_file(&ready);
    STOP.store(true, Ordering::SeqCst);
    eal.wait_all();
    hk.stats.print(
        &hk.svc,
        shared.counters,
        &Live::count(shared.tables, clock.now()),
        Some(shared.header),
        true,
    );
    for p in ports.iter().chain(&kernel) {
        p.stop();
    }
    for iface in &isolated {
        release_af_packet_iface(iface);
    }
    eal.cleanup();
    Ok(())
}

/// Policy-routing preference of the rules that drop what arrives on af_packet ports;
/// the `local` table rule moves from 0 to `LOCAL_RULE_PREF` to come after them.
const ISOLATE_RULE_PREF: &str = "10";
const LOCAL_RULE_PREF: &str = "100";

/// Stops the kernel's own IP and ARP processing of frames arriving on `iface` (its
/// packet sockets, DPDK's, still get them): `arp_ignore=8`, and an `iif <iface>
/// blackhole` rule ahead of the `local` table.
fn isolate_af_packet_iface(iface: &str) -> Result<()> {
    let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{iface}/arp_ignore"), "8");
    let rules = ip_output(&["rule", "show"])?;
    if !rules
        .lines()
        .any(|l| l.starts_with(&format!("{LOCAL_RULE_PREF}:")) && l.ends_with("lookup local"))
    {
        ip(&["rule", "add", "pref", LOCAL_RULE_PREF, "lookup", "local"])?;
    }
    if rules
        .lines()
        .any(|l| l.starts_with("0:") && l.ends_with("lookup local"))
    {
        ip(&["rule", "del", "pref", "0", "lookup", "local"])?;
    }
    let _ = ip(&["rule", "del", "pref", ISOLATE_RULE_PREF, "iif", iface]);
    ip(&[
        "rule",
        "add",
        "pref",
        ISOLATE_RULE_PREF,
        "iif",
        iface,
        "blackhole",
    ])?;
    println!(
        "siplb-dataplane: kernel IP and ARP processing on af_packet interface {iface} turned off"
    );
    Ok(())
}

fn release_af_packet_iface(iface: &str) {
    let _ = ip(&["rule", "del", "pref", ISOLATE_RULE_PREF, "iif", iface]);
}

/// Gives a port's kernel interface the port's address (and default route), up.
fn configure_kernel_iface(iface: &str, pc: &siplb_core::config::PortConfig) -> Result<()> {
    // Router solicitations and the like would only be noise on the ports.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"), "1");
    ip(&["addr", "replace", &pc.address.to_string(), "dev", iface])?;
    ip(&["link", "set", "dev", iface, "up"])?;
    if let Some(gw) = pc.gateway {
        ip(&[
            "route",
            "replace",
            "default",
            "via",
            &gw.to_string(),
            "dev",
            iface,
        ])?;
    }
    Ok(())
}

fn print_services(svc: &Services, ports: &[Port]) {
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
}
