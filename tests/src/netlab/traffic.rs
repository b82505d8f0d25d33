//! Continuous traffic through the bridge to every node while a fault is
//! on: each target gets a CONNECT, an echo round trip and a close, again
//! and again, and every attempt is recorded with its time, its latency and
//! what went wrong.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::Egress;

/// Bound on one whole attempt (CONNECT and round trip).
const ATTEMPT: Duration = Duration::from_secs(15);

/// One attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The node it went to.
    pub node: String,
    /// When it started.
    pub at: Instant,
    /// How long the CONNECT took to answer.
    pub dial: Duration,
    /// `Err` with the status and reason (or the I/O error) on failure.
    pub result: Result<(), String>,
}

/// Background traffic; stops on drop.
#[derive(Debug)]
pub struct Traffic {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    stop: CancellationToken,
}

impl Traffic {
    /// Starts one loop per `(node, echo target)`, pausing `pause` between
    /// attempts.
    pub fn start(egress: Egress, targets: Vec<(String, String)>, pause: Duration) -> Traffic {
        let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let stop = CancellationToken::new();
        for (node, target) in targets {
            let (egress, attempts, stop) = (egress.clone(), attempts.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let at = Instant::now();
                    let (dial, result) = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = tokio::time::timeout(ATTEMPT, attempt(&egress, &target)) => match r {
                            Ok(r) => r,
                            Err(_) => (at.elapsed(), Err(format!("no answer within {ATTEMPT:?}"))),
                        },
                    };
                    attempts.lock().expect("poisoned").push(Attempt {
                        node: node.clone(),
                        at,
                        dial,
                        result,
                    });
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            });
        }
        Traffic { attempts, stop }
    }

    /// Every attempt so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().expect("poisoned").clone()
    }

    /// Attempts to `node` that started at or after `from`.
    pub fn to_node_since(&self, node: &str, from: Instant) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.node == node && a.at >= from)
            .collect()
    }

    /// Failed attempts to any node but `except` started at or after `from`.
    pub fn failures_elsewhere(&self, except: &str, from: Instant) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.node != except && a.at >= from && a.result.is_err())
            .collect()
    }

    /// Stops every loop.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One CONNECT and a 64-byte echo round trip.
async fn attempt(egress: &Egress, target: &str) -> (Duration, Result<(), String>) {
    let started = Instant::now();
    let connected = egress.connect(target).await;
    let dial = started.elapsed();
    let mut c = match connected {
        Ok(c) if c.status == 200 => c,
        Ok(c) => return (dial, Err(format!("{} {}", c.status, c.body.trim()))),
        Err(e) => return (dial, Err(format!("{e:#}"))),
    };
    let mut msg = [0u8; 64];
    rand::thread_rng().fill_bytes(&mut msg);
    let io = async {
        c.stream.write_all(&msg).await?;
        let mut back = [0u8; 64];
        c.stream.read_exact(&mut back).await?;
        anyhow::ensure!(back == msg, "the echo came back different");
        Ok(())
    };
    (dial, io.await.map_err(|e| format!("echo: {e:#}")))
}
