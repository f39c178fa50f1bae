//! The command line: `serve <service>` and `admin …`, each service's configuration keys
//! from [`crate::config`].

use std::path::PathBuf;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use latchkey_agent::config::Agent;
use latchkey_binding::config::Binding;
use latchkey_gateway::config::Gateway;

use crate::config::{Flags, Identity, Storage};

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Self-hosted identity for AI agents, wire-compatible with Amazon Bedrock AgentCore Identity"
)]
pub(crate) struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "LATCHKEY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub storage: Flags<Storage>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a service.
    Serve {
        #[command(subcommand)]
        service: Service,
    },
    /// The whole secured agent in one process, offline: gateway, identity service, session
    /// binding service and agent, with a development identity provider, a sandbox OAuth
    /// provider standing in for GitHub (or GitHub itself, --github-client-id) and (without a
    /// model configured) an offline scripted planner. Development only; data in the user's data dir under `latchkey-dev` unless
    /// --data-dir says otherwise.
    Dev(crate::dev::DevArgs),
    /// Administer credentials and inspect audit events (works directly on the storage of
    /// an installation; `admin init` creates one).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Health check for containers without curl: `GET URL` (http, loopback only); exit 0
    /// on a 2xx answer, 1 otherwise. Reads no configuration.
    Probe(ProbeArgs),
}

/// `probe`: the URL and the deadline.
#[derive(Debug, clap::Args)]
pub(crate) struct ProbeArgs {
    /// e.g. `http://127.0.0.1:8080/ping` (identity), `:8081/ready` (binding),
    /// `:8443/oauth2/health` (gateway).
    pub url: String,
    /// Time allowed for the whole exchange, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Service {
    /// The identity service: AgentCore-compatible control and data planes.
    Identity(Flags<Identity>),
    /// The session binding service: binds an OAuth consent to the signed-in browser user
    /// (`GET /oauth2/session-binding?session_id=…`) via `CompleteResourceTokenAuth`.
    Binding(Flags<Binding>),
    /// The agent workload: `POST /invocations` streaming Server-Sent Events, an LLM tool
    /// loop whose tools act as the signed-in user with per-tool scopes.
    Agent(AgentArgs),
    /// The gateway: OIDC login in front of the services, routing by path prefix, and the
    /// ALB's signed `x-amzn-oidc-data` header for every upstream.
    Gateway(Flags<Gateway>),
}

/// `serve agent`: its keys and `--print-openapi`.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// Print the agent's OpenAPI document (JSON) and exit.
    #[arg(long)]
    pub print_openapi: bool,
    #[command(flatten)]
    pub keys: Flags<Agent>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Initialise an installation: create the data directory, the key-encryption key file
    /// and the database tables where missing (what `serve identity` does at its first
    /// start). Every other admin command refuses a data directory or database without
    /// them, and creates nothing.
    Init {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// API credentials (SigV4 access keys, also usable as bearer keys).
    Credentials {
        #[command(subcommand)]
        command: CredentialsCommand,
    },
    /// Audit events.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Grants in the token vault (never their tokens).
    Grants {
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// The key-encryption key that seals every stored secret: status and online rotation.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GrantsCommand {
    /// List grants, one JSON object per line: workload, user, provider, scopes, expiry, state.
    List {
        #[arg(long)]
        workload: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Revoke a grant: at the provider (RFC 7009, when it has a revocation endpoint), then here.
    Revoke {
        #[arg(long)]
        workload: String,
        /// The user's subject: a user id, or with --user-issuer a token's `sub`.
        #[arg(long)]
        user: String,
        /// The inbound issuer of a user established by a token (`userIssuer` in `grants
        /// list`); without it, `--user` is a user id.
        #[arg(long)]
        user_issuer: Option<String>,
        #[arg(long)]
        provider: String,
        #[command(flatten)]
        serve: Flags<Identity>,
    },
    /// Benchmarks only: insert COUNT synthetic grants (users PREFIX0…) with sealed dummy tokens.
    Seed {
        #[arg(long)]
        workload: String,
        #[arg(long)]
        provider: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "seed-user-")]
        user_prefix: String,
        /// Space-separated granted scopes.
        #[arg(long, default_value = "")]
        scopes: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CredentialsCommand {
    /// Create a credential. The secret is printed once and stored encrypted.
    Create {
        /// `admin`, `binding`, or `workload:<name>`.
        #[arg(long)]
        role: String,
        /// A note for humans.
        #[arg(long)]
        description: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List credentials (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential.
    Revoke { access_key_id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// The most recent audit events, oldest first, one JSON object per line.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Check the whole tamper-evident chain. Exit 0 when intact; otherwise exit 1 and
    /// name the first altered, removed, inserted or reordered block.
    Verify {
        /// Check only the newest N blocks (what a server checks at start).
        #[arg(long)]
        tail: Option<u64>,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Audit events with `--since <= time < --until`, in chain order, as JSON lines on
    /// stdout (each with `block`, its block's sequence number).
    Export {
        /// RFC 3339 time, e.g. 2026-01-31T00:00:00Z.
        #[arg(long, value_parser = parse_rfc3339_ms)]
        since: i64,
        /// RFC 3339 time (default: no upper bound).
        #[arg(long, value_parser = parse_rfc3339_ms)]
        until: Option<i64>,
    },
}

/// An RFC 3339 time as Unix milliseconds.
pub(crate) fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{s:?} is not an RFC 3339 time (e.g. 2026-01-31T00:00:00Z)"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| "time out of range".into())
}

/// Global storage flags a service does not use, by `serve` subcommand: the gateway keeps
/// its cookie key and sessions in the data directory (its sessions in the database with
/// `session_store = "database"`), the agent only its conversations
/// (`<data-dir>/agent`), and the session binding service keeps nothing; none of them has a
/// database or a key-encryption key. Their help leaves them out; given anyway, they are
/// accepted and ignored.
pub(crate) const UNUSED_GLOBALS: [(&str, &[&[&str]]); 3] = [
    ("gateway", &[KEY_KEYS]),
    ("agent", &[DATABASE_KEYS, KEY_KEYS]),
    ("binding", &[&["data_dir"], DATABASE_KEYS, KEY_KEYS]),
];

/// The database's storage keys.
const DATABASE_KEYS: &[&str] = &["database_url", "database_url_file"];
/// The key-encryption keys' storage keys (the identity service's).
const KEY_KEYS: &[&str] = &[
    "key_file",
    "key_provider",
    "kms_key_id",
    "kms_endpoint_url",
    "kms_region",
    "kms_timeout_ms",
    "deployment_name",
];

/// The command line: [`Cli`], with the storage flags a service does not use hidden from
/// its `--help` ([`UNUSED_GLOBALS`]).
///
/// clap copies a global flag into a subcommand only when the subcommand has no argument
/// with the same id; giving the subcommand hidden copies stops the visible ones from
/// arriving there, and values given there still reach the top level (same id), so parsing
/// is unchanged everywhere.
pub(crate) fn cli_command() -> clap::Command {
    let mut command = Cli::command();
    for (service, unused) in UNUSED_GLOBALS {
        let hidden: Vec<clap::Arg> = command
            .get_arguments()
            .filter(|a| {
                unused
                    .iter()
                    .any(|keys| keys.contains(&a.get_id().as_str()))
            })
            .map(|a| a.clone().global(false).hide(true))
            .collect();
        command = command.mut_subcommand("serve", |serve| {
            serve.mut_subcommand(service, |sub| sub.args(hidden))
        });
    }
    command
}

pub(crate) fn parse_cli() -> Cli {
    let mut matches = cli_command().get_matches();
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cli_command()).exit())
}

#[derive(Debug, Subcommand)]
pub(crate) enum VaultCommand {
    /// Rotate the key-encryption key while servers run: add a new active key to the key
    /// file, wait for running servers to pick it up, re-wrap every stored envelope under
    /// it, then remove keys no envelope uses any more. Prints a JSON report.
    RotateKey {
        /// Seconds to wait after writing the new key before re-wrapping, so every running
        /// server has reloaded the key file (they check it every 2 s) and stopped sealing
        /// with the old key. Longer than your slowest request.
        #[arg(long, default_value_t = 10)]
        grace_seconds: u64,
        /// Keep every old key in the key file, even unused ones.
        #[arg(long)]
        no_retire: bool,
    },
    /// JSON: the active key id, the key ids in the key file, envelopes per key id.
    Status,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod cli_tests {
    use super::*;

    fn help(path: &[&str]) -> String {
        let mut command = cli_command();
        command.build();
        let mut sub = &mut command;
        for name in path {
            sub = sub.find_subcommand_mut(name).unwrap();
        }
        sub.render_long_help().to_string()
    }

    /// Every `--flag` a help text lists.
    fn listed_flags(help: &str) -> std::collections::BTreeSet<String> {
        help.lines()
            .map(|line| line.trim_start())
            // `-h, --help`: the long form.
            .map(|line| line.strip_prefix("-h, ").unwrap_or(line))
            .filter_map(|line| line.strip_prefix("--"))
            .filter_map(|rest| rest.split([' ', '=', '[', '<']).next())
            .map(str::to_string)
            .collect()
    }

    /// The flags of a section's keys.
    fn section_flags<S: crate::config::Section>() -> Vec<String> {
        use latchkey_config::KeyGroup as _;
        S::Keys::keys().iter().filter_map(|k| k.flag()).collect()
    }

    /// Issue 14: `serve agent --help` and `serve gateway --help` list only the options
    /// the service uses: its own keys, `--config`, `--help`, and the storage flags it
    /// reads (the data directory, logging and traces; never the database or the key file).
    #[test]
    fn agent_and_gateway_help_list_only_their_own_options() {
        let globals = [
            "config",
            "help",
            "data-dir",
            "log-format",
            "log-level",
            "otlp-endpoint",
        ];
        let expected = |own: Vec<String>, more: &[&str]| {
            let all = own.into_iter().chain(globals.iter().map(|s| s.to_string()));
            all.chain(more.iter().map(|s| s.to_string()))
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(
            listed_flags(&help(&["serve", "agent"])),
            expected(section_flags::<Agent>(), &["print-openapi"])
        );
        // The gateway's sessions may live in the database (`session_store = "database"`).
        assert_eq!(
            listed_flags(&help(&["serve", "gateway"])),
            expected(
                section_flags::<Gateway>(),
                &["database-url", "database-url-file"]
            )
        );
    }

    #[test]
    fn services_help_leave_out_storage_flags_they_do_not_use() {
        cli_command().debug_assert();
        let gateway = help(&["serve", "gateway"]);
        assert!(gateway.contains("--http-redirect-listen"), "{gateway}");
        assert!(gateway.contains("--data-dir"), "{gateway}");
        let agent = help(&["serve", "agent"]);
        assert!(
            agent.contains("--store-dir") && agent.contains("--data-dir"),
            "{agent}"
        );
        let binding = help(&["serve", "binding"]);
        assert!(!binding.contains("--data-dir"), "{binding}");
        assert!(binding.contains("--log-level"), "{binding}");
        assert!(gateway.contains("--database-url"), "{gateway}");
        let keys = [
            "--key-file",
            "--key-provider",
            "--kms-key-id",
            "--deployment-name",
        ];
        for flag in ["--database-url", "--database-url-file"]
            .iter()
            .chain(&keys)
        {
            let gateway_uses = flag.starts_with("--database-url");
            assert_eq!(gateway.contains(flag), gateway_uses, "{flag} in {gateway}");
            assert!(!agent.contains(flag), "{flag} in {agent}");
            assert!(!binding.contains(flag), "{flag} in {binding}");
            assert!(help(&["serve", "identity"]).contains(flag), "{flag}");
            assert!(
                help(&["admin", "credentials", "list"]).contains(flag),
                "{flag}"
            );
            assert!(help(&[]).contains(flag), "{flag}");
        }
    }

    #[test]
    fn storage_flags_still_parse_everywhere() {
        let parse = |args: &[&str]| {
            let matches = cli_command()
                .try_get_matches_from(std::iter::once("latchkey").chain(args.iter().copied()))
                .unwrap();
            Cli::from_arg_matches(&matches).unwrap()
        };
        for args in [
            &[
                "serve",
                "gateway",
                "--database-url",
                "sqlite://x",
                "--key-file",
                "/k",
            ][..],
            &[
                "--database-url",
                "sqlite://x",
                "--key-file",
                "/k",
                "serve",
                "gateway",
            ][..],
            &[
                "serve",
                "binding",
                "--database-url",
                "sqlite://x",
                "--key-file",
                "/k",
            ][..],
            &[
                "serve",
                "agent",
                "--database-url",
                "sqlite://x",
                "--key-file",
                "/k",
            ][..],
            &[
                "serve",
                "identity",
                "--database-url",
                "sqlite://x",
                "--key-file",
                "/k",
            ][..],
        ] {
            let cli = parse(args);
            assert_eq!(
                cli.storage.value("database_url").as_deref(),
                Some("sqlite://x"),
                "{args:?}"
            );
            assert_eq!(
                cli.storage.value("key_file").as_deref(),
                Some("/k"),
                "{args:?}"
            );
        }
        let cli = parse(&["serve", "gateway", "--http-redirect-listen", "127.0.0.1:0"]);
        let Command::Serve {
            service: Service::Gateway(o),
        } = cli.command
        else {
            panic!("not serve gateway");
        };
        assert_eq!(
            o.value("http_redirect_listen").as_deref(),
            Some("127.0.0.1:0")
        );
    }
}
