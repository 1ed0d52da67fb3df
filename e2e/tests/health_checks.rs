//! Health checks against real peers: each check type (SIP OPTIONS, TCP connect, a
//! dummy call with digest REGISTER and RTP, an external command) against a working
//! SIPp server, a closed port and a server that hangs; then a backend killed under
//! load: detection time, calls lost, no new calls to it, and its return after `rise`
//! good checks. The checks run in the control daemon and reach the backends through
//! the dataplane's exception path.

use e2e::process::Proc;
use e2e::siplb::Siplb;
use e2e::sipp::{unix_now, Uac};
use e2e::topology::{backend_ip, Topology, VIP};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn farm(health: &str) -> String {
    let b: Vec<String> = (0..3)
        .map(|i| format!("  {{ address = \"{}\", port = 5060 }},", backend_ip(i)))
        .collect();
    format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nhealth = {health}\nbackends = [\n{}\n]\n",
        b.join("\n")
    )
}

fn status(s: &Siplb) -> Value {
    serde_json::from_str(&s.ok(&["status", "--json"]).unwrap()).unwrap()
}

fn backend(s: &Value, i: usize) -> &Value {
    &s["farms"][0]["backends"][i]
}

fn last_result(s: &Value, i: usize) -> String {
    backend(s, i)["checks"]["last_result"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Polls `siplb status --json` until `cond` holds; panics with the last status after
/// `limit`.
fn wait_for(s: &Siplb, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let st = status(s);
        if cond(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; status:\n{}",
            serde_json::to_string_pretty(&st["farms"]).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn health(s: &Value, i: usize) -> &str {
    backend(s, i)["health"].as_str().unwrap_or("")
}

/// Checks finished on backend `i` since the checker started.
fn checks(s: &Value, i: usize) -> u64 {
    backend(s, i)["checks"]["checks"].as_u64().unwrap_or(0)
}

#[test]
fn each_check_type_against_sipp_a_closed_port_and_a_hung_server() {
    e2e::require_root();
    let topo = Topology::with_backends(3).unwrap();
    // Backend 0: SIPp answering OPTIONS (-aa), a digest REGISTER and calls, echoing RTP.
    let _sipp = topo
        .start_uas(
            0,
            "be0",
            Some("health_uas"),
            &["-aa", "-rtp_echo", "-mp", "6000"],
        )
        .unwrap();
    // Backend 1: nothing listens (the kernel answers with ICMP port unreachable / RST).
    // Backend 2: a server that reads everything and answers nothing.
    let mut sink_cmd = topo.backends[2].command(e2e::bins::path("sip-sink"));
    sink_cmd.arg(format!("{}:5060", backend_ip(2)));
    let _sink = Proc::spawn("sip-sink", sink_cmd, &topo.dir.join("sink.log")).unwrap();

    // The command check runs SIPp's built-in UAC as a check_sip-style probe.
    let probe = format!(
        "cd {} && sipp -sn uac HOST:PORT -m 1 -nostdin -timeout 2s -timeout_error -d 100",
        topo.dir.display()
    );
    let phases: Vec<(&str, String, [bool; 3], [&str; 3])> = vec![
        (
            "options",
            "{ check = \"options\", interval_ms = 300, timeout_ms = 250, rise = 1, fall = 2 }"
                .into(),
            [true, false, false],
            ["200", "OPTIONS: ", "no answer to OPTIONS within 250 ms"],
        ),
        (
            "tcp",
            "{ check = \"tcp\", interval_ms = 300, timeout_ms = 250, rise = 1, fall = 2 }".into(),
            [false, false, true],
            ["connection refused", "connection refused", "TCP connect to port 5060"],
        ),
        (
            "call",
            "{ check = \"call\", interval_ms = 1500, timeout_ms = 1000, rise = 1, fall = 1, call = { register = true, user = \"probe\", password = \"s3cret\", duration_ms = 300, expect_rtp = true } }".into(),
            [true, false, false],
            ["REGISTER 200, INVITE 200, RTP", "call: ", "no answer to REGISTER within 1000 ms"],
        ),
        (
            "command",
            format!("{{ check = \"command\", interval_ms = 3000, timeout_ms = 2800, rise = 1, fall = 1, command = \"{probe}\" }}"),
            [true, false, false],
            ["exit 0", "exited", "exited"],
        ),
    ];
    let mut siplb: Option<Siplb> = None;
    for (name, h, up, results) in &phases {
        let cfg = topo.siplb_config(&farm(h));
        match &siplb {
            None => siplb = Some(topo.start_siplb(&cfg).unwrap()),
            Some(s) => {
                std::fs::write(&s.config, &cfg).unwrap();
                s.ok(&["reload"]).unwrap();
            }
        }
        let s = siplb.as_ref().unwrap();
        let st = wait_for(s, name, Duration::from_secs(20), |st| {
            (0..3).all(|i| {
                checks(st, i) >= 1
                    && (health(st, i) == "up") == up[i]
                    && (health(st, i) == "down") != up[i]
                    && last_result(st, i).contains(results[i])
            })
        });
        for (i, up) in up.iter().enumerate() {
            println!(
                "{name:8} backend {i}: {:5} {}",
                health(&st, i),
                last_result(&st, i)
            );
            // What the dataplane applies follows the checks.
            let applied = backend(&st, i)["state"].as_str().unwrap();
            assert_eq!(applied == "down", !up, "{name} backend {i}: {applied}");
        }
    }
    let s = siplb.as_ref().unwrap();
    // Operators see it in the status table, the log and the metrics.
    let table = s.ok(&["status"]).unwrap();
    println!("{table}");
    assert!(table.contains("down after"), "{table}");
    let log = s.daemon.output();
    assert!(
        log.contains(
            "health: pbx 198.18.1.12:5060 is down after 2 failed checks in a row: OPTIONS:"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "health: pbx 198.18.1.13:5060 is up after 1 good checks in a row: TCP connect"
        ),
        "{log}"
    );
    let metrics = s.http_get(&topo.lb, "/metrics").unwrap();
    assert!(
        metrics.contains(
            "siplb_health_transitions_total{farm=\"pbx\",backend=\"198.18.1.11:5060\",to=\"down\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "siplb_health_checks_total{farm=\"pbx\",backend=\"198.18.1.12:5060\",result=\"failed\"}"
    ));
}

/// The SIP requests of a `tcpdump -tt -n -A` capture: (time, method, Call-ID).
fn captured_requests(text: &str) -> Vec<(f64, String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(f64, String)> = None;
    for line in text.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if line.contains(" IP ") && head.contains('.') && head.parse::<f64>().is_ok() {
            let method = line
                .split("SIP: ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("")
                .to_string();
            current = Some((head.parse().unwrap(), method));
        } else if let Some(v) = line.strip_prefix("Call-ID:").or(line.strip_prefix("i:")) {
            if let Some((t, m)) = current.take() {
                out.push((t, m, v.trim().to_string()));
            }
        }
    }
    out
}

#[test]
fn a_backend_killed_under_load_is_detected_and_comes_back_after_rise_checks() {
    e2e::require_root();
    let topo = Topology::with_backends(3).unwrap();
    let uas = topo.start_uas_backends(&["-aa"]).unwrap();
    let siplb = topo
        .start_siplb(&topo.siplb_config(&farm(
            "{ check = \"options\", interval_ms = 500, timeout_ms = 400, rise = 2, fall = 2 }",
        )))
        .unwrap();
    wait_for(&siplb, "all up", Duration::from_secs(10), |st| {
        (0..3).all(|i| health(st, i) == "up" && checks(st, i) >= 1)
    });

    let (rate, calls, hold_ms) = (40u32, 800u32, 500u32);
    let mut uac = Uac::new(&topo.client, "uac", calls, rate)
        .limit(300)
        .hold_ms(hold_ms)
        .args(["-recv_timeout", "8000"])
        .timeout_s(90)
        .spawn(&topo.dir)
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));

    // Kill backend 0's SIPp by its PID, and watch what still reaches its address.
    let mut uas = uas.into_iter();
    let dead = uas.next().unwrap();
    dead.proc.signal(libc::SIGKILL);
    let t_kill = unix_now();
    let capture = topo.dir.join("dead.cap");
    let mut tcpdump_cmd = topo.backends[0].command("tcpdump");
    tcpdump_cmd.args(["-l", "-n", "-tt", "-A", "-i", "be0", "udp dst port 5060"]);
    let mut tcpdump = Proc::spawn("tcpdump", tcpdump_cmd, &capture).unwrap();
    wait_for(&siplb, "detection", Duration::from_secs(10), |st| {
        health(st, 0) == "down"
    });
    let t_detect = unix_now();
    let dead_trace = dead.finish();

    std::thread::sleep(Duration::from_secs_f64(
        (t_kill + 6.0 - unix_now()).max(0.0),
    ));
    tcpdump.stop(Duration::from_secs(2));
    let again = topo.start_uas(0, "be0-again", None, &["-aa"]).unwrap();
    let t_restart = unix_now();
    wait_for(&siplb, "recovery", Duration::from_secs(10), |st| {
        health(st, 0) == "up"
    });
    let t_back = unix_now();

    let run = uac.wait(Duration::from_secs(120)).unwrap();
    let back_trace = again.finish();
    let others: Vec<_> = uas.map(|u| u.finish()).collect();

    // What reached the dead address: requests of calls it had answered and that were
    // still open (their ACK or BYE), and INVITEs.
    let cap = std::fs::read_to_string(&capture).unwrap_or_default();
    let reqs = captured_requests(&cap);
    let open_at_kill: BTreeSet<&str> = reqs
        .iter()
        .filter(|(_, m, _)| m == "BYE" || m == "ACK")
        .map(|(_, _, c)| c.as_str())
        .collect();
    let mut seen: BTreeSet<&str> = dead_trace.iter().map(|m| m.call_id.as_str()).collect();
    seen.extend(
        reqs.iter()
            .filter(|(t, _, _)| *t <= t_detect)
            .map(|(_, _, c)| c.as_str()),
    );
    let invites: Vec<_> = reqs.iter().filter(|(_, m, _)| m == "INVITE").collect();
    let new_after: Vec<_> = invites
        .iter()
        .filter(|(t, _, cid)| *t > t_detect && !seen.contains(cid.as_str()))
        .collect();
    let between = invites.iter().filter(|(t, _, _)| *t <= t_detect).count();
    // SIPp answers a stray BYE with 200: the restarted backend completes calls whose
    // BYE was still being retransmitted.
    let byes_after_restart = back_trace
        .iter()
        .filter(|m| !m.sent && m.kind == "BYE" && open_at_kill.contains(m.call_id.as_str()))
        .count();
    let calls_after_back = back_trace
        .iter()
        .filter(|m| !m.sent && m.kind == "INVITE")
        .count();
    let others_calls: usize = others
        .iter()
        .map(|t| {
            t.iter()
                .filter(|m| !m.sent && m.kind == "INVITE")
                .map(|m| &m.call_id)
                .collect::<BTreeSet<_>>()
                .len()
        })
        .sum();
    println!(
        "failure test: {calls} calls at {rate}/s (hold {hold_ms} ms) over 3 backends, OPTIONS every 500 ms, fall 2, rise 2\n\
         detection {:.0} ms after the kill; {} INVITEs reached the dead address before detection, {} new calls after it\n\
         calls: {} successful, {} failed; the dead backend had {} answered calls open at the kill (their BYEs reached its address), {} of them completed by the restarted backend answering the retransmitted BYE\n\
         back in rotation {:.0} ms after the restart; it then took {} INVITEs; the other two took {} calls",
        (t_detect - t_kill) * 1000.0,
        between,
        new_after.len(),
        run.successful,
        run.failed,
        open_at_kill.len(),
        byes_after_restart,
        (t_back - t_restart) * 1000.0,
        calls_after_back,
        others_calls,
    );
    assert!(
        !cap.is_empty(),
        "tcpdump captured nothing: {}",
        tcpdump.output()
    );
    assert!(
        new_after.is_empty(),
        "new calls reached the dead backend after detection: {new_after:?}"
    );
    assert!(
        run.failed <= open_at_kill.len() as u64,
        "{} calls failed, but the dead backend had answered only {} unfinished calls",
        run.failed,
        open_at_kill.len()
    );
    assert_eq!(run.successful + run.failed, u64::from(calls));
    assert!(
        t_detect - t_kill < 2.5,
        "2 failed checks 500 ms apart detect within ~1.4 s"
    );
    assert!(calls_after_back > 0, "the backend is back in rotation");
}
