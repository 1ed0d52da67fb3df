//! SIPp calls with RTP through the VIP (issue 12 item 5), in `dnat` and `snat`: the UAC
//! offers a media port of its own per call and, once answered, plays 3 s of 20 ms PCMU
//! to the `c=`/`m=` address of the answer (the VIP, after the balancer rewrote it); the
//! backends' SIPp UAS sends every packet back to its sender (`-rtp_echo`). Each packet is
//! counted where it was sent and where it arrived (iptables counters in every namespace,
//! and SIPp's own echo count) and by the dataplane's media counters (one packet count for
//! both directions): all must agree, with no call failed, one mapping per call, no media
//! drop, and no mapping left once the BYEs have gone through.

use e2e::bed::Bed;
use e2e::rtp::{
    count_udp, echo_args, media_uac_scenario, stop_echo, udp_counts, UdpCounts, PTIME_MS,
    UAC_RTP_PORTS, UAS_RTP_PORT,
};
use e2e::sipp::{self, stickiness};
use std::time::Duration;

const CALLS: u32 = 300;
const RATE: u32 = 20;
/// 3 s of audio per call.
const RTP_PER_CALL: u16 = 150;
/// Each call's hold before its BYE: the stream, plus time for its last echoes to come back
/// before the BYE ends the call's media mappings.
const HOLD_MS: u32 = RTP_PER_CALL as u32 * PTIME_MS + 500;

/// What the endpoints and the dataplane counted in one run.
struct Run {
    calls: u32,
    successful: u64,
    failed: u64,
    client: UdpCounts,
    /// Per backend: the kernel's counts, and SIPp's count of the packets it echoed.
    backends: Vec<(UdpCounts, u64)>,
    /// Calls per backend (by Call-ID, from the UASes' message logs).
    calls_per_backend: Vec<usize>,
    split: usize,
    /// The dataplane's final counters line.
    fin: String,
    uac_output: String,
}

fn run(nat: &str, farm_extra: &str, calls: u32) -> Run {
    e2e::require_root();
    let mut bed = Bed::start(2, 1, nat, "call-id", farm_extra).expect("test bed");
    let dir = bed.topo.dir.clone();
    let scenario = media_uac_scenario(&dir, RTP_PER_CALL).expect("scenario and rtp.pcap");
    count_udp(&bed.topo.client, UAC_RTP_PORTS, true).expect("client counters");
    for b in &bed.topo.backends {
        count_udp(b, (UAS_RTP_PORT, UAS_RTP_PORT), false).expect("backend counters");
    }
    let screens: Vec<_> = (0..bed.topo.backends.len())
        .map(|i| dir.join(format!("media-be{i}.screens")))
        .collect();
    let uases: Vec<_> = screens
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            let args = echo_args(UAS_RTP_PORT, sc);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bed.topo
                .start_uas(i, &format!("media-be{i}"), Some("media_uas"), &args)
                .expect("SIPp UAS on a backend")
        })
        .collect();
    let uac = bed
        .client("uac", calls, RATE)
        .scenario_file(&scenario)
        .hold_ms(HOLD_MS)
        .limit(200)
        .timeout_s(90)
        .run(&dir)
        .expect("SIPp UAC");
    // Every call has ended with its BYE: the last echoes came back during its hold.
    std::thread::sleep(Duration::from_millis(200));
    let client = udp_counts(&bed.topo.client).expect("client counters");
    let mut backends = Vec::new();
    let mut traces = Vec::new();
    for ((b, mut uas), sc) in bed.topo.backends.iter().zip(uases).zip(&screens) {
        let kernel = udp_counts(b).expect("backend counters");
        let echoed = stop_echo(&mut uas, sc).expect("the UAS's RTP echo count");
        backends.push((kernel, echoed));
        traces.push(sipp::parse_trace(&uas.messages));
    }
    let s = stickiness(&traces);
    let fin = bed.stop();
    Run {
        calls,
        successful: uac.successful,
        failed: uac.failed,
        client,
        backends,
        calls_per_backend: s.calls_per_backend,
        split: s.split.len(),
        fin,
        uac_output: uac.output,
    }
}

/// Every call answered and ended, every RTP packet delivered both ways, and the
/// dataplane's media counters equal to what the endpoints counted.
fn expect_media_through_the_vip(r: &Run) {
    let sent = u64::from(r.calls) * u64::from(RTP_PER_CALL);
    println!(
        "calls {} ok {} failed, per backend {:?}; client sent {} received {}; backends (kernel, SIPp echoed) {:?}\n{}",
        r.successful, r.failed, r.calls_per_backend, r.client.sent, r.client.received, r.backends, r.fin
    );
    assert_eq!(
        (r.successful, r.failed),
        (u64::from(r.calls), 0),
        "SIPp UAC calls (successful, failed):\n{}",
        r.uac_output
    );
    assert_eq!(r.split, 0, "calls split across backends");
    assert_eq!(r.calls_per_backend.iter().sum::<usize>(), r.calls as usize);
    assert_eq!(
        r.client.sent, sent,
        "RTP the client's SIPp sent (kernel count)"
    );
    let at_backends: u64 = r.backends.iter().map(|(k, _)| k.received).sum();
    let echoed: u64 = r.backends.iter().map(|(_, e)| e).sum();
    for (i, (k, e)) in r.backends.iter().enumerate() {
        assert!(k.received > 0, "backend {i} received no RTP");
        assert_eq!(
            k.received, *e,
            "backend {i}: RTP received vs echoed by SIPp"
        );
        assert_eq!(
            k.sent, *e,
            "backend {i}: RTP echoed by SIPp vs sent (kernel)"
        );
    }
    assert_eq!(at_backends, sent, "RTP client → backends: sent vs received");
    assert_eq!(
        r.client.received, echoed,
        "RTP backends → client: echoed vs received"
    );
    let m = MediaStats::parse(&r.fin);
    // One m= line per call: one stream mapped, with its two legs.
    assert_eq!(
        m.flows,
        u64::from(r.calls),
        "media mappings created: {}",
        r.fin
    );
    assert_eq!(
        m.packets,
        at_backends + r.client.received,
        "media packets the dataplane forwarded vs what the endpoints received, both ways: {}",
        r.fin
    );
    assert_eq!(m.drops, 0, "media drops: {}", r.fin);
    assert_eq!(m.live, 0, "media mappings left after every BYE: {}", r.fin);
}

/// The dataplane's media counters, from its final stats line
/// (`... media flows=F live=L packets=P ... | drops ... media_<reason>=N`).
struct MediaStats {
    /// Mappings created.
    flows: u64,
    /// Mappings still live when the dataplane stopped.
    live: u64,
    /// Packets forwarded, both ways.
    packets: u64,
    drops: u64,
}

impl MediaStats {
    fn parse(fin: &str) -> MediaStats {
        let seg = fin
            .split_once(" media ")
            .map(|(_, rest)| rest.split(" |").next().unwrap_or(""))
            .unwrap_or_else(|| panic!("no media counters in the dataplane's line: {fin}"));
        let field = |name: &str| -> u64 {
            seg.split_whitespace()
                .find_map(|t| t.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("media {name}= missing or not a number in: {fin}"))
        };
        MediaStats {
            flows: field("flows"),
            live: field("live"),
            packets: field("packets"),
            drops: fin
                .split_whitespace()
                .filter_map(|t| t.strip_prefix("media_")?.split_once('='))
                .filter_map(|(_, n)| n.parse::<u64>().ok())
                .sum(),
        }
    }
}

#[test]
fn dnat_calls_with_rtp_through_the_vip_are_counted_alike_at_endpoints_and_dataplane() {
    expect_media_through_the_vip(&run("dnat", "", CALLS));
}

#[test]
fn snat_calls_with_rtp_through_the_vip_are_counted_alike_at_endpoints_and_dataplane() {
    expect_media_through_the_vip(&run("snat", "", CALLS));
}
