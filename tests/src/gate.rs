//! A TCP relay that can be cut, for partition tests: one address on
//! loopback in front of one backend (a kube-apiserver), bytes copied both
//! ways. [`Gate::cut`] stops forwarding on every connection, open or new,
//! and keeps them open, as a network partition looks to a client: a dial
//! that succeeds, then silence until its own timeouts fire.
//! [`Gate::heal`] drops the held connections and forwards new ones again.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A running gate; dropping it stops it and closes every connection
/// through it.
pub struct Gate {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    _tasks: JoinSet<()>,
}

impl Gate {
    /// Listens on a free port of `backend`'s own address (so that its
    /// server certificate stays valid through the gate), open.
    pub async fn start(backend: SocketAddr) -> anyhow::Result<Gate> {
        let listener = TcpListener::bind(SocketAddr::new(backend.ip(), 0)).await?;
        let addr = listener.local_addr()?;
        let (cut, watching) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept(listener, backend, watching));
        Ok(Gate {
            addr,
            cut,
            _tasks: tasks,
        })
    }

    /// Partitions: every connection through the gate goes silent.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Ends the partition: new connections reach the backend again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

async fn accept(listener: TcpListener, backend: SocketAddr, cut: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        conns.spawn(relay(client, backend, cut.clone()));
        while conns.try_join_next().is_some() {}
    }
}

async fn relay(mut client: TcpStream, backend: SocketAddr, mut cut: watch::Receiver<bool>) {
    if *cut.borrow_and_update() {
        // Held, silent, until the partition ends; then dropped, so that
        // the client dials again into a healed network.
        let _ = cut.wait_for(|c| !c).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(backend).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = cut.wait_for(|c| *c) => {}
    }
    // Silent, both sockets open, until the partition ends.
    let _ = cut.wait_for(|c| !c).await;
}
