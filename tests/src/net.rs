//! Loopback addresses and ports for the kit: every node and pod gets its own
//! 127.x.y.0/24 block so that a connection's address alone says which node
//! or pod it belongs to. Nothing here ever leaves 127.0.0.0/8.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;

/// Hands out /24 blocks inside 127.0.0.0/8 (skipping 127.0.0.0/16, which
/// the host itself uses). The start is derived from the process id so two
/// test runs at once rarely share a block; ports are always picked by the
/// OS anyway.
static NEXT_BLOCK: AtomicU32 = AtomicU32::new(u32::MAX);

/// A fresh 127.A.B.0/24 block, returned as its base address.
pub fn block() -> Ipv4Addr {
    let start = (std::process::id() % 200) * 256;
    let _ = NEXT_BLOCK.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    let n = NEXT_BLOCK.fetch_add(1, Ordering::SeqCst) % (254 * 256);
    // Second octet 1..=254, third octet 0..=255.
    Ipv4Addr::new(127, (1 + n / 256) as u8, (n % 256) as u8, 0)
}

/// Address `host` (last octet) inside `block`.
pub fn host(block: Ipv4Addr, host: u8) -> IpAddr {
    let [a, b, c, _] = block.octets();
    IpAddr::V4(Ipv4Addr::new(a, b, c, host))
}

/// A port on `ip` that was free a moment ago: bound to port 0, then
/// released. Callers that hand it to another process must retry if that
/// process then fails to bind it.
pub fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    let l = TcpListener::bind(SocketAddr::new(ip, 0)).with_context(|| format!("bind {ip}:0"))?;
    Ok(l.local_addr()?.port())
}
