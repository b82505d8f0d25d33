//! A kube-apiserver-like Konnectivity gRPC client: a `ProxyService` client
//! over the bridge's `egress.grpc_uds` unix socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint, Uri};

use sshbridge_konnectivity::proto::proxy_service_client::ProxyServiceClient;

/// A `ProxyService` client of the socket at `path`; it connects at the
/// first call (HTTP/2 over the unix socket, no TLS, as kube-apiserver).
pub fn proxy_client(path: &Path) -> ProxyServiceClient<Channel> {
    let channel = Endpoint::from_static("http://uds.invalid")
        .connect_with_connector_lazy(UdsConnector(path.to_path_buf()));
    ProxyServiceClient::new(channel)
}

/// Connects tonic's channel to a unix socket.
#[derive(Clone)]
struct UdsConnector(PathBuf);

type Io = TokioIo<UnixStream>;

impl Service<Uri> for UdsConnector {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Io>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(path).await?)) })
    }
}

/// A `Proxy` request that announces the `half-close` extension
/// (docs/konnectivity.md), as sshbridge's own ProxyService clients do;
/// kube-apiserver sends the request without it.
pub fn with_half_close<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let ext = sshbridge_konnectivity::Extensions {
        half_close: true,
        credit: false,
    };
    sshbridge_konnectivity::flow::announce(request.metadata_mut(), ext, 0);
    request
}
