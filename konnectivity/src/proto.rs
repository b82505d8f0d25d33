//! Generated Konnectivity messages and gRPC services
//! (proto/konnectivity.proto), plus constructors that keep packet type and
//! payload consistent.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/_.rs"));

use packet::Payload;

/// Constructors that set `type` to match the payload, so no side ever
/// sends a DATA-typed packet carrying a dial request.
impl Packet {
    fn of(kind: PacketType, payload: Payload) -> Packet {
        Packet {
            r#type: kind as i32,
            payload: Some(payload),
        }
    }

    /// DIAL_REQ: dial `address` (`host:port`) over TCP; `random` names the
    /// dial until the answer.
    pub fn dial_request(address: impl Into<String>, random: i64) -> Packet {
        let req = DialRequest {
            protocol: "tcp".into(),
            address: address.into(),
            random,
        };
        Packet::of(PacketType::DialReq, Payload::DialRequest(req))
    }

    /// DIAL_RSP: the dial `random` got `connect_id`, or failed with `error`.
    pub fn dial_response(random: i64, connect_id: i64, error: impl Into<String>) -> Packet {
        let rsp = DialResponse {
            error: error.into(),
            connect_id,
            random,
        };
        Packet::of(PacketType::DialRsp, Payload::DialResponse(rsp))
    }

    /// DATA on a connection.
    pub fn data(connect_id: i64, data: impl Into<Vec<u8>>) -> Packet {
        let data = Data {
            connect_id,
            error: String::new(),
            data: data.into(),
        };
        Packet::of(PacketType::Data, Payload::Data(data))
    }

    /// CLOSE_REQ: close a connection.
    pub fn close_request(connect_id: i64) -> Packet {
        Packet::of(
            PacketType::CloseReq,
            Payload::CloseRequest(CloseRequest { connect_id }),
        )
    }

    /// CLOSE_RSP: a connection is closed (`error` empty when cleanly).
    pub fn close_response(connect_id: i64, error: impl Into<String>) -> Packet {
        let rsp = CloseResponse {
            error: error.into(),
            connect_id,
        };
        Packet::of(PacketType::CloseRsp, Payload::CloseResponse(rsp))
    }

    /// DIAL_CLS: abandon the pending dial `random`.
    pub fn close_dial(random: i64) -> Packet {
        Packet::of(
            PacketType::DialCls,
            Payload::CloseDial(CloseDial { random }),
        )
    }

    /// DRAIN: the agent asks to be preferred less.
    pub fn drain() -> Packet {
        Packet::of(PacketType::Drain, Payload::Drain(Drain {}))
    }

    /// HALF_CLOSE (extension `half-close`): no more DATA from the sender
    /// on `connect_id`.
    pub fn half_close(connect_id: i64) -> Packet {
        Packet::of(
            PacketType::HalfClose,
            Payload::HalfClose(HalfClose { connect_id }),
        )
    }

    /// CREDIT (extension `credit`): the sender's reader took `bytes` more
    /// of `connect_id`'s DATA.
    pub fn credit(connect_id: i64, bytes: u64) -> Packet {
        Packet::of(
            PacketType::Credit,
            Payload::Credit(Credit { connect_id, bytes }),
        )
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn field_numbers_match_the_published_wire_format() {
        // DIAL_REQ{protocol "tcp", address "a:1", random 5}:
        // Packet.type=0 is the default (not encoded); payload field 2.
        let bytes = Packet::dial_request("a:1", 5).encode_to_vec();
        assert_eq!(
            bytes,
            [0x12, 0x0c, 0x0a, 0x03, b't', b'c', b'p', 0x12, 0x03, b'a', b':', b'1', 0x18, 0x05]
        );
        // DATA{connectID 7, data "hi"}: type 4 (field 1), payload field 4.
        let bytes = Packet::data(7, b"hi".to_vec()).encode_to_vec();
        assert_eq!(
            bytes,
            [0x08, 0x04, 0x22, 0x06, 0x08, 0x07, 0x1a, 0x02, b'h', b'i']
        );
        // DIAL_CLS{random 9}: type 5, payload field 7.
        let bytes = Packet::close_dial(9).encode_to_vec();
        assert_eq!(bytes, [0x08, 0x05, 0x3a, 0x02, 0x08, 0x09]);
        // DRAIN: type 6, empty payload field 8.
        assert_eq!(Packet::drain().encode_to_vec(), [0x08, 0x06, 0x42, 0x00]);
        // Extensions (docs/konnectivity.md): HALF_CLOSE{connectID 3} is
        // type 100, payload field 100; CREDIT{connectID 3, bytes 300} is
        // type 101, payload field 101.
        let bytes = Packet::half_close(3).encode_to_vec();
        assert_eq!(bytes, [0x08, 0x64, 0xa2, 0x06, 0x02, 0x08, 0x03]);
        let bytes = Packet::credit(3, 300).encode_to_vec();
        assert_eq!(
            bytes,
            [0x08, 0x65, 0xaa, 0x06, 0x05, 0x08, 0x03, 0x10, 0xac, 0x02]
        );
    }

    #[test]
    fn responses_round_trip() {
        let p = Packet::dial_response(3, 11, "");
        let back = Packet::decode(p.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(back, p);
        assert_eq!(back.r#type(), PacketType::DialRsp);
    }
}
