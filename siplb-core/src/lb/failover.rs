//! Failover of new work, as a dispatcher's failure route does it (Kamailio's
//! `ds_next_dst`): a client's new INVITE or REGISTER is held — its bytes as the client
//! sent them — until its backend's final answer. A failure answer (`[farm.failover]
//! on`: 500, 503, 408 by default) or no answer at all within `timeout_ms` sends the
//! held request to the next backend by the farm's order of preference, at most
//! `tries` backends in all. The failed backend's final answer is acknowledged to it
//! (the ACK a proxy sends for a non-2xx, RFC 3261 §17.1.1.3) and never reaches the
//! caller, who sees one call.
//!
//! The re-send goes through the packet path again (`process_resend`): the held frame
//! is copied into the worker's buffer and processed as if the client sent it again,
//! with its backend chosen, so the ALG and NAT rewrite it for the new backend. The
//! dialog (or registration) then names the new backend: the caller's retransmissions,
//! CANCEL and ACK follow it.
//!
//! The store the requests are held in is `lb::held`.

use super::context::{Ctx, Tables, Verdict, WorkerCtx};
use super::counters::DropReason;
use super::dispatch::process_in;
use super::held::{HeldBody, ANSWERED_MS, RURI_BYTES, SCAN_PER_POLL};
pub use super::held::{HeldSlot, HeldStore, Hold, Resends, Ticket, HELD_BYTES, MAX_TRIES};
use super::services::Farm;
use super::services::Services;
use crate::sip::{HeaderName, Method, SipMessage};
use std::sync::atomic::Ordering::*;

/// A backend's answer to a client's request, as the response path read it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    pub txn: u64,
    pub code: u16,
    pub method: Method,
}

impl Farm {
    /// Whether this farm holds a client's new `method` request for failover.
    #[inline]
    pub(super) fn fails_over(&self, method: Method) -> bool {
        self.failover.tries > 1 && matches!(method, Method::Invite | Method::Register)
    }
}

impl Ctx<'_, '_, '_> {
    /// Holds the client's request in `frame` (as it came, before any rewrite), placed
    /// on backend `i` by `key`; `None` when it is held already (a retransmission) or
    /// cannot be (too large, no free slot: counted).
    pub(super) fn hold_request(
        &self,
        farm: &Farm,
        txn: u64,
        (key, register): (u64, bool),
        i: usize,
        frame: &[u8],
        in_port: u8,
    ) -> Option<Ticket> {
        let c = self.w.counters;
        if frame.len() > HELD_BYTES {
            c.held_too_big.inc();
            return None;
        }
        let t = match self.t.held.hold(txn, self.w.now_ms) {
            Hold::Held(t) => t,
            Hold::Already => return None,
            Hold::Full => {
                c.held_full.inc();
                return None;
            }
        };
        let slot = farm.backends[i].slot;
        let b = self.t.held.body(&t);
        b.len = frame.len() as u16;
        b.frame[..frame.len()].copy_from_slice(frame);
        b.in_port = in_port;
        b.farm = farm.id;
        b.tries = 1;
        b.tried[0] = slot;
        b.current = slot;
        b.next = slot;
        b.key = key;
        b.register = register;
        b.unit_pending = false;
        b.ruri_len = 0;
        Some(t)
    }

    /// The held request went to its backend as `frame` (rewritten): keeps its
    /// Request-URI for the ACK of a failure, and waits for the answer.
    pub(super) fn held_sent(&self, farm: &Farm, t: Ticket, frame: &[u8], payload: usize) {
        let b = self.t.held.body(&t);
        let sip = &frame[payload.min(frame.len())..];
        let line = &sip[..memchr::memchr(b'\r', sip).unwrap_or(sip.len())];
        let mut parts = line.split(|c| *c == b' ');
        let uri = parts.nth(1).unwrap_or_default();
        let n = if uri.len() <= RURI_BYTES {
            uri.len()
        } else {
            0
        };
        b.ruri[..n].copy_from_slice(&uri[..n]);
        b.ruri_len = n as u16;
        let due = self.w.now_ms + u64::from(farm.failover.timeout_ms);
        self.t.held.ready(t, due);
    }

    /// The backend slot a re-sent request goes to (`lb::process_resend`), if this
    /// packet is one.
    pub(super) fn resend_target(&self) -> Option<u16> {
        self.w.resend.as_ref().map(|t| self.t.held.body(t).next)
    }

    /// The re-sent INVITE's dialog now holds the count unit taken for it.
    pub(super) fn resend_placed(&self) {
        if let Some(t) = &self.w.resend {
            self.t.held.body(t).unit_pending = false;
        }
    }

    /// The re-sent request left for its new backend as `frame`: the held request now
    /// waits for that backend's answer.
    pub(super) fn resent(&mut self, farm: &Farm, frame: &[u8], payload: usize) {
        let Some(t) = self.w.resend.take() else {
            return;
        };
        let b = self.t.held.body(&t);
        b.current = b.next;
        self.w.counters.backends[usize::from(b.next)]
            .failover_to
            .inc();
        self.held_sent(farm, t, frame, payload);
    }

    /// A client's CANCEL of the INVITE `txn`: a held INVITE fails over no more (the
    /// CANCEL goes where the INVITE is now, and so does its answer).
    pub(super) fn note_cancel(&self, farm: &Farm, txn: u64) {
        if farm.fails_over(Method::Invite) {
            self.t.held.cancel(txn);
        }
    }

    /// The next backend for held work placed by `key` that none of `tried` had, by
    /// the farm's order of preference; takes its count unit for an INVITE.
    fn next_backend(&self, farm: &Farm, b: &HeldBody) -> Option<usize> {
        if usize::from(b.tries) >= farm.failover.tries as usize {
            return None;
        }
        self.place_excluding(farm, b.key, !b.register, &b.tried[..usize::from(b.tries)])
    }

    /// Decides for a held request whose backend failed: `Some` when it goes to
    /// another (queued for `process_resend`), `None` when it cannot (the ticket was
    /// freed or given back).
    fn fail_over(&mut self, farm: &Farm, t: Ticket, timed_out: bool) -> bool {
        let store = self.t.held;
        let b = store.body(&t);
        // A final answer ends the hold; a timeout leaves the request waiting for
        // one (its late answers are still the caller's).
        let give_up = |t| {
            if timed_out {
                store.ready(t, 0);
            } else {
                store.free(t);
            }
        };
        if store.slot(&t).cancelled.load(Relaxed) != 0 {
            give_up(t);
            return false;
        }
        let failed = usize::from(b.current);
        let Some(i) = self.next_backend(farm, b) else {
            self.w.counters.failover_exhausted.inc();
            give_up(t);
            return false;
        };
        let c = &self.w.counters.backends[failed];
        if timed_out {
            c.failover_timeouts.inc();
        } else {
            c.failover_answers.inc();
        }
        let slot = farm.backends[i].slot;
        b.next = slot;
        b.unit_pending = !b.register;
        b.tried[usize::from(b.tries)] = slot;
        b.tries += 1;
        if let Err(t) = self.w.resends.push(t) {
            // More failures in one packet than the queue holds cannot happen (one
            // answer, or one scan of 64 slots drained per loop); keep the request.
            self.w.counters.failover_resend_failed.inc();
            store.ready(t, 0);
            return false;
        }
        true
    }

    /// A backend's answer in the failover's light: `Some` when the answer is the
    /// failover's to handle (a failure sent on to another backend; a late answer of
    /// a backend the request has left), `None` when it goes on to the caller as usual.
    pub(super) fn failover_answer(
        &mut self,
        farm: &Farm,
        backend: usize,
        a: Answer,
    ) -> Option<Handled> {
        if !farm.fails_over(a.method) {
            return None;
        }
        let store = self.t.held;
        let t = store.take(a.txn)?;
        let b = store.body(&t);
        let ruri = RuriBuf::of(b);
        let slot = farm.backends[backend].slot;
        let register = a.method == Method::Register;
        if b.current != slot {
            // The request has left this backend (it failed, or was too slow): its
            // answers are not the caller's. A failure is acknowledged; a late 2xx
            // is dropped (its backend gives up retransmitting it after 32 s).
            self.w.counters.failover_late.inc();
            let due = store.slot(&t).due_ms.load(Relaxed);
            store.ready(t, due);
            if a.code >= 300 && !register {
                return Some(Handled::Ack(ruri));
            }
            return Some(Handled::Drop);
        }
        if a.code < 200 {
            // Alive: no timeout any more; the request stays held until its final.
            store
                .slot(&t)
                .expires_ms
                .store(self.w.now_ms + ANSWERED_MS, Relaxed);
            store.ready(t, 0);
            return None;
        }
        if !farm.failover.on.contains(&a.code) {
            store.free(t);
            return None;
        }
        if !self.fail_over(farm, t, false) {
            return None;
        }
        Some(if register {
            Handled::Absorbed
        } else {
            Handled::Ack(ruri)
        })
    }

    /// What becomes of a backend's answer the failover handled (`failover_answer`),
    /// in `frame`.
    pub(super) fn failover_handled(
        &mut self,
        frame: &mut [u8],
        flow: &super::packet::Flow,
        h: Handled,
    ) -> Verdict {
        match h {
            Handled::Ack(ruri) => self.ack_failure(frame, flow, ruri),
            Handled::Absorbed => Verdict::Consumed,
            Handled::Drop => Verdict::Drop(DropReason::FailoverLate),
        }
    }

    /// Turns a backend's non-2xx final answer to an INVITE, in `frame`, into the ACK
    /// of it, back to that backend from where the INVITE came (client or SNAT
    /// address): the held request's Request-URI, the answer's top Via, From, To,
    /// Call-ID and CSeq number.
    fn ack_failure(
        &mut self,
        frame: &mut [u8],
        flow: &super::packet::Flow,
        ruri: RuriBuf,
    ) -> Verdict {
        let mut ack = [0u8; 2048];
        let n = match self.parse_sip(frame, flow.udp_payload()) {
            Ok(msg) => build_ack(&msg, ruri, &mut ack),
            Err(r) => return Verdict::Drop(r),
        };
        let Some(n) = n else {
            return Verdict::Drop(DropReason::FailoverLate);
        };
        // The answer came from the backend: the ACK goes back to where it came from.
        let Some(v) = self.answer_in_place(frame, flow, &ack[..n]) else {
            return Verdict::Drop(DropReason::FailoverLate);
        };
        self.w.counters.failover_acks.inc();
        v
    }

    /// Sends the held requests whose backend has not answered within the farm's
    /// `timeout_ms` to their next backend (queued for `process_resend`).
    pub(super) fn failover_timeouts(&mut self) {
        let store = self.t.held;
        let mut cursor = self.w.held_cursor;
        let mut due: [Option<Ticket>; SCAN_PER_POLL] = std::array::from_fn(|_| None);
        let mut n = 0;
        store.take_due(&mut cursor, self.w.now_ms, |t| {
            due[n] = Some(t);
            n += 1;
        });
        self.w.held_cursor = cursor;
        for t in due.iter_mut().take(n).filter_map(Option::take) {
            let farm_id = store.body(&t).farm;
            let svc = self.svc;
            match svc.farms.get(usize::from(farm_id)) {
                Some(farm) if farm.fails_over(Method::Invite) => {
                    self.fail_over(farm, t, true);
                }
                _ => store.free(t),
            }
        }
    }
}

/// A backend's answer the failover took over. It lives on the stack for the one
/// answer that returns it: the size of the Request-URI it carries costs nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Handled {
    /// A failure: acknowledged to its backend here.
    Ack(RuriBuf),
    /// A REGISTER's failure: nothing to acknowledge.
    Absorbed,
    /// A late provisional or 2xx of a backend the request has left.
    Drop,
}

/// Finds the held requests whose backend stayed silent past the farm's
/// `timeout_ms` (a slice of the store per call: the worker calls it every loop) and
/// queues them for `process_resend`.
pub fn failover_poll(svc: &Services, t: &Tables<'_>, w: &mut WorkerCtx<'_>, now: u32) {
    if !svc.farms.iter().any(|f| f.failover.tries > 1) {
        return;
    }
    let mut cx = Ctx {
        svc,
        t,
        w,
        now,
        len: 0,
    };
    cx.failover_timeouts();
}

/// Whether held requests wait to be sent again (`process_resend`).
#[inline]
pub fn resends_pending(w: &WorkerCtx<'_>) -> bool {
    !w.resends.is_empty()
}

/// Sends the next queued held request again: copies its frame into `buf` (large
/// enough for any held frame and the ALG's growth) and processes it as if its client
/// sent it again, toward the backend chosen for it. Returns the verdict, the port the
/// request came in on and the frame's length in `buf`; `None` when nothing is queued.
pub fn process_resend(
    svc: &Services,
    t: &Tables<'_>,
    w: &mut WorkerCtx<'_>,
    buf: &mut [u8],
    now: u32,
) -> Option<(Verdict, u8)> {
    let ticket = w.resends.pop()?;
    let (len, in_port) = {
        let b = t.held.body(&ticket);
        let n = usize::from(b.len).min(buf.len());
        buf[..n].copy_from_slice(&b.frame[..n]);
        (n, b.in_port)
    };
    w.resend = Some(ticket);
    let v = process_in(svc, t, w, buf, len, in_port, now);
    // Still here: it never left (dropped on the way); the caller's retransmission
    // goes to the dialog's backend as usual.
    if let Some(ticket) = w.resend.take() {
        w.counters.failover_resend_failed.inc();
        let b = t.held.body(&ticket);
        if b.unit_pending {
            t.load.give_back(b.next);
        }
        t.held.free(ticket);
    }
    Some((v, in_port))
}

/// A Request-URI copied out of a held slot.
pub(super) struct RuriBuf {
    buf: [u8; RURI_BYTES],
    len: usize,
}

impl RuriBuf {
    fn of(b: &HeldBody) -> Self {
        let mut r = Self {
            buf: [0; RURI_BYTES],
            len: usize::from(b.ruri_len),
        };
        r.buf[..r.len].copy_from_slice(&b.ruri[..r.len]);
        r
    }
}

/// Writes the ACK of the non-2xx final answer `resp` into `out` (RFC 3261
/// §17.1.1.3): `ruri` (the To URI if empty), the answer's top Via value, From, To
/// with its tag, Call-ID, the CSeq number. `None` if it does not fit.
fn build_ack(resp: &SipMessage<'_>, ruri: RuriBuf, out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    let mut put = |s: &[u8]| -> Option<()> {
        out.get_mut(n..n + s.len())?.copy_from_slice(s);
        n += s.len();
        Some(())
    };
    put(b"ACK ")?;
    if ruri.len > 0 {
        put(&ruri.buf[..ruri.len])?;
    } else {
        let u = resp.to().uri;
        put(u.scheme)?;
        put(b":")?;
        if let Some(user) = u.user {
            put(user)?;
            put(b"@")?;
        }
        put(u.host)?;
    }
    put(b" SIP/2.0\r\n")?;
    let mut via_done = false;
    for h in resp.headers() {
        match h.name {
            HeaderName::Via if !via_done => {
                via_done = true;
                // Only the top value: the one the backend's transaction knows.
                let top = h.value.split(|c| *c == b',').next().unwrap_or(h.value);
                put(b"Via: ")?;
                put(top.trim_ascii())?;
            }
            HeaderName::From | HeaderName::To | HeaderName::CallId => {
                put(h.raw_name)?;
                put(b": ")?;
                put(h.value)?;
            }
            _ => continue,
        }
        put(b"\r\n")?;
    }
    put(b"CSeq: ")?;
    let mut digits = [0u8; 10];
    put(super::load::decimal(resp.cseq().seq, &mut digits))?;
    put(b" ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")?;
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_of_a_failure_repeats_the_transaction_of_the_invite() {
        let resp = b"SIP/2.0 503 Service Unavailable\r\n\
            Via: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK-1;received=198.18.0.2, SIP/2.0/UDP 198.18.9.9;branch=z9hG4bK-0\r\n\
            From: <sip:a@x>;tag=f1\r\nTo: <sip:b@x>;tag=t9\r\nCall-ID: c1@x\r\n\
            CSeq: 42 INVITE\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n";
        let msg = SipMessage::parse(resp, &crate::sip::Limits::default()).unwrap();
        let mut ruri = RuriBuf {
            buf: [0; RURI_BYTES],
            len: 0,
        };
        let u = b"sip:b@198.18.1.11:5060";
        ruri.buf[..u.len()].copy_from_slice(u);
        ruri.len = u.len();
        let mut out = [0u8; 1024];
        let n = build_ack(&msg, ruri, &mut out).unwrap();
        let ack = std::str::from_utf8(&out[..n]).unwrap();
        assert_eq!(
            ack,
            "ACK sip:b@198.18.1.11:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK-1;received=198.18.0.2\r\n\
             From: <sip:a@x>;tag=f1\r\nTo: <sip:b@x>;tag=t9\r\nCall-ID: c1@x\r\n\
             CSeq: 42 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        let parsed = SipMessage::parse(&out[..n], &crate::sip::Limits::default()).unwrap();
        assert_eq!(parsed.method(), Some(Method::Ack));
    }
}
