//! The SSH tunnel as one of a node's [`Path`]s.

use sshbridge_core::path::{DialFuture, Liveness, Path, PathStats};
use sshbridge_core::PathKind;

use crate::{Tunnel, TunnelState};

impl Path for Tunnel {
    fn kind(&self) -> PathKind {
        PathKind::Ssh
    }

    fn dial<'a>(&'a self, host: &'a str, port: u16) -> DialFuture<'a> {
        Box::pin(Tunnel::dial(self, host, port))
    }

    fn is_up(&self) -> bool {
        self.state() == TunnelState::Up
    }

    fn liveness(&self) -> Liveness {
        Liveness::follow(self.subscribe(), |s| *s == TunnelState::Up)
    }

    fn stats(&self) -> PathStats {
        let s = Tunnel::stats(self);
        PathStats {
            open_streams: s.open_streams as u64,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            reconnects: s.reconnects,
            last_error: s.last_error,
            flow_control: None,
            agents: None,
        }
    }

    fn parked(&self) -> bool {
        self.state() == TunnelState::Parked
    }
}
