//! A TCP proxy owned by one test, between ferry and a server (PostgreSQL, RabbitMQ).
//!
//! An outage of a shared server is simulated here, never by stopping the server: other tests
//! use it at the same time. [`Proxy::cut`] closes every connection through the proxy and
//! refuses new ones (accepted and closed at once, as a dead peer or a partition looks to a
//! client) until [`Proxy::restore`]. [`Proxy::refuse_next`] refuses an exact number of new
//! connections, for tests that count a client's reconnect attempts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropping it stops accepting (connections in flight end with their peers).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    cut: AtomicBool,
    /// Bumped at every cut: live connections watch it and close.
    epoch: watch::Sender<u64>,
    accepted: AtomicU64,
    /// New connections still to refuse before letting them through again.
    refuse: AtomicU64,
}

impl Proxy {
    /// A proxy on a free 127.0.0.1 port, forwarding to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            cut: AtomicBool::new(false),
            epoch: watch::channel(0).0,
            accepted: AtomicU64::new(0),
            refuse: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::Relaxed);
                let refused = s
                    .refuse
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refused || s.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, s.clone()));
            }
        });
        Ok(Proxy { addr, shared, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Closes every live connection once; new ones are let through.
    pub fn reset_connections(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Refuses the next `n` new connections (accepted and closed at once, as [`Proxy::cut`]
    /// does), then lets them through; live connections are left alone.
    pub fn refuse_next(&self, n: u64) {
        self.shared.refuse.store(n, Ordering::SeqCst);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn forward(mut client: TcpStream, shared: Arc<Shared>) {
    let mut epoch = shared.epoch.subscribe();
    epoch.borrow_and_update();
    let Ok(mut server) = TcpStream::connect(shared.target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = epoch.changed() => {}
    }
    // Dropping both ends closes them: the client sees its connection end.
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn echo(c: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        c.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(std::time::Duration::from_secs(5), c.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("timeout"))??;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn cut_closes_live_connections_and_refuses_new_ones_until_restored() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut c).await.unwrap(), b"ping");
        proxy.cut();
        assert!(
            echo(&mut c).await.is_err(),
            "the live connection was closed"
        );
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echo(&mut refused).await.is_err(), "a new one is refused");
        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut again).await.unwrap(), b"ping");
        assert_eq!(proxy.accepted(), 3);
    }

    #[tokio::test]
    async fn refuse_next_refuses_exactly_that_many_new_connections() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut live = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut live).await.unwrap(), b"ping");
        proxy.refuse_next(2);
        for _ in 0..2 {
            let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
            assert!(echo(&mut refused).await.is_err(), "refused");
        }
        let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut third).await.unwrap(), b"ping");
        assert_eq!(echo(&mut live).await.unwrap(), b"ping", "left alone");
        assert_eq!(proxy.accepted(), 4);
    }
}
