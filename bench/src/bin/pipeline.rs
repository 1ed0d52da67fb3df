//! Per-packet cost of the balancer pipeline in process, no I/O (issue 7, part 2a).
//!
//!   cargo run --release -p bench --bin pipeline [-- DIALOGS [ROUNDS]]
//!   valgrind --tool=callgrind --collect-atstart=no --toggle-collect='pipeline::count::count_*' \
//!       pipeline count DIALOGS N
//!
//! Builds the services of `bench::CONFIG` (two ports, one farm of four backends, dnat,
//! Call-ID affinity) over a dialog table sized as the dataplane sizes it, and places
//! DIALOGS (default 1,000,000) confirmed dialogs by sending each one's INVITE and 200 OK
//! through `lb::process`. Then it times `process` on frames copied from a
//! prebuilt array (as the worker gets them in mbufs) for:
//!
//! - in-dialog requests: the ACK of every dialog, in order of creation (so the table is
//!   hit at random places),
//! - responses: the backend's 200 OK of every dialog (a retransmission: looked up and
//!   refreshed),
//! - new INVITEs: 200,000 Call-IDs the table does not hold (inserted; each round runs
//!   40 s of table time later, so the previous round's unanswered entries have expired
//!   and are reused as the dataplane would),
//!
//! and two references over the same frames, in the same run: the frame copy plus the
//! Ethernet/IPv4/UDP header checks (what any UDP forwarder does), and the frame copy
//! plus a `memchr` scan to the end of the SIP headers. Each round is one pass over all
//! frames; the best and median round are printed. `count` runs N packets of each kind,
//! untimed, in functions named for callgrind's `--toggle-collect`.

use bench::{ack, backend_of, from_backend, from_client, invite, ok_200, place_dialogs, Bed};
use siplb_core::lb::sim;
use siplb_core::lb::{process, Verdict, WorkerCtx};
use std::hint::black_box;
use std::time::Instant;

const NEW_INVITES: u32 = 200_000;
/// Table time (s) at which the dialogs are placed; confirmed ones live 7200 s.
const T0: u32 = 1000;

/// Frames of one kind and one length, back to back.
struct Frames {
    buf: Vec<u8>,
    len: usize,
    in_port: u8,
}

impl Frames {
    fn build(n: u32, in_port: u8, mut make: impl FnMut(u32) -> Vec<u8>) -> Frames {
        let first = make(0);
        let len = first.len();
        let mut buf = Vec::with_capacity(len * n as usize);
        buf.extend_from_slice(&first);
        for i in 1..n {
            let f = make(i);
            assert_eq!(f.len(), len, "frames of one kind have one length");
            buf.extend_from_slice(&f);
        }
        Frames { buf, len, in_port }
    }

    fn iter(&self) -> std::slice::ChunksExact<'_, u8> {
        self.buf.chunks_exact(self.len)
    }

    fn count(&self) -> usize {
        self.buf.len() / self.len
    }
}

/// One packet through the pipeline: copy into the "mbuf", then `process`.
#[inline(always)]
fn pipeline(
    bed: &Bed,
    t: &Tables,
    w: &mut WorkerCtx<'_>,
    mbuf: &mut [u8],
    f: &[u8],
    in_port: u8,
    now: u32,
) -> usize {
    let m = &mut mbuf[..f.len()];
    m.copy_from_slice(f);
    match process(&bed.svc, t, w, m, in_port, now) {
        Verdict::Forward(p) => 1 + usize::from(m[33]) + usize::from(p),
        _ => 0,
    }
}

type Tables<'a> = siplb_core::lb::Tables<'a>;

/// Reference 2: copy, then find every line end of the SIP header section.
#[inline(always)]
fn copy_and_line_scan(mbuf: &mut [u8], f: &[u8]) -> usize {
    let m = &mut mbuf[..f.len()];
    m.copy_from_slice(f);
    let sip = &m[42..];
    let (mut at, mut lines) = (0, 0);
    while let Some(nl) = memchr::memchr(b'\n', &sip[at..]) {
        lines += 1;
        at += nl + 1;
        if nl <= 1 {
            break;
        }
    }
    lines + at
}

/// Best and median ns per packet over `rounds` passes of `pass` (which returns the
/// number of packets it handled).
fn time(rounds: usize, mut pass: impl FnMut(usize) -> usize) -> (f64, f64) {
    pass(usize::MAX);
    let mut per: Vec<f64> = (0..rounds)
        .map(|r| {
            let t = Instant::now();
            let n = pass(r);
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    (per[0], per[rounds / 2])
}

fn row(kind: &str, bytes: usize, what: &str, (best, median): (f64, f64)) {
    println!(
        "{kind:<20} {bytes:>5}  {what:<32} {best:>9.1} {median:>9.1} {:>8.3} {:>8.3}",
        1e3 / best,
        1e3 / median
    );
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("count") {
        args.next();
        let dialogs = args
            .next()
            .map_or(1_000_000, |a| a.parse().expect("DIALOGS"));
        let n = args.next().map_or(100_000, |a| a.parse().expect("N"));
        count(dialogs, n);
        return;
    }
    let dialogs: u32 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("DIALOGS"));
    let rounds: usize = args.next().map_or(11, |a| a.parse().expect("ROUNDS"));

    println!(
        "pipeline: {dialogs} dialogs, {rounds} rounds, load average {} at start",
        bench::load_average()
    );
    let bed = Bed::new(dialogs as usize);
    let t0 = Instant::now();
    let backends = place_dialogs(&bed, 0, dialogs, T0);
    let placed = t0.elapsed();
    let t = bed.tables();
    let live = t.dialogs.count_live(T0);
    assert_eq!(live, dialogs as usize, "every dialog is in the table");
    println!(
        "placed {dialogs} dialogs (INVITE + 200 OK each) in {:.2} s; table {} slots ({} MiB), {live} live, load {:.3}",
        placed.as_secs_f64(),
        t.dialogs.flow().capacity(),
        (t.dialogs.flow().capacity() * bench::SLOT_BYTES) >> 20,
        live as f64 / t.dialogs.flow().capacity() as f64
    );
    println!(
        "\n{:<20} {:>5}  {:<32} {:>9} {:>9} {:>8} {:>8}",
        "packets", "bytes", "work", "best ns", "median ns", "Mpps", "Mpps med"
    );

    let mut w = sim::worker(&bed.counters);
    let mut mbuf = vec![0u8; 2048];
    let acks = Frames::build(dialogs, 0, |i| from_client(&ack(i)));
    let oks = Frames::build(dialogs, 1, |i| {
        from_backend(usize::from(backends[i as usize]), &ok_200(i))
    });
    let news = Frames::build(NEW_INVITES, 0, |i| from_client(&invite(dialogs + i)));
    let mut summary = Vec::new();
    for (kind, frames, fresh) in [
        ("ACK (in dialog)", &acks, false),
        ("200 OK (response)", &oks, false),
        ("INVITE (new dialog)", &news, true),
    ] {
        let bytes = frames.len;
        // New INVITEs: each round later than the unanswered entries of the last.
        let now = |r: usize| {
            if fresh && r != usize::MAX {
                T0 + 40 * (r as u32 + 2)
            } else if fresh {
                T0 + 40
            } else {
                T0
            }
        };
        let lb = time(rounds, |r| {
            let now = now(r);
            let mut sink = 0;
            for f in frames.iter() {
                sink += pipeline(&bed, &t, &mut w, &mut mbuf, f, frames.in_port, now);
            }
            assert!(sink >= frames.count(), "every packet forwarded");
            black_box(sink);
            frames.count()
        });
        let hdr = time(rounds, |_| {
            let sink: usize = frames
                .iter()
                .map(|f| bench::copy_and_headers(&mut mbuf, f))
                .sum();
            black_box(sink);
            frames.count()
        });
        let scan = time(rounds, |_| {
            let sink: usize = frames
                .iter()
                .map(|f| copy_and_line_scan(&mut mbuf, f))
                .sum();
            black_box(sink);
            frames.count()
        });
        row(kind, bytes, "siplb pipeline (process)", lb);
        row(kind, bytes, "ref: copy + Eth/IPv4/UDP checks", hdr);
        row(kind, bytes, "ref: copy + memchr line scan", scan);
        println!(
            "{kind:<20} {:>5}  ratio (median): {:.1}x copy+headers, {:.1}x copy+line scan\n",
            "",
            lb.1 / hdr.1,
            lb.1 / scan.1
        );
        summary.push((kind, lb, hdr, scan));
    }

    // Stickiness, untimed: every dialog's ACK still reaches its backend.
    for (i, f) in acks.iter().enumerate().step_by(997) {
        let mut m = f.to_vec();
        let v = process(&bed.svc, &t, &mut w, &mut m, 0, T0);
        assert_eq!(v, Verdict::Forward(1));
        assert_eq!(
            backend_of(&m),
            usize::from(backends[i]),
            "dialog {i} sticks"
        );
    }
    println!(
        "live dialogs at the end: {}; load average {} at end",
        t.dialogs.count_live(T0 + 40 * (rounds as u32 + 2)),
        bench::load_average()
    );
    // Machine-readable lines for bench/data/pipeline.csv (and the plots).
    for (kind, lb, hdr, scan) in summary {
        println!(
            "csv,{kind},{dialogs},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1}",
            lb.0, lb.1, hdr.0, hdr.1, scan.0, scan.1
        );
    }
}

/// `count DIALOGS N`: N packets of each kind through the pipeline, untimed, for
/// callgrind's instruction counts.
fn count(dialogs: u32, n: u32) {
    let bed = Bed::new(dialogs as usize);
    let backends = place_dialogs(&bed, 0, dialogs, T0);
    let t = bed.tables();
    let mut w = sim::worker(&bed.counters);
    let mut mbuf = vec![0u8; 2048];
    let n = n.min(dialogs);
    let acks = Frames::build(n, 0, |i| from_client(&ack(i)));
    let oks = Frames::build(n, 1, |i| {
        from_backend(usize::from(backends[i as usize]), &ok_200(i))
    });
    let news = Frames::build(n, 0, |i| from_client(&invite(dialogs + i)));

    #[inline(never)]
    fn count_ack(bed: &Bed, t: &Tables, w: &mut WorkerCtx<'_>, m: &mut [u8], fr: &Frames) -> usize {
        fr.iter().map(|f| pipeline(bed, t, w, m, f, 0, T0)).sum()
    }
    #[inline(never)]
    fn count_ok(bed: &Bed, t: &Tables, w: &mut WorkerCtx<'_>, m: &mut [u8], fr: &Frames) -> usize {
        fr.iter().map(|f| pipeline(bed, t, w, m, f, 1, T0)).sum()
    }
    #[inline(never)]
    fn count_invite(
        bed: &Bed,
        t: &Tables,
        w: &mut WorkerCtx<'_>,
        m: &mut [u8],
        fr: &Frames,
    ) -> usize {
        // As in the timed run: later than any unanswered INVITE's transaction timer.
        fr.iter()
            .map(|f| pipeline(bed, t, w, m, f, 0, T0 + 40))
            .sum()
    }
    #[inline(never)]
    fn count_ref_headers(m: &mut [u8], fr: &Frames) -> usize {
        fr.iter().map(|f| bench::copy_and_headers(m, f)).sum()
    }
    #[inline(never)]
    fn count_ref_scan(m: &mut [u8], fr: &Frames) -> usize {
        fr.iter().map(|f| copy_and_line_scan(m, f)).sum()
    }
    black_box(count_ack(&bed, &t, &mut w, &mut mbuf, &acks));
    black_box(count_ok(&bed, &t, &mut w, &mut mbuf, &oks));
    black_box(count_invite(&bed, &t, &mut w, &mut mbuf, &news));
    black_box(count_ref_headers(&mut mbuf, &acks));
    black_box(count_ref_scan(&mut mbuf, &acks));
    println!("count: {dialogs} dialogs, {n} packets of each kind");
}
