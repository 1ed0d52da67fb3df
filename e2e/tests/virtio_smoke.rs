//! siplb over the virtio PMD: `siplb-gen --mode both` owns two vhost-user ports, the
//! balancer attaches to them as virtio-user ports (in-memory, no kernel, no namespace).
//! A small budget of calls, registrations and OPTIONS; checked: every request answered,
//! no dialog split across backends (counted at the responder, per Call-ID), the
//! backends' shares follow the weights, and the dataplane's own counters agree with
//! what the generator sent and received. A second test carries RTP through the VIP
//! (`--rtp-streams`): every stream mapped, every packet delivered where the SDP said.

use e2e::process::Proc;
use e2e::topology::remove_dpdk_files;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const WEIGHTS: [u64; 3] = [1, 2, 3];
/// Requests in all: calls (INVITE, ACK, BYE), registrations and OPTIONS, mixed 3:1:1.
const BUDGET: u64 = 6000;
const RATE: u64 = 2000;
/// Allowed distance between a backend's share of requests and its weight share, in
/// percentage points. About 2000 Call-IDs and AORs are placed; the binomial standard
/// deviation of a 1/6 .. 1/2 share over 2000 keys is at most 1.1 points, and the 3
/// messages of a call land together, so 5 points is over 3 sigma.
const SHARE_TOLERANCE_PCT: f64 = 5.0;

/// Removes the hugepage files, DPDK runtime directories and the scratch directory
/// (sockets, logs, JSON) when the test ends, also by a panic. Declared before the
/// processes, so it is dropped after them.
struct Scratch {
    dir: PathBuf,
    prefixes: Vec<String>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.prefixes {
            remove_dpdk_files(p);
        }
        if std::env::var_os("SIPLB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn balancer_config(dir: &Path, prefix: &str) -> String {
    let backends: Vec<String> = WEIGHTS
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "  {{ address = \"198.18.1.{}\", port = 5060, weight = {w} }},",
                11 + i
            )
        })
        .collect();
    format!(
        r#"[dataplane]
# 2 cores: the worker shares them with the generator (both sleep when idle).
eal_args = ["--lcores", "0@0,1@1", "--no-pci", "--file-prefix", "{prefix}",
            "--single-file-segments", "-m", "128",
            "--vdev", "net_virtio_user0,path={front},queues=1,queue_size=1024",
            "--vdev", "net_virtio_user1,path={back},queues=1,queue_size=1024"]
workers = 1
idle_sleep_us = 100
mbufs = 4095
exception_path = false

[tables]
dialogs = 16384
registrations = 4096
snat_sessions = 1024
tcp_connections = 1024
rate_sources = 1024

[control]
http = ""
run_dir = "{run}"

[[port]]
name = "front"
address = "198.18.0.1/24"

[[port]]
name = "back"
address = "198.18.1.1/24"

[[farm]]
name = "pbx"
vip = "198.18.0.2"
port = 5060
nat = "dnat"
affinity = "call-id"
backends = [
{backends}
]

[farm.health]
check = "none"
"#,
        front = dir.join("front.sock").display(),
        back = dir.join("back.sock").display(),
        run = dir.join("run").display(),
        backends = backends.join("\n"),
    )
}

fn wait_for_file(p: &Path, gen: &mut Proc, d: Duration) {
    let deadline = Instant::now() + d;
    while !p.exists() {
        assert!(
            gen.running(),
            "siplb-gen exited before creating {}:\n{}",
            p.display(),
            gen.output()
        );
        assert!(
            Instant::now() < deadline,
            "{} not created within {d:?}:\n{}",
            p.display(),
            gen.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The number after `key=` in `line`.
fn field(line: &str, key: &str) -> u64 {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("`{key}` missing in {line:?}"));
    line[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` is not followed by a number in {line:?}"))
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in the summary: {x}"))
}

#[test]
fn siplb_gen_through_siplb_over_virtio_user() {
    e2e::require_root();
    let tag = e2e::unique_tag("vio");
    let scratch = Scratch {
        dir: std::env::temp_dir().join(format!("siplb-{tag}")),
        prefixes: vec![format!("{tag}gen"), format!("{tag}lb")],
    };
    let dir = &scratch.dir;
    std::fs::create_dir_all(dir).unwrap();
    let json = dir.join("gen.json");

    // The generator is the vhost-user side (the socket server): it starts first.
    let mut gen_cmd = Command::new(e2e::bins::path("siplb-gen"));
    gen_cmd
        .args(["-l", "0", "--no-pci", "--file-prefix", &scratch.prefixes[0]])
        .args(["--single-file-segments", "-m", "64", "--vdev"])
        .arg(format!(
            "net_vhost0,iface={},queues=1",
            dir.join("front.sock").display()
        ))
        .arg("--vdev")
        .arg(format!(
            "net_vhost1,iface={},queues=1",
            dir.join("back.sock").display()
        ))
        .arg("--")
        .args(["--mode", "both", "--backends", "3", "--calls", "64"])
        .args(["--mix", "register=1,invite=3,ack=1,bye=1,options=1"])
        .args(["--rate", &RATE.to_string(), "--budget", &BUDGET.to_string()])
        .args([
            "--timeout-ms",
            "2000",
            "--idle-sleep-us",
            "50",
            "--mbufs",
            "4095",
        ])
        .args([
            "--payload",
            "700",
            "--link-timeout",
            "60",
            "--stats-interval",
            "1",
        ])
        .arg("--json")
        .arg(&json);
    let mut gen = Proc::spawn("siplb-gen", gen_cmd, &dir.join("gen.log")).unwrap();
    wait_for_file(&dir.join("back.sock"), &mut gen, Duration::from_secs(30));

    let cfg = dir.join("siplb.toml");
    std::fs::write(&cfg, balancer_config(dir, &scratch.prefixes[1])).unwrap();
    let mut lb_cmd = Command::new(e2e::bins::path("siplb-dataplane"));
    lb_cmd.arg("-c").arg(&cfg);
    let mut lb = Proc::spawn("siplb-dataplane", lb_cmd, &dir.join("dataplane.log")).unwrap();
    lb.wait_for_output("worker(s) on lcores", Duration::from_secs(30))
        .unwrap();

    // 6000 requests at 2000/s: about 3 s, plus start-up.
    let status = gen.wait_timeout(Duration::from_secs(90));
    let gen_out = gen.output();
    lb.stop(Duration::from_secs(10));
    let lb_out = lb.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "siplb-gen did not finish cleanly ({status:?}):\n{gen_out}\n--- dataplane:\n{lb_out}"
    );
    println!(
        "{}",
        gen_out
            .lines()
            .skip_while(|l| !l.contains("final summary"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    // Every request answered, nothing lost, nothing unexpected.
    let requests = u(&s, &["client", "requests"]);
    let acks = u(&s, &["client", "sent", "ACK"]);
    assert!(
        requests > BUDGET - 5 && requests <= BUDGET,
        "{requests} requests sent, budget {BUDGET}"
    );
    assert_eq!(
        u(&s, &["client", "answered"]),
        requests - acks,
        "every request but ACK gets a final response:\n{gen_out}"
    );
    for k in [
        "unanswered",
        "timeouts",
        "failed",
        "stray",
        "build_failures",
    ] {
        assert_eq!(u(&s, &["client", k]), 0, "client {k}:\n{gen_out}");
    }
    assert!(u(&s, &["client", "calls_completed"]) > 0);
    assert!(u(&s, &["client", "registrations_completed"]) > 0);
    assert!(u(&s, &["client", "options_completed"]) > 0);
    assert!(u(&s, &["client", "latency", "count"]) == requests - acks);

    // Stickiness, counted where it matters: at the backends.
    assert_eq!(u(&s, &["responder", "split_dialogs"]), 0, "{gen_out}");
    assert_eq!(u(&s, &["responder", "split_messages"]), 0, "{gen_out}");
    assert_eq!(u(&s, &["responder", "malformed"]), 0);

    // Shares follow the weights.
    let per_backend: Vec<u64> = s["responder"]["per_backend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(per_backend.iter().sum::<u64>(), requests);
    let wsum: u64 = WEIGHTS.iter().sum();
    for (i, (&n, &w)) in per_backend.iter().zip(&WEIGHTS).enumerate() {
        let got = 100.0 * n as f64 / requests as f64;
        let want = 100.0 * w as f64 / wsum as f64;
        assert!(
            (got - want).abs() <= SHARE_TOLERANCE_PCT,
            "backend {i}: {got:.1}% of requests, weight share {want:.1}% (tolerance {SHARE_TOLERANCE_PCT} points): {per_backend:?}"
        );
    }

    // The dataplane's own counters tell the same story.
    let fin = lb_out
        .lines()
        .find(|l| l.starts_with("siplb-dataplane: final"))
        .unwrap_or_else(|| panic!("no final stats line from the dataplane:\n{lb_out}"));
    println!("{fin}");
    assert_eq!(field(fin, "sip req="), requests, "{fin}");
    assert_eq!(
        field(fin, "resp="),
        u(&s, &["client", "responses"]),
        "{fin}"
    );
    for (i, &n) in per_backend.iter().enumerate() {
        let key = format!("198.18.1.{}:5060 to=", 11 + i);
        assert_eq!(field(fin, &key), n, "backend {i} in {fin}");
    }
    assert!(!fin.contains("sip_"), "SIP errors at the balancer: {fin}");
}

/// Media through the VIP on the same set-up: `siplb-gen --rtp-streams` places calls
/// whose INVITE and 200 carry SDP, and both sides send RTP where the SDP they received
/// said (the VIP's client and backend legs, as the balancer rewrote it). Checked: every
/// stream mapped once, every RTP packet delivered to the port its receiver announced
/// with its stream's SSRC, both ways, and the dataplane's media counters agree.
#[test]
fn rtp_streams_through_siplb_media_relay_over_virtio_user() {
    const STREAMS: u64 = 100;
    const RTP_PPS: u64 = 10_000;
    const SECONDS: u64 = 2;
    e2e::require_root();
    let tag = e2e::unique_tag("viom");
    let scratch = Scratch {
        dir: std::env::temp_dir().join(format!("siplb-{tag}")),
        prefixes: vec![format!("{tag}gen"), format!("{tag}lb")],
    };
    let dir = &scratch.dir;
    std::fs::create_dir_all(dir).unwrap();
    let json = dir.join("gen.json");

    let mut gen_cmd = Command::new(e2e::bins::path("siplb-gen"));
    gen_cmd
        .args(["-l", "0", "--no-pci", "--file-prefix", &scratch.prefixes[0]])
        .args(["--single-file-segments", "-m", "64", "--vdev"])
        .arg(format!(
            "net_vhost0,iface={},queues=1",
            dir.join("front.sock").display()
        ))
        .arg("--vdev")
        .arg(format!(
            "net_vhost1,iface={},queues=1",
            dir.join("back.sock").display()
        ))
        .arg("--")
        .args(["--mode", "both", "--backends", "3", "--rate", "2000"])
        .args(["--rtp-streams", &STREAMS.to_string()])
        .args(["--rtp-pps", &RTP_PPS.to_string()])
        .args(["--duration", &SECONDS.to_string()])
        .args(["--timeout-ms", "2000", "--idle-sleep-us", "50"])
        .args(["--mbufs", "4095", "--link-timeout", "60"])
        .args(["--stats-interval", "1", "--json"])
        .arg(&json);
    let mut gen = Proc::spawn("siplb-gen", gen_cmd, &dir.join("gen.log")).unwrap();
    wait_for_file(&dir.join("back.sock"), &mut gen, Duration::from_secs(30));

    let cfg = dir.join("siplb.toml");
    std::fs::write(&cfg, balancer_config(dir, &scratch.prefixes[1])).unwrap();
    let mut lb_cmd = Command::new(e2e::bins::path("siplb-dataplane"));
    lb_cmd.arg("-c").arg(&cfg);
    let mut lb = Proc::spawn("siplb-dataplane", lb_cmd, &dir.join("dataplane.log")).unwrap();
    lb.wait_for_output("worker(s) on lcores", Duration::from_secs(30))
        .unwrap();

    let status = gen.wait_timeout(Duration::from_secs(90));
    let gen_out = gen.output();
    lb.stop(Duration::from_secs(10));
    let lb_out = lb.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "siplb-gen did not finish cleanly ({status:?}):\n{gen_out}\n--- dataplane:\n{lb_out}"
    );
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    // Every call set up, held and ended.
    assert_eq!(u(&s, &["client", "calls_completed"]), STREAMS, "{gen_out}");
    for k in ["timeouts", "failed", "stray"] {
        assert_eq!(u(&s, &["client", k]), 0, "client {k}:\n{gen_out}");
    }
    // Every stream opened on both sides, from the SDP each side received.
    for k in ["client_legs", "backend_legs"] {
        assert_eq!(u(&s, &["media", k]), STREAMS, "{k}:\n{gen_out}");
    }
    assert_eq!(u(&s, &["media", "no_sdp"]), 0, "{gen_out}");
    // All RTP delivered, to the announced port, with its stream's SSRC, both ways.
    let mut delivered = 0;
    for dir in ["client_to_backend", "backend_to_client"] {
        let sent = u(&s, &["media", dir, "sent"]);
        assert!(
            sent >= RTP_PPS / 2 * SECONDS * 9 / 10,
            "{dir}: {sent} packets sent, about {} expected:\n{gen_out}",
            RTP_PPS / 2 * SECONDS
        );
        assert_eq!(
            u(&s, &["media", dir, "received"]),
            sent,
            "{dir}:\n{gen_out}"
        );
        assert_eq!(u(&s, &["media", dir, "misdelivered"]), 0, "{dir}");
        delivered += sent;
    }

    // The dataplane mapped each stream once and relayed every packet.
    let fin = lb_out
        .lines()
        .find(|l| l.starts_with("siplb-dataplane: final"))
        .unwrap_or_else(|| panic!("no final stats line from the dataplane:\n{lb_out}"));
    println!("{fin}");
    let media = &fin[fin
        .find(" media flows=")
        .unwrap_or_else(|| panic!("no media counters in {fin}"))..];
    assert_eq!(field(media, "flows="), STREAMS, "{fin}");
    assert_eq!(field(media, "packets="), delivered, "{fin}");
    assert!(
        !fin.contains("media_"),
        "media drops at the balancer: {fin}"
    );
}
