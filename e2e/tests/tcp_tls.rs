//! SIP over TCP and TLS through the VIP: balanced per connection, every segment of a
//! connection at one backend, in both NAT modes; TLS passes through untouched.

use e2e::sipp::{stickiness, Uac};
use e2e::topology::{backend_ip, Topology, CLIENT_IP, VIP};
use std::time::Duration;

fn farm(nat: &str) -> String {
    format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nnat = \"{nat}\"\naffinity = \"call-id\"\nprotocols = [\"udp\", \"tcp\", \"tls\"]\nbackends = [ {{ address = \"{}\" }}, {{ address = \"{}\" }} ]\n",
        backend_ip(0),
        backend_ip(1)
    )
}

fn sip_over_tcp(nat: &str) {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let mut dp = topo
        .start_dataplane(&(topo.base_config() + &farm(nat)), &[])
        .unwrap();
    let uas = topo.start_uas_backends(&["-t", "t1"]).unwrap();
    // One TCP connection per call.
    let run = Uac::new(&topo.client, "uac", 100, 25)
        .local(CLIENT_IP, 5070)
        .limit(50)
        .args(["-t", "tn", "-max_socket", "512"])
        .run(&topo.dir)
        .unwrap();
    let traces: Vec<_> = uas.into_iter().map(|u| u.finish()).collect();
    println!("{}", dp.stop_final_stats());
    assert_eq!((run.successful, run.failed), (100, 0), "{}", run.output);
    let s = stickiness(&traces);
    println!("{nat}: calls per backend {:?}", s.calls_per_backend);
    assert!(s.split.is_empty(), "{:?}", s.split);
    assert!(
        s.calls_per_backend.iter().all(|n| *n > 10),
        "connections not spread: {:?}",
        s.calls_per_backend
    );
    s.assert_every_call_has(nat, &["INVITE", "ACK", "BYE", "200/BYE"]);
}

#[test]
fn dnat_sip_over_tcp_is_balanced_per_connection() {
    sip_over_tcp("dnat");
}

#[test]
fn snat_sip_over_tcp_is_balanced_per_connection() {
    sip_over_tcp("snat");
}

#[test]
fn tls_passes_through_to_the_backends_tls_port() {
    e2e::require_root();
    let topo = Topology::with_backends(2).unwrap();
    let _dp = topo
        .start_dataplane(&(topo.base_config() + &farm("dnat")), &[])
        .unwrap();
    let key = topo.dir.join("key.pem");
    let cert = topo.dir.join("cert.pem");
    let o = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=pbx.siplb.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Each backend answers every TLS connection with its own name.
    let servers: Vec<_> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let script = format!(
                "import socket,ssl\nc=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nc.load_cert_chain('{}','{}')\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{}',5061))\ns.listen(16)\ns.settimeout(30)\nwhile True:\n  k,_=s.accept()\n  t=c.wrap_socket(k,server_side=True)\n  m=t.recv(100)\n  t.sendall(b'backend{} got '+m)\n  t.close()\n",
                cert.display(),
                key.display(),
                backend_ip(i),
                i
            );
            let mut cmd = ns.command("python3");
            cmd.args(["-c", &script]);
            e2e::process::Proc::spawn(&format!("tls{i}"), cmd, &topo.dir.join(format!("tls{i}.log"))).unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let client = format!(
        "import socket,ssl\nc=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\nc.load_verify_locations('{}')\nc.check_hostname=False\nseen=set()\nfor i in range(20):\n  s=c.wrap_socket(socket.create_connection(('{VIP}',5061),timeout=5))\n  s.sendall(b'OPTIONS %d' % i)\n  r=s.recv(100).decode()\n  assert r.endswith('OPTIONS %d' % i), r\n  seen.add(r.split()[0])\n  s.close()\nprint(sorted(seen))\n",
        cert.display()
    );
    let out = topo.client.run("python3", &["-c", &client]).unwrap();
    println!("TLS connections answered by {out}");
    assert!(
        out.contains("backend0") && out.contains("backend1"),
        "{out}"
    );
    drop(servers);
}
