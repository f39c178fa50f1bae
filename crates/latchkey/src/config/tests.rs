//! The configuration of every service: layering, key names, sources, secrets.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

use std::path::Path;

use latchkey_agent::AgentConfig;
use latchkey_agent::config::Agent;
use latchkey_binding::BindingConfig;
use latchkey_binding::config::Binding;
use latchkey_config::KeyGroup;
use latchkey_gateway::GatewayConfig;
use latchkey_gateway::config::Gateway;

use super::*;

/// Resolve a section from flags (later ones win), a fixed environment and a file.
fn with<S: Section, T>(
    args: &[&str],
    env: &[(&str, &str)],
    toml: &str,
    resolve: impl FnOnce(&Layers) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    use clap::{Args as _, FromArgMatches as _};
    let command = Flags::<S>::augment_args(clap::Command::new("t").args_override_self(true));
    let matches = command.try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))?;
    let flags = Flags::<S>::from_arg_matches(&matches)?;
    let file = ConfigFile::parse(Path::new("/etc/latchkey.toml"), toml)?;
    check_file(&file)?;
    let env = Env::fixed(env);
    resolve(&Layers::new(&flags, &file, &env)?)
}

fn message<T: std::fmt::Debug>(result: anyhow::Result<T>) -> String {
    let error = format!("{:#}", result.unwrap_err());
    assert!(!error.contains("top-secret"), "{error}");
    error
}

const SIGNER: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/x/1";
const BINDING_CREDENTIAL: (&str, &str) = ("LATCHKEY_BINDING_CREDENTIAL", "LKTEST:top-secret-value");

fn binding(
    args: &[&str],
    env: &[(&str, &str)],
    toml: &str,
) -> anyhow::Result<(std::net::SocketAddr, BindingConfig)> {
    let args = [&["--identity-url", "http://127.0.0.1:8080"], args].concat();
    with::<Binding, _>(&args, env, toml, BindingConfig::resolve)
}

#[test]
fn binding_needs_a_user_source() {
    let error = message(binding(&[], &[BINDING_CREDENTIAL], ""));
    assert!(error.contains("binding.alb_signer"), "{error}");
}

#[test]
fn binding_needs_a_credential() {
    let error = message(binding(&["--alb-signer", SIGNER], &[], ""));
    assert!(error.contains("binding.credential_file"), "{error}");
    assert!(error.contains("LATCHKEY_BINDING_CREDENTIAL"), "{error}");
}

#[test]
fn binding_flag_over_file_and_defaults() {
    let file = r#"
        [binding]
        listen = "127.0.0.1:9000"
        identity_url = "http://identity.internal:8080"
        alb_signer = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/y/2"
        oidc_issuer = "https://login.example.com"
        oidc_audience = "app"
        id_token_cookie = "id_token"
        [binding.outbound]
        allow_private_addresses = true
    "#;
    let (listen, c) = binding(&["--alb-signer", SIGNER], &[BINDING_CREDENTIAL], file).unwrap();
    assert_eq!(listen.to_string(), "127.0.0.1:9000");
    assert_eq!(c.identity_url, "http://127.0.0.1:8080");
    let alb = c.users.alb.as_ref().unwrap();
    assert_eq!(alb.signer_arn, SIGNER);
    assert_eq!(alb.effective_region().as_deref(), Some("eu-west-1"));
    let oidc = c.users.oidc.as_ref().unwrap();
    assert_eq!(oidc.cookie_name.as_deref(), Some("id_token"));
    assert!(c.outbound.allow_private_addresses);
    assert!(!format!("{c:?}").contains("top-secret-value"));
}

/// Issue 14: the private-address opt-in has one name and one shape in every service: the
/// file key `outbound.allow_private_addresses` of the service's section, its environment
/// variable, and the flag `--outbound-allow-private-addresses` of every `serve`; the
/// identity service's refusals name it as declared.
#[test]
fn the_private_address_opt_in_is_one_setting_everywhere() {
    fn described<S: Section>() -> String {
        let (flags, file, env) = (
            Flags::<S>::default(),
            ConfigFile::default(),
            Env::fixed(&[]),
        );
        Layers::new(&flags, &file, &env)
            .unwrap()
            .describe("outbound_allow_private_addresses")
    }
    let setting = |section: &str, env: &str| {
        format!(
            "`{section}outbound.allow_private_addresses` ({env}, --outbound-allow-private-addresses)"
        )
    };
    assert_eq!(
        described::<Identity>(),
        setting("", "LATCHKEY_OUTBOUND_ALLOW_PRIVATE_ADDRESSES")
    );
    assert_eq!(
        described::<Identity>(),
        latchkey_identity::services::providers::ALLOW_PRIVATE_ADDRESSES_SETTING
    );
    for (described, section) in [
        (described::<Binding>(), "binding"),
        (described::<Agent>(), "agent"),
        (described::<Gateway>(), "gateway"),
    ] {
        let env = format!(
            "LATCHKEY_{}_OUTBOUND_ALLOW_PRIVATE_ADDRESSES",
            section.to_uppercase()
        );
        assert_eq!(described, setting(&format!("{section}."), &env));
    }
    // In the file, each in its section's `outbound` table; the old flat key is refused.
    for section in ["binding", "agent", "gateway"] {
        let old = format!("[{section}]\nallow_private_addresses = true\n");
        let file = ConfigFile::parse(Path::new("/etc/latchkey.toml"), &old).unwrap();
        let error = check_file(&file).unwrap_err().to_string();
        assert!(
            error.contains(&format!("`{section}.allow_private_addresses`")),
            "{error}"
        );
        let new = format!("[{section}.outbound]\nallow_private_addresses = true\n");
        let file = ConfigFile::parse(Path::new("/etc/latchkey.toml"), &new).unwrap();
        check_file(&file).unwrap();
    }
}

#[test]
fn binding_keys_are_named() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--oidc-issuer", "https://login.example.com"],
            "binding.oidc_audience",
        ),
        (
            &[
                "--alb-signer",
                SIGNER,
                "--alb-key-url-template",
                "https://keys.example.com/",
            ],
            "binding.alb_key_url_template",
        ),
        (
            &[
                "--alb-region",
                "eu-west-1",
                "--oidc-issuer",
                "https://x.example",
                "--oidc-audience",
                "app",
            ],
            "binding.alb_region",
        ),
    ];
    for (args, key) in cases {
        let error = message(binding(args, &[BINDING_CREDENTIAL], ""));
        assert!(error.contains(key), "{error}");
    }
    let resolve = |l: &Layers| BindingConfig::resolve(l);
    let error = message(with::<Binding, _>(
        &["--alb-signer", SIGNER],
        &[BINDING_CREDENTIAL],
        "",
        resolve,
    ));
    assert!(error.contains("binding.identity_url"), "{error}");
    let bad = [("LATCHKEY_BINDING_CREDENTIAL", "no-colon-top-secret")];
    let error = message(binding(&["--alb-signer", SIGNER], &bad, ""));
    assert!(error.contains("LATCHKEY_BINDING_CREDENTIAL"), "{error}");
}

#[test]
fn errors_name_the_source_of_the_value() {
    let file = "[binding]\nalb_leeway_seconds = \"soon\"\n";
    let error = message(binding(&[], &[BINDING_CREDENTIAL], file));
    assert!(
        error.contains("`binding.alb_leeway_seconds` (from file /etc/latchkey.toml)"),
        "{error}"
    );
    let env = [
        BINDING_CREDENTIAL,
        ("LATCHKEY_BINDING_ALB_LEEWAY_SECONDS", "soon"),
    ];
    let error = message(binding(&[], &env, file));
    assert!(
        error.contains("(from environment variable LATCHKEY_BINDING_ALB_LEEWAY_SECONDS)"),
        "{error}"
    );
    let error = message(binding(&["--alb-leeway-seconds", "soon"], &env, file));
    assert!(
        error.contains("`binding.alb_leeway_seconds` (from flag --alb-leeway-seconds)"),
        "{error}"
    );
    // A validation error names where the failing value came from, too.
    let error = message(binding(
        &[],
        &[BINDING_CREDENTIAL],
        "[binding]\nalb_signer = \"arn:x\"\n",
    ));
    assert!(
        error.contains("`binding.alb_signer` (from file /etc/latchkey.toml)"),
        "{error}"
    );
    // Not set at all: where it could be set.
    let error = message(binding(&["--alb-signer", SIGNER], &[], ""));
    assert!(
        error.contains("env LATCHKEY_BINDING_CREDENTIAL_FILE, flag --credential-file"),
        "{error}"
    );
}

#[test]
fn secrets_come_from_one_place_only() {
    let dir = std::env::temp_dir().join(format!("latchkey-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cred");
    std::fs::write(&path, "LKFILE:top-secret-file\n").unwrap();
    let path = path.to_str().unwrap();
    let c = binding(
        &["--alb-signer", SIGNER, "--credential-file", path],
        &[],
        "",
    )
    .unwrap();
    assert_eq!(c.1.credential.access_key_id(), "LKFILE");
    let error = message(binding(
        &["--alb-signer", SIGNER, "--credential-file", path],
        &[BINDING_CREDENTIAL],
        "",
    ));
    assert!(error.contains("set either binding.credential_file or environment variable LATCHKEY_BINDING_CREDENTIAL, not both"), "{error}");
    let error = message(binding(
        &[
            "--alb-signer",
            SIGNER,
            "--credential-file",
            "/nonexistent/c",
        ],
        &[],
        "",
    ));
    assert!(
        error.contains("`binding.credential_file` (from flag --credential-file): cannot read"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_file_is_checked_and_its_tables_flattened() {
    let check = |toml: &str| check_file(&ConfigFile::parse(Path::new("f.toml"), toml).unwrap());
    check(
        "listen = \"127.0.0.1:0\"\n[arn]\naccount = \"000000000000\"\n[agent.llm]\nmodel = \"m\"\n[dev]\ngithub_client_id = \"Iv1.x\"\n",
    )
    .unwrap();
    for (toml, key) in [
        ("wat_ttl_secs = 60\n", "wat_ttl_secs"),
        ("arn_account = \"1\"\n", "arn_account"),
        ("[arn]\nzone = \"x\"\n", "arn.zone"),
        ("[agent.llm]\nmodle = \"m\"\n", "agent.llm.modle"),
        ("[gateway]\nroute = []\n", "gateway.route"),
        ("[dev]\ngithub_id = \"x\"\n", "dev.github_id"),
    ] {
        let error = check(toml).unwrap_err().to_string();
        assert!(error.contains(&format!("`{key}`")), "{error}");
    }
}

#[test]
fn help_lists_every_key_with_its_environment_variable() {
    use clap::Args as _;
    let mut command = Flags::<Agent>::augment_args(clap::Command::new("agent"));
    let help = command.render_long_help().to_string();
    for key in <Agent as Section>::Keys::keys() {
        let env = format!("LATCHKEY_AGENT_{}", key.name.to_ascii_uppercase());
        match key.name {
            "llm_api_key" => assert!(!help.contains("--llm-api-key "), "{help}"),
            name => assert!(
                help.contains(&format!("--{} ", name.replace('_', "-"))),
                "{name}"
            ),
        }
        assert!(key.name == "llm_api_key" || help.contains(&env), "{env}");
    }
    let mut command = Flags::<Gateway>::augment_args(clap::Command::new("gateway"));
    let help = command.render_long_help().to_string();
    assert!(
        help.contains("--route <ROUTES>") && help.contains("LATCHKEY_GATEWAY_ROUTES"),
        "{help}"
    );
}

#[test]
fn storage_and_identity() {
    let storage = |args: &[&str], env: &[(&str, &str)], toml: &str| {
        with::<Storage, _>(args, env, toml, |l| StorageConfig::resolve(l, "latchkey"))
    };
    let c = storage(&["--data-dir", "/d"], &[], "").unwrap();
    assert_eq!(c.database_url, "sqlite:///d/latchkey.db?mode=rwc");
    assert_eq!(c.key_file, Path::new("/d/kek.json"));
    let env = [("LATCHKEY_DATABASE_URL_FILE", "/nonexistent")];
    let error = message(storage(
        &["--data-dir", "/d", "--database-url", "sqlite://x"],
        &env,
        "",
    ));
    assert!(error.contains("database_url"), "{error}");
    let error = message(storage(
        &["--data-dir", "/d"],
        &[("LATCHKEY_DATABASE_URL", "mysql://x")],
        "",
    ));
    assert!(
        error.contains("`database_url` (from environment variable LATCHKEY_DATABASE_URL)"),
        "{error}"
    );
    let error = message(storage(
        &["--data-dir", "/d", "--log-format", "xml"],
        &[],
        "",
    ));
    assert!(error.contains("`log_format`"), "{error}");

    let identity = |args: &[&str], env: &[(&str, &str)], toml: &str| {
        with::<Identity, _>(args, env, toml, IdentityConfig::resolve)
    };
    let file =
        "wat_ttl_seconds = 5\n[arn]\naccount = \"000000000000\"\n[outbound]\ntimeout_ms = 500\n";
    let c = identity(&[], &[("LATCHKEY_WAT_TTL_SECONDS", "120")], file).unwrap();
    assert_eq!((c.wat_ttl_seconds, c.outbound_timeout_ms), (120, 500));
    assert_eq!(c.arn().account, "000000000000");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    let cases: [(&[&str], &[(&str, &str)], &str); 5] = [
        (
            &["--listen", "not-an-address"],
            &[],
            "`listen` (from flag --listen)",
        ),
        (
            &[],
            &[("LATCHKEY_ARN_ACCOUNT", "12")],
            "`arn.account` (from environment variable LATCHKEY_ARN_ACCOUNT)",
        ),
        (
            &["--wat-ttl-seconds", "7"],
            &[("LATCHKEY_WAT_TTL_SECONDS", "120")],
            "`wat_ttl_seconds` (from flag",
        ),
        (&[], &[("LATCHKEY_PUBLIC_URL", "ftp://x")], "`public_url`"),
        (
            &[
                "--inbound-issuers",
                r#"[{"issuer":"https://idp.example","audiences":["a"],"algorithms":["HS256"]}]"#,
            ],
            &[],
            "`inbound_issuers[0]` (from flag --inbound-issuers)",
        ),
    ];
    for (args, env, key) in cases {
        let error = message(identity(args, env, file));
        assert!(error.contains(key), "{error}");
    }
}

const AGENT_ARGS: &[&str] = &[
    "--identity-url",
    "http://127.0.0.1:8080",
    "--workload-name",
    "my-agent",
    "--return-url",
    "http://127.0.0.1:8081/oauth2/session-binding",
    "--alb-signer",
    SIGNER,
    "--llm-provider",
    "openai",
    "--llm-model",
    "gpt-4o-mini",
];
const AGENT_ENV: &[(&str, &str)] = &[
    ("LATCHKEY_AGENT_CREDENTIAL", "LKAGENT:agent-top-secret"),
    ("LATCHKEY_AGENT_LLM_API_KEY", "sk-llm-top-secret"),
];

fn agent(args: &[&str], env: &[(&str, &str)], toml: &str) -> anyhow::Result<AgentConfig> {
    let args = [AGENT_ARGS, args].concat();
    with::<Agent, _>(&args, env, toml, |l| {
        AgentConfig::resolve(l, Path::new("/tmp/latchkey-test"))
    })
}

#[test]
fn agent_defaults_and_file() {
    let file = r#"
        [agent]
        max_tool_iterations = 3
        [agent.llm]
        timeout_seconds = 9
        [[agent.tools]]
        name = "jira_issue"
        description = "One Jira issue"
        provider = "jira"
        scopes = ["read:jira-work"]
        url = "https://jira.example.com/rest/api/3/issue/{key}"
        parameters = { type = "object", properties = { key = { type = "string" } }, required = ["key"] }
    "#;
    let c = agent(&[], AGENT_ENV, file).unwrap();
    assert_eq!(c.keys.listen.to_string(), "127.0.0.1:8082");
    assert_eq!(c.keys.max_tool_iterations, 3);
    assert_eq!(c.llm.timeout.as_secs(), 9);
    assert_eq!(c.keys.tools.len(), 1);
    assert_eq!(c.keys.github_base_url, "https://api.github.com");
    assert!(matches!(
        &c.store,
        latchkey_agent::StoreConfig::Local { dir } if dir.ends_with("agent")
    ));
    assert!(c.llm.api_key.is_some());
    assert!(!format!("{c:?}").contains("top-secret"));
}

#[test]
fn agent_keys_are_named() {
    let credential_only = &AGENT_ENV[..1];
    let bad_tool = "[[agent.tools]]\nname = \"github_profile\"\ndescription = \"dup\"\nprovider = \"github\"\nurl = \"https://x/{a\"\n";
    let cases: [(&[&str], &[(&str, &str)], &str, &str); 12] = [
        (
            &["--workload-name", ""],
            AGENT_ENV,
            "",
            "agent.workload_name",
        ),
        (
            &["--llm-provider", "cohere"],
            AGENT_ENV,
            "",
            "agent.llm.provider",
        ),
        (&[], &AGENT_ENV[1..], "", "agent.credential_file"),
        (
            &["--llm-api-key-file", "/nonexistent"],
            AGENT_ENV,
            "",
            "agent.llm.api_key",
        ),
        (&["--alb-signer", ""], AGENT_ENV, "", "agent.alb_signer"),
        (
            &["--return-url", "not a url"],
            AGENT_ENV,
            "",
            "agent.return_url",
        ),
        (
            &["--max-tool-iterations", "0"],
            AGENT_ENV,
            "",
            "agent.max_tool_iterations",
        ),
        (
            &[],
            &[("LATCHKEY_AGENT_CREDENTIAL", "no-colon-top-secret")],
            "",
            "LATCHKEY_AGENT_CREDENTIAL",
        ),
        (&[], AGENT_ENV, bad_tool, "agent.tools.url"),
        (&["--store-kind", "s3"], AGENT_ENV, "", "agent.store.bucket"),
        (
            &["--store-bucket", "b"],
            credential_only,
            "",
            "agent.store.bucket",
        ),
        (
            &[],
            &[AGENT_ENV[0], ("LATCHKEY_AGENT_TOOLS", "not json")],
            "",
            "LATCHKEY_AGENT_TOOLS",
        ),
    ];
    for (args, env, toml, key) in cases {
        let error = message(agent(args, env, toml));
        assert!(error.contains(key), "{key}: {error}");
    }
}

#[test]
fn agent_s3_store_and_tools_from_the_environment() {
    let args = [
        "--store-kind",
        "s3",
        "--store-bucket",
        "conversations",
        "--store-region",
        "us-east-1",
        "--store-endpoint",
        "http://127.0.0.1:9000",
        "--store-allow-http",
        "--store-access-key-id",
        "AKID",
    ];
    let tools = r#"[{"name": "t1", "description": "d", "provider": "p", "url": "https://x/{a}"}]"#;
    let env = [
        AGENT_ENV[0],
        ("LATCHKEY_AGENT_STORE_SECRET_ACCESS_KEY", "s3-top-secret"),
        ("LATCHKEY_AGENT_TOOLS", tools),
    ];
    let c = agent(&args, &env, "").unwrap();
    assert!(matches!(
        &c.store,
        latchkey_agent::StoreConfig::S3 { bucket, allow_http: true, .. } if bucket == "conversations"
    ));
    assert_eq!(c.keys.tools[0].name, "t1");
    assert!(c.llm.api_key.is_none());
    assert!(!format!("{c:?}").contains("top-secret"));
}

const GATEWAY_ARGS: &[&str] = &[
    "--listen",
    "127.0.0.1:0",
    "--oidc-issuer",
    "https://login.example.com",
    "--oidc-client-id",
    "app",
];
const GATEWAY_SECRET: (&str, &str) = ("LATCHKEY_GATEWAY_OIDC_CLIENT_SECRET", "top-secret");

fn gateway_with(args: &[&str], env: &[(&str, &str)], toml: &str) -> anyhow::Result<GatewayConfig> {
    let args = [GATEWAY_ARGS, args].concat();
    with::<Gateway, _>(&args, env, toml, |l| {
        GatewayConfig::resolve(l, Path::new("/tmp/latchkey-test"))
    })
}

/// With a route unless the file has some, and the client secret.
fn gateway(args: &[&str], toml: &str) -> anyhow::Result<GatewayConfig> {
    let route: &[&str] = match toml.contains("[[gateway.routes]]") {
        true => &[],
        false => &["--route", "/=http://127.0.0.1:9000;login"],
    };
    gateway_with(&[route, args].concat(), &[GATEWAY_SECRET], toml)
}

#[test]
fn gateway_sessions_are_kept_unless_turned_off() {
    let off = "[gateway]\nkeep_sessions = false\n";
    assert!(gateway(&[], "").unwrap().keys.keep_sessions);
    assert!(!gateway(&[], off).unwrap().keys.keep_sessions);
    // The flag wins over the file.
    assert!(
        gateway(&["--keep-sessions", "true"], off)
            .unwrap()
            .keys
            .keep_sessions
    );
}

#[test]
fn gateway_defaults_file_and_flags() {
    let file = r#"
        [gateway]
        session_idle_seconds = 2
        [[gateway.routes]]
        prefix = "/api"
        upstream = "http://127.0.0.1:9001"
        auth = "api"
    "#;
    let c = gateway(&["--rate-limit-per-ip", "20/s"], file).unwrap();
    assert_eq!(c.keys.session_idle_seconds, 2);
    assert_eq!(c.keys.session_absolute_seconds, 28_800);
    assert_eq!(c.keys.routes.len(), 1);
    assert_eq!(c.keys.routes[0].auth, latchkey_gateway::RouteAuth::Api);
    assert_eq!(
        c.keys.alb_signer,
        latchkey_gateway::config::DEFAULT_ALB_SIGNER
    );
    assert_eq!(
        c.keys.rate_limit_per_ip,
        Some(latchkey_gateway::config::PerSecond(20))
    );
    assert_eq!(
        c.keys.access_log,
        latchkey_gateway::config::AccessLogTarget::Stdout
    );
    // Flags replace the file's routes; the environment takes several, comma-separated.
    let c = gateway(&["--route", "/=http://127.0.0.1:9000;login"], file).unwrap();
    assert_eq!(c.keys.routes[0].prefix, "/");
    let env = [
        GATEWAY_SECRET,
        (
            "LATCHKEY_GATEWAY_ROUTES",
            "/a=http://127.0.0.1:1;api,/=http://127.0.0.1:2;login",
        ),
    ];
    assert_eq!(gateway_with(&[], &env, file).unwrap().keys.routes.len(), 2);
}

#[test]
fn gateway_keys_are_named() {
    let route = ["--route", "/=http://127.0.0.1:9000;login"];
    let error = message(gateway_with(&route, &[], ""));
    assert!(error.contains("gateway.oidc_client_secret_file"), "{error}");
    let cases: [(&[&str], &str); 6] = [
        (&["--oidc-issuer", ""], "gateway.oidc_issuer"),
        (&["--route", "/x=http://a"], "gateway.routes"),
        (
            &["--rate-limit-per-user", "fast"],
            "gateway.rate_limit_per_user",
        ),
        (&["--tls-cert", "/c.pem"], "gateway.tls_key"),
        (&["--oidc-scopes", "email"], "gateway.oidc_scopes"),
        (&["--workers", "0"], "gateway.workers"),
    ];
    for (args, key) in cases {
        let error = message(gateway(args, ""));
        assert!(error.contains(key), "{key}: {error}");
    }
    let error = message(gateway_with(&[], &[GATEWAY_SECRET], ""));
    assert!(error.contains("gateway.routes"), "{error}");
}

#[test]
fn gateway_workers_default_to_the_cpus_and_are_bounded() {
    let workers = gateway(&[], "").unwrap().workers();
    assert_eq!(workers, latchkey_gateway::server::default_workers());
    assert_eq!(gateway(&["--workers", "3"], "").unwrap().workers(), 3);
    for bad in ["0", "257"] {
        assert!(message(gateway(&["--workers", bad], "")).contains("gateway.workers"));
    }
}

#[test]
fn gateway_http_redirect_listen_needs_tls() {
    let tls = ["--tls-cert", "/c.pem", "--tls-key", "/k.pem"];
    // Not set: nothing to redirect.
    assert_eq!(gateway(&tls, "").unwrap().keys.http_redirect_listen, None);
    // From the file; the flag overrides it.
    let file = "[gateway]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\nhttp_redirect_listen = \"0.0.0.0:80\"\n";
    let c = gateway(&[], file).unwrap();
    assert_eq!(
        c.keys.http_redirect_listen,
        Some("0.0.0.0:80".parse().unwrap())
    );
    assert!(c.is_tls());
    let c = gateway(&["--http-redirect-listen", "127.0.0.1:8080"], file).unwrap();
    assert_eq!(
        c.keys.http_redirect_listen,
        Some("127.0.0.1:8080".parse().unwrap())
    );
    // Without TLS, from the flag or the file.
    let error = message(gateway(&["--http-redirect-listen", "127.0.0.1:0"], ""));
    assert!(
        error.contains("gateway.http_redirect_listen") && error.contains("needs TLS"),
        "{error}"
    );
    let error = message(gateway(
        &[],
        "[gateway]\nhttp_redirect_listen = \"0.0.0.0:80\"\n",
    ));
    assert!(error.contains("gateway.http_redirect_listen"), "{error}");
    let with_tls = |more: &[&str]| gateway(&[&tls[..], more].concat(), "");
    // Not an address.
    let error = message(with_tls(&["--http-redirect-listen", "port 80"]));
    assert!(error.contains("gateway.http_redirect_listen"), "{error}");
    // An http public URL has nothing to redirect to.
    let redirect = ["--http-redirect-listen", "127.0.0.1:0"];
    let error = message(with_tls(
        &[&redirect[..], &["--public-url", "http://app.example.com"]].concat(),
    ));
    assert!(error.contains("gateway.http_redirect_listen"), "{error}");
    assert!(
        with_tls(&[&redirect[..], &["--public-url", "https://app.example.com"]].concat()).is_ok()
    );
    // The same address as the https listener.
    let same = [
        "--listen",
        "127.0.0.1:8443",
        "--http-redirect-listen",
        "127.0.0.1:8443",
    ];
    assert!(message(with_tls(&same)).contains("gateway.http_redirect_listen"));
}
