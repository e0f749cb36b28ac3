//! What each accepted connection is wrapped in, for two things hyper 1 does not offer:
//!
//! - **An idle timeout apart from the header timeout.** hyper arms `header_read_timeout` as soon
//!   as it waits for a request head, so an idle keep-alive connection is closed after it (10 s),
//!   while a proxy's upstream pool (nginx `keepalive_timeout`, 60 s by default) keeps it longer
//!   and then sends on a closed connection. [`HeadTimer`] is the connection's HTTP/1 timer: a
//!   head timer armed while no byte of the next request has arrived runs for `idle` instead,
//!   and turns into the header timeout, from its first byte, once one arrives ([`Bytes`]
//!   counts them as [`ConnIo`] reads). Slow-loris protection is kept: a head that has started
//!   must be complete within the header timeout.
//! - **JSON error bodies on the answers hyper writes itself.** A request hyper cannot parse (a
//!   byte outside the header grammar, a request target over 65,534 bytes, a head over its
//!   buffer) is answered by hyper with an empty `400`, `414` or `431` and the connection closes
//!   (`hyper::proto::h1::role::Server::on_error`). [`ConnIo`] recognises that head (such a status
//!   with `content-length: 0` and no `content-type`, which no answer of this host has: every
//!   error of its own is JSON) and writes the host's JSON error in its place, counted like any
//!   rejection. HTTP/2 connections are left alone.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Metrics;

/// Bytes read from one connection so far.
#[derive(Debug, Default)]
pub struct Bytes(AtomicU64);

impl Bytes {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A connection's stream, counting what it reads and replacing hyper's empty error answers.
pub struct ConnIo<S> {
    inner: S,
    read: Arc<Bytes>,
    metrics: Arc<Metrics>,
    /// Whether the connection may still carry one of hyper's own error answers: until it is
    /// known to be HTTP/2, or one has been replaced.
    watch: bool,
    /// The host's answer in place of hyper's, still to be written.
    pending: Vec<u8>,
    written: usize,
}

impl<S> ConnIo<S> {
    /// Wraps `inner`; `read` counts its bytes for the connection's [`HeadTimer`].
    pub fn new(inner: S, read: Arc<Bytes>, metrics: Arc<Metrics>) -> Self {
        ConnIo { inner, read, metrics, watch: true, pending: Vec::new(), written: 0 }
    }
}

impl<S> ConnIo<S> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if self.read.get() == 0 && new.starts_with(b"PRI ") {
            // The HTTP/2 preface: frames from here on.
            self.watch = false;
        }
        self.read.0.fetch_add(new.len() as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> ConnIo<S> {
    /// Writes what is left of the replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if this.watch
            && let Some(status) = hypers_own_error(buf)
        {
            this.watch = false;
            this.pending = error_answer(status, &this.metrics);
            this.written = 0;
            // hyper's head counts as written; the replacement goes out now or on the next flush.
            return match this.poll_pending(cx) {
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes a head in one buffer, which is what is recognised.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// The status of hyper's own error answer if `head` is one: `HTTP/1.1 400|414|431`, with
/// `content-length: 0` and no `content-type`.
fn hypers_own_error(head: &[u8]) -> Option<u16> {
    let status = match head.get(..13)? {
        b"HTTP/1.1 400 " => 400,
        b"HTTP/1.1 414 " => 414,
        b"HTTP/1.1 431 " => 431,
        _ => return None,
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    (headers.contains("\r\ncontent-length: 0") && !headers.contains("\r\ncontent-type:")).then_some(status)
}

/// The host's JSON answer for a request hyper could not parse, counted as a rejection.
fn error_answer(status: u16, metrics: &Metrics) -> Vec<u8> {
    let (reason, code, message) = match status {
        414 => (
            "URI Too Long",
            "uri_too_long",
            "the request target is longer than 65,534 bytes: send large inputs in the body",
        ),
        431 => (
            "Request Header Fields Too Large",
            "headers_too_large",
            "the request head is over 400 KiB or has more than 100 headers",
        ),
        _ => (
            "Bad Request",
            "malformed_http",
            "not a valid HTTP/1.1 request: a malformed request line (method, target, version) or a header with a \
             byte outside the header grammar (control characters, non-ASCII in a name)",
        ),
    };
    metrics.rejected(status, code);
    let body = serde_json::json!({ "error": { "status": status, "code": code, "message": message } }).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The HTTP/1 timer of one connection (see the module's documentation): a request head has
/// `header` from its first byte, an idle connection `idle` until one arrives.
#[derive(Clone)]
pub struct HeadTimer {
    read: Arc<Bytes>,
    header: Duration,
    idle: Duration,
}

impl HeadTimer {
    /// The timer of the connection whose reads `read` counts; hyper's `header_read_timeout` must
    /// be `header`.
    pub fn new(read: Arc<Bytes>, header: Duration, idle: Duration) -> Self {
        HeadTimer { read, header, idle }
    }

    fn arm(&self, sleep: &mut HeadSleep, deadline: Instant) {
        // hyper asks for `now + header`: a head timer (any other deadline is left as asked).
        let now = Instant::now();
        let is_head = deadline.saturating_duration_since(now) <= self.header;
        sleep.since = self.read.get();
        sleep.head_started = !is_head;
        let first = if is_head { now + self.idle.max(self.header) } else { deadline };
        sleep.inner.as_mut().reset(first.into());
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let mut sleep = HeadSleep {
            read: self.read.clone(),
            header: self.header,
            since: 0,
            head_started: false,
            inner: Box::pin(tokio::time::sleep_until(deadline.into())),
        };
        self.arm(&mut sleep, deadline);
        Box::pin(sleep)
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeadSleep>() {
            // No allocation per request: the connection's one timer is re-armed in place.
            Some(mut ours) => self.arm(&mut ours, deadline),
            None => *sleep = self.sleep_until(deadline),
        }
    }
}

/// A head timer: idle until the connection reads a byte, then the header timeout.
struct HeadSleep {
    read: Arc<Bytes>,
    header: Duration,
    /// Bytes read when it was armed.
    since: u64,
    head_started: bool,
    inner: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls its head timer each time the head it reads is still incomplete, so a
        // new byte is seen here right after it arrives.
        if !self.head_started && self.read.get() != self.since {
            self.head_started = true;
            let deadline = tokio::time::Instant::now() + self.header;
            self.inner.as_mut().reset(deadline);
        }
        self.inner.as_mut().poll(cx)
    }
}

impl Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_error_heads_are_replaced() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 22:00:00 GMT\r\n\r\n";
        assert_eq!(hypers_own_error(hyper), Some(400));
        let long = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hypers_own_error(long), Some(414));
        // The host's own answers carry a content-type and a body.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hypers_own_error(ours), None);
        assert_eq!(hypers_own_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(hypers_own_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n"), None);
        assert_eq!(hypers_own_error(b"{\"items\": []}"), None);
    }

    #[test]
    fn the_replacement_is_a_json_answer_that_closes() {
        let metrics = Metrics::new();
        let answer = String::from_utf8(error_answer(414, &metrics)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"));
        assert!(head.contains("connection: close") && head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "uri_too_long");
    }
}
