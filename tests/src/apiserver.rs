//! Interop with real kube-apiserver clients: a hand-built gRPC client that
//! sends the `:authority` grpc-go sends on unix sockets.

pub mod raw_grpc;

pub use raw_grpc::{Answer, RawProxyStream};
