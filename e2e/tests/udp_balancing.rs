//! Real SIPp calls through the VIP in `dnat` mode: weights are honoured and every
//! message of a call reaches one backend, checked at the backends' own message logs.

use e2e::sipp::{self, stickiness, Uac};
use e2e::topology::{backend_ip, Spec, Topology, CLIENT_IP, VIP};
use std::time::Duration;

const CALLS: u32 = 600;
/// Allowed distance between a backend's share of calls and its weight share, in
/// percentage points. With 600 calls the binomial standard deviation of a 3:1 split is
/// 1.8 points; 6 points is over 3 sigma.
const SHARE_TOLERANCE_PCT: f64 = 6.0;

fn run(weights: &[u32]) {
    e2e::require_root();
    let topo = Topology::up(Spec {
        backends: weights.len(),
        workers: 1,
    })
    .expect("topology");
    let cfg = topo.base_config() + &topo.farm_config("dnat", "call-id", weights, "");
    let mut dp = topo
        .start_dataplane(&cfg, &["--stats-interval", "2"])
        .expect("dataplane");
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
            .expect("uas")
        })
        .collect();
    let uac = Uac {
        ns: &topo.client,
        local_ip: CLIENT_IP,
        local_port: 5060,
        target: format!("{VIP}:5060"),
        calls: CALLS,
        rate: 100,
        limit: 100,
        scenario: None,
        extra: vec![],
        timeout: Duration::from_secs(90),
        name: "uac".into(),
        trace: false,
    }
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
    let want = [
        "INVITE",
        "180/INVITE",
        "200/INVITE",
        "ACK",
        "BYE",
        "200/BYE",
    ];
    for (b, calls) in s.by_call.iter().enumerate() {
        for (cid, kinds) in calls {
            for w in want {
                assert!(
                    kinds.iter().any(|k| k == w),
                    "backend {b} call {cid}: no {w} in {kinds:?}"
                );
            }
        }
    }
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
