//! A TCP load balancer for tests: one listening address on loopback in
//! front of several backends (the Konnectivity listeners of several
//! bridges), round-robin per connection, bytes copied both ways. A backend
//! that refuses the connection is skipped for the next one, as a load
//! balancer with passive health checks does; when every backend refuses,
//! the client's connection is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A running load balancer; dropping it stops it and closes every
/// connection through it.
pub struct LoadBalancer {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Connections handed to each backend so far, by backend index.
    picked: Arc<Vec<AtomicUsize>>,
    _tasks: JoinSet<()>,
}

impl LoadBalancer {
    /// Listens on a free port of 127.0.0.1 in front of `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        anyhow::ensure!(!backends.is_empty(), "a load balancer needs a backend");
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let picked: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let mut tasks = JoinSet::new();
        tasks.spawn(accept(listener, backends, picked.clone()));
        Ok(LoadBalancer {
            addr,
            picked,
            _tasks: tasks,
        })
    }

    /// Connections handed to backend `i` so far.
    pub fn picked(&self, i: usize) -> usize {
        self.picked[i].load(Ordering::Relaxed)
    }
}

async fn accept(listener: TcpListener, backends: Vec<SocketAddr>, picked: Arc<Vec<AtomicUsize>>) {
    let backends = Arc::new(backends);
    let next = Arc::new(AtomicUsize::new(0));
    // Connections live in this set: they end with the accept loop.
    let mut conns = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let (backends, next, picked) = (backends.clone(), next.clone(), picked.clone());
        conns.spawn(async move {
            let n = backends.len();
            let first = next.fetch_add(1, Ordering::Relaxed);
            for k in 0..n {
                let i = (first + k) % n;
                if let Ok(mut server) = TcpStream::connect(backends[i]).await {
                    picked[i].fetch_add(1, Ordering::Relaxed);
                    let mut client = client;
                    let _ = server.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
}
