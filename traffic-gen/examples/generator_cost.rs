//! What siplb-gen itself spends per packet, without DPDK: the client and the responder
//! wired back to back in one thread (build, classify and read every request and
//! response, latency histogram, stickiness account), over 1,000,000 calls of INVITE,
//! 100/180/200, ACK, BYE, 200 with 600-byte INVITE frames. `bench/virtio.sh` prints it
//! next to the DUT figures: the generator must outrun what it measures.
//!
//!   cargo run --release -p traffic-gen --example generator_cost [CALLS]

use siplb_core::wire::MacAddr;
use std::net::Ipv4Addr;
use std::time::Instant;
use traffic_gen::client::{Client, ClientConfig};
use traffic_gen::frame::{self, Incoming};
use traffic_gen::options::Mix;
use traffic_gen::responder::{Action, Responder, ResponderConfig};

fn main() {
    let calls: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("CALLS: a number"))
        .unwrap_or(1_000_000);
    let client_mac = MacAddr([2, 0, 0, 0, 0, 1]);
    let backend_mac = MacAddr([2, 0, 0, 0, 0, 2]);
    let mut client = Client::new(ClientConfig {
        src_ip: Ipv4Addr::new(198, 18, 0, 10),
        src_ips: 1,
        src_port: 5060,
        src_ports: 1,
        dst_ip: Ipv4Addr::new(198, 18, 1, 11),
        dst_port: 5060,
        users: 1000,
        calls: 1024,
        mix: Mix::parse("invite=1,ack=1,bye=1").expect("valid mix"),
        frame_size: 600,
        timeout_tsc: u64::MAX / 4,
        budget: 3 * calls,
        challenge: false,
        run: 1,
        tsc_hz: 1_000_000_000,
        media: None,
    });
    let mut responder = Responder::new(
        ResponderConfig {
            first_backend: Ipv4Addr::new(198, 18, 1, 11),
            backends: 1,
            sip_port: 5060,
            challenge: false,
            media: None,
        },
        1024,
    );
    let mut request = vec![0u8; 2048];
    let mut response = vec![0u8; 2048];
    let mut packets = 0u64;
    let mut now = 1;
    let t = Instant::now();
    while !client.done() {
        now += 1;
        for _ in 0..32 {
            let Some(len) = client.emit(now, client_mac, backend_mac, &mut request) else {
                break;
            };
            packets += 1;
            let Action::Answer(a) = responder.handle(frame::classify(&request[..len])) else {
                panic!("the responder did not answer a request");
            };
            for &code in a.codes {
                let n = responder
                    .write(&a, code, backend_mac, &mut response)
                    .expect("room for a response");
                if let Incoming::Udp { payload, .. } = frame::classify(&response[..n]) {
                    client.on_response(payload, now);
                    packets += 1;
                }
            }
        }
    }
    let dt = t.elapsed().as_secs_f64();
    let s = &client.stats;
    assert_eq!(s.calls_completed, calls, "every call completes");
    println!(
        "generator_cost: {calls} calls, {packets} packets (requests + responses) in {dt:.3} s: {:.0} ns per packet, {:.2} Mpps of generator work on one core (load average {})",
        dt * 1e9 / packets as f64,
        packets as f64 / dt / 1e6,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );
}
