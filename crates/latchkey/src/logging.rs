//! The process's log subscriber. Text logs (the default) write one line per event: every
//! control character (C0, DEL, C1), Unicode line or paragraph separator and bidirectional
//! formatting character in a message or a field value is escaped (`\n`, `\u{1b}`, ...),
//! so a value that reached a log field cannot write a line of its own or colour the
//! terminal; colours are used only when standard error is a terminal (and `NO_COLOR` is
//! not set). JSON logs are escaped by the JSON encoder.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use latchkey_core::validate::is_unsafe_name_char;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Install the global subscriber: `filter`, JSON or text, on standard error.
pub fn init(filter: tracing_subscriber::EnvFilter, json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init()
    } else {
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        builder.fmt_fields(EscapingFields).with_ansi(ansi).init()
    }
}

/// A text subscriber writing to `writer` exactly as [`init`] configures one (for tests).
#[cfg(test)]
pub fn text_subscriber<W>(writer: W, ansi: bool) -> impl tracing::Subscriber
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(tracing::Level::TRACE)
        .fmt_fields(EscapingFields)
        .with_ansi(ansi)
        .finish()
}

/// Fields as the default text format writes them (`message name=value ...`, values in
/// `Debug` form unless recorded with `%`), with unsafe characters escaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapingFields;

impl<'w> FormatFields<'w> for EscapingFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // `log` crate metadata carried as fields is shown by the formatter itself.
        if name.starts_with("log.") {
            return;
        }
        let mut text = String::new();
        if text.write_fmt(value).is_err() {
            self.result = Err(fmt::Error);
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let escaped = Escaped(&text);
        self.result = if name == "message" {
            write!(self.writer, "{separator}{escaped}")
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{separator}{name}={escaped}")
        };
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// `text` with every unsafe character written as its Rust escape (`\n`, `\u{1b}`).
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if is_unsafe_name_char(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    fn capture(ansi: bool, log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        tracing::subscriber::with_default(text_subscriber(buffer.clone(), ansi), log);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    const FORGED: &str = "alice\n2026-01-01T00:00:00.000000Z  INFO latchkey: session binding completed user=admin\r\u{1b}[31mred\u{1b}[0m\u{2028}\u{202e}x\u{85}";

    #[test]
    fn every_value_is_escaped_onto_one_line() {
        let out = capture(false, || {
            let span = tracing::info_span!("turn", user = %FORGED, session = "s\n1");
            let _guard = span.enter();
            tracing::info!(
                user = %FORGED,
                debug = ?FORGED,
                plain = FORGED,
                error = &std::io::Error::other(FORGED) as &(dyn std::error::Error + 'static),
                "message with {}",
                FORGED
            );
            tracing::warn!("{FORGED}");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "one line per event: {out:?}");
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert!(!out.contains('\r'));
        assert!(!out.contains('\u{2028}') && !out.contains('\u{202e}') && !out.contains('\u{85}'));
        for line in &lines {
            assert!(line.contains(r"alice\n2026-01-01"), "{line}");
            assert!(line.contains(r"\u{1b}[31mred"), "{line}");
            assert!(line.contains(r"\u{2028}\u{202e}x\u{85}"), "{line}");
        }
        let first = lines[0];
        assert!(
            first.contains(r#"turn{user=alice\n2026"#),
            "span fields: {first}"
        );
        assert!(first.contains(r#"session="s\n1""#), "{first}");
        assert!(first.contains(r"message with alice\n"), "{first}");
        assert!(first.contains(r"user=alice\n"), "{first}");
        assert!(first.contains(r#"debug="alice\n"#), "{first}");
        assert!(first.contains(r#"plain="alice\n"#), "{first}");
        assert!(first.contains(r"error=alice\n"), "{first}");
    }

    #[test]
    fn ordinary_values_are_unchanged() {
        let out = capture(false, || {
            tracing::info!(user = %"Zoë", count = 3, name = "gh", "token vended");
        });
        assert!(
            out.trim_end()
                .ends_with(r#"token vended user=Zoë count=3 name="gh""#),
            "{out}"
        );
    }

    #[test]
    fn no_colour_when_asked_for_none() {
        let out = capture(false, || tracing::error!("failed"));
        assert!(!out.contains('\u{1b}'), "{out:?}");
        let coloured = capture(true, || tracing::error!("failed"));
        assert!(
            coloured.contains('\u{1b}'),
            "a terminal gets colours: {coloured:?}"
        );
    }
}
