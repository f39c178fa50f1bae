//! `latchkey serve agent`: the wiring of its flags, environment and file into the agent.
//! The agent's behaviour is tested in-process in `crates/agent/tests`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{Proc, bin, listening_url, run_ok, temp_dir};

const SIGNER: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/agent/50dc6c495c0c9188";
const WORKLOAD: &str = "gh-agent";
const RETURN_URL: &str = "http://127.0.0.1:9/oauth2/session-binding";

/// `latchkey serve agent` on a free port over `dir` with the configuration file `config`,
/// its credential and model key in the environment.
fn serve_agent(dir: &Path, config: &Path) -> Command {
    let mut command = Command::new(bin());
    command
        .args(["serve", "agent", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("agent-data"))
        .args(["--identity-url", "http://127.0.0.1:9"])
        .args(["--workload-name", WORKLOAD, "--return-url", RETURN_URL])
        .args(["--llm-provider", "openai", "--llm-model", "m"])
        .arg("--config")
        .arg(config)
        .env("LATCHKEY_AGENT_CREDENTIAL", "LKTESTAGENT:secret-0123456789")
        .env("LATCHKEY_AGENT_LLM_API_KEY", "sk-x");
    command
}

/// `serve agent` from flags, the environment (its credential and model key) and a file (its
/// only user source): it listens, answers the runtime contract and refuses an invocation
/// without a verified user.
#[tokio::test]
async fn serve_agent_reads_flags_environment_and_file() {
    let dir = temp_dir("agent-wiring");
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nalb_signer = \"{SIGNER}\"\nalb_key_url_template = \"http://127.0.0.1:9/{{kid}}\"\n"
        ),
    )
    .unwrap();
    let mut child = serve_agent(&dir, &path)
        .arg("--outbound-allow-private-addresses")
        .env("LATCHKEY_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn agent");
    let url = listening_url(&mut child);
    let _agent = Proc(child);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ping: Value = http
        .get(format!("{url}/ping"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping, json!({"status": "Healthy"}));
    let response = http
        .post(format!("{url}/invocations"))
        .json(&json!({"sessionId": "s1", "message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["code"], "unauthorized");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tool_url_whose_host_is_a_placeholder_stops_the_start() {
    let dir = temp_dir("tool-host");
    std::fs::create_dir_all(&dir).unwrap();
    for (url, part) in [
        ("https://{host}/repos/{owner}", "host"),
        ("https://api.github.com:{port}/repos/{owner}", "port"),
        ("{base}/repos/{owner}", "scheme"),
    ] {
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "[[agent.tools]]\nname = \"anywhere\"\ndescription = \"d\"\nprovider = \"github\"\nurl = \"{url}\"\n"
            ),
        )
        .unwrap();
        let mut child = serve_agent(&dir, &path)
            .args(["--alb-signer", SIGNER])
            .args(["--alb-key-url-template", "http://127.0.0.1:9/{kid}"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{url}: the agent started; {stderr}"
        );
        assert!(
            stderr.contains("agent.tools.url")
                && stderr.contains("\"anywhere\"")
                && stderr.contains(&format!("placeholder in the {part}")),
            "{url}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn openapi_document_is_current() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi/agent.json");
    let out = run_ok(
        Command::new(bin()).args(["serve", "agent", "--print-openapi"]),
        "latchkey serve agent --print-openapi",
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed, &generated).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        current == generated,
        "docs/openapi/agent.json is out of date with the code. Regenerate it with\n  latchkey serve agent --print-openapi > docs/openapi/agent.json\nor\n  UPDATE_OPENAPI=1 cargo test -p latchkey --test agent openapi_document_is_current"
    );
}
