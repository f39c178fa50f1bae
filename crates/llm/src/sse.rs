//! A minimal Server-Sent Events parser (the `text/event-stream` format).
//!
//! Hand-written rather than `eventsource-stream` because the providers use a small subset
//! (`event:` and `data:` fields), the parser must bound memory (a provider that never sends a
//! newline must not grow a buffer forever), and it is fed from `reqwest::Response::chunk`
//! without the `stream` feature. ~60 lines with unit tests.

use crate::LlmError;

/// The longest line or event accepted, in bytes.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, if any.
    pub(crate) event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub(crate) data: String,
}

/// Incremental parser: feed it bytes as they arrive, collect the complete events.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LlmError> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                let line = std::mem::take(&mut self.line);
                if let Some(event) = self.line_done(&line)? {
                    events.push(event);
                }
            } else {
                self.line.push(byte);
                if self.line.len() > MAX_EVENT_BYTES {
                    return Err(LlmError::Protocol("an SSE line exceeds 4 MiB".into()));
                }
            }
        }
        Ok(events)
    }

    /// Flushes an event the stream ended without a blank line after.
    pub(crate) fn finish(&mut self) -> Result<Option<SseEvent>, LlmError> {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty()
            && let Some(event) = self.line_done(&line)?
        {
            return Ok(Some(event));
        }
        self.line_done(b"")
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, LlmError> {
        if line.is_empty() {
            let event = self.event.take();
            return Ok(self.data.take().map(|data| SseEvent { event, data }));
        }
        if line.starts_with(b":") {
            return Ok(None);
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| LlmError::Protocol("an SSE line is not UTF-8".into()))?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                let data = match self.data.as_mut() {
                    Some(data) => {
                        data.push('\n');
                        data
                    }
                    None => self.data.insert(String::new()),
                };
                data.push_str(value);
                if data.len() > MAX_EVENT_BYTES {
                    return Err(LlmError::Protocol("an SSE event exceeds 4 MiB".into()));
                }
            }
            _ => {} // id, retry and unknown fields are ignored
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_across_chunk_boundaries() -> Result<(), LlmError> {
        let mut parser = SseParser::default();
        let mut events = parser.feed(b"event: ping\ndata: {\"a\"")?;
        assert!(events.is_empty());
        events.extend(parser.feed(b":1}\r\n\r\n: comment\ndata:x\ndata: y\n\n")?);
        events.extend(parser.feed(b"data: [DONE]")?);
        events.extend(parser.finish()?);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("ping".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: None,
                    data: "x\ny".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                },
            ]
        );
        Ok(())
    }

    #[test]
    fn rejects_unbounded_lines() {
        let mut parser = SseParser::default();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert!(matches!(parser.feed(&big), Err(LlmError::Protocol(_))));
    }
}
