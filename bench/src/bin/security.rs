//! Per-packet cost of the security checks (issue 14 item 8), in process, same run:
//! the pipeline of `bench pipeline` with `[security]` off (no scanner list, no
//! buckets, no TCP flag rule: the checks that remain are the deny/allow lists, empty),
//! with the defaults (scanner User-Agents, bogus TCP flags; no buckets, so no ban
//! lookups), and with every check on (a deny list, the scanner User-Agents, token
//! buckets on every method class, bans, bogus TCP flags).
//!
//!   cargo run --release -p bench --bin security [-- DIALOGS [ROUNDS]]
//!   valgrind --tool=callgrind --collect-atstart=no --toggle-collect='security::count_*' \
//!       security count off|default|on|dnsbl N
//!
//! `dnsbl` (callgrind only): all on, plus DNSBL lookups with every source already
//! judged clean (a source that keeps calling), in a rates table twice as large (its
//! marks beside the buckets, at the same load).
//!
//! (`bench/security.sh` runs both and records them.)
//! Kinds of packets, each a pass over prebuilt frames copied into an "mbuf":
//! - ACK of a confirmed dialog (client → VIP): pays the ban lookup;
//! - 200 OK retransmission (backend → client): pays the trust note (a lookup);
//! - new INVITE from 2,000 sources (fits the simulation's 4,096-entry rates table):
//!   pays the ban lookup, the scanner check and a token from its bucket.
//!
//! Rounds alternate between the three so all see the same machine load; medians are
//! compared.

use bench::{ack, backend_of, from_backend, from_client, invite, ok_200, place_dialogs, Bed};
use siplb_core::lb::sim::{self, port_mac};
use siplb_core::lb::{process, Verdict, WorkerCtx};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

const T0: u32 = 1000;
const NEW_INVITES: u32 = 100_000;
const SOURCES: u32 = 2000;
const PER_SECOND: u32 = 50_000;

const OFF: &str =
    "[security]\nscanner_user_agents = []\ntcp_drop_bogus_flags = false\nban_overruns = 0\n";
const ON: &str = r#"[security]
deny = ["198.19.200.0/24", "198.19.201.7", "198.18.99.0/24"]
register = { rate = 1000000, burst = 65535 }
invite = { rate = 1000000, burst = 65535 }
options = { rate = 1000000, burst = 65535 }
other = { rate = 1000000, burst = 65535 }
tcp_syn = { rate = 1000, burst = 1000 }
"#;

fn frames(n: u32, make: impl Fn(u32) -> Vec<u8>) -> (Vec<u8>, usize) {
    let first = make(0);
    let len = first.len();
    let mut buf = Vec::with_capacity(len * n as usize);
    for i in 0..n {
        let f = make(i);
        assert_eq!(f.len(), len);
        buf.extend_from_slice(&f);
    }
    (buf, len)
}

/// One pass: ns per packet.
fn pass(
    bed: &Bed,
    w: &mut WorkerCtx<'_>,
    mbuf: &mut [u8],
    fr: &(Vec<u8>, usize),
    port: u8,
    now: u32,
) -> f64 {
    let t = bed.tables();
    let start = Instant::now();
    let mut sink = 0usize;
    for f in fr.0.chunks_exact(fr.1) {
        let m = &mut mbuf[..f.len()];
        m.copy_from_slice(f);
        if let Verdict::Forward(p) = process(&bed.svc, &t, w, m, port, now) {
            sink += 1 + usize::from(p);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / (fr.0.len() / fr.1) as f64;
    assert!(sink >= fr.0.len() / fr.1, "every packet forwarded");
    black_box(sink);
    ns
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn config(side: &str) -> String {
    match side {
        "off" => OFF.into(),
        "default" => String::new(),
        "on" => ON.into(),
        // Everything on and DNSBL lookups (callgrind only, `count`): every source
        // already judged clean, the steady state of a source that keeps calling.
        "dnsbl" => format!("{ON}dnsbl = [\"bl.test\"]\n"),
        _ => panic!("side: off, default, on or dnsbl"),
    }
}

/// The frames of each kind and the dialogs they belong to, placed in `bed`.
struct Kinds {
    acks: (Vec<u8>, usize),
    oks: (Vec<u8>, usize),
    news: (Vec<u8>, usize),
    /// Table time after the placement.
    t1: u32,
}

fn kinds(bed: &Bed, dialogs: u32, new_invites: u32) -> (Kinds, Vec<u8>) {
    // One second per 50,000 dialogs: the caller's INVITE bucket holds 65,535.
    let backends: Vec<u8> = (0..dialogs.div_ceil(PER_SECOND))
        .flat_map(|c| {
            let first = c * PER_SECOND;
            place_dialogs(bed, first, PER_SECOND.min(dialogs - first), T0 + c)
        })
        .collect();
    let k = Kinds {
        acks: frames(dialogs, |i| from_client(&ack(i))),
        oks: frames(dialogs, |i| {
            from_backend(usize::from(backends[i as usize]), &ok_200(i))
        }),
        news: frames(new_invites, |i| {
            let s = i % SOURCES;
            let src = Ipv4Addr::new(198, 19, (s >> 8) as u8, s as u8);
            sim::udp_frame(
                port_mac(0),
                (src, 5060),
                (bench::VIP, 5060),
                &invite(dialogs + i),
            )
        }),
        t1: T0 + dialogs.div_ceil(PER_SECOND),
    };
    (k, backends)
}

/// `count SIDE N`: N dialogs, and N packets of each kind, untimed, in functions
/// named for callgrind's `--toggle-collect`.
fn count(side: &str, n: u32) {
    let dialogs = n;
    let mut bed = Bed::with_config(
        &format!("{}{}", config(side), bench::CONFIG),
        dialogs as usize,
    );
    if side == "dnsbl" {
        // A DNSBL mark per source beside its bucket: twice the slots, the same load.
        bed.mem.resize_rates(2 << 12);
    }
    let (k, _) = kinds(&bed, dialogs, n);
    let t = bed.tables();
    if side == "dnsbl" {
        for s in 0..SOURCES {
            let src = Ipv4Addr::new(198, 19, (s >> 8) as u8, s as u8);
            siplb_core::lb::security::dnsbl::judge(&t.rates, src, false, 3600, 0, T0)
                .expect("room in the rates table");
        }
    }
    let mut w = sim::worker(&bed.counters);
    let mut mbuf = vec![0u8; 2048];
    #[inline(never)]
    fn run_packets(
        bed: &Bed,
        t: &siplb_core::lb::Tables<'_>,
        w: &mut WorkerCtx<'_>,
        m: &mut [u8],
        fr: &(Vec<u8>, usize),
        port: u8,
        now: u32,
    ) -> usize {
        fr.0.chunks_exact(fr.1)
            .map(|f| {
                let m = &mut m[..f.len()];
                m.copy_from_slice(f);
                usize::from(matches!(
                    process(&bed.svc, t, w, m, port, now),
                    Verdict::Forward(_)
                ))
            })
            .sum()
    }
    #[inline(never)]
    fn count_ack(
        bed: &Bed,
        t: &siplb_core::lb::Tables<'_>,
        w: &mut WorkerCtx<'_>,
        m: &mut [u8],
        k: &Kinds,
    ) -> usize {
        run_packets(bed, t, w, m, &k.acks, 0, k.t1)
    }
    #[inline(never)]
    fn count_ok(
        bed: &Bed,
        t: &siplb_core::lb::Tables<'_>,
        w: &mut WorkerCtx<'_>,
        m: &mut [u8],
        k: &Kinds,
    ) -> usize {
        run_packets(bed, t, w, m, &k.oks, 1, k.t1)
    }
    #[inline(never)]
    fn count_invite(
        bed: &Bed,
        t: &siplb_core::lb::Tables<'_>,
        w: &mut WorkerCtx<'_>,
        m: &mut [u8],
        k: &Kinds,
    ) -> usize {
        run_packets(bed, t, w, m, &k.news, 0, k.t1 + 40)
    }
    let forwarded = [
        count_ack(&bed, &t, &mut w, &mut mbuf, &k),
        count_ok(&bed, &t, &mut w, &mut mbuf, &k),
        count_invite(&bed, &t, &mut w, &mut mbuf, &k),
    ];
    assert!(forwarded.iter().all(|f| *f == n as usize), "{forwarded:?}");
    println!("count: {side}, {n} dialogs, {n} packets of each kind");
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("count") {
        args.next();
        let side = args.next().expect("SIDE");
        let n = args.next().map_or(20_000, |a| a.parse().expect("N"));
        count(&side, n);
        return;
    }
    let dialogs: u32 = args.next().map_or(200_000, |a| a.parse().expect("DIALOGS"));
    let rounds: usize = args.next().map_or(11, |a| a.parse().expect("ROUNDS"));
    println!(
        "security: {dialogs} dialogs, {rounds} rounds per side, load average {} at start",
        bench::load_average()
    );
    let beds = [OFF, "", ON]
        .map(|sec| Bed::with_config(&format!("{sec}{}", bench::CONFIG), dialogs as usize));
    let placed: Vec<(Kinds, Vec<u8>)> = beds
        .iter()
        .map(|b| kinds(b, dialogs, NEW_INVITES))
        .collect();
    let backends: Vec<&Vec<u8>> = placed.iter().map(|(_, b)| b).collect();
    assert!(
        backends.iter().all(|b| *b == backends[0]),
        "the same placement every way"
    );
    let (k, t1) = (&placed[0].0, placed[0].0.t1);
    let (acks, oks, news) = (&k.acks, &k.oks, &k.news);
    let mut mbuf = vec![0u8; 2048];
    println!(
        "\n{:<22} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "packets (median ns)", "off", "default", "all on", "on - off", "def/off", "on/off"
    );
    let mut csv = Vec::new();
    for (kind, fr, port, fresh) in [
        ("ACK (in dialog)", acks, 0u8, false),
        ("200 OK (response)", oks, 1, false),
        ("INVITE (new dialog)", news, 0, true),
    ] {
        let mut ns: [Vec<f64>; 3] = Default::default();
        let mut ws: Vec<WorkerCtx<'_>> = beds.iter().map(|b| sim::worker(&b.counters)).collect();
        for r in 0..=rounds {
            // New INVITEs: each round later than the last round's unanswered entries.
            let now = if fresh { t1 + 40 * (r as u32 + 1) } else { t1 };
            for (side, bed) in beds.iter().enumerate() {
                let v = pass(bed, &mut ws[side], &mut mbuf, fr, port, now);
                if r > 0 {
                    ns[side].push(v);
                }
            }
        }
        let [off, def, on] = ns.map(median);
        println!(
            "{kind:<22} {off:>9.1} {def:>9.1} {on:>9.1} {:>9.1} {:>8.3} {:>8.3}",
            on - off,
            def / off,
            on / off
        );
        csv.push(format!(
            "csv,{kind},{dialogs},{off:.1},{def:.1},{on:.1},{:.3},{:.3}",
            def / off,
            on / off
        ));
    }
    // Placement is unchanged by the checks: every ACK still reaches its backend.
    let t = beds[2].tables();
    let mut w = sim::worker(&beds[2].counters);
    for (i, f) in acks.0.chunks_exact(acks.1).enumerate().step_by(997) {
        let mut m = f.to_vec();
        assert_eq!(
            process(&beds[2].svc, &t, &mut w, &mut m, 0, t1),
            Verdict::Forward(1)
        );
        assert_eq!(backend_of(&m), usize::from(backends[2][i]));
    }
    println!("load average {} at end", bench::load_average());
    for l in csv {
        println!("{l}");
    }
}
