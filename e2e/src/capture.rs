//! Packet captures on a phone's link (`tcpdump -w`) and the leak checker of issue 12:
//! every IPv4 packet a phone receives is decoded — IP header, every SIP message's start
//! line, headers and body (SDP line by line), RTP/RTCP by their version bits — and
//! every address of a hidden subnet (the farm's backend network) found anywhere in it
//! is reported with the frame number and the place it was found.
//!
//! The decoder is a test oracle, written for clarity rather than speed, and reads the
//! classic pcap format tcpdump writes (Ethernet link type, µs or ns timestamps, either
//! byte order). IP fragments are reassembled before decoding, so a SIP message that
//! crossed the link in pieces is checked whole.

use crate::netns::Netns;
use crate::process::Proc;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(a) & mask == u32::from(self.addr) & mask
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `tcpdump` writing every frame of one interface to a pcap file; stopped (SIGTERM, so
/// it flushes) by PID.
pub struct Capture {
    proc: Proc,
    pub pcap: PathBuf,
}

impl Capture {
    /// Starts the capture and waits until tcpdump listens. `limit` bounds its life.
    pub fn start(ns: &Netns, iface: &str, pcap: &Path, limit: Duration) -> Result<Capture> {
        let mut cmd = ns.command("timeout");
        cmd.arg(limit.as_secs().max(1).to_string())
            // -U: write each packet at once; -Z root: keep the right to write into the
            // test's root-owned directory; -s 0: whole frames.
            .args([
                "tcpdump", "-n", "-U", "-Z", "root", "-s", "0", "-i", iface, "-w",
            ])
            .arg(pcap);
        let log = pcap.with_extension("tcpdump.log");
        let mut proc = Proc::spawn("tcpdump", cmd, &log)?;
        proc.wait_for_output("listening on", Duration::from_secs(10))?;
        Ok(Capture {
            proc,
            pcap: pcap.to_path_buf(),
        })
    }

    /// Stops tcpdump and reads the frames it wrote.
    pub fn finish(mut self) -> Result<Vec<Frame>> {
        // Frames still in the kernel's capture buffer are written before tcpdump exits.
        std::thread::sleep(Duration::from_millis(300));
        self.proc.stop(Duration::from_secs(5));
        read_pcap(&self.pcap)
    }
}

/// One captured frame.
pub struct Frame {
    /// 1-based, as Wireshark numbers frames.
    pub number: usize,
    pub data: Vec<u8>,
}

/// Reads a classic pcap file of Ethernet frames.
pub fn read_pcap(path: &Path) -> Result<Vec<Frame>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if b.len() < 24 {
        bail!("{}: {} bytes, not a pcap file", path.display(), b.len());
    }
    let le = match &b[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => bail!("{}: pcap magic {m:02x?} unknown (pcapng?)", path.display()),
    };
    let u32_at = |o: usize| {
        let w = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let linktype = u32_at(20);
    if linktype != 1 {
        bail!("{}: link type {linktype}, not Ethernet", path.display());
    }
    let mut frames = Vec::new();
    let mut o = 24;
    while o + 16 <= b.len() {
        let incl = u32_at(o + 8) as usize;
        let start = o + 16;
        if start + incl > b.len() {
            // tcpdump killed mid-write: the last record is cut, the others stand.
            break;
        }
        frames.push(Frame {
            number: frames.len() + 1,
            data: b[start..start + incl].to_vec(),
        });
        o = start + incl;
    }
    Ok(frames)
}

/// A hidden-network address found in a packet a phone received.
#[derive(Clone, Debug)]
pub struct Leak {
    pub frame: usize,
    pub addr: Ipv4Addr,
    /// Where: `IP src`, `SIP request-line`, `SIP Via`, `SDP c`, `SDP a=rtcp`, ...
    pub place: String,
    /// The line it was found in (trimmed to 160 characters).
    pub text: String,
}

/// A SIP message seen in a capture.
#[derive(Clone, Debug)]
pub struct SipSeen {
    pub frame: usize,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// `INVITE` for requests, `200` for responses.
    pub kind: String,
    /// The CSeq number and method (a response's request).
    pub cseq: u32,
    pub cseq_method: String,
    pub call_id: String,
    pub has_sdp: bool,
}

impl SipSeen {
    /// `INVITE`, `ACK` for requests; `180/INVITE`, `200/BYE` for responses.
    pub fn label(&self) -> String {
        if self.kind.as_bytes()[0].is_ascii_digit() {
            format!("{}/{}", self.kind, self.cseq_method)
        } else {
            self.kind.clone()
        }
    }
}

/// RTP or RTCP packets between two transport addresses.
#[derive(Clone, Copy, Debug, Default)]
pub struct MediaCount {
    pub rtp: u64,
    pub rtcp: u64,
}

/// What one phone's capture shows.
#[derive(Debug, Default)]
pub struct CaptureReport {
    pub frames: usize,
    /// IPv4 packets (reassembled) to the phone / from the phone.
    pub received: usize,
    pub sent: usize,
    /// SIP messages and SDP bodies decoded, in what the phone received / sent.
    pub sip_received: Vec<SipSeen>,
    pub sip_sent: Vec<SipSeen>,
    pub sdp_received: usize,
    /// RTP/RTCP the phone received, by (source, destination).
    pub media_in: BTreeMap<(SocketAddrV4, SocketAddrV4), MediaCount>,
    /// RTP/RTCP the phone sent, by (source, destination).
    pub media_out: BTreeMap<(SocketAddrV4, SocketAddrV4), MediaCount>,
    /// Hidden-network addresses in what the phone received.
    pub leaks: Vec<Leak>,
    /// Packets the phone sent to a hidden-network address (it followed a leak).
    pub sent_to_hidden: BTreeMap<SocketAddrV4, usize>,
}

impl CaptureReport {
    pub fn rtp_in(&self) -> u64 {
        self.media_in.values().map(|m| m.rtp).sum()
    }
    pub fn rtp_out(&self) -> u64 {
        self.media_out.values().map(|m| m.rtp).sum()
    }

    /// Leaks counted by place, e.g. `{"SIP Record-Route": 3, "SDP c": 2}`.
    pub fn leaks_by_place(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in &self.leaks {
            *m.entry(l.place.clone()).or_insert(0) += 1;
        }
        m
    }
}

/// Decodes every frame of a phone's capture (`phone`: its address) and looks for
/// addresses of `hidden` in what it received.
pub fn analyse(frames: &[Frame], phone: Ipv4Addr, hidden: Subnet) -> CaptureReport {
    let mut r = CaptureReport {
        frames: frames.len(),
        ..Default::default()
    };
    let mut frags = Reassembly::default();
    for f in frames {
        let Some(pkt) = ipv4_of(&f.data).and_then(|p| frags.push(p)) else {
            continue;
        };
        let inbound = pkt.dst == phone;
        if inbound {
            r.received += 1;
            for (addr, place) in [(pkt.src, "IP src"), (pkt.dst, "IP dst")] {
                if hidden.contains(addr) {
                    r.leaks.push(Leak {
                        frame: f.number,
                        addr,
                        place: place.into(),
                        text: format!("{} > {} proto {}", pkt.src, pkt.dst, pkt.proto),
                    });
                }
            }
        } else if pkt.src == phone {
            r.sent += 1;
        } else {
            continue;
        }
        let Some((sport, dport, payload)) = udp_of(&pkt) else {
            continue;
        };
        let src = SocketAddrV4::new(pkt.src, sport);
        let dst = SocketAddrV4::new(pkt.dst, dport);
        if !inbound && hidden.contains(pkt.dst) {
            *r.sent_to_hidden.entry(dst).or_insert(0) += 1;
        }
        if let Some(msg) = decode_sip(payload) {
            let seen = SipSeen {
                frame: f.number,
                src,
                dst,
                kind: msg.kind.clone(),
                cseq: msg.cseq,
                cseq_method: msg.cseq_method.clone(),
                call_id: msg.call_id.clone(),
                has_sdp: msg.sdp,
            };
            if inbound {
                if msg.sdp {
                    r.sdp_received += 1;
                }
                for (line, place) in &msg.lines {
                    for addr in ipv4s_in(line) {
                        if hidden.contains(addr) {
                            r.leaks.push(Leak {
                                frame: f.number,
                                addr,
                                place: place.clone(),
                                text: line.chars().take(160).collect(),
                            });
                        }
                    }
                }
                r.sip_received.push(seen);
            } else {
                r.sip_sent.push(seen);
            }
        } else if let Some(kind) = media_kind(payload) {
            let m = if inbound {
                r.media_in.entry((src, dst)).or_default()
            } else {
                r.media_out.entry((src, dst)).or_default()
            };
            match kind {
                Media::Rtp => m.rtp += 1,
                Media::Rtcp => m.rtcp += 1,
            }
        } else if inbound {
            // Neither SIP nor RTP: its bytes are still searched for hidden addresses.
            let text = String::from_utf8_lossy(payload);
            for addr in ipv4s_in(&text) {
                if hidden.contains(addr) {
                    r.leaks.push(Leak {
                        frame: f.number,
                        addr,
                        place: "UDP payload".into(),
                        text: text.chars().take(160).collect(),
                    });
                }
            }
        }
    }
    r
}

/// An IPv4 packet (or fragment) from a frame.
struct Ipv4<'a> {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    id: u16,
    /// Fragment offset in bytes, and More Fragments.
    offset: usize,
    more: bool,
    payload: std::borrow::Cow<'a, [u8]>,
}

fn ipv4_of(frame: &[u8]) -> Option<Ipv4<'_>> {
    let mut o = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(o)?, *frame.get(o + 1)?]);
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        o += 4;
        ethertype = u16::from_be_bytes([*frame.get(o)?, *frame.get(o + 1)?]);
    }
    if ethertype != 0x0800 {
        return None;
    }
    let ip = frame.get(o + 2..)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let flags_frag = u16::from_be_bytes([ip[6], ip[7]]);
    Some(Ipv4 {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        proto: ip[9],
        id: u16::from_be_bytes([ip[4], ip[5]]),
        offset: usize::from(flags_frag & 0x1fff) * 8,
        more: flags_frag & 0x2000 != 0,
        payload: std::borrow::Cow::Borrowed(ip.get(ihl..total.min(ip.len()))?),
    })
}

/// A datagram's identity: (src, dst, protocol, IP id).
type DatagramKey = (Ipv4Addr, Ipv4Addr, u8, u16);
/// A fragment: offset, More Fragments, bytes.
type Fragment = (usize, bool, Vec<u8>);

/// Fragments waiting for the rest of their datagram.
#[derive(Default)]
struct Reassembly {
    pending: BTreeMap<DatagramKey, Vec<Fragment>>,
}

impl Reassembly {
    /// The whole datagram, once `p` completes it (at once for an unfragmented packet).
    fn push<'a>(&mut self, p: Ipv4<'a>) -> Option<Ipv4<'a>> {
        if p.offset == 0 && !p.more {
            return Some(p);
        }
        let key = (p.src, p.dst, p.proto, p.id);
        let parts = self.pending.entry(key).or_default();
        parts.push((p.offset, p.more, p.payload.to_vec()));
        parts.sort_by_key(|x| x.0);
        let mut next = 0;
        for (off, _, data) in parts.iter() {
            if *off != next {
                return None;
            }
            next += data.len();
        }
        if parts.last().is_some_and(|x| x.1) {
            return None;
        }
        let whole: Vec<u8> = self
            .pending
            .remove(&key)?
            .into_iter()
            .flat_map(|x| x.2)
            .collect();
        Some(Ipv4 {
            offset: 0,
            more: false,
            payload: std::borrow::Cow::Owned(whole),
            ..p
        })
    }
}

fn udp_of<'a>(p: &'a Ipv4<'_>) -> Option<(u16, u16, &'a [u8])> {
    if p.proto != 17 || p.payload.len() < 8 {
        return None;
    }
    let b = &p.payload;
    let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
        b.get(8..len.clamp(8, b.len()))?,
    ))
}

enum Media {
    Rtp,
    Rtcp,
}

/// RTP or RTCP by RFC 3550's version bits and RFC 5761's payload type ranges.
fn media_kind(p: &[u8]) -> Option<Media> {
    if p.len() < 8 || p[0] >> 6 != 2 {
        return None;
    }
    match p[1] {
        192..=223 => Some(Media::Rtcp),
        _ if p.len() >= 12 => Some(Media::Rtp),
        _ => None,
    }
}

/// A SIP message, decoded for the checker: every line with the place it stands for.
struct SipDecoded {
    kind: String,
    cseq: u32,
    cseq_method: String,
    call_id: String,
    sdp: bool,
    /// (line, place): the start line, each header (folded lines joined), each body line.
    lines: Vec<(String, String)>,
}

/// RFC 3261 §7.3.3 compact forms of the headers a UA acts on.
fn header_name(name: &str) -> String {
    let long = match name.to_ascii_lowercase().as_str() {
        "v" => "Via",
        "m" => "Contact",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "k" => "Supported",
        "s" => "Subject",
        "e" => "Content-Encoding",
        _ => return name.to_string(),
    };
    long.to_string()
}

fn decode_sip(payload: &[u8]) -> Option<SipDecoded> {
    let text = String::from_utf8_lossy(payload);
    let (head, body) = match text.find("\r\n\r\n") {
        Some(i) => (&text[..i], &text[i + 4..]),
        None => (&text[..], ""),
    };
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let kind = if let Some(rest) = start.strip_prefix("SIP/2.0 ") {
        rest.split(' ').next()?.to_string()
    } else {
        let (method, rest) = start.split_once(' ')?;
        if !method.bytes().all(|b| b.is_ascii_uppercase()) || !rest.ends_with("SIP/2.0") {
            return None;
        }
        method.to_string()
    };
    let place = if kind.as_bytes()[0].is_ascii_digit() {
        "SIP status-line"
    } else {
        "SIP request-line"
    };
    let mut out = vec![(start.to_string(), place.to_string())];
    // Headers, with folded continuation lines joined to their header.
    let mut headers: Vec<(String, String)> = Vec::new();
    for l in lines {
        if l.starts_with([' ', '\t']) {
            if let Some(h) = headers.last_mut() {
                h.1.push(' ');
                h.1.push_str(l.trim());
            }
        } else if let Some((n, v)) = l.split_once(':') {
            headers.push((header_name(n.trim()), v.trim().to_string()));
        } else {
            headers.push(("(malformed)".into(), l.to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|h| h.0.eq_ignore_ascii_case(name))
            .map(|h| h.1.clone())
            .unwrap_or_default()
    };
    let cseq = get("CSeq");
    let mut cseq = cseq.split_whitespace();
    let cseq_number = cseq.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let cseq_method = cseq.next().unwrap_or("").to_string();
    let call_id = get("Call-ID");
    let sdp = get("Content-Type")
        .to_ascii_lowercase()
        .starts_with("application/sdp");
    for (n, v) in &headers {
        out.push((format!("{n}: {v}"), format!("SIP {n}")));
    }
    for l in body.lines() {
        let place = if sdp {
            // `c`, `o`, `m`; attributes by name: `a=rtcp`, `a=candidate`.
            match l.split_once('=') {
                Some(("a", v)) => format!("SDP a={}", v.split([':', ' ']).next().unwrap_or("")),
                Some((k, _)) => format!("SDP {k}"),
                None => "SDP".into(),
            }
        } else {
            "SIP body".into()
        };
        out.push((l.to_string(), place));
    }
    Some(SipDecoded {
        kind,
        cseq: cseq_number,
        cseq_method,
        call_id,
        sdp,
        lines: out,
    })
}

/// Every dotted-quad IPv4 address written in `text` (not part of a longer dotted run
/// of digits, such as a version string `1.2.3.4.5`).
pub fn ipv4s_in(text: &str) -> Vec<Ipv4Addr> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_digit() || b[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
            j += 1;
        }
        let run = text[i..j].trim_end_matches('.');
        if let Ok(a) = run.parse::<Ipv4Addr>() {
            out.push(a);
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKENDS: Subnet = Subnet {
        addr: Ipv4Addr::new(198, 18, 1, 0),
        prefix: 24,
    };
    const PHONE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    /// Ethernet + IPv4 (+ fragment fields) around `l4`.
    fn frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + l4.len()) as u16;
        f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(l4);
        f
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let len = (8 + payload.len()) as u16;
        let mut u = Vec::new();
        for w in [sport, dport, len, 0] {
            u.extend_from_slice(&w.to_be_bytes());
        }
        u.extend_from_slice(payload);
        u
    }

    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        for w in [0u32, 0, 65535, 1] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        for f in frames {
            for w in [0u32, 0, f.len() as u32, f.len() as u32] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.extend_from_slice(f);
        }
        b
    }

    const OK_WITH_SDP: &str = "SIP/2.0 200 OK\r\n\
        Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK1;received=198.18.1.1\r\n\
        Record-Route: <sip:198.18.1.11;lr>\r\n\
        From: <sip:alice@198.18.0.2>;tag=a\r\nTo: <sip:bob@198.18.0.2>;tag=b\r\n\
        i: c1\r\nCSeq: 1 INVITE\r\n\
        m: <sip:bob@198.18.0.11:5060>\r\n\
        Content-Type: application/sdp\r\nContent-Length: 0\r\n\r\n\
        v=0\r\no=- 1 1 IN IP4 198.18.1.12\r\ns=-\r\nc=IN IP4 198.18.1.12\r\n\
        t=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtcp:30001 IN IP4 198.18.1.12\r\n";

    #[test]
    fn finds_every_hidden_address_with_its_place() {
        let frames = vec![
            frame(
                VIP,
                PHONE,
                17,
                1,
                0,
                &udp(5060, 5060, OK_WITH_SDP.as_bytes()),
            ),
            // RTP from a backend straight to the phone: a leak in the IP header.
            frame(
                Ipv4Addr::new(198, 18, 1, 12),
                PHONE,
                17,
                2,
                0,
                &udp(30000, 40000, &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
            ),
            // What the phone sends to a backend is not a leak, but is counted.
            frame(
                PHONE,
                Ipv4Addr::new(198, 18, 1, 11),
                17,
                3,
                0,
                &udp(
                    5060,
                    5060,
                    b"ACK sip:bob@198.18.0.11 SIP/2.0\r\nCSeq: 1 ACK\r\n\r\n",
                ),
            ),
        ];
        let path = std::env::temp_dir().join(format!("capture-test-{}.pcap", std::process::id()));
        std::fs::write(&path, pcap(&frames)).unwrap();
        let read = read_pcap(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let r = analyse(&read, PHONE, BACKENDS);
        assert_eq!((r.frames, r.received, r.sent), (3, 2, 1));
        assert_eq!(r.sip_received.len(), 1);
        assert_eq!(r.sip_received[0].label(), "200/INVITE");
        assert_eq!(r.sip_received[0].call_id, "c1");
        assert_eq!(r.sdp_received, 1);
        assert_eq!(r.sip_sent[0].label(), "ACK");
        assert_eq!(r.rtp_in(), 1);
        let places = r.leaks_by_place();
        let want = [
            ("IP src", 1),
            ("SIP Via", 1),
            ("SIP Record-Route", 1),
            ("SDP o", 1),
            ("SDP c", 1),
            ("SDP a=rtcp", 1),
        ];
        assert_eq!(
            places,
            want.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            "{:#?}",
            r.leaks
        );
        assert!(r.leaks.iter().all(|l| l.frame <= 2));
        assert_eq!(r.sent_to_hidden.values().sum::<usize>(), 1);
    }

    #[test]
    fn a_sip_message_in_fragments_is_checked_whole() {
        let l4 = udp(5060, 5060, OK_WITH_SDP.as_bytes());
        let (a, b) = l4.split_at(200);
        let frames = [
            frame(VIP, PHONE, 17, 9, 0x2000, a),
            frame(VIP, PHONE, 17, 9, 200 / 8, b),
        ];
        let frames: Vec<Frame> = frames
            .into_iter()
            .enumerate()
            .map(|(i, data)| Frame {
                number: i + 1,
                data,
            })
            .collect();
        let r = analyse(&frames, PHONE, BACKENDS);
        assert_eq!(r.sip_received.len(), 1);
        assert_eq!(r.sip_received[0].frame, 2);
        assert_eq!(r.leaks.len(), 5, "{:#?}", r.leaks);
    }

    #[test]
    fn clean_messages_show_no_leak() {
        // 198.18.1.1x becomes 198.18.0.2x: outside the backend network.
        let clean = OK_WITH_SDP.replace("198.18.1.1", "198.18.0.2");
        let frames = [Frame {
            number: 1,
            data: frame(VIP, PHONE, 17, 1, 0, &udp(5060, 5060, clean.as_bytes())),
        }];
        let r = analyse(&frames, PHONE, BACKENDS);
        assert_eq!((r.sip_received.len(), r.sdp_received), (1, 1));
        assert!(r.leaks.is_empty(), "{:#?}", r.leaks);
    }

    #[test]
    fn addresses_in_text() {
        assert_eq!(
            ipv4s_in("sip:a@198.18.1.11:5060;received=198.18.1.1 v1.2.3.4.5 x 300.1.1.1"),
            vec![Ipv4Addr::new(198, 18, 1, 11), Ipv4Addr::new(198, 18, 1, 1)]
        );
        assert!(BACKENDS.contains(Ipv4Addr::new(198, 18, 1, 254)));
        assert!(!BACKENDS.contains(Ipv4Addr::new(198, 18, 0, 2)));
    }
}
