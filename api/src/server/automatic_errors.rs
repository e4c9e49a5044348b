//! hyper answers a request it cannot parse (a NUL in a header, a URL over
//! 64 KB, headers over its buffer) itself, before any handler runs, with an
//! empty body, and has no hook to change it. This wrapper of the connection
//! recognises those answers as they are written and gives them the API's
//! JSON error body, so every answer keeps the documented shape.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{ErrorBody, ErrorResponse};

pin_project! {
    /// A connection whose automatic hyper error answers get a JSON body.
    pub struct AutomaticErrors<S> {
        #[pin]
        inner: S,
        // The rewritten answer, and how much of it has gone out.
        pending: Vec<u8>,
        sent: usize,
    }
}

impl<S> AutomaticErrors<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

/// The code and message of an automatic answer's status.
fn explain(status: u16) -> Option<(&'static str, &'static str)> {
    Some(match status {
        400 => (
            "bad_request",
            "the request is not valid HTTP/1.1: a malformed request line, or a header with bytes headers may not hold (NUL, control characters); fix the request",
        ),
        414 => (
            "uri_too_long",
            "the URL is longer than the 65534 bytes accepted; send long values in the request body",
        ),
        431 => (
            "headers_too_large",
            "the request's headers are too many or too large; send fewer or shorter headers",
        ),
        _ => return None,
    })
}

/// hyper's automatic answer is a head alone: a 400, 414 or 431 status line
/// and `content-length: 0`, never a `content-type` (every answer of the
/// router has one). Returns that answer with a JSON body instead.
fn with_json_body(written: &[u8]) -> Option<Vec<u8>> {
    let rest = written.strip_prefix(b"HTTP/1.1 ")?;
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    let (code, message) = explain(status)?;
    let head_len = written.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&written[..head_len]).ok()?;
    let lower = head.to_ascii_lowercase();
    if lower.contains("\r\ncontent-type:") || !lower.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let body = serde_json::to_string(&ErrorResponse {
        error: ErrorBody {
            code: code.into(),
            message: message.into(),
        },
    })
    .ok()?;
    let at = lower.find("\r\ncontent-length: 0\r\n")?;
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    out.push_str(&head[..at]);
    out.push_str(&format!(
        "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    ));
    out.push_str(&head[at + "\r\ncontent-length: 0\r\n".len()..]);
    out.push_str(&body);
    // Whatever hyper wrote after the head (nothing, for these) is kept.
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&written[head_len..]);
    Some(bytes)
}

impl<S: AsyncWrite> AutomaticErrors<S> {
    /// Sends what is left of a rewritten answer.
    fn poll_pending(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        while *this.sent < this.pending.len() {
            let n = ready!(
                this.inner
                    .as_mut()
                    .poll_write(cx, &this.pending[*this.sent..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *this.sent += n;
        }
        this.pending.clear();
        *this.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead> AsyncRead for AutomaticErrors<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for AutomaticErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.as_mut().poll_pending(cx))?;
        // hyper writes a head in one buffer (this type is not vectored), so
        // an automatic answer is seen whole here.
        if let Some(answer) = with_json_body(buf) {
            let this = self.as_mut().project();
            *this.pending = answer;
            *this.sent = 0;
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            // The rest goes out on the flush hyper does next.
            return Poll::Ready(Ok(buf.len()));
        }
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_pending(cx))?;
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_pending(cx))?;
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_error_heads_get_a_json_body() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 12:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(with_json_body(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        assert!(head.contains("\r\ndate: "));
        let parsed: ErrorResponse = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.error.code, "uri_too_long");
    }

    #[test]
    fn answers_of_the_router_are_left_alone() {
        // A handler's error has a content type and a body.
        let json = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert!(with_json_body(json).is_none());
        // Other statuses, body chunks and partial heads are not touched.
        assert!(with_json_body(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(with_json_body(b"{\"a\": 1}").is_none());
        assert!(with_json_body(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n").is_none());
    }
}
