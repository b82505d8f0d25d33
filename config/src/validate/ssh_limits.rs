//! `[ssh]` limits with a range of their own: the per-stream window and
//! the sessions per node.

use super::Ctx;
use crate::raw::RawSsh;
use crate::units::Problem;

/// The per-stream SSH receive window: at least one full SSH packet, at most
/// what the protocol's 32-bit window can express.
pub(super) fn stream_window(cx: &mut Ctx<'_>, raw: &RawSsh) -> usize {
    const MIN: usize = 32 << 10;
    const MAX: usize = 1 << 30;
    let key = "ssh.max_stream_buffer";
    let n = cx.size(key, raw.max_stream_buffer.as_ref(), 2 << 20);
    if let Some(v) = raw
        .max_stream_buffer
        .as_ref()
        .filter(|_| !(MIN..=MAX).contains(&n))
    {
        let p = Problem {
            message: format!("{n} bytes is outside 32KiB..=1GiB"),
            hint: Some("use the SSH window of one stream, e.g. \"2MiB\"".into()),
        };
        cx.report(&v.span(), key, p);
        return 2 << 20;
    }
    n
}

/// The most SSH sessions per node `ssh.sessions_per_node` accepts: each one
/// is another sshd process on the node and another handshake at start.
const MAX_SESSIONS_PER_NODE: u32 = 8;

pub(super) fn sessions_per_node(cx: &mut Ctx<'_>, raw: &RawSsh) -> usize {
    let key = "ssh.sessions_per_node";
    let n = cx.count(key, raw.sessions_per_node.as_ref(), 1, 1);
    if n > MAX_SESSIONS_PER_NODE {
        if let Some(v) = &raw.sessions_per_node {
            let p = Problem {
                message: format!("{n} is out of range 1..={MAX_SESSIONS_PER_NODE}"),
                hint: Some(
                    "each session is one more sshd process per node; 2 spreads a busy node's streams over two".into(),
                ),
            };
            cx.report(&v.span(), key, p);
        }
        return 1;
    }
    n as usize
}
