//! Capture of a guest's stdout and stderr into a bounded in-memory buffer.
//!
//! Output past the cap is dropped (and the log says so) rather than failing
//! the guest's write: a chatty task must not crash because of its logging.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: usize,
}

/// A cloneable handle on one captured stream.
#[derive(Clone)]
pub struct CapturedOutput {
    cap: usize,
    buffer: Arc<Mutex<Buffer>>,
    /// Whether anything was written since the last take: read without the lock.
    written: Arc<AtomicBool>,
}

impl CapturedOutput {
    /// A capture that keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        CapturedOutput { cap, buffer: Arc::default(), written: Arc::default() }
    }

    /// What was written, lossily decoded as UTF-8, with a note if output was dropped.
    pub fn text(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::from_utf8_lossy(&buffer.bytes).into_owned();
        if buffer.dropped > 0 {
            text.push_str(&format!(
                "\n[cairn: {} more bytes dropped; the log keeps {} bytes]\n",
                buffer.dropped, self.cap
            ));
        }
        text
    }
}

impl CapturedOutput {
    /// [`CapturedOutput::text`], then empties the buffer (for the next call on a reused instance).
    pub fn take_text(&self) -> String {
        if !self.written.swap(false, Ordering::Acquire) {
            return String::new();
        }
        let text = self.text();
        *self.buffer.lock().unwrap_or_else(|e| e.into_inner()) = Buffer::default();
        text
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// Writes straight into the buffer: no adapter task per stream.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl CapturedOutput {
    /// Keeps what fits under the cap and counts the rest as dropped.
    fn append(&self, data: &[u8]) {
        self.written.store(true, Ordering::Release);
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.cap.saturating_sub(buffer.bytes.len());
        let kept = room.min(data.len());
        buffer.bytes.extend_from_slice(&data[..kept]);
        buffer.dropped += data.len() - kept;
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
