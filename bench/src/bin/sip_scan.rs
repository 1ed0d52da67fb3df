//! The SIP scanner against rsip on a typical INVITE with SDP (~600 bytes) and the
//! 200 OK to a REGISTER (~400 bytes), both from the scanner's test corpus; then the
//! light scan for steering (`SteerView::scan`) against the full parse on the in-dialog
//! messages it is for: an ACK, the 200 OK to an INVITE (with SDP) and a BYE.
//!
//!   cargo run --release -p bench --bin sip_scan [-- ROUNDS]
//!   valgrind --tool=callgrind --toggle-collect='*count_invite*' sip_scan count N
//!       # N parses of each message; the functions are count_invite, count_ok_200,
//!       # count_full_{ack,ok,bye} (full parse), count_steer_{ack,ok,bye} (light scan)
//!
//! A floor (a bare `memchr` line scan of the header section, no parsing) calibrates
//! the machine. Then three parsers per message: `siplb_core::sip::SipMessage::parse` (validates and
//! extracts every field the balancer uses); rsip's `SipMessage::try_from` (tokenises
//! the message into untyped headers, no field validated); and rsip parse + typed
//! extraction of the same fields as the scanner (the fair comparison). Each round
//! times a short batch (256 parses of our scanners, ~50 µs; 16 of rsip's), short
//! enough that most rounds run without the machine's other work cutting in; the best
//! and median of ROUNDS rounds (default 2001) are printed. Figures move with other load
//! on the machine: run it several times. The results are borrowed, not moved out of
//! their `Result`, as the balancer does (moving a `SipMessage` copies ~540 bytes).

use rsip::prelude::*;
use siplb_core::sip::{Limits, SipMessage, SteerView};
use std::hint::black_box;

const INVITE: &[u8] = include_bytes!("../../../siplb-core/tests/corpus/valid/invite_sdp.sip");
const OK_200: &[u8] = include_bytes!("../../../siplb-core/tests/corpus/valid/register_200_ok.sip");
const ACK: &[u8] = include_bytes!("../../../siplb-core/tests/corpus/valid/ack_2xx.sip");
const OK_INVITE: &[u8] =
    include_bytes!("../../../siplb-core/tests/corpus/valid/invite_200_ok_sdp.sip");
const BYE: &[u8] = include_bytes!("../../../siplb-core/tests/corpus/valid/bye.sip");

/// What each parser returns for the benchmark to keep: enough to stop the optimiser
/// from dropping the work.
fn scanner(buf: &[u8], limits: &Limits) -> usize {
    let parsed = SipMessage::parse(buf, limits);
    let m = parsed.as_ref().expect("corpus message parses");
    m.call_id().len()
        + m.via().map_or(0, |v| v.branch.map_or(0, <[u8]>::len))
        + m.to().uri.host.len()
        + m.cseq().seq as usize
        + m.contact_expires().unwrap_or(0) as usize
        + m.body_offset()
}

/// The light scan, keeping what steering reads.
fn steer(buf: &[u8], limits: &Limits) -> usize {
    let scanned = SteerView::scan(buf, limits);
    let v = scanned.as_ref().expect("corpus message scans");
    v.call_id().len() + v.to_tag().map_or(0, <[u8]>::len) + v.cseq().seq as usize
}

/// A floor, not a parser: find every line end of the header section with `memchr`
/// and nothing else (the "~31 ns per INVITE" experiment the issue quotes).
fn line_scan(buf: &[u8]) -> usize {
    let (mut at, mut lines) = (0, 0);
    while let Some(nl) = buf.get(at..).and_then(|r| memchr::memchr(b'\n', r)) {
        lines += 1;
        at += nl + 1;
        if nl <= 1 {
            break;
        }
    }
    lines + at
}

fn rsip_parse(buf: &[u8]) -> usize {
    let m = rsip::SipMessage::try_from(buf).expect("rsip parses");
    m.headers().iter().count() + m.body().len()
}

fn rsip_fields(buf: &[u8]) -> usize {
    let m = rsip::SipMessage::try_from(buf).expect("rsip parses");
    let via = m.via_header().and_then(|h| h.typed()).expect("Via");
    let from = m.from_header().and_then(|h| h.typed()).expect("From");
    let to = m.to_header().and_then(|h| h.typed()).expect("To");
    let cseq = m.cseq_header().and_then(|h| h.typed()).expect("CSeq");
    let call_id = m.call_id_header().expect("Call-ID").value().len();
    let max_forwards = m.max_forwards_header().map_or(0, |h| h.num().unwrap_or(0));
    let expires = m.expires_header().map_or(0, |h| h.seconds().unwrap_or(0));
    let contact = if cseq.method == rsip::Method::Register {
        m.contact_header()
            .and_then(|h| h.typed())
            .map_or(0, |c| c.expires().map_or(0, |e| e.to_string().len()))
    } else {
        0
    };
    let length = m.headers().iter().find_map(|h| match h {
        rsip::Header::ContentLength(l) => l.length().ok(),
        _ => None,
    });
    call_id
        + via.branch().map_or(0, |b| b.to_string().len())
        + from.tag().map_or(0, |t| t.to_string().len())
        + to.uri.host_with_port.to_string().len()
        + cseq.seq as usize
        + (max_forwards + expires) as usize
        + contact
        + length.unwrap_or(0) as usize
}

/// `count N`: parse each message N times, untimed, for instruction counts under
/// callgrind (`--toggle-collect` on the two `count_*` functions).
fn count(n: usize, limits: &Limits) {
    #[inline(never)]
    fn count_invite(n: usize, limits: &Limits) -> usize {
        (0..n).map(|_| scanner(black_box(INVITE), limits)).sum()
    }
    #[inline(never)]
    fn count_ok_200(n: usize, limits: &Limits) -> usize {
        (0..n).map(|_| scanner(black_box(OK_200), limits)).sum()
    }
    black_box(count_invite(n, limits));
    black_box(count_ok_200(n, limits));
    #[inline(never)]
    fn count_steer_ack(n: usize, limits: &Limits) -> usize {
        (0..n).map(|_| steer(black_box(ACK), limits)).sum()
    }
    #[inline(never)]
    fn count_steer_ok(n: usize, limits: &Limits) -> usize {
        (0..n).map(|_| steer(black_box(OK_INVITE), limits)).sum()
    }
    #[inline(never)]
    fn count_steer_bye(n: usize, limits: &Limits) -> usize {
        (0..n).map(|_| steer(black_box(BYE), limits)).sum()
    }
    black_box(count_steer_ack(n, limits));
    black_box(count_steer_ok(n, limits));
    black_box(count_steer_bye(n, limits));
    #[inline(never)]
    fn count_full_ack(n: usize, limits: &Limits) -> usize {
        (0..n).map(|_| scanner(black_box(ACK), limits)).sum()
    }
    #[inline(never)]
    fn count_full_ok(n: usize, limits: &Limits) -> usize {
        (0..n).map(|_| scanner(black_box(OK_INVITE), limits)).sum()
    }
    #[inline(never)]
    fn count_full_bye(n: usize, limits: &Limits) -> usize {
        (0..n).map(|_| scanner(black_box(BYE), limits)).sum()
    }
    black_box(count_full_ack(n, limits));
    black_box(count_full_ok(n, limits));
    black_box(count_full_bye(n, limits));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("count") {
        let n = args
            .next()
            .map_or(1000, |a| a.parse().expect("N is a number"));
        count(n, &Limits::default());
        return;
    }
    let rounds: usize = first.map_or(2001, |a| a.parse().expect("ROUNDS is a number"));
    let limits = Limits::default();
    println!(
        "{:<22} {:>5}  {:<26} {:>9} {:>9} {:>9} {:>7}",
        "message", "bytes", "parser", "best ns", "median ns", "Mmsg/s", "GB/s"
    );
    for (name, buf) in [("INVITE with SDP", INVITE), ("200 OK (REGISTER)", OK_200)] {
        let floor = bench::time_batches(rounds, 256, || line_scan(black_box(buf)));
        let scan = bench::time_batches(rounds, 256, || scanner(black_box(buf), &limits));
        let parse = bench::time_batches(rounds, 16, || rsip_parse(black_box(buf)));
        let fields = bench::time_batches(rounds, 16, || rsip_fields(black_box(buf)));
        for (parser, (best, median)) in [
            ("memchr line scan (floor)", floor),
            ("siplb scanner", scan),
            ("rsip parse", parse),
            ("rsip parse + same fields", fields),
        ] {
            println!(
                "{:<22} {:>5}  {:<26} {:>9.1} {:>9.1} {:>9.2} {:>7.2}",
                name,
                buf.len(),
                parser,
                best,
                median,
                1e3 / best,
                buf.len() as f64 / best
            );
        }
        println!(
            "{:<22} {:>5}  speed-up (median): {:.0}x rsip parse, {:.0}x rsip parse + same fields\n",
            name,
            "",
            parse.1 / scan.1,
            fields.1 / scan.1
        );
    }
    for (name, buf) in [
        ("ACK (in dialog)", ACK),
        ("200 OK (INVITE, SDP)", OK_INVITE),
        ("BYE", BYE),
    ] {
        let floor = bench::time_batches(rounds, 256, || line_scan(black_box(buf)));
        let light = bench::time_batches(rounds, 256, || steer(black_box(buf), &limits));
        let full = bench::time_batches(rounds, 256, || scanner(black_box(buf), &limits));
        for (parser, (best, median)) in [
            ("memchr line scan (floor)", floor),
            ("siplb light scan (steer)", light),
            ("siplb scanner", full),
        ] {
            println!(
                "{:<22} {:>5}  {:<26} {:>9.1} {:>9.1} {:>9.2} {:>7.2}",
                name,
                buf.len(),
                parser,
                best,
                median,
                1e3 / best,
                buf.len() as f64 / best
            );
        }
        println!(
            "{:<22} {:>5}  light scan (median): {:.0} % of the full parse\n",
            name,
            "",
            100.0 * light.1 / full.1
        );
    }
}
