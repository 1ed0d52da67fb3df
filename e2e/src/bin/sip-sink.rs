//! `sip-sink ADDR:PORT [--call-ids]`: a SIP server that hangs. It binds UDP and TCP on
//! the address, reads everything sent to it (accepting TCP connections) and never
//! answers, until killed. Health-check tests use it as "a server that is there but does
//! not work"; with `--call-ids` it prints `call-id <Call-ID>` for every UDP datagram
//! that carries one (the failover test counts the calls that reached it).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};

fn main() {
    let Some(addr) = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        eprintln!("usage: sip-sink ADDR:PORT");
        std::process::exit(2);
    };
    let udp = UdpSocket::bind(addr).unwrap_or_else(|e| {
        eprintln!("sip-sink: UDP {addr}: {e}");
        std::process::exit(1)
    });
    let tcp = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("sip-sink: TCP {addr}: {e}");
        std::process::exit(1)
    });
    println!("sip-sink: listening on {addr} (UDP and TCP), answering nothing");
    std::thread::spawn(move || {
        for mut conn in tcp.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let call_ids = std::env::args().any(|a| a == "--call-ids");
    let mut buf = [0u8; 65536];
    let mut n = 0u64;
    while let Ok((len, _)) = udp.recv_from(&mut buf) {
        n += 1;
        if call_ids {
            if let Some(id) = call_id(&buf[..len]) {
                println!("call-id {id}");
            }
        } else if n.is_power_of_two() {
            println!("sip-sink: {n} datagrams ignored");
        }
    }
}

/// The Call-ID header's value of a SIP message (long or compact form), if any.
fn call_id(msg: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name == "i").then(|| value.trim().to_string())
    })
}
