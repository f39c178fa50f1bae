//! Real GitHub instead of the sandbox: `latchkey dev --github-client-id ID` with the OAuth
//! app's secret in `LATCHKEY_DEV_GITHUB_CLIENT_SECRET`, `--github-client-secret-file` or
//! `--github-client-secret`. The `github` provider is then the `GithubOauth2` preset with
//! the app's credentials (created through the same AgentCore calls as the sandbox's), the
//! agent's tools call <https://api.github.com>, and the identity service reaches only public
//! addresses (the sandbox needs its private-address opt-in; GitHub does not).
//!
//! Switching between the sandbox and GitHub across restarts on one data directory updates
//! the provider in place (`UpdateOauth2CredentialProvider` changes its vendor and keeps its
//! callback URL) and forgets the grants held from the other one, whose tokens mean nothing
//! to the new authorization server: users consent again.

use std::path::PathBuf;

use latchkey_config::{ConfigFile, Env, Flags, Layers, keys};
use latchkey_identity::admin::Admin;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// GitHub's REST API, for the agent's built-in tools.
pub(super) const GITHUB_API: &str = "https://api.github.com";

keys! {
    /// `latchkey dev`'s own keys: file `[dev]`, `LATCHKEY_DEV_*`.
    pub section Dev = "dev";
    /// Real GitHub instead of the sandbox.
    pub struct DevKeys {
        /// Client ID of a GitHub OAuth app: use real GitHub instead of the sandbox (with its
        /// client secret). Register the callback URL `latchkey dev` prints at the app.
        github_client_id: String,
        /// The OAuth app's client secret. Prefer the environment variable or
        /// --github-client-secret-file: other local users can see a command line.
        github_client_secret: SecretString,
        /// File holding the OAuth app's client secret.
        github_client_secret_file: PathBuf,
    }
}

/// The authorization server the `github` provider names (kept in `dev.json`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Upstream {
    /// The sandbox of `latchkey dev` (what every start before this option used).
    #[default]
    Sandbox,
    /// github.com.
    Github,
}

impl Upstream {
    fn name(self) -> &'static str {
        match self {
            Self::Sandbox => "the sandbox",
            Self::Github => "GitHub",
        }
    }
}

/// A GitHub OAuth app. No `Debug`: it holds the client secret.
pub(super) struct GithubApp {
    pub client_id: String,
    client_secret: SecretString,
}

/// The OAuth app configured, if any: the client id and the secret go together.
pub(super) fn app(
    flags: &Flags<Dev>,
    file: &ConfigFile,
    env: &Env,
) -> anyhow::Result<Option<GithubApp>> {
    let l = Layers::new(flags, file, env)?;
    let keys: DevKeys = l.read()?;
    match (keys.github_client_id, l.secret("github_client_secret")?) {
        (Some(client_id), Some(secret)) => Ok(Some(GithubApp {
            client_id,
            client_secret: secret.value,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => {
            let why = "missing: real GitHub needs the OAuth app's client secret too";
            Err(l.error("github_client_secret", why))
        }
        (None, Some(secret)) => {
            let why = format!("has no effect without {}", l.display("github_client_id"));
            Err(l.error(&secret.key, why))
        }
    }
}

impl GithubApp {
    /// The body of `CreateOauth2CredentialProvider` (and `Update…`) for provider `name`.
    pub(super) fn provider_request(&self, name: &str) -> Value {
        json!({
            "name": name,
            "credentialProviderVendor": "GithubOauth2",
            "oauth2ProviderConfigInput": {"githubOauth2ProviderConfig": {
                "clientId": self.client_id,
                "clientSecret": self.client_secret.expose_secret(),
            }},
        })
    }
}

/// After the provider names `now` instead of `before`: forget the grants held from
/// `before` (audited), and say so when there were any.
pub(super) async fn switched(
    admin: &Admin,
    (workload, provider): (&str, &str),
    before: Upstream,
    now: Upstream,
) -> anyhow::Result<()> {
    if before == now {
        return Ok(());
    }
    let reason = format!(
        "latchkey dev: the provider now names {} instead of {}",
        now.name(),
        before.name()
    );
    let forgotten = admin.forget_grants(workload, provider, &reason).await?;
    if forgotten == 0 {
        return Ok(());
    }
    println!(
        "latchkey dev: `{provider}` switched from {} to {}: {forgotten} grant(s) from {} forgotten (users consent again)",
        before.name(),
        now.name(),
        before.name()
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn app_with(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Option<GithubApp>> {
        use clap::FromArgMatches as _;
        let command = <Flags<Dev> as clap::Args>::augment_args(clap::Command::new("dev"));
        let matches =
            command.try_get_matches_from(std::iter::once("dev").chain(args.iter().copied()));
        let flags = Flags::<Dev>::from_arg_matches(&matches.unwrap()).unwrap();
        app(&flags, &ConfigFile::default(), &Env::fixed(env))
    }

    #[test]
    fn the_app_needs_both_and_never_shows_its_secret() {
        assert!(app_with(&[], &[]).unwrap().is_none());
        let env = [
            ("LATCHKEY_DEV_GITHUB_CLIENT_ID", "Iv1.app"),
            ("LATCHKEY_DEV_GITHUB_CLIENT_SECRET", "gh-top-secret"),
        ];
        let app = app_with(&[], &env).unwrap().unwrap();
        let body = app.provider_request("github");
        assert_eq!(body["credentialProviderVendor"], "GithubOauth2");
        let config = &body["oauth2ProviderConfigInput"]["githubOauth2ProviderConfig"];
        assert_eq!(
            (config["clientId"].as_str(), config["clientSecret"].as_str()),
            (Some("Iv1.app"), Some("gh-top-secret"))
        );

        let file = [("LATCHKEY_DEV_GITHUB_CLIENT_SECRET_FILE", "/nonexistent")];
        let id: &[&str] = &["--github-client-id", "Iv1.app"];
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 3] = [
            (id, &[], "`dev.github_client_secret` (not set"),
            (
                &["--github-client-secret", "gh-top-secret"],
                &[],
                "without dev.github_client_id",
            ),
            (id, &[env[1], file[0]], "not both"),
        ];
        for (args, env, expected) in cases {
            let error = app_with(args, env).err().unwrap().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("top-secret"), "{error}");
        }
    }
}
