//! `kassa healthcheck`: `GET /healthz` on the address kassa listens on, exit 0 on `200`.
//! The container image's `HEALTHCHECK` runs it, so the image needs no curl.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::CommandError;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A server bound to every address (`0.0.0.0`, `[::]`) is asked on loopback.
fn target(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bind.port()),
        IpAddr::V6(v6) if v6.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bind.port()),
        _ => bind,
    }
}

pub fn run(bind: SocketAddr, out: &mut impl Write) -> Result<(), CommandError> {
    let addr = target(bind);
    let fail = |why: String| CommandError::new(format!("http://{addr}/healthz: {why}"));
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| fail(e.to_string()))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| fail(e.to_string()))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| fail(e.to_string()))?;
    let mut answer = Vec::new();
    // The status line is all that is read; the body is a few bytes anyway.
    stream
        .take(4096)
        .read_to_end(&mut answer)
        .map_err(|e| fail(e.to_string()))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) == Some("200") {
        writeln!(out, "healthy: {status}").map_err(|e| CommandError::new(e.to_string()))
    } else {
        Err(fail(format!("answered {status:?}")))
    }
}
