//! Calls between phones registered on separate registrars (issue 15, item 6), with real
//! softphones (baresip) and two independent Kamailio registrars behind the VIP: each
//! knows only the phones that registered with it (no `dmq_usrloc`).
//!
//! Phone A (`alice`) and phone B register through the VIP; B's user name is chosen so
//! that the farm's Maglev puts its REGISTER on the other registrar than A's (computed
//! from the same configuration with `siplb_core`, then checked in the Kamailio logs).
//! A then calls B:
//! - `registrar` affinity: the INVITE follows A's registration, to A's registrar,
//!   which does not know B: **404**, and B never rings;
//! - `callee` affinity: the INVITE goes to B's registrar (the Request-URI's AOR
//!   registered through the VIP): B rings, answers, the call is established;
//! - `call-id` affinity: the INVITE lands on either registrar by its Call-ID (checked
//!   call by call against Maglev): the calls that land on B's registrar reach B, the
//!   others are answered 404.
//!
//! What operators should prefer where they can: registrations shared between the
//! registrars (Kamailio `dmq_usrloc`, the default bed of `e2e::softphones`), which makes
//! every affinity work; `callee` is for registrars that cannot share.

use e2e::phone_bed::{PhoneBed, LIFE, PHONE_IFACE, PHONE_IPS};
use e2e::softphone::Softphone;
use e2e::topology::{backend_ip, VIP};
use siplb_core::hash::hash64;
use siplb_core::lb::{aor_key_of, sim};
use std::time::Duration;

/// The backend (0 or 1) the bed's farm places `key` on by Maglev (its weights and
/// backends; NAT mode and affinity do not change the table).
fn maglev(bed: &PhoneBed, key: u64) -> usize {
    let cfg = bed.topo.base_config() + &bed.topo.farm_config("dnat", "call-id", &[1, 1], "");
    let svc = sim::services(&cfg);
    let farm = svc.farm_for(VIP, 5060).expect("the farm");
    farm.pick(key).expect("a backend")
}

/// Where a REGISTER of `user@VIP` goes (the AOR is not registered yet).
fn registrar_of(bed: &PhoneBed, user: &str) -> usize {
    maglev(
        bed,
        aor_key_of(Some(user.as_bytes()), VIP.to_string().as_bytes()),
    )
}

struct Phones {
    a: Softphone,
    b: Softphone,
    /// The registrar of each, from the Kamailio logs.
    registrars: [usize; 2],
}

/// A bed with independent registrars and `affinity`, A and B registered on different
/// registrars.
fn bed_and_phones(affinity: &str) -> (PhoneBed, Phones) {
    e2e::require_root();
    let bed =
        PhoneBed::start_with("dnat", affinity, false, None, "alg = true", "").expect("phone bed");
    let a_at = registrar_of(&bed, "alice");
    let b_user = (0..100)
        .map(|i| format!("bob{i}"))
        .find(|u| registrar_of(&bed, u) != a_at)
        .expect("a user on the other registrar");
    let dir = &bed.topo.dir;
    let mut a = Softphone::start(
        &bed.phones[0],
        PHONE_IFACE,
        dir,
        "alice",
        PHONE_IPS[0],
        VIP,
        LIFE,
    )
    .unwrap();
    let mut b = Softphone::start(
        &bed.phones[1],
        PHONE_IFACE,
        dir,
        &b_user,
        PHONE_IPS[1],
        VIP,
        LIFE,
    )
    .unwrap();
    assert!(
        a.wait_registered(Duration::from_secs(10)),
        "alice registered"
    );
    assert!(
        b.wait_registered(Duration::from_secs(10)),
        "{b_user} registered"
    );
    let registrars = [("alice", &a), (b_user.as_str(), &b)].map(|(user, _)| {
        let at: Vec<usize> = bed
            .kamailios
            .iter()
            .enumerate()
            .filter(|(_, k)| {
                k.messages()
                    .iter()
                    .any(|m| m.rx && m.kind == "REGISTER" && m.to_user == user)
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            at.len(),
            1,
            "{user}'s REGISTERs reached one registrar: {at:?}"
        );
        at[0]
    });
    assert_eq!(
        registrars,
        [a_at, 1 - a_at],
        "Maglev's placement of the REGISTERs"
    );
    println!(
        "{affinity}: alice registered at {}, {} at {}",
        backend_ip(registrars[0]),
        b_user,
        backend_ip(registrars[1])
    );
    (bed, Phones { a, b, registrars })
}

/// How A's call to B ended: (B rang, established at A, A's close reason).
fn call(p: &mut Phones, n: usize) -> (bool, bool, String) {
    let (ea, eb) = (p.a.events.len(), p.b.events.len());
    let uri = format!("sip:{}@{VIP}", &p.b.user);
    p.a.dial(&uri).expect("dial");
    let rang =
        p.b.wait_event("CALL_INCOMING", eb, Duration::from_secs(5))
            .is_some();
    if rang {
        p.b.accept().expect("accept");
    }
    let established =
        p.a.wait_event("CALL_ESTABLISHED", ea, Duration::from_secs(5))
            .is_some();
    if established {
        p.a.hangup().expect("hang up");
    }
    let closed =
        p.a.wait_event("CALL_CLOSED", ea, Duration::from_secs(5))
            .map(|e| e.param)
            .unwrap_or_default();
    // Both sides idle before the next call.
    p.b.wait_event("CALL_CLOSED", eb, Duration::from_secs(3));
    println!("call {n}: rang {rang}, established {established}, closed at A: {closed:?}");
    (rang, established, closed)
}

/// INVITEs to B's user each registrar received.
fn invites_at(bed: &PhoneBed, user: &str) -> [usize; 2] {
    let n = |i: usize| {
        bed.kamailios[i]
            .messages()
            .iter()
            .filter(|m| m.rx && m.kind == "INVITE" && m.to_user == user)
            .count()
    };
    [n(0), n(1)]
}

#[test]
fn registrar_affinity_sends_the_call_to_the_callers_registrar_which_answers_404() {
    let (bed, mut p) = bed_and_phones("registrar");
    let (rang, established, closed) = call(&mut p, 1);
    let at = invites_at(&bed, &p.b.user);
    assert_eq!(
        (rang, established),
        (false, false),
        "B must not ring: A's registrar does not know B"
    );
    assert!(
        closed.contains("404"),
        "A's call closed with 404: {closed:?}"
    );
    assert_eq!(
        at[p.registrars[0]], 1,
        "the INVITE reached A's registrar: {at:?}"
    );
    assert_eq!(at[p.registrars[1]], 0, "not B's: {at:?}");
}

#[test]
fn callee_affinity_sends_the_call_to_the_callees_registrar() {
    let (bed, mut p) = bed_and_phones("callee");
    let (rang, established, closed) = call(&mut p, 1);
    let at = invites_at(&bed, &p.b.user);
    assert_eq!(
        (rang, established),
        (true, true),
        "B rang and answered (A's close: {closed:?})"
    );
    assert_eq!(
        at[p.registrars[1]], 1,
        "the INVITE reached B's registrar: {at:?}"
    );
    assert_eq!(at[p.registrars[0]], 0, "not A's: {at:?}");
}

#[test]
fn call_id_affinity_reaches_the_callee_only_when_the_call_id_says_so() {
    let (bed, mut p) = bed_and_phones("call-id");
    const CALLS: usize = 6;
    let mut outcomes = [0usize; 2]; // [404, answered]
    for n in 1..=CALLS {
        let (rang, established, closed) = call(&mut p, n);
        if rang && established {
            outcomes[1] += 1;
        } else if closed.contains("404") {
            outcomes[0] += 1;
        }
    }
    let at = invites_at(&bed, &p.b.user);
    // Each call's INVITE reached the registrar Maglev gives its Call-ID.
    let mut placed = 0;
    for (i, k) in bed.kamailios.iter().enumerate() {
        for m in k.messages() {
            if m.rx && m.kind == "INVITE" && m.to_user == p.b.user {
                assert_eq!(
                    maglev(&bed, hash64(m.call_id.as_bytes())),
                    i,
                    "call {} placed by its Call-ID",
                    m.call_id
                );
                placed += 1;
            }
        }
    }
    println!(
        "call-id: {CALLS} calls: {} answered 404, {} answered by B; INVITEs at the registrars {at:?}",
        outcomes[0], outcomes[1]
    );
    assert_eq!(placed, CALLS, "one INVITE per call at the registrars");
    assert_eq!(
        outcomes[0] + outcomes[1],
        CALLS,
        "every call either 404 or answered"
    );
    assert_eq!(
        (outcomes[1], outcomes[0]),
        (at[p.registrars[1]], at[p.registrars[0]]),
        "exactly the calls placed on B's registrar reached B, the others got 404"
    );
}
