//! Media mappings for the standby unit of an HA pair: the active unit exports each
//! mapping whole (both legs, their endpoints and latches) by its client leg; the
//! standby imports it at the same legs, so the ports that the SDP named keep working
//! after a takeover. Both units lay pools out alike (same configuration; the HA
//! numbering check compares the pools).

use super::{
    generation, index_key, state, Entry, MediaTable, LIVE, NEVER, ROLE_BACKEND, RTCP, RTP,
    STREAM_SHIFT,
};
use crate::hash::hash64;
use std::sync::atomic::{fence, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

/// Bytes of an encoded [`MappingRecord`].
pub const RECORD_BYTES: usize = 152;

/// One mapping as replication carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MappingRecord {
    pub client_leg: u32,
    pub backend_leg: u32,
    /// The legs' link words (client, backend); a client link of 0 says that the
    /// mapping at `client_leg` ended.
    pub link: [u64; 2],
    /// The farm and idle timeout bits of the legs' `peer` word (no peer leg).
    pub peer: u64,
    pub call: u64,
    pub out: [u64; 2],
    pub announced: [[u64; 2]; 2],
    pub dst: [[u64; 2]; 2],
    pub src: [[u64; 2]; 2],
}

/// What [`MediaTable::export`] found at a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exported {
    /// A live mapping whose client leg this is.
    Mapping(MappingRecord),
    /// No mapping starts here (a free leg or a backend leg).
    None,
    /// It changed while read: ask again later.
    Busy,
}

impl MappingRecord {
    /// The record of the end of the mapping at `client_leg`.
    pub fn ended(client_leg: u32) -> Self {
        MappingRecord {
            client_leg,
            ..Default::default()
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.client_leg.to_be_bytes());
        out.extend_from_slice(&self.backend_leg.to_be_bytes());
        let words = self
            .link
            .iter()
            .chain([&self.peer, &self.call])
            .chain(&self.out);
        let pairs = self
            .announced
            .iter()
            .chain(&self.dst)
            .chain(&self.src)
            .flatten();
        for w in words.chain(pairs) {
            out.extend_from_slice(&w.to_be_bytes());
        }
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < RECORD_BYTES {
            return None;
        }
        let w = |i: usize| u64::from_be_bytes(b[8 + 8 * i..16 + 8 * i].try_into().expect("8"));
        let pair = |i: usize| [w(i), w(i + 1)];
        Some(MappingRecord {
            client_leg: u32::from_be_bytes(b[..4].try_into().ok()?),
            backend_leg: u32::from_be_bytes(b[4..8].try_into().ok()?),
            link: pair(0),
            peer: w(2),
            call: w(3),
            out: pair(4),
            announced: [pair(6), pair(8)],
            dst: [pair(10), pair(12)],
            src: [pair(14), pair(16)],
        })
    }

    /// Changes when the record is worth sending again: anything but the deadlines,
    /// which RTP pushes every second; those only when they moved by a quarter of the
    /// idle timeout (so the standby's copy never idles out while the call lives).
    pub fn fingerprint(&self) -> u64 {
        let step = u64::from(((self.peer >> 48) as u32 / 4).max(1));
        let mut r = *self;
        for l in &mut r.link {
            *l = (*l & !0xffff_ffff) | ((*l & 0xffff_ffff) / step);
        }
        let mut b = Vec::with_capacity(RECORD_BYTES);
        r.encode(&mut b);
        hash64(&b)
    }
}

impl MediaTable<'_> {
    /// The leg whose export carries `leg`'s state: its client leg when `leg` is the
    /// backend leg of a live mapping, else `leg` itself (a dirty mark names either).
    pub fn client_leg_of(&self, leg: u32) -> u32 {
        let Some(l) = self.legs.get(leg as usize) else {
            return leg;
        };
        let link = l.link.load(Acquire);
        if state(link) == LIVE && link & ROLE_BACKEND != 0 {
            l.peer.load(Relaxed) as u32
        } else {
            leg
        }
    }

    /// The mapping whose client leg is `leg`, read consistently (see the seqlock in
    /// the module notes).
    pub fn export(&self, leg: u32) -> Exported {
        let Some(cl) = self.legs.get(leg as usize) else {
            return Exported::None;
        };
        let l1 = cl.link.load(Acquire);
        if state(l1) != LIVE || l1 & ROLE_BACKEND != 0 {
            return Exported::None;
        }
        let bi = cl.peer.load(Relaxed) as u32;
        let Some(bl) = self.legs.get(bi as usize) else {
            return Exported::Busy;
        };
        let b1 = bl.link.load(Acquire);
        if state(b1) != LIVE || generation(b1) != generation(l1) {
            return Exported::Busy;
        }
        let legs = [(cl, leg as usize), (bl, bi as usize)];
        let two = |f: &dyn Fn(usize) -> u64| [f(0), f(1)];
        let r = MappingRecord {
            client_leg: leg,
            backend_leg: bi,
            link: [l1, b1],
            peer: cl.peer.load(Relaxed) & !0xffff_ffff,
            call: self.info[leg as usize].call.load(Relaxed),
            out: two(&|i| legs[i].0.out.load(Relaxed)),
            announced: [0, 1].map(|i| {
                let info = &self.info[legs[i].1];
                [
                    info.announced[RTP].load(Relaxed),
                    info.announced[RTCP].load(Relaxed),
                ]
            }),
            dst: [0, 1].map(|i| [RTP, RTCP].map(|k| legs[i].0.dst[k].load(Relaxed))),
            src: [0, 1].map(|i| [RTP, RTCP].map(|k| legs[i].0.src[k].load(Relaxed))),
        };
        fence(Acquire);
        // Deadline refreshes (the low 32 bits) do not make a read inconsistent.
        let same = |a: u64, b: u64| a >> 32 == b >> 32;
        if !same(cl.link.load(Relaxed), l1) || !same(bl.link.load(Relaxed), b1) {
            return Exported::Busy;
        }
        Exported::Mapping(r)
    }

    /// Writes a mapping exported by the other unit at the same legs, ending whatever
    /// this table held there; an ended record ends the mapping at its client leg.
    /// False for a record that does not fit this table.
    pub fn import(&self, r: &MappingRecord, now: u32) -> bool {
        let (ci, bi) = (r.client_leg, r.backend_leg);
        let n = self.legs.len() as u32;
        if ci >= n {
            return false;
        }
        if r.link[0] == 0 {
            self.end_if_head(ci, None);
            return true;
        }
        let g = generation(r.link[0]);
        let valid = bi < n
            && ci != bi
            && state(r.link[0]) == LIVE
            && state(r.link[1]) == LIVE
            && r.link[0] & ROLE_BACKEND == 0
            && r.link[1] & ROLE_BACKEND != 0
            && generation(r.link[1]) == g;
        if !valid {
            return false;
        }
        for li in [ci, bi] {
            self.end_if_head(li, Some((g, r.call)));
            let l = self.legs[li as usize].link.load(Acquire);
            if state(l) == LIVE && l & ROLE_BACKEND != 0 {
                let head = self.legs[li as usize].peer.load(Relaxed) as u32;
                self.end_if_head(head, Some((g, r.call)));
            }
        }
        for (i, (li, pi)) in [(ci, bi), (bi, ci)].into_iter().enumerate() {
            let (leg, info) = (&self.legs[li as usize], &self.info[li as usize]);
            leg.peer.store(r.peer | u64::from(pi), Relaxed);
            leg.out.store(r.out[i], Relaxed);
            for k in [RTP, RTCP] {
                leg.dst[k].store(r.dst[i][k], Relaxed);
                leg.src[k].store(r.src[i][k], Relaxed);
                info.announced[k].store(r.announced[i][k], Relaxed);
            }
            info.call.store(r.call, Relaxed);
            leg.link.store(r.link[i], Release);
            self.bitmap[li as usize / 64].fetch_or(1 << (li % 64), Acquire);
        }
        self.touched([ci, bi]);
        let stream = ((r.link[0] >> STREAM_SHIFT) & 31) as u8;
        let _ = self.index.upsert(index_key(r.call, stream), now, |_| {
            Some(Entry {
                payload: ci,
                deadline: NEVER,
            })
        });
        true
    }

    /// Ends the mapping whose client leg is `leg`, unless it is the one `keep`
    /// (generation, call) names.
    fn end_if_head(&self, leg: u32, keep: Option<(u64, u64)>) {
        let Some(cl) = self.legs.get(leg as usize) else {
            return;
        };
        let l = cl.link.load(Acquire);
        if state(l) != LIVE || l & ROLE_BACKEND != 0 {
            return;
        }
        let call = self.info[leg as usize].call.load(Relaxed);
        if keep != Some((generation(l), call)) {
            self.end(leg, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::media::{Announce, MediaMemory, Placement, PoolSpec, Side};
    use std::net::{Ipv4Addr, SocketAddrV4};

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    const T: u32 = 1000;

    fn memory() -> MediaMemory {
        MediaMemory::new(&[
            PoolSpec {
                addr: VIP,
                ports: 20000..=20127,
            },
            PoolSpec {
                addr: SNAT,
                ports: 30000..=30127,
            },
        ])
        .unwrap()
    }

    fn sa(a: [u8; 4], p: u16) -> SocketAddrV4 {
        SocketAddrV4::new(a.into(), p)
    }

    /// Offer and answer of `stream` of call `c`: (client leg's port, backend leg's).
    fn dialog(t: &MediaTable, c: u64, stream: u8) -> (u16, u16) {
        let place = Placement {
            farm: 2,
            client_pool: t.pool(VIP, 20000).unwrap(),
            backend_pool: t.pool(SNAT, 30000).unwrap(),
            timeout: 40,
        };
        let ann = |from, rtp: SocketAddrV4| Announce {
            call: c,
            stream,
            from,
            rtp,
            rtcp: SocketAddrV4::new(*rtp.ip(), rtp.port() + 1),
        };
        let port = 4000 + 2 * c as u16;
        let to_b = t
            .announce(&place, &ann(Side::Client, sa([198, 18, 0, 10], port)), T)
            .unwrap();
        let to_c = t
            .announce(&place, &ann(Side::Backend, sa([198, 18, 1, 11], port)), T)
            .unwrap();
        (to_c.port, to_b.port)
    }

    fn export_all(t: &MediaTable) -> Vec<MappingRecord> {
        (0..t.legs() as u32)
            .filter_map(|i| match t.export(i) {
                Exported::Mapping(r) => Some(r),
                Exported::None => None,
                Exported::Busy => panic!("nothing runs concurrently"),
            })
            .collect()
    }

    #[test]
    fn imported_mappings_forward_like_the_originals_and_end_with_them() {
        let (a_mem, b_mem) = (memory(), memory());
        let (a, b) = (a_mem.table(), b_mem.table());
        let calls: Vec<(u16, u16)> = (1..=20).map(|c| dialog(&a, c, (c % 2) as u8)).collect();
        // A NATed client latches on call 1: its source is not the announced one.
        let natted = sa([198, 18, 0, 99], 7000);
        a.forward(sa([198, 18, 0, 2], calls[0].0), natted, 100, T)
            .unwrap();
        let records = export_all(&a);
        assert_eq!(records.len(), 20);
        let mut bytes = Vec::new();
        for r in &records {
            let before = bytes.len();
            r.encode(&mut bytes);
            assert_eq!(bytes.len() - before, RECORD_BYTES);
            assert_eq!(MappingRecord::decode(&bytes[before..]), Some(*r));
            assert!(b.import(r, T));
        }
        assert_eq!(b.count_live(), 20);
        for (i, &(cp, bp)) in calls.iter().enumerate() {
            let (va, vb) = (a.get(VIP, cp).unwrap(), b.get(VIP, cp).unwrap());
            assert_eq!(
                (vb.call, vb.stream, vb.farm, vb.dst),
                (va.call, va.stream, va.farm, va.dst)
            );
            assert_eq!(vb.latched, va.latched, "call {}", i + 1);
            assert_eq!(b.get(SNAT, bp).unwrap().side, Side::Backend);
        }
        // The backend's RTP of call 1 goes back to the latched NATed source on B too.
        let n = b
            .forward(
                sa([198, 18, 1, 1], calls[0].1),
                sa([198, 18, 1, 11], 4002),
                100,
                T,
            )
            .unwrap();
        assert_eq!(n.dst, natted);
        // A new mapping on B after a takeover takes free legs, not the imported ones.
        let (cp, _) = dialog(&b, 100, 0);
        assert!(calls.iter().all(|c| c.0 != cp));
        // Call 3 ends on A: its ended record ends it on B, the index included.
        let ci = records[2].client_leg;
        assert_eq!(a.end_dialog(records[2].call), 1);
        assert_eq!(a.export(ci), Exported::None);
        assert!(b.import(&MappingRecord::ended(ci), T));
        assert_eq!(b.count_live(), 20);
        assert_eq!(b.end_dialog(records[2].call), 0, "already ended");
        assert!(
            b.end_dialog(records[3].call) == 1,
            "the index finds imported mappings"
        );
    }

    #[test]
    fn a_record_for_other_legs_replaces_what_was_there_and_bad_records_are_refused() {
        let (a_mem, b_mem) = (memory(), memory());
        let (a, b) = (a_mem.table(), b_mem.table());
        // B holds an old mapping (another call) at the legs A now uses.
        dialog(&b, 7, 0);
        dialog(&a, 8, 0);
        let r = export_all(&a)[0];
        assert!(b.import(&r, T));
        assert_eq!(b.count_live(), 1);
        assert_eq!(b.end_dialog(7), 0, "the old one ended");
        let mut bad = r;
        bad.backend_leg = bad.client_leg;
        assert!(!b.import(&bad, T));
        bad = r;
        bad.client_leg = u32::MAX;
        assert!(!b.import(&bad, T));
        // Deadlines move the fingerprint only by quarters of the timeout (40 s).
        let mut later = r;
        later.link[0] += 9;
        assert_eq!(later.fingerprint(), r.fingerprint());
        later.link[0] += 10;
        assert_ne!(later.fingerprint(), r.fingerprint());
    }
}
