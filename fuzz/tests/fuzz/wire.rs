//! Bytes from the network: the CONNECT head, Konnectivity packets, agent
//! identifiers. (The admin API's requests are parsed by hyper.)

use std::net::IpAddr;

use prost::Message;
use sshbridge::egress::head;
use sshbridge_config::{HostPort, Node, Route};
use sshbridge_fuzz::{fuzz, Target};
use sshbridge_konnectivity::identifiers::Identifiers;
use sshbridge_konnectivity::proto::Packet;

/// The frontend's head limit.
const MAX_HEAD: usize = 8 * 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

#[test]
fn fuzz_connect_head() {
    let rt = runtime();
    let seeds = [
        "CONNECT 10.0.0.1:10250 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "CONNECT node-1:22 HTTP/1.1\r\n\r\nearly bytes",
        "CONNECT [fd00::1]:443 HTTP/1.1\r\nHost: x\r\nUser-Agent: y\r\n\r\n",
        "GET /report HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ];
    let target = Target {
        name: "connect_head",
        seeds: seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        dictionary: vec![
            b"\r\n",
            b"\r\n\r\n",
            b":",
            b"[",
            b"]",
            b" ",
            b"CONNECT ",
            b"HTTP/1.1",
            b"65535",
            b"65536",
            b"0",
            b":0 ",
            b"::",
            b"%",
            b"\n",
        ],
    };
    fuzz(target, |input| {
        let parsed = rt.block_on(head::read(&mut &input[..], MAX_HEAD));
        if let Ok(c) = parsed {
            // What was parsed is a valid target again, unchanged.
            let authority = if c.host.contains(':') {
                format!("[{}]:{}", c.host, c.port)
            } else {
                format!("{}:{}", c.host, c.port)
            };
            let again = head::parse_authority(&authority)
                .map_err(|e| format!("parsed {authority:?} does not parse again: {e}"))?;
            if again != (c.host.clone(), c.port) {
                return Err(format!("{authority:?} parses to {again:?}"));
            }
            if c.port == 0 {
                return Err("port 0 accepted".into());
            }
            // Bytes after the head are kept, not lost.
            let end = find_end(input).ok_or("a head was parsed without its end")?;
            if c.early_data != input[end..] {
                return Err("early data differs from the bytes after the head".into());
            }
        }
        Ok(())
    });
}

fn find_end(input: &[u8]) -> Option<usize> {
    input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

#[test]
fn fuzz_konnectivity_packet() {
    let seeds: Vec<Vec<u8>> = [
        Packet::dial_request("10.0.0.1:10250", 7),
        Packet::dial_response(7, 3, ""),
        Packet::dial_response(7, 0, "refused"),
        Packet::data(3, b"payload".to_vec()),
        Packet::close_request(3),
        Packet::close_response(3, "gone"),
        Packet::close_dial(7),
    ]
    .iter()
    .map(Message::encode_to_vec)
    .collect();
    let target = Target {
        name: "konnectivity_packet",
        seeds,
        dictionary: vec![
            b"\x08",
            b"\x10",
            b"\x12",
            b"\x1a",
            b"\xff\xff\xff\xff\x0f",
            b"\x80",
        ],
    };
    fuzz(target, |input| {
        let Ok(p) = Packet::decode(input) else {
            return Ok(());
        };
        // Whatever decodes re-encodes to something that decodes the same.
        let again = Packet::decode(p.encode_to_vec().as_slice())
            .map_err(|e| format!("re-encoded packet does not decode: {e}"))?;
        if again != p {
            return Err(format!("{p:?} came back as {again:?}"));
        }
        Ok(())
    });
}

#[test]
fn fuzz_agent_identifiers() {
    let node = Node {
        name: "node-1".into(),
        address: IpAddr::from([10, 0, 0, 1]),
        ssh_address: HostPort {
            host: "10.0.0.1".into(),
            port: 22,
        },
        pod_cidrs: vec!["10.244.1.0/24".parse().expect("cidr")],
        route: Route::Ssh,
    };
    let seeds = [
        "host=node-1&ipv4=10.0.0.1",
        "ipv6=fd00%3A%3A1&cidr=10.244.1.0%2F24&default-route=true",
        "host=a%20b&host=&ipv4=300.1.1.1&x=y",
    ];
    let target = Target {
        name: "agent_identifiers",
        seeds: seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        dictionary: vec![
            b"&", b"=", b"%", b"%2", b"%3A", b"host=", b"cidr=", b"/", b"::",
        ],
    };
    fuzz(target, |input| {
        let query = String::from_utf8_lossy(input);
        let ids = Identifiers::parse(&query);
        let _ = ids.matches(&node);
        if ids.hosts.iter().any(String::is_empty) {
            return Err("an empty host was kept".into());
        }
        Ok(())
    });
}
