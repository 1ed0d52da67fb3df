//! Torture cases rsip cannot read even in long form (unknown methods and schemes,
//! `;` in a user part, URI headers in a Contact, IPv6 references, tel: URIs): their
//! fields are written out here by hand. Cases with a twin are in `sip_oracle.rs`.

mod sip_support;

use sip_support::{corpus, read};
use siplb_core::sip::{HeaderName, Limits, Method, SipMessage, StartLine};

fn parse(buf: &[u8]) -> SipMessage<'_> {
    SipMessage::parse(buf, &Limits::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn request_uri<'a>(m: &SipMessage<'a>) -> siplb_core::sip::SipUri<'a> {
    match *m.start_line() {
        StartLine::Request { uri, .. } => uri,
        StartLine::Response { .. } => panic!("not a request"),
    }
}

const CASES: &[&str] = &[
    "ipv6_invite",
    "rfc4475_baddate",
    "rfc4475_esc02",
    "rfc4475_intmeth",
    "rfc4475_novelsc",
    "rfc4475_regescrt",
    "rfc4475_semiuri",
    "rfc4475_unkscm",
    "rfc4475_unksm2",
    "tel_uris",
];

#[test]
fn every_case_without_twin_is_covered_here() {
    let all: Vec<String> = corpus("torture").into_iter().map(|(n, _)| n).collect();
    let solo: Vec<&str> = all
        .iter()
        .filter(|n| !n.ends_with(".twin") && !all.contains(&format!("{n}.twin")))
        .map(String::as_str)
        .collect();
    assert_eq!(solo, CASES);
}

#[test]
fn intmeth_wide_range_of_valid_characters() {
    let buf = read("torture", "rfc4475_intmeth");
    let m = parse(&buf);
    let method: &[u8] = b"!interesting-Method0123456789_*+`.%indeed'~";
    let StartLine::Request {
        method: kind,
        method_raw,
        uri,
    } = *m.start_line()
    else {
        panic!()
    };
    assert_eq!((kind, method_raw), (Method::Other, method));
    assert_eq!(
        uri.user,
        Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
    );
    assert_eq!(uri.host, b"example.com");
    assert_eq!(m.cseq().method_raw, method);
    assert_eq!(m.cseq().seq, 139122385);
    assert_eq!(m.call_id(), b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
    assert_eq!(m.via().unwrap().branch, Some(&b"z9hG4bK-.!%66*_+`'~"[..]));
    assert_eq!(
        m.to().display,
        Some(&b"\"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7F\""[..])
    );
    assert_eq!(m.to().uri.user, uri.user);
    assert_eq!(
        m.from().display,
        Some(&b"token1~` token2'+_ token3*%!.-"[..])
    );
    assert_eq!(m.from().tag, Some(&b"_token~1'+`*%!-."[..]));
    assert_eq!(m.max_forwards(), Some(255));
    let ext = m
        .headers()
        .find(|h| h.name == HeaderName::Other && h.raw_name.starts_with(b"extension"))
        .unwrap();
    assert_eq!(ext.raw_name, b"extensionHeader-!.%*+_`'~");
    assert_eq!(ext.value, "\u{feff}大停電".as_bytes());
}

#[test]
fn esc02_percent_that_is_not_an_escape() {
    let buf = read("torture", "rfc4475_esc02");
    let m = parse(&buf);
    assert_eq!(m.method(), Some(Method::Other));
    assert_eq!(m.cseq().method_raw, b"RE%47IST%45R");
    assert_eq!(m.to().display, Some(&b"\"%Z%45\""[..]));
    assert_eq!(m.from().tag, Some(&b"f232jadfj23"[..]));
    // Not a REGISTER transaction by name, so Contact is not read.
    assert_eq!(m.contact_expires(), None);
    let contacts = m
        .headers()
        .filter(|h| h.name == HeaderName::Contact)
        .count();
    assert_eq!(contacts, 2, "C%6Fntact is not Contact");
}

#[test]
fn semiuri_semicolon_in_user_part() {
    let buf = read("torture", "rfc4475_semiuri");
    let m = parse(&buf);
    let uri = request_uri(&m);
    assert_eq!(uri.user, Some(&b"user;par=u%40example.net"[..]));
    assert_eq!((uri.host, uri.params), (&b"example.com"[..], &b""[..]));
    assert_eq!(m.to().uri.user, Some(&b"j_user"[..]));
    assert_eq!(m.content_length(), Some(0));
    let accept = m.headers().find(|h| h.raw_name == b"Accept").unwrap();
    assert!(accept.value.ends_with(b"message/sip, message/sipfrag"));
}

#[test]
fn unknown_schemes_are_opaque() {
    let buf = read("torture", "rfc4475_unkscm");
    let m = parse(&buf);
    let uri = request_uri(&m);
    assert_eq!(
        (uri.scheme, uri.user, uri.host, uri.port),
        (
            &b"nobodyKnowsThisScheme"[..],
            None,
            &b"totallyopaquecontent"[..],
            None
        )
    );
    assert!(!uri.is_sip());

    let buf = read("torture", "rfc4475_novelsc");
    let uri = request_uri(&parse(&buf));
    assert_eq!(
        (uri.scheme, uri.host),
        (&b"soap.beep"[..], &b"//198.18.0.103:3002"[..])
    );

    let buf = read("torture", "rfc4475_unksm2");
    let m = parse(&buf);
    assert_eq!(
        (m.to().uri.scheme, m.to().uri.host),
        (&b"isbn"[..], &b"2983792873"[..])
    );
    assert_eq!(
        (m.from().uri.scheme, m.from().uri.host),
        (&b"http"[..], &b"//www.example.com"[..])
    );
    assert_eq!(m.from().tag, Some(&b"3234233"[..]));
    assert_eq!(m.method(), Some(Method::Register));
    assert_eq!(m.contact_expires(), None);
}

#[test]
fn regescrt_headers_in_a_bracketed_contact_uri() {
    let buf = read("torture", "rfc4475_regescrt");
    let m = parse(&buf);
    assert_eq!(m.method(), Some(Method::Register));
    assert_eq!(m.contact_expires(), None);
    assert_eq!(m.cseq().seq, 14398234);
}

#[test]
fn fields_the_balancer_does_not_read_are_not_judged() {
    // baddate: a Date with a time zone RFC 3261 does not allow.
    let buf = read("torture", "rfc4475_baddate");
    let m = parse(&buf);
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(m.body().len(), m.content_length().unwrap());
}

#[test]
fn ipv6_references() {
    let buf = read("torture", "ipv6_invite");
    let m = parse(&buf);
    let uri = request_uri(&m);
    assert_eq!(
        (uri.user, uri.host, uri.port),
        (Some(&b"bob"[..]), &b"[2001:db8::20]"[..], Some(5062))
    );
    assert_eq!(uri.params, b";transport=udp");
    let v = m.via().unwrap();
    assert_eq!(
        (v.transport, v.host, v.port),
        (&b"UDP"[..], &b"[2001:db8::10]"[..], Some(5060))
    );
    assert_eq!(v.rport, Some(Some(5060)));
    assert_eq!(v.received, Some(&b"2001:db8::10"[..]));
    assert_eq!(v.branch, Some(&b"z9hG4bKv6a"[..]));
    assert_eq!(
        (m.from().uri.host, m.from().uri.port),
        (&b"[2001:db8::10]"[..], None)
    );
    assert_eq!(
        (m.to().uri.host, m.to().uri.port),
        (&b"[2001:db8::20]"[..], Some(5062))
    );
    assert_eq!(m.call_id(), b"v6-call-1@[2001:db8::10]");
}

#[test]
fn tel_uris() {
    let buf = read("torture", "tel_uris");
    let m = parse(&buf);
    let uri = request_uri(&m);
    assert_eq!(
        (uri.scheme, uri.user, uri.host),
        (&b"tel"[..], None, &b"+1-201-555-0123"[..])
    );
    assert_eq!(uri.params, b";phone-context=example.com");
    assert_eq!(m.from().uri.host, b"+12015550100");
    assert_eq!(m.to().display, Some(&b"\"Dest\""[..]));
    assert_eq!(m.to().uri.params, b";phone-context=example.com");
}
