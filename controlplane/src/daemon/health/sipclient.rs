//! A small SIP client for the health checks: one transport (UDP or TCP) to one
//! backend, requests built with rsip, and client transactions that wait for the final
//! answer with RFC 3261's retransmission timers (UDP) and a deadline.
//!
//! Its sockets are ordinary kernel sockets: on a balancer with the exception path they
//! leave through the dataplane's port, as any of the host's own traffic does.

use rsip::prelude::*;
use rsip::{Header, Headers, Method, Request, Response, Uri, Version};
use siplb_core::sip::Limits;
use siplb_core::sip::{StreamFramer, StreamItem};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// RFC 3261 T1: the first retransmission interval over UDP.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: the longest retransmission interval of non-INVITE requests.
const T2: Duration = Duration::from_secs(4);

/// A token unique to this process and call: branches, tags and Call-IDs.
pub fn token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mix = siplb_core::hash::hash64(&[t.to_le_bytes(), n.to_le_bytes()].concat());
    format!("{:x}{:x}", std::process::id(), mix)
}

enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream, StreamFramer),
}

/// One connection (or UDP association) to a backend.
pub struct Transport {
    link: Link,
    pub local: SocketAddr,
    /// Receive buffer, reused for every read.
    buf: Vec<u8>,
}

impl Transport {
    pub fn udp(remote: SocketAddr) -> Result<Transport, String> {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("UDP socket: {e}"))?;
        s.connect(remote)
            .map_err(|e| format!("no route to {remote}: {e}"))?;
        let local = s.local_addr().map_err(|e| e.to_string())?;
        Ok(Transport {
            link: Link::Udp(s),
            local,
            buf: vec![0; 65536],
        })
    }

    pub fn tcp(remote: SocketAddr, timeout: Duration) -> Result<Transport, String> {
        let s = connect(remote, timeout)?;
        let local = s.local_addr().map_err(|e| e.to_string())?;
        Ok(Transport {
            link: Link::Tcp(s, StreamFramer::new(Limits::default())),
            local,
            buf: vec![0; 65536],
        })
    }

    pub fn name(&self) -> &'static str {
        match self.link {
            Link::Udp(_) => "UDP",
            Link::Tcp(..) => "TCP",
        }
    }

    fn reliable(&self) -> bool {
        matches!(self.link, Link::Tcp(..))
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let r = match &mut self.link {
            Link::Udp(s) => s.send(bytes).map(|_| ()),
            Link::Tcp(s, _) => s.write_all(bytes),
        };
        r.map_err(|e| match e.kind() {
            ErrorKind::ConnectionRefused => "port unreachable (ICMP)".to_string(),
            _ => format!("send failed: {e}"),
        })
    }

    /// The next message from the backend, or None when `deadline` passes first.
    pub fn recv(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, String> {
        let buf = &mut self.buf;
        loop {
            if let Link::Tcp(_, framer) = &mut self.link {
                match framer.next_item() {
                    Ok(Some(StreamItem::Message(m))) => return Ok(Some(m.to_vec())),
                    Ok(Some(StreamItem::KeepAlive(_))) => continue,
                    Ok(None) => {}
                    Err(e) => return Err(format!("unreadable TCP stream: {e}")),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let r = match &mut self.link {
                Link::Udp(s) => s.set_read_timeout(Some(left)).and_then(|_| s.recv(buf)),
                Link::Tcp(s, _) => s.set_read_timeout(Some(left)).and_then(|_| s.read(buf)),
            };
            match r {
                Ok(0) if matches!(self.link, Link::Tcp(..)) => {
                    return Err("the backend closed the connection".into())
                }
                Ok(n) => match &mut self.link {
                    Link::Udp(_) => return Ok(Some(buf[..n].to_vec())),
                    Link::Tcp(_, framer) => framer.push(&buf[..n]),
                },
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    return Err("port unreachable (ICMP)".into())
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("receive failed: {e}")),
            }
        }
    }
}

/// A TCP connection within `timeout`, with the failure said plainly.
pub fn connect(remote: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    TcpStream::connect_timeout(&remote, timeout).map_err(|e| match e.kind() {
        ErrorKind::ConnectionRefused => format!("TCP {remote}: connection refused"),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => format!(
            "TCP {remote}: no answer to the connection within {} ms",
            timeout.as_millis()
        ),
        _ => format!("TCP {remote}: {e}"),
    })
}

/// What identifies a client request's transaction and dialog.
pub struct Leg {
    pub call_id: String,
    pub from_tag: String,
    pub from: String,
    pub to: String,
    /// The remote tag, once a response carried one.
    pub to_tag: Option<String>,
    pub cseq: u32,
    /// The branch of the last request made with [`Leg::request`].
    pub branch: String,
}

impl Leg {
    pub fn new(from: String, to: String) -> Leg {
        Leg {
            call_id: format!("{}@siplb-check", token()),
            from_tag: token(),
            from,
            to,
            to_tag: None,
            cseq: 0,
            branch: String::new(),
        }
    }

    /// A request of this leg with a new branch (and the next CSeq unless `same_cseq`).
    pub fn request(
        &mut self,
        tp: &Transport,
        method: Method,
        uri: &str,
        same_cseq: bool,
        extra: Vec<Header>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Request, String> {
        if !same_cseq {
            self.cseq += 1;
        }
        self.branch = format!("z9hG4bK{}", token());
        self.request_with_branch(tp, method, uri, &self.branch, extra, body)
    }

    pub fn request_with_branch(
        &self,
        tp: &Transport,
        method: Method,
        uri: &str,
        branch: &str,
        extra: Vec<Header>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Request, String> {
        let uri = Uri::try_from(uri).map_err(|e| format!("bad URI {uri}: {e}"))?;
        let mut h = Headers::default();
        h.push(Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{} {};branch={branch};rport",
            tp.name(),
            tp.local
        ))));
        h.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        h.push(Header::From(rsip::headers::From::new(format!(
            "<{}>;tag={}",
            self.from, self.from_tag
        ))));
        let to = match &self.to_tag {
            Some(t) => format!("<{}>;tag={t}", self.to),
            None => format!("<{}>", self.to),
        };
        h.push(Header::To(rsip::headers::To::new(to)));
        h.push(Header::CallId(rsip::headers::CallId::new(
            self.call_id.clone(),
        )));
        h.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{} {method}",
            self.cseq
        ))));
        h.push(Header::UserAgent(rsip::headers::UserAgent::new(
            "siplb-health-check",
        )));
        for x in extra {
            h.push(x);
        }
        let body = match body {
            Some((ctype, b)) => {
                h.push(Header::ContentType(rsip::headers::ContentType::new(ctype)));
                b
            }
            None => Vec::new(),
        };
        h.push(Header::ContentLength(rsip::headers::ContentLength::new(
            body.len().to_string(),
        )));
        Ok(Request {
            method,
            uri,
            version: Version::V2,
            headers: h,
            body,
        })
    }
}

/// The final answer to `req`, waiting through provisional ones. Over UDP the request is
/// resent after T1, 2·T1 ... (at most T2 apart for non-INVITE). Only a real response
/// from the backend is an answer: running out of time is an error, never a 408.
pub fn transaction(
    tp: &mut Transport,
    req: &Request,
    timeout: Duration,
) -> Result<Response, String> {
    let bytes = req.to_string().into_bytes();
    let cseq = req
        .cseq_header()
        .and_then(|c| c.typed())
        .map_err(|e| format!("bad CSeq: {e}"))?;
    let call_id = req
        .call_id_header()
        .map_err(|e| e.to_string())?
        .value()
        .to_string();
    let start = Instant::now();
    let deadline = start + timeout;
    let mut interval = T1;
    let mut resend_at = start + interval;
    let mut provisional = false;
    tp.send(&bytes)?;
    loop {
        let wait = if tp.reliable() || provisional {
            deadline
        } else {
            resend_at.min(deadline)
        };
        match tp.recv(wait)? {
            Some(m) => {
                let Ok(resp) = Response::try_from(m) else {
                    continue; // a request from the backend, or garbage: not our answer
                };
                let matches = resp.call_id_header().is_ok_and(|c| c.value() == call_id)
                    && resp
                        .cseq_header()
                        .and_then(|c| c.typed())
                        .is_ok_and(|c| c.seq == cseq.seq && c.method == cseq.method);
                if !matches {
                    continue; // a late answer to an earlier check
                }
                if resp.status_code.code() < 200 {
                    // INVITE: a provisional answer stops retransmissions (RFC 3261 17.1.1.2).
                    provisional = provisional || req.method == Method::Invite;
                    continue;
                }
                return Ok(resp);
            }
            None if Instant::now() >= deadline => {
                return Err(format!(
                    "no answer to {} within {} ms",
                    req.method,
                    timeout.as_millis()
                ))
            }
            None => {
                tp.send(&bytes)?;
                interval = if req.method == Method::Invite {
                    interval * 2
                } else {
                    (interval * 2).min(T2)
                };
                resend_at = Instant::now() + interval;
            }
        }
    }
}

/// "200 OK", "486 Busy Here".
pub fn status_text(r: &Response) -> String {
    format!("{}", r.status_code)
}

/// The To tag of a response, if any.
pub fn to_tag(r: &Response) -> Option<String> {
    r.to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .map(|t| t.value().to_string())
}
