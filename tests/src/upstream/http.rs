//! A plain HTTP target for `proxy-test-client`: it answers every GET with
//! the same random text body (so the client's output can be checked byte
//! for byte) and records each request head it received.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A running HTTP target on a port below the ephemeral range (upstream's
/// test client refuses ports above 49151). Stops when dropped.
pub struct HttpTarget {
    addr: SocketAddr,
    body: String,
    heads: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl HttpTarget {
    /// Binds `ip` and serves a body of `len` random hex digits.
    pub async fn start(ip: IpAddr, len: usize) -> anyhow::Result<Self> {
        let mut listener = None;
        for _ in 0..20 {
            let port = super::low_port(ip)?;
            if let Ok(l) = tokio::net::TcpListener::bind((ip, port)).await {
                listener = Some(l);
                break;
            }
        }
        let listener = listener.ok_or_else(|| anyhow::anyhow!("no port for the HTTP target"))?;
        let mut raw = vec![0u8; len.div_ceil(2)];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut raw);
        let mut body = crate::pods::hex(&raw);
        body.truncate(len);
        let target = HttpTarget {
            addr: listener.local_addr()?,
            body,
            heads: Arc::default(),
            stop: CancellationToken::new(),
        };
        let (body, heads, stop) = (
            target.body.clone(),
            target.heads.clone(),
            target.stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (s, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (body, heads) = (body.clone(), heads.clone());
                tokio::spawn(serve(s, body, heads));
            }
        });
        Ok(target)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The body every GET gets.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// Request heads received so far, in order.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("poisoned").clone()
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(mut s: tokio::net::TcpStream, body: String, heads: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(std::time::Duration::from_secs(30), read).await,
        Ok(true)
    ) {
        return;
    }
    heads
        .lock()
        .expect("poisoned")
        .push(String::from_utf8_lossy(&head).into_owned());
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}
