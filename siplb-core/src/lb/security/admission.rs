//! Where the policy meets the packet path: the admission points `udp.rs` and `tcp.rs`
//! call, so the rules live in one place and the protocol stages stay short.
//!
//! No state without admission. What a request that matches no dialog may create
//! depends on the farm's NAT mode:
//! - `dnat`: an in-dialog-looking request (To-tag, ACK, BYE, CANCEL) or a response
//!   whose dialog is unknown is forwarded, metered like new work, and recorded with a
//!   transaction's lifetime (BYE: the linger time): after a restart or a failover that
//!   lost the dialog, `call-id` hashing still lands it on its backend, and only a 2xx
//!   from that backend makes the dialog long-lived again;
//! - `snat`: it goes on only through the SNAT session its client flow already holds
//!   (a call whose dialog did not fit a full table); otherwise it is dropped
//!   (`no_dialog`): forwarding would take a SNAT port, the scarcest shared resource,
//!   for a dialog the backend cannot reach anyway (the backend talks to the SNAT port
//!   it knew, which no session owns any more).
//!
//! TCP the same way: a segment other than a SYN that matches no connection creates no
//! connection entry; `dnat` forwards it (placement is a pure function of the client,
//! so it lands where its connection began), `snat` only through an existing SNAT
//! session, else drops it (`tcp_no_connection`). A backend's segment never creates a
//! connection entry either (its RSTs to spoofed segments would fill the table).

use super::Class;
use crate::config::NatMode;
use crate::lb::context::Ctx;
use crate::lb::counters::DropReason;
use crate::lb::packet::Flow;
use crate::lb::services::Farm;
use crate::sip::{Method, SipMessage};
use crate::table::connection::ConnState;
use crate::wire::tcp;
use std::net::Ipv4Addr;

impl Ctx<'_, '_, '_> {
    /// Admits a client's request that matches no dialog, or a REGISTER: the scanner
    /// check, the NAT mode's rule for stray in-dialog requests, the farm's bucket for
    /// its method class.
    pub(in crate::lb) fn admit_sip_request(
        &self,
        farm: &Farm,
        msg: &SipMessage<'_>,
        flow: &Flow,
        method: Method,
    ) -> Result<(), DropReason> {
        let sec = &self.svc.security;
        if sec.has_scanner_agent(msg.header_section()) {
            return Err(DropReason::Scanner);
        }
        let in_dialog = method != Method::Register
            && (msg.to().tag.is_some()
                || matches!(method, Method::Ack | Method::Cancel | Method::Bye));
        if in_dialog {
            self.may_go_stray(farm, flow, DropReason::NoDialog)?;
        }
        sec.admit_request(
            &self.t.rates,
            self.w.counters,
            (farm.id, &farm.limits),
            flow.src,
            Class::of(method),
            self.now,
        )?;
        sec.admit_new_source(
            &self.t.rates,
            &self.t.new_sources,
            self.w.counters,
            flow.src,
            self.now,
        )?;
        if in_dialog {
            self.w.counters.stray_sip_forwarded.inc();
        }
        Ok(())
    }

    /// Admits a client's response that matches no dialog (metered as "other").
    pub(in crate::lb) fn admit_sip_response(
        &self,
        farm: &Farm,
        flow: &Flow,
    ) -> Result<(), DropReason> {
        self.may_go_stray(farm, flow, DropReason::NoDialog)?;
        self.svc.security.admit_request(
            &self.t.rates,
            self.w.counters,
            (farm.id, &farm.limits),
            flow.src,
            Class::Other,
            self.now,
        )?;
        self.w.counters.stray_sip_forwarded.inc();
        Ok(())
    }

    /// May a message of no known dialog or connection go on? In `snat` only through
    /// the SNAT session its client flow holds already (else `refusal`).
    fn may_go_stray(
        &self,
        farm: &Farm,
        flow: &Flow,
        refusal: DropReason,
    ) -> Result<(), DropReason> {
        match farm.nat {
            NatMode::Dnat => Ok(()),
            NatMode::Snat => self
                .t
                .snat
                .by_client(flow.src, flow.sport(), farm.id, self.now)
                .map(|_| ())
                .ok_or(refusal),
        }
    }

    /// A backend's message reached `client` and kept its dialog or registration until
    /// `keep`: past a transaction's reach, the client holds state a backend answered.
    #[inline]
    pub(in crate::lb) fn note_backend_answer(&self, farm: &Farm, client: Ipv4Addr, keep: u32) {
        let t = &farm.timers;
        let short = t.transaction.max(t.early).max(t.linger);
        if keep > self.now.saturating_add(short) {
            self.svc
                .security
                .trust(&self.t.rates, client, keep, self.now);
        }
    }

    /// The TCP rules for a client's segment to a VIP; `known`: the state of its
    /// connection in the table. `Ok(true)`: a connection entry may be recorded;
    /// `Ok(false)`: forward it without one.
    pub(in crate::lb) fn admit_tcp_segment(
        &self,
        flow: &Flow,
        farm: &Farm,
        known: Option<ConnState>,
    ) -> Result<bool, DropReason> {
        let sec = &self.svc.security;
        let (rates, c, now) = (&self.t.rates, self.w.counters, self.now);
        let fl = flow.tcp_flags;
        sec.check_segment(rates, c, flow.src, fl, now)?;
        if known.is_some() {
            return Ok(true);
        }
        if fl & tcp::SYN != 0 && fl & tcp::ACK == 0 {
            let lifetime = ConnState::Established.lifetime(&farm.timers);
            sec.admit_syn(rates, c, flow.src, lifetime, now)?;
            sec.admit_new_source(rates, &self.t.new_sources, c, flow.src, now)?;
            return Ok(true);
        }
        self.may_go_stray(farm, flow, DropReason::TcpNoConnection)?;
        c.stray_tcp_forwarded.inc();
        Ok(false)
    }

    /// A connection of `client` moved from `old` to `new`: its first FIN or RST
    /// releases its place in the source's connection count.
    #[inline]
    pub(in crate::lb) fn note_connection_state(
        &self,
        client: Ipv4Addr,
        old: Option<ConnState>,
        new: ConnState,
    ) {
        if new == ConnState::Closing && old.is_some_and(|s| s != ConnState::Closing) {
            self.svc
                .security
                .connection_closed(&self.t.rates, client, self.now);
        }
    }

    /// A backend's segment other than SYN, RST or FIN reached `client`: the client
    /// finished a handshake (a spoofed source cannot), so it keeps priority for new
    /// connections under a SYN flood.
    #[inline]
    pub(in crate::lb) fn note_backend_segment(&self, farm: &Farm, client: Ipv4Addr, flags: u8) {
        if flags & (tcp::SYN | tcp::RST | tcp::FIN) == 0 {
            let until = self
                .now
                .saturating_add(ConnState::Established.lifetime(&farm.timers));
            self.svc
                .security
                .trust(&self.t.rates, client, until, self.now);
        }
    }
}
