//! Polling an authorization session until its token arrives.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;

use crate::{Client, Error, ResourceToken, ResourceTokenRequest};

/// How [`Client::poll_resource_token`] paces itself.
///
/// The delays form an exponential backoff: `initial_delay`, then each delay times
/// `multiplier`, never more than `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollOptions {
    /// Wait before the first call (the user needs time to consent anyway).
    pub initial_delay: Duration,
    /// The longest wait between two calls.
    pub max_delay: Duration,
    /// Growth factor of the wait after each call (values below 1 are taken as 1).
    pub multiplier: f64,
    /// The total time budget, measured from the start of polling; afterwards the poller
    /// ends with [`Error::Deadline`]. A call in flight at the deadline is abandoned.
    pub deadline: Duration,
}

impl Default for PollOptions {
    /// 1 s, doubling, at most 10 s apart, for at most 10 minutes (an authorization
    /// session's lifetime in Latchkey, and the Python SDK's polling timeout).
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            deadline: Duration::from_secs(600),
        }
    }
}

impl PollOptions {
    fn next_delay(&self, delay: Duration) -> Duration {
        let factor = if self.multiplier.is_finite() && self.multiplier > 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let max = self.max_delay.max(Duration::from_millis(1));
        let next = delay.as_secs_f64() * factor;
        if next >= max.as_secs_f64() {
            max
        } else {
            Duration::from_secs_f64(next).max(Duration::from_millis(1))
        }
    }
}

pub(crate) async fn poll<C>(
    client: &Client,
    request: &ResourceTokenRequest,
    options: PollOptions,
    cancel: C,
) -> Result<SecretString, Error>
where
    C: Future<Output = ()>,
{
    let Some(session_uri) = request.session_uri.clone() else {
        return Err(Error::Config(
            "poll_resource_token needs a request with session_uri".into(),
        ));
    };
    let mut request = request.clone();
    request.force_authentication = None;
    let deadline = Instant::now() + options.deadline;
    let deadline_passed = || Error::Deadline {
        session_uri: session_uri.clone(),
    };
    let mut cancel = pin!(cancel);
    let mut delay = options.initial_delay.min(options.max_delay);
    loop {
        let wake = (Instant::now() + delay).min(deadline);
        tokio::select! {
            biased;
            () = &mut cancel => return Err(Error::Cancelled),
            () = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() >= deadline {
            return Err(deadline_passed());
        }
        let answer = tokio::select! {
            biased;
            () = &mut cancel => return Err(Error::Cancelled),
            () = tokio::time::sleep_until(deadline) => return Err(deadline_passed()),
            answer = client.get_resource_oauth2_token(&request) => answer,
        };
        match answer {
            Ok(ResourceToken::Token(token)) => return Ok(token),
            Ok(ResourceToken::Pending { .. }) => {}
            Ok(ResourceToken::Failed {
                session_uri,
                reason,
            }) => {
                return Err(Error::SessionFailed {
                    session_uri,
                    reason,
                });
            }
            Ok(ResourceToken::AuthorizationRequired {
                authorization_url,
                session_uri,
            }) => {
                return Err(Error::ConsentRequired {
                    authorization_url,
                    session_uri,
                });
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e),
        }
        delay = options.next_delay(delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap() {
        let o = PollOptions {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            multiplier: 2.0,
            deadline: Duration::from_secs(1),
        };
        let d1 = o.next_delay(o.initial_delay);
        let d2 = o.next_delay(d1);
        assert_eq!(d1, Duration::from_millis(200));
        assert_eq!(d2, Duration::from_millis(350));
        assert_eq!(o.next_delay(d2), Duration::from_millis(350));
        let flat = PollOptions {
            multiplier: f64::NAN,
            ..o
        };
        assert_eq!(flat.next_delay(d1), d1);
    }
}
