//! The SIP ALG on TCP (issue 12 item 3): the rewriting `udp.rs` does on datagrams,
//! done on the SIP messages a TCP segment carries, with the byte stream's sequence
//! numbers corrected for what each rewrite adds or removes (the job of the kernel's
//! `nf_nat_sip` with `nf_ct_seqadj`).
//!
//! The balancer does not reassemble streams. As the kernel's helper, it rewrites the
//! messages a segment holds whole, framed by Content-Length from the segment's first
//! byte (CRLF keep-alives between them are stepped over); a message cut by the segment's
//! end, or a segment that begins inside a message, goes on untouched. Each whole
//! message is rewritten completely or not at all, and the segment only when all its
//! rewritten messages fit in the mbuf's room and the egress MTU: never half-rewritten.
//! What went on without a rewrite it needed is counted by reason (`TcpAlgSkip`).
//!
//! The length change of a segment is recorded in the connection's [`Correction`] for
//! its direction (`table::tcp_seq`), and every segment of the connection, both ways,
//! is mapped through the corrections: its sequence number by its own direction's, its
//! acknowledgment and SACK edges by the other's. Rewritten segments get their TCP
//! checksum computed anew (by the caller, once the addresses are final); mapped ones
//! are updated incrementally.
//!
//! SDP is relayed as on UDP (`media.rs`): the streams of every SDP body that crosses
//! are mapped onto the farm's media legs, keyed by the connection's client flow.
//!
//! Limits, as the kernel's: a message split over segments is not rewritten; a sender
//! that retransmits a rewritten segment cut differently (a different first byte)
//! receives the original bytes at that place; only the last rewrite per direction
//! is remembered (see `table::tcp_seq`). TCP keeps no dialog state, so a final error
//! to a re-INVITE ends the call's media mappings as one to an initial INVITE does.

use super::context::Ctx;
use super::counters::{DropReason, TcpAlgSkip};
use super::media::MediaPlan;
use super::packet::Flow;
use crate::alg::{self, Outcome, RewriteError, Rules};
use crate::sip::{next_frame, Frame, SipMessage};
use crate::table::tcp_seq::{Correction, DIRS};
use crate::wire::ethernet;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::{self, TcpSegment};
use std::net::Ipv4Addr;

/// A segment's connection, as the ALG needs it.
pub(super) struct TcpAlgConn<'f> {
    /// The connection table's key (client, VIP and their ports).
    pub key: u64,
    /// `tcp_seq::FROM_CLIENT` or `FROM_BACKEND`.
    pub dir: usize,
    /// The connection's deadline after this segment.
    pub deadline: u32,
    /// Where the segment goes: its egress port's MTU bounds the rewritten segment.
    pub toward: Ipv4Addr,
    /// The media relay's view of the connection (its client flow, the side the
    /// segment comes from), as the UDP path's for a datagram.
    pub media: MediaPlan<'f>,
}

/// What the first pass over a segment's payload found.
#[derive(Default)]
struct Plan {
    /// Messages that change.
    rewritten: usize,
    /// Bytes the payload gains (negative: loses) once they are rewritten.
    delta: isize,
    /// The most it gains partway through, rewriting front to back.
    peak: isize,
    /// Bytes of the payload framed as whole messages and keep-alives.
    framed: usize,
    /// The only changed message (offset, length, new length) while its edits are
    /// still in the worker's `Edits`.
    single: Option<(usize, usize, usize)>,
}

impl Ctx<'_, '_, '_> {
    /// The ALG on one TCP segment of an ALG farm, before its addresses are translated:
    /// rewrites the SIP messages it holds whole by the `rules` (built only for a
    /// segment with data) and the media relay, growing into `buf` (the mbuf's room) up
    /// to the egress MTU, records the length change for the connection, and maps the
    /// segment's sequence number, acknowledgment and SACK edges. Returns whether the
    /// payload changed: its TCP checksum must then be computed anew once the addresses
    /// are final ([`refill_tcp_checksum`]); seq/ack changes alone keep it up to date.
    pub(super) fn tcp_alg(
        &mut self,
        buf: &mut [u8],
        flow: &Flow,
        conn: &TcpAlgConn<'_>,
        rules: impl FnOnce() -> Rules,
    ) -> Result<bool, DropReason> {
        // A segment that cannot be forwarded must not move the stream's corrections.
        if Ipv4Packet::new_unchecked(&buf[ethernet::HEADER_LEN..]).ttl() <= 1 {
            return Err(DropReason::TtlExpired);
        }
        let (t, now) = (self.t, self.now);
        let mut corr = t
            .tcp_seq
            .get(conn.key, now, conn.deadline)
            .map_err(|_| DropReason::TcpSeqBusy)?;
        let (seq, ack, hl) = {
            let seg = TcpSegment::new_unchecked(&buf[flow.l4..flow.end]);
            (seg.seq(), seg.ack(), seg.header_len())
        };
        let start = flow.l4 + hl;
        let mut end = flow.end;
        let data = flow.tcp_flags & (tcp::SYN | tcp::RST) == 0 && start < end;
        let rules = data.then(rules);
        let plan = match &rules {
            Some(r) => self.tcp_plan(&buf[start..end], r, &conn.media),
            None => Plan::default(),
        };
        let mut changed = false;
        if let Some(rules) = rules.as_ref().filter(|_| plan.rewritten > 0) {
            let (out_port, _) = self.svc.route(conn.toward).ok_or(DropReason::NoRoute)?;
            let mtu = self.svc.ports[usize::from(out_port)].mtu;
            let room_end = buf.len().min(ethernet::HEADER_LEN + usize::from(mtu));
            let fits = (end as isize + plan.peak) as usize <= room_end
                && (end as isize + plan.delta) as usize - ethernet::HEADER_LEN
                    <= usize::from(u16::MAX);
            let recorded = if !fits {
                Err(TcpAlgSkip::TooLarge)
            } else if plan.delta == 0 {
                Ok(())
            } else {
                t.tcp_seq
                    .record(
                        conn.key,
                        now,
                        conn.deadline,
                        conn.dir,
                        seq,
                        plan.delta as i32,
                    )
                    .map(|c| corr[conn.dir] = c)
                    .map_err(|_| TcpAlgSkip::NoSeqState)
            };
            match recorded {
                Ok(()) => {
                    end = self.tcp_apply(buf, start, end, &plan, rules, &conn.media);
                    let ip_len = end - ethernet::HEADER_LEN;
                    Ipv4Packet::new_unchecked(&mut buf[ethernet::HEADER_LEN..])
                        .set_total_len(ip_len as u16);
                    self.len = end;
                    self.w.counters.alg_rewritten.add(plan.rewritten as u64);
                    changed = true;
                }
                Err(skip) => self.skipped(skip),
            }
        }
        self.tcp_map(
            &mut buf[flow.l4..end],
            flow.tcp_flags,
            seq,
            ack,
            conn,
            &corr,
        );
        Ok(changed)
    }

    fn skipped(&self, why: TcpAlgSkip) {
        self.w.counters.tcp_alg_skipped[why as usize].inc();
    }

    /// Maps the segment's sequence number by its direction's correction, and its
    /// acknowledgment and SACK edges by the other direction's.
    fn tcp_map(
        &self,
        segment: &mut [u8],
        flags: u8,
        seq: u32,
        ack: u32,
        conn: &TcpAlgConn<'_>,
        corr: &[Correction; DIRS],
    ) {
        let (mine, theirs) = (&corr[conn.dir], &corr[1 - conn.dir]);
        let mut seg = TcpSegment::new_unchecked(segment);
        let mut mapped = false;
        if !mine.is_identity() {
            seg.set_seq(mine.seq(seq));
            mapped = true;
        }
        if flags & tcp::ACK != 0 && !theirs.is_identity() {
            seg.set_ack(theirs.ack(ack));
            seg.map_sack(|e| theirs.ack(e));
            mapped = true;
        }
        if mapped {
            self.w.counters.tcp_seq_mapped.inc();
        }
    }

    /// The first pass: frames the payload's whole messages and finds what the rules
    /// change in each, moving no byte; counts what must go on without its rewrite.
    fn tcp_plan(&mut self, payload: &[u8], rules: &Rules, media: &MediaPlan<'_>) -> Plan {
        let mut plan = Plan::default();
        let mut at = 0;
        while let Some(rest) = payload.get(at..).filter(|r| !r.is_empty()) {
            let len = match next_frame(rest, &self.w.limits) {
                Ok(Frame::KeepAlive { len }) => {
                    at += len;
                    continue;
                }
                Ok(Frame::Message { len }) => len,
                Ok(Frame::Incomplete) | Err(_) => {
                    if rules.found_in(rest) {
                        self.skipped(TcpAlgSkip::Partial);
                    }
                    break;
                }
            };
            let message = &rest[..len];
            match self.rewrite_message(message, rules, media, true) {
                Ok(Some(new_len)) => {
                    plan.rewritten += 1;
                    plan.delta += new_len as isize - len as isize;
                    plan.peak = plan.peak.max(plan.delta);
                    plan.single = (plan.rewritten == 1).then_some((at, len, new_len));
                }
                Ok(None) => plan.single = None,
                Err(Some(e)) => {
                    plan.single = None;
                    self.w.counters.alg_errors[e.index()].inc();
                    self.skipped(TcpAlgSkip::Refused);
                }
                Err(None) => {
                    plan.single = None;
                    if rules.found_in(message) {
                        self.skipped(TcpAlgSkip::Partial);
                    }
                }
            }
            at += len;
        }
        plan.framed = at;
        plan
    }

    /// Finds what `rules` and the media relay change in one whole message, into the
    /// worker's `Edits` (as `udp.rs`'s `alg_edits`): its new length, `None` when
    /// nothing changes; an error when the message does not parse (`None`) or the
    /// rewriter refuses it. The `first` pass counts and ends the dialog's media when
    /// the message ends it; the second finds the same (the relay answers an SDP it
    /// has seen as before).
    fn rewrite_message(
        &mut self,
        message: &[u8],
        rules: &Rules,
        media: &MediaPlan<'_>,
        first: bool,
    ) -> Result<Option<usize>, Option<RewriteError>> {
        let msg = SipMessage::parse(message, &self.w.limits).map_err(|_| None)?;
        let mut session = self.media_session(media, &msg);
        let mapper = session.as_mut().map(|s| s as &mut dyn alg::MediaMapper);
        let mut outcome = alg::rewrite(message, &msg, rules, mapper, &mut self.w.edits);
        let counters = self.w.counters;
        if let Some(s) = &session {
            let c = &counters.media[usize::from(media.farm.id)];
            if first {
                c.flows.add(u64::from(s.created));
            }
            match outcome {
                // Streams the relay cannot carry keep their SDP; the headers change.
                Err(e @ (RewriteError::Ipv6Media | RewriteError::UnsupportedMediaAddress)) => {
                    if first {
                        counters.alg_errors[e.index()].inc();
                    }
                    outcome = alg::rewrite(message, &msg, rules, None, &mut self.w.edits);
                }
                Err(RewriteError::Media(e)) if first => c.refused[e.index()].inc(),
                _ => {}
            }
        }
        if first {
            let foreign = self.w.edits.foreign_tokens();
            if foreign > 0 {
                counters.alg_errors[RewriteError::ForeignToken.index()].add(foreign as u64);
            }
            self.media_lifecycle(media, &msg);
        }
        match outcome {
            Ok(Outcome::Unchanged) => Ok(None),
            Ok(Outcome::Rewritten { len }) => Ok(Some(len)),
            Err(e) => Err(Some(e)),
        }
    }

    /// The second pass: rewrites the messages the plan found, front to back, moving
    /// what follows each; returns the payload's new end. The plan's sizes were
    /// checked against the room, and the rewriter is deterministic, so every message
    /// is rewritten as planned.
    fn tcp_apply(
        &mut self,
        buf: &mut [u8],
        start: usize,
        end: usize,
        plan: &Plan,
        rules: &Rules,
        media: &MediaPlan<'_>,
    ) -> usize {
        if let Some((at, len, new_len)) = plan.single {
            return self.apply_message(buf, start + at, len, new_len, end);
        }
        let (mut at, mut end) = (start, end);
        let framed_end = start + plan.framed;
        let mut shift = 0isize;
        while (at as isize - shift) < framed_end as isize {
            let len = match next_frame(&buf[at..end], &self.w.limits) {
                Ok(Frame::KeepAlive { len }) => {
                    at += len;
                    continue;
                }
                Ok(Frame::Message { len }) => len,
                Ok(Frame::Incomplete) | Err(_) => break,
            };
            let new_len = match self.rewrite_message(&buf[at..at + len], rules, media, false) {
                Ok(Some(n)) => n,
                _ => {
                    at += len;
                    continue;
                }
            };
            end = self.apply_message(buf, at, len, new_len, end);
            shift += new_len as isize - len as isize;
            at += new_len;
        }
        end
    }

    /// Applies the worker's `Edits` to the `len`-byte message at `at` (becoming
    /// `new_len` bytes), moving the bytes after it up to `end`; returns the new end.
    fn apply_message(
        &self,
        buf: &mut [u8],
        at: usize,
        len: usize,
        new_len: usize,
        end: usize,
    ) -> usize {
        let edits = &self.w.edits;
        debug_assert_eq!(edits.new_len(), Ok(new_len));
        // `apply` refuses only a buffer shorter than the message or its result, which
        // these bounds rule out: the tail never moves for a message left as it was.
        if new_len > len {
            buf.copy_within(at + len..end, at + new_len);
            let applied = edits.apply(&mut buf[at..at + new_len]);
            debug_assert_eq!(applied, Ok(new_len));
        } else {
            let applied = edits.apply(&mut buf[at..at + len]);
            debug_assert_eq!(applied, Ok(new_len));
            buf.copy_within(at + len..end, at + new_len);
        }
        (end + new_len) - len
    }
}

/// Computes the TCP checksum of a segment whose payload the ALG changed (the frame now
/// ends at `len`), from the addresses now in its IPv4 header.
pub(super) fn refill_tcp_checksum(frame: &mut [u8], flow: &Flow, len: usize) {
    let (src, dst) = {
        let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        (ip.src(), ip.dst())
    };
    TcpSegment::new_unchecked(&mut frame[flow.l4..len]).fill_checksum(src, dst);
}
