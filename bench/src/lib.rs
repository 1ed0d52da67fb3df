//! Shared pieces of the benchmarks: the in-process balancer set up as the dataplane
//! sizes it, SIP messages of a typical call, timing and memory helpers.

use siplb_core::lb::counters::WorkerCounters;
use siplb_core::lb::services::Services;
use siplb_core::lb::sim::{self, host_mac, port_mac, SimMemory};
use siplb_core::lb::{Tables, Verdict};
use std::net::Ipv4Addr;

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const BACKENDS: usize = 4;

/// The balancer as `siplb.example.toml` sets it up: two ports, one farm of four
/// backends, dnat, Call-ID affinity, default timers.
pub const CONFIG: &str = r#"
[[port]]
name = "front"
address = "198.18.0.1/24"
[[port]]
name = "back"
address = "198.18.1.1/24"
[[farm]]
name = "pbx"
vip = "198.18.0.2"
nat = "dnat"
affinity = "call-id"
# The pipeline figures measure steering and placement; the ALG's cost is measured on
# its own (bench alg_rewrite), since with it every in-dialog request naming the VIP is
# rewritten.
alg = false
backends = [ { address = "198.18.1.11" }, { address = "198.18.1.12" },
             { address = "198.18.1.13" }, { address = "198.18.1.14" } ]
"#;

pub fn backend(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 11 + i as u8)
}

/// Dialog table slots for a capacity, as the dataplane sizes its memzone
/// (`siplb-runtime/src/shm.rs`, `slots_for`: twice the capacity, rounded up to a power of two).
pub fn dialog_slots(capacity: usize) -> usize {
    (capacity * 2).next_power_of_two()
}

/// Bytes of one dialog table slot.
pub const SLOT_BYTES: usize = std::mem::size_of::<siplb_core::table::flow::Slot>();

/// The in-process balancer: services, table memory and one worker's counters.
pub struct Bed {
    pub svc: Services,
    pub mem: SimMemory,
    pub counters: Box<WorkerCounters>,
}

impl Bed {
    pub fn new(dialog_capacity: usize) -> Bed {
        Self::with_config(CONFIG, dialog_capacity)
    }

    /// The same bed with another configuration (the security bench adds `[security]`).
    pub fn with_config(config: &str, dialog_capacity: usize) -> Bed {
        let bed = Bed {
            svc: sim::services(config),
            mem: SimMemory::new(dialog_slots(dialog_capacity)),
            counters: Box::default(),
        };
        let t = bed.mem.tables();
        t.neighbours.learn(CLIENT, host_mac(CLIENT), 0, 1);
        for i in 0..BACKENDS {
            t.neighbours.learn(backend(i), host_mac(backend(i)), 1, 1);
        }
        bed
    }

    pub fn tables(&self) -> Tables<'_> {
        self.mem.tables()
    }
}

/// Call-ID of dialog `i`: fixed length, so every message of a kind has one size.
pub fn call_id(i: u32) -> String {
    format!("{i:08x}-bench@198.18.0.10")
}

/// An INVITE with a small SDP body, as a softphone sends it (~600 bytes).
pub fn invite(i: u32) -> Vec<u8> {
    let sdp = "v=0\r\no=alice 2890844526 2890844526 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    format!(
        "INVITE sip:bob@198.18.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK{i:08x}a;rport\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@siplb.test>;tag={i:08x}\r\nTo: <sip:bob@siplb.test>\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.18.0.10:5060>\r\nUser-Agent: siplb-bench\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        call_id(i),
        sdp.len()
    )
    .into_bytes()
}

/// The backend's 200 OK to that INVITE (no body: the balancer never reads it).
pub fn ok_200(i: u32) -> Vec<u8> {
    format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK{i:08x}a;rport=5060\r\nFrom: \"Alice\" <sip:alice@siplb.test>;tag={i:08x}\r\nTo: <sip:bob@siplb.test>;tag=b{i:08x}\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@198.18.1.11:5060>\r\nContent-Length: 0\r\n\r\n",
        call_id(i)
    )
    .into_bytes()
}

/// The caller's ACK to the 200 OK: an in-dialog request.
pub fn ack(i: u32) -> Vec<u8> {
    format!(
        "ACK sip:bob@198.18.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK{i:08x}b;rport\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@siplb.test>;tag={i:08x}\r\nTo: <sip:bob@siplb.test>;tag=b{i:08x}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        call_id(i)
    )
    .into_bytes()
}

/// Frames from the client to the VIP (in on port 0).
pub fn from_client(payload: &[u8]) -> Vec<u8> {
    sim::udp_frame(port_mac(0), (CLIENT, 5060), (VIP, 5060), payload)
}

/// Frames from backend `b` to the client (in on port 1, dnat).
pub fn from_backend(b: usize, payload: &[u8]) -> Vec<u8> {
    sim::udp_frame(port_mac(1), (backend(b), 5060), (CLIENT, 5060), payload)
}

/// Index of the backend a forwarded frame is addressed to.
pub fn backend_of(frame: &[u8]) -> usize {
    let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    (0..BACKENDS)
        .find(|&b| backend(b) == dst)
        .expect("forwarded to a backend")
}

/// Places `n` dialogs (ids `first..first + n`) through `process`: INVITE from the
/// client, 200 OK from the backend that got it, so each ends confirmed. Returns the
/// backend of each dialog.
pub fn place_dialogs(bed: &Bed, first: u32, n: u32, now: u32) -> Vec<u8> {
    let t = bed.tables();
    let mut w = sim::worker(&bed.counters);
    let mut backends = Vec::with_capacity(n as usize);
    for i in first..first + n {
        let mut f = from_client(&invite(i));
        let v = sim::run(&bed.svc, &t, &mut w, &mut f, 0, now);
        assert_eq!(v, Verdict::Forward(1), "INVITE {i} forwarded");
        let b = backend_of(&f);
        let mut r = from_backend(b, &ok_200(i));
        let v = sim::run(&bed.svc, &t, &mut w, &mut r, 1, now);
        assert_eq!(v, Verdict::Forward(0), "200 OK {i} forwarded");
        backends.push(b as u8);
    }
    backends
}

/// A field of `/proc/self/status` in kB (VmRSS, VmHWM, ...).
pub fn proc_status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The 1-minute load average, to record how busy the shared machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The reference of the per-packet benchmarks: copy a frame into the "mbuf", then the
/// checks of a plain UDP forwarder (Ethernet, IPv4 with its checksum, UDP).
#[inline(always)]
pub fn copy_and_headers(mbuf: &mut [u8], f: &[u8]) -> usize {
    use siplb_core::wire::ethernet::EthernetFrame;
    use siplb_core::wire::ipv4::Ipv4Packet;
    use siplb_core::wire::udp::UdpPacket;
    let m = &mut mbuf[..f.len()];
    m.copy_from_slice(f);
    let Ok(eth) = EthernetFrame::new_checked(&m[..]) else {
        return 0;
    };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return 0;
    };
    let ok = siplb_core::wire::checksum::checksum(ip.header()) == 0;
    match UdpPacket::new_checked(ip.payload()) {
        Ok(u) if ok => usize::from(u.dst_port()) + u.payload().len(),
        _ => 0,
    }
}

/// Best and median ns per call over `rounds` rounds of `batch` calls (after one
/// warm-up batch).
pub fn time_batches(rounds: usize, batch: usize, mut f: impl FnMut() -> usize) -> (f64, f64) {
    use std::hint::black_box;
    use std::time::Instant;
    for _ in 0..batch {
        black_box(f());
    }
    let mut per: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    (per[0], per[rounds / 2])
}
