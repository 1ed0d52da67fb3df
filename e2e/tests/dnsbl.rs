//! DNSBL lookups of new sources (issue 14, item 4) against a real DNS server.
//!
//! dnsmasq in a namespace of its own (198.18.9.2, reached from the balancer's namespace
//! over a veth) serves the test zone `bl.test.`: `66.0.18.198.bl.test` is 127.0.0.2
//! (listed), every other name NXDOMAIN. `siplb run` looks new sources up there with
//! `dnsbl_pending = "hold"` and `dnsbl_qps = 20`:
//! - the listed source's INVITEs never reach the backend: the first waits for its
//!   verdict, the rest are dropped as `banned`, and `siplb security bans` shows it with
//!   reason `dnsbl`;
//! - a clean source's calls all complete: its first INVITE is held (`dnsbl_pending`)
//!   and SIPp's retransmission passes after the verdict;
//! - 40 new sources sending twice cost exactly 40 queries (the verdicts are kept), at
//!   no more than 20 a second, and their first requests were held, their second ones
//!   reached the backend;
//! - reloaded with `dnsbl_pending = "admit"` (the default), a second listed source's
//!   first INVITE reaches the backend while its lookup is pending, none after the
//!   verdict.

use e2e::netns::{veth, Netns};
use e2e::process::Proc;
use e2e::sipp::Uac;
use e2e::topology::Topology;
use std::time::{Duration, Instant};

const QPS: u32 = 20;
const SOURCES: u8 = 40;
const LISTED: &str = "198.18.0.66";
/// Listed too, and sends only after the reload to `admit`.
const LISTED_LATE: &str = "198.18.0.67";

/// Sends one SIP request per (source, Call-ID) from the client namespace, `gap_ms`
/// apart.
fn send(topo: &Topology, method: &str, sends: &[(String, String)], gap_ms: u32) {
    let list: Vec<String> = sends
        .iter()
        .map(|(s, c)| format!("(\"{s}\", \"{c}\")"))
        .collect();
    let script = format!(
        r#"
import socket, time
for src, cid in [{}]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 5060))
    m = ("{method} sip:100@198.18.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP %s:5060;branch=z9hG4bK%s\r\n"
         "From: <sip:200@%s>;tag=%s\r\nTo: <sip:100@198.18.0.2>\r\nCall-ID: %s\r\n"
         "CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n") % (src, cid, src, cid, cid)
    s.sendto(m.encode(), ("198.18.0.2", 5060))
    s.close()
    time.sleep({gap})
"#,
        list.join(", "),
        gap = f64::from(gap_ms) / 1000.0
    );
    topo.client.run("python3", &["-c", &script]).unwrap();
}

/// The queries for `bl.test` that dnsmasq logged.
fn queries(dns: &Proc) -> Vec<String> {
    dns.output()
        .lines()
        .filter(|l| l.contains("query[A]") && l.contains(".bl.test from"))
        .map(str::to_string)
        .collect()
}

fn stats(siplb: &e2e::siplb::Siplb) -> serde_json::Value {
    serde_json::from_str(&siplb.ok(&["stats", "--json"]).unwrap()).unwrap()
}

#[test]
fn listed_sources_are_banned_clean_ones_held_until_their_verdict_and_answers_kept() {
    e2e::require_root();
    let topo = Topology::with_backends(1).unwrap();
    let dns_ns = Netns::create(&format!("{}-dns", topo.tag)).unwrap();
    veth(&topo.lb, "dnsq", &dns_ns, "dnsa").unwrap();
    topo.lb.iface_up("dnsq", Some("198.18.9.1/30")).unwrap();
    dns_ns.iface_up("dnsa", Some("198.18.9.2/30")).unwrap();
    let mut cmd = dns_ns.command("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file",
        "--user=root",
        "--bind-interfaces",
        "--listen-address=198.18.9.2",
        // Names under bl.test are answered here only: the listed one, else NXDOMAIN.
        "--local=/bl.test/",
        "--host-record=66.0.18.198.bl.test,127.0.0.2",
        "--host-record=67.0.18.198.bl.test,127.0.0.3",
        "--local-ttl=300",
        "--log-queries",
        "--log-facility=-",
    ]);
    // Declared after its namespace: stopped first, also when the test fails.
    let mut dns = Proc::spawn("dnsmasq", cmd, &topo.dir.join("dnsmasq.log")).unwrap();
    dns.wait_for_output("started, version", Duration::from_secs(10))
        .unwrap();
    let cfg = format!(
        "[security]\ndnsbl = [\"bl.test\"]\ndnsbl_resolver = \"198.18.9.2\"\ndnsbl_pending = \"hold\"\ndnsbl_qps = {QPS}\n\n{}",
        topo.siplb_config(&topo.farm_config("dnat", "call-id", &[1], ""))
    );
    let siplb = topo.start_siplb(&cfg).unwrap();
    let uas = topo.start_uas_backends(&["-aa"]).unwrap();
    topo.client
        .ip(&["addr", "add", &format!("{LISTED}/24"), "dev", "cli0"])
        .unwrap();
    let sources: Vec<String> = (0..SOURCES)
        .map(|i| format!("198.18.0.{}", 100 + i))
        .collect();
    for s in &sources {
        topo.client
            .ip(&["addr", "add", &format!("{s}/24"), "dev", "cli0"])
            .unwrap();
    }

    // The listed source: its first INVITE waits for the verdict, which bans it.
    let sent = Instant::now();
    send(&topo, "INVITE", &[(LISTED.into(), "bad-0".into())], 0);
    let banned_after = e2e::wait_until("the listed source banned", Duration::from_secs(10), || {
        let bans = siplb.ok(&["security", "bans"]).unwrap();
        bans.lines()
            .any(|l| l.contains(LISTED) && l.contains("dnsbl"))
    });
    println!("INVITE sent to ban listed: {:?}", sent.elapsed());
    // The stats are sampled every second.
    std::thread::sleep(Duration::from_millis(1100));
    println!(
        "one lookup, taken from the ring to its verdict in the rates table: {} us",
        stats(&siplb)["dnsbl"]["latency_us_max"]
    );
    let retries: Vec<(String, String)> = (1..=5)
        .map(|i| (LISTED.into(), format!("bad-{i}")))
        .collect();
    send(&topo, "INVITE", &retries, 100);
    println!("{}", siplb.ok(&["security", "bans"]).unwrap());

    // A clean source: SIPp's first INVITE is held, its retransmission passes.
    let calls = Uac::new(&topo.client, "clean", 5, 10)
        .limit(5)
        .timeout_s(20)
        .traced()
        .run(&topo.dir)
        .unwrap();
    let invites_sent = calls
        .messages
        .iter()
        .filter(|m| m.sent && m.kind == "INVITE")
        .count();
    println!(
        "clean source: {} successful, {} failed, {invites_sent} INVITEs sent for 5 calls",
        calls.successful, calls.failed
    );

    // 40 new sources at once: one query each, paced; their first requests held.
    let first: Vec<(String, String)> = sources
        .iter()
        .map(|s| (s.clone(), format!("r1-{s}")))
        .collect();
    let before = queries(&dns).len();
    send(&topo, "OPTIONS", &first, 0);
    let mut seen: Vec<(Instant, usize)> = Vec::new();
    e2e::wait_until("40 sources looked up", Duration::from_secs(15), || {
        let n = queries(&dns).len() - before;
        if seen.last().is_none_or(|l| l.1 != n) {
            seen.push((Instant::now(), n));
        }
        n >= usize::from(SOURCES)
    });
    std::thread::sleep(Duration::from_millis(300));
    let second: Vec<(String, String)> = sources
        .iter()
        .map(|s| (s.clone(), format!("r2-{s}")))
        .collect();
    send(&topo, "OPTIONS", &second, 0);
    std::thread::sleep(Duration::from_millis(500));

    // `admit`, by a reload: the late listed source's first INVITE passes while its
    // lookup is pending, then it is banned.
    std::fs::write(
        &siplb.config,
        cfg.replace("dnsbl_pending = \"hold\"", "dnsbl_pending = \"admit\""),
    )
    .unwrap();
    println!("{}", siplb.ok(&["reload"]).unwrap());
    topo.client
        .ip(&["addr", "add", &format!("{LISTED_LATE}/24"), "dev", "cli0"])
        .unwrap();
    send(&topo, "INVITE", &[(LISTED_LATE.into(), "late-0".into())], 0);
    e2e::wait_until(
        "the late listed source banned",
        Duration::from_secs(10),
        || {
            let bans = siplb.ok(&["security", "bans"]).unwrap();
            bans.lines()
                .any(|l| l.contains(LISTED_LATE) && l.contains("dnsbl"))
        },
    );
    let late: Vec<(String, String)> = (1..=5)
        .map(|i| (LISTED_LATE.into(), format!("late-{i}")))
        .collect();
    send(&topo, "INVITE", &late, 100);

    let (t0, n0) = seen[0];
    let (t1, n1) = *seen.last().unwrap();
    let paced = (n1 - n0) as f64 / (t1 - t0).as_secs_f64().max(1e-3);
    println!(
        "{} queries for {SOURCES} sources: {n0} at first sight, the rest at {paced:.1}/s (dnsbl_qps = {QPS}) over {:?}",
        n1,
        t1 - t0
    );
    // The stats are sampled every second.
    std::thread::sleep(Duration::from_millis(1100));
    let st = stats(&siplb);
    println!("{}", siplb.ok(&["stats"]).unwrap());
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let all = queries(&dns);

    let at_backend = |prefix: &str| {
        traces
            .iter()
            .flatten()
            .filter(|m| !m.sent && m.call_id.starts_with(prefix))
            .count()
    };
    let d = &st["dnsbl"];
    let dropped = |r: &str| st["drops"][r].as_u64().unwrap_or(0);
    println!(
        "dnsbl: {d}\ndrops dnsbl_pending={} banned={}; at the backend: bad-* {}, r1-* {}, r2-* {}, late-* {}",
        dropped("dnsbl_pending"),
        dropped("banned"),
        at_backend("bad-"),
        at_backend("r1-"),
        at_backend("r2-"),
        at_backend("late-"),
    );
    assert!(banned_after < Duration::from_secs(10));
    assert_eq!(
        at_backend("bad-"),
        0,
        "no INVITE of the listed source reached the backend"
    );
    assert_eq!((calls.successful, calls.failed), (5, 0), "{}", calls.output);
    assert!(invites_sent > 5, "the held first INVITE was retransmitted");
    assert_eq!(
        at_backend("r1-"),
        0,
        "first requests of unjudged sources are held"
    );
    assert_eq!(
        at_backend("r2-"),
        usize::from(SOURCES),
        "after the verdict they pass"
    );
    assert_eq!(
        at_backend("late-0"),
        1,
        "admit: the first INVITE passes while pending"
    );
    assert_eq!(at_backend("late-"), 1, "admit: none after the verdict");
    let want = 3 + usize::from(SOURCES);
    assert_eq!(all.len(), want, "one query per source: {all:#?}");
    assert_eq!(d["queries"].as_u64(), Some(want as u64));
    assert_eq!(d["listed"].as_u64(), Some(2));
    assert_eq!(d["clean"].as_u64(), Some(1 + u64::from(SOURCES)));
    assert_eq!(d["errors"].as_u64(), Some(0));
    assert!(dropped("banned") >= 10, "the listed sources' later INVITEs");
    assert!(
        dropped("dnsbl_pending") > u64::from(SOURCES),
        "held: the first INVITEs and OPTIONS"
    );
    // 38 queries beyond the bucket's 2 need at least 1.9 s at 20 a second.
    assert!(
        (t1 - t0) >= Duration::from_millis(1500),
        "{SOURCES} queries in {:?}: faster than dnsbl_qps",
        t1 - t0
    );
}
