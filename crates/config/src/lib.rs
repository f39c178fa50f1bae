//! The configuration mechanism of every Latchkey service, below the services in the crate
//! graph: each service crate declares its keys once, in its own `config.rs`, with [`keys!`];
//! the `latchkey` binary only assembles the sections.
//!
//! A key's file key, environment variable and flag follow from its name and its
//! [`Section`]: the key `alb_signer` of the section `binding` is `alb_signer` in the file's
//! `[binding]` table, `LATCHKEY_BINDING_ALB_SIGNER` and `--alb-signer` (on `serve binding`).
//! A key named after one of the section's tables (`llm_model`, table `llm`) lives in that
//! table of the file (`[agent.llm] model`). The root section (`""`) has no prefix.
//!
//! [`Layers`] resolves a key: flag > environment > file (`--config`) > the key's default
//! (or `None`, or an error for a required key). Flag and environment text is parsed, file
//! values are deserialized with serde. Every error names the key with its section and where
//! its value came from (`flag --listen`, `environment variable LATCHKEY_LISTEN`,
//! `file latchkey.toml`). Secrets come as themselves (environment, or file/flag where
//! declared) or from a file named by `{key}_file` ([`Layers::secret`]); they never appear
//! in an error.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use secrecy::SecretString;

#[doc(hidden)]
pub use anyhow as __anyhow;

/// A key that failed validation, named without its section (`alb_signer`, `llm.model`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self { key, reason }
    }
}

/// `Ok` when `ok`, else an error naming `key`.
pub fn ensure(ok: bool, key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    ok.then_some(())
        .ok_or_else(|| ConfigError::new(key, reason))
}

/// Every `(key, value, (min, max))` within `min..=max`.
pub fn within(keys: &[(&'static str, i64, (i64, i64))]) -> Result<(), ConfigError> {
    (keys.iter()).try_for_each(|&(key, value, (min, max))| {
        let why = format!("must be between {min} and {max}");
        ensure(min <= value && value <= max, key, why)
    })
}

/// `value` at most `max`.
pub fn at_most(key: &'static str, value: u64, max: u64) -> Result<(), ConfigError> {
    ensure(value <= max, key, format!("must be at most {max}"))
}

/// Every `(key, value)` above zero.
pub fn positive(keys: &[(&'static str, u64)]) -> Result<(), ConfigError> {
    (keys.iter()).try_for_each(|&(key, value)| ensure(value > 0, key, "must be positive"))
}

/// An absolute http(s) URL with a host and without credentials or fragment; a query only
/// where `query` allows it. `Latchkey service` URLs (`identity_url`) allow none.
pub fn http_url(key: &'static str, value: &str, query: bool) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(value)
        .map_err(|e| ConfigError::new(key, format!("not an absolute URL: {e}")))?;
    let why = match query {
        true => "must be an http(s) URL with a host and without credentials or fragment",
        false => "must be an http(s) URL with a host and without credentials, query or fragment",
    };
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && (query || url.query().is_none())
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    ensure(ok, key, why).map(|()| url)
}

/// One key as declared in a [`keys!`] struct.
#[derive(Debug)]
pub struct KeySpec {
    pub name: &'static str,
    /// Its `///` lines: the flag's help.
    pub doc: &'static [&'static str],
    /// Its flag when not named after it (`routes as "route"`); `as ""`: no flag (file and
    /// environment only).
    pub flag: &'static [&'static str],
    /// Repeatable flag; comma-separated in the environment.
    pub many: bool,
    /// A flag without a value means `true`.
    pub optional_value: bool,
}

impl KeySpec {
    /// The key's flag, without `--`.
    pub fn flag(&self) -> Option<String> {
        match self.flag {
            [""] => None,
            [flag] => Some(flag.to_string()),
            _ => Some(self.name.replace('_', "-")),
        }
    }
}

/// Declares a group of keys: a struct with one field per key (an `Option`; the value with
/// `= default`, or with `=> "why it is required"`; `key as "flag"` names its flag, `as ""`
/// none), read by [`Layers::read`]; after
/// `pub section S = "name", tables [..], with More, global = true;` also the [`Section`] `S`.
#[macro_export]
macro_rules! keys {
    ($(#[doc = $doc:literal])* pub section $section:ident = $sname:literal
        $(, tables [$($table:literal),*])? $(, with $more:ty)? $(, global = $global:literal)?;
        $(#[doc = $sdoc:literal])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[doc = $doc])*
        #[derive(Debug)]
        pub enum $section {}
        impl $crate::Section for $section {
            const NAME: &'static str = $sname;
            $(const TABLES: &'static [&'static str] = &[$($table),*];)?
            $(const GLOBAL: bool = $global;)?
            type Keys = ($name $(, $more)?);
        }
        $crate::keys!($(#[doc = $sdoc])* pub struct $name { $($body)* });
    };
    ($(#[doc = $sdoc:literal])* pub struct $name:ident {
        $($(#[doc = $doc:literal])*
        $key:ident $(as $flag:literal)?: $ty:ty $(= $default:expr)? $(=> $required:literal)?,)*
    }) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone)]
        pub struct $name { $(pub $key: $crate::keys!(@type $ty $(, $default)? $(, $required)?),)* }

        impl $crate::KeyGroup for $name {
            fn keys() -> Vec<&'static $crate::KeySpec> {
                const KEYS: &[$crate::KeySpec] = &[$($crate::KeySpec {
                    name: stringify!($key),
                    doc: &[$($doc),*],
                    flag: &[$($flag)?],
                    many: <$ty as $crate::Value>::MANY,
                    optional_value: <$ty as $crate::Value>::OPTIONAL_VALUE,
                }),*];
                KEYS.iter().collect()
            }

            fn read(layers: &$crate::Layers) -> $crate::__anyhow::Result<Self> {
                Ok(Self { $($key: {
                    let value = layers.get::<$ty>(stringify!($key))?;
                    $(let value = value.unwrap_or_else(|| <$ty>::from($default));)?
                    $(let value = value.ok_or_else(|| {
                        layers.error(stringify!($key), concat!("missing: ", $required))
                    })?;)?
                    value
                },)* })
            }
        }
    };
    (@type $ty:ty) => { Option<$ty> };
    (@type $ty:ty, $default:expr) => { $ty };
}

/// A group of keys ([`keys!`]), or groups side by side.
pub trait KeyGroup: Sized {
    fn keys() -> Vec<&'static KeySpec>;
    fn read(layers: &Layers) -> anyhow::Result<Self>;
}

impl<A: KeyGroup, B: KeyGroup> KeyGroup for (A, B) {
    fn keys() -> Vec<&'static KeySpec> {
        [A::keys(), B::keys()].concat()
    }

    fn read(layers: &Layers) -> anyhow::Result<Self> {
        Ok((A::read(layers)?, B::read(layers)?))
    }
}

/// A section of the configuration: its name gives the file table and environment prefix.
pub trait Section {
    /// `binding` (file `[binding]`, `LATCHKEY_BINDING_*`), or `""` for the root.
    const NAME: &'static str;
    /// Tables of the section in the file (`llm`: `llm_model` is `[agent.llm] model`).
    const TABLES: &'static [&'static str] = &[];
    /// Its flags are accepted by every command.
    const GLOBAL: bool = false;
    type Keys: KeyGroup;
}

/// A key's value type: parsed from flag and environment text, deserialized from the file.
pub trait Value: Sized {
    const MANY: bool = false;
    const OPTIONAL_VALUE: bool = false;
    fn parse(text: &[String]) -> Result<Self, String>;
    /// A file value: a string parsed as text (no other value is echoed in an error).
    fn from_file(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(text) => Self::parse(&[text]),
            _ => Err("must be a string".into()),
        }
    }
}

/// Deserialize a file value (TOML's message, which names the wrong type).
pub fn from_toml<T: serde::de::DeserializeOwned>(value: toml::Value) -> Result<T, String> {
    (value.try_into()).map_err(|e: toml::de::Error| e.message().to_string())
}

/// Values parsed by `FromStr` from text, deserialized from other file values.
macro_rules! parsed_values {
    ($($ty:ty: $what:literal $(, $optional:literal)?;)*) => {$(
        impl Value for $ty {
            $(const OPTIONAL_VALUE: bool = $optional;)?
            fn parse(text: &[String]) -> Result<Self, String> {
                let text = text.join(",");
                (text.trim().parse()).map_err(|_| format!("{text:?} is not {}", $what))
            }
            fn from_file(value: toml::Value) -> Result<Self, String> {
                match value {
                    toml::Value::String(text) => Self::parse(&[text]),
                    value => from_toml(value),
                }
            }
        }
    )*};
}
parsed_values! {
    bool: "true or false", true;
    u32: "a whole number";
    u64: "a whole number";
    usize: "a whole number";
    i64: "a whole number";
    SocketAddr: "an address like 127.0.0.1:8080";
}

/// Text as given.
macro_rules! text_values {
    ($($ty:ty),*) => {$(
        impl Value for $ty {
            fn parse(text: &[String]) -> Result<Self, String> {
                Ok(text.join(",").into())
            }
        }
    )*};
}
text_values!(String, PathBuf, SecretString);

/// An element of a list key: from the file an array of tables; as text a JSON array, or
/// (with `MANY`, a repeatable flag) one element per value by [`ListItem::parse_one`].
pub trait ListItem: serde::de::DeserializeOwned {
    const MANY: bool = false;
    fn parse_one(_text: &str) -> Result<Self, String> {
        Err("not a list element".into())
    }
}

impl<T: ListItem> Value for Vec<T> {
    const MANY: bool = T::MANY;
    fn parse(text: &[String]) -> Result<Self, String> {
        match T::MANY {
            true => text.iter().map(|t| T::parse_one(t)).collect(),
            false => serde_json::from_str(&text.join(","))
                .map_err(|e| format!("not a JSON array of tables: {e}")),
        }
    }
    fn from_file(value: toml::Value) -> Result<Self, String> {
        from_toml(value)
    }
}

/// The flags of a section's keys given on the command line (a clap argument group).
pub struct Flags<S> {
    values: BTreeMap<&'static str, Vec<String>>,
    section: PhantomData<fn() -> S>,
}

impl<S> fmt::Debug for Flags<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Flags may hold a database URL with its password.
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl<S> Default for Flags<S> {
    fn default() -> Self {
        let (values, section) = (BTreeMap::new(), PhantomData);
        Self { values, section }
    }
}

impl<S: Section> Flags<S> {
    /// The text given to a key's flag.
    pub fn value(&self, key: &str) -> Option<String> {
        self.values.get(key).map(|v| v.join(","))
    }

    /// The section as [`ConfigFile::check`] checks it.
    pub fn spec() -> SectionSpec {
        (S::NAME, S::TABLES, S::Keys::keys(), &[])
    }
}

impl<S: Section> clap::FromArgMatches for Flags<S> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        for key in S::Keys::keys().into_iter().filter(|k| k.flag().is_some()) {
            if let Some(values) = matches.get_many::<String>(key.name) {
                flags.values.insert(key.name, values.cloned().collect());
            }
        }
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<S: Section> clap::Args for Flags<S> {
    fn augment_args(command: clap::Command) -> clap::Command {
        command.args(S::Keys::keys().into_iter().filter_map(|key| {
            let help: Vec<&str> = key.doc.iter().map(|line| line.trim()).collect();
            let env = env_name(S::NAME, key.name);
            let mut arg = clap::Arg::new(key.name)
                .long(key.flag()?)
                .value_name(key.name.to_ascii_uppercase())
                .global(S::GLOBAL)
                .help(format!("{} [env: {env}]", help.join(" ")));
            if S::GLOBAL {
                // After the command's own flags in every command's help.
                arg = arg.display_order(1000);
            }
            if key.many {
                arg = arg.action(clap::ArgAction::Append).value_delimiter(',');
            }
            if key.optional_value {
                arg = arg.num_args(0..=1).default_missing_value("true");
            }
            Some(arg)
        }))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

/// The environment: the process's, or a fixed one (tests).
#[derive(Debug, Default)]
pub struct Env(Option<BTreeMap<String, String>>);

impl Env {
    pub fn process() -> Self {
        Self(None)
    }

    pub fn fixed(pairs: &[(&str, &str)]) -> Self {
        let vars = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Self(Some(vars.collect()))
    }

    /// Refuse a start that still sets a variable of a renamed key, naming the new one: an
    /// old name silently ignored would quietly change behaviour. `renamed`: (old, new).
    pub fn refuse_renamed(&self, renamed: &[(&str, &str)]) -> Result<(), String> {
        match renamed.iter().find(|(old, _)| self.get(old).is_some()) {
            Some((old, new)) => Err(format!(
                "{old} is no longer read: the setting is now {new}; rename it and start again"
            )),
            None => Ok(()),
        }
    }

    /// A variable's value; a blank one counts as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        match &self.0 {
            None => std::env::var(name).ok(),
            Some(vars) => vars.get(name).cloned(),
        }
        .filter(|v| !v.trim().is_empty())
    }
}

/// The environment variable of a key: `LATCHKEY_AGENT_LLM_MODEL`.
fn env_name(section: &str, key: &str) -> String {
    let name = [section, &key.replace('.', "_")].join("_");
    format!("LATCHKEY_{}", name.trim_start_matches('_')).to_ascii_uppercase()
}

/// A key with its section, as the file names it (`agent.listen`; `listen` in the root).
fn dotted(section: &str, key: &str) -> String {
    [section, key].join(".").trim_start_matches('.').to_string()
}

/// A section as the file checks it: name, tables, keys, sub-sections (root: `binding`, …).
pub type SectionSpec = (&'static str, Names, Vec<&'static KeySpec>, Names);
type Names = &'static [&'static str];

/// The TOML file (`--config`), empty without one.
#[derive(Debug, Default)]
pub struct ConfigFile {
    path: Option<PathBuf>,
    root: toml::Table,
}

impl ConfigFile {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Self> {
        let root = toml::from_str(text)
            .map_err(|e| anyhow!("config file {}: {}", path.display(), e.message()))?;
        let path = Some(path.to_path_buf());
        Ok(Self { path, root })
    }

    /// A section's values by key name, its tables flattened (`[agent.llm] model` is
    /// `llm_model`), each with the key as the file shows it (`agent.llm.model`).
    fn section(&self, name: &str, tables: &[&str]) -> anyhow::Result<Flat> {
        let shown = |key: &str| dotted(name, key);
        let table = match self.root.get(name) {
            _ if name.is_empty() => &self.root,
            None => return Ok(Flat::new()),
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(self.unknown(&shown(name))),
        };
        let mut flat = Flat::new();
        for (key, value) in table {
            let prefixed = tables.iter().any(|t| key.starts_with(&format!("{t}_")));
            match (value, tables.contains(&key.as_str())) {
                (toml::Value::Table(inner), true) => {
                    for (sub, value) in inner {
                        let shown = shown(&format!("{key}.{sub}"));
                        flat.insert(format!("{key}_{sub}"), (shown, value.clone()));
                    }
                }
                _ if prefixed => return Err(self.unknown(&shown(key))),
                _ => drop(flat.insert(key.clone(), (shown(key), value.clone()))),
            }
        }
        Ok(flat)
    }

    fn unknown(&self, shown: &str) -> anyhow::Error {
        let file = self.path.as_deref().unwrap_or(Path::new("")).display();
        anyhow!("config file {file}: unknown configuration key `{shown}`")
    }

    /// Refuse a key no section declares (`sections`: name, tables, keys, sub-sections).
    pub fn check(&self, sections: &[SectionSpec]) -> anyhow::Result<()> {
        for (name, tables, keys, subsections) in sections {
            for (key, (shown, _)) in self.section(name, tables)? {
                if !keys.iter().any(|k| k.name == key) && !subsections.contains(&key.as_str()) {
                    return Err(self.unknown(&shown));
                }
            }
        }
        Ok(())
    }
}

/// A section's file values by key name, with the key as the file shows it.
type Flat = BTreeMap<String, (String, toml::Value)>;

/// A value as given: text (flag, environment) or a file value.
enum Raw {
    Text(Vec<String>),
    File(toml::Value),
}

/// A secret and the key its errors name (`name`, or `name_file` when read from a file).
#[derive(Debug)]
pub struct Secret {
    pub value: SecretString,
    pub key: String,
}

/// The layers of one section: flags, environment, file.
pub struct Layers<'a> {
    section: &'static str,
    tables: &'static [&'static str],
    keys: Vec<&'static KeySpec>,
    flags: &'a BTreeMap<&'static str, Vec<String>>,
    env: &'a Env,
    file: Flat,
    file_path: Option<&'a Path>,
}

impl fmt::Debug for Layers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The file's values may hold secrets.
        write!(f, "Layers({:?})", self.section)
    }
}

impl<'a> Layers<'a> {
    pub fn new<S: Section>(
        flags: &'a Flags<S>,
        file: &'a ConfigFile,
        env: &'a Env,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            section: S::NAME,
            tables: S::TABLES,
            keys: S::Keys::keys(),
            flags: &flags.values,
            env,
            file: file.section(S::NAME, S::TABLES)?,
            file_path: file.path.as_deref(),
        })
    }

    /// Every key of a group.
    pub fn read<G: KeyGroup>(&self) -> anyhow::Result<G> {
        G::read(self)
    }

    fn spec(&self, key: &str) -> Option<&'static KeySpec> {
        self.keys.iter().copied().find(|k| k.name == key)
    }

    /// The key as the file names it, with its section: `agent.llm.model`.
    pub fn display(&self, key: &str) -> String {
        let mut key = key.to_string();
        let prefixed = |t: &&&str| key.starts_with(&format!("{t}_"));
        if let Some(table) = self.tables.iter().find(prefixed) {
            key.replace_range(table.len()..=table.len(), ".");
        }
        dotted(self.section, &key)
    }

    /// A key as an operator sets it, for messages: its file key, environment variable and
    /// flag, e.g. the file key `binding.outbound.allow_private_addresses` in backquotes,
    /// then `(LATCHKEY_BINDING_OUTBOUND_ALLOW_PRIVATE_ADDRESSES, --outbound-allow-private-addresses)`.
    pub fn describe(&self, key: &str) -> String {
        let flag = self.spec(key).and_then(KeySpec::flag);
        let flag = flag.map(|f| format!(", --{f}")).unwrap_or_default();
        let env = env_name(self.section, key);
        format!("`{}` ({env}{flag})", self.display(key))
    }

    /// The value of the highest layer that sets `key` (blank text counts as unset), and
    /// where it came from (`flag --listen`).
    fn find(&self, key: &str) -> Option<(Raw, String)> {
        let spec = self.spec(key);
        if let (Some(values), Some(flag)) = (self.flags.get(key), spec.and_then(KeySpec::flag))
            && values.iter().any(|v| !v.trim().is_empty())
        {
            return Some((Raw::Text(values.clone()), format!("flag --{flag}")));
        }
        let env = env_name(self.section, key);
        if let Some(value) = self.env.get(&env) {
            // Comma-separated, as a repeated flag; other values join their text again.
            let values = value.split(',').map(str::to_string).collect();
            return Some((Raw::Text(values), format!("environment variable {env}")));
        }
        let file = self.file_path.unwrap_or(Path::new("")).display();
        match self.file.get(key).map(|(_, value)| value) {
            Some(toml::Value::String(s)) if s.trim().is_empty() => None,
            Some(value) if spec.is_some() => {
                Some((Raw::File(value.clone()), format!("file {file}")))
            }
            _ => None,
        }
    }

    /// A key's value, `None` when no layer sets it.
    pub fn get<T: Value>(&self, key: &str) -> anyhow::Result<Option<T>> {
        let Some((raw, source)) = self.find(key) else {
            return Ok(None);
        };
        match raw {
            Raw::Text(text) => T::parse(&text),
            Raw::File(value) => T::from_file(value),
        }
        .map(Some)
        .map_err(|why| self.error_from(key, Some(&source), why))
    }

    /// An error about `key` (`llm.model`, `llm_model` or `tools.url` for the key `tools`),
    /// naming where its value came from.
    pub fn error(&self, key: &str, why: impl fmt::Display) -> anyhow::Error {
        let flat = key.replace('.', "_");
        let source = [flat.as_str(), key.split(['.', '[']).next().unwrap_or(key)]
            .into_iter()
            .find_map(|k| self.find(k))
            .map(|(_, source)| source);
        self.error_from(key, source.as_ref(), why)
    }

    /// An error naming the first of `keys` that a layer sets: `why` it may not be.
    pub fn refuse(&self, keys: &[&str], why: impl fmt::Display) -> anyhow::Result<()> {
        match keys.iter().find(|key| self.find(key).is_some()) {
            Some(key) => Err(self.error(key, why)),
            None => Ok(()),
        }
    }

    /// A validation result, its error naming the key and where its value came from.
    pub fn check<T>(&self, result: Result<T, ConfigError>) -> anyhow::Result<T> {
        result.map_err(|e| self.error(e.key, e.reason))
    }

    fn error_from(
        &self,
        key: &str,
        from: Option<&String>,
        why: impl fmt::Display,
    ) -> anyhow::Error {
        let shown = self.display(key);
        match (from, self.spec(&key.replace('.', "_"))) {
            (Some(from), _) => anyhow!("invalid configuration key `{shown}` (from {from}): {why}"),
            (None, Some(spec)) => {
                let flag = (spec.flag().map(|f| format!(", flag --{f}"))).unwrap_or_default();
                let env = env_name(self.section, spec.name);
                anyhow!(
                    "invalid configuration key `{shown}` (not set: file key `{shown}`, env {env}{flag}): {why}"
                )
            }
            (None, None) => anyhow!("invalid configuration key `{shown}`: {why}"),
        }
    }

    /// A secret given as itself (`key`: its environment variable, and the file or a flag
    /// where `key` is declared) or in a file named by the key `{key}_file`; not both.
    pub fn secret(&self, key: &str) -> anyhow::Result<Option<Secret>> {
        let file_key = format!("{key}_file");
        let path: Option<PathBuf> = self.get(&file_key)?;
        let (text, key) = match (self.find(key), path) {
            (Some((_, source)), Some(_)) => {
                let shown = self.display(&file_key);
                let why = format!("set either {shown} or {source}, not both");
                return Err(self.error(&file_key, why));
            }
            (None, Some(path)) => (
                std::fs::read_to_string(&path).map_err(|e| {
                    self.error(&file_key, format!("cannot read {}: {e}", path.display()))
                })?,
                file_key,
            ),
            (Some(_), None) => (self.get::<String>(key)?.unwrap_or_default(), key.into()),
            (None, None) => return Ok(None),
        };
        let text = zeroize::Zeroizing::new(text);
        Ok(Some(Secret {
            value: text.trim().into(),
            key,
        }))
    }

    /// A secret that must be set: `what` says what its file holds.
    pub fn required_secret(&self, key: &str, what: &str) -> anyhow::Result<Secret> {
        self.secret(key)?.ok_or_else(|| {
            let file_key = format!("{key}_file");
            let (shown, env) = (self.display(&file_key), env_name(self.section, key));
            let why = format!("missing: set {shown} (a file holding {what}) or {env}");
            self.error(&file_key, why)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_variable_stops_the_start_naming_the_new_one() {
        let renamed = [("LK_OLD", "LK_NEW")];
        assert!(
            Env::fixed(&[("LK_NEW", "true")])
                .refuse_renamed(&renamed)
                .is_ok()
        );
        assert!(
            Env::fixed(&[("LK_OLD", " ")])
                .refuse_renamed(&renamed)
                .is_ok(),
            "blank is unset"
        );
        let refused = Env::fixed(&[("LK_OLD", "true")])
            .refuse_renamed(&renamed)
            .unwrap_err();
        assert!(
            refused.contains("LK_OLD") && refused.contains("LK_NEW"),
            "{refused}"
        );
    }
}
