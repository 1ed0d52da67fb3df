//! `siplb-demo`: siplb's main job on an embedded default topology. `siplb run` starts
//! the dataplane and the control daemon; a SIPp client calls the VIP; the balancer
//! spreads the calls over two SIPp backends by weight and keeps every message of a call
//! on one backend; a third backend is broken (it answers every INVITE 503) and the
//! farm fails its calls over to the others, so the caller sees none fail (`--no-failover`
//! leaves it out); each call carries RTP through the VIP both ways (the SDP rewritten
//! onto the balancer's relay ports, the backends echo what they get); `siplb stats`
//! shows the traffic live; at the end each backend's share is printed from its own
//! message log, the RTP from kernel counters in every namespace next to the dataplane's
//! media counters, and everything is removed.

use anyhow::Context;
use clap::Parser;
use e2e::rtp::{
    count_udp, echo_args, media_uac_scenario, stop_echo, udp_counts, UdpCounts, PTIME_MS,
    UAC_RTP_PORTS, UAS_RTP_PORT,
};
use e2e::siplb::Siplb;
use e2e::sipp::{self, stickiness, Uac, Uas};
use e2e::topology::{backend_ip, Topology, CLIENT_IP, VIP};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// 2 s of audio per call, 20 ms apart.
const RTP_PER_CALL: u16 = 100;
/// Each call's hold before its BYE: its stream, and time for the last echoes to come
/// back before the BYE ends the call's media mappings.
const MEDIA_HOLD_MS: u32 = RTP_PER_CALL as u32 * PTIME_MS + 500;
/// Without media, calls last 2 s, so dialogs are in progress while stats are shown.
const HOLD_MS: u32 = 2000;
/// RTP lost in either direction beyond this share fails the demo.
const MAX_RTP_LOSS: f64 = 0.01;

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
    /// Signalling only: SIPp's built-in uac and uas, no RTP.
    #[arg(long)]
    no_media: bool,
    /// No failing backend: by default one more backend (weight 1) answers every INVITE
    /// 503, and the farm fails its calls over to the others (`[farm.failover]`).
    #[arg(long)]
    no_failover: bool,
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
    anyhow::ensure!(
        cli.calls > 0 && cli.rate > 0,
        "--calls and --rate must be at least 1"
    );
    // The working backends, then the failing one (if any).
    let n = cli.weights.len();
    let failing = (!cli.no_failover).then_some(n);
    let topo = Topology::with_backends(n + usize::from(failing.is_some()))?;
    println!("siplb demo — topology {}:", topo.tag);
    println!(
        "  SIPp client {CLIENT_IP} ──▶ VIP {VIP}:5060 (siplb, {} mode) ──▶ SIPp backends:",
        cli.nat
    );
    for (i, w) in cli.weights.iter().enumerate() {
        println!("      backend {i}: {}:5060 weight {w}", backend_ip(i));
    }
    if let Some(f) = failing {
        println!(
            "      backend {f}: {}:5060 weight 1 — a broken server: answers OPTIONS, but every INVITE 503;\n             \x20                 its calls fail over to the others (the 503 is ACKed by siplb, never seen by the caller)",
            backend_ip(f)
        );
    }
    if !cli.no_media {
        println!(
            "  RTP: client ports {}-{} ──▶ relay ports of the VIP │ siplb │ relay ports of the {} ──▶ backends :{UAS_RTP_PORT}, echoed back",
            UAC_RTP_PORTS.0,
            UAC_RTP_PORTS.1,
            if cli.nat == "snat" { "SNAT address" } else { "VIP" }
        );
    }
    let backends: Vec<String> = cli
        .weights
        .iter()
        .copied()
        .chain(failing.map(|_| 1))
        .enumerate()
        .map(|(i, w)| format!("  {{ address = \"{}\", weight = {w} }},", backend_ip(i)))
        .collect();
    // The ALG and the media relay are on by default; the farm says so for the reader.
    let farm = format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nnat = \"{}\"\nalg = true\nmedia = {}\n\
         health = {{ check = \"options\", interval_ms = 1000, timeout_ms = 500, rise = 2, fall = 2 }}\n\
         backends = [\n{}\n]\n{}",
        cli.nat,
        !cli.no_media,
        backends.join("\n"),
        if failing.is_some() {
            "[farm.failover]\ntries = 2\n"
        } else {
            ""
        }
    );
    let siplb = topo.start_siplb(&topo.siplb_config(&farm))?;
    println!("\n$ siplb status");
    print!("{}", siplb.ok(&["status"])?);
    let media = if cli.no_media {
        None
    } else {
        Some(Media::set_up(&topo, n)?)
    };
    let uas = match &media {
        Some(m) => m.start_backends(&topo)?,
        // -aa: SIPp answers the health checks' OPTIONS.
        None => (0..n)
            .map(|i| topo.start_uas(i, &format!("uas{i}"), None, &["-aa"]))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let broken = match failing {
        Some(f) => Some(topo.start_uas(f, "failing", Some("fail_uas"), &["-aa"])?),
        None => None,
    };
    std::thread::sleep(Duration::from_millis(2500));
    println!("\n$ siplb status   (the SIPp backends answer the OPTIONS health checks)");
    print!("{}", siplb.ok(&["status"])?);
    println!(
        "\nplacing {} calls at {}/s (about {} s){}; `siplb stats` every 3 s:",
        cli.calls,
        cli.rate,
        cli.calls / cli.rate,
        match media {
            Some(_) => format!(
                ", each with {} s of RTP each way",
                u32::from(RTP_PER_CALL) * PTIME_MS / 1000
            ),
            None => String::new(),
        }
    );
    let uac = Uac::new(&topo.client, "uac", cli.calls, cli.rate)
        .limit(400)
        .timeout_s(u64::from(cli.calls / cli.rate) + 60);
    let uac = match &media {
        Some(m) => uac.scenario_file(&m.scenario).hold_ms(MEDIA_HOLD_MS),
        None => uac.hold_ms(HOLD_MS),
    };
    let mut calls = uac.spawn(&topo.dir)?;
    while calls.proc.wait_timeout(Duration::from_secs(3)).is_none() {
        println!("\n$ siplb stats");
        print!("{}", siplb.ok(&["stats"])?);
        let _ = std::io::stdout().flush();
    }
    let uac = calls.wait(Duration::from_secs(1))?;
    let (traces, rtp) = match &media {
        Some(m) => {
            let (traces, rtp) = m.finish(&topo, uas)?;
            (traces, Some(rtp))
        }
        None => (uas.into_iter().map(Uas::finish).collect(), None),
    };
    let broken = broken.map(Uas::finish);
    // The calls only: the health checks' OPTIONS are in the backends' logs too.
    let traces: Vec<Vec<_>> = traces
        .into_iter()
        .map(|t| {
            t.into_iter()
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
        let echo = match &rtp {
            Some(r) => format!(
                "; RTP {} received, {} echoed",
                r.backends[i].0.received, r.backends[i].1
            ),
            None => String::new(),
        };
        println!(
            "  backend {i} ({}, weight {}): {n} calls ({:.1}%), {} SIP messages in its own log{echo}",
            backend_ip(i),
            cli.weights[i],
            100.0 * *n as f64 / total.max(1) as f64,
            s.messages_per_backend[i]
        );
    }
    println!(
        "  calls whose messages reached more than one working backend: {}",
        s.split.len()
    );
    let mut unacked = 0;
    if let (Some(f), Some(t)) = (failing, &broken) {
        let calls = |kind: &str| {
            t.iter()
                .filter(|m| !m.sent && m.kind == kind)
                .map(|m| m.call_id.as_str())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let (invites, acks) = (calls("INVITE"), calls("ACK"));
        unacked = invites.difference(&acks).count();
        println!(
            "  backend {f} ({}, failing): {} INVITEs answered 503, {} of those 503s ACKed by siplb; \
             each of those calls went on to a working backend",
            backend_ip(f),
            invites.len(),
            acks.len()
        );
    }
    let lost = match &rtp {
        Some(r) => Some(r.print(uac.successful, &RelayCounts::read(&siplb)?)),
        None => None,
    };
    println!("\n$ siplb shutdown");
    print!("{}", siplb.ok(&["shutdown"])?);
    drop(siplb);
    println!("topology removed.");
    anyhow::ensure!(
        uac.successful == u64::from(cli.calls) && uac.failed == 0 && s.split.is_empty(),
        "the demo saw failed or split calls"
    );
    anyhow::ensure!(
        unacked == 0,
        "{unacked} 503s of the failing backend were not acknowledged"
    );
    if let Some((to_backends, to_client)) = lost {
        anyhow::ensure!(
            to_backends <= MAX_RTP_LOSS && to_client <= MAX_RTP_LOSS,
            "RTP lost beyond {:.0} %: {:.2} % toward the backends, {:.2} % toward the client",
            MAX_RTP_LOSS * 100.0,
            to_backends * 100.0,
            to_client * 100.0
        );
    }
    Ok(())
}

/// The RTP side of the demo: the scenario that plays each call's stream, the backends'
/// screen files that SIPp's echo counts are read from, and kernel counters of RTP in the
/// client's and every backend's namespace.
struct Media {
    scenario: PathBuf,
    screens: Vec<PathBuf>,
}

impl Media {
    /// For the first `n` backends (the working ones).
    fn set_up(topo: &Topology, n: usize) -> anyhow::Result<Media> {
        let scenario = media_uac_scenario(&topo.dir, RTP_PER_CALL)?;
        count_udp(&topo.client, UAC_RTP_PORTS, true)?;
        for b in &topo.backends[..n] {
            count_udp(b, (UAS_RTP_PORT, UAS_RTP_PORT), false)?;
        }
        let screens = (0..n)
            .map(|i| topo.dir.join(format!("uas{i}.screens")))
            .collect();
        Ok(Media { scenario, screens })
    }

    /// A SIPp UAS per backend that answers with an SDP of its own, echoes every RTP
    /// packet, and answers the health checks' OPTIONS (-aa).
    fn start_backends(&self, topo: &Topology) -> anyhow::Result<Vec<Uas>> {
        self.screens
            .iter()
            .enumerate()
            .map(|(i, sc)| {
                let mut args = vec!["-aa".to_string()];
                args.extend(echo_args(UAS_RTP_PORT, sc));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                topo.start_uas(i, &format!("uas{i}"), Some("media_uas"), &args)
            })
            .collect()
    }

    /// Stops the backends; returns what each logged and the RTP every side counted.
    fn finish(
        &self,
        topo: &Topology,
        uas: Vec<Uas>,
    ) -> anyhow::Result<(Vec<Vec<sipp::Traced>>, Rtp)> {
        // Every call has ended with its BYE; the last echoes came back during its hold.
        std::thread::sleep(Duration::from_millis(200));
        let client = udp_counts(&topo.client)?;
        let mut backends = Vec::new();
        let mut traces = Vec::new();
        let working = &topo.backends[..self.screens.len()];
        for ((ns, mut u), sc) in working.iter().zip(uas).zip(&self.screens) {
            let kernel = udp_counts(ns)?;
            backends.push((kernel, stop_echo(&mut u, sc)?));
            traces.push(sipp::parse_trace(&u.messages));
        }
        Ok((traces, Rtp { client, backends }))
    }
}

/// RTP as the endpoints counted it.
struct Rtp {
    client: UdpCounts,
    /// Per backend: the kernel's counts, and SIPp's count of the packets it echoed.
    backends: Vec<(UdpCounts, u64)>,
}

impl Rtp {
    /// Prints both directions next to the dataplane's media counters; returns the share
    /// lost toward the backends (of what the calls should have sent) and toward the
    /// client (of what the backends echoed).
    fn print(&self, calls: u64, relay: &RelayCounts) -> (f64, f64) {
        let due = calls * u64::from(RTP_PER_CALL);
        let at_backends: u64 = self.backends.iter().map(|(k, _)| k.received).sum();
        let echoed: u64 = self.backends.iter().map(|(_, e)| e).sum();
        let share = |lost: u64, of: u64| lost as f64 / of.max(1) as f64;
        let to_backends = share(due.saturating_sub(at_backends), due);
        let to_client = share(echoed.saturating_sub(self.client.received), echoed);
        println!(
            "  RTP client → siplb → backends: {due} due ({calls} calls × {RTP_PER_CALL}), {} sent, {at_backends} received ({:.2} % lost)",
            self.client.sent,
            to_backends * 100.0
        );
        println!(
            "  RTP backends → siplb → client: {echoed} echoed, {} received ({:.2} % lost)",
            self.client.received,
            to_client * 100.0
        );
        println!(
            "  dataplane media relay: {} streams mapped, {} still live, {} packets forwarded (the endpoints received {}), drops: {}",
            relay.flows,
            relay.live,
            relay.packets,
            at_backends + self.client.received,
            if relay.drops.is_empty() {
                "none".to_string()
            } else {
                relay.drops.join(" ")
            }
        );
        (to_backends, to_client)
    }
}

/// The farm's media counters, from `siplb stats --json`.
struct RelayCounts {
    flows: u64,
    live: u64,
    packets: u64,
    /// `reason=count`, drops and refused streams, only non-zero ones.
    drops: Vec<String>,
}

impl RelayCounts {
    fn read(siplb: &Siplb) -> anyhow::Result<RelayCounts> {
        let json = siplb.ok(&["stats", "--json"])?;
        let v: serde_json::Value =
            serde_json::from_str(&json).context("`siplb stats --json` is not JSON")?;
        let m = &v["farms"][0]["media"];
        let n = |k: &str| {
            m[k].as_u64()
                .with_context(|| format!("`siplb stats --json`: no farms[0].media.{k}"))
        };
        let drops = ["drops", "refused"]
            .iter()
            .filter_map(|k| m[*k].as_object())
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        Ok(RelayCounts {
            flows: n("flows")?,
            live: n("live")?,
            packets: n("packets")?,
            drops,
        })
    }
}
