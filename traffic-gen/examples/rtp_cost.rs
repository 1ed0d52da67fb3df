//! What siplb-gen itself spends per RTP packet in the media mode, without DPDK: build
//! the frame of the next stream (`MediaSide::emit`), classify it and count it at the
//! receiving side, both directions alternating, 1,000 streams each way, 214-byte frames.
//! `bench/virtio_media.sh` prints it next to the DUT figures: the generator must
//! outrun what it measures.
//!
//!   cargo run --release -p traffic-gen --example rtp_cost [PACKETS]

use siplb_core::wire::MacAddr;
use std::net::Ipv4Addr;
use std::time::Instant;
use traffic_gen::frame::{self, Endpoint, Incoming};
use traffic_gen::media::{self, MediaSide};

const STREAMS: u64 = 1000;

fn main() {
    let packets: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("PACKETS: a number"))
        .unwrap_or(20_000_000);
    let (client_mac, backend_mac) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let (client_ip, backend_ip) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 1, 11));
    let mut client = MediaSide::new(media::CLIENT_RTP_BASE, STREAMS as usize, 160);
    let mut backend = MediaSide::new(media::BACKEND_RTP_BASE, STREAMS as usize, 160);
    for call in 0..STREAMS {
        let (c, b) = media::ssrcs(call.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (cp, bp) = (client.port(call), backend.port(call));
        let to_backend = Endpoint {
            mac: backend_mac,
            ip: backend_ip,
            port: bp,
        };
        let to_client = Endpoint {
            mac: client_mac,
            ip: client_ip,
            port: cp,
        };
        client.open((client_ip, cp), to_backend, c, b);
        backend.open((backend_ip, bp), to_client, b, c);
    }
    let mut buf = vec![0u8; 2048];
    let t = Instant::now();
    for i in 0..packets {
        let (from, to, mac) = if i % 2 == 0 {
            (&mut client, &mut backend, client_mac)
        } else {
            (&mut backend, &mut client, backend_mac)
        };
        let n = from.emit(mac, &mut buf).expect("room for the frame");
        if let Incoming::Udp { dst, payload, .. } = frame::classify(&buf[..n]) {
            to.receive(dst.port, payload);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let received = client.stats.received + backend.stats.received;
    assert_eq!(received, packets, "every packet counted as its stream's");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "rtp_cost: {packets} RTP packets (build + classify + count) in {secs:.3} s: {:.0} ns per packet, {:.2} Mpps of generator work on one core (load average {})",
        secs * 1e9 / packets as f64,
        packets as f64 / secs / 1e6,
        load.split(' ').next().unwrap_or("?")
    );
}
