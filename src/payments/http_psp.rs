//! A PSP reached over HTTP. The contract it expects (documented in the README):
//!
//! - `POST {url}/payouts` with a JSON [`PspPayout`], headers `Idempotency-Key:
//!   <payment id>` (the PSP must pay once per key) and `Sequestra-Signature`
//!   (HMAC-SHA256 of `"<t>.<body>"` with the configured secret, as on webhooks);
//!   answers 2xx `{"reference": "…"}`.
//! - `GET {url}/payouts/{reference}` (signed over an empty body); answers 2xx
//!   `{"status": "processing" | "settled" | "failed", "failureReason": …}`, or 404.
//!
//! Each request has a timeout. Network errors, timeouts, 429 and 5xx are retried
//! with exponential backoff (the idempotency key makes a retried submission
//! harmless); any other answer is final.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::psp::{Psp, PspAccepted, PspPayout, PspStatus};
use crate::{
    config::HttpPspConfig,
    error::{Error, Result},
};

pub struct HttpPsp {
    config: HttpPspConfig,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Accepted {
    reference: String,
}

#[derive(Deserialize)]
struct Status {
    status: String,
    #[serde(rename = "failureReason")]
    failure_reason: Option<String>,
}

/// Why one request did not succeed, and whether trying again may help.
struct Failure {
    retry: bool,
    message: String,
}

impl HttpPsp {
    pub fn new(config: HttpPspConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()?;
        Ok(Self { config, client })
    }

    fn signature(&self, body: &[u8]) -> String {
        let t = chrono::Utc::now().timestamp();
        let v1 = super::webhook::sign(self.config.secret.expose_secret(), t, body);
        format!("t={t},v1={v1}")
    }

    /// Sends what `build` makes until it succeeds, fails for good, or the retries
    /// run out; the backoff doubles from `retry_base`.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Option<reqwest::Response>> {
        let mut wait = self.config.retry_base;
        let mut tries = 0;
        loop {
            tries += 1;
            let failure = match build().send().await {
                Ok(r) if r.status().is_success() => return Ok(Some(r)),
                Ok(r) if r.status() == StatusCode::NOT_FOUND => return Ok(None),
                Ok(r) => Failure {
                    retry: r.status() == StatusCode::TOO_MANY_REQUESTS
                        || r.status().is_server_error(),
                    message: format!("the PSP answered {}", r.status()),
                },
                Err(err) => Failure {
                    retry: true,
                    message: if err.is_timeout() {
                        "the PSP did not answer in time".to_owned()
                    } else {
                        // Without the URL, which may carry credentials.
                        format!("the PSP could not be reached: {}", err.without_url())
                    },
                },
            };
            if !failure.retry || tries > self.config.max_retries {
                return Err(Error::internal(anyhow::anyhow!(
                    "{what}: {} (after {tries} tries)",
                    failure.message
                )));
            }
            tracing::warn!(tries, wait_ms = wait.as_millis() as u64, error = %failure.message, "{what}: retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }
}

#[async_trait::async_trait]
impl Psp for HttpPsp {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn submit(&self, payout: &PspPayout) -> Result<PspAccepted> {
        let body = serde_json::to_vec(payout).map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
        let url = format!("{}/payouts", self.config.url);
        let key = payout.payment_id.to_string();
        let response = self
            .send("payout submission", || {
                self.client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("Idempotency-Key", &key)
                    .header("Sequestra-Signature", self.signature(&body))
                    .body(body.clone())
            })
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("the PSP answered 404 to a payout")))?;
        let accepted: Accepted = response
            .json()
            .await
            .map_err(|e| Error::internal(anyhow::anyhow!("unreadable PSP answer: {e}")))?;
        if accepted.reference.is_empty() || accepted.reference.len() > 128 {
            return Err(Error::internal(anyhow::anyhow!(
                "the PSP answered an unusable reference"
            )));
        }
        Ok(PspAccepted {
            reference: accepted.reference,
        })
    }

    async fn status(&self, reference: &str) -> Result<PspStatus> {
        let url = format!(
            "{}/payouts/{}",
            self.config.url,
            utf8_percent_encode(reference)
        );
        let Some(response) = self
            .send("payout status", || {
                self.client
                    .get(&url)
                    .header("Sequestra-Signature", self.signature(b""))
            })
            .await?
        else {
            return Ok(PspStatus::Unknown);
        };
        let status: Status = response
            .json()
            .await
            .map_err(|e| Error::internal(anyhow::anyhow!("unreadable PSP answer: {e}")))?;
        Ok(match status.status.as_str() {
            "processing" => PspStatus::Processing,
            "settled" => PspStatus::Settled,
            "failed" => {
                PspStatus::Failed(status.failure_reason.unwrap_or_else(|| "failed".to_owned()))
            }
            _ => PspStatus::Unknown,
        })
    }
}

/// A path segment: letters, digits and `-_.~` as they are, anything else escaped.
fn utf8_percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
