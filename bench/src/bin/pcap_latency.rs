//! Latency a forwarder adds, from two packet captures (issue 7, part 2d).
//!
//!   pcap_latency CLIENT.pcap BACKEND.pcap [CDF.csv]
//!
//! The captures are taken on the client's and the backends' side of the forwarder
//! (`tcpdump --time-stamp-precision=nano -w`, Ethernet, one host clock). Every SIP
//! message is identified by Call-ID, CSeq and its request method or status code (the
//! benchmark runs without retransmissions, so each is sent once). A request's latency
//! is its time on the backend side minus its time on the client side; a response's
//! the other way round. Prints the count, p50, p99, p99.9 and max in microseconds for
//! requests, responses and all, and writes the distribution (per mille, 0..1000, and
//! 999.x) to CDF.csv.

use std::collections::HashMap;
use std::fs;

/// (Call-ID, CSeq, method or status): one message of one call.
type Key = (Vec<u8>, Vec<u8>, Vec<u8>);

struct Seen {
    key: Key,
    is_request: bool,
    ns: u64,
}

fn header<'a>(sip: &'a [u8], long: &[u8], short: &[u8]) -> Option<&'a [u8]> {
    sip.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let name = line[..colon].trim_ascii();
        (name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short))
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// The SIP messages of a pcap (Ethernet, IPv4, UDP), with their timestamps in ns.
fn read(path: &str) -> Vec<Seen> {
    let data = fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    assert!(data.len() >= 24, "{path}: not a pcap file");
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let nano = match magic {
        0xa1b2_3c4d => true,
        0xa1b2_c3d4 => false,
        _ => panic!("{path}: not a little-endian pcap file (magic {magic:#x})"),
    };
    let linktype = u32::from_le_bytes(data[20..24].try_into().unwrap());
    assert_eq!(linktype, 1, "{path}: Ethernet captures only");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let sec = u64::from(u32::from_le_bytes(data[at..at + 4].try_into().unwrap()));
        let frac = u64::from(u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap()));
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let ns = sec * 1_000_000_000 + if nano { frac } else { frac * 1000 };
        let Some(frame) = data.get(at + 16..at + 16 + caplen) else {
            break;
        };
        at += 16 + caplen;
        if let Some(m) = sip_message(frame) {
            out.push(Seen { ns, ..m });
        }
    }
    out
}

fn sip_message(frame: &[u8]) -> Option<Seen> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let sip = frame.get(14 + ihl + 8..)?;
    let first = sip.split(|&b| b == b'\r').next()?;
    let (is_request, what) = if let Some(rest) = first.strip_prefix(b"SIP/2.0 ") {
        (false, rest.get(..3)?.to_vec())
    } else {
        (true, first.split(|&b| b == b' ').next()?.to_vec())
    };
    let call_id = header(sip, b"call-id", b"i")?.to_vec();
    let cseq = header(sip, b"cseq", b"")?.to_vec();
    Some(Seen {
        key: (call_id, cseq, what),
        is_request,
        ns: 0,
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i]
}

fn print(name: &str, v: &mut [u64]) {
    v.sort_unstable();
    if v.is_empty() {
        println!("{name:<10} none matched");
        return;
    }
    println!(
        "{name:<10} n={:<8} p50={:.1} us  p99={:.1} us  p99.9={:.1} us  max={:.1} us",
        v.len(),
        percentile(v, 50.0) as f64 / 1e3,
        percentile(v, 99.0) as f64 / 1e3,
        percentile(v, 99.9) as f64 / 1e3,
        v[v.len() - 1] as f64 / 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [client, backend, rest @ ..] = args.as_slice() else {
        eprintln!("usage: pcap_latency CLIENT.pcap BACKEND.pcap [CDF.csv]");
        std::process::exit(2);
    };
    let at_client = read(client);
    let mut at_backend: HashMap<Key, u64> = HashMap::new();
    for s in read(backend) {
        at_backend.entry(s.key).or_insert(s.ns);
    }
    let (mut req, mut rsp, mut unmatched) = (Vec::new(), Vec::new(), 0usize);
    for s in &at_client {
        match at_backend.get(&s.key) {
            Some(&b) if s.is_request && b >= s.ns => req.push(b - s.ns),
            Some(&b) if !s.is_request && s.ns >= b => rsp.push(s.ns - b),
            _ => unmatched += 1,
        }
    }
    println!(
        "messages: {} at the client side, {} at the backend side, {unmatched} unmatched",
        at_client.len(),
        at_backend.len()
    );
    let mut all: Vec<u64> = req.iter().chain(&rsp).copied().collect();
    print("requests", &mut req);
    print("responses", &mut rsp);
    print("all", &mut all);
    if let (Some(path), false) = (rest.first(), all.is_empty()) {
        let mut csv = String::from("permille,us\n");
        let points = (0..=1000)
            .map(f64::from)
            .chain([999.5, 999.9, 999.99])
            .collect::<Vec<_>>();
        for p in points {
            csv.push_str(&format!(
                "{p},{:.3}\n",
                percentile(&all, p / 10.0) as f64 / 1e3
            ));
        }
        fs::write(path, csv).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    if all.is_empty() {
        println!("csv,0,0,0,0,0");
        return;
    }
    println!(
        "csv,{},{:.1},{:.1},{:.1},{:.1}",
        all.len(),
        percentile(&all, 50.0) as f64 / 1e3,
        percentile(&all, 99.0) as f64 / 1e3,
        percentile(&all, 99.9) as f64 / 1e3,
        all.last().map_or(0.0, |&m| m as f64 / 1e3)
    );
}
