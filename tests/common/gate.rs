//! A TCP proxy in front of a Halo API that holds file uploads (`PUT /v1/files/…`,
//! `POST /v1/files/batch`) until released: a deploy through it stays `queued` for as long
//! as a test wants to look, or is cut off when the server behind it is killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; dropped, it keeps running until the test's runtime ends.
pub struct Gate {
    /// `http://` address to give the client instead of the server's.
    pub url: String,
    open: tokio::sync::watch::Sender<bool>,
    held: Arc<AtomicBool>,
}

impl Gate {
    /// Lets held and later uploads through.
    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// Whether an upload has reached the gate (and is held, until released).
    pub fn holding(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }
}

fn is_upload(chunk: &[u8]) -> bool {
    [&b"PUT /v1/files/"[..], b"POST /v1/files/batch"]
        .iter()
        .any(|pat| chunk.windows(pat.len()).any(|w| w == *pat))
}

/// A gate in front of `upstream` (`http://host:port`).
pub async fn gate(upstream: &str) -> Gate {
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (open, rx) = tokio::sync::watch::channel(false);
    let held = Arc::new(AtomicBool::new(false));
    let flag = held.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let (mut rx, held) = (rx.clone(), flag.clone());
            tokio::spawn(async move {
                // The server is gone: the client sees its connection closed.
                let Ok(mut server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = cr.read(&mut buf).await?;
                        if n == 0 {
                            return sw.shutdown().await;
                        }
                        if is_upload(&buf[..n]) {
                            held.store(true, Ordering::SeqCst);
                            let _ = rx.wait_for(|open| *open).await;
                        }
                        sw.write_all(&buf[..n]).await?;
                    }
                };
                let down = tokio::io::copy(&mut sr, &mut cw);
                // Either side ending ends the connection: a killed server cuts off a client
                // whose request is still held here.
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    Gate { url, open, held }
}
