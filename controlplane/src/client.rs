//! The CLI side of the control socket.

use crate::api::{Request, Response};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub fn call(socket: &Path, req: &Request) -> Result<Response> {
    let mut conn = match UnixStream::connect(socket) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            bail!(
                "no siplb control daemon is listening on {} (is `siplb run` running for this balancer?)",
                socket.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", socket.display())),
    };
    conn.set_read_timeout(Some(Duration::from_secs(40)))?;
    writeln!(conn, "{}", serde_json::to_string(req)?)?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    if line.is_empty() {
        bail!("the control daemon closed the connection without answering");
    }
    serde_json::from_str(&line).context("malformed answer from the control daemon")
}
