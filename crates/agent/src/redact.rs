//! Redaction of a tool call's own credential from what the tool returns.
//!
//! Some resource APIs echo the request back (an `Authorization` header, a debug field, an
//! error quoting the token). Before a tool result goes to the model, the event stream and
//! the stored conversation, every occurrence of the token used for that call is replaced
//! by [`REDACTED`], in the forms an echo commonly takes:
//!
//! - as is (which covers `Bearer <token>`);
//! - JSON-escaped (`\"`, `\\`, control characters, and `\/`);
//! - percent-encoded (RFC 3986 unreserved kept, or everything but letters and digits
//!   encoded; upper- and lower-case hex);
//! - base64 (standard and URL-safe alphabets) of any text containing the token, e.g. an
//!   echoed `Authorization: Basic …` or a base64-encoded `Bearer <token>`: for each of
//!   the three byte alignments the token can have inside the encoded text, the run of
//!   base64 characters that depends on the token alone.
//!
//! A derived form shorter than [`MIN_DERIVED_LEN`] is not searched for (it could match
//! ordinary text); the token itself always is.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};

/// What replaces the credential.
pub const REDACTED: &str = "[REDACTED]";
/// Shortest derived form searched for.
pub const MIN_DERIVED_LEN: usize = 8;

const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The forms of one credential to remove from text. `Debug` shows nothing of them.
pub struct Redactor {
    /// Longest first, so a longer form is replaced before a shorter one inside it.
    needles: Vec<SecretString>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("forms", &self.needles.len())
            .finish()
    }
}

impl Redactor {
    /// The forms of `secret`.
    pub fn new(secret: &SecretString) -> Self {
        let secret = secret.expose_secret();
        let mut forms: Vec<String> = vec![];
        if !secret.is_empty() {
            forms.push(secret.to_string());
            let json = serde_json::to_string(secret).unwrap_or_default();
            let json = json
                .strip_prefix('"')
                .and_then(|j| j.strip_suffix('"'))
                .unwrap_or_default()
                .to_string();
            forms.push(json.replace('/', "\\/"));
            forms.push(json);
            for set in [UNRESERVED, NON_ALPHANUMERIC] {
                let upper = utf8_percent_encode(secret, set).to_string();
                forms.push(lower_hex_escapes(&upper));
                forms.push(upper);
            }
            for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
                forms.extend(base64_cores(&engine, secret.as_bytes()));
            }
        }
        let mut needles: Vec<String> = vec![];
        for (i, form) in forms.into_iter().enumerate() {
            let derived = i > 0;
            if form.is_empty()
                || (derived && form.len() < MIN_DERIVED_LEN)
                || needles.contains(&form)
            {
                continue;
            }
            needles.push(form);
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Self {
            needles: needles.into_iter().map(SecretString::from).collect(),
        }
    }

    /// `text` with every form of the credential replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for needle in &self.needles {
            let needle = needle.expose_secret();
            if out.contains(needle) {
                out = out.replace(needle, REDACTED);
            }
        }
        out
    }

    /// `text` cut short (a response truncated at a byte limit) without a trailing piece
    /// that could be the start of one of the forms.
    pub fn trim_partial_tail<'a>(&self, text: &'a str) -> &'a str {
        let mut cut = text.len();
        for needle in &self.needles {
            let needle = needle.expose_secret();
            let longest = needle.len().saturating_sub(1).min(text.len());
            for len in (1..=longest).rev() {
                let start = text.len() - len;
                if start < cut
                    && text.is_char_boundary(start)
                    && needle.as_bytes().starts_with(&text.as_bytes()[start..])
                {
                    cut = start;
                    break;
                }
            }
        }
        &text[..cut]
    }
}

/// `%2F` → `%2f`.
fn lower_hex_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut hex_left = 0;
    for c in text.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// For each byte alignment (0, 1, 2) of `secret` inside a longer base64-encoded text, the
/// base64 characters determined by `secret`'s bytes alone.
fn base64_cores(engine: &impl Engine, secret: &[u8]) -> Vec<String> {
    let n = secret.len();
    (0..3usize)
        .filter_map(|k| {
            let mut bytes = vec![0u8; k];
            bytes.extend_from_slice(secret);
            let encoded = engine.encode(&bytes);
            // Character i covers bits [6i, 6i + 6); the secret covers [8k, 8k + 8n).
            let first = (8 * k).div_ceil(6);
            let end = (8 * (k + n)) / 6;
            encoded.get(first..end).map(str::to_string)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    const TOKEN: &str = "gho_S3cr3t/Tok+en=with~chars.\"x\\";

    fn redactor() -> Redactor {
        Redactor::new(&SecretString::from(TOKEN.to_string()))
    }

    #[test]
    fn every_common_echo_of_the_token_is_redacted() {
        let r = redactor();
        let json_escaped = serde_json::to_string(TOKEN).unwrap();
        let echoes = vec![
            TOKEN.to_string(),
            format!("Bearer {TOKEN}"),
            format!(
                "{{\"authorization\":\"Bearer {}\"}}",
                &json_escaped[1..json_escaped.len() - 1]
            ),
            json_escaped.replace('/', "\\/"),
            utf8_percent_encode(TOKEN, UNRESERVED).to_string(),
            lower_hex_escapes(&utf8_percent_encode(TOKEN, NON_ALPHANUMERIC).to_string()),
            format!(
                "https://x.test/?access_token={}",
                utf8_percent_encode(TOKEN, NON_ALPHANUMERIC)
            ),
            STANDARD.encode(TOKEN),
            URL_SAFE.encode(TOKEN),
            STANDARD.encode(format!("Bearer {TOKEN}")),
            STANDARD.encode(format!("user:{TOKEN}")),
            STANDARD.encode(format!("u:{TOKEN}\n")),
            URL_SAFE_NO_PAD.encode(format!("xy{TOKEN}zz")),
        ];
        for echo in echoes {
            let text = format!("before {echo} after");
            let out = r.redact(&text);
            assert!(out.contains(REDACTED), "{echo} -> {out}");
            assert!(
                out.starts_with("before ") && out.ends_with(" after"),
                "{out}"
            );
            for needle in &r.needles {
                assert!(!out.contains(needle.expose_secret()), "{echo} -> {out}");
            }
            assert!(!out.contains("S3cr3t"), "{echo} -> {out}");
        }
        // Unrelated text is unchanged.
        let plain = "{\"login\": \"octo\", \"id\": 7}";
        assert_eq!(r.redact(plain), plain);
    }

    #[test]
    fn a_cut_response_does_not_end_in_part_of_the_token() {
        let r = redactor();
        let text = format!("{{\"echo\": \"{}", &TOKEN[..12]);
        assert_eq!(r.trim_partial_tail(&text), "{\"echo\": \"");
        let base = STANDARD.encode(format!("Bearer {TOKEN}"));
        let cut = &base[..base.len() - 10];
        let trimmed = r.trim_partial_tail(cut);
        assert!(trimmed.len() < cut.len());
        assert_eq!(r.trim_partial_tail("no token here"), "no token here");
    }

    #[test]
    fn an_empty_or_short_secret() {
        let r = Redactor::new(&SecretString::from(String::new()));
        assert_eq!(r.redact("abc"), "abc");
        let r = Redactor::new(&SecretString::from("k1".to_string()));
        assert_eq!(r.redact("a k1 b"), format!("a {REDACTED} b"));
        assert!(!format!("{r:?}").contains("k1"));
    }
}
