//! The `sequestra` command line: build config, build the app, run it.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use std::io::Write as _;

use sequestra::{
    Application, accounts::rules, config::Config, db, demo, domain, ids::TenantId, telemetry,
};

#[derive(Parser)]
#[command(
    name = "sequestra",
    version,
    about = "Multi-tenant GraphQL API server for escrow and conditional payments",
    long_about = "Multi-tenant GraphQL API server for escrow and conditional payments.\n\n\
        Settings come from SEQUESTRA_* environment variables (and an optional .env file); \
        see .env.example. Without SEQUESTRA_DATABASE_URL the server uses the embedded \
        SQLite file sequestra.db."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server: /graphql, /graphql/ws, /webhooks/psp, /playground (unless
    /// SEQUESTRA_PLAYGROUND=false; off in production unless enabled), /health, /ready
    /// and /metrics.
    ///
    /// Applies pending migrations first unless --no-migrate (or
    /// SEQUESTRA_MIGRATE_ON_START=false).
    /// Stops gracefully on SIGTERM or SIGINT.
    Serve {
        /// Seed demo data: tenants `acme` and `globex` with a user for every role and
        /// random passwords, printed at start. Only on an empty (or earlier demo)
        /// database; refused in production. On a demo database it issues new passwords.
        #[arg(long)]
        demo: bool,
        /// With --demo, also write the demo sign-ins as JSON to FILE.
        #[arg(long, value_name = "FILE", requires = "demo")]
        demo_credentials: Option<PathBuf>,
        /// Do not apply pending migrations at start (same as
        /// SEQUESTRA_MIGRATE_ON_START=false); /ready reports them as pending.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations, then exit.
    ///
    /// On PostgreSQL with SEQUESTRA_DATABASE_OWNER_URL set, they run as that owner,
    /// which then grants the server's role (SEQUESTRA_DATABASE_URL) its privileges; the
    /// server's role should own nothing, so row-level security holds it (README,
    /// "Database roles").
    Migrate,
    /// Print the GraphQL schema (SDL) to standard output.
    ///
    /// Without --role: the full schema, as committed in schema.graphql. With --role:
    /// what that role sees, built from introspection run as that role (ANONYMOUS for
    /// a caller without credentials), with the full schema's descriptions.
    Schema {
        /// ADMIN, SUPPORT, SENDER, BENEFICIARY, PLATFORM_ADMIN or ANONYMOUS.
        #[arg(long, value_name = "ROLE")]
        role: Option<String>,
    },
    /// Print the access policy of every root field as a Markdown table: the scopes it
    /// needs, role conditions, whether an API key may call it, whether it needs a
    /// recent MFA step-up, and which roles see it. The README's table is this output.
    Policy,
    /// Check the books: every ledger entry balances, and every escrow's, mandate's,
    /// payment's and merchant's figures equal their ledger accounts.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Check or export the hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage the persisted operations: the allow-list that SEQUESTRA_PERSISTED_ONLY=true
    /// holds every request to, and that clients may name by hash at any time.
    #[command(subcommand)]
    Operations(OperationsCommand),
    /// Personal data (GDPR): export what is held about a person.
    #[command(subcommand)]
    Gdpr(GdprCommand),
    /// Create a tenant and its first ADMIN, printing a one-time password for them.
    ///
    /// The password is random, shown once and stored only as an argon2id hash; there is
    /// no default password.
    Bootstrap {
        /// The new tenant's slug (2 to 63 characters of a-z, 0-9 and -).
        #[arg(long, value_name = "SLUG")]
        tenant: String,
        /// The first admin's email address.
        #[arg(long, value_name = "EMAIL")]
        admin_email: String,
        /// A display name for the tenant (defaults to the slug).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Create the platform tenant instead (once): its ADMINs are PLATFORM_ADMINs,
        /// who create tenants over GraphQL and read no tenant's business data.
        #[arg(long)]
        platform: bool,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Check that no money was created or lost, tenant by tenant: every entry is a
    /// movement of what its deposit, purchase or payment says, every escrow's funded/released/refunded and every
    /// mandate's total/spent equal its account, the PSP accounts hold exactly the
    /// payments in flight and the failed ones awaiting a retry, every SETTLED payment
    /// has its clearing entry. Exits 1 naming the first discrepancy of each tenant.
    Verify {
        /// Only this tenant (its slug); all tenants without.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum GdprCommand {
    /// Write everything held about one user as a JSON document (the same as their
    /// `exportMyData`): profile, roles, MFA, sessions, the escrows, mandates and
    /// payments they are party to, notifications and settings, audit entries by or
    /// about them.
    Export {
        /// The user's tenant (its slug).
        #[arg(long, value_name = "SLUG")]
        tenant: String,
        /// The user's email address.
        #[arg(long, value_name = "EMAIL")]
        email: String,
        /// Write to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum OperationsCommand {
    /// Register the operations of FILE: an Apollo persisted-query manifest
    /// (`{"format": "apollo-persisted-query-manifest", "operations": [{"name", "body"}]}`,
    /// as `generate-persisted-query-manifest` writes it), a JSON object of
    /// sha256 → document, or a GraphQL file registered whole as one document. Each
    /// must parse; registering one twice changes nothing. Prints each id (the SHA-256
    /// of the exact text, what clients send as `persistedQuery.sha256Hash`).
    Register {
        /// The file to read.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Write the registered operations as an Apollo persisted-query manifest (JSON).
    Export {
        /// Write to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute each tenant's audit hash chain and report the first broken link
    /// (an edited, removed or inserted row). Exits 1 when a chain is broken.
    Verify {
        /// Only this tenant (its slug); all tenants without.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
    },
    /// Write a tenant's audit chain as JSON lines, lane after lane (each row with its
    /// `lane`, `seq`, `canonical` text, `prev_hash` and `hash`) for an auditor to verify
    /// outside the system: `sha256(prev_hash ‖ canonical) = hash`, each `prev_hash` the
    /// `hash` of the previous row of the same lane.
    Export {
        /// The tenant's slug.
        #[arg(long, value_name = "SLUG")]
        tenant: String,
        /// Start at the first row created at or after this time (RFC 3339); from the
        /// first row without.
        #[arg(long, value_name = "TIME")]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Write to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// glibc serves a large allocation from its heap once one of that size was freed
/// (its mmap threshold rises to it, up to 32 MiB) and keeps it in the freeing
/// thread's arena: each argon2 hash (19 MiB of blocks) then stayed in RSS, ~6 MiB
/// more per sign-in. A fixed threshold keeps such buffers in their own mappings,
/// given back to the system as soon as the hash is done. (Only when glibc's malloc is
/// the allocator: jemalloc, the default, returns such buffers by itself.)
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(feature = "jemalloc"),
    not(feature = "mimalloc")
))]
fn return_large_buffers_to_the_system() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before any
    // thread of ours allocates a large buffer.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(not(all(
    target_os = "linux",
    target_env = "gnu",
    not(feature = "jemalloc"),
    not(feature = "mimalloc")
)))]
fn return_large_buffers_to_the_system() {}

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
        .block_on(entry())
}

async fn entry() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Schema { role } = &cli.command {
        return print_schema(role.as_deref()).await;
    }
    if let Command::Policy = &cli.command {
        print!("{}", sequestra::graphql::access::markdown());
        return ExitCode::SUCCESS;
    }

    // Optional .env; real environment variables win.
    let _ = dotenvy::dotenv();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let _traces = telemetry::init_tracing(&config);
    let _sentry = telemetry::init_sentry(&config);
    for setting in &config.generated_secrets {
        tracing::warn!(
            setting,
            "not set: generated an ephemeral random value for this run (development only); \
             tokens and signatures will not survive a restart"
        );
    }
    if let Some(kept) = &config.kept_secrets {
        tracing::info!(
            settings = kept.names.join(","),
            generated_now = kept.new.join(","),
            file = %kept.path.display(),
            "not set: using development secrets kept in a file outside the repository \
             (development only; production needs them set)"
        );
    }

    match run(cli.command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "sequestra failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Schema { .. } | Command::Policy => unreachable!("handled before configuration"),
        Command::Migrate => {
            db::open(&config.database, true).await?;
            println!("migrations applied to {}", config.database.redacted_url());
            Ok(())
        }
        Command::Ledger(LedgerCommand::Verify { tenant }) => {
            let conn = db::open(&config.database, false).await?;
            let mut failed = false;
            for t in rules::tenants(&conn, tenant.as_deref()).await? {
                let scoped = db::TenantDb::new(conn.clone(), TenantId::from_uuid(t.id));
                let report = sequestra::ledger::verify(&scoped).await?;
                match &report.discrepancy {
                    None => println!(
                        "{}: ok ({} entries, {} accounts)",
                        t.slug, report.entries, report.accounts
                    ),
                    Some(found) => {
                        failed = true;
                        println!("{}: DISCREPANCY: {found}", t.slug);
                    }
                }
            }
            if failed {
                anyhow::bail!("the ledger does not hold (see above)");
            }
            Ok(())
        }
        Command::Operations(OperationsCommand::Register { file }) => {
            use sequestra::graphql::persisted;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let operations = persisted::operations_in(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for op in &operations {
                async_graphql::parser::parse_query(&op.document).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: {} does not parse: {e}",
                        file.display(),
                        op.name.as_deref().unwrap_or("the document")
                    )
                })?;
            }
            let conn = db::open(&config.database, false).await?;
            let added = persisted::register(&conn, &operations).await?;
            for op in &operations {
                println!(
                    "{} {}",
                    persisted::sha256_hex(&op.document),
                    op.name.as_deref().unwrap_or("-")
                );
            }
            println!(
                "{} operation(s) read, {added} newly registered",
                operations.len()
            );
            Ok(())
        }
        Command::Gdpr(GdprCommand::Export {
            tenant,
            email,
            output,
        }) => {
            use sea_orm::{ColumnTrait, QueryFilter};
            let conn = db::open(&config.database, false).await?;
            let t = rules::find_tenant_by_slug(&conn, &tenant)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no tenant `{tenant}`"))?;
            let email = sequestra::domain::Email::parse(&email)?;
            let scoped = db::TenantDb::new(conn.clone(), TenantId::from_uuid(t.id));
            let txn = scoped.begin_snapshot().await?;
            let who = txn
                .first::<sequestra::entity::user::Entity>(|q| {
                    q.filter(sequestra::entity::user::Column::Email.eq(email.as_str()))
                })
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user {} in `{tenant}`", email.as_str()))?;
            let document = sequestra::accounts::privacy::export(&txn, who.id).await?;
            txn.commit().await?;
            let text = serde_json::to_string_pretty(&document)?;
            match output {
                Some(path) => std::fs::write(&path, text + "\n")?,
                None => println!("{text}"),
            }
            Ok(())
        }
        Command::Operations(OperationsCommand::Export { output }) => {
            let conn = db::open(&config.database, false).await?;
            let manifest = sequestra::graphql::persisted::manifest(&conn).await?;
            let text = serde_json::to_string_pretty(&manifest)?;
            match output {
                Some(path) => std::fs::write(&path, text + "\n")?,
                None => println!("{text}"),
            }
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { tenant }) => {
            let conn = db::open(&config.database, false).await?;
            let mut failed = false;
            for t in rules::tenants(&conn, tenant.as_deref()).await? {
                let scoped = db::TenantDb::new(conn.clone(), TenantId::from_uuid(t.id));
                let report = sequestra::audit::verify(&scoped).await?;
                match &report.broken {
                    None => println!(
                        "{}: ok ({} rows chained in {} lanes)",
                        t.slug, report.rows, report.lanes
                    ),
                    Some(broken) => {
                        failed = true;
                        println!(
                            "{}: BROKEN after {} good rows: {broken}",
                            t.slug, report.rows
                        );
                    }
                }
            }
            if failed {
                anyhow::bail!("an audit chain is broken (see above)");
            }
            Ok(())
        }
        Command::Audit(AuditCommand::Export {
            tenant,
            since,
            output,
        }) => {
            let conn = db::open(&config.database, false).await?;
            let t = rules::find_tenant_by_slug(&conn, &tenant)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no tenant `{tenant}`"))?;
            let scoped = db::TenantDb::new(conn.clone(), TenantId::from_uuid(t.id));
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let rows = sequestra::audit::export(&scoped, since, &mut out).await?;
            out.flush()?;
            eprintln!("{rows} audit rows of {tenant} exported");
            Ok(())
        }
        Command::Bootstrap {
            tenant,
            admin_email,
            name,
            platform,
        } => {
            let slug = domain::Slug::parse(&tenant)?;
            let email = domain::Email::parse(&admin_email)?;
            let conn = db::open(&config.database, true).await?;
            let name = name.unwrap_or_else(|| slug.to_string());
            let by = rules::BootstrapBy {
                actor: sequestra::audit::Actor::System,
                origin: sequestra::audit::Origin::default(),
            };
            let made = rules::bootstrap(&conn, &slug, &name, &email, platform, by).await?;
            let kind = if made.tenant.is_platform {
                ", platform"
            } else {
                ""
            };
            println!(
                "tenant:   {} ({}{kind})",
                made.tenant.slug, made.tenant.name
            );
            println!("admin:    {}", made.admin.email);
            println!(
                "password: {}  (one-time: shown once, stored only as a hash)",
                made.one_time_password.expose_secret()
            );
            Ok(())
        }
        Command::Serve {
            demo,
            demo_credentials,
            no_migrate,
        } => {
            let mut config = config;
            if no_migrate {
                config.migrate_on_start = false;
            }
            if demo && config.is_production() {
                anyhow::bail!("--demo is refused when SEQUESTRA_ENV=production");
            }
            let dev_webhook_secret = development_webhook_secret(&config);
            let app = Application::build(config).await?;
            if let Some((secret, kept_in)) = dev_webhook_secret {
                // Standard output, never the log; development only (README, "PSP webhooks").
                println!(
                    "development PSP webhook secret (SEQUESTRA_WEBHOOK_SECRETS, {kept_in}): {secret}"
                );
            }
            if demo {
                let services = app.services();
                let credentials = demo::seed(
                    &services.db,
                    &services.tokens,
                    &services.sealer,
                    services.proofs.as_ref(),
                    services.psp.as_ref(),
                )
                .await?;
                print_demo(&credentials);
                if let Some(path) = demo_credentials {
                    write_credentials(&path, &credentials)?;
                    println!("demo credentials written to {}", path.display());
                }
            }
            tracing::info!(address = %app.local_addr()?, "listening");
            app.run_until(sequestra::shutdown_signal()).await
        }
    }
}

async fn print_schema(role: Option<&str>) -> ExitCode {
    let Some(role) = role else {
        print!("{}", sequestra::graphql::sdl());
        return ExitCode::SUCCESS;
    };
    use sequestra::graphql::role_sdl;
    let Some(principal) = role_sdl::principal(role) else {
        eprintln!(
            "unknown role `{role}`: use {}",
            role_sdl::role_names().join(", ")
        );
        return ExitCode::from(2);
    };
    match role_sdl::sdl_for(principal).await {
        Ok(sdl) => {
            print!("{sdl}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The webhook secret development made up (the operator did not set one), and where
/// it is kept, so a developer can sign a webhook by hand.
fn development_webhook_secret(config: &Config) -> Option<(String, String)> {
    const NAME: &str = "SEQUESTRA_WEBHOOK_SECRETS";
    if config.is_production() {
        return None;
    }
    let kept_in = match &config.kept_secrets {
        Some(kept) if kept.names.contains(&NAME) => format!("kept in {}", kept.path.display()),
        _ if config.generated_secrets.contains(&NAME) => "ephemeral: this run only".to_owned(),
        _ => return None,
    };
    let secret = config.webhook_secrets.first()?.expose_secret().to_owned();
    Some((secret, kept_in))
}

/// Demo passwords go to standard output, never to the log.
fn print_demo(credentials: &demo::DemoCredentials) {
    println!("demo sign-ins (random passwords, valid until the next --demo start):");
    for tenant in &credentials.tenants {
        for user in &tenant.users {
            let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
            let totp = user
                .totp_secret
                .as_deref()
                .map(|s| format!("  totpSecret={s}"))
                .unwrap_or_default();
            println!(
                "  tenant={:<8} email={:<32} password={}  roles={}{totp}",
                tenant.slug,
                user.email,
                user.password,
                roles.join(",")
            );
        }
        for key in &tenant.api_keys {
            println!(
                "  tenant={:<8} api key {:?}: {}  scopes={}",
                tenant.slug,
                key.name,
                key.key,
                key.scopes.join(",")
            );
        }
    }
}

fn write_credentials(
    path: &std::path::Path,
    credentials: &demo::DemoCredentials,
) -> anyhow::Result<()> {
    use std::io::Write;
    let json = serde_json::to_vec_pretty(credentials)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(&json)?;
    Ok(())
}
