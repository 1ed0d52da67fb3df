//! Brute force judged in-band (issue 14, item 5): a password guesser against real
//! Kamailio registrars that challenge with digest authentication, through the VIP.
//!
//! Two Kamailio registrars behind the VIP (`PhoneBed`, `dnat`) require digest
//! credentials on REGISTER (password `s3cret`); wrong credentials are challenged again
//! (401), as registrars do. The balancer's `[security]` bans a source after
//! `auth_failures = 10` refused credentials within 600 s (fail2ban's defaults):
//! - phone A (198.18.0.10) registers with the right password 5 times before and 5
//!   times after the attack: each is challenged once (a first challenge never counts)
//!   and accepted;
//! - the guesser (198.18.0.11) makes 15 attempts, each a REGISTER, the 401, and a
//!   REGISTER with a wrong password, answered 401: the 10th refusal bans it, and its
//!   last 5 attempts never reach a registrar (dropped as `banned`, counted).

use e2e::phone_bed::{PhoneBed, PHONE_IPS};
use e2e::sipp::Uac;

const PASSWORD: &str = "s3cret";
const ATTEMPTS: u32 = 15;
const LIMIT: u32 = 10;

/// REGISTERs the registrars received from `ip`.
fn registers_from(bed: &PhoneBed, ip: std::net::Ipv4Addr) -> usize {
    let peer = format!("{ip}:5060");
    bed.kamailios
        .iter()
        .flat_map(|k| k.messages())
        .filter(|m| m.peer == peer && m.rx && m.kind == "REGISTER")
        .count()
}

/// What a SIPp registration run of `n` got: (successful, failed, 200s, 401s received).
fn register(
    bed: &PhoneBed,
    phone: usize,
    name: &str,
    user: &str,
    password: &str,
    n: u32,
) -> (u64, u64, usize, usize) {
    let r = Uac::new(&bed.phones[phone], name, n, 5)
        .local(PHONE_IPS[phone], 5060)
        .scenario("register_auth_uac")
        .args(["-s", user, "-au", user, "-ap", password])
        .timeout_s(30)
        .traced()
        .run(&bed.topo.dir)
        .expect("sipp");
    let got = |code: &str| {
        r.messages
            .iter()
            .filter(|m| !m.sent && m.kind == code)
            .count()
    };
    let out = (r.successful, r.failed, got("200"), got("401"));
    println!(
        "{name}: {} successful, {} failed; 200 received {}, 401 received {}",
        out.0, out.1, out.2, out.3
    );
    out
}

#[test]
fn a_password_guesser_is_banned_after_ten_refused_credentials_and_phones_are_not() {
    e2e::require_root();
    let bed = PhoneBed::start_with(
        "dnat",
        "call-id",
        false,
        Some(PASSWORD),
        "",
        &format!("auth_failures = {LIMIT}\nauth_window_s = 600\nauth_ban_s = 600"),
    )
    .expect("phone bed");
    let before = bed.drops();
    // Each registration of the phone: challenged once (401), then accepted (200).
    assert_eq!(
        register(&bed, 0, "phone-before", "alice", PASSWORD, 5),
        (5, 0, 5, 5)
    );
    let guesses = register(&bed, 1, "guesser", "root", "guess", ATTEMPTS);
    assert_eq!(
        register(&bed, 0, "phone-after", "alice", PASSWORD, 5),
        (5, 0, 5, 5),
        "the phone is not affected by the ban"
    );
    let after = bed.drops();
    let banned =
        after.get("banned").copied().unwrap_or(0) - before.get("banned").copied().unwrap_or(0);

    let phone = registers_from(&bed, PHONE_IPS[0]);
    let guesser = registers_from(&bed, PHONE_IPS[1]);
    println!(
        "phone A: {phone} REGISTERs at the registrars; guesser: {guesser}; {banned} of the guesser's packets dropped as banned"
    );
    assert_eq!(phone, 20, "phone A: 10 registrations, each challenged once");
    assert_eq!(
        guesses,
        (
            u64::from(LIMIT),
            u64::from(ATTEMPTS - LIMIT),
            0,
            2 * LIMIT as usize
        ),
        "the guesser: {LIMIT} attempts refused (challenge, then 401 to the wrong password), then no answer"
    );
    assert_eq!(
        guesser,
        2 * LIMIT as usize,
        "the guesser reached the registrars for its first {LIMIT} attempts only"
    );
    assert!(
        banned >= u64::from(ATTEMPTS - LIMIT),
        "{banned} packets dropped as banned"
    );
}
