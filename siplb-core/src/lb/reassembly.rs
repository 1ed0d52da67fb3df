//! IPv4 reassembly (RFC 791 §3.2, RFC 815's hole bookkeeping simplified to a range
//! list) and fragmentation for the egress MTU.
//!
//! SIP over UDP often exceeds 1500 bytes (an INVITE with a rich SDP), so datagrams are
//! reassembled before they are scanned. Memory is bounded: a fixed number of
//! datagrams in progress per worker, each in a preallocated buffer; a datagram that does
//! not complete within the timeout, that overlaps itself, or that would exceed the
//! buffer is dropped and counted. The reassembled datagram is copied — fragments are the
//! exception path.

use super::counters::DropReason;
use crate::wire::ethernet;
use crate::wire::ipv4::{self, Ipv4Packet};

/// Largest IPv4 datagram.
const MAX_DATAGRAM: usize = 65535;
/// Room before the payload for the Ethernet header and the largest IPv4 header.
const HEAD_ROOM: usize = ethernet::HEADER_LEN + 60;
/// Fragments per datagram; more is treated as an attack.
const MAX_PIECES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    src: u32,
    dst: u32,
    ident: u16,
    proto: u8,
}

struct Datagram {
    key: Option<Key>,
    started: u32,
    /// Received byte ranges of the payload, unsorted.
    pieces: [(u16, u16); MAX_PIECES],
    npieces: usize,
    /// Payload length, known once the last fragment (MF=0) arrived.
    total: Option<usize>,
    /// The first fragment's Ethernet + IPv4 header, once it arrived.
    header_len: usize,
    head: [u8; HEAD_ROOM],
    buf: Vec<u8>,
}

impl Datagram {
    fn new() -> Self {
        Self {
            key: None,
            started: 0,
            pieces: [(0, 0); MAX_PIECES],
            npieces: 0,
            total: None,
            header_len: 0,
            head: [0; HEAD_ROOM],
            buf: vec![0; HEAD_ROOM + MAX_DATAGRAM],
        }
    }

    fn reset(&mut self) {
        self.key = None;
        self.npieces = 0;
        self.total = None;
        self.header_len = 0;
    }

    fn received(&self) -> usize {
        self.pieces[..self.npieces]
            .iter()
            .map(|(a, b)| usize::from(b - a))
            .sum()
    }
}

/// What `push` did with a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembly {
    /// Kept; more fragments are needed.
    Held,
    /// The datagram is complete: `frame()` holds it as one Ethernet frame.
    Complete,
    /// The fragment (and its datagram, where relevant) was dropped.
    Dropped(DropReason),
}

/// One worker's reassembly state.
pub struct Reassembler {
    slots: Vec<Datagram>,
    timeout: u32,
    /// The last completed datagram as a frame, and its length.
    out: Vec<u8>,
    out_len: usize,
    /// Datagrams dropped because they timed out, counted when noticed.
    pub timed_out: u64,
}

impl Reassembler {
    /// `slots` datagrams in progress at most (each takes 64 KiB), `timeout` seconds to
    /// complete one.
    pub fn new(slots: usize, timeout: u32) -> Self {
        Self {
            slots: (0..slots).map(|_| Datagram::new()).collect(),
            timeout,
            out: vec![0; HEAD_ROOM + MAX_DATAGRAM],
            out_len: 0,
            timed_out: 0,
        }
    }

    /// Takes one IPv4 fragment (an Ethernet frame whose IPv4 header was validated).
    pub fn push(&mut self, frame: &[u8], now: u32) -> Reassembly {
        let l3 = ethernet::HEADER_LEN;
        let ip = Ipv4Packet::new_unchecked(&frame[l3..]);
        let key = Key {
            src: ip.src().into(),
            dst: ip.dst().into(),
            ident: ip.ident(),
            proto: ip.protocol(),
        };
        let hl = ip.header_len();
        let off = ip.frag_offset();
        let data = ip.payload();
        let end = off + data.len();
        if end > MAX_DATAGRAM - hl {
            self.drop_key(key);
            return Reassembly::Dropped(DropReason::FragmentTooBig);
        }
        // Non-final fragments carry multiples of 8 bytes (RFC 791).
        if ip.more_fragments() && (!data.len().is_multiple_of(8) || data.is_empty()) {
            self.drop_key(key);
            return Reassembly::Dropped(DropReason::Ipv4Malformed);
        }
        self.expire(now);
        let i = match self.slots.iter().position(|d| d.key == Some(key)) {
            Some(i) => i,
            None => match self.slots.iter().position(|d| d.key.is_none()) {
                Some(i) => {
                    let d = &mut self.slots[i];
                    d.reset();
                    d.key = Some(key);
                    d.started = now;
                    i
                }
                None => return Reassembly::Dropped(DropReason::FragmentNoSlot),
            },
        };
        let d = &mut self.slots[i];
        let overlaps = d.pieces[..d.npieces]
            .iter()
            .any(|(a, b)| off < usize::from(*b) && usize::from(*a) < end);
        let beyond_last = d.total.is_some_and(|t| end > t);
        let second_last = !ip.more_fragments() && d.total.is_some_and(|t| t != end);
        if overlaps || beyond_last || second_last {
            d.reset();
            return Reassembly::Dropped(DropReason::FragmentOverlap);
        }
        if d.npieces == MAX_PIECES {
            d.reset();
            return Reassembly::Dropped(DropReason::FragmentTooBig);
        }
        if !ip.more_fragments() {
            if d.pieces[..d.npieces]
                .iter()
                .any(|(_, b)| usize::from(*b) > end)
            {
                d.reset();
                return Reassembly::Dropped(DropReason::FragmentOverlap);
            }
            d.total = Some(end);
        }
        d.pieces[d.npieces] = (off as u16, end as u16);
        d.npieces += 1;
        d.buf[HEAD_ROOM + off..HEAD_ROOM + end].copy_from_slice(data);
        if off == 0 {
            d.header_len = l3 + hl;
            d.head[..l3 + hl].copy_from_slice(&frame[..l3 + hl]);
        }
        match d.total {
            Some(t) if d.header_len > 0 && d.received() == t => {
                self.finish(i, t);
                Reassembly::Complete
            }
            _ => Reassembly::Held,
        }
    }

    /// Moves a complete datagram into `out` as one frame with an unfragmented header.
    fn finish(&mut self, i: usize, payload_len: usize) {
        let d = &mut self.slots[i];
        let h = d.header_len;
        let start = HEAD_ROOM - h;
        d.buf[start..HEAD_ROOM].copy_from_slice(&d.head[..h]);
        let ip_total = (h - ethernet::HEADER_LEN + payload_len) as u16;
        ipv4::set_fragment(
            &mut d.buf[start + ethernet::HEADER_LEN..HEAD_ROOM],
            ip_total,
            false,
            0,
        );
        // The frame now sits at buf[start..]; swap buffers instead of copying it again.
        std::mem::swap(&mut d.buf, &mut self.out);
        let len = h + payload_len;
        self.out.copy_within(start..start + len, 0);
        self.out_len = len;
        d.reset();
    }

    /// The last completed datagram as an Ethernet frame (valid until the next `push`).
    pub fn frame(&mut self) -> &mut [u8] {
        &mut self.out[..self.out_len]
    }

    /// Moves the completed frame's buffer out (no allocation) so it can be processed
    /// while the reassembler is borrowed elsewhere; give it back with `put_back`.
    pub fn take_frame(&mut self) -> (Vec<u8>, usize) {
        (std::mem::take(&mut self.out), self.out_len)
    }

    pub fn put_back(&mut self, buf: Vec<u8>) {
        self.out = buf;
    }

    fn drop_key(&mut self, key: Key) {
        if let Some(d) = self.slots.iter_mut().find(|d| d.key == Some(key)) {
            d.reset();
        }
    }

    /// Drops datagrams older than the timeout; returns how many.
    pub fn expire(&mut self, now: u32) -> u64 {
        let mut n = 0;
        for d in &mut self.slots {
            if d.key.is_some() && now.wrapping_sub(d.started) >= self.timeout {
                d.reset();
                n += 1;
            }
        }
        self.timed_out += n;
        n
    }

    /// Datagrams in progress.
    pub fn in_progress(&self) -> usize {
        self.slots.iter().filter(|d| d.key.is_some()).count()
    }
}

/// Cuts an Ethernet frame carrying an IPv4 datagram into fragments that fit `mtu`,
/// calling `emit` with each fragment as a complete frame (headers written into
/// `scratch`, which must hold `mtu + 14` bytes). Returns the number of fragments, or
/// `Err(MtuExceeded)` if Don't Fragment is set.
pub fn fragment(
    frame: &[u8],
    mtu: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, DropReason> {
    let l3 = ethernet::HEADER_LEN;
    let ip = Ipv4Packet::new_unchecked(&frame[l3..]);
    if ip.dont_fragment() {
        return Err(DropReason::MtuExceeded);
    }
    let hl = ip.header_len();
    let payload = ip.payload();
    let base_off = ip.frag_offset();
    let was_more = ip.more_fragments();
    let chunk = ((mtu - hl) / 8) * 8;
    if chunk == 0 {
        return Err(DropReason::MtuExceeded);
    }
    let mut n = 0;
    let mut off = 0;
    while off < payload.len() {
        let len = chunk.min(payload.len() - off);
        let more = off + len < payload.len() || was_more;
        let out = &mut scratch[..l3 + hl + len];
        out[..l3 + hl].copy_from_slice(&frame[..l3 + hl]);
        out[l3 + hl..].copy_from_slice(&payload[off..off + len]);
        ipv4::set_fragment(
            &mut out[l3..l3 + hl],
            (hl + len) as u16,
            more,
            base_off + off,
        );
        emit(out);
        n += 1;
        off += len;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;
    use crate::wire::udp;
    use std::net::Ipv4Addr;

    /// An Ethernet frame with a UDP datagram of `payload_len` patterned bytes.
    fn big_frame(payload_len: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + payload_len];
        f[12] = 0x08;
        let total = (20 + 8 + payload_len) as u16;
        let (s, d) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 2));
        ipv4::write_header(
            &mut f[14..34],
            total,
            0x1234,
            false,
            0,
            64,
            ipv4::PROTO_UDP,
            s,
            d,
        );
        udp::write_header(&mut f[34..42], 5060, 5060, payload_len);
        for (i, b) in f[42..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let mut u = udp::UdpPacket::new_checked(&mut f[34..]).unwrap();
        u.fill_checksum(s, d);
        f
    }

    fn cut(frame: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let mut scratch = vec![0u8; mtu + 14];
        let mut v = Vec::new();
        fragment(frame, mtu, &mut scratch, |f| v.push(f.to_vec())).unwrap();
        v
    }

    #[test]
    fn fragments_reassemble_in_any_order() {
        let f = big_frame(3000);
        let frags = cut(&f, 1500);
        assert_eq!(frags.len(), 3);
        for fr in &frags {
            assert!(fr.len() <= 1514);
            let ip = Ipv4Packet::new_checked(&fr[14..]).unwrap();
            assert!(ip.is_fragment());
            assert_eq!(checksum::checksum(ip.header()), 0);
        }
        for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
            let mut r = Reassembler::new(4, 5);
            let mut last = Reassembly::Held;
            for i in order {
                last = r.push(&frags[i], 100);
            }
            assert_eq!(last, Reassembly::Complete);
            assert_eq!(r.frame(), &f[..], "order {order:?}");
            assert_eq!(r.in_progress(), 0);
        }
    }

    #[test]
    fn overlap_drops_the_datagram() {
        let f = big_frame(3000);
        let frags = cut(&f, 1500);
        let mut r = Reassembler::new(4, 5);
        assert_eq!(r.push(&frags[0], 1), Reassembly::Held);
        assert_eq!(
            r.push(&frags[0], 1),
            Reassembly::Dropped(DropReason::FragmentOverlap)
        );
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn incomplete_datagrams_time_out_and_slots_are_bounded() {
        let mut r = Reassembler::new(2, 5);
        let a = cut(&big_frame(3000), 1500);
        let mut b = big_frame(3000);
        b[14 + 5] = 0x99; // another ident
        let b = cut(&b, 1500);
        let mut c = big_frame(3000);
        c[14 + 5] = 0x77;
        let c = cut(&c, 1500);
        assert_eq!(r.push(&a[0], 10), Reassembly::Held);
        assert_eq!(r.push(&b[0], 10), Reassembly::Held);
        assert_eq!(
            r.push(&c[0], 11),
            Reassembly::Dropped(DropReason::FragmentNoSlot)
        );
        assert_eq!(r.push(&c[0], 16), Reassembly::Held, "old ones expired");
        assert_eq!(r.timed_out, 2);
    }

    #[test]
    fn oversized_and_misaligned_fragments_are_refused() {
        let f = big_frame(3000);
        let frags = cut(&f, 1500);
        let mut bad = frags[0].clone();
        // Claim offset 65528: the datagram would exceed 65535 bytes.
        ipv4::set_fragment(&mut bad[14..34], 1500, true, 65528);
        let mut r = Reassembler::new(2, 5);
        assert_eq!(
            r.push(&bad, 1),
            Reassembly::Dropped(DropReason::FragmentTooBig)
        );
        let mut odd = frags[0].clone();
        ipv4::set_fragment(&mut odd[14..34], 1499, true, 0);
        let odd = &odd[..14 + 1499];
        assert_eq!(
            r.push(odd, 1),
            Reassembly::Dropped(DropReason::Ipv4Malformed)
        );
    }

    #[test]
    fn dont_fragment_is_respected() {
        let mut f = big_frame(2000);
        f[14 + 6] |= 0x40;
        let c = checksum::checksum(&{
            let mut h = f[14..34].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        });
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let mut scratch = vec![0u8; 1514];
        assert_eq!(
            fragment(&f, 1500, &mut scratch, |_| {}),
            Err(DropReason::MtuExceeded)
        );
    }
}
