//! Free loopback ports, picked at run time.
//!
//! A port is found by binding `127.0.0.1:0`, reading the port and closing the socket. Ports
//! handed out by this process are remembered and never handed out twice, so environments
//! started in parallel in one test binary do not collide with each other; a collision with
//! another process remains possible (the port is free only at the moment it is checked) and
//! is handled by the caller retrying with new ports.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::sync::{Mutex, OnceLock};

const MAX_TRIES: usize = 64;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static SET: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    SET.get_or_init(|| Mutex::new(HashSet::new()))
}

fn claim(port: u16) -> bool {
    match handed_out().lock() {
        Ok(mut set) => set.insert(port),
        // A poisoned set still holds valid data.
        Err(poisoned) => poisoned.into_inner().insert(port),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed
/// out before.
pub fn free_tcp_port() -> io::Result<u16> {
    for _ in 0..MAX_TRIES {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        drop(listener);
        if claim(port) {
            return Ok(port);
        }
    }
    Err(io::Error::other(format!(
        "no unused loopback TCP port found in {MAX_TRIES} tries"
    )))
}

/// A port free for both TCP and UDP on 127.0.0.1 (for a DNS server).
pub fn free_tcp_udp_port() -> io::Result<u16> {
    for _ in 0..MAX_TRIES {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let udp_free = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok();
        drop(listener);
        if udp_free && claim(port) {
            return Ok(port);
        }
    }
    Err(io::Error::other(format!(
        "no loopback port free for both TCP and UDP found in {MAX_TRIES} tries"
    )))
}

/// Whether a server failed to start because a port picked for it was taken meanwhile (by
/// another process): then the caller retries with fresh ports. BIND says "address in use".
pub fn is_port_clash(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}").to_ascii_lowercase();
    text.contains("address already in use") || text.contains("address in use")
}
