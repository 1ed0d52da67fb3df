//! Issue 14 items 1 and 2 on real traffic: one source repeats the measured To-tag
//! bypass (3,000 To-tagged INVITEs), spoofed sources fill the dialog table with
//! in-dialog-looking requests of unknown dialogs, send TCP segments of no connection,
//! and fill the rates table with new calls; meanwhile legitimate SIPp calls complete. Every
//! refusal is counted, the flooding source is banned, listed by `siplb security bans`
//! and lifted by `siplb security unban`.

use e2e::sipp::Uac;
use e2e::topology::{backend_ip, Topology, VIP};
use serde_json::Value;
use std::time::Duration;

const CALLS: u32 = 100;
/// Spoofed senders of each flood.
const STRAYS: u32 = 4000;
const TCP_STRAYS: u32 = 4000;
const NEW_CALLS: u32 = 6000;
const BYPASS: u32 = 3000;
const BYPASS_SOURCE: &str = "198.18.0.66";

/// Sends the floods from raw sockets in the client's namespace, spoofing sources in
/// 198.19.0.0/16, paced at about 10,000 packets a second (af_packet's ring must not
/// overflow: every packet sent is one the counts below account for).
const FLOOD: &str = r#"
import socket, struct, sys, time
VIP = sys.argv[1]
strays, tcp_strays, new_calls, bypass, bypass_src = [int(a) for a in sys.argv[2:6]] + [sys.argv[6]]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
def csum(b):
    if len(b) % 2: b += b"\0"
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while n >> 16: n = (n & 0xffff) + (n >> 16)
    return ~n & 0xffff
def ip(src, proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(VIP))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload
def udp(src, sip):
    return ip(src, 17, struct.pack("!HHHH", 5060, 5060, 8 + len(sip), 0) + sip)
def tcp(src, flags):
    h = struct.pack("!HHIIBBHHH", 40000, 5060, 1, 1, 5 << 4, flags, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(VIP) + struct.pack("!BBH", 0, 6, len(h))
    h = h[:16] + struct.pack("!H", csum(pseudo + h)) + h[18:]
    return ip(src, 6, h)
def req(method, cid, src, to_tag):
    tag = ";tag=b1" if to_tag else ""
    return ("%s sip:b@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:5060;branch=z9hG4bK%s\r\n"
            "From: <sip:a@x>;tag=a1\r\nTo: <sip:b@x>%s\r\nCall-ID: %s\r\nCSeq: 1 %s\r\n"
            "Content-Length: 0\r\n\r\n" % (method, VIP, src, cid, tag, cid, method)).encode()
def spoofed(i):
    return "198.19.%d.%d" % (i >> 8 & 255, i & 255)
sent = [0]
def send(p):
    s.sendto(p, (VIP, 0))
    sent[0] += 1
    if sent[0] % 100 == 0: time.sleep(0.01)
kinds = [("INVITE", True), ("ACK", False), ("BYE", False), ("CANCEL", False)]
for i in range(bypass):
    send(udp(bypass_src, req("INVITE", "tt%d" % i, bypass_src, True)))
for i in range(strays):
    m, tag = kinds[i % 4]
    send(udp(spoofed(i), req(m, "stray%d" % i, spoofed(i), tag)))
for i in range(tcp_strays):
    send(tcp(spoofed(i), 0x10))
for i in range(new_calls):
    src = spoofed(0x8000 + i)
    send(udp(src, req("INVITE", "new%d" % i, src, False)))
print("sent", sent[0])
"#;

fn farm() -> String {
    format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nnat = \"dnat\"\naffinity = \"call-id\"\nprotocols = [\"udp\", \"tcp\"]\nbackends = [ {{ address = \"{}\" }}, {{ address = \"{}\" }} ]\n",
        backend_ip(0),
        backend_ip(1)
    )
}

fn at<'v>(v: &'v Value, path: &[&str]) -> &'v Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn n(v: &Value, path: &[&str]) -> u64 {
    at(v, path).as_u64().unwrap_or(0)
}

#[test]
fn spoofed_floods_fill_no_table_for_long_and_legitimate_calls_complete() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let security =
        "[security]\ninvite = { rate = 30, burst = 60 }\nother = { rate = 100, burst = 200 }\n\n";
    let cfg = topo.siplb_config(&farm()).replace(
        "dialogs = 65536",
        "dialogs = 1024\nrate_sources = 4096\ntcp_connections = 1024",
    );
    let siplb = topo.start_siplb(&format!("{security}{cfg}")).unwrap();
    let uas = topo.start_uas_backends(&["-aa"]).unwrap();
    let mut calls = Uac::new(&topo.client, "legit", CALLS, 20)
        .limit(CALLS)
        .timeout_s(30)
        .spawn(&topo.dir)
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let out = topo
        .client
        .run(
            "python3",
            &[
                "-c",
                FLOOD,
                &VIP.to_string(),
                &STRAYS.to_string(),
                &TCP_STRAYS.to_string(),
                &NEW_CALLS.to_string(),
                &BYPASS.to_string(),
                BYPASS_SOURCE,
            ],
        )
        .unwrap();
    println!("flood: {}", out.trim());
    let legit = calls.wait(Duration::from_secs(60)).unwrap();
    drop(uas);
    std::thread::sleep(Duration::from_millis(1500));
    let stats: Value = serde_json::from_str(&siplb.ok(&["stats", "--json"]).unwrap()).unwrap();
    let tables = at(&stats, &["totals", "tables"]);
    let drops = &stats["drops"];
    println!("tables: {tables}\ndrops: {drops}");
    let bans = siplb.ok(&["security", "bans"]).unwrap();
    println!("{bans}");
    println!(
        "legitimate calls: {} successful, {} failed",
        legit.successful, legit.failed
    );
    assert_eq!(
        (legit.successful, legit.failed),
        (u64::from(CALLS), 0),
        "{}",
        legit.output
    );
    // Stray in-dialog requests were forwarded (dnat) with a transaction's lifetime;
    // they filled the 1,024-slot dialog table, which was counted.
    assert!(
        n(tables, &["stray_sip_forwarded"]) >= u64::from(STRAYS),
        "{tables}"
    );
    assert!(n(tables, &["dialog_table_full"]) > 0, "{tables}");
    // Stray TCP segments created no connection.
    assert_eq!(n(tables, &["stray_tcp_forwarded"]), u64::from(TCP_STRAYS));
    assert_eq!(n(tables, &["tcp_connections_created"]), 0);
    // 6,000 spoofed new calls on top of them overflowed the 4,096-entry rates table:
    // refused and counted, not let through unmetered.
    let refused = n(drops, &["rate_table_full"]);
    assert!(refused > 1000, "{drops}");
    assert!(n(tables, &["rate_table_full"]) >= refused);
    // The To-tag bypass: its source got the INVITE bucket's burst and rate, then its
    // 17th overrun banned it; everything else it sent was dropped as banned.
    let (flood, banned) = (n(drops, &["flood"]), n(drops, &["banned"]));
    println!("bypass source: flood {flood}, banned {banned}");
    assert_eq!(flood, 17, "{drops}");
    assert!(banned > u64::from(BYPASS) - 200, "{drops}");
    assert_eq!(n(tables, &["sources_banned"]), 1);
    assert!(
        bans.contains(BYPASS_SOURCE) && bans.contains("flood"),
        "{bans}"
    );
    assert!(bans.contains("1 banned"), "{bans}");
    let json: Value =
        serde_json::from_str(&siplb.ok(&["security", "bans", "--json"]).unwrap()).unwrap();
    assert_eq!(json[0]["hits"].as_u64(), Some(banned));
    assert!(json[0]["remaining_s"].as_u64().unwrap() > 280);
    let lifted = siplb.ok(&["security", "unban", BYPASS_SOURCE]).unwrap();
    println!("{lifted}");
    assert!(siplb
        .ok(&["security", "bans"])
        .unwrap()
        .contains("0 banned"));
    assert!(!siplb.cli(&["security", "unban", BYPASS_SOURCE]).ok);
}
