//! The HTTP listener: `/metrics` (Prometheus), `/status` and `/stats` (JSON). It serves
//! the views the daemon's main loop last published; it never touches DPDK.

use crate::api::{StatsView, StatusView};
use crate::metrics;
use std::sync::{Arc, Mutex};

/// What the main loop publishes for the HTTP thread.
pub type Views = Arc<Mutex<Option<(StatusView, StatsView)>>>;

/// Binds `addr` and serves in a thread; returns the bound address.
pub fn serve(addr: &str, views: Views) -> anyhow::Result<String> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("HTTP listener on {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .map(|a| a.to_string())
        .unwrap_or_else(|| addr.to_string());
    std::thread::Builder::new()
        .name("siplb-http".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let snapshot = views.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let (code, ctype, body) = match (req.url(), snapshot) {
                    (_, None) => (503, "text/plain", "starting\n".to_string()),
                    ("/metrics", Some((st, stats))) => (
                        200,
                        "text/plain; version=0.0.4",
                        metrics::render(&st, &stats),
                    ),
                    ("/status", Some((st, _))) => (
                        200,
                        "application/json",
                        serde_json::to_string_pretty(&st).unwrap_or_default(),
                    ),
                    ("/stats", Some((_, stats))) => (
                        200,
                        "application/json",
                        serde_json::to_string_pretty(&stats).unwrap_or_default(),
                    ),
                    _ => (
                        404,
                        "text/plain",
                        "try /metrics, /status or /stats\n".to_string(),
                    ),
                };
                let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes())
                    .expect("static header");
                let _ = req.respond(
                    tiny_http::Response::from_string(body)
                        .with_status_code(code)
                        .with_header(header),
                );
            }
        })?;
    Ok(bound)
}
