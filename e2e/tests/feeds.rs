//! Blocklist feeds (`[[security.feed]]`, issue 14 item 3) against a real HTTP server
//! (python3's http.server in the balancer's namespace, where the control daemon
//! fetches): a text list and an APIBAN JSON, refreshed every second. A listed source
//! is dropped (`denied`), a refresh adds and removes entries, and a feed that breaks
//! (malformed, then gone) keeps its last good list and says why. Then 1 M prefixes
//! swapped in while traffic flows, with no packet lost.

use e2e::process::Proc;
use e2e::siplb::Siplb;
use e2e::topology::{Topology, VIP};
use serde_json::Value;
use std::time::Duration;

const LISTED: &str = "198.18.0.66";
const APIBAN: &str = "198.18.0.67";
const OTHER: &str = "198.18.0.68";
const PER_SOURCE: u64 = 10;

fn stats(s: &Siplb) -> Value {
    serde_json::from_str(&s.ok(&["stats", "--json"]).unwrap()).unwrap()
}

fn denied(s: &Siplb) -> u64 {
    stats(s)["drops"]["denied"].as_u64().unwrap_or(0)
}

/// The feed named `name` in `siplb status --json`.
fn feed(s: &Siplb, name: &str) -> Value {
    let st = s.status_json();
    st["feeds"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == name).cloned())
        .unwrap_or_default()
}

/// Sends `PER_SOURCE` OPTIONS from each source and returns how many more were
/// denied (the counters settle within the daemon's one-second sample).
fn denied_of(topo: &Topology, s: &Siplb, sources: &[&str]) -> u64 {
    let before = denied(s);
    let script = format!(
        r#"
import socket, sys
for src in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    for i in range({PER_SOURCE}):
        m = ("OPTIONS sip:100@{VIP} SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%d\r\n"
             "From: <sip:100@{VIP}>;tag=%d\r\nTo: <sip:100@{VIP}>\r\nCall-ID: feed-%s-%d\r\n"
             "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n") % (src, s.getsockname()[1], i, i, src, i)
        s.sendto(m.encode(), ("{VIP}", 5060))
"#
    );
    let mut args = vec!["-c", &script];
    args.extend_from_slice(sources);
    topo.client.run("python3", &args).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    denied(s) - before
}

/// Waits until the feed `name` has fetched past `fetches` and `ok` holds of it.
fn fetched(s: &Siplb, name: &str, fetches: u64, ok: impl Fn(&Value) -> bool) -> Value {
    e2e::wait_until(
        &format!("feed {name} refreshed"),
        Duration::from_secs(15),
        || {
            let f = feed(s, name);
            f["fetches"].as_u64().unwrap_or(0) > fetches && ok(&f)
        },
    );
    // The next sample carries the apply.
    std::thread::sleep(Duration::from_millis(1200));
    feed(s, name)
}

#[test]
fn feeds_deny_listed_sources_follow_refreshes_and_keep_the_last_good_list() {
    e2e::require_root();
    let topo = Topology::with_backends(1).unwrap();
    for a in [LISTED, APIBAN, OTHER] {
        topo.client
            .ip(&["addr", "add", &format!("{a}/24"), "dev", "cli0"])
            .unwrap();
    }
    let www = topo.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let list = www.join("list.txt");
    let apiban = www.join("apiban.json");
    std::fs::write(&list, format!("# test feed\n{LISTED}\n198.18.0.200/30\n")).unwrap();
    std::fs::write(
        &apiban,
        format!(r#"{{"ipaddress":["{APIBAN}","198.18.0.201"],"ID":"none"}}"#),
    )
    .unwrap();
    // The control daemon fetches from the balancer's namespace: the server listens
    // on its loopback.
    let port = 18080;
    let mut cmd = topo.lb.command("python3");
    cmd.args([
        "-u",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        &port.to_string(),
    ])
    .current_dir(&www);
    let mut server = Proc::spawn("http.server", cmd, &topo.dir.join("http.log")).unwrap();
    server
        .wait_for_output("Serving HTTP", Duration::from_secs(10))
        .unwrap();
    let feeds = format!(
        "[[security.feed]]\nname = \"list\"\nurl = \"http://127.0.0.1:{port}/list.txt\"\nrefresh_s = 1\n\n\
         [[security.feed]]\nname = \"apiban\"\nurl = \"http://127.0.0.1:{port}/apiban.json\"\nformat = \"apiban\"\nrefresh_s = 1\n\n"
    );
    let farm = format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nbackends = [ {{ address = \"{}\" }} ]\n",
        e2e::topology::backend_ip(0)
    );
    let cfg = format!("{feeds}{}", topo.siplb_config(&farm));
    let siplb = topo.start_siplb(&cfg).unwrap();
    let _uas = topo.start_uas_backends(&["-aa"]).unwrap();

    let l = fetched(&siplb, "list", 0, |f| f["prefixes"] == 2);
    fetched(&siplb, "apiban", 0, |f| f["prefixes"] == 2);
    println!("list: {l}");
    let all = [LISTED, APIBAN, OTHER];
    let d = denied_of(&topo, &siplb, &all);
    println!("fetched: {d} of {} denied", 3 * PER_SOURCE);
    assert_eq!(
        d,
        2 * PER_SOURCE,
        "the list's and APIBAN's sources, not the other"
    );

    // A refresh: the list drops LISTED and adds OTHER.
    let n = feed(&siplb, "list")["fetches"].as_u64().unwrap();
    std::fs::write(&list, format!("{OTHER}\n")).unwrap();
    fetched(&siplb, "list", n, |f| f["prefixes"] == 1);
    let d = denied_of(&topo, &siplb, &[LISTED]);
    assert_eq!(d, 0, "removed from the list: passes");
    let d = denied_of(&topo, &siplb, &[APIBAN, OTHER]);
    println!("refreshed: {d} of {} denied", 2 * PER_SOURCE);
    assert_eq!(
        d,
        2 * PER_SOURCE,
        "added to the list: denied; APIBAN's still"
    );

    // The list turns malformed and APIBAN's answer goes away (HTTP 404): both keep
    // their last good lists, and say why.
    let n = feed(&siplb, "list")["fetches"].as_u64().unwrap();
    let m = feed(&siplb, "apiban")["fetches"].as_u64().unwrap();
    std::fs::write(&list, format!("{OTHER}\nnot-an-address\n")).unwrap();
    std::fs::remove_file(&apiban).unwrap();
    let l = fetched(&siplb, "list", n, |f| f["errors"].as_u64() > Some(0));
    let a = fetched(&siplb, "apiban", m, |f| f["errors"].as_u64() > Some(0));
    println!("broken: list {l}\napiban {a}");
    assert!(l["error"].as_str().unwrap().contains("list.txt:2"), "{l}");
    assert!(a["error"].as_str().unwrap().contains("404"), "{a}");
    assert_eq!(
        (l["prefixes"].as_u64(), a["prefixes"].as_u64()),
        (Some(1), Some(2))
    );
    let d = denied_of(&topo, &siplb, &[APIBAN, OTHER]);
    println!("broken: {d} of {} denied", 2 * PER_SOURCE);
    assert_eq!(d, 2 * PER_SOURCE, "the last good lists stay in force");
    let status = siplb.ok(&["status"]).unwrap();
    assert!(
        status.contains("feed list") && status.contains("FAILED"),
        "{status}"
    );
    let metrics = siplb.http_get(&topo.lb, "/metrics").unwrap();
    let errors = metrics
        .lines()
        .find(|l| l.starts_with("siplb_feed_errors_total{feed=\"apiban\"}"))
        .unwrap_or_default();
    assert!(!errors.ends_with(" 0") && !errors.is_empty(), "{errors}");
    server.stop(Duration::from_secs(2));
}

/// 1 M prefixes, as a blocklist holds them (70 % /32, 20 % /24, 10 % /20../31),
/// none of them over the test bed's 198.18.0.0/15.
fn million() -> String {
    let mut x = 0x5eed_u64;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    };
    let mut out = String::with_capacity(18 << 20);
    let mut n = 0;
    while n < 1_000_000 {
        let a = next();
        if a >> 17 == 0xc612 >> 1 {
            continue;
        }
        let len = match next() % 10 {
            0..=6 => 32,
            7 | 8 => 24,
            _ => 20 + next() % 12,
        };
        let a = std::net::Ipv4Addr::from(a);
        out.push_str(&format!("{a}/{len}\n"));
        n += 1;
    }
    out
}

/// A feed of 1 M prefixes replaces a one-line one while a client sends 1,000 OPTIONS
/// a second: every one is answered (forwarding never stops while the control plane
/// parses the list and the dataplane's main lcore builds the table aside), and the
/// listed source is still denied afterwards.
#[test]
fn a_million_prefixes_load_while_traffic_flows() {
    e2e::require_root();
    let topo = Topology::with_backends(1).unwrap();
    topo.client
        .ip(&["addr", "add", &format!("{LISTED}/24"), "dev", "cli0"])
        .unwrap();
    let list = topo.dir.join("big.txt");
    std::fs::write(&list, format!("{LISTED}\n")).unwrap();
    let big = format!("{}{LISTED}\n", million());
    let farm = format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nbackends = [ {{ address = \"{}\" }} ]\n",
        e2e::topology::backend_ip(0)
    );
    let cfg = format!(
        "[[security.feed]]\nname = \"big\"\nfile = \"{}\"\nrefresh_s = 1\n\n{}",
        list.display(),
        topo.siplb_config(&farm)
    );
    let siplb = topo.start_siplb(&cfg).unwrap();
    let _uas = topo.start_uas_backends(&["-aa"]).unwrap();
    fetched(&siplb, "big", 0, |f| f["prefixes"] == 1);
    assert_eq!(denied_of(&topo, &siplb, &[LISTED]), PER_SOURCE);

    // 1,000 OPTIONS a second for 10 s, answers counted; the big list goes in after 2 s.
    let script = format!(
        r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{}", 0))
s.setblocking(False)
port = s.getsockname()[1]
sent = answered = 0
start = time.time()
while sent < 10000:
    while sent < (time.time() - start) * 1000 and sent < 10000:
        m = ("OPTIONS sip:100@{VIP} SIP/2.0\r\nVia: SIP/2.0/UDP {}:%d;branch=z9hG4bKbig%d\r\n"
             "From: <sip:c@{VIP}>;tag=%d\r\nTo: <sip:100@{VIP}>\r\nCall-ID: big-%d\r\n"
             "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n") % (port, sent, sent, sent)
        s.sendto(m.encode(), ("{VIP}", 5060))
        sent += 1
    try:
        while True:
            s.recv(4096)
            answered += 1
    except BlockingIOError:
        time.sleep(0.001)
end = time.time() + 3
while time.time() < end:
    try:
        s.recv(4096)
        answered += 1
    except BlockingIOError:
        time.sleep(0.01)
print(sent, answered)
"#,
        e2e::topology::CLIENT_IP,
        e2e::topology::CLIENT_IP
    );
    let n = feed(&siplb, "big")["fetches"].as_u64().unwrap();
    let out = std::thread::scope(|s| {
        let traffic = s.spawn(|| topo.client.run("python3", &["-c", &script]).unwrap());
        std::thread::sleep(Duration::from_secs(2));
        let tmp = topo.dir.join("big.tmp");
        std::fs::write(&tmp, &big).unwrap();
        std::fs::rename(&tmp, &list).unwrap();
        let start = std::time::Instant::now();
        fetched(&siplb, "big", n, |f| {
            f["prefixes"].as_u64() > Some(1_000_000)
        });
        println!(
            "1 M prefixes fetched and applied {:?} after the file changed (2 s into the 10 s of traffic)",
            start.elapsed()
        );
        traffic.join().unwrap()
    });
    let log = std::fs::read_to_string(&siplb.dataplane_log).unwrap_or_default();
    let built: Vec<&str> = log.lines().filter(|l| l.contains("feeds: ")).collect();
    println!("dataplane: {built:?}");
    let (sent, answered) = out
        .split_once(' ')
        .map(|(a, b)| {
            (
                a.trim().parse::<u64>().unwrap(),
                b.trim().parse::<u64>().unwrap(),
            )
        })
        .unwrap();
    println!("while 1 M prefixes were loaded: {answered} of {sent} OPTIONS answered");
    let most = built
        .iter()
        .filter_map(|l| {
            l.split("feeds: ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max();
    assert!(
        most > Some(990_000),
        "the dataplane built the big table (distinct prefixes): {built:?}"
    );
    assert_eq!(answered, sent, "no loss while the table was swapped in");
    assert_eq!(denied_of(&topo, &siplb, &[LISTED]), PER_SOURCE);
}
