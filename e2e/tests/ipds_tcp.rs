//! Issue 14 item 6 on real traffic: during a SYN flood from spoofed sources, with an
//! untrusted-SYN budget of 20 a second, a client that already completed a connection
//! keeps opening new ones (one per SIPp call over TCP) and every call completes; the
//! 13 bogus flag combinations from spoofed sources are dropped and counted.

use e2e::bed::stat;
use e2e::sipp::Uac;
use e2e::topology::{backend_ip, Topology, CLIENT_IP, VIP};

const SYNS: u32 = 20_000;
const BOGUS_EACH: u32 = 10;
const UNTRUSTED_PER_S: u32 = 20;

/// Spoofed SYNs from 198.19.0.0/16 at about 4,000 a second, after 46 bogus flag
/// combinations (every one the 13 rules match) `BOGUS_EACH` times each.
const FLOOD: &str = r#"
import socket, struct, sys, time
VIP, syns, bogus_each = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
def csum(b):
    if len(b) % 2: b += b"\0"
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while n >> 16: n = (n & 0xffff) + (n >> 16)
    return ~n & 0xffff
def tcp(src, sport, flags):
    h = struct.pack("!HHIIBBHHH", sport, 5060, 1, 0, 5 << 4, flags, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(VIP) + struct.pack("!BBH", 0, 6, len(h))
    h = h[:16] + struct.pack("!H", csum(pseudo + h)) + h[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(VIP))
    return ip[:10] + struct.pack("!H", csum(ip)) + ip[12:] + h
FIN, SYN, RST, PSH, ACK, URG = 1, 2, 4, 8, 16, 32
rules = [(63, 0), (FIN|SYN, FIN|SYN), (SYN|RST, SYN|RST), (FIN|RST, FIN|RST), (FIN|ACK, FIN),
         (ACK|URG, URG), (ACK|FIN, FIN), (ACK|PSH, PSH), (63, 63), (63, 0), (63, FIN|PSH|URG),
         (63, SYN|FIN|PSH|URG), (63, SYN|RST|ACK|FIN|URG)]
bogus = [f for f in range(64) if any(f & m == v for m, v in rules)]
sent = 0
for k in range(bogus_each):
    for f in bogus:
        s.sendto(tcp("198.19.250.%d" % (k + 1), 41000 + f, f), (VIP, 0))
        sent += 1
for i in range(syns):
    s.sendto(tcp("198.19.%d.%d" % (i >> 8 & 255, i & 255), 40000 + (i & 1023), SYN), (VIP, 0))
    sent += 1
    if sent % 40 == 0: time.sleep(0.01)
print("sent", sent, "bogus", len(bogus) * bogus_each)
"#;

#[test]
fn a_client_that_connected_before_keeps_connecting_through_a_spoofed_syn_flood() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let farm = format!(
        "[security]\ntcp_untrusted_syn_per_s = {UNTRUSTED_PER_S}\n\n{}[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nnat = \"dnat\"\naffinity = \"call-id\"\nprotocols = [\"udp\", \"tcp\"]\nbackends = [ {{ address = \"{}\" }}, {{ address = \"{}\" }} ]\n",
        topo.base_config(),
        backend_ip(0),
        backend_ip(1)
    );
    let mut dp = topo.start_dataplane(&farm, &[]).unwrap();
    let uas = topo.start_uas_backends(&["-t", "t1"]).unwrap();
    // Before the flood: the client's connections complete, so the balancer knows it.
    let before = Uac::new(&topo.client, "before", 3, 3)
        .local(CLIENT_IP, 5070)
        .args(["-t", "tn", "-max_socket", "64"])
        .timeout_s(20)
        .run(&topo.dir)
        .unwrap();
    assert_eq!(
        (before.successful, before.failed),
        (3, 0),
        "{}",
        before.output
    );
    // During the flood: one new connection per call.
    let mut during = Uac::new(&topo.client, "during", 40, 10)
        .local(CLIENT_IP, 5072)
        .args(["-t", "tn", "-max_socket", "256"])
        .timeout_s(30)
        .spawn(&topo.dir)
        .unwrap();
    let out = topo
        .client
        .run(
            "python3",
            &[
                "-c",
                FLOOD,
                &VIP.to_string(),
                &SYNS.to_string(),
                &BOGUS_EACH.to_string(),
            ],
        )
        .unwrap();
    println!("flood: {}", out.trim());
    let during = during.wait(std::time::Duration::from_secs(60)).unwrap();
    drop(uas);
    let fin = dp.stop_final_stats();
    println!("{fin}");
    let (flood, bogus) = (stat(&fin, "tcp_syn_flood"), stat(&fin, "tcp_bogus_flags"));
    println!(
        "calls during the flood: {} successful, {} failed; tcp_syn_flood {flood}, tcp_bogus_flags {bogus}",
        during.successful, during.failed
    );
    assert_eq!(
        (during.successful, during.failed),
        (40, 0),
        "{}",
        during.output
    );
    assert_eq!(bogus, 46 * u64::from(BOGUS_EACH));
    // At most the budget per second got through of the spoofed SYNs (the flood lasts
    // about 5 s; allow 15 s worth), and none of the client's was refused: without its
    // priority, its SYNs are refused too (20,042 refusals in that run) and the calls
    // only complete on SYN retransmissions after the flood.
    assert!(
        flood >= u64::from(SYNS - 15 * UNTRUSTED_PER_S),
        "{flood} of {SYNS} spoofed SYNs refused"
    );
    assert!(
        flood <= u64::from(SYNS),
        "{flood} SYNs refused: more than the {SYNS} spoofed ones"
    );
}
