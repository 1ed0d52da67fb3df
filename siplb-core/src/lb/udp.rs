//! SIP over UDP, balanced per dialog: where a client's message goes (dialog and
//! registration tables, else the farm's affinity through Maglev), what a backend's
//! message means for those tables, and the address translation both ways.
//!
//! A message of a known dialog is steered from the fields steering needs (the
//! `steer` step); everything else — new work, REGISTER, a table miss — is parsed and
//! validated in full before it touches a table.

use super::alg_rules::{rules_to_backend, rules_to_client};
use super::context::{Ctx, Verdict};
use super::counters::DropReason;
use super::failover::Answer;
use super::load::{full_reply, is_full_reply_ack};
use super::media::MediaPlan;
use super::nat::rewrite_l4;
use super::packet::Flow;
use super::services::{source_key, Farm};
use super::snat::SnatSession;
use super::timing::transaction_key;
use crate::alg::{self, Outcome, RewriteError, Rules};
use crate::config::Affinity;
use crate::hash::hash64;
use crate::sip::{CSeq, Method, SipMessage, SipUri, StartLine, SteerView};
use crate::table::dialog::{Dialog, DialogState};
use crate::table::media::Side;
use crate::table::registration::Registration;
use crate::wire::ethernet;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::udp::{self, UdpPacket};

/// Registration lifetime assumed when a 2xx to REGISTER names none (RFC 3261 §10.2.1.1
/// default).
const DEFAULT_REGISTER_EXPIRES: u32 = 3600;

/// Where a SIP message goes and how long the state it touched lives.
struct Placement {
    backend: usize,
    /// The latest deadline of the dialog or registration this message refreshed; SNAT
    /// sessions live at least that long.
    keep_until: u32,
    /// A request that expects an answer: its transaction, stamped when it is sent
    /// (`lb::timing`).
    txn: Option<u64>,
    /// New work the farm holds for failover (`lb::failover`): what placed it, and
    /// whether it is a REGISTER.
    hold: Option<(u64, bool)>,
}

/// The transaction a client's request opens, unless it expects no answer (ACK).
#[inline]
fn request_txn(call_key: u64, method: Method, cseq: &CSeq<'_>) -> Option<u64> {
    (method != Method::Ack).then(|| transaction_key(call_key, cseq.seq, method))
}

/// The AOR key (user@host of a SIP URI). Hosts are compared as sent (phones repeat
/// their own spelling), users are case-sensitive (RFC 3261 §19.1.4).
pub(super) fn aor_key(uri: &SipUri<'_>) -> u64 {
    aor_key_of(uri.user, uri.host)
}

/// The registration table's key of the AOR `user@host` (as written in the URI): also
/// what Maglev places a REGISTER by when the AOR is not registered.
pub fn aor_key_of(user: Option<&[u8]>, host: &[u8]) -> u64 {
    let u = user.map(hash64).unwrap_or(0);
    let h = hash64(host);
    (u.rotate_left(29) ^ h).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// Requests that belong to a dialog even without a To-tag of their own.
fn in_dialog_method(m: Method) -> bool {
    matches!(m, Method::Ack | Method::Cancel | Method::Bye)
}

/// INVITE and REGISTER mostly start new work, which needs the full parse anyway:
/// they skip the light scan (a re-INVITE then costs a full parse, no more).
#[inline]
fn starts_new_work(sip: &[u8]) -> bool {
    sip.starts_with(b"INVITE ") || sip.starts_with(b"REGISTER ")
}

impl Ctx<'_, '_, '_> {
    /// Parses the SIP message in `frame[range]` in full, or counts the scanner's error.
    pub(super) fn parse_sip<'f>(
        &self,
        frame: &'f [u8],
        range: std::ops::Range<usize>,
    ) -> Result<SipMessage<'f>, DropReason> {
        SipMessage::parse(&frame[range], &self.w.limits).map_err(|e| {
            self.w.counters.sip_errors[e.index()].inc();
            DropReason::SipMalformed
        })
    }

    /// A client's SIP message to a VIP: placed, translated, sent to its backend. New
    /// work of a farm with failover is held until its final answer; a held request
    /// sent again (`lb::process_resend`) goes to the backend chosen for it.
    pub(super) fn udp_client_to_vip(
        &mut self,
        frame: &mut [u8],
        flow: &Flow,
        farm: &Farm,
    ) -> Verdict {
        let mut held = None;
        let v = self.udp_client_request(frame, flow, farm, &mut held);
        let payload = flow.l4 + udp::HEADER_LEN;
        if let Verdict::Forward(_) = v {
            if let Some(t) = held {
                self.held_sent(farm, t, &frame[..self.len], payload);
            }
            self.resent(farm, &frame[..self.len], payload);
        } else if let Some(t) = held {
            self.t.held.free(t);
        }
        v
    }

    fn udp_client_request(
        &mut self,
        frame: &mut [u8],
        flow: &Flow,
        farm: &Farm,
        held: &mut Option<super::failover::Ticket>,
    ) -> Verdict {
        let (client, cport) = (flow.src, flow.sport());
        // Parsed in full when it is not steered; the ALG then reads the same view.
        let (p, msg) = match self.steer_client_message(farm, &frame[flow.udp_payload()]) {
            Some(p) => (p, None),
            None => {
                let msg = match self.parse_sip(frame, flow.udp_payload()) {
                    Ok(m) => m,
                    Err(r) => return Verdict::Drop(r),
                };
                match self.place_client_message(farm, &msg, flow) {
                    Ok(p) => (p, Some(msg)),
                    Err(DropReason::FarmFull) => {
                        let reply = full_reply(farm, &msg);
                        return self.farm_full(frame, flow, reply);
                    }
                    Err(r) => return Verdict::Drop(r),
                }
            }
        };
        if let (Some(placed), Some(txn)) = (p.hold, p.txn) {
            let f = &frame[..self.len];
            *held = self.hold_request(farm, txn, placed, p.backend, f, flow.in_port);
        }
        let backend = &farm.backends[p.backend];
        let Some((out_port, _)) = self.svc.route(backend.addr) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let lifetime = farm
            .timers
            .transaction
            .max(p.keep_until.saturating_sub(self.now));
        let new_src = match self.nat_source(farm, out_port, (client, cport), lifetime) {
            Ok(src) => src,
            Err(r) => return Verdict::Drop(r),
        };
        let outcome = if farm.alg {
            let media = farm.media.is_some();
            let rules =
                rules_to_backend(self.svc, farm, p.backend, (client, cport), new_src, media);
            let plan = MediaPlan {
                farm,
                from: Side::Client,
                client: (client, cport),
                backend_side: new_src.map_or(farm.vip, |(a, _)| a),
            };
            match self.alg_edits(frame, flow, msg.as_ref(), &rules, plan) {
                Ok(o) => o,
                Err(r) => return Verdict::Drop(r),
            }
        } else {
            Outcome::Unchanged
        };
        let rewritten = match self.alg_apply(frame, flow, outcome) {
            Ok(r) => r,
            Err(r) => return Verdict::Drop(r),
        };
        if let Err(r) = rewrite_l4(frame, flow, new_src, Some((backend.addr, backend.port))) {
            return Verdict::Drop(r);
        }
        if rewritten {
            refill_udp_checksum(frame, flow);
        }
        if let Some(txn) = p.txn {
            self.request_sent(txn);
        }
        self.count_to(farm, p.backend, self.len);
        self.next_hop(frame, backend.addr)
    }

    /// Steers a client's message of a known dialog from the light scan: `None` when
    /// it is anything else (new work, REGISTER, a table miss, a dialog that moves, a
    /// message the light scan refuses), which the full parse then handles.
    #[inline]
    fn steer_client_message(&mut self, farm: &Farm, sip: &[u8]) -> Option<Placement> {
        if starts_new_work(sip) {
            return None;
        }
        let v = SteerView::scan(sip, &self.w.limits).ok()?;
        let call_key = hash64(v.call_id());
        let d = self.t.dialogs.get(call_key, self.now)?;
        let (t, now, timers) = (self.t, self.now, &farm.timers);
        let placement = match *v.start_line() {
            StartLine::Request { method, .. } => {
                if method == Method::Register {
                    return None;
                }
                let backend = self.kept_backend(farm, d, method, v.to_tag().is_some())?;
                self.w.counters.sip_requests.inc();
                if method == Method::Cancel {
                    self.note_cancel(
                        farm,
                        transaction_key(call_key, v.cseq().seq, Method::Invite),
                    );
                }
                Placement {
                    backend,
                    keep_until: self
                        .dialog_advanced(t.dialogs.on_request(call_key, now, timers, method)),
                    txn: request_txn(call_key, method, &v.cseq()),
                    hold: None,
                }
            }
            StartLine::Response { code, .. } => {
                let backend = self.slot_in_farm(farm, d.backend)?;
                self.w.counters.sip_responses.inc();
                Placement {
                    backend,
                    keep_until: self.dialog_advanced(t.dialogs.on_response(
                        call_key,
                        now,
                        timers,
                        v.cseq().method,
                        code,
                    )),
                    txn: None,
                    hold: None,
                }
            }
        };
        self.w.counters.sip_steered.inc();
        Some(placement)
    }

    fn place_client_message(
        &mut self,
        farm: &Farm,
        msg: &SipMessage<'_>,
        flow: &Flow,
    ) -> Result<Placement, DropReason> {
        let (t, now) = (self.t, self.now);
        let call_key = hash64(msg.call_id());
        let timers = &farm.timers;
        let to_tagged = msg.to().tag.is_some();
        match *msg.start_line() {
            StartLine::Request {
                method,
                uri: request_uri,
                ..
            } => {
                self.w.counters.sip_requests.inc();
                let known = t.dialogs.get(call_key, now);
                let txn = request_txn(call_key, method, &msg.cseq());
                // A held request sent again was admitted and placed the first time.
                if let Some(slot) = self.resend_target() {
                    return self.place_resend(farm, msg, call_key, slot, txn);
                }
                // Nothing unknown creates state without admission (`security`).
                if method == Method::Register || known.is_none() {
                    self.admit_sip_request(farm, msg, flow, method)?;
                }
                self.note_credentials(flow.src, msg);
                if method == Method::Cancel {
                    self.note_cancel(
                        farm,
                        transaction_key(call_key, msg.cseq().seq, Method::Invite),
                    );
                }
                if method == Method::Register {
                    let hold = (farm.fails_over(method) && !to_tagged)
                        .then(|| (aor_key(&msg.to().uri), true));
                    return self.place_register(farm, msg, None).map(|p| Placement {
                        txn,
                        hold,
                        ..p
                    });
                }
                // Anything whose Call-ID we know follows it: in-dialog requests, ACK,
                // CANCEL, BYE, retransmissions, and a request resent after a 401/407.
                if let Some(i) = known.and_then(|d| self.kept_backend(farm, d, method, to_tagged)) {
                    let keep =
                        self.dialog_advanced(t.dialogs.on_request(call_key, now, timers, method));
                    return Ok(Placement {
                        backend: i,
                        keep_until: keep,
                        txn,
                        hold: None,
                    });
                }
                if known.is_none() && is_full_reply_ack(msg) {
                    return Err(DropReason::FullReplyAck);
                }
                let in_dialog = to_tagged || in_dialog_method(method);
                // An INVITE that starts a call takes a unit of its backend's count.
                let dialog = !in_dialog && method == Method::Invite;
                // What new work is placed by (the failover's next choice too).
                let key = match farm.affinity {
                    Affinity::Source => source_key(flow.src),
                    _ => call_key,
                };
                let backend = if in_dialog {
                    farm.pick(call_key)
                } else {
                    match farm.affinity {
                        Affinity::CallId | Affinity::Source => self.place_new(farm, key, dialog),
                        Affinity::Registrar => self
                            .registrar_of(farm, &msg.from().uri)
                            .filter(|i| self.admits(farm, *i, call_key, dialog))
                            .or_else(|| self.place_new(farm, call_key, dialog)),
                        Affinity::Callee => self
                            .registrar_of(farm, &request_uri)
                            .filter(|i| self.admits(farm, *i, call_key, dialog))
                            .or_else(|| {
                                self.registrar_of(farm, &msg.from().uri)
                                    .filter(|i| self.admits(farm, *i, call_key, dialog))
                            })
                            .or_else(|| self.place_new(farm, call_key, dialog)),
                    }
                }
                .ok_or_else(|| unplaced(farm, call_key))?;
                // A known dialog that moves keeps its standing; a stray in-dialog
                // request lives a transaction, until its backend's 2xx confirms it.
                let state = match (in_dialog, known.is_some(), method) {
                    (true, _, Method::Bye) => DialogState::Terminating,
                    (true, true, _) => DialogState::Confirmed,
                    _ => DialogState::Trying,
                };
                let keep = self.record_dialog(farm, call_key, backend, state, dialog);
                if dialog {
                    self.note_sent_new_dialog(farm, backend);
                }
                Ok(Placement {
                    backend,
                    keep_until: keep,
                    txn,
                    hold: (dialog && farm.fails_over(method)).then_some((key, false)),
                })
            }
            StartLine::Response { code, .. } => {
                self.w.counters.sip_responses.inc();
                // An answer to a backend-originated request: back to that backend.
                let known = t.dialogs.get(call_key, now);
                if known.is_none() {
                    self.admit_sip_response(farm, flow)?;
                }
                let backend = known
                    .and_then(|d| self.slot_in_farm(farm, d.backend))
                    .or_else(|| farm.pick(call_key))
                    .ok_or(DropReason::NoBackend)?;
                let keep = self.dialog_advanced(t.dialogs.on_response(
                    call_key,
                    now,
                    timers,
                    msg.cseq().method,
                    code,
                ));
                Ok(Placement {
                    backend,
                    keep_until: keep,
                    txn: None,
                    hold: None,
                })
            }
        }
    }

    /// A held request sent again (`lb::process_resend`) to backend `slot`, chosen
    /// when its last backend failed (an INVITE's count unit was taken then): the
    /// dialog or registration follows it there.
    fn place_resend(
        &mut self,
        farm: &Farm,
        msg: &SipMessage<'_>,
        call_key: u64,
        slot: u16,
        txn: Option<u64>,
    ) -> Result<Placement, DropReason> {
        if msg.method() == Some(Method::Register) {
            return self
                .place_register(farm, msg, Some(slot))
                .map(|p| Placement { txn, ..p });
        }
        let i = self.slot_in_farm(farm, slot).ok_or(DropReason::NoBackend)?;
        let keep = self.record_dialog(farm, call_key, i, DialogState::Trying, true);
        self.resend_placed();
        self.note_sent_new_dialog(farm, i);
        Ok(Placement {
            backend: i,
            keep_until: keep,
            txn,
            hold: None,
        })
    }

    /// The backend holding `aor`'s registration, if it registered through the VIP and
    /// that backend takes new work.
    fn registrar_of(&self, farm: &Farm, aor: &SipUri<'_>) -> Option<usize> {
        self.t
            .registrations
            .get(aor_key(aor), self.now)
            .and_then(|r| self.slot_in_farm(farm, r.backend))
            .filter(|i| farm.backends[*i].takes_new_work())
    }

    /// The backend a known dialog stays on, unless it moves: its backend is down and
    /// the farm moves dialogs, or the request creates the dialog and the backend went
    /// down before answering anything (the call is not lost with it).
    fn kept_backend(
        &self,
        farm: &Farm,
        d: Dialog,
        method: Method,
        to_tagged: bool,
    ) -> Option<usize> {
        let i = self.slot_in_farm(farm, d.backend)?;
        let unanswered = d.state == DialogState::Trying && !to_tagged && !in_dialog_method(method);
        let moves = (farm.move_dialogs_on_down || unanswered) && self.backend_down(farm, i);
        (!moves).then_some(i)
    }

    /// REGISTER goes where the AOR is registered (so a challenged re-REGISTER meets the
    /// server that sent the 401), else where Maglev puts the AOR; a held REGISTER
    /// sent again goes to backend slot `failover`.
    fn place_register(
        &mut self,
        farm: &Farm,
        msg: &SipMessage<'_>,
        failover: Option<u16>,
    ) -> Result<Placement, DropReason> {
        let (t, now) = (self.t, self.now);
        let aor = aor_key(&msg.to().uri);
        let known = match failover {
            Some(slot) => Some(self.slot_in_farm(farm, slot).ok_or(DropReason::NoBackend)?),
            None => t
                .registrations
                .get(aor, now)
                .and_then(|r| self.slot_in_farm(farm, r.backend))
                .filter(|i| self.admits(farm, *i, aor, false)),
        };
        let backend = known
            .or_else(|| self.place_new(farm, aor, false))
            .ok_or_else(|| unplaced(farm, aor))?;
        let reg = Registration {
            backend: farm.backends[backend].slot,
            farm: farm.id,
        };
        // Until the 2xx says how long the binding lives, hold it for a transaction.
        let transaction_end = now.saturating_add(farm.timers.transaction);
        let keep_until = match t.registrations.refresh(aor, now, reg, transaction_end) {
            Ok((deadline, created)) => {
                if created {
                    self.w.counters.registrations_created.inc();
                }
                deadline
            }
            Err(_) => {
                self.w.counters.registration_table_full.inc();
                transaction_end
            }
        };
        Ok(Placement {
            backend,
            keep_until,
            txn: None,
            hold: None,
        })
    }

    /// Records a dialog on `backend`; `counted`: it holds the count unit its
    /// placement took (given back if the table has no room).
    fn record_dialog(
        &self,
        farm: &Farm,
        call_key: u64,
        backend: usize,
        state: DialogState,
        counted: bool,
    ) -> u32 {
        let d = Dialog {
            backend: farm.backends[backend].slot,
            farm: farm.id,
            state,
        };
        match self
            .t
            .dialogs
            .insert(call_key, self.now, d, counted, &farm.timers)
        {
            Ok(i) => {
                self.t.load.release(i.released);
                if i.created {
                    self.w.counters.dialogs_created.inc();
                }
                i.deadline
            }
            Err(_) => {
                if counted {
                    self.t.load.give_back(d.backend);
                }
                // Stickiness then rests on the Call-ID hash alone.
                self.w.counters.dialog_table_full.inc();
                self.now
            }
        }
    }

    /// Notes a backend's message of a known dialog from the light scan, and returns
    /// how long the client's state must be kept: `None` for anything else (a new
    /// dialog, a REGISTER answer, a message the light scan refuses), which the full
    /// parse then handles.
    #[inline]
    fn steer_backend_message(
        &self,
        farm: &Farm,
        backend: usize,
        sip: &[u8],
    ) -> Option<(u32, Option<Answer>)> {
        let v = SteerView::scan(sip, &self.w.limits).ok()?;
        let call_key = hash64(v.call_id());
        let (t, now, timers) = (self.t, self.now, &farm.timers);
        t.dialogs.get(call_key, now)?;
        let c = self.w.counters;
        let keep = match *v.start_line() {
            StartLine::Request { method, .. } => (
                {
                    c.sip_requests.inc();
                    self.dialog_advanced(t.dialogs.on_request(call_key, now, timers, method))
                },
                None,
            ),
            StartLine::Response { code, .. } => {
                let cseq = v.cseq();
                let method = cseq.method;
                if method == Method::Register {
                    return None;
                }
                c.sip_responses.inc();
                let txn = transaction_key(call_key, cseq.seq, method);
                self.answer_from(farm, backend, txn, code, method);
                (
                    self.dialog_advanced(
                        t.dialogs.on_response(call_key, now, timers, method, code),
                    ),
                    Some(Answer { txn, code, method }),
                )
            }
        };
        c.sip_steered.inc();
        Some(keep)
    }

    /// What a backend's message means for the tables: steered from the light scan
    /// when it belongs to a known dialog, else parsed in full. Returns how long the
    /// client's state must be kept, the full parse if there was one (the ALG reads
    /// it), and what it answers if it is a response.
    fn backend_message<'f>(
        &self,
        farm: &Farm,
        backend: usize,
        frame: &'f [u8],
        flow: &Flow,
    ) -> Result<(u32, Option<SipMessage<'f>>, Option<Answer>), DropReason> {
        let sip = &frame[flow.udp_payload()];
        self.note_backend_message(farm, backend, sip);
        if let Some((keep, answer)) = self.steer_backend_message(farm, backend, sip) {
            return Ok((keep, None, answer));
        }
        let msg = self.parse_sip(frame, flow.udp_payload())?;
        let (keep, answer) = self.observe_backend_message(farm, backend, &msg);
        Ok((keep, Some(msg), answer))
    }

    /// Notes what a backend's message means for dialogs and registrations, and returns
    /// how long the client's state must be kept, and what it answers.
    fn observe_backend_message(
        &self,
        farm: &Farm,
        backend: usize,
        msg: &SipMessage<'_>,
    ) -> (u32, Option<Answer>) {
        let (t, now) = (self.t, self.now);
        let call_key = hash64(msg.call_id());
        let timers = &farm.timers;
        match *msg.start_line() {
            StartLine::Request { method, .. } => {
                self.w.counters.sip_requests.inc();
                // A backend calling a phone (or refreshing, or hanging up): the phone's
                // answers and in-dialog requests must come back to this backend.
                let keep = if t.dialogs.get(call_key, now).is_some() {
                    self.dialog_advanced(t.dialogs.on_request(call_key, now, timers, method))
                } else {
                    let state = if method == Method::Bye {
                        DialogState::Terminating
                    } else {
                        DialogState::Trying
                    };
                    self.record_dialog(farm, call_key, backend, state, false)
                };
                (keep, None)
            }
            StartLine::Response { code, .. } => {
                self.w.counters.sip_responses.inc();
                let cseq = msg.cseq();
                let txn = transaction_key(call_key, cseq.seq, cseq.method);
                self.answer_from(farm, backend, txn, code, cseq.method);
                let answer = Some(Answer {
                    txn,
                    code,
                    method: cseq.method,
                });
                if cseq.method == Method::Register && (200..300).contains(&code) {
                    return (self.note_registration(farm, backend, msg), answer);
                }
                let keep = self.dialog_advanced(t.dialogs.on_response(
                    call_key,
                    now,
                    timers,
                    cseq.method,
                    code,
                ));
                (keep, answer)
            }
        }
    }

    /// A 2xx to REGISTER: the binding lives as long as the registrar says.
    fn note_registration(&self, farm: &Farm, backend: usize, msg: &SipMessage<'_>) -> u32 {
        let (t, now, timers) = (self.t, self.now, &farm.timers);
        let aor = aor_key(&msg.to().uri);
        let expires = msg
            .contact_expires()
            .or(msg.expires())
            .unwrap_or(DEFAULT_REGISTER_EXPIRES);
        let reg = Registration {
            backend: farm.backends[backend].slot,
            farm: farm.id,
        };
        let until = if expires == 0 {
            // Unregistered: keep only long enough for retransmissions.
            now.saturating_add(timers.linger)
        } else {
            now.saturating_add(expires)
                .saturating_add(timers.registration_margin)
        };
        if t.registrations.set(aor, now, reg, until).is_err() {
            self.w.counters.registration_table_full.inc();
        }
        until
    }

    /// A backend's message toward a client in dnat mode: it comes from the VIP.
    pub(super) fn udp_dnat_backend_to_client(
        &mut self,
        frame: &mut [u8],
        flow: &Flow,
        farm: &Farm,
        backend: usize,
    ) -> Verdict {
        let (keep, msg, answer) = match self.backend_message(farm, backend, frame, flow) {
            Ok(r) => r,
            Err(r) => return Verdict::Drop(r),
        };
        self.note_backend_answer(farm, flow.dst, keep);
        self.note_auth_answer(flow.dst, &frame[flow.udp_payload()]);
        if let Some(h) = answer.and_then(|a| self.failover_answer(farm, backend, a)) {
            return self.failover_handled(frame, flow, h);
        }
        let outcome = if farm.alg {
            let plan = MediaPlan {
                farm,
                from: Side::Backend,
                client: (flow.dst, flow.dport()),
                backend_side: farm.vip,
            };
            let rules = rules_to_client(self.svc, farm, backend, None);
            match self.alg_edits(frame, flow, msg.as_ref(), &rules, plan) {
                Ok(o) => o,
                Err(r) => return Verdict::Drop(r),
            }
        } else {
            Outcome::Unchanged
        };
        let rewritten = match self.alg_apply(frame, flow, outcome) {
            Ok(r) => r,
            Err(r) => return Verdict::Drop(r),
        };
        if let Err(r) = rewrite_l4(frame, flow, Some((farm.vip, farm.port)), None) {
            return Verdict::Drop(r);
        }
        if rewritten {
            refill_udp_checksum(frame, flow);
        }
        self.count_from(farm, backend, self.len);
        self.next_hop(frame, flow.dst)
    }

    /// A backend's message to a SNAT port: back to the session's client, from the VIP.
    pub(super) fn udp_snat_backend_to_client(
        &mut self,
        frame: &mut [u8],
        flow: &Flow,
        session: SnatSession,
    ) -> Verdict {
        let Some(farm) = self.svc.farms.get(usize::from(session.farm)) else {
            return Verdict::Drop(DropReason::SnatNoSession);
        };
        let Some(backend) = farm
            .backends
            .iter()
            .position(|b| b.addr == flow.src && b.port == flow.sport())
        else {
            // Only the farm's backends may use a client's session.
            return Verdict::Drop(DropReason::NotBalanced);
        };
        let (keep, msg, answer) = match self.backend_message(farm, backend, frame, flow) {
            Ok(r) => r,
            Err(r) => return Verdict::Drop(r),
        };
        self.t.snat.extend(&session, keep);
        self.note_backend_answer(farm, session.client, keep);
        self.note_auth_answer(session.client, &frame[flow.udp_payload()]);
        if let Some(h) = answer.and_then(|a| self.failover_answer(farm, backend, a)) {
            return self.failover_handled(frame, flow, h);
        }
        let client = (session.client, session.client_port);
        let outcome = if farm.alg {
            let snat = (flow.dst, flow.dport());
            let plan = MediaPlan {
                farm,
                from: Side::Backend,
                client,
                backend_side: flow.dst,
            };
            let rules = rules_to_client(self.svc, farm, backend, Some((snat, client)));
            match self.alg_edits(frame, flow, msg.as_ref(), &rules, plan) {
                Ok(o) => o,
                Err(r) => return Verdict::Drop(r),
            }
        } else {
            Outcome::Unchanged
        };
        let rewritten = match self.alg_apply(frame, flow, outcome) {
            Ok(r) => r,
            Err(r) => return Verdict::Drop(r),
        };
        if let Err(r) = rewrite_l4(frame, flow, Some((farm.vip, farm.port)), Some(client)) {
            return Verdict::Drop(r);
        }
        if rewritten {
            refill_udp_checksum(frame, flow);
        }
        self.count_from(farm, backend, self.len);
        self.next_hop(frame, session.client)
    }

    /// The ALG, first half: what `rules` and the media relay (`plan`) change in the
    /// SIP message of `flow`, recorded in the worker's edits; nothing is written. `msg`
    /// is the message as placement parsed it, if it did (a steered message is parsed
    /// here). A message that cannot be rewritten correctly is refused, counted by
    /// reason.
    fn alg_edits(
        &mut self,
        frame: &[u8],
        flow: &Flow,
        msg: Option<&SipMessage<'_>>,
        rules: &Rules,
        plan: MediaPlan<'_>,
    ) -> Result<Outcome, DropReason> {
        // A datagram that cannot be forwarded is not worth rewriting.
        if Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]).ttl() <= 1 {
            return Err(DropReason::TtlExpired);
        }
        let sip = &frame[flow.udp_payload()];
        let parsed;
        let msg = match msg {
            Some(m) => m,
            None => {
                parsed = self.parse_sip(frame, flow.udp_payload())?;
                &parsed
            }
        };
        let mut session = self.media_session(&plan, msg);
        let mapper = session.as_mut().map(|s| s as &mut dyn alg::MediaMapper);
        let mut outcome = alg::rewrite(sip, msg, rules, mapper, &mut self.w.edits);
        if let Some(s) = &session {
            let c = &self.w.counters.media[usize::from(plan.farm.id)];
            c.flows.add(u64::from(s.created));
            match outcome {
                // Streams the relay cannot carry (an IPv6 or host-name `c=`) keep
                // their SDP; the headers are still rewritten.
                Err(e @ (RewriteError::Ipv6Media | RewriteError::UnsupportedMediaAddress)) => {
                    self.w.counters.alg_errors[e.index()].inc();
                    outcome = alg::rewrite(sip, msg, rules, None, &mut self.w.edits);
                }
                Err(RewriteError::Media(e)) => c.refused[e.index()].inc(),
                _ => {}
            }
        }
        let foreign = self.w.edits.foreign_tokens();
        if foreign > 0 {
            self.w.counters.alg_errors[RewriteError::ForeignToken.index()].add(foreign as u64);
        }
        self.media_lifecycle(&plan, msg);
        outcome.map_err(|e| {
            self.w.counters.alg_errors[e.index()].inc();
            DropReason::AlgRefused
        })
    }

    /// The ALG, second half: applies the edits of a rewritten message in place in
    /// `buf`, whose room past the frame it may grow into, and fixes the UDP and IPv4
    /// lengths. Returns whether the message changed (its UDP checksum must then be
    /// computed anew); a result that does not fit is refused, counted, and the buffer
    /// left as it was.
    fn alg_apply(
        &mut self,
        buf: &mut [u8],
        flow: &Flow,
        outcome: Outcome,
    ) -> Result<bool, DropReason> {
        if outcome == Outcome::Unchanged {
            return Ok(false);
        }
        let payload = flow.udp_payload();
        // The datagram may grow up to what the buffer holds and UDP over IPv4 carries.
        let room = buf.len().min(flow.l4 + usize::from(u16::MAX) - 20);
        let new_len = self
            .w
            .edits
            .apply(&mut buf[payload.start..room])
            .map_err(|e| {
                self.w.counters.alg_errors[alg::RewriteError::from(e).index()].inc();
                DropReason::AlgRefused
            })?;
        let udp_len = udp::HEADER_LEN + new_len;
        UdpPacket::new_unchecked(&mut buf[flow.l4..]).set_len(udp_len as u16);
        let ip_len = flow.l4 - ethernet::HEADER_LEN + udp_len;
        Ipv4Packet::new_unchecked(&mut buf[ethernet::HEADER_LEN..]).set_total_len(ip_len as u16);
        self.len = flow.l4 + udp_len;
        self.w.counters.alg_rewritten.inc();
        Ok(true)
    }
}

/// Why new work found no backend: every one is down or drained by configuration, or
/// some are up but none takes it now (full, held by Retry-After, shedding, marked
/// down passively).
fn unplaced(farm: &Farm, key: u64) -> DropReason {
    if farm.pick(key).is_some() {
        DropReason::FarmFull
    } else {
        DropReason::NoBackend
    }
}

/// Computes the UDP checksum of a datagram whose payload the ALG changed, from the
/// addresses now in its IPv4 header; a datagram sent without one (0) stays without.
fn refill_udp_checksum(frame: &mut [u8], flow: &Flow) {
    let (src, dst) = {
        let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        (ip.src(), ip.dst())
    };
    let mut u = UdpPacket::new_unchecked(&mut frame[flow.l4..]);
    if u.checksum() != 0 {
        u.fill_checksum(src, dst);
    }
}
