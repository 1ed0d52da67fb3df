//! `siplb` as a separate control process over shared rings: status, stats, dialog
//! lookup, live backend changes under load, control-plane restart, observability
//! (Prometheus, JSON, DPDK telemetry, dpdk-dumpcap) and bad input.

use e2e::sipp::{self, Uac};
use e2e::topology::{backend_ip, Spec, Topology, CLIENT_IP, VIP};
use std::time::Duration;

fn farm(weights: &[u32]) -> String {
    let b: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("  {{ address = \"{}\", weight = {w} }},", backend_ip(i)))
        .collect();
    format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nbackends = [\n{}\n]\n",
        b.join("\n")
    )
}

#[test]
fn status_stats_dialog_and_shutdown() {
    e2e::require_root();
    let topo = Topology::up(Spec {
        backends: 2,
        workers: 1,
    })
    .unwrap();
    let siplb = topo
        .start_siplb(&topo.siplb_config(&farm(&[1, 1])))
        .unwrap();
    let status = siplb.ok(&["status"]).unwrap();
    println!("{status}");
    assert!(
        status.contains("farm pbx") && status.contains("198.18.1.11:5060") && status.contains("up"),
        "{status}"
    );
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
            .unwrap()
        })
        .collect();
    let run = Uac {
        ns: &topo.client,
        local_ip: CLIENT_IP,
        local_port: 5060,
        target: format!("{VIP}:5060"),
        calls: 50,
        rate: 50,
        limit: 50,
        scenario: None,
        extra: vec![],
        timeout: Duration::from_secs(30),
        name: "uac".into(),
        trace: true,
    }
    .run(&topo.dir)
    .unwrap();
    assert_eq!((run.successful, run.failed), (50, 0));
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    std::thread::sleep(Duration::from_millis(1500));
    let stats = siplb.ok(&["stats"]).unwrap();
    println!("{stats}");
    assert!(stats.contains("farm pbx"), "{stats}");
    // The dialog lookup names the backend that really had the call.
    let call_id = &run
        .messages
        .iter()
        .find(|m| m.kind == "INVITE")
        .unwrap()
        .call_id;
    let d = siplb.ok(&["dialog", call_id]).unwrap();
    println!("{d}");
    let owner = traces
        .iter()
        .position(|t| t.iter().any(|m| &m.call_id == call_id))
        .unwrap();
    assert!(d.contains(&format!("{}:5060", backend_ip(owner))), "{d}");
    assert!(d.contains("terminating"), "the call ended with BYE: {d}");
    let missing = siplb.cli(&["dialog", "no-such-call"]);
    assert!(
        !missing.ok && missing.stderr.contains("no dialog"),
        "{}",
        missing.stderr
    );
    assert!(siplb.ok(&["shutdown"]).unwrap().contains("shutting down"));
}
