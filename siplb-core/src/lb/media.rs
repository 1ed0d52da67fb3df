//! Media through the VIP: the RTP/RTCP flows that the SDP of a dialog announces, relayed
//! by the balancer so that phones never see a backend's (or a media relay's) address.
//!
//! Two halves:
//! - the SIP side (`MediaPlan`, `Ctx::media_session`, `Ctx::media_lifecycle`): the ALG
//!   hands every SDP body that crosses to the media table through a `MediaSession`,
//!   which maps each stream on two legs (a port pair on the VIP facing the client, one
//!   on the VIP or the flow's SNAT address facing the backend) and rewrites the SDP to
//!   name them; BYE, CANCEL and a failed initial INVITE end the dialog's mappings;
//! - the packet side (`Ctx::media_in`): a datagram to a leg's port is forwarded as the
//!   mapping says, as plain L4 NAT with incremental checksums — no SIP parsing.
//!
//! A mapping belongs to one dialog *as one client flow sees it*: its key mixes the
//! Call-ID with the client's transport address, because a proxy behind the balancer
//! relays the same Call-ID between two phones that are both clients of the balancer
//! (caller and callee), each of which needs its own legs.

use super::context::{Ctx, Tables, Verdict};
use super::counters::DropReason;
use super::nat::rewrite_l4;
use super::packet::Flow;
use super::services::Farm;
use crate::hash::hash64;
use crate::sip::{Method, SipMessage, StartLine};
use crate::table::dialog::DialogState;
use crate::table::media::{Leg, MediaDrop, MediaSession, Placement, Side};
use std::net::{Ipv4Addr, SocketAddrV4};

/// The media leg a frame would use, read from fixed offsets (Ethernet, IPv4 without
/// options, UDP), unchecked: for a worker to prefetch a burst's legs before
/// `process`ing it (a leg of a large table is a DRAM access, which a loop of packets
/// would otherwise pay one after the other). `None` for anything else.
#[inline]
pub fn media_leg<'m>(t: &Tables<'m>, frame: &[u8]) -> Option<&'m Leg> {
    let h = frame.get(..38)?;
    if h[12..14] != [0x08, 0x00] || h[14] != 0x45 || h[23] != crate::wire::ipv4::PROTO_UDP {
        return None;
    }
    let to = SocketAddrV4::new(
        Ipv4Addr::new(h[30], h[31], h[32], h[33]),
        u16::from_be_bytes([h[36], h[37]]),
    );
    t.media.leg_for(to)
}

/// What the ALG needs to relay a message's SDP: the farm, the side the message comes
/// from, the client flow it belongs to, and the balancer address facing the backend
/// (the VIP in dnat, the flow's SNAT address in snat).
#[derive(Clone, Copy)]
pub(super) struct MediaPlan<'f> {
    pub farm: &'f Farm,
    pub from: Side,
    pub client: (Ipv4Addr, u16),
    pub backend_side: Ipv4Addr,
}

/// The media table's key of a dialog as one client flow sees it (never 0).
pub(super) fn media_key(call_id: &[u8], client: (Ipv4Addr, u16)) -> u64 {
    let c = (u64::from(u32::from(client.0)) << 16) | u64::from(client.1);
    (hash64(call_id) ^ c.wrapping_mul(0x9e37_79b9_7f4a_7c15)).max(1)
}

impl<'p, 'm> Ctx<'p, 'm, '_> {
    /// The mapper for the SDP of `msg`, if `plan`'s farm relays media and its pools
    /// exist (they are fixed when the dataplane starts; a farm whose media pools came
    /// with a later reload is counted and its SDP left alone).
    pub(super) fn media_session(
        &self,
        plan: &MediaPlan<'_>,
        msg: &SipMessage<'_>,
    ) -> Option<MediaSession<'p, 'm>> {
        let fm = plan.farm.media?;
        let tables: &'p Tables<'m> = self.t;
        let t = &tables.media;
        let pools = t
            .pool(plan.farm.vip, fm.client_port)
            .zip(t.pool(plan.backend_side, fm.backend_port));
        let Some((client_pool, backend_pool)) = pools else {
            self.w.counters.media[usize::from(plan.farm.id)]
                .unplaced
                .inc();
            return None;
        };
        Some(MediaSession {
            table: t,
            place: Placement {
                farm: u16::from(plan.farm.id),
                client_pool,
                backend_pool,
                timeout: fm.timeout,
            },
            call: media_key(msg.call_id(), plan.client),
            from: plan.from,
            now: self.now,
            created: 0,
        })
    }

    /// Ends the mappings of the dialog `msg` belongs to when `msg` ends it: BYE,
    /// CANCEL, or a final error to an INVITE that leaves the dialog unconfirmed (a
    /// failed re-INVITE keeps the call and its media).
    pub(super) fn media_lifecycle(&self, plan: &MediaPlan<'_>, msg: &SipMessage<'_>) {
        if plan.farm.media.is_none() {
            return;
        }
        let ends = match *msg.start_line() {
            StartLine::Request { method, .. } => matches!(method, Method::Bye | Method::Cancel),
            StartLine::Response { code, .. } => {
                code >= 300
                    && msg.cseq().method == Method::Invite
                    && self
                        .t
                        .dialogs
                        .get(hash64(msg.call_id()), self.now)
                        .is_none_or(|d| d.state != DialogState::Confirmed)
            }
        };
        if ends {
            let n = self
                .t
                .media
                .end_dialog(media_key(msg.call_id(), plan.client));
            self.w.counters.media[usize::from(plan.farm.id)]
                .ended
                .add(n as u64);
        }
    }

    /// A datagram to a media port: forwarded as its mapping says. `Err` when no live
    /// mapping holds the port (the caller decides: a VIP drops it, an own address may
    /// hand it to the kernel).
    #[inline]
    pub(super) fn media_in(&mut self, frame: &mut [u8], flow: &Flow) -> Result<Verdict, MediaDrop> {
        let to = SocketAddrV4::new(flow.dst, flow.dport());
        let from = SocketAddrV4::new(flow.src, flow.sport());
        let bytes = (flow.end - flow.l4) as u32;
        let nat = match self.t.media.forward(to, from, bytes, self.now) {
            Ok(nat) => nat,
            Err(MediaDrop::NotMapped) => return Err(MediaDrop::NotMapped),
            Err(d) => {
                self.count_media_drop(to, d);
                return Ok(Verdict::Drop(d.into()));
            }
        };
        let (src, dst) = (nat.src, nat.dst);
        if let Err(r) = rewrite_l4(
            frame,
            flow,
            Some((*src.ip(), src.port())),
            Some((*dst.ip(), dst.port())),
        ) {
            return Ok(Verdict::Drop(r));
        }
        if let Some(c) = self.w.counters.media.get(usize::from(nat.farm)) {
            c.packets.inc();
            c.bytes.add(u64::from(bytes));
        }
        Ok(self.next_hop(frame, *dst.ip()))
    }

    /// A media drop of a live leg, counted for its farm.
    #[cold]
    fn count_media_drop(&self, to: SocketAddrV4, d: MediaDrop) {
        if let Some(c) = self
            .t
            .media
            .get(*to.ip(), to.port())
            .and_then(|l| self.w.counters.media.get(usize::from(l.farm)))
        {
            c.drops[d.index()].inc();
        }
    }

    /// A datagram to a media port that no live mapping holds, counted for `farm`.
    #[cold]
    pub(super) fn media_not_mapped(&self, farm: &Farm) -> Verdict {
        self.w.counters.media[usize::from(farm.id)].drops[MediaDrop::NotMapped.index()].inc();
        Verdict::Drop(DropReason::MediaNotMapped)
    }
}
