//! The model of `latchkey dev`: the agent's model keys, read as `serve agent` reads them
//! (flags `--llm-…`, `LATCHKEY_AGENT_LLM_*`, the file's `[agent.llm]`), completed from the
//! environment a newcomer already has (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`; Bedrock
//! signs with the AWS credential chain, as in `serve agent`). With none of them, the
//! offline scripted planner.

use std::sync::Arc;

use anyhow::anyhow;
use latchkey_agent::config::{AgentLlm, LlmKeys};
use latchkey_config::{ConfigFile, Env, Flags, Layers};
use latchkey_llm::{ChatModel, LlmConfig};

/// A provider, the environment variable its users keep its API key in, and the model used
/// when none is configured. The variable is read only for the provider's public endpoint:
/// with `--llm-base-url` the key would go to another server.
const USUAL: [(&str, &str, &str); 2] = [
    ("openai", "OPENAI_API_KEY", "gpt-4o-mini"),
    ("anthropic", "ANTHROPIC_API_KEY", "claude-sonnet-4-5"),
];

/// The model keys other than the provider and the two numbers with defaults: one of them
/// set means a model is meant, so a missing provider is an error, not the planner.
const MEANS_A_MODEL: [&str; 5] = [
    "llm_model",
    "llm_base_url",
    "llm_region",
    "llm_api_key",
    "llm_api_key_file",
];

/// What the agent of `latchkey dev` talks to.
pub(super) struct Model {
    pub chat: Arc<dyn ChatModel>,
    /// The real model's configuration; `None` for the offline scripted planner.
    pub config: Option<LlmConfig>,
    /// What the start-up output says (never a key).
    pub label: String,
}

pub(super) fn model(
    flags: &Flags<AgentLlm>,
    file: &ConfigFile,
    env: &Env,
) -> anyhow::Result<Model> {
    let l = Layers::new(flags, file, env)?;
    let mut keys: LlmKeys = l.read()?;
    let mut key_from = None;
    if keys.llm_provider.is_none() {
        match USUAL.iter().find(|(_, var, _)| env.get(var).is_some()) {
            Some((provider, ..)) => keys.llm_provider = Some(provider.to_string()),
            None if !any_set(&l)? => return planner(),
            // `config` names the missing provider.
            None => {}
        }
    }
    let usual = USUAL
        .iter()
        .find(|(provider, ..)| keys.llm_provider.as_deref() == Some(*provider));
    let public_endpoint = keys.llm_base_url.is_none();
    if let (Some((_, _, model)), true, None) = (usual, public_endpoint, &keys.llm_model) {
        keys.llm_model = Some(model.to_string());
    }
    let mut config = keys.config(&l)?;
    if let (Some((_, var, _)), true, None) = (usual, public_endpoint, &config.api_key) {
        config.api_key = env.get(var).map(Into::into);
        key_from = config.api_key.as_ref().map(|_| *var);
    }
    let chat = latchkey_llm::build(&config)
        .map_err(|e| anyhow!("invalid configuration key `agent.llm`: {e}"))?;
    let provider = format!("{:?}", config.provider).to_ascii_lowercase();
    let mut label = format!("{provider} model {}", config.model);
    if let Some(base) = &config.base_url {
        label.push_str(&format!(" at {base}"));
    }
    if let Some(var) = key_from {
        label.push_str(&format!(" (API key from {var})"));
    }
    Ok(Model {
        chat,
        config: Some(config),
        label,
    })
}

fn any_set(l: &Layers) -> anyhow::Result<bool> {
    for key in MEANS_A_MODEL {
        if l.get::<String>(key)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn planner() -> anyhow::Result<Model> {
    Ok(Model {
        chat: Arc::new(latchkey_llm::ScriptedPlanner),
        config: None,
        label: "the offline scripted planner (for a real model set OPENAI_API_KEY or \
                ANTHROPIC_API_KEY, or --llm-provider and --llm-model as for `serve agent`)"
            .into(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    fn model_with(env: &[(&str, &str)]) -> anyhow::Result<Model> {
        model(&Flags::default(), &ConfigFile::default(), &Env::fixed(env))
    }

    #[test]
    fn nothing_configured_is_the_planner() {
        let m = model_with(&[("AWS_ACCESS_KEY_ID", "AKID")]).unwrap();
        assert!(m.config.is_none() && m.label.contains("offline scripted planner"));
    }

    #[test]
    fn the_usual_keys_choose_the_provider_and_a_model() {
        let m = model_with(&[("ANTHROPIC_API_KEY", "sk-ant-top-secret")]).unwrap();
        let c = m.config.unwrap();
        assert_eq!((c.model.as_str(), c.base_url), ("claude-sonnet-4-5", None));
        assert_eq!(c.api_key.unwrap().expose_secret(), "sk-ant-top-secret");
        assert_eq!(
            m.label,
            "anthropic model claude-sonnet-4-5 (API key from ANTHROPIC_API_KEY)"
        );
        // OpenAI first when both are set; the agent's keys override the model.
        let m = model_with(&[
            ("ANTHROPIC_API_KEY", "a"),
            ("OPENAI_API_KEY", "o"),
            ("LATCHKEY_AGENT_LLM_MODEL", "gpt-4.1"),
        ])
        .unwrap();
        assert_eq!(
            m.label,
            "openai model gpt-4.1 (API key from OPENAI_API_KEY)"
        );
    }

    #[test]
    fn the_agent_keys_configure_the_model() {
        let m = model_with(&[
            ("LATCHKEY_AGENT_LLM_PROVIDER", "openai"),
            ("LATCHKEY_AGENT_LLM_MODEL", "scripted"),
            ("LATCHKEY_AGENT_LLM_BASE_URL", "http://127.0.0.1:9/v1"),
            ("LATCHKEY_AGENT_LLM_TIMEOUT_SECONDS", "7"),
        ])
        .unwrap();
        let c = m.config.unwrap();
        assert_eq!(c.timeout.as_secs(), 7);
        assert_eq!(m.label, "openai model scripted at http://127.0.0.1:9/v1");
    }

    #[test]
    fn the_usual_key_never_goes_to_another_base_url() {
        let m = model_with(&[
            ("OPENAI_API_KEY", "sk-top-secret"),
            ("LATCHKEY_AGENT_LLM_MODEL", "llama3"),
            ("LATCHKEY_AGENT_LLM_BASE_URL", "http://127.0.0.1:11434/v1"),
        ])
        .unwrap();
        assert!(m.config.unwrap().api_key.is_none());
    }

    #[test]
    fn a_model_key_without_a_provider_is_an_error_not_the_planner() {
        let error = model_with(&[("LATCHKEY_AGENT_LLM_MODEL", "m")])
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("`agent.llm.provider`"),
            "{error}"
        );
        let error = model_with(&[("LATCHKEY_AGENT_LLM_PROVIDER", "bedrock")])
            .err()
            .unwrap();
        assert!(error.to_string().contains("`agent.llm.model`"), "{error}");
        let error = model_with(&[
            ("LATCHKEY_AGENT_LLM_PROVIDER", "openai"),
            ("LATCHKEY_AGENT_LLM_BASE_URL", "ftp://x"),
        ])
        .err()
        .unwrap();
        assert!(error.to_string().contains("`agent.llm.model`"), "{error}");
    }
}
