//! What failover of new calls costs (issue 15 item 1), in process, same run:
//! the pipeline's farm (`bench::CONFIG`, four backends) without failover and with
//! `[farm.failover] tries = 3`.
//!
//! - a call's set-up on the balancer: the client's INVITE (~600 bytes with SDP: held,
//!   i.e. copied into the store, with failover) and the backend's 200 OK (which ends
//!   the hold), ns per pair;
//! - a failover: the INVITE, the backend's 503 turned into the ACK of it, the held
//!   INVITE rebuilt and placed on the next backend (`lb::process_resend`), and the next
//!   backend's 200, ns per call, against the plain set-up of the same run.
//!
//! Rounds alternate between the sides so both see the same machine load; medians of
//! rounds are compared.
//!
//!   cargo run --release -p bench --bin failover [-- CALLS [ROUNDS]]   (5000 11)

use bench::{backend_of, from_backend, from_client, invite, ok_200, Bed, CONFIG};
use siplb_core::lb::{process, process_resend, Verdict, WorkerCtx};
use std::hint::black_box;
use std::time::Instant;

const NOW: u32 = 1000;

fn failure_503(i: u32) -> Vec<u8> {
    String::from_utf8(ok_200(i))
        .unwrap()
        .replace("200 OK", "503 Service Unavailable")
        .into_bytes()
}

/// One round of `calls` set-ups numbered from `first`: INVITE, then the 200 of the
/// backend it reached (with `fail`: first that backend's 503, then the next one's 200).
/// Returns ns per call.
fn round(bed: &Bed, w: &mut WorkerCtx<'_>, first: u32, calls: u32, fail: bool) -> f64 {
    let t = bed.tables();
    let mut mbuf = vec![0u8; 8192];
    let mut resend = vec![0u8; 16 << 10];
    let invites: Vec<Vec<u8>> = (first..first + calls)
        .map(|i| from_client(&invite(i)))
        .collect();
    let start = Instant::now();
    for (k, f) in invites.iter().enumerate() {
        let i = first + k as u32;
        let m = &mut mbuf[..f.len()];
        m.copy_from_slice(f);
        assert_eq!(process(&bed.svc, &t, w, m, 0, NOW), Verdict::Forward(1));
        let mut b = backend_of(m);
        if fail {
            let r = from_backend(b, &failure_503(i));
            let m = &mut mbuf[..r.len()];
            m.copy_from_slice(&r);
            assert_eq!(
                process(&bed.svc, &t, w, m, 1, NOW),
                Verdict::Forward(1),
                "the ACK"
            );
            let (v, _) = process_resend(&bed.svc, &t, w, &mut resend, NOW).expect("a re-send");
            assert_eq!(v, Verdict::Forward(1));
            b = backend_of(&resend);
        }
        let r = from_backend(b, &ok_200(i));
        let m = &mut mbuf[..r.len()];
        m.copy_from_slice(&r);
        assert_eq!(process(&bed.svc, &t, w, m, 1, NOW), Verdict::Forward(0));
        black_box(&mbuf);
    }
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: u32 = args.next().map_or(5000, |a| a.parse().expect("CALLS"));
    let rounds: usize = args.next().map_or(11, |a| a.parse().expect("ROUNDS"));
    let on_cfg = format!("{CONFIG}[farm.failover]\ntries = 3\n");
    // A fresh dialog table per side, sized for every call of every round.
    let capacity = calls as usize * (rounds + 1) * 2;
    let off = Bed::new(capacity);
    let on = Bed::with_config(&on_cfg, capacity);
    let mut w_off = siplb_core::lb::sim::worker(&off.counters);
    let mut w_on = siplb_core::lb::sim::worker(&on.counters);
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    // Round 0 warms up; each round uses new Call-IDs (new dialogs).
    for r in 0..=rounds {
        let first = r as u32 * calls * 2;
        let x = round(&off, &mut w_off, first, calls, false);
        let y = round(&on, &mut w_on, first, calls, false);
        let z = round(&on, &mut w_on, first + calls, calls, true);
        if r > 0 {
            a.push(x);
            b.push(y);
            c.push(z);
        }
    }
    let (off_ns, on_ns, fail_ns) = (median(a), median(b), median(c));
    let held = on.tables().held.held();
    println!("failover cost, in process: {calls} calls a round, {rounds} rounds, medians");
    println!("  set-up (INVITE + 200), failover off : {off_ns:8.0} ns per call");
    println!(
        "  set-up (INVITE + 200), failover on  : {on_ns:8.0} ns per call ({:.3}x off: the INVITE held, the 200 ends it)",
        on_ns / off_ns
    );
    println!(
        "  a failover (INVITE, 503 -> ACK, re-send, 200): {fail_ns:8.0} ns per call ({:.3}x the set-up with failover on)",
        fail_ns / on_ns
    );
    println!("  requests still held at the end: {held}");
    println!("csv,{calls},{off_ns:.0},{on_ns:.0},{fail_ns:.0}");
}
