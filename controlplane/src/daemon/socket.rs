//! The control socket: one JSON request per connection line, answered by the main loop.

use crate::api::{Request, Response};
use crate::daemon::Event;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

pub fn serve(path: &Path, events: Sender<Event>) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("control socket {}: {e}", path.display()))?;
    std::thread::Builder::new()
        .name("siplb-socket".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let events = events.clone();
                let _ = std::thread::Builder::new()
                    .name("siplb-client".into())
                    .spawn(move || handle(conn, events));
            }
        })?;
    Ok(())
}

fn handle(conn: UnixStream, events: Sender<Event>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            let (tx, rx) = channel();
            if events.send(Event::Api(req, tx)).is_err() {
                return;
            }
            rx.recv_timeout(Duration::from_secs(30))
                .unwrap_or(Response::Error {
                    message: "the control daemon did not answer in time".into(),
                })
        }
        Err(e) => Response::Error {
            message: format!("malformed request: {e}"),
        },
    };
    let mut conn = conn;
    let _ = writeln!(
        conn,
        "{}",
        serde_json::to_string(&response).unwrap_or_default()
    );
}
