//! One execution for the same subscription on many sockets. async-graphql's pump runs
//! every `subscribe` as its own stream: each event was resolved, shaped and
//! error-mapped once per socket following it, though sockets of one session sending
//! the same document with the same variables get the same answer. The pump asks
//! [`Executor`] for the stream; a subscription whose [`Audience`] and request match a
//! running one joins it and gets a copy of each response, and the first to come runs
//! it. Anything else (queries and mutations over the socket, anonymous sockets, a
//! document that does not parse) runs on its own, as before.
//!
//! The audience is everything the answer can depend on besides the request: the
//! principal as authenticated (tenant, user, credential, roles, scopes, MFA state) and
//! the client's address. Only sockets of the same session (or API key) share: two
//! sessions of one user run apart. A member that joins a run which ends before it saw
//! anything (a request error, a resolver's refusal) runs the request on its own, so it
//! gets its own answer rather than a bare `complete`.

use std::{
    any::TypeId,
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex, Weak},
};

use async_graphql::{Data, Request, Response};
use chrono::{DateTime, Utc};
use futures_util::{
    StreamExt,
    stream::{self, BoxStream},
};
use tokio::sync::broadcast;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    auth::{Credential, Principal, Role, Scope},
    graphql::AppSchema,
};

/// Responses a member may fall behind by before it skips (as a socket's own
/// subscription to the bus does when it lags). A run's channel holds this many slots
/// from its start (~48 bytes each), for a run of one socket too.
const BACKLOG: usize = 16;

/// Who an answer is for: what the principal was authenticated as, and from where.
/// Put in a socket's session data when `connection_init` is accepted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Audience {
    tenant: Uuid,
    user: Uuid,
    credential: Credential,
    roles: Vec<Role>,
    scopes: BTreeSet<Scope>,
    mfa_verified_at: Option<DateTime<Utc>>,
    mfa_enrolment_required: bool,
    client: IpAddr,
}

impl Audience {
    /// An authenticated principal's audience; none for an anonymous socket (not
    /// shared).
    pub fn of(principal: &Principal, client: IpAddr) -> Option<Self> {
        let Principal::User(user) = principal else {
            return None;
        };
        Some(Self {
            tenant: user.tenant_id.as_uuid(),
            user: user.user_id,
            credential: user.credential,
            roles: user.roles.clone(),
            scopes: user.scopes.clone(),
            mfa_verified_at: user.mfa_verified_at,
            mfa_enrolment_required: user.mfa_enrolment_required,
            client,
        })
    }
}

/// What makes two subscriptions the same run: the audience and the request as sent.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    audience: Audience,
    query: String,
    operation_name: Option<String>,
    /// The variables and extensions as JSON (maps in a fixed order, so equal values
    /// give equal text).
    variables: String,
    extensions: String,
}

/// The runs in progress, by key.
#[derive(Clone, Default)]
pub struct Groups(Arc<Mutex<HashMap<Arc<Key>, Weak<Group>>>>);

impl Groups {
    /// Runs in progress (for tests).
    pub fn running(&self) -> usize {
        self.0
            .lock()
            .expect("fanout lock")
            .values()
            .filter(|g| g.strong_count() > 0)
            .count()
    }
}

/// One run and its members: each member holds the group; the last to leave stops
/// the run.
struct Group {
    key: Arc<Key>,
    /// Where members subscribe; `None` once the run ended (no one joins it then).
    feed: Arc<Mutex<Option<broadcast::Sender<Arc<Response>>>>>,
    task: tokio::task::AbortHandle,
    groups: Groups,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.task.abort();
        let mut groups = self.groups.0.lock().expect("fanout lock");
        // A run started since for the same key is not this one's to remove.
        if groups
            .get(&*self.key)
            .is_some_and(|g| g.strong_count() == 0)
        {
            groups.remove(&*self.key);
        }
    }
}

/// The executor the WebSocket pump runs requests with.
#[derive(Clone)]
pub struct Executor {
    pub schema: AppSchema,
    pub groups: Groups,
}

impl async_graphql::Executor for Executor {
    async fn execute(&self, request: Request) -> Response {
        self.schema.execute(request).await
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let data = session_data.unwrap_or_default();
        let audience = data
            .get(&TypeId::of::<Audience>())
            .and_then(|a| a.downcast_ref::<Audience>())
            .cloned();
        match audience {
            Some(audience) if shareable(&request) => self.join(audience, request, data),
            _ => self
                .schema
                .execute_stream_with_session_data(request, data)
                .boxed(),
        }
    }
}

/// Every root field of `Subscription`, and whether sockets may share its run. Only a
/// stream that starts with the next event can: a member joining later gets what a
/// run of its own would have got from then on. `paymentUpdated` answers the payment
/// as it is first, and `serverTime` ticks from when it starts: a late member would
/// miss the first answer, or get the ticks of someone else's clock, so each runs on
/// its own. A test holds this list to the schema: a new subscription is classified
/// here or fails it.
pub const SUBSCRIPTIONS: &[(&str, bool)] = &[
    ("serverTime", false),
    ("paymentUpdated", false),
    ("escrowUpdated", true),
    ("myPaymentUpdates", true),
];

/// Whether the operation `request` runs is a subscription of fields that may share
/// their run (a document that does not parse, or names no such operation, runs alone
/// and gets its error).
fn shareable(request: &Request) -> bool {
    use crate::graphql::edge::{operation_labels, running};
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let labels = operation_labels(&document);
    // Several operations and no name: refused before it runs, by each socket alone.
    if request.operation_name.is_none() && labels.len() != 1 {
        return false;
    }
    running(&labels, request.operation_name.as_deref()).is_some_and(|(_, kind, root)| {
        *kind == "subscription"
            && SUBSCRIPTIONS
                .iter()
                .any(|(name, shared)| *shared && root == name)
    })
}

/// `value` as JSON text.
fn text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A copy of a shared response for one member.
fn copy(response: &Response) -> Response {
    let mut copy = Response::new(response.data.clone());
    copy.extensions = response.extensions.clone();
    copy.errors = response.errors.clone();
    copy.cache_control = response.cache_control;
    copy.http_headers = response.http_headers.clone();
    copy
}

impl Key {
    fn new(audience: Audience, request: &Request) -> Self {
        Self {
            audience,
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            variables: text(&request.variables),
            // A `HashMap`: sorted, so equal extensions give equal text.
            extensions: text(&request.extensions.0.iter().collect::<BTreeMap<_, _>>()),
        }
    }

    /// The request again, for a member to run alone.
    fn request(&self) -> Request {
        let mut request = Request::new(self.query.clone())
            .variables(serde_json::from_str(&self.variables).unwrap_or_default());
        request.operation_name = self.operation_name.clone();
        request.extensions = serde_json::from_str(&self.extensions).unwrap_or_default();
        request
    }
}

impl Executor {
    /// Joins the run of `request` for `audience`, starting it when none is running.
    fn join(
        &self,
        audience: Audience,
        request: Request,
        data: Arc<Data>,
    ) -> BoxStream<'static, Response> {
        let key = Arc::new(Key::new(audience, &request));
        // A group found ended, or upgraded while its last member left, is dropped
        // after the lock is released (its `Drop` takes the lock).
        let mut stale = None;
        let joined = {
            let mut groups = self.groups.0.lock().expect("fanout lock");
            let found = groups.get(&*key).and_then(Weak::upgrade);
            let receiver = found.as_ref().and_then(|group| {
                group
                    .feed
                    .lock()
                    .expect("fanout lock")
                    .as_ref()
                    .map(broadcast::Sender::subscribe)
            });
            match (found, receiver) {
                (Some(group), Some(rx)) => (group, rx),
                (found, _) => {
                    stale = found;
                    let (group, rx) = self.start(key.clone(), request, data.clone());
                    groups.insert(key, Arc::downgrade(&group));
                    (group, rx)
                }
            }
        };
        drop(stale);
        let (group, rx) = joined;
        let member = Member {
            group,
            rx,
            seen: false,
        };
        let state = State::Shared {
            member,
            schema: self.schema.clone(),
            data,
        };
        stream::unfold(state, |state| async move {
            match state {
                State::Shared {
                    mut member,
                    schema,
                    data,
                } => loop {
                    match member.rx.recv().await {
                        Ok(response) => {
                            member.seen = true;
                            let state = State::Shared {
                                member,
                                schema,
                                data,
                            };
                            // The last member to read an event has it to itself (the
                            // channel let go of it): no copy.
                            let response =
                                Arc::try_unwrap(response).unwrap_or_else(|shared| copy(&shared));
                            return Some((response, state));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) if member.seen => return None,
                        Err(broadcast::error::RecvError::Closed) => {
                            // The run ended before this member saw anything: its own
                            // answer (the same request error or refusal, or a run of
                            // its own) rather than a bare `complete`.
                            let request = member.group.key.request();
                            drop(member);
                            let mut own = schema.execute_stream_with_session_data(request, data);
                            let first = own.next().await?;
                            return Some((first, State::Alone(own.boxed())));
                        }
                    }
                },
                State::Alone(mut own) => {
                    let next = own.next().await?;
                    Some((next, State::Alone(own)))
                }
            }
        })
        .boxed()
    }

    /// Starts the run of `request` with a socket's session data; answers the group
    /// and the first member's receiver.
    fn start(
        &self,
        key: Arc<Key>,
        request: Request,
        data: Arc<Data>,
    ) -> (Arc<Group>, broadcast::Receiver<Arc<Response>>) {
        let (tx, rx) = broadcast::channel(BACKLOG);
        let feed = Arc::new(Mutex::new(Some(tx.clone())));
        let mut run = self.schema.execute_stream_with_session_data(request, data);
        let ended = feed.clone();
        let task = tokio::spawn(
            async move {
                while let Some(response) = run.next().await {
                    let _ = tx.send(Arc::new(response));
                }
                // No one joins an ended run; the members read what is left, then end.
                ended.lock().expect("fanout lock").take();
            }
            .instrument(tracing::Span::current()),
        );
        let group = Arc::new(Group {
            key,
            feed,
            task: task.abort_handle(),
            groups: self.groups.clone(),
        });
        (group, rx)
    }
}

/// A member's stream: a copy of the run's responses, or its own run.
enum State {
    Shared {
        member: Member,
        schema: AppSchema,
        data: Arc<Data>,
    },
    Alone(BoxStream<'static, Response>),
}

/// A socket's place in a run.
struct Member {
    group: Arc<Group>,
    rx: broadcast::Receiver<Arc<Response>>,
    /// Whether a response reached this member.
    seen: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every root field of `Subscription` in the schema is classified in
    /// [`SUBSCRIPTIONS`], and nothing else is.
    #[test]
    fn every_subscription_is_classified() {
        let mut fields = crate::graphql::root_fields("Subscription");
        let mut classified: Vec<String> =
            SUBSCRIPTIONS.iter().map(|(n, _)| (*n).to_owned()).collect();
        fields.sort();
        classified.sort();
        assert_eq!(fields, classified);
    }

    /// A member that runs alone sends the request its run was keyed by.
    #[test]
    fn a_key_gives_its_request_back() {
        let mut sent = Request::new(
            "subscription($id: ID!) { escrowUpdated(escrowId: $id) { event } }",
        )
        .variables(async_graphql::Variables::from_json(serde_json::json!({
            "id": "esc_1", "n": 1.5, "list": [1, null, "x"], "nested": { "b": true, "a": 2 },
        })));
        sent.operation_name = Some("Follow".to_owned());
        sent.extensions.0.insert(
            "persistedQuery".to_owned(),
            async_graphql::Value::from_json(
                serde_json::json!({ "version": 1, "sha256Hash": "ab" }),
            )
            .unwrap(),
        );
        let audience = Audience {
            tenant: Uuid::nil(),
            user: Uuid::nil(),
            credential: Credential::Session(Uuid::nil()),
            roles: vec![Role::Sender],
            scopes: BTreeSet::new(),
            mfa_verified_at: None,
            mfa_enrolment_required: false,
            client: IpAddr::from([127, 0, 0, 1]),
        };
        let key = Key::new(audience, &sent);
        let again = key.request();
        assert_eq!(again.query, sent.query);
        assert_eq!(again.operation_name, sent.operation_name);
        assert_eq!(again.variables, sent.variables);
        assert_eq!(again.extensions.0, sent.extensions.0);
    }

    fn request(query: &str, operation: Option<&str>) -> Request {
        let mut request = Request::new(query);
        request.operation_name = operation.map(str::to_owned);
        request
    }

    #[test]
    fn only_subscriptions_of_event_streams_share() {
        for (query, operation, shared) in [
            ("subscription { myPaymentUpdates { id } }", None, true),
            ("subscription { mine: myPaymentUpdates { id } }", None, true),
            (
                "subscription($id: ID!) { escrowUpdated(escrowId: $id) { event } }",
                None,
                true,
            ),
            (
                "subscription($id: ID!) { paymentUpdated(paymentId: $id) { id } }",
                None,
                false,
            ),
            ("subscription { serverTime }", None, false),
            ("query { __typename }", None, false),
            ("mutation { signOut }", None, false),
            (
                "subscription { ...F } fragment F on Subscription { myPaymentUpdates { id } }",
                None,
                false,
            ),
            (
                "query Q { __typename } subscription S { myPaymentUpdates { id } }",
                Some("S"),
                true,
            ),
            (
                "query Q { __typename } subscription S { myPaymentUpdates { id } }",
                Some("Q"),
                false,
            ),
            (
                "query Q { __typename } subscription S { myPaymentUpdates { id } }",
                None,
                false,
            ),
            ("subscription { myPaymentUpdates { id }", None, false),
        ] {
            assert_eq!(
                shareable(&request(query, operation)),
                shared,
                "{query} ({operation:?})"
            );
        }
    }
}
