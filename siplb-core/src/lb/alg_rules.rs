//! The SIP ALG's address rules for one message, shared by the UDP (`udp.rs`) and TCP
//! (`alg_tcp.rs`) stages: what a backend's message toward a client and a client's
//! message toward a backend have rewritten, by mode, and the farm's flow tokens (snat).

use super::services::{Farm, Services};
use crate::alg::{AddrRule, AddrSet, FlowTokens, Places, Rules, TokenKey, TokenWay};
use crate::hash::hash64_seeded;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The ALG's rules for a backend's message toward a client: the backend's transport
/// address becomes the VIP's SIP address; in snat, also the balancer's address and port
/// of this client's flow (`snat`), which a backend writes into `received=`/`rport`,
/// `alias`, a REGISTER 200's Contact or the Request-URI of a request to a registered
/// phone, becomes the client's, and every other flow on the farm's SNAT addresses
/// (another phone's Via and Contact that a proxy forwards) becomes the VIP with a flow
/// token. SDP: with media relayed (`farm.media`) the streams are mapped by the media
/// table and the backend's address elsewhere in the body (`o=`) becomes the VIP;
/// without, SDP stays (a rewritten `c=` without a media path would silence calls).
pub(super) fn rules_to_client(
    svc: &Services,
    farm: &Farm,
    backend: usize,
    snat: Option<((Ipv4Addr, u16), (Ipv4Addr, u16))>,
) -> Rules {
    let b = &farm.backends[backend];
    let mut rules = Rules::new();
    // At most two rules: within MAX_RULES, so `push` cannot fail.
    let _ = rules.push(AddrRule {
        from: SocketAddrV4::new(b.addr, b.port),
        to: SocketAddrV4::new(farm.vip, farm.port),
        places: if farm.media.is_some() {
            Places::ALL
        } else {
            Places::HEADERS
        },
    });
    // Only where this client's flow can stand: its own Via (the top one of a response
    // to it), the Contact the registrar echoes, the Request-URI of a request to it.
    // Other flows share the SNAT address (`received=` matches by address alone), so a
    // lower Via or another party's header is not this flow's to rewrite.
    if let Some(((sa, sp), (ca, cp))) = snat {
        let _ = rules.push(AddrRule {
            from: SocketAddrV4::new(sa, sp),
            to: SocketAddrV4::new(ca, cp),
            places: Places::TOP_VIA
                .union(Places::CONTACT)
                .union(Places::REQUEST_URI),
        });
        // Texts of a few ranges' addresses: within `Text`, so this cannot fail.
        let _ = rules.set_tokens(flow_tokens(svc, farm, backend, TokenWay::Hide));
    }
    rules
}

/// The ALG's rules for a client's message toward a backend: the VIP in the
/// Request-URI and the Route set (what the phone took from a rewritten Contact or
/// Record-Route) becomes the backend's own address again, so the backend's loose
/// routing recognises itself; in snat, the client's transport address in the top Via
/// and Contact becomes the balancer's address and port of its flow (`snat`), so
/// everything the backend sends to the client comes back through the balancer; and
/// the VIP with a flow token (another phone's flow, in the Request-URI and Route set
/// the phone took from a Contact, or in a Via it echoes) becomes that flow again.
pub(super) fn rules_to_backend(
    svc: &Services,
    farm: &Farm,
    backend: usize,
    client: (Ipv4Addr, u16),
    snat: Option<(Ipv4Addr, u16)>,
    media: bool,
) -> Rules {
    let b = &farm.backends[backend];
    let mut rules = Rules::new();
    // At most two rules: within MAX_RULES, so `push` cannot fail.
    let _ = rules.push(AddrRule {
        from: SocketAddrV4::new(farm.vip, farm.port),
        to: SocketAddrV4::new(b.addr, b.port),
        places: Places::REQUEST_URI.union(Places::ROUTE),
    });
    if let Some(snat) = snat {
        // With media relayed, the SDP's other mentions of the client (`o=`) go too.
        let sdp = if media { Places::SDP } else { Places::NONE };
        let _ = rules.push(AddrRule {
            from: SocketAddrV4::new(client.0, client.1),
            to: SocketAddrV4::new(snat.0, snat.1),
            places: Places::TOP_VIA.union(Places::CONTACT).union(sdp),
        });
        let _ = rules.set_tokens(flow_tokens(svc, farm, backend, TokenWay::Restore));
    }
    rules
}

/// Where flow tokens stand: the Request-URI, Via values, Contact and the Route set
/// (not From/To: identities; not SDP).
const TOKEN_PLACES: Places = Places::REQUEST_URI
    .union(Places::TOP_VIA)
    .union(Places::OTHER_VIA)
    .union(Places::CONTACT)
    .union(Places::ROUTE);

/// The farm's flow tokens ([`alg::token`]) for a message from or to `backend`.
fn flow_tokens(svc: &Services, farm: &Farm, backend: usize, way: TokenWay) -> FlowTokens {
    FlowTokens {
        way,
        snat: snat_addresses(svc, farm, backend),
        vip: SocketAddrV4::new(farm.vip, farm.port),
        key: token_key(farm),
        places: TOKEN_PLACES,
    }
}

/// The farm's SNAT addresses: its pool, or the own address of the port that reaches
/// `backend`. Pools are ranges and prefixes, so this is one range or a few; an
/// address past `alg::token::MAX_RANGES` disjoint ranges is not hidden.
fn snat_addresses(svc: &Services, farm: &Farm, backend: usize) -> AddrSet {
    let port = svc.route(farm.backends[backend].addr).map_or(0, |(p, _)| p);
    let mut set = AddrSet::new();
    for &slot in farm.snat_slots() {
        let _ = set.insert(svc.snat_source(slot, port));
    }
    set
}

/// The key of a farm's flow tokens, from its name and VIP: the same on both units of
/// an HA pair and across restarts, so a token a phone holds stays good as long as
/// the farm does.
fn token_key(farm: &Farm) -> TokenKey {
    let vip = u64::from(u32::from(farm.vip)) << 16 | u64::from(farm.port);
    TokenKey::new(hash64_seeded(farm.name.as_bytes(), vip))
}
