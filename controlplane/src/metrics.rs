//! Prometheus text exposition (version 0.0.4) of the control plane's views.

use crate::api::{StatsView, StatusView};
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", l.join(","));
        }
    }
}

pub fn render(status: &StatusView, stats: &StatsView) -> String {
    let mut o = Out(String::new());
    o.family(
        "siplb_up",
        "gauge",
        "1 while the control plane is attached to a running dataplane.",
    );
    o.sample("siplb_up", &[], 1.0);
    o.family(
        "siplb_config_generation",
        "gauge",
        "Generation of the state applied in the dataplane.",
    );
    o.sample("siplb_config_generation", &[], status.generation as f64);

    for (name, help, get) in [
        (
            "siplb_rx_packets_total",
            "Packets received, per worker.",
            (|t: &crate::api::Traffic| t.rx_packets) as fn(&crate::api::Traffic) -> u64,
        ),
        ("siplb_tx_packets_total", "Packets sent, per worker.", |t| {
            t.tx_packets
        }),
        ("siplb_rx_bytes_total", "Bytes received, per worker.", |t| {
            t.rx_bytes
        }),
        ("siplb_tx_bytes_total", "Bytes sent, per worker.", |t| {
            t.tx_bytes
        }),
        (
            "siplb_sip_requests_total",
            "SIP requests balanced, per worker.",
            |t| t.sip_requests,
        ),
        (
            "siplb_sip_responses_total",
            "SIP responses balanced, per worker.",
            |t| t.sip_responses,
        ),
        (
            "siplb_dialogs_created_total",
            "Dialogs recorded, per worker.",
            |t| t.dialogs_created,
        ),
        (
            "siplb_registrations_created_total",
            "Registrations recorded, per worker.",
            |t| t.registrations_created,
        ),
    ] {
        o.family(name, "counter", help);
        for w in &stats.workers {
            o.sample(
                name,
                &[("worker", &w.worker.to_string())],
                get(&w.traffic) as f64,
            );
        }
    }
    o.family(
        "siplb_worker_busy_ratio",
        "gauge",
        "Share of a worker's polls that found packets.",
    );
    for w in &stats.workers {
        o.sample(
            "siplb_worker_busy_ratio",
            &[("worker", &w.worker.to_string())],
            w.busy,
        );
    }
    o.family(
        "siplb_drops_total",
        "counter",
        "Packets dropped, by reason (sip_* = SIP scanner errors).",
    );
    for (reason, n) in &stats.drops {
        o.sample("siplb_drops_total", &[("reason", reason)], *n as f64);
    }
    o.family(
        "siplb_backend_packets_total",
        "counter",
        "Packets to and from each backend.",
    );
    for f in &stats.farms {
        for b in &f.backends {
            let be = format!("{}:{}", b.address, b.port);
            o.sample(
                "siplb_backend_packets_total",
                &[("farm", &f.name), ("backend", &be), ("direction", "to")],
                b.to_packets as f64,
            );
            o.sample(
                "siplb_backend_packets_total",
                &[("farm", &f.name), ("backend", &be), ("direction", "from")],
                b.from_packets as f64,
            );
        }
    }
    o.family(
        "siplb_backend_bytes_total",
        "counter",
        "Bytes to and from each backend.",
    );
    for f in &stats.farms {
        for b in &f.backends {
            let be = format!("{}:{}", b.address, b.port);
            o.sample(
                "siplb_backend_bytes_total",
                &[("farm", &f.name), ("backend", &be), ("direction", "to")],
                b.to_bytes as f64,
            );
            o.sample(
                "siplb_backend_bytes_total",
                &[("farm", &f.name), ("backend", &be), ("direction", "from")],
                b.from_bytes as f64,
            );
        }
    }
    o.family(
        "siplb_backend_dialogs_active",
        "gauge",
        "Dialogs in progress (not ending) per backend.",
    );
    o.family(
        "siplb_backend_registrations_active",
        "gauge",
        "Registrations held per backend.",
    );
    for f in &stats.farms {
        for b in &f.backends {
            let be = format!("{}:{}", b.address, b.port);
            o.sample(
                "siplb_backend_dialogs_active",
                &[("farm", &f.name), ("backend", &be)],
                b.dialogs_active as f64,
            );
            o.sample(
                "siplb_backend_registrations_active",
                &[("farm", &f.name), ("backend", &be)],
                b.registrations_active as f64,
            );
        }
    }
    o.family(
        "siplb_backend_state",
        "gauge",
        "1 for the state each backend is in (up, drained, down).",
    );
    o.family(
        "siplb_backend_healthy",
        "gauge",
        "1 if the backend's health checks pass (or none is configured).",
    );
    o.family(
        "siplb_backend_weight",
        "gauge",
        "Configured weight of each backend.",
    );
    o.family(
        "siplb_health_checks_total",
        "counter",
        "Health checks run per backend, by result (ok, failed).",
    );
    o.family(
        "siplb_health_transitions_total",
        "counter",
        "State changes decided by the health checks, by the state entered (down, up).",
    );
    o.family(
        "siplb_health_last_check_seconds",
        "gauge",
        "How long the last health check of each backend took.",
    );
    for f in &status.farms {
        for b in &f.backends {
            let Some(c) = &b.checks else { continue };
            let be = format!("{}:{}", b.address, b.port);
            let l = |k: &'static str, v: &'static str| {
                [("farm", f.name.as_str()), ("backend", be.as_str()), (k, v)]
            };
            o.sample(
                "siplb_health_checks_total",
                &l("result", "ok"),
                (c.checks - c.failed) as f64,
            );
            o.sample(
                "siplb_health_checks_total",
                &l("result", "failed"),
                c.failed as f64,
            );
            o.sample(
                "siplb_health_transitions_total",
                &l("to", "down"),
                c.went_down as f64,
            );
            o.sample(
                "siplb_health_transitions_total",
                &l("to", "up"),
                c.came_up as f64,
            );
            o.sample(
                "siplb_health_last_check_seconds",
                &[("farm", &f.name), ("backend", &be)],
                c.last_took_ms as f64 / 1000.0,
            );
        }
    }
    for f in &status.farms {
        for b in &f.backends {
            let be = format!("{}:{}", b.address, b.port);
            o.sample(
                "siplb_backend_state",
                &[("farm", &f.name), ("backend", &be), ("state", &b.state)],
                1.0,
            );
            o.sample(
                "siplb_backend_healthy",
                &[("farm", &f.name), ("backend", &be)],
                if b.health == "down" { 0.0 } else { 1.0 },
            );
            o.sample(
                "siplb_backend_weight",
                &[("farm", &f.name), ("backend", &be)],
                f64::from(b.weight),
            );
        }
    }
    o.0
}
