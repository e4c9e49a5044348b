//! `byteedit keys`: API keys from a shell with database access. This is how
//! the first admin key is made; after that admins may use `/v1/keys` too.

use anyhow::Context;
use byteedit_jobs::access::Role;
use byteedit_jobs::config::{DEFAULT_DATABASE_URL, connect_database, redacted};
use byteedit_jobs::db::api_keys::{self, ApiKey, NewKey};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct KeysCommand {
    /// Postgres URL; the database is created and migrated if needed.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    database_url: String,
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(Subcommand, Debug)]
enum KeysAction {
    /// Make a key and print it (only once: only its hash is stored).
    Create {
        /// client: submits edits, reads its own jobs; volunteer: votes;
        /// admin: keys, comparisons, statistics, every job.
        #[arg(long, value_enum)]
        role: Role,
        /// Who the key is for (for volunteers, the name in exports).
        #[arg(long)]
        name: String,
        /// Volunteer keys: may also rate single outputs.
        #[arg(long)]
        expert: bool,
        /// Volunteer keys: another key for this existing volunteer (who keeps
        /// their votes and expert flag), e.g. after revoking a leaked one.
        #[arg(long)]
        volunteer_id: Option<uuid::Uuid>,
        /// Requests a minute for this key (default: the API's --rate-limit).
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// List every key (never the secrets).
    List,
    /// Revoke a key at once.
    Revoke {
        /// The key's id (from `list`).
        id: uuid::Uuid,
    },
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let db = connect_database(&cmd.database_url, 2, 10.0)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to Postgres ({})",
                    redacted(&cmd.database_url)
                )
            })?;
        match cmd.action {
            KeysAction::Create {
                role,
                name,
                expert,
                volunteer_id,
                rate_limit,
            } => {
                byteedit_api::routes::keys::check_new_key(
                    &name,
                    role,
                    expert,
                    volunteer_id,
                    rate_limit,
                )?;
                if let Some(id) = volunteer_id
                    && !api_keys::volunteer_exists(&db, id).await?
                {
                    anyhow::bail!("no volunteer `{id}`; see `byteedit keys list`");
                }
                let new = NewKey {
                    name: name.trim(),
                    role,
                    expert,
                    volunteer: volunteer_id,
                    rate_limit,
                };
                let (record, key) = api_keys::create(&db, &new).await?;
                eprintln!(
                    "created {} key `{}` ({})",
                    record.role, record.name, record.id
                );
                // The key alone on stdout, so `KEY=$(byteedit keys create ...)` works.
                println!("{key}");
            }
            KeysAction::List => {
                println!(
                    "{:<36}  {:<9}  {:<7}  {:<25}  name",
                    "id", "role", "state", "last used"
                );
                for key in api_keys::list(&db).await? {
                    println!("{}", list_line(&key));
                }
            }
            KeysAction::Revoke { id } => match api_keys::revoke(&db, id).await? {
                Some(key) => eprintln!("revoked `{}` ({})", key.name, key.id),
                None => anyhow::bail!("no key `{id}`; see `byteedit keys list`"),
            },
        }
        Ok(())
    })
}

fn list_line(key: &ApiKey) -> String {
    let state = if key.revoked_at.is_some() {
        "revoked"
    } else {
        "live"
    };
    let used = key
        .last_used_at
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into());
    let expert = match &key.volunteer {
        Some(v) if v.expert => format!(" (expert volunteer {})", v.id),
        Some(v) => format!(" (volunteer {})", v.id),
        None => String::new(),
    };
    format!(
        "{:<36}  {:<9}  {state:<7}  {used:<25}  {}{expert}",
        key.id, key.role, key.name
    )
}
