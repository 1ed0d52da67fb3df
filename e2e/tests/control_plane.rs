//! `siplb` as a separate control process over shared rings: status, stats, dialog
//! lookup, live backend changes under load, control-plane restart, observability
//! (Prometheus, JSON, DPDK telemetry, dpdk-dumpcap) and bad input.

use e2e::sipp::{stickiness, unix_now, Uac};
use e2e::topology::{backend_ip, Topology, VIP};
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
    let topo = Topology::with_backends(2).unwrap();
    let siplb = topo
        .start_siplb(&topo.siplb_config(&farm(&[1, 1])))
        .unwrap();
    let status = siplb.ok(&["status"]).unwrap();
    println!("{status}");
    assert!(
        status.contains("farm pbx") && status.contains("198.18.1.11:5060") && status.contains("up"),
        "{status}"
    );
    let uas = topo.start_uas_backends(&[]).unwrap();
    let run = Uac::new(&topo.client, "uac", 50, 50)
        .limit(50)
        .timeout_s(30)
        .traced()
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

/// A UAC placing `calls` calls of `hold_ms` at `rate` per second, started in the
/// background.
fn load(topo: &Topology, calls: u32, rate: u32, hold_ms: u32) -> Uac<'_> {
    Uac::new(&topo.client, "load", calls, rate)
        .limit(300)
        .hold_ms(hold_ms)
        .timeout_s(120)
}

fn active_dialogs(siplb: &e2e::siplb::Siplb, backend: &str) -> u64 {
    let s = siplb.ok(&["stats", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v["farms"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == backend)
        .map(|b| b["dialogs_active"].as_u64().unwrap())
        .unwrap_or(0)
}

#[test]
fn live_changes_under_load_lose_nothing() {
    e2e::require_root();
    let topo = Topology::with_backends(3).unwrap();
    let mut cfg = topo.siplb_config(&farm(&[1, 1]));
    let siplb = topo.start_siplb(&cfg).unwrap();
    let uas = topo.start_uas_backends(&[]).unwrap();
    // 20 calls/s of 3 s each for 25 s: about 60 dialogs in progress at any time.
    let mut calls = load(&topo, 500, 20, 3000).spawn(&topo.dir).unwrap();
    let b1 = backend_ip(1).to_string();
    let b2 = backend_ip(2).to_string();
    std::thread::sleep(Duration::from_secs(3));
    println!("{}", siplb.ok(&["backend", "add", "pbx", &b2]).unwrap());
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "{}",
        siplb
            .ok(&["backend", "weight", "pbx", &backend_ip(0).to_string(), "3"])
            .unwrap()
    );
    std::thread::sleep(Duration::from_secs(3));
    let drained_at = unix_now();
    println!("{}", siplb.ok(&["backend", "drain", "pbx", &b1]).unwrap());
    // Removal is refused while its dialogs run ...
    let early = siplb.cli(&["backend", "remove", "pbx", &b1]);
    assert!(
        !early.ok && early.stderr.contains("dialogs in progress"),
        "{}",
        early.stderr
    );
    // ... and accepted once they have ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while active_dialogs(&siplb, &b1) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the drained backend's dialogs never ended"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("{}", siplb.ok(&["backend", "remove", "pbx", &b1]).unwrap());
    // The operator edits the file: backend 2 stays, backend 0 back to weight 1.
    cfg = cfg.replace(
        &farm(&[1, 1]),
        &format!(
            "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nbackends = [ {{ address = \"{}\" }}, {{ address = \"{b2}\", weight = 2 }} ]\n",
            backend_ip(0)
        ),
    );
    std::fs::write(&siplb.config, &cfg).unwrap();
    println!("{}", siplb.ok(&["reload"]).unwrap());
    let status = siplb.ok(&["status"]).unwrap();
    println!("{status}");
    assert!(!status.contains(&format!("{b1}:5060")) && status.contains(&format!("{b2}:5060")));
    let run = calls.wait(Duration::from_secs(120)).unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    assert_eq!((run.successful, run.failed), (500, 0), "{}", run.output);
    let s = stickiness(&traces);
    println!("calls per backend {:?}", s.calls_per_backend);
    assert!(s.split.is_empty(), "dialogs changed backend: {:?}", s.split);
    s.assert_every_call_has("calls", &["INVITE", "ACK", "BYE", "200/BYE"]);
    let late: Vec<_> = traces[1]
        .iter()
        .filter(|m| !m.sent && m.kind == "INVITE" && m.time > drained_at + 0.5)
        .collect();
    assert!(
        late.is_empty(),
        "the drained backend got {} new calls",
        late.len()
    );
    assert!(
        s.calls_per_backend[2] > 50,
        "the added backend got few calls: {:?}",
        s.calls_per_backend
    );
}

#[test]
fn control_plane_restart_under_load_loses_nothing() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let mut siplb = topo
        .start_siplb(&topo.siplb_config(&farm(&[1, 1])))
        .unwrap();
    let uas = topo.start_uas_backends(&[]).unwrap();
    let mut calls = load(&topo, 300, 20, 1000).spawn(&topo.dir).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let rx = |s: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        v["totals"]["rx_packets"].as_u64().unwrap()
    };
    let before = rx(&siplb.ok(&["stats", "--json"]).unwrap());
    let dataplane = siplb.dataplane_pid().unwrap();
    siplb.daemon.signal(libc::SIGKILL);
    siplb
        .daemon
        .wait_timeout(Duration::from_secs(5))
        .expect("the control daemon died");
    assert!(
        !siplb.cli(&["status"]).ok,
        "no daemon answers while it is down"
    );
    std::thread::sleep(Duration::from_secs(4));
    siplb.start_daemon(&topo.lb).unwrap();
    assert!(siplb
        .daemon
        .output()
        .contains("attaching to the running dataplane"));
    assert_eq!(
        siplb.dataplane_pid(),
        Some(dataplane),
        "the same dataplane carried on"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let after = rx(&siplb.ok(&["stats", "--json"]).unwrap());
    assert!(
        after > before + 200,
        "the new control process sees live counters: {before} then {after}"
    );
    let run = calls.wait(Duration::from_secs(120)).unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    assert_eq!((run.successful, run.failed), (300, 0), "{}", run.output);
    assert!(stickiness(&traces).split.is_empty());
}

#[test]
fn metrics_json_telemetry_and_capture() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let siplb = topo
        .start_siplb(&topo.siplb_config(&farm(&[1, 1])))
        .unwrap();
    let uas = topo.start_uas_backends(&[]).unwrap();
    // A capture of the front port by dpdk-dumpcap (a DPDK secondary) while calls run.
    let pcap = topo.dir.join("front.pcapng");
    let mut dumpcap_cmd = std::process::Command::new("timeout");
    dumpcap_cmd
        .args([
            "30",
            "dpdk-dumpcap",
            &format!("--file-prefix={}", siplb.prefix),
            "-i",
            "0",
            "-c",
            "20",
            "-q",
            "-w",
        ])
        .arg(&pcap);
    let mut dumpcap =
        e2e::process::Proc::spawn("dpdk-dumpcap", dumpcap_cmd, &topo.dir.join("dumpcap.log"))
            .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let run = load(&topo, 40, 20, 100).run(&topo.dir).unwrap();
    assert_eq!((run.successful, run.failed), (40, 0));
    // Five datagrams to a VIP port no farm serves: dropped, and counted for the farm.
    for _ in 0..5 {
        topo.client
            .run(
                "bash",
                &["-c", &format!("echo closed > /dev/udp/{VIP}/5999")],
            )
            .unwrap();
    }
    let status = dumpcap
        .wait_timeout(Duration::from_secs(20))
        .expect("dumpcap stops after 20 packets");
    assert!(status.success(), "dpdk-dumpcap: {}", dumpcap.output());
    let size = std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20 * 60,
        "capture of {size} bytes:\n{}",
        dumpcap.output()
    );
    let text = std::fs::read(&pcap).unwrap();
    assert!(
        text.windows(6).any(|w| w == b"INVITE"),
        "the capture holds SIP"
    );
    drop(uas);
    std::thread::sleep(Duration::from_millis(1500));

    println!("{}", siplb.ok(&["stats"]).unwrap());
    let metrics = siplb.http_get(&topo.lb, "/metrics").unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(value("siplb_rx_packets_total") > 200.0, "{metrics}");
    assert!(value("siplb_sip_requests_total") >= 120.0, "{metrics}");
    assert!(metrics.contains(
        "siplb_backend_packets_total{farm=\"pbx\",backend=\"198.18.1.11:5060\",direction=\"to\"}"
    ));
    assert!(metrics.contains("# TYPE siplb_drops_total counter"));
    // Each backend's answers: SIPp's UAS answers every INVITE with 180 and 200 and
    // every BYE with 200; each INVITE is timed to its 200, each transaction to its
    // first answer.
    let class = |c: &str| {
        value(&format!("siplb_backend_responses_total{{farm=\"pbx\",backend=\"198.18.1.11:5060\",class=\"{c}\"}}"))
        + value(&format!("siplb_backend_responses_total{{farm=\"pbx\",backend=\"198.18.1.12:5060\",class=\"{c}\"}}"))
    };
    assert_eq!(
        (class("1xx"), class("2xx"), class("5xx")),
        (40.0, 80.0, 0.0),
        "{metrics}"
    );
    assert_eq!(
        value("siplb_backend_invite_final_seconds_count"),
        40.0,
        "{metrics}"
    );
    assert_eq!(
        value("siplb_backend_first_response_seconds_count"),
        80.0,
        "{metrics}"
    );
    let inf = value("siplb_backend_invite_final_seconds_bucket{farm=\"pbx\",backend=\"198.18.1.11:5060\",le=\"+Inf\"}")
        + value("siplb_backend_invite_final_seconds_bucket{farm=\"pbx\",backend=\"198.18.1.12:5060\",le=\"+Inf\"}");
    assert_eq!(inf, 40.0, "{metrics}");
    assert!(
        value("siplb_backend_invite_final_seconds_sum") > 0.0,
        "{metrics}"
    );
    assert_eq!(
        value("siplb_farm_drops_total{farm=\"pbx\",reason=\"vip_port_closed\"}"),
        5.0,
        "{metrics}"
    );
    assert_eq!(value("siplb_dialog_table_full_total"), 0.0, "{metrics}");
    assert_eq!(value("siplb_request_times_full_total"), 0.0, "{metrics}");
    // Every metric the Grafana dashboard queries is a family of the live /metrics.
    let used = dashboard_metrics();
    assert!(used.len() >= 30, "{used:?}");
    let missing: Vec<_> = used.iter().filter(|m| !declared(&metrics, m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not in:\n{metrics}"
    );
    println!(
        "docs/grafana/siplb.json: {} metrics, all in /metrics",
        used.len()
    );
    let status: serde_json::Value =
        serde_json::from_str(&siplb.http_get(&topo.lb, "/status").unwrap()).unwrap();
    assert_eq!(status["farms"][0]["backends"].as_array().unwrap().len(), 2);
    let stats: serde_json::Value =
        serde_json::from_str(&siplb.http_get(&topo.lb, "/stats").unwrap()).unwrap();
    assert!(stats["totals"]["sip_requests"].as_u64().unwrap() >= 120);

    // DPDK's own telemetry client lists and reads siplb's counters.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '/\\n/siplb/stats\\n/siplb/drops\\n' | dpdk-telemetry.py -f {}",
            siplb.prefix
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/siplb/stats") && text.contains("\"sip_requests\""),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("\"not_our_mac\"") || text.contains("\"sip_bad_via\""),
        "{text}"
    );
}

#[test]
fn each_backends_503s_and_final_answer_times_are_counted() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let siplb = topo
        .start_siplb(&topo.siplb_config(&farm(&[1, 1])))
        .unwrap();
    // Servers out of capacity: 100 then 503 to every INVITE.
    let uas = e2e::sipp::start_backend_uases(
        &topo.backends,
        &topo.dir,
        "busy",
        Some("unavailable_uas"),
        &[],
    )
    .unwrap();
    let run = Uac::new(&topo.client, "busy", 30, 30)
        .scenario("unavailable_uac")
        .args(["-s", "service"])
        .timeout_s(30)
        .run(&topo.dir)
        .unwrap();
    assert_eq!((run.successful, run.failed), (30, 0), "{}", run.output);
    drop(uas);
    std::thread::sleep(Duration::from_millis(1500));
    println!("{}", siplb.ok(&["stats"]).unwrap());
    let v: serde_json::Value =
        serde_json::from_str(&siplb.ok(&["stats", "--json"]).unwrap()).unwrap();
    let backends = v["farms"][0]["backends"].as_array().unwrap();
    let sum = |f: &dyn Fn(&serde_json::Value) -> u64| backends.iter().map(f).sum::<u64>();
    let r = |b: &serde_json::Value, k: &str| b["responses"][k].as_u64().unwrap();
    let class = |i: usize| sum(&|b| b["responses"]["classes"][i].as_u64().unwrap());
    let count = |k: &str| sum(&|b| b["responses"][k]["count"].as_u64().unwrap());
    // SIPp answers once; a retransmitted 503 would be counted again, never timed again.
    let busy = sum(&|b| r(b, "service_unavailable"));
    assert!((30..=33).contains(&busy), "{busy} 503s: {v}");
    assert_eq!((class(0), class(1), class(4)), (30, 0, busy), "{v}");
    assert_eq!(
        (count("first_response"), count("invite_final")),
        (30, 30),
        "each INVITE timed to its 100 and to its 503: {v}"
    );
    for b in backends {
        let p99 = b["responses"]["invite_final"]["p99_ms"].as_f64().unwrap();
        assert!(p99 > 0.0 && p99 < 1000.0, "{p99} ms: {b}");
    }
}

/// The metric names in the queries of `docs/grafana/siplb.json` (its panels' and its
/// variables').
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/siplb.json");
    let text = std::fs::read_to_string(path).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            queries.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            queries.push(q.to_string());
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for q in &queries {
        for (i, _) in q.match_indices("siplb_") {
            let name: String = q[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// Whether `/metrics` declares `name`'s family (a histogram's for its `_bucket`,
/// `_sum` and `_count`).
fn declared(metrics: &str, name: &str) -> bool {
    let family = ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|x| name.strip_suffix(x))
        .find(|f| metrics.contains(&format!("# TYPE {f} histogram\n")))
        .unwrap_or(name);
    metrics
        .lines()
        .any(|l| l.strip_prefix("# TYPE ").and_then(|r| r.split(' ').next()) == Some(family))
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let cfg = topo.siplb_config(&farm(&[1, 1]));
    // No daemon yet: the CLI says so.
    std::fs::write(topo.dir.join("siplb.toml"), &cfg).unwrap();
    let no_daemon = std::process::Command::new(e2e::bins::path("siplb"))
        .arg("-c")
        .arg(topo.dir.join("siplb.toml"))
        .arg("status")
        .output()
        .unwrap();
    assert!(!no_daemon.status.success());
    assert!(String::from_utf8_lossy(&no_daemon.stderr).contains("no siplb control daemon"));
    // --attach with no dataplane running.
    let attach = topo
        .lb
        .command(e2e::bins::path("siplb"))
        .arg("-c")
        .arg(topo.dir.join("siplb.toml"))
        .args(["run", "--attach"])
        .output()
        .unwrap();
    assert!(!attach.status.success());
    assert!(String::from_utf8_lossy(&attach.stderr).contains("no siplb dataplane is running"));
    // A malformed configuration names the file, line and field.
    let bad = topo.dir.join("bad.toml");
    std::fs::write(&bad, cfg.replace("weight = 1", "weight = \"heavy\"")).unwrap();
    let o = topo
        .lb
        .command(e2e::bins::path("siplb"))
        .arg("-c")
        .arg(&bad)
        .arg("run")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("bad.toml:") && err.contains("weight"),
        "{err}"
    );

    let siplb = topo.start_siplb(&cfg).unwrap();
    let generation = |s: &e2e::siplb::Siplb| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&s.ok(&["status", "--json"]).unwrap()).unwrap();
        v["generation"].as_u64().unwrap()
    };
    let g = generation(&siplb);
    // A second `siplb run` for the same balancer.
    let second = topo
        .lb
        .command(e2e::bins::path("siplb"))
        .arg("-c")
        .arg(&siplb.config)
        .arg("run")
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already manages this balancer"));
    // Unknown backends and farms, bad addresses, an invalid backend.
    for (args, want) in [
        (
            vec!["backend", "drain", "pbx", "198.18.1.99"],
            "has no backend 198.18.1.99:5060",
        ),
        (
            vec!["backend", "weight", "voicemail", "198.18.1.11", "2"],
            "no farm named `voicemail`",
        ),
        (
            vec!["backend", "add", "pbx", "not-an-ip"],
            "not an IPv4 address",
        ),
        (
            vec!["backend", "add", "pbx", "198.19.7.7"],
            "no port's subnet",
        ),
        (
            vec!["backend", "remove", "pbx", "198.18.1.11:5099"],
            "has no backend",
        ),
    ] {
        let o = siplb.cli(&args);
        assert!(!o.ok, "{args:?} succeeded");
        assert!(o.stderr.contains(want), "{args:?}: {}", o.stderr);
    }
    // A reload of a broken file is refused and the running state stays.
    std::fs::write(&siplb.config, cfg.replace("vip = ", "vip = 42 #")).unwrap();
    let o = siplb.cli(&["reload"]);
    assert!(!o.ok && o.stderr.contains("siplb.toml:"), "{}", o.stderr);
    assert_eq!(generation(&siplb), g, "nothing changed");
    assert!(siplb.daemon.output().contains("control socket"));
}

#[test]
fn ended_dialogs_expire_and_are_counted() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let farm = farm(&[1, 1]).replace("backends = [", "timers = { linger = 1 }\nbackends = [");
    let siplb = topo.start_siplb(&topo.siplb_config(&farm)).unwrap();
    let uas = topo.start_uas_backends(&[]).unwrap();
    let run = load(&topo, 20, 20, 0).run(&topo.dir).unwrap();
    assert_eq!((run.successful, run.failed), (20, 0));
    drop(uas);
    std::thread::sleep(Duration::from_secs(4));
    let v: serde_json::Value =
        serde_json::from_str(&siplb.ok(&["stats", "--json"]).unwrap()).unwrap();
    assert_eq!(v["totals"]["dialogs_created"], 20);
    assert_eq!(v["dialogs_expired"], 20, "{v}");
    assert_eq!(v["farms"][0]["dialogs_active"], 0);
}
