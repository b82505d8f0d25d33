//! A hand-built HTTP/2 client for one `ProxyService.Proxy` stream that
//! sends whatever `:authority` it is given, byte for byte: grpc-go clients
//! on a unix socket (the konnectivity-client inside kube-apiserver,
//! upstream's proxy-test-client) send the socket's path there, which no
//! `http::Uri` can hold, so no Rust HTTP/2 client library can send it.
//!
//! Only what one dial needs: the preface, SETTINGS (acknowledged), one
//! HEADERS frame of HPACK literals without indexing, DATA frames carrying
//! gRPC messages, and reading until a DATA packet, an RST_STREAM or a
//! GOAWAY arrives. The server's HEADERS are skipped, not decoded.

use std::time::Duration;

use anyhow::{bail, Context as _};
use prost::Message as _;
use sshbridge::konnectivity::proto::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Bound on each read of the exchange.
const STEP: Duration = Duration::from_secs(15);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_HEADERS: u8 = 0x4;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const PADDED: u8 = 0x8;
/// The one stream this client opens.
const STREAM: u32 = 1;

/// What the server did with the stream, as the client saw it.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// A Konnectivity packet arrived on the stream.
    Packet(Packet),
    /// The server reset the stream with this HTTP/2 error code
    /// (1 = PROTOCOL_ERROR).
    Reset(u32),
    /// The server closed the connection with this GOAWAY error code.
    GoAway(u32),
    /// The stream ended (END_STREAM) without a packet.
    Ended,
}

/// One `ProxyService.Proxy` stream over a unix socket with a chosen
/// `:authority`.
pub struct RawProxyStream {
    io: UnixStream,
    /// gRPC message bytes received but not yet a whole message.
    pending: Vec<u8>,
}

impl RawProxyStream {
    /// Connects to `socket`, opens stream 1 as `POST /ProxyService/Proxy`
    /// with `:authority` = `authority` exactly, and sends `first`.
    pub async fn open(
        socket: &std::path::Path,
        authority: &str,
        first: &Packet,
    ) -> anyhow::Result<Self> {
        let io = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let mut s = RawProxyStream {
            io,
            pending: Vec::new(),
        };
        let mut out = PREFACE.to_vec();
        frame(&mut out, SETTINGS, 0, 0, &[]);
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/ProxyService/Proxy"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            literal(&mut block, name, value);
        }
        frame(&mut out, HEADERS, END_HEADERS, STREAM, &block);
        s.io.write_all(&out).await?;
        s.send(first).await?;
        Ok(s)
    }

    /// Sends `packet` as one gRPC message in one DATA frame.
    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let body = packet.encode_to_vec();
        let mut msg = vec![0u8];
        msg.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
        msg.extend_from_slice(&body);
        let mut out = Vec::new();
        frame(&mut out, DATA, 0, STREAM, &msg);
        self.io.write_all(&out).await?;
        Ok(())
    }

    /// Reads frames until the next packet on the stream, or how it ended.
    pub async fn next(&mut self) -> anyhow::Result<Answer> {
        loop {
            if let Some(packet) = self.take_message()? {
                return Ok(Answer::Packet(packet));
            }
            let (kind, flags, stream, payload) = tokio::time::timeout(STEP, self.read_frame())
                .await
                .with_context(|| format!("no HTTP/2 frame within {STEP:?}"))??;
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    let mut ack = Vec::new();
                    frame(&mut ack, SETTINGS, ACK, 0, &[]);
                    self.io.write_all(&ack).await?;
                }
                RST_STREAM if stream == STREAM => return Ok(Answer::Reset(code(&payload, 0)?)),
                GOAWAY => return Ok(Answer::GoAway(code(&payload, 4)?)),
                DATA if stream == STREAM => {
                    let data = unpad(flags, &payload)?;
                    self.pending.extend_from_slice(data);
                    if flags & END_STREAM != 0 && self.take_message()?.is_none() {
                        return Ok(Answer::Ended);
                    }
                }
                HEADERS if stream == STREAM && flags & END_STREAM != 0 => return Ok(Answer::Ended),
                // Response headers, WINDOW_UPDATE, PING, SETTINGS ACK: not
                // needed for a few small packets.
                _ => {}
            }
        }
    }

    fn take_message(&mut self) -> anyhow::Result<Option<Packet>> {
        if self.pending.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.pending[1..5].try_into()?) as usize;
        if self.pending.len() < 5 + len {
            return Ok(None);
        }
        let packet = Packet::decode(&self.pending[5..5 + len]).context("decoding a Packet")?;
        self.pending.drain(..5 + len);
        Ok(Some(packet))
    }

    async fn read_frame(&mut self) -> anyhow::Result<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        self.io
            .read_exact(&mut head)
            .await
            .context("reading a frame header (connection closed?)")?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes(head[5..9].try_into()?) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        Ok((head[3], head[4], stream, payload))
    }
}

/// Appends a frame header and `payload`.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// HPACK "literal header field without indexing, new name" (RFC 7541
/// 6.2.2), both strings raw (no Huffman).
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    string(out, name.as_bytes());
    string(out, value.as_bytes());
}

/// An HPACK string literal: H=0, 7-bit prefix length (RFC 7541 5.1, 5.2).
fn string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

fn unpad(flags: u8, payload: &[u8]) -> anyhow::Result<&[u8]> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let pad = *payload.first().context("PADDED frame without a length")? as usize;
    match payload.len().checked_sub(pad) {
        Some(end) if end >= 1 => Ok(&payload[1..end]),
        _ => bail!("padding longer than the frame"),
    }
}

/// The 32-bit error code at `at` in an RST_STREAM or GOAWAY payload.
fn code(payload: &[u8], at: usize) -> anyhow::Result<u32> {
    let b = payload.get(at..at + 4).context("short frame")?;
    Ok(u32::from_be_bytes(b.try_into()?))
}
