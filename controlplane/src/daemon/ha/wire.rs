//! The HA datagram (version 3): a fixed header, a payload, and an HMAC-SHA256 over
//! both made with the pair's shared key.
//!
//! ```text
//! 0       4   5    6         8            16        20     24       n-32    n
//! | "SLBH" | 3 | kind | 0 0 | epoch (u64) | stream | seq | payload | HMAC  |
//! ```
//!
//! `epoch` is the sender's start time (ms since 1970): a new value means the peer's
//! daemon restarted. `stream` numbers the sender's replication streams (each begins
//! with a full resync); `seq` numbers the stream's datagrams from 1 (0: unsequenced,
//! heartbeats and acks). All integers big-endian.

use hmac::{Hmac, Mac, NewMac};
use sha2::Sha256;

pub const MAGIC: &[u8; 4] = b"SLBH";
pub const VERSION: u8 = 3;
pub const HEADER: usize = 24;
pub const MAC_LEN: usize = 32;

/// Table entries per sync datagram (16 bytes each; the datagram stays < 1400 B).
pub const PER_DATAGRAM: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// priority, flags (`FLAG_*`), numbering digests (4 × u64, see `numbering`).
    Heartbeat = 1,
    /// table id, count (u16), entries of 16 bytes.
    Sync = 2,
    /// acknowledged epoch (u64), stream (u32), cumulative seq (u32), bitmap (u64) of
    /// the 64 seqs after it.
    Ack = 3,
    /// The end of a stream's full resync: entries sent in it (u32).
    ResyncEnd = 4,
}

impl Kind {
    fn from(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Heartbeat,
            2 => Kind::Sync,
            3 => Kind::Ack,
            4 => Kind::ResyncEnd,
            _ => return None,
        })
    }
}

/// Heartbeat flags.
pub const FLAG_ACTIVE: u8 = 1;
/// The sender (a standby) has completed a full resync of the active unit's stream.
pub const FLAG_SYNCED: u8 = 2;
/// The sender (a standby) is in the middle of a full resync.
pub const FLAG_RESYNCING: u8 = 4;
/// The operator asked the sender to take over (`siplb ha takeover`): it outranks any
/// priority, and an active peer hands the VIPs over once the sender is synced.
pub const FLAG_PREFERRED: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub epoch: u64,
    pub stream: u32,
    pub seq: u32,
}

/// Why a datagram was dropped (counted per reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// From an address other than the peer's.
    Address,
    /// Too short, another magic, or an unknown kind.
    Malformed,
    Version,
    Mac,
}

impl Reject {
    pub const ALL: [Reject; 4] = [
        Reject::Address,
        Reject::Malformed,
        Reject::Version,
        Reject::Mac,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reject::Address => "address",
            Reject::Malformed => "malformed",
            Reject::Version => "version",
            Reject::Mac => "mac",
        }
    }
}

/// The pair's shared key, ready to MAC (keyed once; each use clones the state).
#[derive(Clone)]
pub struct Key(Hmac<Sha256>);

impl Key {
    pub fn new(secret: &[u8]) -> Key {
        Key(Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"))
    }

    /// A datagram: header, payload, MAC.
    pub fn seal(&self, h: Header, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(HEADER + payload.len() + MAC_LEN);
        m.extend_from_slice(MAGIC);
        m.push(VERSION);
        m.push(h.kind as u8);
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&h.epoch.to_be_bytes());
        m.extend_from_slice(&h.stream.to_be_bytes());
        m.extend_from_slice(&h.seq.to_be_bytes());
        m.extend_from_slice(payload);
        let mut mac = self.0.clone();
        mac.update(&m);
        m.extend_from_slice(&mac.finalize().into_bytes());
        m
    }

    /// The header and payload of an authentic datagram of our version.
    pub fn open<'a>(&self, m: &'a [u8]) -> Result<(Header, &'a [u8]), Reject> {
        if m.len() < HEADER + MAC_LEN || &m[..4] != MAGIC {
            return Err(Reject::Malformed);
        }
        if m[4] != VERSION {
            return Err(Reject::Version);
        }
        let (body, tag) = m.split_at(m.len() - MAC_LEN);
        let mut mac = self.0.clone();
        mac.update(body);
        mac.verify(tag).map_err(|_| Reject::Mac)?;
        let kind = Kind::from(m[5]).ok_or(Reject::Malformed)?;
        let h = Header {
            kind,
            epoch: u64::from_be_bytes(m[8..16].try_into().expect("8 bytes")),
            stream: u32::from_be_bytes(m[16..20].try_into().expect("4 bytes")),
            seq: u32::from_be_bytes(m[20..24].try_into().expect("4 bytes")),
        };
        Ok((h, &body[HEADER..]))
    }
}

/// A heartbeat's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Beat {
    pub priority: u8,
    pub flags: u8,
    pub digests: [u64; 4],
}

impl Beat {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![self.priority, self.flags];
        for d in self.digests {
            p.extend_from_slice(&d.to_be_bytes());
        }
        p
    }

    pub fn decode(p: &[u8]) -> Option<Beat> {
        if p.len() < 34 {
            return None;
        }
        let mut digests = [0; 4];
        for (i, d) in digests.iter_mut().enumerate() {
            *d = u64::from_be_bytes(p[2 + 8 * i..10 + 8 * i].try_into().ok()?);
        }
        Some(Beat {
            priority: p[0],
            flags: p[1],
            digests,
        })
    }
}

/// An acknowledgement's payload: everything up to `cumulative` arrived, and seq
/// `cumulative + 1 + i` arrived when bit `i` of `bitmap` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub epoch: u64,
    pub stream: u32,
    pub cumulative: u32,
    pub bitmap: u64,
}

impl Ack {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(24);
        p.extend_from_slice(&self.epoch.to_be_bytes());
        p.extend_from_slice(&self.stream.to_be_bytes());
        p.extend_from_slice(&self.cumulative.to_be_bytes());
        p.extend_from_slice(&self.bitmap.to_be_bytes());
        p
    }

    pub fn decode(p: &[u8]) -> Option<Ack> {
        if p.len() < 24 {
            return None;
        }
        Some(Ack {
            epoch: u64::from_be_bytes(p[..8].try_into().ok()?),
            stream: u32::from_be_bytes(p[8..12].try_into().ok()?),
            cumulative: u32::from_be_bytes(p[12..16].try_into().ok()?),
            bitmap: u64::from_be_bytes(p[16..24].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Header = Header {
        kind: Kind::Sync,
        epoch: 1_700_000_000_123,
        stream: 7,
        seq: 42,
    };

    #[test]
    fn a_sealed_datagram_opens_with_its_header_and_payload() {
        let k = Key::new(b"0123456789abcdef");
        let m = k.seal(H, b"payload");
        assert_eq!(m.len(), HEADER + 7 + MAC_LEN);
        assert_eq!(&m[..6], b"SLBH\x03\x02");
        assert_eq!(m[16..24], [0, 0, 0, 7, 0, 0, 0, 42]);
        let (h, p) = k.open(&m).unwrap();
        assert_eq!(h, H);
        assert_eq!(p, b"payload");
    }

    #[test]
    fn a_wrong_key_a_flipped_bit_or_a_cut_datagram_fails_the_mac() {
        let k = Key::new(b"0123456789abcdef");
        let m = k.seal(H, b"payload");
        assert_eq!(
            Key::new(b"0123456789abcdeF").open(&m).unwrap_err(),
            Reject::Mac
        );
        for i in [5, 9, 20, HEADER + 3, m.len() - 1] {
            let mut bad = m.clone();
            bad[i] ^= 1;
            assert_eq!(k.open(&bad).unwrap_err(), Reject::Mac, "byte {i}");
        }
        assert_eq!(k.open(&m[..m.len() - 1]).unwrap_err(), Reject::Mac);
    }

    #[test]
    fn another_version_or_magic_is_told_apart_from_a_bad_mac() {
        let k = Key::new(b"0123456789abcdef");
        let mut m = k.seal(H, b"");
        m[4] = 2;
        assert_eq!(k.open(&m).unwrap_err(), Reject::Version);
        m[0] = b'X';
        assert_eq!(k.open(&m).unwrap_err(), Reject::Malformed);
        assert_eq!(k.open(b"SLB2\x01").unwrap_err(), Reject::Malformed);
    }

    #[test]
    fn beats_and_acks_round_trip() {
        let b = Beat {
            priority: 200,
            flags: FLAG_ACTIVE | FLAG_SYNCED,
            digests: [0x0123_4567_89ab_cdef, 1, 2, u64::MAX],
        };
        assert_eq!(Beat::decode(&b.encode()), Some(b));
        assert_eq!(Beat::decode(&b.encode()[..33]), None);
        let a = Ack {
            epoch: 9,
            stream: 3,
            cumulative: 1000,
            bitmap: 0b1011,
        };
        assert_eq!(Ack::decode(&a.encode()), Some(a));
        assert_eq!(Ack::decode(&a.encode()[..23]), None);
    }
}
