//! `siplb-demo`: siplb's main job on an embedded default topology. A SIPp client calls
//! the VIP; the balancer spreads the calls over two SIPp backends by weight and keeps
//! every message of a call on one backend; live dataplane stats scroll by; at the end
//! each backend's share and the dataplane's counters are printed and everything is
//! removed.

use clap::Parser;
use e2e::sipp::{self, stickiness, Uac};
use e2e::topology::{backend_ip, Spec, Topology, CLIENT_IP, VIP};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Run siplb on a demo topology of network namespaces with SIPp peers")]
struct Cli {
    /// Calls to place.
    #[arg(long, default_value_t = 1500)]
    calls: u32,
    /// Calls per second.
    #[arg(long, default_value_t = 75)]
    rate: u32,
    /// NAT mode of the farm: dnat or snat.
    #[arg(long, default_value = "dnat")]
    nat: String,
    /// Backend weights, comma-separated (one SIPp backend each).
    #[arg(long, default_value = "2,1", value_delimiter = ',')]
    weights: Vec<u32>,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("siplb-demo: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the demo creates network namespaces and runs DPDK: run it as root");
    }
    anyhow::ensure!(
        !cli.weights.is_empty() && cli.weights.len() <= 8,
        "give 1 to 8 weights"
    );
    let topo = Topology::up(Spec {
        backends: cli.weights.len(),
        workers: 1,
    })?;
    println!("siplb demo — topology {}:", topo.tag);
    println!(
        "  SIPp client {CLIENT_IP} ──▶ VIP {VIP}:5060 (siplb, {} mode) ──▶ SIPp backends:",
        cli.nat
    );
    for (i, w) in cli.weights.iter().enumerate() {
        println!("      backend {i}: {}:5060 weight {w}", backend_ip(i));
    }
    let cfg = topo.base_config() + &topo.farm_config(&cli.nat, "call-id", &cli.weights, "");
    let mut dp = topo.start_dataplane(&cfg, &["--stats-interval", "1"])?;
    let stop = Arc::new(AtomicBool::new(false));
    let tail = {
        let (log, stop) = (dp.proc.log.clone(), stop.clone());
        std::thread::spawn(move || follow(&log, &stop))
    };
    let uas: Vec<_> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            sipp::start_uas(
                ns,
                backend_ip(i),
                5060,
                &topo.dir,
                &format!("uas{i}"),
                None,
                &[],
            )
        })
        .collect::<Result<_, _>>()?;
    println!(
        "placing {} calls at {}/s (about {} s)...",
        cli.calls,
        cli.rate,
        cli.calls / cli.rate.max(1)
    );
    let uac = Uac {
        ns: &topo.client,
        local_ip: CLIENT_IP,
        local_port: 5060,
        target: format!("{VIP}:5060"),
        calls: cli.calls,
        rate: cli.rate,
        limit: 200,
        scenario: None,
        extra: vec![],
        timeout: Duration::from_secs(u64::from(cli.calls / cli.rate.max(1)) + 60),
        name: "uac".into(),
        trace: false,
    }
    .run(&topo.dir)?;
    std::thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::Relaxed);
    let _ = tail.join();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let out = dp.stop();
    let s = stickiness(&traces);
    println!("\nresults");
    println!(
        "  client: {} calls successful, {} failed",
        uac.successful, uac.failed
    );
    let total: usize = s.calls_per_backend.iter().sum();
    for (i, n) in s.calls_per_backend.iter().enumerate() {
        println!(
            "  backend {i} ({}, weight {}): {n} calls ({:.1}%), {} SIP messages",
            backend_ip(i),
            cli.weights[i],
            100.0 * *n as f64 / total.max(1) as f64,
            s.messages_per_backend[i]
        );
    }
    println!(
        "  calls whose messages reached more than one backend: {}",
        s.split.len()
    );
    if let Some(l) = out.lines().rev().find(|l| l.contains("final")) {
        println!(
            "  dataplane counters: {}",
            l.trim_start_matches("siplb-dataplane: final ")
        );
    }
    println!("topology removed.");
    anyhow::ensure!(
        uac.failed == 0 && s.split.is_empty(),
        "the demo saw failed or split calls"
    );
    Ok(())
}

/// Prints the dataplane's stats lines as they are written.
fn follow(path: &std::path::Path, stop: &AtomicBool) {
    let mut pos = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut f) = std::fs::File::open(path) {
            if f.seek(SeekFrom::Start(pos)).is_ok() {
                let mut s = String::new();
                if f.read_to_string(&mut s).is_ok() {
                    pos += s.len() as u64;
                    for l in s.lines().filter(|l| l.starts_with("stats:")) {
                        println!("  {l}");
                    }
                    let _ = std::io::stdout().flush();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
