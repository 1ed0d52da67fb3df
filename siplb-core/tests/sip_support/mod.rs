//! Shared by the SIP scanner's integration tests: the corpus on disk, and the fields
//! the scanner returns as owned values, so the scanner, rsip and long-form twins can
//! be compared with `assert_eq!`.

#![allow(dead_code)] // each test binary uses a different part

pub mod fuzz_checks;

use rsip::prelude::*;
use siplb_core::sip::{NameAddr, SipMessage, SipUri, StartLine, SteerView, Via};
use std::path::{Path, PathBuf};

pub fn corpus_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(sub)
}

/// `(file stem, bytes)` of every `.sip` file in `corpus/<sub>`, sorted by name.
pub fn corpus(sub: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(corpus_dir(sub))
        .unwrap_or_else(|e| panic!("corpus/{sub}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sip"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

pub fn read(sub: &str, stem: &str) -> Vec<u8> {
    std::fs::read(corpus_dir(sub).join(format!("{stem}.sip"))).unwrap()
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Lower-cased: rsip normalises the scheme.
    pub scheme: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Request { method: String, uri: Uri },
    Response { code: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaF {
    /// Upper-cased: rsip normalises the transport.
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub branch: Option<String>,
    pub rport: Option<Option<u16>>,
    pub received: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub display: Option<String>,
    pub uri: Uri,
    pub tag: Option<String>,
}

/// Every field the scanner returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub start: Start,
    pub via: Option<ViaF>,
    pub from: Addr,
    pub to: Addr,
    pub call_id: String,
    pub cseq: (u32, String),
    pub max_forwards: Option<u32>,
    pub expires: Option<u32>,
    pub contact_expires: Option<u32>,
    pub content_length: Option<usize>,
    pub body: Vec<u8>,
}

fn uri(u: &SipUri<'_>) -> Uri {
    Uri {
        scheme: s(u.scheme).to_ascii_lowercase(),
        user: u.user.map(s),
        host: s(u.host),
        port: u.port,
    }
}

fn addr(a: &NameAddr<'_>) -> Addr {
    Addr {
        display: a.display.map(s),
        uri: uri(&a.uri),
        tag: a.tag.map(s),
    }
}

fn via(v: &Via<'_>) -> ViaF {
    ViaF {
        transport: s(v.transport).to_ascii_uppercase(),
        host: s(v.host),
        port: v.port,
        branch: v.branch.map(s),
        rport: v.rport,
        received: v.received.map(s),
    }
}

fn start(l: &StartLine<'_>) -> Start {
    match *l {
        StartLine::Request {
            method_raw, uri: u, ..
        } => Start::Request {
            method: s(method_raw),
            uri: uri(&u),
        },
        StartLine::Response { code, .. } => Start::Response { code },
    }
}

/// The scanner's view of `m`.
pub fn scanned(m: &SipMessage<'_>) -> Fields {
    let start = start(m.start_line());
    Fields {
        start,
        via: m.via().as_ref().map(via),
        from: addr(&m.from()),
        to: addr(&m.to()),
        call_id: s(m.call_id()),
        cseq: (m.cseq().seq, s(m.cseq().method_raw)),
        max_forwards: m.max_forwards(),
        expires: m.expires(),
        contact_expires: m.contact_expires(),
        content_length: m.content_length(),
        body: m.body().to_vec(),
    }
}

/// The fields of the light scan, as `Fields` has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steered {
    pub start: Start,
    pub call_id: String,
    pub to_tag: Option<String>,
    pub cseq: (u32, String),
}

impl Steered {
    pub fn of(v: &SteerView<'_>) -> Self {
        Self {
            start: start(v.start_line()),
            call_id: s(v.call_id()),
            to_tag: v.to_tag().map(s),
            cseq: (v.cseq().seq, s(v.cseq().method_raw)),
        }
    }

    /// What the light scan must find of a message with these fields.
    pub fn expected(f: &Fields) -> Self {
        Self {
            start: f.start.clone(),
            call_id: f.call_id.clone(),
            to_tag: f.to.tag.clone(),
            cseq: f.cseq.clone(),
        }
    }
}

/// Parses `buf` with the scanner (default limits) and returns its fields.
pub fn scan(buf: &[u8]) -> Fields {
    let m = SipMessage::parse(buf, &Default::default())
        .unwrap_or_else(|e| panic!("scanner rejected it: {e} ({})", e.name()));
    scanned(&m)
}

fn rsip_uri(u: &rsip::Uri) -> Uri {
    let mut user = u.auth.as_ref().map(|a| a.user.clone());
    let mut host = u.host_with_port.host.to_string();
    // rsip 0.4 ends a user part at the first "." and then reads `j.user@example.com`
    // as a host without user; undo that so users with dots can be compared.
    if user.is_none() {
        if let Some((u, h)) = host.clone().rsplit_once('@') {
            user = Some(u.split(':').next().unwrap_or_default().to_string());
            host = h.to_string();
        }
    }
    Uri {
        scheme: u
            .scheme
            .as_ref()
            .map(|x| x.to_string().to_ascii_lowercase())
            .unwrap_or_default(),
        user,
        host,
        port: u.host_with_port.port.map(|p| *p.value()),
    }
}

fn rsip_tag(params: &[rsip::Param]) -> Option<String> {
    params.iter().find_map(|p| match p {
        rsip::Param::Tag(t) => Some(t.to_string()),
        _ => None,
    })
}

/// rsip's view of the same fields (rsip knows long header names only).
pub fn oracle(buf: &[u8]) -> Result<Fields, String> {
    let e = |what: &str, err: rsip::Error| format!("rsip: {what}: {err}");
    let msg = rsip::SipMessage::try_from(buf).map_err(|x| e("message", x))?;
    let start = match &msg {
        rsip::SipMessage::Request(r) => Start::Request {
            method: r.method.to_string(),
            uri: rsip_uri(&r.uri),
        },
        rsip::SipMessage::Response(r) => Start::Response {
            code: r.status_code.code(),
        },
    };
    let via = match msg.via_header() {
        Ok(h) => {
            let v = h.typed().map_err(|x| e("Via", x))?;
            let mut rport = None;
            for p in &v.params {
                if let rsip::Param::Other(name, value) = p {
                    if name.to_string().eq_ignore_ascii_case("rport") && rport.is_none() {
                        rport = Some(value.as_ref().map(|x| x.to_string().parse().unwrap()));
                    }
                }
            }
            Some(ViaF {
                transport: v.transport.to_string().to_ascii_uppercase(),
                host: v.uri.host_with_port.host.to_string(),
                port: v.uri.host_with_port.port.map(|p| *p.value()),
                branch: v.branch().map(|b| b.to_string()),
                rport,
                received: v.params.iter().find_map(|p| match p {
                    rsip::Param::Received(r) => Some(r.to_string()),
                    _ => None,
                }),
            })
        }
        Err(_) => None,
    };
    let from = msg
        .from_header()
        .and_then(|h| h.typed())
        .map_err(|x| e("From", x))?;
    let to = msg
        .to_header()
        .and_then(|h| h.typed())
        .map_err(|x| e("To", x))?;
    let cseq = msg
        .cseq_header()
        .and_then(|h| h.typed())
        .map_err(|x| e("CSeq", x))?;
    let register = cseq.method == rsip::Method::Register;
    let contact_expires = match msg.contact_header() {
        Ok(h) if register && h.value().trim() != "*" => {
            let c = h.typed().map_err(|x| e("Contact", x))?;
            c.expires().map(|x| x.to_string().parse::<u32>().unwrap())
        }
        _ => None,
    };
    let content_length = msg.headers().iter().find_map(|h| match h {
        rsip::Header::ContentLength(l) => Some(l.length().unwrap() as usize),
        _ => None,
    });
    Ok(Fields {
        start,
        via,
        from: Addr {
            display: from.display_name.clone(),
            uri: rsip_uri(&from.uri),
            tag: rsip_tag(&from.params),
        },
        to: Addr {
            display: to.display_name.clone(),
            uri: rsip_uri(&to.uri),
            tag: rsip_tag(&to.params),
        },
        call_id: msg
            .call_id_header()
            .map_err(|x| e("Call-ID", x))?
            .value()
            .trim()
            .to_string(),
        cseq: (cseq.seq, cseq.method.to_string()),
        max_forwards: msg.max_forwards_header().ok().map(|h| h.num().unwrap()),
        expires: msg.expires_header().map(|h| h.seconds().unwrap()),
        contact_expires,
        content_length,
        body: msg.body().clone(),
    })
}
