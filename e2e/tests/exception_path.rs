//! The exception path: the balancer host's own traffic (ping, TCP to its own address,
//! the control plane's sockets toward the backends) crosses the DPDK ports through the
//! kernel interfaces the dataplane creates, while SIP is being balanced.

use e2e::sipp::{stickiness, Uac};
use e2e::topology::{backend_ip, Topology};
use std::time::Duration;

#[test]
fn ping_tcp_and_own_sockets_work_while_sip_is_balanced() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let cfg = topo.base_config() + &topo.farm_config("snat", "call-id", &[1, 1], "");
    let mut dp = topo.start_dataplane(&cfg, &[]).unwrap();
    // The kernel interfaces carry the ports' addresses in the balancer's namespace.
    let addrs = topo.lb.run("ip", &["-4", "-o", "addr", "show"]).unwrap();
    assert!(
        addrs.contains("siplb0") && addrs.contains("198.18.0.1/24"),
        "{addrs}"
    );
    assert!(
        addrs.contains("siplb1") && addrs.contains("198.18.1.1/24"),
        "{addrs}"
    );

    let uas = topo.start_uas_backends(&["-aa"]).unwrap();
    let mut calls = Uac::new(&topo.client, "calls", 200, 40)
        .limit(100)
        .spawn(&topo.dir)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // A client pings the balancer's own address and opens a TCP connection to a
    // service on the balancer host.
    let ping = topo
        .client
        .run("ping", &["-c", "3", "-i", "0.2", "-W", "2", "198.18.0.1"])
        .unwrap();
    assert!(ping.contains("3 received"), "{ping}");
    let server = topo
        .lb
        .command("python3")
        .args(["-c", "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('198.18.0.1',8022))\ns.listen(1)\nc,_=s.accept()\nc.sendall(b'hello from the balancer host\\n'+c.recv(100))\nc.close()"])
        .spawn()
        .unwrap();
    let mut server = scopeguard(server);
    std::thread::sleep(Duration::from_millis(300));
    let reply = topo
        .client
        .run("python3", &["-c", "import socket\nc=socket.create_connection(('198.18.0.1',8022),timeout=5)\nc.sendall(b'ping')\nprint(c.recv(200).decode())"])
        .unwrap();
    assert!(
        reply.contains("hello from the balancer host") && reply.contains("ping"),
        "{reply}"
    );
    let _ = server.0.wait();

    // The balancer host's own sockets reach the backends through the back port: a
    // ping and a SIP OPTIONS from a kernel UDP socket, answered by the SIPp backend.
    let ping = topo
        .lb
        .run(
            "ping",
            &[
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                &backend_ip(1).to_string(),
            ],
        )
        .unwrap();
    assert!(ping.contains("2 received"), "{ping}");
    let options = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('198.18.1.1',0))\ns.settimeout(3)\np=s.getsockname()[1]\nm=('OPTIONS sip:{b}:5060 SIP/2.0\\r\\nVia: SIP/2.0/UDP 198.18.1.1:%d;branch=z9hG4bKhc1;rport\\r\\nFrom: <sip:check@198.18.1.1>;tag=hc\\r\\nTo: <sip:{b}>\\r\\nCall-ID: hc-1@198.18.1.1\\r\\nCSeq: 1 OPTIONS\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n' % p).encode()\ns.sendto(m,('{b}',5060))\nprint(s.recvfrom(2000)[0].decode().splitlines()[0])",
        b = backend_ip(1)
    );
    let answer = topo.lb.run("python3", &["-c", &options]).unwrap();
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");

    let run = calls.wait(Duration::from_secs(90)).unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    let fin = dp.stop_final_stats();
    println!("{fin}");
    assert_eq!((run.successful, run.failed), (200, 0), "{}", run.output);
    assert!(stickiness(&traces).split.is_empty());
    let to_kernel: u64 = fin
        .split("kernel to=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(to_kernel > 0, "nothing went to the kernel: {fin}");
}

/// Kills and reaps a child on drop.
struct Guard(std::process::Child);

fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
