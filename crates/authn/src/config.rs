//! The one configuration error of the authentication plumbing and the services built on it.

/// A configuration key that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct ConfigError {
    /// The key without its section prefix, e.g. `alb_signer`.
    pub key: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

/// Check the base URL of a Latchkey service this one calls (`identity_url`): http(s), a
/// host, no credentials, query or fragment.
pub fn service_url(key: &'static str, value: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(value)
        .map_err(|e| ConfigError::new(key, format!("not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(ConfigError::new(
            key,
            "must be an http(s) URL with a host and without credentials, query or fragment",
        ));
    }
    Ok(url)
}
