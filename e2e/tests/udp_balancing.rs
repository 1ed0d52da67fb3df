//! Real SIPp calls through the VIP in `dnat` mode: weights are honoured and every
//! message of a call reaches one backend, checked at the backends' own message logs.

use e2e::bed::stat;
use e2e::sipp::{stickiness, Uac};
use e2e::topology::Topology;
use std::time::Duration;

const CALLS: u32 = 600;
/// Allowed distance between a backend's share of calls and its weight share, in
/// percentage points. With 600 calls the binomial standard deviation of a 3:1 split is
/// 1.8 points; 6 points is over 3 sigma.
const SHARE_TOLERANCE_PCT: f64 = 6.0;

fn run(weights: &[u32]) {
    e2e::require_root();
    let topo = Topology::with_backends(weights.len()).expect("topology");
    let cfg = topo.base_config() + &topo.farm_config("dnat", "call-id", weights, "");
    let mut dp = topo
        .start_dataplane(&cfg, &["--stats-interval", "2"])
        .expect("dataplane");
    let uas = topo.start_uas_backends(&[]).expect("uas");
    let uac = Uac::new(&topo.client, "uac", CALLS, 100)
        .limit(100)
        .timeout_s(90)
        .run(&topo.dir)
        .expect("uac");
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let dp_out = dp.stop();
    println!(
        "{}",
        dp_out.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );

    assert!(
        uac.status.success() && uac.failed == 0 && uac.successful == u64::from(CALLS),
        "SIPp UAC: {} successful, {} failed, status {:?}\n{}\n{}",
        uac.successful,
        uac.failed,
        uac.status,
        uac.output,
        dp_out
    );
    let s = stickiness(&traces);
    println!(
        "weights {weights:?}: calls per backend {:?}, messages per backend {:?}",
        s.calls_per_backend, s.messages_per_backend
    );
    assert!(
        s.split.is_empty(),
        "calls split across backends: {:?}",
        &s.split[..s.split.len().min(5)]
    );
    assert_eq!(s.calls_per_backend.iter().sum::<usize>(), CALLS as usize);
    // Every message of each call, at the one backend that had it.
    s.assert_every_call_has(
        "calls",
        &[
            "INVITE",
            "180/INVITE",
            "200/INVITE",
            "ACK",
            "BYE",
            "200/BYE",
        ],
    );
    let total_w: u32 = weights.iter().sum();
    for (i, w) in weights.iter().enumerate() {
        let want = 100.0 * f64::from(*w) / f64::from(total_w);
        let got = 100.0 * s.calls_per_backend[i] as f64 / f64::from(CALLS);
        assert!(
            (got - want).abs() <= SHARE_TOLERANCE_PCT,
            "backend {i}: {got:.1}% of calls, weight share {want:.1}% (tolerance {SHARE_TOLERANCE_PCT} points)"
        );
    }
}

#[test]
fn dnat_equal_weights_spread_calls_and_keep_each_call_on_one_backend() {
    run(&[1, 1]);
}

#[test]
fn dnat_weights_3_to_1_spread_calls_and_keep_each_call_on_one_backend() {
    run(&[3, 1]);
}

/// Garbage, truncated and hostile SIP sent to the VIP is dropped and counted by reason;
/// the dataplane keeps balancing real calls afterwards.
#[test]
fn bad_input_is_counted_and_calls_still_work() {
    e2e::require_root();
    let topo = Topology::with_backends(2).expect("topology");
    let cfg = topo.base_config()
        + "\n[sip]\nmax_line_len = 1024\n"
        + &topo.farm_config("dnat", "call-id", &[1, 1], "");
    let mut dp = topo.start_dataplane(&cfg, &[]).expect("dataplane");
    // Random bytes, every prefix of an INVITE, no Call-ID, a lying Content-Length, a
    // header line over the configured 1024-byte limit, a NUL in a header, 80 Vias.
    // Paced (10 datagrams per 2 ms): unpaced, a busy machine once lost 154 of 779 in
    // the af_packet ring before the dataplane saw them.
    let script = r#"
import random, socket, time
random.seed(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.0.10", 5099))
vip = ("198.18.0.2", 5060)
inv = (b"INVITE sip:b@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5099;branch=z9hG4bKx\r\n"
       b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: bad-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
msgs = [bytes(random.getrandbits(8) for _ in range(random.randint(1, 1400))) for _ in range(600)]
msgs += [inv[:n] for n in range(1, len(inv), 1)]
msgs.append(inv.replace(b"Call-ID: bad-1\r\n", b""))
msgs.append(inv.replace(b"Content-Length: 0", b"Content-Length: 900"))
msgs.append(inv.replace(b"To: <sip:b@x>", b"To: <sip:" + b"b" * 2000 + b"@x>"))
msgs.append(inv.replace(b"CSeq: 1 INVITE", b"CSeq: 1 IN\x00VITE"))
msgs.append(inv.replace(b"Via:", b"Via: SIP/2.0/UDP 198.18.0.10\r\nVia:" * 80, 1))
for i, m in enumerate(msgs[:1000]):
    s.sendto(m, vip)
    if i % 10 == 9:
        time.sleep(0.002)
print(len(msgs[:1000]))
"#;
    let sent: u64 = topo
        .client
        .run("python3", &["-c", script])
        .expect("garbage sender")
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        dp.proc.running(),
        "the dataplane died on bad input:\n{}",
        dp.proc.output()
    );
    let uas = topo.start_uas_backends(&[]).unwrap();
    let uac = Uac::new(&topo.client, "uac", 50, 50)
        .limit(50)
        .timeout_s(30)
        .run(&topo.dir)
        .unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let fin = dp.stop_final_stats();
    println!("{fin}");
    assert_eq!((uac.successful, uac.failed), (50, 0), "{}", uac.output);
    assert!(stickiness(&traces).split.is_empty());
    let malformed = stat(&fin, "sip_malformed");
    // Every garbage datagram is a counted drop (a few random ones may parse as
    // something the balancer rejects for another reason, e.g. a response to nobody).
    let other: u64 = ["no_backend", "not_balanced", "vip_port_closed", "truncated"]
        .iter()
        .map(|r| stat(&fin, r))
        .sum();
    assert!(
        malformed + other >= sent - 5 && malformed >= sent - 50,
        "sent {sent}, counted {malformed} malformed: {fin}"
    );
    for reason in [
        "sip_missing_call_id",
        "sip_content_length_exceeds_datagram",
        "sip_line_too_long",
        "sip_too_many_headers",
    ] {
        assert!(stat(&fin, reason) >= 1, "no {reason} counted: {fin}");
    }
}
