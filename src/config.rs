//! Typed settings from `SEQUESTRA_*` environment variables, validated once at start.
//!
//! Every setting is documented in `.env.example` and the README. Secrets are held in
//! [`SecretString`] so they never reach a log or `Debug` output.

use std::{collections::HashSet, fmt, net::SocketAddr, str::FromStr, time::Duration};

use rand::{Rng, distr::Alphanumeric};
use secrecy::{ExposeSecret, SecretString};

/// Where the server runs. Production refuses weak settings; development fills gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A configuration problem, naming the setting and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

/// A named HMAC key used to sign access tokens; `kid` goes in the JWT header.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub secret: SecretString,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// May carry a password, hence secret; use [`DatabaseConfig::redacted_url`] for logs.
    pub url: SecretString,
    /// PostgreSQL: the role that owns the tables, which runs the migrations and grants
    /// the server's role (`url`) what it needs. Unset: the server's own URL migrates.
    pub owner_url: Option<SecretString>,
    pub max_connections: u32,
    pub min_connections: u32,
    pub connect_timeout: Duration,
    pub acquire_timeout: Duration,
    pub idle_timeout: Duration,
    pub sqlite_busy_timeout: Duration,
}

impl DatabaseConfig {
    pub fn is_sqlite(&self) -> bool {
        self.url.expose_secret().starts_with("sqlite:")
    }

    /// The URL with any password replaced, safe to log.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Per client address on the GraphQL routes: sustained requests per second, burst.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Per client address: credential checks (sign-in, MFA, refresh) per minute.
    pub credential_attempts_per_minute: u32,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    /// How long a WebSocket may wait before its `connection_init` (then 4408).
    pub ws_init_timeout: Duration,
    /// How often an open WebSocket's credential is checked again (revocation).
    pub ws_recheck: Duration,
    /// Operations running at once on one WebSocket, and over all of one user's (or
    /// one API key's creator's) sockets in this process.
    pub ws_max_operations_per_socket: usize,
    pub ws_max_operations_per_user: usize,
    /// Serve GraphiQL at `/playground` (default: on in development, off in production).
    pub playground: bool,
    /// Browser origins (`scheme://host[:port]`) allowed to call cross-origin; empty:
    /// none (see `http::security`).
    pub cors_origins: Vec<String>,
    /// How long a browser may cache a CORS preflight's answer.
    pub cors_max_age: Duration,
    /// Served over TLS (directly or behind a proxy): send `Strict-Transport-Security`.
    pub hsts: bool,
    /// Host names requests may name (lower case, no port); empty: any.
    pub trusted_hosts: Vec<String>,
    /// Serve `/metrics` on this address instead of the main one (which then has none).
    pub metrics_listen: Option<SocketAddr>,
    /// `/metrics` answers only `Authorization: Bearer <token>` (401 otherwise).
    pub metrics_token: Option<SecretString>,
}

#[derive(Debug, Clone)]
pub struct GraphqlConfig {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    /// Fields weighed by the page sizes their connections ask for.
    pub max_cost: u64,
    /// A document's text (the query string), in bytes.
    pub max_document_bytes: usize,
    /// Upper bound for `first`/`last` on every connection.
    pub max_page_size: u64,
    /// Only registered operations run (`SEQUESTRA_PERSISTED_ONLY`).
    pub persisted_only: bool,
}

/// A 256-bit key that encrypts TOTP secrets at rest; `kid` is stored with each
/// ciphertext so keys can rotate.
#[derive(Clone)]
pub struct EncryptionKey {
    pub kid: String,
    pub key: std::sync::Arc<secrecy::SecretBox<[u8; 32]>>,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("kid", &self.kid)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Signs new access tokens.
    pub jwt_signing_key: SigningKey,
    /// Still accepted for verification during a key rotation.
    pub jwt_retired_keys: Vec<SigningKey>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    /// Keys the HMAC under which API keys are stored.
    pub api_key_secret: SecretString,
    /// The first key encrypts new TOTP secrets; all of them decrypt.
    pub mfa_keys: Vec<EncryptionKey>,
    /// How recent an MFA verification must be for a sensitive mutation.
    pub step_up_window: Duration,
    /// A session's absolute lifetime, however often it is refreshed.
    pub session_lifetime: Duration,
    /// A refresh token's lifetime from its issue (rotation issues a new one).
    pub refresh_token_ttl: Duration,
    /// How long an authenticated principal is reused without reading the database
    /// again (changes drop it at once; this bounds what no notification reported).
    pub principal_cache_ttl: Duration,
    /// When repeated password or TOTP failures lock an account.
    pub lockout: crate::identity::rules::LockoutPolicy,
}

/// S3-compatible object storage for proof files.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// For S3-compatible services (MinIO, Ceph, …); unset means AWS.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// Prepended to every object key, e.g. `proofs/`.
    pub prefix: String,
}

/// Where proof files go.
#[derive(Debug, Clone)]
pub enum ProofStorage {
    /// A local directory (the default).
    Local(std::path::PathBuf),
    S3(S3Config),
}

/// The built-in simulated PSP: after accepting a payout it posts signed webhooks to
/// this server's own `/webhooks/psp`, so the whole loop runs on one machine.
#[derive(Debug, Clone, Default)]
pub struct SimulatedPspConfig {
    /// How long after accepting a payout it posts the settlement; `None`: never (the
    /// payment stays SENT).
    pub settle_after: Option<Duration>,
    /// Every Nth payout fails instead of settling (0: none).
    pub fail_every: u64,
    /// Post every event twice.
    pub duplicates: bool,
    /// Also post a late `payout.sent` after the final event.
    pub out_of_order: bool,
}

/// A PSP reached over HTTP (see `payments::http_psp` for the contract).
#[derive(Debug, Clone)]
pub struct HttpPspConfig {
    pub url: String,
    /// Signs our requests (`Sequestra-Signature`, as the webhooks).
    pub secret: SecretString,
    /// Per request.
    pub timeout: Duration,
    /// Further tries after a failed request (network error, timeout, 429, 5xx).
    pub max_retries: u32,
    /// The first retry waits this long; each next one twice as long.
    pub retry_base: Duration,
    /// After this many calls in a row that found the PSP down (each after its
    /// retries), it is not called for `circuit_cool_down`; 0: never.
    pub circuit_failures: u32,
    pub circuit_cool_down: Duration,
}

/// Which PSP carries payouts.
#[derive(Debug, Clone)]
pub enum PspChoice {
    Simulated,
    Http(HttpPspConfig),
}

/// Payouts after submission: reconciliation and the retry policy.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    pub psp: PspChoice,
    /// A payment SENT this long without a webhook is checked with the PSP.
    pub recheck_after: Duration,
    /// A payment still PENDING this long after it was recorded (the PSP did not take
    /// it: down, or its circuit open) is submitted again by the jobs.
    pub resubmit_after: Duration,
    /// A failed payment is retried automatically until this many tries in all.
    pub max_attempts: i32,
    /// The wait before retrying a failed try; doubled for each further try.
    pub retry_backoff: Duration,
}

/// How long operational rows are kept once they are no longer needed (`None`: kept
/// forever), and how often the jobs purge them. Money, the ledger and the audit log
/// are never purged.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// How often a purge runs (across replicas: a lease); `None`: never.
    pub every: Option<Duration>,
    /// PSP webhook events (the deduplication log), after they were received; and
    /// refused deliveries.
    pub webhook_events: Option<Duration>,
    /// Idempotency keys, after they expired.
    pub idempotency_keys: Option<Duration>,
    /// Sessions (and their refresh tokens), after they ended (expired or revoked).
    pub sessions: Option<Duration>,
    /// Failed-credential counters, after their window started and any lock ended.
    pub auth_failures: Option<Duration>,
    /// MFA sign-in challenges, after they expired.
    pub mfa_challenges: Option<Duration>,
    /// Notifications, after they were sent or given up on; mail tokens, after they
    /// were used or expired.
    pub notifications: Option<Duration>,
}

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum MailTransport {
    /// An SMTP server: `smtp://[user:password@]host[:port][?tls=required|opportunistic]`
    /// (STARTTLS) or `smtps://…` (TLS from the first byte), as lettre reads it.
    Smtp(SecretString),
    /// Development: each mail written as an `.eml` file into this folder.
    Dir(std::path::PathBuf),
    /// Development: who was mailed what kind of notice is logged (never the body,
    /// which may carry a reset token); nothing is delivered.
    Log,
}

/// Notifications by mail: the transport, the sender, the sending jobs' pace and the
/// password reset's limits.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// The sender's address; the display name is the tenant's name.
    pub from: String,
    /// The address links in mails start with (`{app_url}/reset-password#token=…`);
    /// without it a mail carries the token alone.
    pub app_url: Option<String>,
    /// How often the jobs sweep every outbox (retries that came due, missed wake-ups);
    /// a new mail wakes them at once.
    pub poll_interval: Duration,
    /// A mail the server did not take is tried again until this many tries in all.
    pub max_attempts: i32,
    /// The wait before the second try; doubled for each further try.
    pub retry_base: Duration,
    /// How long a password reset token works.
    pub reset_token_ttl: Duration,
    /// Reset mails one account is sent per hour at most (across processes).
    pub resets_per_account_per_hour: u32,
    /// Reset requests one address may make per hour in one process (known or not).
    pub resets_per_address_per_hour: u32,
}

/// Proof files and background jobs.
#[derive(Debug, Clone)]
pub struct EscrowConfig {
    pub proof_storage: ProofStorage,
    /// The largest proof file accepted.
    pub proof_max_bytes: usize,
    /// How often the background jobs (deadlines, auto-release, payment retries) run.
    pub jobs_interval: Duration,
    /// Run the background jobs in this process.
    pub jobs_enabled: bool,
    /// How often the jobs check the books (`ledger verify` and `audit verify` of every
    /// tenant); `None`: never.
    pub books_check_interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub env: Environment,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub graphql: GraphqlConfig,
    pub auth: AuthConfig,
    pub escrow: EscrowConfig,
    pub simulated_psp: SimulatedPspConfig,
    pub payments: PaymentsConfig,
    pub retention: RetentionConfig,
    pub mail: MailConfig,
    /// Several secrets are accepted during rotation; the first one signs.
    pub webhook_secrets: Vec<SecretString>,
    pub sentry_dsn: Option<SecretString>,
    /// Where traces go over OTLP/HTTP, when set.
    pub otlp: Option<OtlpConfig>,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// Settings that were missing in development and got an ephemeral random value.
    pub generated_secrets: Vec<&'static str>,
    /// Development: settings left unset whose values come from the kept secrets file.
    pub kept_secrets: Option<KeptSecrets>,
}

/// OpenTelemetry traces exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's traces URL: `SEQUESTRA_OTLP_ENDPOINT` (its base URL, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`) with `/v1/traces` appended.
    pub traces_url: String,
    /// The share of traces started here that are kept (`SEQUESTRA_OTLP_SAMPLE_RATIO`,
    /// 0 to 1); a request whose `traceparent` says sampled is always kept.
    pub sample_ratio: f64,
}

impl OtlpConfig {
    fn new(raw: &str, sample_ratio: f64) -> Result<Self, ConfigError> {
        const NAME: &str = "SEQUESTRA_OTLP_ENDPOINT";
        let url = reqwest::Url::parse(raw.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .filter(|u| u.query().is_none() && u.fragment().is_none())
            .ok_or_else(|| {
                ConfigError::new(
                    NAME,
                    "is not the base URL of an OTLP/HTTP collector (http:// or https://, \
                     e.g. http://localhost:4318)",
                )
            })?;
        if !(0.0..=1.0).contains(&sample_ratio) {
            return Err(ConfigError::new(
                "SEQUESTRA_OTLP_SAMPLE_RATIO",
                "must be between 0 and 1",
            ));
        }
        let base = url.as_str().trim_end_matches('/');
        Ok(Self {
            traces_url: format!("{base}/v1/traces"),
            sample_ratio,
        })
    }
}

/// Development secrets read from (and, the first time, written to) a file outside the
/// repository; see `crate::dev_secrets`.
#[derive(Debug, Clone)]
pub struct KeptSecrets {
    pub path: std::path::PathBuf,
    /// Every setting the file supplied.
    pub names: Vec<&'static str>,
    /// Those it did not hold yet: generated now and written.
    pub new: Vec<&'static str>,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://sequestra.db?mode=rwc";
const MIN_SECRET_LEN: usize = 32;
const MIN_DISTINCT_CHARS: usize = 10;

impl Config {
    /// Reads the process environment. In development, secrets left unset come from
    /// the kept secrets file (`crate::dev_secrets`), generated there the first time.
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
        let development = !matches!(var("SEQUESTRA_ENV").as_deref(), Some("production"));
        let kept = match crate::dev_secrets::path(var) {
            Some(path) if development => {
                let missing: Vec<&'static str> = crate::dev_secrets::NAMES
                    .into_iter()
                    .filter(|name| var(name).is_none())
                    .collect();
                let found = crate::dev_secrets::keep(&path, &missing).map_err(|e| {
                    ConfigError::new(
                        "SEQUESTRA_DEV_SECRETS_FILE",
                        format!(
                            "cannot keep development secrets in {}: {e} (set the secrets, \
                             another file, or `none` for ephemeral ones)",
                            path.display()
                        ),
                    )
                })?;
                Some((path, missing, found))
            }
            _ => None,
        };
        let mut config = Self::from_lookup(|key| {
            var(key).or_else(|| {
                kept.as_ref()
                    .and_then(|(_, _, f)| f.values.get(key).cloned())
            })
        })?;
        if let Some((path, names, found)) = kept
            && !names.is_empty()
        {
            config.kept_secrets = Some(KeptSecrets {
                path,
                names,
                new: found.generated,
            });
        }
        Ok(config)
    }

    /// Reads settings through `lookup`, so tests can pass a map instead of the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let env = match get("SEQUESTRA_ENV").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::new(
                    "SEQUESTRA_ENV",
                    format!("must be `development` or `production`, got `{other}`"),
                ));
            }
        };
        let log_format = match get("SEQUESTRA_LOG_FORMAT").as_deref() {
            None => match env {
                Environment::Development => LogFormat::Pretty,
                Environment::Production => LogFormat::Json,
            },
            Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "SEQUESTRA_LOG_FORMAT",
                    format!("must be `pretty` or `json`, got `{other}`"),
                ));
            }
        };

        let database = DatabaseConfig {
            url: SecretString::from(
                get("SEQUESTRA_DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            ),
            owner_url: get("SEQUESTRA_DATABASE_OWNER_URL").map(SecretString::from),
            max_connections: parse(&get, "SEQUESTRA_DB_MAX_CONNECTIONS", 10)?,
            min_connections: parse(&get, "SEQUESTRA_DB_MIN_CONNECTIONS", 1)?,
            connect_timeout: secs(&get, "SEQUESTRA_DB_CONNECT_TIMEOUT_SECS", 5)?,
            acquire_timeout: secs(&get, "SEQUESTRA_DB_ACQUIRE_TIMEOUT_SECS", 5)?,
            idle_timeout: secs(&get, "SEQUESTRA_DB_IDLE_TIMEOUT_SECS", 300)?,
            sqlite_busy_timeout: Duration::from_millis(parse(
                &get,
                "SEQUESTRA_SQLITE_BUSY_TIMEOUT_MS",
                5000,
            )?),
        };
        let url = database.url.expose_secret();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "SEQUESTRA_DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        if let Some(owner) = &database.owner_url
            && !(url.starts_with("postgres") && owner.expose_secret().starts_with("postgres"))
        {
            return Err(ConfigError::new(
                "SEQUESTRA_DATABASE_OWNER_URL",
                "is for PostgreSQL only: both it and SEQUESTRA_DATABASE_URL must be postgres:// URLs",
            ));
        }
        if database.max_connections == 0 || database.min_connections > database.max_connections {
            return Err(ConfigError::new(
                "SEQUESTRA_DB_MAX_CONNECTIONS",
                "must be at least 1 and at least SEQUESTRA_DB_MIN_CONNECTIONS",
            ));
        }

        let http = HttpConfig {
            listen: parse(
                &get,
                "SEQUESTRA_LISTEN",
                SocketAddr::from(([127, 0, 0, 1], 8080)),
            )?,
            trusted_proxies: match get("SEQUESTRA_TRUSTED_PROXIES") {
                None => Vec::new(),
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|ip| {
                        ip.parse().map_err(|_| {
                            ConfigError::new(
                                "SEQUESTRA_TRUSTED_PROXIES",
                                format!("`{ip}` is not an IP address"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            },
            rate_limit_per_second: positive(&get, "SEQUESTRA_RATE_LIMIT_PER_SECOND", 50)?,
            rate_limit_burst: positive(&get, "SEQUESTRA_RATE_LIMIT_BURST", 100)?,
            credential_attempts_per_minute: positive(
                &get,
                "SEQUESTRA_CREDENTIAL_ATTEMPTS_PER_MINUTE",
                30,
            )?,
            body_limit_bytes: parse(&get, "SEQUESTRA_BODY_LIMIT_BYTES", 1024 * 1024)?,
            request_timeout: secs(&get, "SEQUESTRA_REQUEST_TIMEOUT_SECS", 30)?,
            shutdown_grace: secs(&get, "SEQUESTRA_SHUTDOWN_GRACE_SECS", 20)?,
            ws_init_timeout: Duration::from_millis(parse(
                &get,
                "SEQUESTRA_WS_INIT_TIMEOUT_MS",
                10_000,
            )?),
            ws_recheck: Duration::from_millis(parse(&get, "SEQUESTRA_WS_RECHECK_MS", 30_000_u64)?)
                .max(Duration::from_millis(100)),
            ws_max_operations_per_socket: parse(
                &get,
                "SEQUESTRA_WS_MAX_OPERATIONS_PER_SOCKET",
                20,
            )?,
            ws_max_operations_per_user: parse(&get, "SEQUESTRA_WS_MAX_OPERATIONS_PER_USER", 50)?,
            playground: parse(
                &get,
                "SEQUESTRA_PLAYGROUND",
                env == Environment::Development,
            )?,
            cors_origins: origins(&get)?,
            cors_max_age: secs(&get, "SEQUESTRA_CORS_MAX_AGE_SECS", 600)?,
            hsts: parse(&get, "SEQUESTRA_HSTS", false)?,
            trusted_hosts: get("SEQUESTRA_TRUSTED_HOSTS")
                .unwrap_or_default()
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            metrics_listen: get("SEQUESTRA_METRICS_LISTEN")
                .map(|raw| {
                    raw.parse().map_err(|_| {
                        ConfigError::new(
                            "SEQUESTRA_METRICS_LISTEN",
                            format!("`{raw}` is not an address (host:port)"),
                        )
                    })
                })
                .transpose()?,
            metrics_token: get("SEQUESTRA_METRICS_TOKEN").map(SecretString::from),
        };
        if let Some(token) = &http.metrics_token {
            check_secret_strength(env, "SEQUESTRA_METRICS_TOKEN", token.expose_secret())?;
        }

        let graphql = GraphqlConfig {
            max_depth: parse(&get, "SEQUESTRA_GRAPHQL_MAX_DEPTH", 16)?,
            max_complexity: parse(&get, "SEQUESTRA_GRAPHQL_MAX_COMPLEXITY", 1000)?,
            max_aliases: parse(&get, "SEQUESTRA_GRAPHQL_MAX_ALIASES", 30)?,
            max_cost: parse(&get, "SEQUESTRA_GRAPHQL_MAX_COST", 5000)?,
            max_document_bytes: parse(&get, "SEQUESTRA_GRAPHQL_MAX_DOCUMENT_BYTES", 65_536)?,
            max_page_size: parse(&get, "SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE", 100)?,
            persisted_only: parse(&get, "SEQUESTRA_PERSISTED_ONLY", false)?,
        };

        let mut generated_secrets = Vec::new();
        let mut secret = |name: &'static str| -> Result<SecretString, ConfigError> {
            match get(name) {
                Some(value) => {
                    check_secret_strength(env, name, &value)?;
                    Ok(SecretString::from(value))
                }
                None if env == Environment::Production => Err(ConfigError::new(
                    name,
                    "is required in production (at least 32 random characters)",
                )),
                None => {
                    generated_secrets.push(name);
                    Ok(random_secret())
                }
            }
        };

        let jwt_secret = secret("SEQUESTRA_JWT_SECRET")?;
        let api_key_secret = secret("SEQUESTRA_API_KEY_SECRET")?;
        let webhook_secret_list = match get("SEQUESTRA_WEBHOOK_SECRETS") {
            Some(list) => {
                let mut secrets = Vec::new();
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    check_secret_strength(env, "SEQUESTRA_WEBHOOK_SECRETS", item)?;
                    secrets.push(SecretString::from(item.to_owned()));
                }
                secrets
            }
            None => vec![secret("SEQUESTRA_WEBHOOK_SECRETS")?],
        };

        let kid = get("SEQUESTRA_JWT_KID").unwrap_or_else(|| "primary".to_owned());
        check_kid("SEQUESTRA_JWT_KID", &kid)?;
        let mut retired = Vec::new();
        if let Some(list) = get("SEQUESTRA_JWT_RETIRED_KEYS") {
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let Some((kid, secret)) = item.split_once(':') else {
                    return Err(ConfigError::new(
                        "SEQUESTRA_JWT_RETIRED_KEYS",
                        "each entry must be `kid:secret`",
                    ));
                };
                check_kid("SEQUESTRA_JWT_RETIRED_KEYS", kid)?;
                check_secret_strength(env, "SEQUESTRA_JWT_RETIRED_KEYS", secret)?;
                retired.push(SigningKey {
                    kid: kid.to_owned(),
                    secret: SecretString::from(secret.to_owned()),
                });
            }
        }
        let mut kids = HashSet::new();
        kids.insert(kid.clone());
        if retired.iter().any(|k| !kids.insert(k.kid.clone())) {
            return Err(ConfigError::new(
                "SEQUESTRA_JWT_RETIRED_KEYS",
                "key ids must be unique and differ from SEQUESTRA_JWT_KID",
            ));
        }

        let mfa_keys = match get("SEQUESTRA_MFA_KEYS") {
            Some(list) => parse_encryption_keys(&list)?,
            None if env == Environment::Production => {
                return Err(ConfigError::new(
                    "SEQUESTRA_MFA_KEYS",
                    "is required in production: `kid:<64 hex characters>` (`echo k1:$(openssl rand -hex 32)`)",
                ));
            }
            None => {
                generated_secrets.push("SEQUESTRA_MFA_KEYS");
                let mut key = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
                vec![EncryptionKey {
                    kid: "ephemeral".to_owned(),
                    key: std::sync::Arc::new(secrecy::SecretBox::new(Box::new(key))),
                }]
            }
        };

        let auth = AuthConfig {
            jwt_signing_key: SigningKey {
                kid,
                secret: jwt_secret,
            },
            jwt_retired_keys: retired,
            jwt_issuer: get("SEQUESTRA_JWT_ISSUER").unwrap_or_else(|| "sequestra".to_owned()),
            jwt_audience: get("SEQUESTRA_JWT_AUDIENCE")
                .unwrap_or_else(|| "sequestra-api".to_owned()),
            access_token_ttl: secs(&get, "SEQUESTRA_ACCESS_TOKEN_TTL_SECS", 15 * 60)?,
            api_key_secret,
            mfa_keys,
            step_up_window: Duration::from_secs(
                60 * parse::<u64>(&get, "SEQUESTRA_MFA_STEP_UP_MINUTES", 10)?,
            ),
            session_lifetime: secs(&get, "SEQUESTRA_SESSION_LIFETIME_SECS", 30 * 24 * 3600)?,
            refresh_token_ttl: secs(&get, "SEQUESTRA_REFRESH_TOKEN_TTL_SECS", 7 * 24 * 3600)?,
            principal_cache_ttl: secs(&get, "SEQUESTRA_PRINCIPAL_CACHE_SECS", 300)?,
            lockout: crate::identity::rules::LockoutPolicy {
                after: positive(&get, "SEQUESTRA_LOCKOUT_AFTER_FAILURES", 5)?,
                first_lock: chrono_secs(&get, "SEQUESTRA_LOCKOUT_FIRST_SECS", 15 * 60)?,
                max_lock: chrono_secs(&get, "SEQUESTRA_LOCKOUT_MAX_SECS", 24 * 3600)?,
                window: chrono_secs(&get, "SEQUESTRA_LOCKOUT_WINDOW_SECS", 24 * 3600)?,
            },
        };

        let sentry_dsn = get("SEQUESTRA_SENTRY_DSN").map(SecretString::from);
        if let Some(dsn) = &sentry_dsn
            && dsn.expose_secret().parse::<sentry::types::Dsn>().is_err()
        {
            return Err(ConfigError::new(
                "SEQUESTRA_SENTRY_DSN",
                "is not a valid Sentry DSN (https://KEY@HOST/PROJECT)",
            ));
        }
        let otlp = get("SEQUESTRA_OTLP_ENDPOINT")
            .map(|raw| OtlpConfig::new(&raw, parse(&get, "SEQUESTRA_OTLP_SAMPLE_RATIO", 1.0)?))
            .transpose()?;
        let migrate_on_start = parse(&get, "SEQUESTRA_MIGRATE_ON_START", true)?;
        let proof_storage = match get("SEQUESTRA_PROOF_STORE").as_deref() {
            None | Some("local") => ProofStorage::Local(
                get("SEQUESTRA_PROOF_DIR")
                    .unwrap_or_else(|| "data/proofs".to_owned())
                    .into(),
            ),
            Some("s3") => ProofStorage::S3(S3Config {
                bucket: get("SEQUESTRA_S3_BUCKET").ok_or_else(|| {
                    ConfigError::new(
                        "SEQUESTRA_S3_BUCKET",
                        "is required when SEQUESTRA_PROOF_STORE=s3",
                    )
                })?,
                region: get("SEQUESTRA_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
                endpoint: get("SEQUESTRA_S3_ENDPOINT"),
                access_key_id: get("SEQUESTRA_S3_ACCESS_KEY_ID"),
                secret_access_key: get("SEQUESTRA_S3_SECRET_ACCESS_KEY").map(SecretString::from),
                prefix: get("SEQUESTRA_S3_PREFIX").unwrap_or_default(),
            }),
            Some(other) => {
                return Err(ConfigError::new(
                    "SEQUESTRA_PROOF_STORE",
                    format!("must be `local` or `s3`, got `{other}`"),
                ));
            }
        };
        let simulated_psp = SimulatedPspConfig {
            settle_after: match parse(&get, "SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS", 2_000_u64)? {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            fail_every: parse(&get, "SEQUESTRA_SIM_PSP_FAIL_EVERY", 0)?,
            duplicates: parse(&get, "SEQUESTRA_SIM_PSP_DUPLICATES", false)?,
            out_of_order: parse(&get, "SEQUESTRA_SIM_PSP_OUT_OF_ORDER", false)?,
        };
        let psp = match get("SEQUESTRA_PSP").as_deref() {
            None | Some("simulated") => PspChoice::Simulated,
            Some("http") => PspChoice::Http(HttpPspConfig {
                url: get("SEQUESTRA_PSP_URL")
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                    .ok_or_else(|| {
                        ConfigError::new(
                            "SEQUESTRA_PSP_URL",
                            "is required when SEQUESTRA_PSP=http (an http:// or https:// URL)",
                        )
                    })?
                    .trim_end_matches('/')
                    .to_owned(),
                secret: match get("SEQUESTRA_PSP_SECRET") {
                    Some(value) => {
                        check_secret_strength(env, "SEQUESTRA_PSP_SECRET", &value)?;
                        SecretString::from(value)
                    }
                    None => {
                        return Err(ConfigError::new(
                            "SEQUESTRA_PSP_SECRET",
                            "is required when SEQUESTRA_PSP=http",
                        ));
                    }
                },
                timeout: Duration::from_millis(parse(&get, "SEQUESTRA_PSP_TIMEOUT_MS", 5_000)?),
                max_retries: parse(&get, "SEQUESTRA_PSP_MAX_RETRIES", 3)?,
                retry_base: Duration::from_millis(parse(&get, "SEQUESTRA_PSP_RETRY_BASE_MS", 200)?),
                circuit_failures: parse(&get, "SEQUESTRA_PSP_CIRCUIT_FAILURES", 5)?,
                circuit_cool_down: Duration::from_millis(parse(
                    &get,
                    "SEQUESTRA_PSP_CIRCUIT_COOL_DOWN_MS",
                    30_000,
                )?),
            }),
            Some(other) => {
                return Err(ConfigError::new(
                    "SEQUESTRA_PSP",
                    format!("must be `simulated` or `http`, got `{other}`"),
                ));
            }
        };
        let payments = PaymentsConfig {
            psp,
            recheck_after: secs(&get, "SEQUESTRA_PAYMENT_RECHECK_AFTER_SECS", 600)?,
            resubmit_after: secs(&get, "SEQUESTRA_PAYMENT_RESUBMIT_AFTER_SECS", 30)?,
            max_attempts: parse(&get, "SEQUESTRA_PAYMENT_MAX_ATTEMPTS", 3)?,
            retry_backoff: secs(&get, "SEQUESTRA_PAYMENT_RETRY_BACKOFF_SECS", 60)?,
        };
        if payments.max_attempts < 1 {
            return Err(ConfigError::new(
                "SEQUESTRA_PAYMENT_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
        let escrow = EscrowConfig {
            proof_storage,
            proof_max_bytes: parse(&get, "SEQUESTRA_PROOF_MAX_BYTES", 10 * 1024 * 1024)?,
            jobs_interval: Duration::from_millis(parse(
                &get,
                "SEQUESTRA_JOBS_INTERVAL_MS",
                30_000,
            )?),
            jobs_enabled: parse(&get, "SEQUESTRA_JOBS_ENABLED", true)?,
            books_check_interval: Some(secs(&get, "SEQUESTRA_BOOKS_CHECK_INTERVAL_SECS", 86_400)?)
                .filter(|d| !d.is_zero()),
        };
        if escrow.proof_max_bytes == 0 {
            return Err(ConfigError::new(
                "SEQUESTRA_PROOF_MAX_BYTES",
                "must be at least 1",
            ));
        }
        if escrow.jobs_interval.is_zero() {
            return Err(ConfigError::new(
                "SEQUESTRA_JOBS_INTERVAL_MS",
                "must be at least 1",
            ));
        }

        // A number of days; 0 keeps the rows forever.
        let days = |name: &'static str, default: u64| -> Result<Option<Duration>, ConfigError> {
            let days: u64 = parse(&get, name, default)?;
            Ok((days > 0).then(|| Duration::from_secs(days.saturating_mul(86_400))))
        };
        let retention = RetentionConfig {
            every: Some(secs(&get, "SEQUESTRA_RETENTION_INTERVAL_SECS", 3_600)?)
                .filter(|d| !d.is_zero()),
            webhook_events: days("SEQUESTRA_RETAIN_WEBHOOK_EVENTS_DAYS", 90)?,
            idempotency_keys: days("SEQUESTRA_RETAIN_IDEMPOTENCY_KEYS_DAYS", 7)?,
            sessions: days("SEQUESTRA_RETAIN_SESSIONS_DAYS", 30)?,
            auth_failures: days("SEQUESTRA_RETAIN_AUTH_FAILURES_DAYS", 30)?,
            mfa_challenges: days("SEQUESTRA_RETAIN_MFA_CHALLENGES_DAYS", 1)?,
            notifications: days("SEQUESTRA_RETAIN_NOTIFICATIONS_DAYS", 30)?,
        };
        let mail = mail_config(&get, env)?;

        Ok(Self {
            env,
            log_format,
            log_filter: get("SEQUESTRA_LOG").unwrap_or_else(|| "info".to_owned()),
            database,
            http,
            graphql,
            auth,
            escrow,
            simulated_psp,
            payments,
            retention,
            mail,
            webhook_secrets: webhook_secret_list,
            sentry_dsn,
            otlp,
            migrate_on_start,
            generated_secrets,
            kept_secrets: None,
        })
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }
}

fn mail_config(
    get: &impl Fn(&str) -> Option<String>,
    env: Environment,
) -> Result<MailConfig, ConfigError> {
    let transport = match (get("SEQUESTRA_SMTP_URL"), get("SEQUESTRA_MAIL_DIR")) {
        (Some(url), _) => {
            let plain = url.starts_with("smtp://") && !url.contains("tls=required");
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                return Err(ConfigError::new(
                    "SEQUESTRA_SMTP_URL",
                    format!(
                        "must start with smtp:// or smtps://, got `{}`",
                        redact_url(&url)
                    ),
                ));
            }
            let local = matches!(smtp_host(&url), "localhost" | "127.0.0.1" | "[::1]");
            if plain && !local && env == Environment::Production {
                return Err(ConfigError::new(
                    "SEQUESTRA_SMTP_URL",
                    "would send mail (and any credentials) in the clear: use smtps:// or add ?tls=required",
                ));
            }
            MailTransport::Smtp(SecretString::from(url))
        }
        (None, Some(dir)) => MailTransport::Dir(dir.into()),
        (None, None) => MailTransport::Log,
    };
    let mail = MailConfig {
        transport,
        from: get("SEQUESTRA_MAIL_FROM")
            .unwrap_or_else(|| "no-reply@sequestra.localhost".to_owned()),
        app_url: get("SEQUESTRA_APP_URL").map(|u| u.trim_end_matches('/').to_owned()),
        poll_interval: Duration::from_millis(parse(get, "SEQUESTRA_MAIL_POLL_MS", 10_000)?),
        max_attempts: parse(get, "SEQUESTRA_MAIL_MAX_ATTEMPTS", 8)?,
        retry_base: secs(get, "SEQUESTRA_MAIL_RETRY_BASE_SECS", 30)?,
        reset_token_ttl: Duration::from_secs(
            60 * u64::from(positive(get, "SEQUESTRA_PASSWORD_RESET_TTL_MINUTES", 30)?),
        ),
        resets_per_account_per_hour: positive(
            get,
            "SEQUESTRA_PASSWORD_RESETS_PER_ACCOUNT_HOUR",
            3,
        )?,
        resets_per_address_per_hour: positive(
            get,
            "SEQUESTRA_PASSWORD_RESETS_PER_ADDRESS_HOUR",
            5,
        )?,
    };
    if crate::domain::Email::parse(&mail.from).is_err() {
        return Err(ConfigError::new(
            "SEQUESTRA_MAIL_FROM",
            format!("`{}` is not an email address", mail.from),
        ));
    }
    if mail.poll_interval.is_zero() {
        return Err(ConfigError::new(
            "SEQUESTRA_MAIL_POLL_MS",
            "must be at least 1",
        ));
    }
    if mail.max_attempts < 1 {
        return Err(ConfigError::new(
            "SEQUESTRA_MAIL_MAX_ATTEMPTS",
            "must be at least 1",
        ));
    }
    Ok(mail)
}

/// The host an `smtp://` / `smtps://` URL names (an IPv6 address with its brackets).
fn smtp_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host.find(']') {
        Some(end) if host.starts_with('[') => &host[..=end],
        _ => host.split(':').next().unwrap_or_default(),
    }
}

/// `SEQUESTRA_CORS_ORIGINS`: exact origins, `http(s)://host[:port]`, comma-separated.
fn origins(get: &impl Fn(&str) -> Option<String>) -> Result<Vec<String>, ConfigError> {
    const NAME: &str = "SEQUESTRA_CORS_ORIGINS";
    let mut out = Vec::new();
    for origin in get(NAME)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let valid = authority.is_some_and(|a| {
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        });
        if !valid {
            return Err(ConfigError::new(
                NAME,
                format!(
                    "`{origin}` is not an origin: write scheme://host[:port], no path, no wildcard"
                ),
            ));
        }
        out.push(origin.to_ascii_lowercase());
    }
    Ok(out)
}

fn parse<T: FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    match get(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|e| ConfigError::new(name, format!("cannot parse `{raw}`: {e}"))),
    }
}

fn positive(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u32,
) -> Result<u32, ConfigError> {
    let value = parse(get, name, default)?;
    if value == 0 {
        return Err(ConfigError::new(name, "must be at least 1"));
    }
    Ok(value)
}

fn secs(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    parse(get, name, default).map(Duration::from_secs)
}

/// A positive number of seconds as a `chrono::Duration` (for rules that compute with
/// timestamps).
fn chrono_secs(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u32,
) -> Result<chrono::Duration, ConfigError> {
    positive(get, name, default).map(|s| chrono::Duration::seconds(i64::from(s)))
}

/// `kid:hex,kid:hex`: 32-byte keys as 64 hex characters, unique ids.
fn parse_encryption_keys(list: &str) -> Result<Vec<EncryptionKey>, ConfigError> {
    const NAME: &str = "SEQUESTRA_MFA_KEYS";
    let mut keys = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (kid, hex_key) = item.split_once(':').ok_or_else(|| {
            ConfigError::new(NAME, "each entry must be `kid:<64 hex characters>`")
        })?;
        check_kid(NAME, kid)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_key, &mut key)
            .map_err(|_| ConfigError::new(NAME, "a key is exactly 64 hex characters (32 bytes)"))?;
        if key.iter().collect::<HashSet<_>>().len() < 8 {
            return Err(ConfigError::new(
                NAME,
                "a key must be random (`openssl rand -hex 32`)",
            ));
        }
        if keys.iter().any(|k: &EncryptionKey| k.kid == kid) {
            return Err(ConfigError::new(NAME, "key ids must be unique"));
        }
        keys.push(EncryptionKey {
            kid: kid.to_owned(),
            key: std::sync::Arc::new(secrecy::SecretBox::new(Box::new(key))),
        });
    }
    if keys.is_empty() {
        return Err(ConfigError::new(
            NAME,
            "needs at least one `kid:<64 hex characters>`",
        ));
    }
    Ok(keys)
}

fn check_kid(setting: &'static str, kid: &str) -> Result<(), ConfigError> {
    let ok = !kid.is_empty()
        && kid.len() <= 64
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting,
            "a key id is 1 to 64 characters of A-Z, a-z, 0-9, - and _",
        ))
    }
}

/// Words that mark a value copied from an example rather than generated.
const PLACEHOLDER_MARKERS: &[&str] = &[
    "change",
    "example",
    "placeholder",
    "replace",
    "secret",
    "password",
    "default",
    "todo",
    "xxxx",
];

/// Refuses a missing, placeholder or weak secret in production; development accepts
/// anything given explicitly (a weak one is still better caught early, so it warns).
fn check_secret_strength(
    env: Environment,
    name: &'static str,
    value: &str,
) -> Result<(), ConfigError> {
    match secret_weakness(value) {
        None => Ok(()),
        Some(reason) if env == Environment::Production => Err(ConfigError::new(name, reason)),
        Some(reason) => {
            tracing::warn!(
                setting = name,
                reason,
                "weak secret accepted in development"
            );
            Ok(())
        }
    }
}

/// Why a secret is weak, or `None` when it looks random and long enough.
pub fn secret_weakness(value: &str) -> Option<&'static str> {
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDER_MARKERS.iter().any(|m| lower.contains(m)) {
        return Some("looks like a placeholder; generate one with `openssl rand -hex 32`");
    }
    if value.len() < MIN_SECRET_LEN {
        return Some("is too short: use at least 32 random characters (`openssl rand -hex 32`)");
    }
    let distinct: HashSet<char> = value.chars().collect();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return Some("has too little variety to be random (`openssl rand -hex 32`)");
    }
    None
}

pub(crate) fn random_secret() -> SecretString {
    let value: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(48)
        .map(char::from)
        .collect();
    SecretString::from(value)
}

fn redact_url(url: &str) -> String {
    // scheme://user:password@host/... -> scheme://user:***@host/...
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or_default();
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const STRONG: &str = "9f2c7a1e4b8d3f6a0c5e7b9d1f3a5c7e";

    #[test]
    fn cors_origins_are_exact_origins() {
        let c = config(&[(
            "SEQUESTRA_CORS_ORIGINS",
            " https://App.example , http://localhost:5173",
        )])
        .unwrap();
        assert_eq!(
            c.http.cors_origins,
            vec!["https://app.example", "http://localhost:5173"]
        );
        assert!(config(&[]).unwrap().http.cors_origins.is_empty());
        for bad in [
            "*",
            "app.example",
            "https://app.example/",
            "https://*.example",
        ] {
            let err = config(&[("SEQUESTRA_CORS_ORIGINS", bad)]).unwrap_err();
            assert!(
                err.to_string().contains("SEQUESTRA_CORS_ORIGINS"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn development_generates_missing_secrets() {
        let c = config(&[]).unwrap();
        assert_eq!(c.env, Environment::Development);
        assert_eq!(
            c.generated_secrets,
            vec![
                "SEQUESTRA_JWT_SECRET",
                "SEQUESTRA_API_KEY_SECRET",
                "SEQUESTRA_WEBHOOK_SECRETS",
                "SEQUESTRA_MFA_KEYS"
            ]
        );
        assert!(c.auth.jwt_signing_key.secret.expose_secret().len() >= 32);
        assert!(c.database.is_sqlite());
    }

    #[test]
    fn production_refuses_missing_secret_and_names_it() {
        let err = config(&[("SEQUESTRA_ENV", "production")]).unwrap_err();
        assert_eq!(err.setting, "SEQUESTRA_JWT_SECRET");
    }

    #[test]
    fn production_refuses_placeholder_and_short_secrets() {
        for weak in [
            "change-me-change-me-change-me-change-me",
            "abc123",
            &"ab".repeat(20),
        ] {
            let err = config(&[
                ("SEQUESTRA_ENV", "production"),
                ("SEQUESTRA_JWT_SECRET", weak),
                ("SEQUESTRA_API_KEY_SECRET", STRONG),
                ("SEQUESTRA_WEBHOOK_SECRETS", STRONG),
            ])
            .unwrap_err();
            assert_eq!(err.setting, "SEQUESTRA_JWT_SECRET", "{weak}");
        }
    }

    const MFA_KEY: &str = "k1:00112233445566778899aabbccddeeff0123456789abcdef0f1e2d3c4b5a6978";

    #[test]
    fn the_playground_is_off_in_production_unless_enabled() {
        assert!(config(&[]).unwrap().http.playground);
        assert!(
            !config(&[("SEQUESTRA_PLAYGROUND", "false")])
                .unwrap()
                .http
                .playground
        );
        let production = [
            ("SEQUESTRA_ENV", "production"),
            ("SEQUESTRA_JWT_SECRET", STRONG),
            ("SEQUESTRA_API_KEY_SECRET", STRONG),
            ("SEQUESTRA_WEBHOOK_SECRETS", STRONG),
            ("SEQUESTRA_MFA_KEYS", MFA_KEY),
        ];
        assert!(!config(&production).unwrap().http.playground);
        let enabled = [&production[..], &[("SEQUESTRA_PLAYGROUND", "true")]].concat();
        assert!(config(&enabled).unwrap().http.playground);
    }

    #[test]
    fn mfa_keys_are_parsed_and_checked() {
        let err = config(&[("SEQUESTRA_MFA_KEYS", "k1:abcd")]).unwrap_err();
        assert_eq!(err.setting, "SEQUESTRA_MFA_KEYS");
        let err =
            config(&[("SEQUESTRA_MFA_KEYS", &format!("k1:{}", "00".repeat(32)))]).unwrap_err();
        assert_eq!(err.setting, "SEQUESTRA_MFA_KEYS");
        let c = config(&[("SEQUESTRA_MFA_KEYS", MFA_KEY)]).unwrap();
        assert_eq!(c.auth.mfa_keys[0].kid, "k1");
        assert!(!format!("{c:?}").contains("00112233"));
    }

    #[test]
    fn production_accepts_strong_secrets() {
        let c = config(&[
            ("SEQUESTRA_MFA_KEYS", MFA_KEY),
            ("SEQUESTRA_ENV", "production"),
            ("SEQUESTRA_JWT_SECRET", STRONG),
            (
                "SEQUESTRA_API_KEY_SECRET",
                "7d3c9e1a5b2f8a4c6e0d9b7f3a1c5e8b2d4f6a0c",
            ),
            (
                "SEQUESTRA_WEBHOOK_SECRETS",
                "0a1b2c3d4e5f60718293a4b5c6d7e8f9,1f2e3d4c5b6a79880796a5b4c3d2e1f0",
            ),
        ])
        .unwrap();
        assert_eq!(c.webhook_secrets.len(), 2);
        assert!(c.generated_secrets.is_empty());
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = config(&[
            ("SEQUESTRA_JWT_SECRET", STRONG),
            (
                "SEQUESTRA_DATABASE_URL",
                "postgres://app:hunter2hunter2@db/sequestra",
            ),
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains(STRONG));
        assert!(!debug.contains("hunter2"));
        assert_eq!(c.database.redacted_url(), "postgres://app:***@db/sequestra");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = config(&[("SEQUESTRA_LISTEN", "nowhere")]).unwrap_err();
        assert_eq!(err.setting, "SEQUESTRA_LISTEN");
        let err = config(&[("SEQUESTRA_DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.setting, "SEQUESTRA_DATABASE_URL");
        let err = config(&[("SEQUESTRA_SENTRY_DSN", "not a dsn")]).unwrap_err();
        assert_eq!(err.setting, "SEQUESTRA_SENTRY_DSN");
        assert!(config(&[("SEQUESTRA_SENTRY_DSN", "https://abc@o1.ingest.example/42")]).is_ok());
    }

    #[test]
    fn otlp_endpoint_is_a_collector_base_url() {
        assert!(config(&[]).unwrap().otlp.is_none());
        for (raw, traces) in [
            ("http://localhost:4318", "http://localhost:4318/v1/traces"),
            ("https://otel.example/", "https://otel.example/v1/traces"),
            (
                "http://gw.example/otlp/",
                "http://gw.example/otlp/v1/traces",
            ),
        ] {
            let otlp = config(&[("SEQUESTRA_OTLP_ENDPOINT", raw)])
                .unwrap()
                .otlp
                .unwrap();
            assert_eq!(otlp.traces_url, traces);
            assert_eq!(otlp.sample_ratio, 1.0);
        }
        for raw in [
            "localhost:4318",
            "grpc://x:4317",
            "http://x/?a=b",
            "not a url",
        ] {
            let err = config(&[("SEQUESTRA_OTLP_ENDPOINT", raw)]).unwrap_err();
            assert_eq!(err.setting, "SEQUESTRA_OTLP_ENDPOINT", "{raw}");
        }
        let err = config(&[
            ("SEQUESTRA_OTLP_ENDPOINT", "http://localhost:4318"),
            ("SEQUESTRA_OTLP_SAMPLE_RATIO", "1.5"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, "SEQUESTRA_OTLP_SAMPLE_RATIO");
    }
}
