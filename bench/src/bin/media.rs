//! Per-packet cost of RTP through the media table, in process, no I/O (issue 12,
//! item 6).
//!
//!   cargo run --release -p bench --bin media [-- MAPPINGS [ROUNDS [FRAMES]]]
//!
//! Configures 64 `snat` farms (the most a configuration holds), each with its VIP, one
//! SNAT address and `media_ports = "32768-65535"`: 128 pools of 16,384 pairs, laid out
//! from the configuration as the dataplane does. Creates MAPPINGS (default 1,000,000)
//! mappings through `MediaTable::announce` (the client's offer and the backend's
//! answer), and prints bytes per mapping. Then it times, over FRAMES (default 262,144)
//! prebuilt 200-byte RTP frames of mappings picked at random (so the table is hit at
//! random places, as by many calls), per frame:
//!
//! - `lb::process`: the dataplane's own per-packet entry (Ethernet, the IPv4 checks
//!   into a `Flow`, VIP or own address, `media_in`: forward, NAT rewrite, next hop),
//!   on a copy of the frame, as the worker runs it;
//! - media path: copy into the "mbuf", the Ethernet/IPv4/UDP checks, `forward`
//!   (lookup, source check, deadline refresh, counters) and the NAT rewrite (both
//!   addresses and ports, TTL, incremental IPv4 and UDP checksums),
//! - `forward` alone, from addresses parsed beforehand,
//! - the reference in the same run: the copy plus the Ethernet/IPv4/UDP checks (what
//!   any UDP forwarder does), as `pipeline` measures it,
//!
//! in both directions (client → VIP leg, backend → SNAT leg). Each round is one pass
//! over all frames; the best and median round are printed. Figures, no asserts on
//! time: the machine is shared.

use siplb_core::alg::Mapped;
use siplb_core::lb::services::Services;
use siplb_core::lb::sim::{self, host_mac, port_mac, SimMemory};
use siplb_core::lb::{process, Verdict};
use siplb_core::table::media::{
    Announce, Leg, MediaMemory, MediaTable, Placement, Side, MAX_STREAMS,
};
use siplb_core::wire::ethernet::{self, EthernetFrame};
use siplb_core::wire::ipv4::Ipv4Packet;
use siplb_core::wire::udp::UdpPacket;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

/// Table time (s); mappings idle out after `TIMEOUT` s, never during the run.
const T0: u32 = 1000;
const TIMEOUT: u16 = 60;
/// Farms, each with a VIP and a SNAT address.
const ADDRS: u32 = 64;
const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// Ethernet 14 + IPv4 20 + UDP 8 + RTP 12 + 146 bytes of audio.
const FRAME: usize = 200;

fn vip(j: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 2, 1 + j as u8)
}

fn snat(j: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 3, 1 + j as u8)
}

/// The farms: clients (198.19.0.0/16) beyond a gateway of the front port, relays on the
/// back port.
fn config() -> String {
    let mut c = String::from(
        "[[port]]\nname='front'\naddress='198.18.0.1/24'\ngateway='198.18.0.254'\n[[port]]\nname='back'\naddress='198.18.1.1/24'\n",
    );
    for j in 0..ADDRS {
        c += &format!(
            "[[farm]]\nname='f{j}'\nvip='{}'\nnat='snat'\nsnat_address='{}'\nmedia_ports='32768-65535'\nmedia_timeout={TIMEOUT}\nbackends=[{{address='198.18.1.11'}}]\n",
            vip(j),
            snat(j)
        );
    }
    c
}

/// The endpoints of mapping `i`: a client behind the VIP side, a media relay behind
/// the farm.
fn client(i: u32) -> SocketAddrV4 {
    // 198.19.0.0/16 (test addresses), 65,536 of them, each with up to 16 even ports.
    let addr = Ipv4Addr::from(0xc613_0000 | (i & 0xffff));
    SocketAddrV4::new(addr, 4000 + 2 * (i >> 16) as u16)
}

fn relay(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(198, 18, 1, 11 + (i % 4) as u8),
        20000 + 2 * (i % 10000) as u16,
    )
}

fn call(i: u32) -> u64 {
    siplb_core::hash::hash64(&i.to_le_bytes())
}

/// An RTP frame with a filled UDP checksum, so the rewrite updates it.
fn rtp_frame(from: SocketAddrV4, to: SocketAddrV4, seq: u16, port: u8) -> Vec<u8> {
    let mut payload = vec![0xd5u8; FRAME - 42];
    payload[..4].copy_from_slice(&[0x80, 0x00, (seq >> 8) as u8, seq as u8]);
    let mut f = sim::udp_frame(
        port_mac(port),
        (*from.ip(), from.port()),
        (*to.ip(), to.port()),
        &payload,
    );
    UdpPacket::new_unchecked(&mut f[34..]).fill_checksum(*from.ip(), *to.ip());
    assert_eq!(f.len(), FRAME);
    f
}

/// Creates `mappings` mappings (an offer from the client, an answer from the relay,
/// spread over the farms' pools); returns, for each, where the client and the relay
/// send (the client leg, the backend leg).
fn map_all(t: &MediaTable, mappings: u32) -> Vec<(Mapped, Mapped)> {
    (0..mappings)
        .map(|i| {
            let j = i % ADDRS;
            let place = Placement {
                farm: j as u16,
                client_pool: t.pool(vip(j), 32768).expect("VIP pool"),
                backend_pool: t.pool(snat(j), 32768).expect("SNAT pool"),
                timeout: TIMEOUT,
            };
            let ann = |from, e: SocketAddrV4| Announce {
                call: call(i),
                stream: (i % MAX_STREAMS as u32) as u8,
                from,
                rtp: e,
                rtcp: SocketAddrV4::new(*e.ip(), e.port() + 1),
            };
            let to_backend = t.announce(&place, &ann(Side::Client, client(i)), T0);
            let to_client = t.announce(&place, &ann(Side::Backend, relay(i)), T0);
            (
                to_client.expect("mapping created"),
                to_backend.expect("mapping created"),
            )
        })
        .collect()
}

/// Clients are behind the front port (0), relays on the back port (1).
fn in_port(dir: Side) -> u8 {
    u8::from(dir == Side::Backend)
}

/// The media path for one frame: copy, checks, table, NAT rewrite.
#[inline(always)]
fn media_path(t: &MediaTable, mbuf: &mut [u8], f: &[u8], now: u32) -> usize {
    let m = &mut mbuf[..f.len()];
    m.copy_from_slice(f);
    let (src, dst, len) = {
        let Ok(eth) = EthernetFrame::new_checked(&m[..]) else {
            return 0;
        };
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return 0;
        };
        if siplb_core::wire::checksum::checksum(ip.header()) != 0 {
            return 0;
        }
        let Ok(u) = UdpPacket::new_checked(ip.payload()) else {
            return 0;
        };
        (
            SocketAddrV4::new(ip.src(), u.src_port()),
            SocketAddrV4::new(ip.dst(), u.dst_port()),
            u.len() as u32,
        )
    };
    let Ok(nat) = t.forward(dst, src, len, now) else {
        return 0;
    };
    let l4 = {
        let mut ip = Ipv4Packet::new_unchecked(&mut m[ethernet::HEADER_LEN..]);
        if !ip.decrement_ttl() {
            return 0;
        }
        ip.set_src(*nat.src.ip());
        ip.set_dst(*nat.dst.ip());
        ethernet::HEADER_LEN + ip.header_len()
    };
    let mut u = UdpPacket::new_unchecked(&mut m[l4..]);
    u.pseudo_addr_changed(*src.ip(), *nat.src.ip());
    u.set_src_port(nat.src.port());
    u.pseudo_addr_changed(*dst.ip(), *nat.dst.ip());
    u.set_dst_port(nat.dst.port());
    1 + usize::from(m[29])
}

/// Prefetches a leg's line.
#[inline(always)]
fn prefetch(leg: &Leg) {
    // SAFETY: a prefetch has no architectural effect and never faults; the address is
    // that of a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (leg as *const Leg).cast(),
        )
    };
}

/// How far ahead `process`'s runs prefetch media legs (as `dataplane/src/worker.rs`).
const LEG_AHEAD: usize = 1;

/// Frames per burst, as the worker receives them.
const BURST: usize = 32;

/// A burst through the media path, as a worker would run it: first each frame's leg
/// is found from its destination (fixed offsets: IPv4 without options) and
/// prefetched, then the frames are processed, so the DRAM accesses overlap.
#[inline(always)]
fn media_burst(t: &MediaTable, mbuf: &mut [u8], burst: &[u8], now: u32) -> usize {
    for f in burst.chunks_exact(FRAME) {
        let to = SocketAddrV4::new(
            Ipv4Addr::new(f[30], f[31], f[32], f[33]),
            u16::from_be_bytes([f[36], f[37]]),
        );
        if let Some(leg) = t.leg_for(to) {
            prefetch(leg);
        }
    }
    burst
        .chunks_exact(FRAME)
        .map(|f| media_path(t, mbuf, f, now))
        .sum()
}

/// Best and median ns per packet over `rounds` passes (after one warm-up pass).
fn time(rounds: usize, mut pass: impl FnMut() -> usize) -> (f64, f64) {
    pass();
    let mut per: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let n = pass();
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    (per[0], per[rounds / 2])
}

fn row(kind: &str, what: &str, (best, median): (f64, f64)) {
    println!(
        "{kind:<22} {what:<40} {best:>9.1} {median:>9.1} {:>8.2}",
        1e3 / median
    );
}

/// A new INVITE with SDP through `lb::process` (the pipeline's INVITE, a new dialog
/// each), with the farm's ALG off, with the ALG on headers only (`media = false`), and
/// with the ALG relaying media (the SDP rewritten, a mapping created): same run,
/// fresh tables each round (outside the timing).
fn invite_cost(rounds: usize) {
    const N: u32 = 10_000;
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| bench::from_client(&bench::invite(i)))
        .collect();
    let variants = [
        ("alg = false", "alg = false"),
        ("ALG, headers only", "alg = true\nmedia = false"),
        (
            "ALG + media (SDP, mapping)",
            "alg = true\nmedia_ports = \"10000-65535\"",
        ),
    ];
    println!(
        "\n{:<22} {:<40} {:>9} {:>9} {:>8}",
        "INVITE + SDP, 612 B", "farm", "best ns", "median ns", "Mpps med"
    );
    let mut med = Vec::new();
    for (name, alg) in variants {
        let cfg = bench::CONFIG.replace("alg = false", alg);
        let svc = sim::services(&cfg);
        let counters: Box<siplb_core::lb::counters::WorkerCounters> = Box::default();
        let mut per = Vec::new();
        for _ in 0..=rounds {
            let mem = SimMemory::new(bench::dialog_slots(N as usize)).with_media(&cfg);
            let t = mem.tables();
            t.neighbours
                .learn(bench::CLIENT, host_mac(bench::CLIENT), 0, 1);
            for b in 0..bench::BACKENDS {
                t.neighbours
                    .learn(bench::backend(b), host_mac(bench::backend(b)), 1, 1);
            }
            let mut w = sim::worker(&counters);
            let mut mbuf = vec![0u8; 2048];
            let start = Instant::now();
            let mut sent = 0usize;
            for f in &frames {
                mbuf[..f.len()].copy_from_slice(f);
                let v = siplb_core::lb::process_in(&svc, &t, &mut w, &mut mbuf, f.len(), 0, T0);
                sent += usize::from(matches!(v, Verdict::Forward(_)));
            }
            per.push(start.elapsed().as_nanos() as f64 / f64::from(N));
            assert_eq!(sent, N as usize, "{name}: every INVITE forwarded");
            if alg.contains("media_ports") {
                assert_eq!(t.media.count_live(), N as usize, "one mapping per INVITE");
            }
        }
        per.remove(0); // warm-up
        per.sort_by(f64::total_cmp);
        let (best, median) = (per[0], per[per.len() / 2]);
        row("INVITE (new dialog)", name, (best, median));
        med.push(median);
    }
    println!(
        "{:<22} ratio (median): ALG + media {:.2}x the ALG off, {:.2}x headers only",
        "INVITE (new dialog)",
        med[2] / med[0],
        med[2] / med[1]
    );
}

/// `count MAPPINGS N`: N RTP frames each way through `lb::process`, N new INVITEs with
/// SDP through it with the ALG off, on headers only, and relaying media, and N copies
/// with the Ethernet/IPv4/UDP checks (the reference), untimed, for callgrind's
/// instruction counts:
///
///   valgrind --tool=callgrind --collect-atstart=no --toggle-collect='media::count::count_*' \
///       target/release/media count 10000 20000
mod count {
    use super::*;
    use siplb_core::lb::{Tables, WorkerCtx};

    /// One named function per kind of packet, so callgrind counts each apart: frames
    /// in on `port`; `tag` keeps the bodies distinct (identical ones are merged).
    macro_rules! counted {
        ($($name:ident: port $port:expr, tag $tag:expr;)*) => {$(
            #[inline(never)]
            pub fn $name(
                svc: &Services,
                t: &Tables,
                w: &mut WorkerCtx,
                m: &mut [u8],
                fr: &[Vec<u8>],
            ) -> usize {
                run(svc, t, w, m, fr, $port, $tag)
            }
        )*};
    }

    counted! {
        count_rtp_client: port 0, tag 1;
        count_rtp_backend: port 1, tag 2;
        count_invite_alg_off: port 0, tag 3;
        count_invite_headers: port 0, tag 4;
        count_invite_media: port 0, tag 5;
    }

    #[inline(never)]
    pub fn count_ref_headers(m: &mut [u8], fr: &[Vec<u8>]) -> usize {
        fr.iter().map(|f| bench::copy_and_headers(m, f)).sum()
    }

    /// `tag` keeps the count functions' bodies apart (identical ones are merged).
    fn run(
        svc: &Services,
        t: &Tables,
        w: &mut WorkerCtx,
        m: &mut [u8],
        fr: &[Vec<u8>],
        port: u8,
        tag: usize,
    ) -> usize {
        let mut n = black_box(tag) - tag;
        for f in fr {
            m[..f.len()].copy_from_slice(f);
            let v = siplb_core::lb::process_in(svc, t, w, m, f.len(), port, T0);
            n += usize::from(matches!(v, Verdict::Forward(_)));
        }
        assert_eq!(n, fr.len(), "every frame forwarded");
        n
    }

    pub fn main(mappings: u32, n: u32) {
        let cfg = config();
        let svc = sim::services(&cfg);
        let mem = SimMemory::new(1 << 10).with_media(&cfg);
        let t = mem.tables();
        for ip in [GATEWAY, Ipv4Addr::new(198, 18, 1, 11)]
            .into_iter()
            .chain((0..4).map(|r| *relay(r).ip()))
        {
            t.neighbours
                .learn(ip, host_mac(ip), u8::from(ip.octets()[2] == 1), T0);
        }
        let legs = map_all(&t.media, mappings);
        let pick = |k: u32| ((u64::from(k) * 2_654_435_761) % u64::from(mappings)) as usize;
        let rtp = |dir: Side| -> Vec<Vec<u8>> {
            (0..n)
                .map(|k| {
                    let i = pick(k);
                    let (to_c, to_b) = legs[i];
                    let (from, to) = match dir {
                        Side::Client => (client(i as u32), SocketAddrV4::new(to_c.addr, to_c.port)),
                        Side::Backend => (relay(i as u32), SocketAddrV4::new(to_b.addr, to_b.port)),
                    };
                    rtp_frame(from, to, k as u16, in_port(dir))
                })
                .collect()
        };
        let counters: Box<siplb_core::lb::counters::WorkerCounters> = Box::default();
        let mut w = sim::worker(&counters);
        let mut m = vec![0u8; 4096];
        let client_frames = rtp(Side::Client);
        let backend_frames = rtp(Side::Backend);
        count_rtp_client(&svc, &t, &mut w, &mut m, &client_frames);
        count_rtp_backend(&svc, &t, &mut w, &mut m, &backend_frames);
        count_ref_headers(&mut m, &client_frames);
        let invites: Vec<Vec<u8>> = (0..n)
            .map(|i| bench::from_client(&bench::invite(i)))
            .collect();
        for (alg, f) in [
            (
                "alg = false",
                count_invite_alg_off
                    as fn(&Services, &Tables, &mut WorkerCtx, &mut [u8], &[Vec<u8>]) -> usize,
            ),
            ("alg = true\nmedia = false", count_invite_headers),
            (
                "alg = true\nmedia_ports = \"10000-65535\"",
                count_invite_media,
            ),
        ] {
            let cfg = bench::CONFIG.replace("alg = false", alg);
            let svc = sim::services(&cfg);
            let mem = SimMemory::new(bench::dialog_slots(n as usize)).with_media(&cfg);
            let t = mem.tables();
            t.neighbours
                .learn(bench::CLIENT, host_mac(bench::CLIENT), 0, 1);
            for b in 0..bench::BACKENDS {
                t.neighbours
                    .learn(bench::backend(b), host_mac(bench::backend(b)), 1, 1);
            }
            let mut w = sim::worker(&counters);
            f(&svc, &t, &mut w, &mut m, &invites);
        }
        println!("counted {n} frames of each kind");
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("count") {
        args.next();
        let mappings = args.next().map_or(10_000, |a| a.parse().expect("MAPPINGS"));
        let n = args.next().map_or(20_000, |a| a.parse().expect("N"));
        count::main(mappings, n);
        return;
    }
    let mappings: u32 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("MAPPINGS"));
    let rounds: usize = args.next().map_or(11, |a| a.parse().expect("ROUNDS"));
    let frames: u32 = args.next().map_or(1 << 18, |a| a.parse().expect("FRAMES"));
    println!(
        "media: {mappings} mappings, {frames} frames of {FRAME} bytes, {rounds} rounds, load average {} at start",
        bench::load_average()
    );

    let cfg = config();
    let svc = sim::services(&cfg);
    let sim_mem = SimMemory::new(1 << 10).with_media(&cfg);
    let tables = sim_mem.tables();
    for ip in [
        GATEWAY,
        Ipv4Addr::new(198, 18, 1, 11),
        Ipv4Addr::new(198, 18, 1, 12),
    ]
    .into_iter()
    .chain((0..4).map(|r| *relay(r).ip()))
    {
        let port = u8::from(ip.octets()[2] == 1);
        tables.neighbours.learn(ip, host_mac(ip), port, T0);
    }
    let mem: &MediaMemory = sim_mem.media_memory();
    let t = tables.media;
    let start = Instant::now();
    let legs = map_all(&t, mappings);
    let created = start.elapsed();
    let live = t.count_live();
    assert_eq!(live, mappings as usize, "every mapping is live");
    println!(
        "created {mappings} mappings (offer + answer each) in {:.2} s, {:.0} ns per mapping",
        created.as_secs_f64(),
        created.as_nanos() as f64 / f64::from(mappings)
    );
    println!(
        "memory: {} bytes ({} MiB) for pools of {} mappings: {:.1} bytes per mapping live, {:.1} per mapping at full pools",
        mem.bytes(),
        mem.bytes() >> 20,
        mem.capacity(),
        mem.bytes() as f64 / f64::from(mappings),
        mem.bytes() as f64 / mem.capacity() as f64
    );

    // Mappings in a random order (a multiplicative permutation), frames back to back.
    let pick = |k: u32| ((u64::from(k) * 2_654_435_761) % u64::from(mappings)) as u32;
    let build = |dir: Side| -> (Vec<u8>, Vec<(SocketAddrV4, SocketAddrV4)>) {
        let mut buf = Vec::with_capacity(frames as usize * FRAME);
        let mut addrs = Vec::with_capacity(frames as usize);
        for k in 0..frames {
            let i = pick(k);
            let (to_c, to_b) = legs[i as usize];
            let (from, to) = match dir {
                Side::Client => (client(i), SocketAddrV4::new(to_c.addr, to_c.port)),
                Side::Backend => (relay(i), SocketAddrV4::new(to_b.addr, to_b.port)),
            };
            buf.extend_from_slice(&rtp_frame(from, to, k as u16, in_port(dir)));
            addrs.push((from, to));
        }
        (buf, addrs)
    };
    println!(
        "\n{:<22} {:<40} {:>9} {:>9} {:>8}",
        "RTP, 200 B", "work", "best ns", "median ns", "Mpps med"
    );
    let mut mbuf = vec![0u8; 2048];
    let counters: Box<siplb_core::lb::counters::WorkerCounters> = Box::default();
    let mut w = sim::worker(&counters);
    let mut summary = Vec::new();
    for (kind, dir) in [
        ("client -> VIP leg", Side::Client),
        ("backend -> SNAT leg", Side::Backend),
    ] {
        let (buf, addrs) = build(dir);
        let media = time(rounds, || {
            let sink: usize = buf
                .chunks_exact(FRAME)
                .map(|f| media_path(&t, &mut mbuf, f, T0))
                .sum();
            assert!(sink >= frames as usize, "every frame forwarded");
            black_box(sink);
            frames as usize
        });
        let dispatch = time(rounds, || {
            let sink: usize = buf
                .chunks_exact(FRAME)
                .map(|f| {
                    let m = &mut mbuf[..FRAME];
                    m.copy_from_slice(f);
                    let v = process(&svc, &tables, &mut w, m, in_port(dir), T0);
                    usize::from(matches!(v, Verdict::Forward(_)))
                })
                .sum();
            assert_eq!(sink, frames as usize, "every frame forwarded by process");
            black_box(sink);
            frames as usize
        });
        // As the worker runs a burst: the media legs of the first frames, then of the
        // frame LEG_AHEAD on, are prefetched (`lb::media_leg`) while this one goes
        // through `process`.
        let dispatch_ahead = time(rounds, || {
            let frames_of = |b: &[u8]| b.chunks_exact(FRAME).count();
            let mut sink = 0;
            for b in buf.chunks(FRAME * BURST) {
                for f in b.chunks_exact(FRAME).take(LEG_AHEAD) {
                    if let Some(leg) = siplb_core::lb::media_leg(&tables, f) {
                        prefetch(leg);
                    }
                }
                for i in 0..frames_of(b) {
                    if let Some(next) = b.get((i + LEG_AHEAD) * FRAME..(i + LEG_AHEAD + 1) * FRAME)
                    {
                        if let Some(leg) = siplb_core::lb::media_leg(&tables, next) {
                            prefetch(leg);
                        }
                    }
                    let m = &mut mbuf[..FRAME];
                    m.copy_from_slice(&b[i * FRAME..(i + 1) * FRAME]);
                    let v = process(&svc, &tables, &mut w, m, in_port(dir), T0);
                    sink += usize::from(matches!(v, Verdict::Forward(_)));
                }
            }
            assert_eq!(sink, frames as usize, "every frame forwarded by process");
            black_box(sink);
            frames as usize
        });
        // Every leg of the burst prefetched first, then the burst through `process`.
        let dispatch_burst = time(rounds, || {
            let mut sink = 0;
            for b in buf.chunks(FRAME * BURST) {
                for f in b.chunks_exact(FRAME) {
                    if let Some(leg) = siplb_core::lb::media_leg(&tables, f) {
                        prefetch(leg);
                    }
                }
                for f in b.chunks_exact(FRAME) {
                    let m = &mut mbuf[..FRAME];
                    m.copy_from_slice(f);
                    let v = process(&svc, &tables, &mut w, m, in_port(dir), T0);
                    sink += usize::from(matches!(v, Verdict::Forward(_)));
                }
            }
            assert_eq!(sink, frames as usize, "every frame forwarded by process");
            black_box(sink);
            frames as usize
        });
        let burst = time(rounds, || {
            let sink: usize = buf
                .chunks(FRAME * BURST)
                .map(|b| media_burst(&t, &mut mbuf, b, T0))
                .sum();
            assert!(sink >= frames as usize, "every frame forwarded");
            black_box(sink);
            frames as usize
        });
        let table = time(rounds, || {
            let sink: usize = addrs
                .iter()
                .map(|&(from, to)| {
                    t.forward(to, from, 158, T0)
                        .map_or(0, |n| n.dst.port() as usize)
                })
                .sum();
            black_box(sink);
            frames as usize
        });
        let reference = time(rounds, || {
            let sink: usize = buf
                .chunks_exact(FRAME)
                .map(|f| bench::copy_and_headers(&mut mbuf, f))
                .sum();
            black_box(sink);
            frames as usize
        });
        row(kind, "siplb lb::process (copy + the whole path)", dispatch);
        row(
            kind,
            "lb::process, next frame's leg prefetched",
            dispatch_ahead,
        );
        row(kind, "lb::process, the burst's legs first", dispatch_burst);
        row(kind, "media path (copy+checks+forward+NAT)", media);
        row(kind, "media path, bursts of 32, legs prefetched", burst);
        row(kind, "MediaTable::forward alone", table);
        row(kind, "ref: copy + Eth/IPv4/UDP checks", reference);
        println!(
            "{kind:<22} ratio (median): process {:.2}x copy+headers, {:.2}x with the leg prefetched; media path {:.2}x, with prefetch {:.2}x\n",
            dispatch.1 / reference.1,
            dispatch_ahead.1 / reference.1,
            media.1 / reference.1,
            burst.1 / reference.1
        );
        summary.push((
            kind,
            dispatch,
            dispatch_ahead,
            media,
            burst,
            table,
            reference,
        ));
    }

    // The rewrite is right, untimed: a frame of mapping 0 both ways.
    let (to_c, to_b) = legs[0];
    let f = rtp_frame(client(0), SocketAddrV4::new(to_c.addr, to_c.port), 1, 0);
    assert_ne!(media_path(&t, &mut mbuf, &f, T0), 0, "forwarded");
    let m = &mbuf[..FRAME];
    let ip = Ipv4Packet::new_checked(&m[14..]).expect("IPv4");
    assert_eq!((ip.src(), ip.dst()), (to_b.addr, *relay(0).ip()));
    assert_eq!(siplb_core::wire::checksum::checksum(ip.header()), 0);
    let u = UdpPacket::new_checked(ip.payload()).expect("UDP");
    assert_eq!((u.src_port(), u.dst_port()), (to_b.port, relay(0).port()));
    assert!(u.verify(ip.src(), ip.dst()), "UDP checksum still right");

    // Ending dialogs: index lookups, no scan.
    let n_end = mappings.min(100_000);
    let start = Instant::now();
    let ended: usize = (0..n_end).map(|i| t.end_dialog(call(i))).sum();
    let end_ns = start.elapsed().as_nanos() as f64 / f64::from(n_end);
    assert_eq!(ended, n_end as usize);
    println!(
        "end_dialog: {n_end} dialogs ended, {end_ns:.0} ns each; {} mappings live; load average {} at end",
        t.count_live(),
        bench::load_average()
    );
    invite_cost(rounds);

    let forwarded: u64 = counters.media.iter().map(|m| m.packets.get()).sum();
    println!("media packets counted by the workers' per-farm counters: {forwarded}");
    for (kind, dispatch, ahead, media, burst, table, reference) in summary {
        println!(
            "csv,{kind},{mappings},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1}",
            dispatch.0,
            dispatch.1,
            ahead.0,
            ahead.1,
            media.0,
            media.1,
            burst.0,
            burst.1,
            table.0,
            table.1,
            reference.0,
            reference.1
        );
    }
}
