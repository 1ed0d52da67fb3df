//! Peers whose kernels leave UDP/TCP checksums to the NIC (TX checksum offload on
//! their veth, the default): such frames reach the af_packet PMD unfinished. The
//! balancer finishes them, so health checks and calls work on a fresh veth set-up
//! without `ethtool -K <if> tx off` by hand (the other test beds turn it off).

use e2e::bed::stat;
use e2e::sipp::{stickiness, Uac};
use e2e::topology::{backend_ip, Topology, VIP};
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn health_checks_and_calls_work_with_peers_offloading_checksums() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    for (ns, ifname) in [
        (&topo.client, "cli0"),
        (&topo.backends[0], "be0"),
        (&topo.backends[1], "be0"),
    ] {
        ns.run("ethtool", &["-K", ifname, "tx", "on"]).unwrap();
    }
    let uas = topo.start_uas_backends(&["-aa"]).unwrap();
    let b: Vec<String> = (0..2)
        .map(|i| format!("{{ address = \"{}\", port = 5060 }}", backend_ip(i)))
        .collect();
    let farm = format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nhealth = {{ check = \"options\", interval_ms = 200, timeout_ms = 150, rise = 2, fall = 2 }}\nbackends = [ {} ]\n",
        b.join(", ")
    );
    let siplb = topo.start_siplb(&topo.siplb_config(&farm)).unwrap();

    // Both backends come up: their OPTIONS answers, sent with unfinished checksums,
    // reached the control daemon's socket through the exception path.
    let deadline = Instant::now() + Duration::from_secs(15);
    let checks = loop {
        let st: Value = serde_json::from_str(&siplb.ok(&["status", "--json"]).unwrap()).unwrap();
        let backends = &st["farms"][0]["backends"];
        let up = (0..2).all(|i| backends[i]["health"] == "up");
        if up {
            break (0..2)
                .map(|i| backends[i]["checks"]["checks"].as_u64().unwrap_or(0))
                .collect::<Vec<_>>();
        }
        assert!(
            Instant::now() < deadline,
            "backends not up: {}",
            serde_json::to_string_pretty(backends).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("both backends up after {checks:?} checks");

    let run = Uac::new(&topo.client, "uac", 40, 20)
        .timeout_s(30)
        .run(&topo.dir)
        .unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let s = stickiness(&traces);
    println!(
        "{} calls successful, {} failed; calls per backend {:?}",
        run.successful, run.failed, s.calls_per_backend
    );
    assert_eq!((run.successful, run.failed), (40, 0), "{}", run.output);
    // The backends' logs also hold the health checks' OPTIONS: count the INVITEs.
    let invites: usize = s
        .by_call
        .iter()
        .map(|b| {
            b.values()
                .filter(|k| k.iter().any(|k| k == "INVITE"))
                .count()
        })
        .sum();
    assert_eq!(invites, 40);

    // The dataplane counted what it finished: at least every call's six messages
    // (INVITE, ACK, BYE from the client; 180, 200, 200 from a backend) and the
    // checks' answers.
    siplb.ok(&["shutdown"]).unwrap();
    let fin = siplb.final_counters(Duration::from_secs(10));
    println!("{fin}");
    let finished = stat(&fin, "checksums_finished");
    assert!(
        finished >= 40 * 6 + checks.iter().sum::<u64>(),
        "{finished} checksums finished: {fin}"
    );
}
