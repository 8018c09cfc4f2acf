//! A small SMTP server for the tests: it speaks the protocol lettre's client uses
//! (EHLO, MAIL, RCPT, DATA with dot-stuffing, RSET, NOOP, QUIT; RFC 5321), keeps every
//! message it accepted, and can refuse the next transactions for now (451) or for good
//! (550), so the tests read the mails a real client delivered over a real socket.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

/// One delivered mail, parsed.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The envelope's recipients.
    pub to: Vec<String>,
    /// The `From:` header as sent.
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Default)]
struct State {
    mails: Mutex<Vec<Mail>>,
    /// Transactions to refuse with 451 (try again later).
    refuse_for_now: AtomicUsize,
    /// Transactions to refuse with 550 (never).
    refuse_for_good: AtomicUsize,
    /// MAIL commands seen (accepted or not).
    attempts: AtomicUsize,
}

pub struct SmtpSink {
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink");
        let port = listener.local_addr().expect("sink address").port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(session(socket, shared.clone()));
            }
        });
        Self { port, state, task }
    }

    /// `SEQUESTRA_SMTP_URL` for it (plain SMTP on loopback).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn refuse_for_now(&self, transactions: usize) {
        self.state
            .refuse_for_now
            .store(transactions, Ordering::SeqCst);
    }

    pub fn refuse_for_good(&self, transactions: usize) {
        self.state
            .refuse_for_good
            .store(transactions, Ordering::SeqCst);
    }

    /// MAIL commands received so far.
    pub fn attempts(&self) -> usize {
        self.state.attempts.load(Ordering::SeqCst)
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.state.mails.lock().unwrap().clone()
    }

    /// The mails to `address`, in the order they arrived.
    pub fn mails_to(&self, address: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == address))
            .collect()
    }

    /// Waits (10 s at most) for a mail to `address` whose subject contains `subject`.
    pub async fn wait_for(&self, address: &str, subject: &str) -> Mail {
        for _ in 0..200 {
            if let Some(m) = self
                .mails_to(address)
                .into_iter()
                .find(|m| m.subject.contains(subject))
            {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "no mail to {address} about {subject:?}; got: {:#?}",
            self.mails()
                .iter()
                .map(|m| (&m.to, &m.subject))
                .collect::<Vec<_>>()
        );
    }
}

async fn session(socket: tokio::net::TcpStream, state: Arc<State>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    if !reply(&mut write, "220 sink.test ESMTP ready\r\n").await {
        return;
    }
    let mut to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => "250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" | "NOOP" => "250 ok\r\n",
            "RSET" => {
                to.clear();
                "250 ok\r\n"
            }
            "MAIL" => {
                state.attempts.fetch_add(1, Ordering::SeqCst);
                to.clear();
                if take(&state.refuse_for_now) {
                    "451 4.3.0 try again later\r\n"
                } else if take(&state.refuse_for_good) {
                    "550 5.7.1 not accepted\r\n"
                } else {
                    "250 ok\r\n"
                }
            }
            "RCPT" => {
                let address = command
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'))
                    .map(|(a, _)| a.to_owned())
                    .unwrap_or_default();
                to.push(address);
                "250 ok\r\n"
            }
            "DATA" => {
                if !reply(&mut write, "354 end with <CRLF>.<CRLF>\r\n").await {
                    return;
                }
                let mut data = Vec::new();
                loop {
                    line.clear();
                    match lines.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    // Dot-stuffing (RFC 5321 §4.5.2).
                    let text = line.strip_prefix('.').unwrap_or(&line);
                    data.extend_from_slice(text.as_bytes());
                }
                state.mails.lock().unwrap().push(parse(&to, &data));
                "250 queued\r\n"
            }
            "QUIT" => {
                let _ = reply(&mut write, "221 bye\r\n").await;
                return;
            }
            _ => "502 5.5.2 command not recognized\r\n",
        };
        if !reply(&mut write, answer).await {
            return;
        }
    }
}

async fn reply(write: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) -> bool {
    write.write_all(text.as_bytes()).await.is_ok()
}

/// Takes one from `counter` if it is above zero.
fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn parse(to: &[String], data: &[u8]) -> Mail {
    let message = mail_parser::MessageParser::default()
        .parse(data)
        .expect("a MIME message");
    let from = message
        .from()
        .and_then(|a| a.first())
        .map(|a| {
            format!(
                "{} <{}>",
                a.name().unwrap_or_default(),
                a.address().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    Mail {
        to: to.to_vec(),
        from,
        subject: message.subject().unwrap_or_default().to_owned(),
        text: message
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
        html: message
            .body_html(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
    }
}
