//! `latchkey admin …`: credentials, audit, grants and the key-encryption key, directly on
//! the storage (no server needed).

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use latchkey_authn::outbound::OutboundPolicy;
use latchkey_core::clock::{Clock, SystemClock};
use latchkey_core::crypto::{self, KeyProvider, KmsRoot as _};
use latchkey_identity::admin::{Admin, GrantFilter};
use latchkey_identity::auth::Role;
use latchkey_store::Store;

use crate::cli::{AdminCommand, AuditCommand, CredentialsCommand, GrantsCommand, VaultCommand};
use crate::config::{ConfigFile, Env, IdentityConfig, Layers, StorageConfig};
use crate::{check_key_file, keyfile, open_existing_storage, open_storage};

pub(crate) async fn run(
    storage: &StorageConfig,
    file: &ConfigFile,
    env: &Env,
    command: AdminCommand,
) -> anyhow::Result<()> {
    if let AdminCommand::Init { json } = command {
        return init(storage, json).await;
    }
    // Every other command works on an installation that exists, and creates nothing.
    let crate::Opened { store, keys, kms } = open_existing_storage(storage).await?;
    // `vault status` and `rotate-key` report and repair a mismatch themselves.
    if !matches!(
        command,
        AdminCommand::Vault { .. } | AdminCommand::Audit { .. }
    ) {
        check_key_file(storage, &store, keys.as_ref()).await?;
    }
    // The administration service on the bare store: nothing starts running, no signing key
    // is created. Its outbound policy only matters for `grants revoke` (RFC 7009), which
    // builds its own from the serve configuration.
    let admin = Admin::new(
        store.clone(),
        keys.clone(),
        Arc::new(SystemClock),
        OutboundPolicy::default(),
    )?;
    match command {
        AdminCommand::Credentials {
            command:
                CredentialsCommand::Create {
                    role,
                    description,
                    json,
                },
        } => {
            let role = Role::parse(&role).map_err(|e| anyhow!("--role: {e}"))?;
            let created = admin.create_credential(role, description).await?;
            let (id, secret, role) = (created.access_key_id, created.secret, created.role);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"accessKeyId": id, "secretAccessKey": secret.as_str(), "role": role.as_string()})
                );
            } else {
                println!(
                    "Access key id:     {id}\nSecret access key: {}\nRole:              {role}\n\nThe secret is shown only now. Use it for SigV4, or as `Authorization: Bearer {id}:<secret>`.",
                    secret.as_str()
                );
            }
        }
        AdminCommand::Credentials {
            command: CredentialsCommand::List { json },
        } => {
            let creds = admin.store().list_credentials().await?;
            if json {
                let items: Vec<_> = creds
                    .iter()
                    .map(|c| serde_json::json!({"accessKeyId": c.access_key_id, "role": c.role, "description": c.description, "createdTime": c.created_ms / 1000, "revoked": c.revoked_ms.is_some(), "revokedTime": c.revoked_ms.map(|m| m / 1000)}))
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                println!(
                    "{:<22} {:<28} {:<8} DESCRIPTION",
                    "ACCESS KEY ID", "ROLE", "STATE"
                );
                for c in creds {
                    println!(
                        "{:<22} {:<28} {:<8} {}",
                        c.access_key_id,
                        c.role,
                        if c.revoked_ms.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        c.description.unwrap_or_default()
                    );
                }
            }
        }
        AdminCommand::Credentials {
            command: CredentialsCommand::Revoke { access_key_id },
        } => {
            admin
                .revoke_credential(&access_key_id)
                .await
                .map_err(|e| match e {
                    latchkey_store::StoreError::NotFound => {
                        anyhow!("no active credential {access_key_id:?}")
                    }
                    e => e.into(),
                })?;
            println!(
                "revoked {access_key_id} (running servers stop accepting it within their cache TTL, 5 s by default)"
            );
        }
        AdminCommand::Audit {
            command: AuditCommand::List { limit },
        } => {
            for e in admin.store().list_audit(limit.clamp(1, 100_000)).await? {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
        AdminCommand::Audit {
            command: AuditCommand::Verify { tail, json },
        } => {
            let report = admin.verify_audit(tail).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let range = match (report.first_seq, report.last_seq) {
                    (Some(a), Some(b)) => format!("blocks {a} to {b}"),
                    _ => "no chained blocks".to_string(),
                };
                let scope = if report.complete {
                    "whole chain"
                } else {
                    "newest blocks only"
                };
                if report.fault.is_none() {
                    println!(
                        "audit chain intact: {} block(s) checked ({range}, {scope}); head {}; {} block(s) from before the chain not covered",
                        report.checked,
                        report.head_hash.as_deref().unwrap_or("-"),
                        report.unchained
                    );
                }
            }
            if let Some(fault) = &report.fault {
                return Err(anyhow!("audit chain broken at {fault}"));
            }
        }
        AdminCommand::Audit {
            command: AuditCommand::Export { since, until },
        } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            admin
                .export_audit(since, until.unwrap_or(i64::MAX), &mut out)
                .await?;
            out.flush()?;
        }
        AdminCommand::Grants { command } => grants(store, keys, file, env, command).await?,
        AdminCommand::Vault { command } => match kms {
            Some(kms) => vault_admin_kms(&store, &kms, command).await?,
            None => vault_admin(storage, &store, command).await?,
        },
        AdminCommand::Init { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// `admin init`: the data directory, the key file and the database tables, each created
/// when missing (what `serve identity` does at its first start); then the key file is
/// checked against the database. Running it again changes nothing.
async fn init(storage: &StorageConfig, json: bool) -> anyhow::Result<()> {
    let had_key_file = match storage.key_root {
        crate::config::KeyRoot::File => storage.key_file.is_file(),
        crate::config::KeyRoot::Kms(_) => false,
    };
    let had_tables = match Store::connect_existing(&storage.database_url).await {
        Ok(Some(store)) => {
            store.close().await;
            true
        }
        _ => false,
    };
    let crate::Opened { store, keys, kms } = open_storage(storage).await?;
    check_key_file(storage, &store, keys.as_ref()).await?;
    store.close().await;
    let state = |existed: bool| if existed { "existing" } else { "created" };
    let (data_dir, key_file) = (storage.data_dir.display(), storage.key_file.display());
    let database = storage.database_url_redacted();
    let (keys_json, keys_line) = match &kms {
        None => (
            serde_json::json!({"keyProvider": "file", "keyFile": key_file.to_string(), "keyFileState": state(had_key_file)}),
            format!("Key file:       {key_file} ({})", state(had_key_file)),
        ),
        Some(kms) => (
            serde_json::json!({"keyProvider": "aws-kms", "kmsKeyId": kms.service_key(), "activeKeyId": keys.active_key_id()}),
            format!(
                "Keys:           in the database, wrapped by the KMS key {} (active {})",
                kms.service_key(),
                keys.active_key_id()
            ),
        ),
    };
    if json {
        let mut out = serde_json::json!({
            "dataDir": data_dir.to_string(),
            "database": database, "databaseState": state(had_tables),
        });
        if let (Some(out), serde_json::Value::Object(more)) = (out.as_object_mut(), keys_json) {
            out.extend(more);
        }
        println!("{out}");
    } else {
        println!(
            "Latchkey installation ready.\nData directory: {data_dir}\n{keys_line}\nDatabase:       {database} ({})",
            state(had_tables)
        );
    }
    Ok(())
}

async fn grants(
    store: Store,
    keys: Arc<dyn KeyProvider>,
    file: &ConfigFile,
    env: &Env,
    command: GrantsCommand,
) -> anyhow::Result<()> {
    let clock = SystemClock;
    let admin = |policy: Option<OutboundPolicy>| {
        Admin::new(
            store.clone(),
            keys.clone(),
            Arc::new(SystemClock),
            policy.unwrap_or_default(),
        )
    };
    match command {
        GrantsCommand::List {
            workload,
            user,
            limit,
        } => {
            let filter = GrantFilter {
                workload,
                user,
                limit: Some(limit),
            };
            let mut out = std::io::stdout().lock();
            admin(None)?
                .list_grants(&filter, |grant| {
                    writeln!(out, "{}", serde_json::to_string(grant)?)?;
                    Ok(())
                })
                .await?;
        }
        GrantsCommand::Revoke {
            workload,
            user,
            user_issuer,
            provider,
            serve,
        } => {
            let user = match user_issuer {
                None => latchkey_core::UserPrincipal::user_id(user),
                Some(issuer) => latchkey_core::UserPrincipal::jwt(issuer, user),
            }
            .map_err(|e| anyhow!("--user/--user-issuer: {e}"))?;
            let policy = IdentityConfig::resolve(&Layers::new(&serve, file, env)?)?.outbound();
            let key = latchkey_store::GrantKey {
                workload,
                user,
                provider,
            };
            let report = admin(Some(policy))?.revoke_grant(&key).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        GrantsCommand::Seed {
            workload,
            provider,
            count,
            user_prefix,
            scopes,
        } => {
            if store.find_oauth2_provider(&provider).await?.is_none() {
                return Err(anyhow!("no OAuth2 credential provider {provider:?}"));
            }
            let scopes: Vec<String> = scopes.split_whitespace().map(str::to_string).collect();
            let expires_ms = clock.now_ms() + 86_400_000;
            let mut batch = Vec::with_capacity(1000);
            for i in 0..count {
                let key = latchkey_store::GrantKey {
                    workload: workload.clone(),
                    user: latchkey_core::UserPrincipal::user_id(format!("{user_prefix}{i}"))
                        .map_err(|e| anyhow!("--user-prefix: {e}"))?,
                    provider: provider.clone(),
                };
                let token = format!("seeded-access-token-{i}");
                let access_envelope = crypto::encrypt(
                    keys.as_ref(),
                    latchkey_identity::aad::grant(&key, "access").as_bytes(),
                    token.as_bytes(),
                )
                .await?;
                batch.push((
                    key,
                    latchkey_store::GrantTokens {
                        scopes: scopes.clone(),
                        resources: vec![],
                        token_type: "Bearer".into(),
                        access_envelope,
                        refresh_envelope: None,
                        expires_ms,
                    },
                ));
                if batch.len() == 1000 || i + 1 == count {
                    store.seed_grants(&batch, clock.now_ms()).await?;
                    batch.clear();
                }
            }
            store.after_bulk_load().await?;
            println!(
                "{}",
                serde_json::json!({"seeded": count, "grants": store.count_grants().await?})
            );
        }
    }
    Ok(())
}
/// Re-wrap passes while rows keep changing under us (a live server rewrote them).
const MAX_REWRAP_PASSES: u32 = 3;

/// Re-wrap every envelope under `keys`' active key, again while rows changed under us.
async fn rewrap_until_settled(
    store: &Store,
    keys: &dyn KeyProvider,
) -> anyhow::Result<(u32, latchkey_identity::rotation::RewrapReport)> {
    let mut report = latchkey_identity::rotation::RewrapReport::default();
    let mut passes = 0;
    loop {
        passes += 1;
        let pass = latchkey_identity::rotation::rewrap_all(store, keys).await?;
        report.merge(&pass);
        if pass.total.skipped_changed == 0 || passes >= MAX_REWRAP_PASSES {
            return Ok((passes, report));
        }
    }
}

/// What `vault rotate-key` did, with either key provider: its audit event and its report.
struct Rotated {
    provider: &'static str,
    previous: String,
    active: String,
    grace_seconds: u64,
    passes: u32,
    report: latchkey_identity::rotation::RewrapReport,
    usage: latchkey_identity::rotation::KeyUsage,
    retired: Vec<String>,
}

impl Rotated {
    /// Keys other than the active one that envelopes still use.
    fn in_use(&self) -> std::collections::BTreeMap<&String, &u64> {
        let old = |(id, _): &(&String, &u64)| **id != self.active;
        self.usage.total.iter().filter(old).collect()
    }

    /// The `RotateKeyEncryptionKey` audit event, sealed in the chain with `keys`.
    async fn record(&self, store: &Store, keys: Arc<dyn KeyProvider>) -> anyhow::Result<()> {
        let mut event = latchkey_identity::audit::event(
            SystemClock.now_ms(),
            None,
            "RotateKeyEncryptionKey",
            latchkey_core::audit::Outcome::Success,
        );
        event.target = Some(self.active.clone());
        event.detail = serde_json::json!({
            "via": "cli",
            "keyProvider": self.provider,
            "previousKeyId": self.previous,
            "activeKeyId": self.active,
            "passes": self.passes,
            "rewrap": self.report.total,
            "retiredKeyIds": self.retired,
            "oldKeysStillInUse": self.in_use(),
        });
        let chain = latchkey_store::AuditChain::new(keys);
        store.append_audit(&chain, &[event]).await?;
        Ok(())
    }

    /// The JSON report (no key material), with the keys held after the rotation and those
    /// envelopes use that are not held (`missing_name`).
    fn print(&self, key_ids: &[String], missing_name: &str) {
        let missing: Vec<&String> = (self.usage.total.keys())
            .filter(|id| !key_ids.contains(id))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "keyProvider": self.provider,
                "activeKeyId": self.active,
                "previousKeyId": self.previous,
                "graceSeconds": self.grace_seconds,
                "passes": self.passes,
                "rewrap": self.report,
                "envelopesByKeyId": self.usage.total,
                "malformedEnvelopes": self.usage.malformed,
                "retiredKeyIds": self.retired,
                "oldKeysStillInUse": self.in_use(),
                missing_name: missing,
                "keyIds": key_ids,
            })
        );
        if self.report.total.failed > 0 {
            eprintln!(
                "latchkey: {} envelope(s) could not be re-wrapped (see the warnings above); their keys were kept",
                self.report.total.failed
            );
        }
    }
}

async fn vault_admin(
    storage: &StorageConfig,
    store: &Store,
    command: VaultCommand,
) -> anyhow::Result<()> {
    use latchkey_identity::rotation;
    let path = &storage.key_file;
    match command {
        VaultCommand::Status => {
            let keys = keyfile::load(path)?;
            let usage = rotation::key_usage_by_column(store).await?;
            let missing: Vec<&String> = usage.total.keys().filter(|id| !keys.has_key(id)).collect();
            println!(
                "{}",
                serde_json::json!({
                    "keyProvider": "file",
                    "activeKeyId": keys.active_key_id(),
                    "keyIds": keys.key_ids(),
                    "envelopesByKeyId": usage.total,
                    "columns": usage.columns,
                    "malformedEnvelopes": usage.malformed,
                    "keyIdsMissingFromKeyFile": missing,
                })
            );
        }
        VaultCommand::RotateKey {
            grace_seconds,
            no_retire,
        } => {
            let _lock = keyfile::RotationLock::acquire(path)?;
            // (a) A new active key; the old ones stay for opening.
            let mut keys = keyfile::load(path)?;
            let previous = keys.active_key_id();
            let active = keys.rotate()?;
            keyfile::write_atomic(path, &keys)?;
            eprintln!(
                "latchkey: new active key-encryption key {active} written to {}; waiting {grace_seconds} s for running servers to reload it",
                path.display()
            );
            // (b) Servers seal with the old key until they notice the new file.
            tokio::time::sleep(Duration::from_secs(grace_seconds)).await;
            // (c) Re-wrap; rows a server changed meanwhile are left to the next pass.
            let (passes, report) = rewrap_until_settled(store, &keys).await?;
            // (d) Keys no envelope uses any more leave the file.
            let usage = rotation::key_usage_by_column(store).await?;
            let mut retired = vec![];
            if !no_retire {
                // Re-read: whatever is in the file now is what we edit.
                let mut current = keyfile::load(path)?;
                let current_active = current.active_key_id();
                for id in current.key_ids() {
                    if id != current_active && !usage.total.contains_key(&id) {
                        current.retire(&id)?;
                        retired.push(id);
                    }
                }
                if !retired.is_empty() {
                    keyfile::write_atomic(path, &current)?;
                }
            }
            let rotated = Rotated {
                provider: "file",
                previous,
                active,
                grace_seconds,
                passes,
                report,
                usage,
                retired,
            };
            rotated
                .record(store, Arc::new(keyfile::load(path)?))
                .await?;
            rotated.print(&keyfile::load(path)?.key_ids(), "keyIdsMissingFromKeyFile");
        }
    }
    Ok(())
}

/// `admin vault …` with `key_provider = "aws-kms"`: the keys are rows of the database,
/// wrapped by KMS; a rotation adds the next generation (running servers see it within
/// `latchkey_kms::REFRESH_INTERVAL`), re-wraps every envelope under it, and removes the
/// rows no envelope uses any more.
async fn vault_admin_kms(
    store: &Store,
    kms: &Arc<latchkey_kms::KmsKeyProvider>,
    command: VaultCommand,
) -> anyhow::Result<()> {
    use latchkey_identity::rotation;
    let keys: &dyn KeyProvider = kms.as_ref();
    match command {
        VaultCommand::Status => {
            let stored = kms.stored_key_ids().await?;
            let usage = rotation::key_usage_by_column(store).await?;
            let missing: Vec<&String> = usage
                .total
                .keys()
                .filter(|id| !stored.contains(id))
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "keyProvider": "aws-kms",
                    "kmsKeyId": kms.service_key(),
                    "wrappingKmsKey": kms.wrapping_key(),
                    "activeKeyId": keys.active_key_id(),
                    "keyIds": stored,
                    "envelopesByKeyId": usage.total,
                    "columns": usage.columns,
                    "malformedEnvelopes": usage.malformed,
                    "keyIdsMissingFromDatabase": missing,
                })
            );
        }
        VaultCommand::RotateKey {
            grace_seconds,
            no_retire,
        } => {
            let previous = keys.active_key_id();
            let active = kms.rotate().await?;
            eprintln!(
                "latchkey: new active key-encryption key {active} stored (wrapped by KMS); waiting {grace_seconds} s for running servers to load it"
            );
            tokio::time::sleep(Duration::from_secs(grace_seconds)).await;
            let (passes, report) = rewrap_until_settled(store, keys).await?;
            let usage = rotation::key_usage_by_column(store).await?;
            let mut retired = vec![];
            if !no_retire {
                for id in kms.stored_key_ids().await? {
                    if id != active && !usage.total.contains_key(&id) && kms.retire(&id).await? {
                        retired.push(id);
                    }
                }
            }
            let rotated = Rotated {
                provider: "aws-kms",
                previous,
                active,
                grace_seconds,
                passes,
                report,
                usage,
                retired,
            };
            rotated.record(store, kms.clone()).await?;
            rotated.print(&kms.stored_key_ids().await?, "keyIdsMissingFromDatabase");
        }
    }
    Ok(())
}
