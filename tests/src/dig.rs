//! Asking a DNS server with `dig`, as the BIND and DNS-lab harnesses do to see that a server
//! serves its zones and what TXT values it holds.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Instant;

use anyhow::Result;

use crate::server_process::ServerProcess;

/// `dig +short` lines for `name`/`rtype` at `server`.
pub(crate) fn dig(
    server: SocketAddr,
    name: &str,
    rtype: &str,
    recursion: bool,
) -> Result<Vec<String>> {
    let out = crate::run_output(
        Command::new("dig")
            .arg(format!("@{}", server.ip()))
            .args(["-p", &server.port().to_string()])
            .args(["+short", "+time=1", "+tries=1"])
            .arg(if recursion { "+rec" } else { "+norec" })
            .args([rtype, name]),
    )?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// The TXT values `server` itself serves for `name` (recursion off).
pub(crate) fn txt(server: SocketAddr, name: &str) -> Result<Vec<String>> {
    Ok(dig(server, name, "TXT", false)?
        .into_iter()
        .filter(|l| l.starts_with('"'))
        .map(|l| l.trim_matches('"').to_owned())
        .collect())
}

/// Waits until `process`, listening on `addr`, answers the SOA of every one of `zones`
/// (`recursion` for a resolver), all within `started` + `deadline`.
pub(crate) async fn wait_serving<'z>(
    process: &ServerProcess,
    addr: SocketAddr,
    zones: impl IntoIterator<Item = &'z str>,
    recursion: bool,
    started: Instant,
    deadline: std::time::Duration,
) -> Result<()> {
    for zone in zones {
        let left = deadline.saturating_sub(started.elapsed());
        process
            .wait_ready(&format!("serve {zone} on {addr}"), left, || async move {
                dig(addr, zone, "SOA", recursion).is_ok_and(|a| !a.is_empty())
            })
            .await?;
    }
    Ok(())
}
