//! The SIP ALG on TCP with real SIP-over-TCP peers: a SIPp client places its calls
//! over one TCP connection to the VIP (`-t t1`), a SIPp server answers on one
//! connection from the balancer. Every INVITE, ACK and BYE is rewritten toward the
//! backend (the VIP in the Request-URI becomes the backend's address, and in snat the
//! client's Via and Contact the SNAT flow), every 200 toward the client (the server's
//! Contact becomes the VIP, and the SDP of both names the media legs), so both streams
//! change length many times: the calls only complete if every later segment's
//! sequence and acknowledgment numbers are corrected. With `alg = false` the server's
//! address reaches the client (the test sees the leak it looks for).

use e2e::bed::stat;
use e2e::sipp::Uac;
use e2e::topology::{backend_ip, Topology, CLIENT_IP, VIP};
use std::path::Path;

const CALLS: u64 = 20;

fn farm(nat: &str, alg: bool) -> String {
    format!(
        "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nnat = \"{nat}\"\nalg = {alg}\nprotocols = [\"udp\", \"tcp\"]\nbackends = [ {{ address = \"{}\" }} ]\n",
        backend_ip(0)
    )
}

/// The messages of a SIPp `-trace_msg` log: (sent by this SIPp, text).
fn messages(path: &Path) -> Vec<(bool, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split("----------------------------------------------- ")
        .skip(1)
        .filter_map(|block| {
            let mut lines = block.lines().skip(1);
            let dir = lines.next()?;
            let sent = dir.contains("message sent");
            if !sent && !dir.contains("message received") {
                return None;
            }
            let text: Vec<_> = lines.skip_while(|l| l.trim().is_empty()).collect();
            Some((sent, text.join("\n")))
        })
        .collect()
}

/// Lines of `msg` whose header name is one of `names`.
fn header_lines<'m>(msg: &'m str, names: &[&str]) -> Vec<&'m str> {
    msg.lines()
        .filter(|l| names.iter().any(|n| l.starts_with(&format!("{n}:"))))
        .collect()
}

fn calls_over_one_connection(nat: &str, alg: bool) {
    e2e::require_root();
    let topo = Topology::with_backends(1).unwrap();
    let mut dp = topo
        .start_dataplane(&(topo.base_config() + &farm(nat, alg)), &[])
        .unwrap();
    let uas = topo.start_uas(0, "uas", None, &["-t", "t1"]).unwrap();
    let run = Uac::new(&topo.client, "uac", CALLS as u32, 10)
        .local(CLIENT_IP, 5070)
        .args(["-t", "t1"])
        .traced()
        .run(&topo.dir)
        .unwrap();
    let at_backend_log = uas.messages.clone();
    uas.finish();
    let fin = dp.stop_final_stats();
    println!("{fin}");
    assert_eq!((run.successful, run.failed), (CALLS, 0), "{}", run.output);
    let counter = |name: &str| stat(&fin, name);
    assert!(!fin.contains("tcp_alg_skipped_"), "{nat}: {fin}");
    if alg {
        // INVITE, ACK, BYE toward the backend and 180, 200, 200 back, every call.
        assert_eq!(counter("rewritten"), 6 * CALLS, "{nat}: {fin}");
        assert!(counter("tcp_seq_mapped") > 4 * CALLS, "{nat}: {fin}");
    } else {
        assert_eq!(
            (counter("rewritten"), counter("tcp_seq_mapped")),
            (0, 0),
            "{fin}"
        );
    }

    let backend = backend_ip(0).to_string();
    let at_client = messages(&topo.dir.join("uac.msg"));
    let at_backend = messages(&at_backend_log);
    let received_by_client: Vec<_> = at_client.iter().filter(|(s, _)| !s).collect();
    let received_by_backend: Vec<_> = at_backend.iter().filter(|(s, _)| !s).collect();
    // 180, 200 to INVITE and 200 to BYE per call; INVITE, ACK, BYE.
    assert_eq!(received_by_client.len() as u64, 3 * CALLS, "{nat}");
    assert_eq!(received_by_backend.len() as u64, 3 * CALLS, "{nat}");

    // Headers and SDP: the 200's SDP names the VIP's media leg.
    let leaks: Vec<_> = received_by_client
        .iter()
        .filter(|(_, m)| m.contains(&backend))
        .collect();
    let request_uris: Vec<&str> = received_by_backend
        .iter()
        .filter_map(|(_, m)| m.lines().next())
        .collect();
    if !alg {
        assert!(
            !leaks.is_empty(),
            "{nat}: with the ALG off the server's Contact reaches the client"
        );
        for l in &request_uris {
            assert!(!l.contains(&backend), "{l}");
        }
        return;
    }
    assert!(
        leaks.is_empty(),
        "{nat}: a backend address reached the client in {} messages, the first:\n{}",
        leaks.len(),
        leaks[0].1
    );
    let sdp_at_vip = received_by_client
        .iter()
        .filter(|(_, m)| m.contains(&format!("c=IN IP4 {VIP}")))
        .count() as u64;
    assert_eq!(
        sdp_at_vip, CALLS,
        "{nat}: every 200's SDP names the VIP's leg"
    );
    let contacts = received_by_client
        .iter()
        .flat_map(|(_, m)| header_lines(m, &["Contact"]))
        .filter(|l| l.contains(&format!("{VIP}:5060")))
        .count() as u64;
    assert!(
        contacts >= CALLS,
        "{nat}: the server's Contact, as the VIP, in every call's 200 ({contacts})"
    );
    for l in &request_uris {
        assert!(
            l.contains(&format!("@{backend}:5060 SIP/2.0")),
            "{nat}: the VIP in the Request-URI becomes the backend: {l}"
        );
    }
    let client_in_via_contact = received_by_backend
        .iter()
        .flat_map(|(_, m)| header_lines(m, &["Via", "Contact"]))
        .filter(|l| l.contains(&CLIENT_IP.to_string()))
        .count();
    if nat == "snat" {
        assert_eq!(
            client_in_via_contact, 0,
            "snat: the client's Via and Contact name the balancer's flow"
        );
    } else {
        assert!(
            client_in_via_contact as u64 >= 3 * CALLS,
            "dnat: the backend sees the client"
        );
    }
}

#[test]
fn dnat_sip_over_tcp_rewritten_on_one_connection() {
    calls_over_one_connection("dnat", true);
}

#[test]
fn snat_sip_over_tcp_rewritten_on_one_connection() {
    calls_over_one_connection("snat", true);
}

#[test]
fn with_the_alg_off_the_backend_address_reaches_the_client_over_tcp() {
    calls_over_one_connection("dnat", false);
}
