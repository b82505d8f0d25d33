//! Interop with kube-apiserver: a real control plane (etcd and
//! kube-apiserver v1.20.2 from `scripts/k8s-harness`) whose `cluster`
//! egress runs through the bridge, kubelet stand-ins that answer the paths
//! it proxies to, a raw HTTPS client for upgrade requests, and a
//! hand-built gRPC client that sends the `:authority` grpc-go sends on
//! unix sockets.

pub mod control_plane;
pub mod https;
pub mod kubelet;
pub mod raw_grpc;

pub use control_plane::{Binaries, ControlPlane, ProxyProtocol};
pub use https::{ApiHttps, Response};
pub use kubelet::{ApiKubelet, Seen};
pub use raw_grpc::{Answer, RawProxyStream};
