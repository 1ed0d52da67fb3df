//! Brute force, judged in-band from the backends' own answers (issue 14, item 5), the
//! way fail2ban judges it from Asterisk's log but without reading any log.
//!
//! A client's REGISTER or INVITE that carries credentials (`Authorization` or
//! `Proxy-Authorization`) leaves a short-lived mark in the rates table, keyed by the
//! source and the transaction (Call-ID, CSeq number). When a backend answers that
//! transaction 401 or 407, the credentials were refused: one authentication failure
//! for the source. A 403 to a REGISTER or INVITE is one whatever was sent. The first
//! challenge of a phone (its request had no credentials yet) never counts, so a
//! phone re-registering every minute is never taken for an attacker. `auth_failures`
//! failures within `auth_window_s` put the source on the ban list for `auth_ban_s`
//! (reason `auth_failures`, listed and lifted like the flood bans).
//!
//! Cost: on the request side a case-insensitive search of the header section of
//! REGISTERs and INVITEs (parsed in full anyway); on the answer side three bytes of
//! every backend response, and a light scan only of 401/403/407s.

use super::limits::{self, BanReason, Kind};
use crate::hash::hash64;
use crate::lb::context::Ctx;
use crate::sip::{Method, SipMessage, SteerView};
use crate::table::flow::Entry;
use std::net::Ipv4Addr;

/// How long a request's credentials wait for their answer (a transaction's 32 s).
const CREDENTIALS_WAIT_S: u32 = 32;

/// The rates-table `sub` of a transaction (Call-ID and CSeq number).
fn transaction(call_id: &[u8], seq: u32) -> u32 {
    (hash64(call_id) ^ u64::from(seq).wrapping_mul(0x9e37_79b9_7f4a_7c15)) as u32
}

/// Whether a header section (from its first field on) holds credentials
/// (`Authorization` or `Proxy-Authorization`): one pass over its line starts.
fn carries_credentials(header_section: &[u8]) -> bool {
    let starts =
        std::iter::once(0).chain(memchr::memchr_iter(b'\n', header_section).map(|i| i + 1));
    starts.into_iter().any(|i| {
        let line = &header_section[i..];
        let name = match line.first() {
            Some(b'p' | b'P') => line
                .get(6..)
                .filter(|_| line[..6].eq_ignore_ascii_case(b"proxy-")),
            _ => Some(line),
        };
        name.and_then(|n| n.get(..13))
            .is_some_and(|n| n.eq_ignore_ascii_case(b"authorization"))
    })
}

impl Ctx<'_, '_, '_> {
    /// A client's request on its way to a backend: a REGISTER or INVITE with
    /// credentials is remembered until its answer.
    pub(in crate::lb) fn note_credentials(&self, src: Ipv4Addr, msg: &SipMessage<'_>) {
        let sec = &self.svc.security;
        if sec.auth_failures == 0
            || !matches!(msg.method(), Some(Method::Register | Method::Invite))
            || !carries_credentials(msg.header_section())
        {
            return;
        }
        let k = limits::key(
            src,
            Kind::Credentials,
            transaction(msg.call_id(), msg.cseq().seq),
        );
        let until = self.now.saturating_add(CREDENTIALS_WAIT_S);
        let stored = self.t.rates.upsert(k, self.now, |_| {
            Some(Entry {
                payload: 1,
                deadline: until,
            })
        });
        if stored.is_err() {
            self.w.counters.rate_table_full.inc();
        }
    }

    /// A backend's answer to `client`'s request (`sip`: the message): counts an
    /// authentication failure, and bans the client on the `auth_failures`-th.
    pub(in crate::lb) fn note_auth_answer(&self, client: Ipv4Addr, sip: &[u8]) {
        let sec = &self.svc.security;
        if sec.auth_failures == 0 {
            return;
        }
        let code = match sip.get(..12) {
            Some(b"SIP/2.0 401 ") => 401,
            Some(b"SIP/2.0 403 ") => 403,
            Some(b"SIP/2.0 407 ") => 407,
            _ => return,
        };
        let Ok(v) = SteerView::scan(sip, &self.w.limits) else {
            return;
        };
        let cseq = v.cseq();
        if !matches!(cseq.method, Method::Register | Method::Invite) {
            return;
        }
        let (rates, now) = (&self.t.rates, self.now);
        let k = limits::key(
            client,
            Kind::Credentials,
            transaction(v.call_id(), cseq.seq),
        );
        let refused_credentials = rates.lookup(k, now).is_some();
        if refused_credentials {
            rates.remove(k, now);
        }
        if code != 403 && !refused_credentials {
            return;
        }
        let c = self.w.counters;
        c.auth_failures.inc();
        let key = limits::key(client, Kind::AuthFailures, 0);
        match limits::counted(rates, key, sec.auth_failures - 1, sec.auth_window_s, now) {
            Ok(false) => {}
            Ok(true) => {
                match limits::ban(rates, client, BanReason::AuthFailures, sec.auth_ban_s, now) {
                    Ok(()) => c.sources_banned.inc(),
                    Err(_) => c.rate_table_full.inc(),
                }
            }
            Err(_) => c.rate_table_full.inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::carries_credentials;

    #[test]
    fn credentials_are_found_by_header_name_in_any_case() {
        for (h, want) in [
            (&b"Via: x\r\nAuthorization: Digest a\r\n"[..], true),
            (b"Via: x\r\nproxy-AUTHORIZATION: Digest a\r\n", true),
            (b"Via: x\r\nWWW-Authenticate: Digest a\r\n", false),
            (
                b"Via: x\r\nProxy-Require: foo\r\nX-Authorization-Hint: a\r\n",
                false,
            ),
            (b"Via: x\r\nprox", false),
            // The section begins with its first field.
            (b"Authorization: Digest a\r\nVia: x\r\n", true),
            (b"Proxy-Authorization: Digest a\r\n", true),
        ] {
            assert_eq!(
                carries_credentials(h),
                want,
                "{}",
                String::from_utf8_lossy(h)
            );
        }
    }
}
