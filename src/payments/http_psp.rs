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
//!
//! A circuit breaker stands in front: after `SEQUESTRA_PSP_CIRCUIT_FAILURES` calls in a
//! row that found the PSP down (each after its retries), it is not called at all for
//! `SEQUESTRA_PSP_CIRCUIT_COOL_DOWN_MS`: calls fail at once (payments stay PENDING for
//! the jobs to submit again), `psp_circuit_open` is 1 and `/ready` says so. After the
//! cool-down one call goes through: if it reaches the PSP the circuit closes, if not it
//! opens again. An answer the PSP gives on purpose (a 4xx) is not a failure of the PSP.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

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
    circuit: Mutex<Circuit>,
    /// `scheme://host:port` of the PSP (no credentials, no path): the metric's label.
    endpoint: String,
}

/// The breaker's state in this process.
#[derive(Default)]
struct Circuit {
    /// Calls in a row that found the PSP down.
    failures: u32,
    /// Open: no call before this instant (and the wall-clock time, for `/ready`).
    open_until: Option<(Instant, chrono::DateTime<chrono::Utc>)>,
    /// After the cool-down, the one call let through to try the PSP again.
    probing: bool,
}

/// What the breaker says about one call.
enum Gate {
    Closed,
    /// The cool-down is over: this call tries the PSP again.
    Probe,
    Open,
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
        let endpoint = endpoint_of(&config.url);
        metrics::gauge!("psp_circuit_open", "endpoint" => endpoint.clone()).set(0.0);
        Ok(Self {
            config,
            client,
            circuit: Mutex::default(),
            endpoint,
        })
    }

    fn circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        self.circuit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn gate(&self) -> Gate {
        let mut circuit = self.circuit();
        match circuit.open_until {
            None => Gate::Closed,
            Some((until, _)) if Instant::now() < until || circuit.probing => Gate::Open,
            Some(_) => {
                circuit.probing = true;
                Gate::Probe
            }
        }
    }

    /// Records how a call went: `down` when it found the PSP unreachable or failing.
    fn record(&self, down: bool) {
        let threshold = self.config.circuit_failures;
        let mut circuit = self.circuit();
        circuit.probing = false;
        if !down {
            if circuit.open_until.take().is_some() {
                tracing::info!("the PSP answers again: circuit closed");
            }
            circuit.failures = 0;
            metrics::gauge!("psp_circuit_open", "endpoint" => self.endpoint.clone()).set(0.0);
            return;
        }
        circuit.failures = circuit.failures.saturating_add(1);
        if threshold > 0 && circuit.failures >= threshold {
            let cool_down = self.config.circuit_cool_down;
            let until = chrono::Utc::now()
                + chrono::TimeDelta::from_std(cool_down).unwrap_or(chrono::TimeDelta::MAX);
            circuit.open_until = Some((Instant::now() + cool_down, until));
            metrics::gauge!("psp_circuit_open", "endpoint" => self.endpoint.clone()).set(1.0);
            tracing::error!(
                failures = circuit.failures,
                cool_down_ms = cool_down.as_millis() as u64,
                "the PSP is down: circuit open, no call until the cool-down ends"
            );
        }
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
        let probe = match self.gate() {
            Gate::Open => {
                return Err(Error::internal(anyhow::anyhow!(
                    "{what}: the PSP's circuit is open (it was down); not called"
                )));
            }
            Gate::Probe => true,
            Gate::Closed => false,
        };
        let outcome = self.try_send(what, &build, probe).await;
        // Down: it could not be reached or kept failing; an answer it meant is not.
        self.record(matches!(outcome, Err((true, _))));
        outcome.map_err(|(_, err)| err)
    }

    /// Tries (and retries, unless this call only probes the PSP) until an answer;
    /// `Err((down, error))` otherwise.
    async fn try_send(
        &self,
        what: &str,
        build: &impl Fn() -> reqwest::RequestBuilder,
        probe: bool,
    ) -> std::result::Result<Option<reqwest::Response>, (bool, Error)> {
        let max_retries = if probe { 0 } else { self.config.max_retries };
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
            if !failure.retry || tries > max_retries {
                return Err((
                    failure.retry,
                    Error::internal(anyhow::anyhow!(
                        "{what}: {} (after {tries} tries)",
                        failure.message
                    )),
                ));
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

    fn circuit_open_until(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.circuit().open_until.map(|(_, at)| at)
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

/// `scheme://host[:port]` of a URL: without the credentials it may carry, or its path.
fn endpoint_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_label_carries_no_credentials_or_path() {
        assert_eq!(
            endpoint_of("https://user:secret@psp.example:8443/v1/payouts?x=1"),
            "https://psp.example:8443"
        );
        assert_eq!(
            endpoint_of("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000"
        );
    }
}
