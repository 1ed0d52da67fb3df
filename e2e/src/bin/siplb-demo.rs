//! `siplb-demo`: siplb's main job on an embedded default topology. `siplb run` starts
//! the dataplane and the control daemon; a SIPp client calls the VIP; the balancer
//! spreads the calls over two SIPp backends by weight and keeps every message of a call
//! on one backend; `siplb stats` shows the traffic live; at the end each backend's
//! share is printed from its own message log and everything is removed.

use clap::Parser;
use e2e::sipp::{stickiness, Uac};
use e2e::topology::{backend_ip, Topology, CLIENT_IP, VIP};
use std::io::Write;
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
    let topo = Topology::with_backends(cli.weights.len())?;
    println!("siplb demo — topology {}:", topo.tag);
    println!(
        "  SIPp client {CLIENT_IP} ──▶ VIP {VIP}:5060 (siplb, {} mode) ──▶ SIPp backends:",
        cli.nat
    );
    for (i, w) in cli.weights.iter().enumerate() {
        println!("      backend {i}: {}:5060 weight {w}", backend_ip(i));
    }
    let backends: Vec<String> = cli
        .weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("  {{ address = \"{}\", weight = {w} }},", backend_ip(i)))
        .collect();
    let farm = format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nnat = \"{}\"\n\
         health = {{ check = \"options\", interval_ms = 1000, timeout_ms = 500, rise = 2, fall = 2 }}\n\
         backends = [\n{}\n]\n",
        cli.nat,
        backends.join("\n")
    );
    let siplb = topo.start_siplb(&topo.siplb_config(&farm))?;
    println!("\n$ siplb status");
    print!("{}", siplb.ok(&["status"])?);
    // -aa: SIPp answers the health checks' OPTIONS.
    let uas = topo.start_uas_backends(&["-aa"])?;
    std::thread::sleep(Duration::from_millis(2500));
    println!("\n$ siplb status   (the SIPp backends answer the OPTIONS health checks)");
    print!("{}", siplb.ok(&["status"])?);
    println!(
        "\nplacing {} calls at {}/s (about {} s); `siplb stats` every 3 s:",
        cli.calls,
        cli.rate,
        cli.calls / cli.rate.max(1)
    );
    let mut calls = Uac::new(&topo.client, "uac", cli.calls, cli.rate)
        .limit(400)
        // Calls last 2 s, so dialogs are in progress while stats are shown.
        .hold_ms(2000)
        .timeout_s(u64::from(cli.calls / cli.rate.max(1)) + 60)
        .spawn(&topo.dir)?;
    while calls.proc.wait_timeout(Duration::from_secs(3)).is_none() {
        println!("\n$ siplb stats");
        print!("{}", siplb.ok(&["stats"])?);
        let _ = std::io::stdout().flush();
    }
    let uac = calls.wait(Duration::from_secs(1))?;
    // The calls only: the health checks' OPTIONS are in the backends' logs too.
    let traces: Vec<Vec<_>> = uas
        .into_iter()
        .map(|u| {
            u.finish()
                .into_iter()
                .filter(|m| m.cseq_method != "OPTIONS")
                .collect()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1200));
    println!("\n$ siplb stats   (after the last call)");
    print!("{}", siplb.ok(&["stats"])?);
    let s = stickiness(&traces);
    println!("\nresults");
    println!(
        "  client: {} calls successful, {} failed",
        uac.successful, uac.failed
    );
    let total: usize = s.calls_per_backend.iter().sum();
    for (i, n) in s.calls_per_backend.iter().enumerate() {
        println!(
            "  backend {i} ({}, weight {}): {n} calls ({:.1}%), {} SIP messages in its own log",
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
    println!("\n$ siplb shutdown");
    print!("{}", siplb.ok(&["shutdown"])?);
    drop(siplb);
    println!("topology removed.");
    anyhow::ensure!(
        uac.failed == 0 && s.split.is_empty(),
        "the demo saw failed or split calls"
    );
    Ok(())
}
