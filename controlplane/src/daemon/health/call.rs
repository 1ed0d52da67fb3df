//! The dummy-call check, like `check_sip`: optionally REGISTER (answering a digest
//! challenge), INVITE with an SDP offer of PCMU/8000, ACK the 200, send RTP for the
//! configured time, BYE. Every step must succeed; the result names the one that did not.

use super::rtp;
use super::sipclient::{status_text, to_tag, token, transaction, Leg, Transport};
use super::{Outcome, Target};
use rsip::prelude::*;
use rsip::typed;
use rsip::{Header, Method, Request, Response};
use std::net::UdpSocket;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub fn run(t: &Target, stop: &AtomicBool) -> Outcome {
    let c = &t.cfg.call;
    let timeout = Duration::from_millis(t.cfg.timeout_ms);
    let started = Instant::now();
    let audio = if c.rtp_file.is_empty() {
        rtp::tone()
    } else {
        std::fs::read(&c.rtp_file).map_err(|e| format!("rtp_file {}: {e}", c.rtp_file))?
    };
    let mut tp = t.transport(timeout)?;
    let host = format!("{}:{}", t.address, t.port);
    let mut done = Vec::new();

    if c.register {
        let aor = format!("sip:{}@{host}", c.user);
        let mut reg = Leg::new(aor.clone(), aor);
        let extra = vec![
            contact(&c.user, &tp),
            Header::Expires(rsip::headers::Expires::new("60")),
        ];
        let uri = format!("sip:{host}");
        let req = reg.request(&tp, Method::Register, &uri, false, extra.clone(), None)?;
        let mut resp = transaction(&mut tp, &req, timeout).map_err(|e| format!("REGISTER: {e}"))?;
        if is_challenge(&resp) {
            let mut with_auth = extra;
            with_auth.push(authorization(&resp, &req, &c.user, &c.password)?);
            let req = reg.request(&tp, Method::Register, &uri, false, with_auth, None)?;
            resp = transaction(&mut tp, &req, timeout).map_err(|e| format!("REGISTER: {e}"))?;
        }
        if !is_success(&resp) {
            return Err(format!(
                "REGISTER answered {}{}",
                status_text(&resp),
                if is_challenge(&resp) {
                    " after the digest answer (wrong user or password?)"
                } else {
                    ""
                }
            ));
        }
        done.push(format!("REGISTER {}", resp.status_code.code()));
    }

    let rtp_sock = UdpSocket::bind((tp.local.ip(), 0)).map_err(|e| format!("RTP socket: {e}"))?;
    let rtp_port = rtp_sock.local_addr().map_err(|e| e.to_string())?.port();
    let ip = tp.local.ip();
    let sdp = format!(
        "v=0\r\no=siplb-check {} 1 IN IP4 {ip}\r\ns=siplb health check\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        siplb_core::hash::hash64(token().as_bytes()) >> 16
    );
    let uri = format!("sip:{}@{host}", c.to_user);
    let mut leg = Leg::new(format!("sip:{}@{ip}", c.user), uri.clone());
    let offer = || Some(("application/sdp", sdp.clone().into_bytes()));
    let mut invite = leg.request(
        &tp,
        Method::Invite,
        &uri,
        false,
        vec![contact(&c.user, &tp)],
        offer(),
    )?;
    let mut resp = transaction(&mut tp, &invite, timeout).map_err(|e| format!("INVITE: {e}"))?;
    if is_challenge(&resp) && !c.password.is_empty() {
        ack_failure(&mut tp, &mut leg, &invite, &resp)?;
        leg.to_tag = None;
        let auth = authorization(&resp, &invite, &c.user, &c.password)?;
        invite = leg.request(
            &tp,
            Method::Invite,
            &uri,
            false,
            vec![contact(&c.user, &tp), auth],
            offer(),
        )?;
        resp = transaction(&mut tp, &invite, timeout).map_err(|e| format!("INVITE: {e}"))?;
    }
    if !is_success(&resp) {
        ack_failure(&mut tp, &mut leg, &invite, &resp)?;
        return Err(format!("INVITE answered {}", status_text(&resp)));
    }
    leg.to_tag = to_tag(&resp);
    // In-dialog requests go to the Contact of the 200 (RFC 3261 12.1.2).
    let target = resp
        .contact_header()
        .ok()
        .and_then(|h| h.typed().ok())
        .map(|c| c.uri.to_string())
        .unwrap_or_else(|| uri.clone());
    let ack = leg.request(&tp, Method::Ack, &target, true, vec![], None)?;
    tp.send(ack.to_string().as_bytes())?;
    done.push("INVITE 200".to_string());

    let media = match rtp::audio_destination(&resp.body) {
        Some(dest) => rtp::stream(
            &rtp_sock,
            dest,
            Duration::from_millis(c.duration_ms),
            &audio,
            stop,
        ),
        None => Err("the 200's SDP has no IPv4 audio address".into()),
    };

    // Hang up whatever happened to the media.
    let bye = leg.request(&tp, Method::Bye, &target, false, vec![], None)?;
    let bye = transaction(&mut tp, &bye, timeout).map_err(|e| format!("BYE: {e}"));
    let (sent, received) = media?;
    let bye = bye?;
    if !is_success(&bye) {
        return Err(format!("BYE answered {}", status_text(&bye)));
    }
    if c.expect_rtp && received == 0 {
        return Err(format!(
            "no RTP came back during the call ({sent} packets sent)"
        ));
    }
    done.push(format!("RTP {sent} sent / {received} received"));
    done.push("BYE 200".into());
    Ok(format!(
        "{} ({} ms)",
        done.join(", "),
        started.elapsed().as_millis()
    ))
}

fn contact(user: &str, tp: &Transport) -> Header {
    let transport = if tp.name() == "TCP" {
        ";transport=tcp"
    } else {
        ""
    };
    Header::Contact(rsip::headers::Contact::new(format!(
        "<sip:{user}@{}{transport}>",
        tp.local
    )))
}

fn is_success(r: &Response) -> bool {
    (200..300).contains(&r.status_code.code())
}

fn is_challenge(r: &Response) -> bool {
    matches!(r.status_code.code(), 401 | 407)
}

/// ACK of a non-2xx final answer to an INVITE: same branch and CSeq number, the
/// answer's To tag (RFC 3261 17.1.1.3).
fn ack_failure(
    tp: &mut Transport,
    leg: &mut Leg,
    invite: &Request,
    resp: &Response,
) -> Result<(), String> {
    leg.to_tag = to_tag(resp);
    let ack = leg.request_with_branch(
        tp,
        Method::Ack,
        &invite.uri.to_string(),
        &leg.branch.clone(),
        vec![],
        None,
    )?;
    tp.send(ack.to_string().as_bytes())
}

/// The Authorization (401) or Proxy-Authorization (407) answering `resp`'s challenge
/// to `req`.
fn authorization(
    resp: &Response,
    req: &Request,
    user: &str,
    password: &str,
) -> Result<Header, String> {
    let challenge = resp.headers.iter().find_map(|h| match h {
        Header::WwwAuthenticate(w) => Some(w.typed().map(|c| (false, c))),
        Header::ProxyAuthenticate(p) => Some(p.typed().map(|c| (true, c.0))),
        _ => None,
    });
    let (proxy, ch) = match challenge {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Err(format!("unreadable digest challenge: {e}")),
        None => return Err(format!("{} without a challenge header", status_text(resp))),
    };
    let qop = match ch.qop {
        Some(rsip::headers::auth::Qop::Auth) => Some(rsip::headers::auth::AuthQop::Auth {
            cnonce: token(),
            nc: 1,
        }),
        Some(rsip::headers::auth::Qop::AuthInt) => Some(rsip::headers::auth::AuthQop::AuthInt {
            cnonce: token(),
            nc: 1,
        }),
        None => None,
    };
    let algorithm = ch.algorithm.unwrap_or(rsip::headers::auth::Algorithm::Md5);
    let response = rsip::services::DigestGenerator {
        username: user,
        password,
        nonce: &ch.nonce,
        uri: &req.uri,
        realm: &ch.realm,
        method: &req.method,
        qop: qop.as_ref(),
        algorithm,
    }
    .compute();
    let auth = typed::Authorization {
        scheme: rsip::headers::auth::Scheme::Digest,
        username: user.to_string(),
        realm: ch.realm.clone(),
        nonce: ch.nonce.clone(),
        uri: req.uri.clone(),
        response,
        algorithm: ch.algorithm,
        opaque: ch.opaque.clone(),
        qop,
    };
    Ok(if proxy {
        Header::ProxyAuthorization(typed::ProxyAuthorization(auth).into())
    } else {
        Header::Authorization(auth.into())
    })
}
