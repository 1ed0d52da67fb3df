//! `[security]` on real traffic: a denied source, a SIP scanner and a call flood from
//! one source are dropped and counted; legitimate calls still pass.

use e2e::bed::stat;
use e2e::sipp::Uac;
use e2e::topology::Topology;
use std::collections::BTreeMap;
use std::time::Duration;

const LIMIT: u32 = 20;

#[test]
fn denied_sources_scanners_and_floods_are_dropped_and_counted() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let cfg = format!(
        "[security]\ndeny = [\"198.18.0.66\"]\nmax_new_per_source = {LIMIT}\nban_overruns = 0\n\n{}{}",
        topo.base_config(),
        topo.farm_config("dnat", "call-id", &[1, 1], "")
    );
    let mut dp = topo.start_dataplane(&cfg, &[]).unwrap();
    topo.client
        .ip(&["addr", "add", "198.18.0.66/24", "dev", "cli0"])
        .unwrap();
    let uas = topo.start_uas_backends(&["-aa"]).unwrap();
    // 30 OPTIONS from the denied address and 30 from a scanner.
    let script = r#"
import socket
def send(src, ua, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    for i in range(n):
        m = ("OPTIONS sip:100@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%d%s\r\n"
             "From: <sip:100@198.18.0.2>;tag=%d\r\nTo: <sip:100@198.18.0.2>\r\nCall-ID: %s-%d\r\n"
             "CSeq: 1 OPTIONS\r\nUser-Agent: %s\r\nContent-Length: 0\r\n\r\n") % (src, s.getsockname()[1], i, ua[:3], i, ua[:5], i, ua)
        s.sendto(m.encode(), ("198.18.0.2", 5060))
send("198.18.0.66", "Linphone/5.2", 30)
send("198.18.0.10", "friendly-scanner", 30)
"#;
    topo.client.run("python3", &["-c", script]).unwrap();
    // A flood: 300 calls at 100 per second from one address, 5 times the limit.
    let flood = Uac::new(&topo.client, "flood", 300, 100)
        .limit(300)
        .args(["-nr"])
        .timeout_s(6)
        .run(&topo.dir)
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // Afterwards, calls within the limit pass.
    let calm = Uac::new(&topo.client, "calm", 40, 10)
        .limit(40)
        .timeout_s(30)
        .run(&topo.dir)
        .unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let fin = dp.stop_final_stats();
    println!("{fin}");
    println!(
        "flood: {} successful, {} failed; calm: {} successful",
        flood.successful, flood.failed, calm.successful
    );
    assert_eq!((calm.successful, calm.failed), (40, 0), "{}", calm.output);
    assert!(stat(&fin, "denied") >= 30, "{fin}");
    assert!(stat(&fin, "scanner") >= 30, "{fin}");
    assert!(stat(&fin, "flood") > 100, "{fin}");
    assert!(
        flood.successful < 150,
        "a flood at 5 times the limit must lose calls: {} passed",
        flood.successful
    );
    // Nothing from the denied address or the scanner reached a backend, and no second
    // saw more new calls than the limit.
    let mut per_second: BTreeMap<i64, std::collections::BTreeSet<String>> = BTreeMap::new();
    for t in &traces {
        for m in t.iter().filter(|m| !m.sent) {
            assert!(
                !m.call_id.starts_with("Linph") && !m.call_id.starts_with("frien"),
                "{m:?}"
            );
            if m.kind == "INVITE" {
                per_second
                    .entry(m.time as i64)
                    .or_default()
                    .insert(m.call_id.clone());
            }
        }
    }
    // The limit counts in fixed one-second windows of the dataplane's clock, which the
    // backends' log seconds straddle: any logged second holds at most two windows' worth,
    // and the whole flood at most one window's worth per second it lasted, plus one.
    let worst = per_second.values().map(|s| s.len()).max().unwrap_or(0);
    let total: usize = per_second.values().map(|s| s.len()).sum();
    let span = per_second.keys().last().unwrap_or(&0) - per_second.keys().next().unwrap_or(&0) + 1;
    println!("new calls at the backends: {total} over {span} s, at most {worst} in one logged second (limit {LIMIT}/s)");
    assert!(
        worst <= 2 * LIMIT as usize,
        "{worst} new calls in one second"
    );
    assert!(
        total <= LIMIT as usize * (span as usize + 1),
        "{total} new calls in {span} s"
    );
}
