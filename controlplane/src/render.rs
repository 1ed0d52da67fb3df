//! Text output of the CLI: what an operator reads in a terminal.

use crate::api::{DialogView, HaView, StatsView, StatusView};
use std::fmt::Write;

fn rate(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.2} Gbit/s", b / 1e9),
        b if b >= 1e6 => format!("{:.2} Mbit/s", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kbit/s", b / 1e3),
        b => format!("{b:.0} bit/s"),
    }
}

pub fn status(s: &StatusView) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "siplb: dataplane pid {} ({} worker{}), control pid {}, file prefix `{}`",
        s.dataplane_pid,
        s.workers,
        if s.workers == 1 { "" } else { "s" },
        s.control_pid,
        s.file_prefix
    );
    let _ = writeln!(
        o,
        "config {} (generation {} applied){}",
        s.config_file,
        s.generation,
        s.http
            .as_ref()
            .map(|h| format!(", http://{h}/"))
            .unwrap_or_default()
    );
    if let Some(ha) = &s.ha {
        let _ = writeln!(o, "HA: this unit is {ha}");
    }
    if let Some(h) = &s.ha_detail {
        ha_detail(&mut o, h);
    }
    if let Some(b) = &s.bgp {
        let vips: Vec<String> = b.announcing.iter().map(|v| v.to_string()).collect();
        let _ = write!(
            o,
            "BGP to {}: announcing {}{}",
            b.router,
            if vips.is_empty() {
                "no VIP".to_string()
            } else {
                vips.join(", ")
            },
            if b.draining { " (unit drained)" } else { "" }
        );
        let _ = if b.configured {
            writeln!(o)
        } else {
            writeln!(o, "; BIRD has not loaded {}: {}", b.config_file, b.error)
        };
    }
    if let Some(d) = &s.deny_file {
        let _ = write!(o, "deny_file {}: {} prefixes in force", d.path, d.prefixes);
        let _ = if d.error.is_empty() {
            writeln!(o)
        } else {
            writeln!(
                o,
                " (the last good read); the last read FAILED ({} failures): {}",
                d.errors, d.error
            )
        };
    }
    for f in &s.feeds {
        let _ = write!(
            o,
            "feed {} ({}): {} prefixes in force, {} fetches",
            f.name, f.source, f.prefixes, f.fetches
        );
        let _ = match f.last_ok_s_ago {
            Some(s) => write!(o, ", last good {s} s ago"),
            None => write!(o, ", none good yet"),
        };
        let _ = if f.error.is_empty() {
            writeln!(o)
        } else {
            writeln!(
                o,
                "; the last fetch FAILED ({} failures): {}",
                f.errors, f.error
            )
        };
    }
    for f in &s.farms {
        let _ = writeln!(
            o,
            "\nfarm {}  vip {}  {}  affinity {}",
            f.name, f.vip, f.nat, f.affinity
        );
        let _ = writeln!(
            o,
            "  {:<22} {:>6}  {:<8} {:<9} LAST CHECK",
            "BACKEND", "WEIGHT", "STATE", "HEALTH"
        );
        for b in &f.backends {
            let _ = writeln!(
                o,
                "  {:<22} {:>6}  {:<8} {:<9} {}",
                format!("{}:{}", b.address, b.port),
                b.weight,
                b.state,
                b.health,
                b.last_check
            );
            if !b.down_reason.is_empty() {
                let _ = writeln!(o, "  {:<22} down after {}", "", b.down_reason);
            }
        }
    }
    o
}

pub fn stats(s: &StatsView) -> String {
    let mut o = String::new();
    let t = &s.totals;
    let _ = writeln!(
        o,
        "total    rx {:>9.0} pps {:>13}   tx {:>9.0} pps {:>13}   drops {}   (over {:.1} s)",
        t.rx_pps,
        rate(t.rx_bps),
        t.tx_pps,
        rate(t.tx_bps),
        t.drops,
        s.interval
    );
    let _ = writeln!(
        o,
        "         {} packets in, {} out; SIP {} requests, {} responses; {} dialogs ({} expired), {} registrations ({} expired) recorded",
        t.rx_packets,
        t.tx_packets,
        t.sip_requests,
        t.sip_responses,
        t.dialogs_created,
        s.dialogs_expired,
        t.registrations_created,
        s.registrations_expired
    );
    let tc = &t.tables;
    let others: Vec<String> = tc.named()[3..]
        .iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(k, _, n)| format!("{k}={n}"))
        .collect();
    let _ = writeln!(
        o,
        "         tables full: dialogs {}, registrations {}, connections {}; media expired {}{}",
        tc.dialog_table_full,
        tc.registration_table_full,
        tc.connection_table_full,
        s.media_expired,
        if others.is_empty() {
            String::new()
        } else {
            format!("; {}", others.join(" "))
        }
    );
    if t.alg_rewritten > 0 || t.tcp_seq_mapped > 0 || !s.tcp_alg_skipped.is_empty() {
        let skipped: Vec<String> = s
            .tcp_alg_skipped
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            o,
            "         ALG: {} messages rewritten, {} TCP segments sequence-mapped{}",
            t.alg_rewritten,
            t.tcp_seq_mapped,
            if skipped.is_empty() {
                String::new()
            } else {
                format!(", TCP left untouched: {}", skipped.join(" "))
            }
        );
    }
    for w in &s.workers {
        let _ = writeln!(
            o,
            "worker {} rx {:>9.0} pps   tx {:>9.0} pps   busy {:>5.1}%",
            w.worker,
            w.traffic.rx_pps,
            w.traffic.tx_pps,
            100.0 * w.busy
        );
    }
    for f in &s.farms {
        let _ = writeln!(
            o,
            "\nfarm {}  vip {}  dialogs {}  registrations {}",
            f.name, f.vip, f.dialogs_active, f.registrations_active
        );
        let _ = writeln!(
            o,
            "  {:<22} {:<8} {:>10} {:>13} {:>10} {:>13} {:>8} {:>6}",
            "BACKEND", "STATE", "TO pps", "TO", "FROM pps", "FROM", "DIALOGS", "REGS"
        );
        for b in &f.backends {
            let _ = writeln!(
                o,
                "  {:<22} {:<8} {:>10.0} {:>13} {:>10.0} {:>13} {:>8} {:>6}",
                format!("{}:{}", b.address, b.port),
                b.state,
                b.to_pps,
                rate(b.to_bps),
                b.from_pps,
                rate(b.from_bps),
                b.dialogs_active,
                b.registrations_active
            );
        }
        let _ = writeln!(
            o,
            "  {:<22} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6}  {:>17} {:>17}",
            "ANSWERS",
            "1xx",
            "2xx",
            "3xx",
            "4xx",
            "5xx",
            "6xx",
            "503",
            "FIRST p50/p99 ms",
            "INVITE p50/p99 ms"
        );
        for b in &f.backends {
            let r = &b.responses;
            let c = r.classes;
            let q = |l: &crate::api::LatencyView| {
                if l.count == 0 {
                    "-".to_string()
                } else {
                    format!("{}/{}", ms(l.p50_ms), ms(l.p99_ms))
                }
            };
            let _ = writeln!(
                o,
                "  {:<22} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6}  {:>17} {:>17}",
                format!("{}:{}", b.address, b.port),
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                r.service_unavailable,
                q(&r.first_response),
                q(&r.invite_final)
            );
        }
        backend_load(&mut o, &f.backends);
        backend_failover(&mut o, &f.backends);
        if !f.drops.is_empty() {
            let d: Vec<String> = f.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(o, "  drops for this farm: {}", d.join(" "));
        }
        let m = &f.media;
        if m.flows > 0 || m.packets > 0 {
            let drops: Vec<String> = m
                .drops
                .iter()
                .chain(&m.refused)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                o,
                "  media: {} streams live, {} mapped, {} ended by their dialog; {:.0} pps, {} packets, {} bytes{}",
                m.live,
                m.flows,
                m.ended,
                m.pps,
                m.packets,
                m.bytes,
                if drops.is_empty() {
                    String::new()
                } else {
                    format!("; {}", drops.join(" "))
                }
            );
        }
    }
    let fo = &s.failover;
    if fo.held + fo.acks + fo.exhausted + fo.late + fo.held_full + fo.held_too_big > 0 {
        let _ = writeln!(
            o,
            "\nfailover: {} held now, {} failures acknowledged, {} passed on (no backend left), {} late answers, {} re-sends lost; not held: {} store full, {} too big",
            fo.held, fo.acks, fo.exhausted, fo.late, fo.resend_failed, fo.held_full, fo.held_too_big
        );
    }
    if s.farm_full_rejected > 0 {
        let _ = writeln!(
            o,
            "\nnew calls answered 503 (no backend took them): {}",
            s.farm_full_rejected
        );
    }
    if let Some(d) = &s.dnsbl {
        let _ = writeln!(
            o,
            "\ndnsbl {} via {}: queries={} listed={} clean={} errors={} timeouts={} cache_hits={} queue_full={} pending={} cached={} latency avg {:.1} ms, max {:.1} ms",
            d.zones.join(","),
            if d.resolver.is_empty() { "no resolver" } else { &d.resolver },
            d.queries,
            d.listed,
            d.clean,
            d.errors,
            d.timeouts,
            d.cache_hits,
            d.queue_full,
            d.pending,
            d.cached,
            d.latency_us_sum as f64 / d.verdicts.max(1) as f64 / 1e3,
            d.latency_us_max as f64 / 1e3,
        );
    }
    if !s.drops.is_empty() {
        let d: Vec<String> = s.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(o, "\ndrops: {}", d.join(" "));
    }
    o
}

/// The farm's failover table (`lb::failover`), when a backend failed new work or
/// took another's.
fn backend_failover(o: &mut String, backends: &[crate::api::BackendStats]) {
    let n =
        |l: &crate::api::BackendLoadStats| l.failover_answers + l.failover_timeouts + l.failover_to;
    if !backends.iter().any(|b| n(&b.load) > 0) {
        return;
    }
    let _ = writeln!(
        o,
        "  {:<22} {:>9} {:>9} {:>9}",
        "FAILOVER", "ANSWERED", "TIMEOUT", "RECEIVED"
    );
    for b in backends {
        let l = &b.load;
        let _ = writeln!(
            o,
            "  {:<22} {:>9} {:>9} {:>9}",
            format!("{}:{}", b.address, b.port),
            l.failover_answers,
            l.failover_timeouts,
            l.failover_to
        );
    }
}

/// The farm's capacity and overload table (`lb::load`), when its backends use
/// `max_dialogs` or `priority` or have signalled overload or been marked down.
fn backend_load(o: &mut String, backends: &[crate::api::BackendStats]) {
    let used = |l: &crate::api::BackendLoadStats| {
        l.max_dialogs > 0
            || l.priority > 0
            || l.full + l.oc_shed + l.held + l.retry_after + l.passive_marks > 0
    };
    if !backends.iter().any(|b| used(&b.load)) {
        return;
    }
    let _ = writeln!(
        o,
        "  {:<22} {:>7} {:>6} {:>5} {:>7} {:>7} {:>7} {:>9} {:>4} {:>8}",
        "LOAD", "CALLS", "MAX", "PRIO", "FULL", "OC SHED", "HELD", "HOLD ms", "OC%", "PASSIVE"
    );
    for b in backends {
        let l = &b.load;
        let _ = writeln!(
            o,
            "  {:<22} {:>7} {:>6} {:>5} {:>7} {:>7} {:>7} {:>9} {:>4} {:>8}",
            format!("{}:{}", b.address, b.port),
            l.dialogs,
            if l.max_dialogs == 0 {
                "-".to_string()
            } else {
                l.max_dialogs.to_string()
            },
            l.priority,
            l.full,
            l.oc_shed,
            l.held,
            l.held_for_ms,
            l.oc_percent,
            format!(
                "{}/{}",
                if l.passive_down { "down" } else { "-" },
                l.passive_marks
            )
        );
    }
}

/// Milliseconds with the precision a bucket bound has.
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{:.1}s", v / 1000.0)
    }
}

pub fn dialog(d: &DialogView) -> String {
    format!(
        "dialog {}\n  farm {}  backend {}  state {}\n  last message {} s ago, forgotten in {} s without news\n",
        d.call_id, d.farm, d.backend, d.state, d.idle_s, d.expires_in_s
    )
}

fn ha_detail(o: &mut String, h: &HaView) {
    let peer_role = match (h.peer_alive, h.peer_active) {
        (false, _) => "dead",
        (true, true) => "active",
        (true, false) => "standby",
    };
    let _ = writeln!(
        o,
        "  priority {}; peer {} {peer_role}, priority {}, numbering {}",
        h.priority,
        h.peer,
        h.peer_priority,
        if h.numbering.is_empty() {
            "agrees"
        } else {
            "DIFFERS"
        }
    );
    if !h.numbering.is_empty() {
        let _ = writeln!(o, "  {}: replication is off", h.numbering);
    }
    if h.preferred {
        let _ = writeln!(
            o,
            "  takeover asked by the operator: this unit outranks its peer"
        );
    }
    if h.resyncing {
        let _ = writeln!(
            o,
            "  resyncing: receiving the peer's tables (no takeover by preference)"
        );
    }
    if h.active {
        let _ = writeln!(
            o,
            "  replication: lag {} ms, {} in flight, acked in {:.1} ms p50 / {:.1} ms p99, changes acked within {:.1} ms p50 / {:.1} ms p99; {} slots read; {} sent, {} resent, {} streams; peer {}",
            h.lag_ms,
            h.in_flight,
            h.ack_p50_ms,
            h.ack_p99_ms,
            h.change_lag_p50_ms,
            h.change_lag_p99_ms,
            h.sync_slots_read,
            h.sent,
            h.resent,
            h.streams,
            if h.peer_synced { "synced" } else { "not synced" }
        );
    } else {
        let _ = writeln!(o, "  replication: {} entries imported", h.imported);
    }
    let rejected: Vec<String> = h
        .rejected
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    if !rejected.is_empty() {
        let _ = writeln!(o, "  datagrams dropped: {}", rejected.join(", "));
    }
    if let Some(r) = &h.last_resync {
        let ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            .saturating_sub(r.at_ms);
        let _ = writeln!(
            o,
            "  last resync {}: {} entries in {} ms, {:.1} s ago",
            r.direction,
            r.entries,
            r.duration_ms,
            ago as f64 / 1000.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ResyncView;

    #[test]
    fn stats_show_each_backends_answers_and_the_farms_drops() {
        let mut buckets = vec![0u64; 19];
        buckets[2] = 98; // ≤ 1 ms
        buckets[5] = 2; // ≤ 8 ms
        let mut b = crate::api::BackendStats {
            address: "198.18.1.11".into(),
            port: 5060,
            ..Default::default()
        };
        b.responses.classes = [100, 90, 0, 0, 10, 0];
        b.responses.service_unavailable = 10;
        b.responses.first_response = crate::daemon::sampler::latency_view(&buckets, 130_000);
        let mut f = crate::api::FarmStats {
            name: "pbx".into(),
            backends: vec![b],
            ..Default::default()
        };
        f.drops.insert("no_backend".into(), 3);
        let s = StatsView {
            farms: vec![f],
            ..Default::default()
        };
        let o = stats(&s);
        let row = o
            .lines()
            .find(|l| l.contains("198.18.1.11:5060") && l.contains("1.00/8.00"))
            .unwrap_or_else(|| panic!("no answers row in:\n{o}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "198.18.1.11:5060",
                "100",
                "90",
                "0",
                "0",
                "10",
                "0",
                "10",
                "1.00/8.00",
                "-"
            ],
            "{o}"
        );
        assert!(o.contains("  drops for this farm: no_backend=3\n"), "{o}");
    }

    #[test]
    fn stats_show_capacity_and_overload_only_where_used() {
        let b = |ip: &str, max, prio, full| {
            let mut b = crate::api::BackendStats {
                address: ip.into(),
                port: 5060,
                ..Default::default()
            };
            b.load.dialogs = 10;
            b.load.max_dialogs = max;
            b.load.priority = prio;
            b.load.full = full;
            b
        };
        let farm = |backends| crate::api::FarmStats {
            name: "pbx".into(),
            backends,
            ..Default::default()
        };
        let plain = StatsView {
            farms: vec![farm(vec![b("198.18.1.11", 0, 0, 0)])],
            ..Default::default()
        };
        assert!(!stats(&plain).contains("LOAD"), "{}", stats(&plain));
        let s = StatsView {
            farms: vec![farm(vec![
                b("198.18.1.11", 10, 0, 7),
                b("198.18.1.13", 0, 1, 0),
            ])],
            farm_full_rejected: 5,
            ..Default::default()
        };
        let o = stats(&s);
        let row = |ip: &str| -> Vec<String> {
            o.lines()
                .skip_while(|l| !l.contains("LOAD"))
                .find(|l| l.contains(ip))
                .unwrap_or_else(|| panic!("no load row for {ip} in:\n{o}"))
                .split_whitespace()
                .map(String::from)
                .collect()
        };
        assert_eq!(
            row("198.18.1.11"),
            [
                "198.18.1.11:5060",
                "10",
                "10",
                "0",
                "7",
                "0",
                "0",
                "0",
                "0",
                "-/0"
            ],
            "{o}"
        );
        assert_eq!(row("198.18.1.13")[2..4], ["-", "1"], "{o}");
        assert!(
            o.contains("new calls answered 503 (no backend took them): 5\n"),
            "{o}"
        );
    }

    #[test]
    fn stats_show_the_tables_full_counters() {
        let mut s = StatsView::default();
        s.totals.tables.dialog_table_full = 7;
        s.totals.tables.tcp_connections_created = 2;
        s.media_expired = 4;
        let o = stats(&s);
        assert!(
            o.contains(
                "tables full: dialogs 7, registrations 0, connections 0; media expired 4; tcp_connections_created=2\n"
            ),
            "{o}"
        );
    }

    #[test]
    fn ha_details_say_what_an_operator_needs() {
        let mut h = HaView {
            active: true,
            priority: 200,
            peer: "198.18.1.3".into(),
            peer_alive: true,
            peer_priority: 100,
            lag_ms: 12,
            in_flight: 3,
            sent: 40,
            resent: 2,
            streams: 1,
            peer_synced: true,
            rejected: vec![("address".into(), 0), ("mac".into(), 5)],
            last_resync: Some(ResyncView {
                direction: "sent".into(),
                at_ms: 0,
                entries: 81,
                duration_ms: 5,
            }),
            ..Default::default()
        };
        let mut o = String::new();
        ha_detail(&mut o, &h);
        for want in [
            "peer 198.18.1.3 standby, priority 100, numbering agrees",
            "lag 12 ms, 3 in flight",
            "40 sent, 2 resent, 1 streams; peer synced",
            "datagrams dropped: 5 mac\n",
            "last resync sent: 81 entries in 5 ms",
        ] {
            assert!(o.contains(want), "no `{want}` in:\n{o}");
        }
        h.active = false;
        h.resyncing = true;
        h.numbering = "peer's farm/backend numbering differs: media port pools".into();
        let mut o = String::new();
        ha_detail(&mut o, &h);
        assert!(o.contains("numbering DIFFERS"), "{o}");
        assert!(o.contains("media port pools: replication is off"), "{o}");
        assert!(o.contains("resyncing"), "{o}");
    }
}
