//! In-process HTTP servers built from an axum `Router`, for tests that need response
//! headers (`Link`, `Retry-After`, `WWW-Authenticate`), scripted status sequences or
//! slow answers — what `support::http`'s fixed servers do not offer.

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A router served on an ephemeral 127.0.0.1 port until dropped.
pub struct Served {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Served {
    pub async fn start(router: Router) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("binding 127.0.0.1:0 for an in-process HTTP server");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("serving an in-process HTTP server");
        });
        Self { addr, task }
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, as it appears in image references.
    #[must_use]
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
