// The Sequestra playground: GraphiQL with a sign-in panel. The access token lives
// in this page's memory only (never localStorage), is refreshed before it expires
// and is sent as `Authorization: Bearer`; subscriptions use /graphql/ws with the
// same token in connection_init. An API key can be pasted instead.
//
// Around GraphiQL: examples filtered to what the signed-in caller may run (their
// variables filled from earlier answers), a step-up dialog when an answer is
// MFA_REQUIRED (the operation runs again once the code is accepted), MFA enrolment
// and recovery codes, a recovery-code option at the sign-in's second step, and a
// history of every subscription event (GraphiQL itself shows only the latest).
import 'graphiql/setup-workers/vite';
import 'graphiql/style.css';
import './playground.css';

import {
  StrictMode,
  useCallback,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
} from 'react';
import { createRoot } from 'react-dom/client';
import { GraphiQL } from 'graphiql';
import { useGraphiQL, useGraphiQLActions } from '@graphiql/react';
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { createClient } from 'graphql-ws';
import { parse, validate } from 'graphql';
import { EXAMPLES, fillVariables, globalIds } from './examples.js';

const HTTP_URL = '/graphql';
const WS_URL = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`;
/** Refresh this long before the access token expires. */
const REFRESH_MARGIN_MS = 60_000;
/** Subscription events kept in the history pane. */
const HISTORY_LIMIT = 200;

/** A value components can watch (useSyncExternalStore). Memory only. */
function createStore(initial) {
  let value = initial;
  const listeners = new Set();
  return {
    get: () => value,
    set(next) {
      value = typeof next === 'function' ? next(value) : next;
      for (const listener of listeners) listener();
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/** The last global id of each kind seen in an answer, by prefix (`esc` → `esc_…`). */
const seenIds = createStore(new Map());
/** Subscription events, newest first: { run, operation, at, result }. */
const history = createStore([]);
let subscriptionRuns = 0;

function remember(data) {
  const found = globalIds(data);
  if (found.length) seenIds.set((ids) => new Map([...ids, ...found]));
}

/** Whether an answer was refused for want of a recent second factor. */
function needsStepUp(body) {
  return Boolean(body?.errors?.some((e) => e?.extensions?.code === 'MFA_REQUIRED'));
}

/** The operation `params` names (or its only one). */
function chosenOperation({ query, operationName }) {
  try {
    const operations = parse(query).definitions.filter((d) => d.kind === 'OperationDefinition');
    return operationName
      ? operations.find((op) => op.name?.value === operationName)
      : operations.length === 1
        ? operations[0]
        : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A subscription's events as they come, each also kept in the history. A plain
 * iterator rather than an async generator: stopping it must reach the WebSocket at
 * once, not after the next event.
 */
function recorded(params, source) {
  const run = (subscriptionRuns += 1);
  const operation = chosenOperation(params)?.name?.value ?? 'subscription';
  const inner = source[Symbol.asyncIterator]();
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next() {
      const step = await inner.next();
      if (!step.done) {
        remember(step.value?.data);
        history.set((events) =>
          [{ run, operation, at: new Date(), result: step.value }, ...events].slice(0, HISTORY_LIMIT),
        );
      }
      return step;
    },
    return(value) {
      return inner.return ? inner.return(value) : Promise.resolve({ done: true, value });
    },
  };
}

/** One GraphQL request outside GraphiQL; the whole answer. */
async function post(query, variables, bearer) {
  const headers = { 'content-type': 'application/json' };
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const response = await fetch(HTTP_URL, {
    method: 'POST',
    headers,
    body: JSON.stringify({ query, variables }),
  });
  return response.json();
}

/** The data of an answer, or its first error thrown (with `code`). */
function dataOf(body) {
  if (body.errors?.length) {
    const first = body.errors[0];
    const code = first.extensions?.code;
    const error = new Error(`${first.message}${code ? ` (${code})` : ''}`);
    error.code = code;
    throw error;
  }
  return body.data;
}

/** One GraphQL call outside GraphiQL (sign-in, refresh, MFA, sign-out). */
async function call(query, variables, bearer) {
  return dataOf(await post(query, variables, bearer));
}

const SIGN_IN = `mutation SignIn($input: SignInInput!) {
  signIn(input: $input) { accessToken refreshToken expiresAt mfaChallenge }
}`;
const VERIFY = `mutation Verify($input: VerifyMfaInput!) {
  verifyMfa(input: $input) { accessToken refreshToken expiresAt }
}`;
const REFRESH = `mutation Refresh($input: RefreshSessionInput!) {
  refreshSession(input: $input) { accessToken refreshToken expiresAt }
}`;
const SIGN_OUT = `mutation { signOut { sessionId } }`;
const WHO = `query { viewer { id email roles } mfaEnabled }`;
const WHO_KEY = `query { viewer { id email roles } }`;
const MFA_STATE = `query { mfaEnabled }`;
const STEP_UP = `mutation StepUp($input: VerifyStepUpInput!) {
  verifyStepUp(input: $input) { verifiedAt }
}`;
const ENROLL = `mutation { enrollMfa { secret otpauthUri qrCode } }`;
const ACTIVATE = `mutation Activate($input: ActivateMfaInput!) {
  activateMfa(input: $input) { codes }
}`;
const REGENERATE = `mutation { regenerateRecoveryCodes { codes } }`;

/** Runs `work` with a busy flag and its error shown. */
function useRun(setError) {
  const [busy, setBusy] = useState(false);
  const run = async (work) => {
    setBusy(true);
    setError(null);
    try {
      await work();
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return [busy, run];
}

function SignInPanel({ auth, onAuth, onSignOut, onMfa, error, setError }) {
  const [tenant, setTenant] = useState('acme');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [challenge, setChallenge] = useState(null);
  const [code, setCode] = useState('');
  const [useRecovery, setUseRecovery] = useState(false);
  const [apiKey, setApiKey] = useState('');
  const [busy, run] = useRun(setError);

  if (auth) {
    const who = auth.who;
    return (
      <div className="sq-panel" data-testid="signed-in">
        <span>
          Signed in
          {who?.email ? ` as ${who.email} (${who.roles.join(', ')})` : ''}
          {who?.enrolmentPending ? ': your role needs MFA, set it up to go on' : ''}
          {auth.apiKey ? ' with an API key' : ''}
        </span>
        {!auth.apiKey && (
          <button type="button" onClick={onMfa} disabled={busy}>
            MFA settings
          </button>
        )}
        <button type="button" onClick={() => run(onSignOut)} disabled={busy}>
          Sign out
        </button>
        {error && <span className="sq-error" role="alert">{error}</span>}
      </div>
    );
  }
  const signIn = (e) => {
    e.preventDefault();
    run(async () => {
      const { signIn } = await call(SIGN_IN, { input: { tenant, email, password } });
      setPassword('');
      if (signIn.mfaChallenge) {
        setChallenge(signIn.mfaChallenge);
      } else {
        await onAuth({ tokens: signIn, email });
      }
    });
  };
  const verify = (e) => {
    e.preventDefault();
    run(async () => {
      const second = useRecovery ? { recoveryCode: code.trim() } : { code: code.trim() };
      const { verifyMfa } = await call(VERIFY, { input: { challenge, ...second } });
      setChallenge(null);
      setCode('');
      setUseRecovery(false);
      await onAuth({ tokens: verifyMfa, email });
    });
  };
  const useKey = (e) => {
    e.preventDefault();
    run(async () => {
      await onAuth({ apiKey: apiKey.trim() });
      setApiKey('');
    });
  };
  return (
    <div className="sq-panel">
      {challenge ? (
        <form onSubmit={verify} aria-label="Second factor">
          <CodeInput
            label={useRecovery ? 'Recovery code' : 'Authenticator code'}
            name="code"
            value={code}
            onChange={setCode}
            numeric={!useRecovery}
          />
          <button type="submit" disabled={busy}>Verify</button>
          <button
            type="button"
            className="sq-link"
            onClick={() => {
              setUseRecovery(!useRecovery);
              setCode('');
            }}
          >
            {useRecovery ? 'Use an authenticator code' : 'Use a recovery code instead'}
          </button>
        </form>
      ) : (
        <form onSubmit={signIn} aria-label="Sign in">
          <label>
            Tenant
            <input name="tenant" value={tenant} onChange={(e) => setTenant(e.target.value)} />
          </label>
          <label>
            Email
            <input
              name="email"
              type="email"
              autoComplete="username"
              value={email}
              onChange={(e) => setEmail(e.target.value)}
            />
          </label>
          <label>
            Password
            <input
              name="password"
              type="password"
              autoComplete="current-password"
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          </label>
          <button type="submit" disabled={busy}>Sign in</button>
        </form>
      )}
      <form onSubmit={useKey} aria-label="API key">
        <label>
          or an API key
          <input
            name="apiKey"
            type="password"
            autoComplete="off"
            value={apiKey}
            onChange={(e) => setApiKey(e.target.value)}
          />
        </label>
        <button type="submit" disabled={busy || !apiKey.trim()}>Use key</button>
      </form>
      {error && <span className="sq-error" role="alert">{error}</span>}
    </div>
  );
}

/** A one-time code field (authenticator or recovery code), labelled. */
function CodeInput({ label, name, value, onChange, numeric = true }) {
  return (
    <label>
      {label}
      <input
        name={name}
        autoComplete="one-time-code"
        inputMode={numeric ? 'numeric' : 'text'}
        value={value}
        onChange={(e) => onChange(e.target.value)}
      />
    </label>
  );
}

/** A modal box; `label` names it for assistive technology (and the tests). */
function Dialog({ label, children }) {
  return (
    <div className="sq-backdrop">
      <div className="sq-dialog" role="dialog" aria-modal="true" aria-label={label}>
        <h2>{label}</h2>
        {children}
      </div>
    </div>
  );
}

/** Recovery codes, shown once. */
function RecoveryCodes({ codes, onDone }) {
  return (
    <>
      <p>
        Recovery codes: each stands in for an authenticator code once. Keep them somewhere
        safe; they are not shown again.
      </p>
      <ol className="sq-codes" data-testid="recovery-codes">
        {codes.map((c) => (
          <li key={c}>
            <code>{c}</code>
          </li>
        ))}
      </ol>
      <div className="sq-actions">
        <button type="button" onClick={onDone}>I have kept them</button>
      </div>
    </>
  );
}

/**
 * MFA from the panel: enrol an authenticator (QR code or the seed by hand, then a
 * first code), or, once enrolled, new recovery codes (a step-up first).
 */
function MfaPanel({ enabled, bearer, withStepUp, onActivated, onClose }) {
  const [enrolment, setEnrolment] = useState(null);
  const [codes, setCodes] = useState(null);
  const [code, setCode] = useState('');
  const [error, setError] = useState(null);
  const [busy, run] = useRun(setError);

  if (codes) {
    return (
      <Dialog label="MFA">
        <RecoveryCodes codes={codes} onDone={onClose} />
      </Dialog>
    );
  }
  const start = () =>
    run(async () => {
      setEnrolment((await call(ENROLL, {}, bearer())).enrollMfa);
    });
  const activate = (e) => {
    e.preventDefault();
    run(async () => {
      const { activateMfa } = await call(ACTIVATE, { input: { code: code.trim() } }, bearer());
      setCode('');
      setCodes(activateMfa.codes);
      await onActivated();
    });
  };
  const regenerate = () =>
    run(async () => {
      const body = await withStepUp(() => post(REGENERATE, {}, bearer()));
      setCodes(dataOf(body).regenerateRecoveryCodes.codes);
    });
  return (
    <Dialog label="MFA">
      {enabled ? (
        <>
          <p>An authenticator is set up for this account.</p>
          <div className="sq-actions">
            <button type="button" onClick={regenerate} disabled={busy}>New recovery codes</button>
            <button type="button" onClick={onClose}>Close</button>
          </div>
        </>
      ) : enrolment ? (
        <form onSubmit={activate} aria-label="Activate MFA">
          <p>Add this account to your authenticator app, then enter the code it shows.</p>
          <img className="sq-qr" src={enrolment.qrCode} alt="QR code of the authenticator seed" />
          <p>
            Or enter the seed by hand: <code data-testid="mfa-secret">{enrolment.secret}</code>
          </p>
          <CodeInput label="First code" name="firstCode" value={code} onChange={setCode} />
          <div className="sq-actions">
            <button type="submit" disabled={busy || !code.trim()}>Activate</button>
            <button type="button" onClick={onClose}>Cancel</button>
          </div>
        </form>
      ) : (
        <>
          <p>No authenticator is set up for this account yet.</p>
          <div className="sq-actions">
            <button type="button" onClick={start} disabled={busy}>Set up an authenticator</button>
            <button type="button" onClick={onClose}>Close</button>
          </div>
        </>
      )}
      {error && <p className="sq-error" role="alert">{error}</p>}
    </Dialog>
  );
}

/**
 * Asked when an answer is MFA_REQUIRED: a fresh authenticator code (or, without an
 * authenticator, its enrolment, which counts as the check), then the operation runs
 * again.
 */
function StepUpDialog({ enabled, bearer, onDone, onEnrol }) {
  const [code, setCode] = useState('');
  const [error, setError] = useState(null);
  const [busy, run] = useRun(setError);
  const verify = (e) => {
    e.preventDefault();
    run(async () => {
      await call(STEP_UP, { input: { code: code.trim() } }, bearer());
      onDone(true);
    });
  };
  return (
    <Dialog label="Step-up">
      {enabled ? (
        <form onSubmit={verify} aria-label="Second-factor check">
          <p>This operation needs a recent second-factor check. It runs again once the code is accepted.</p>
          <CodeInput label="Step-up code" name="stepUpCode" value={code} onChange={setCode} />
          <div className="sq-actions">
            <button type="submit" disabled={busy || !code.trim()}>Verify and run again</button>
            <button type="button" onClick={() => onDone(false)}>Cancel</button>
          </div>
        </form>
      ) : (
        <>
          <p>
            This operation needs a second factor, and this account has no authenticator yet. Set
            one up: activating it counts as the check, and the operation runs again.
          </p>
          <div className="sq-actions">
            <button type="button" onClick={onEnrol}>Set up MFA</button>
            <button type="button" onClick={() => onDone(false)}>Cancel</button>
          </div>
        </>
      )}
      {error && <p className="sq-error" role="alert">{error}</p>}
    </Dialog>
  );
}

/** The examples pane: those the caller's schema accepts; each opens in the editors. */
function Examples() {
  const schema = useGraphiQL((state) => state.schema);
  const queryEditor = useGraphiQL((state) => state.queryEditor);
  const variableEditor = useGraphiQL((state) => state.variableEditor);
  const { setOperationName } = useGraphiQLActions();
  const ids = useSyncExternalStore(seenIds.subscribe, seenIds.get);
  const [everyRole, setEveryRole] = useState(false);
  // Valid against the schema this caller is shown = something their role may run;
  // a flow only when every step of it is.
  const runnable = useMemo(() => {
    if (!schema) return new Set();
    const valid = EXAMPLES.filter((e) => validate(schema, parse(e.query)).length === 0);
    const brokenFlows = new Set(EXAMPLES.filter((e) => e.flow && !valid.includes(e)).map((e) => e.flow));
    return new Set(valid.filter((e) => !brokenFlows.has(e.flow)).map((e) => e.name));
  }, [schema]);
  const open = (example) => {
    queryEditor?.setValue(example.query);
    variableEditor?.setValue(fillVariables(example.variables, seenIds.get()));
    // At once: the editor's own parse of the new text comes a moment later.
    const named = /^\s*(?:query|mutation|subscription)\s+(\w+)/.exec(example.query);
    setOperationName(named ? named[1] : '');
  };
  const shown = EXAMPLES.filter((e) => everyRole || runnable.has(e.name));
  const topics = [...new Set(shown.map((e) => e.topic))];
  const hidden = EXAMPLES.length - runnable.size;
  return (
    <div className="sq-examples">
      <div className="graphiql-doc-explorer-title">Examples</div>
      {!schema && <p>Loading the schema…</p>}
      {schema && runnable.size === 0 && <p>Sign in to see the examples your role may run.</p>}
      {topics.map((topic) => (
        <section key={topic}>
          <h3>{topic}</h3>
          <ul>
            {shown
              .filter((e) => e.topic === topic)
              .map((example) => (
                <li key={example.name}>
                  <button type="button" className="graphiql-un-styled" onClick={() => open(example)}>
                    {example.name}
                  </button>
                  {!runnable.has(example.name) && <span className="sq-muted"> (not for your role)</span>}
                </li>
              ))}
          </ul>
        </section>
      ))}
      {schema && hidden > 0 && (
        <label className="sq-muted sq-toggle">
          <input type="checkbox" checked={everyRole} onChange={(e) => setEveryRole(e.target.checked)} />
          {` show ${hidden} more for other roles`}
        </label>
      )}
      {ids.size > 0 && (
        <section data-testid="seen-ids">
          <h3>Filled into variables</h3>
          <ul className="sq-muted">
            {[...ids].map(([prefix, id]) => (
              <li key={prefix}>
                <code>{`{{${prefix}}}`}</code> {id}
              </li>
            ))}
          </ul>
        </section>
      )}
    </div>
  );
}

/** Every subscription event since sign-in, newest first. */
function History() {
  const events = useSyncExternalStore(history.subscribe, history.get);
  return (
    <div className="sq-history">
      <div className="graphiql-doc-explorer-title">Subscription history</div>
      <p className="sq-muted">
        {events.length} event{events.length === 1 ? '' : 's'}
        {events.length >= HISTORY_LIMIT ? ` (the last ${HISTORY_LIMIT})` : ''}{' '}
        <button type="button" onClick={() => history.set([])} disabled={!events.length}>
          Clear
        </button>
      </p>
      <ol reversed>
        {events.map((event, i) => (
          <li key={`${event.run}-${event.at.getTime()}-${i}`} data-testid="history-entry">
            <div>
              <time dateTime={event.at.toISOString()}>{event.at.toLocaleTimeString()}</time>{' '}
              <strong>{event.operation}</strong> <span className="sq-muted">#{event.run}</span>
            </div>
            <pre>{JSON.stringify(event.result.errors ? event.result : event.result.data, null, 2)}</pre>
          </li>
        ))}
      </ol>
    </div>
  );
}

const examplesPlugin = {
  title: 'Examples',
  icon: () => <span aria-hidden="true">Ex</span>,
  content: Examples,
};

const historyPlugin = {
  title: 'Subscription events',
  icon: () => <span aria-hidden="true">Ev</span>,
  content: History,
};

// One array for the page's life: GraphiQL closes the open pane when `plugins` changes.
const PLUGINS = [examplesPlugin, historyPlugin];

function App() {
  // { accessToken, refreshToken, expiresAt, who } or { apiKey, who }; memory only.
  const [auth, setAuth] = useState(null);
  const [error, setError] = useState(null);
  // A new GraphiQL (and a fresh introspection) for every sign-in and sign-out.
  const [generation, setGeneration] = useState(0);
  // A pending step-up: { resolve } while its dialog is open.
  const [stepUp, setStepUp] = useState(null);
  const [mfaOpen, setMfaOpen] = useState(false);
  const authRef = useRef(auth);
  authRef.current = auth;
  const stepUpRef = useRef(stepUp);
  stepUpRef.current = stepUp;

  const bearer = useCallback(() => {
    const current = authRef.current;
    return current ? (current.apiKey ?? current.accessToken) : null;
  }, []);

  // Whatever the last identity saw is not the next one's.
  const forget = () => {
    seenIds.set(new Map());
    history.set([]);
  };

  const whoIs = async (credential, isKey, email) => {
    try {
      const data = await call(isKey ? WHO_KEY : WHO, {}, credential);
      return { ...data.viewer, mfaEnabled: isKey ? false : data.mfaEnabled };
    } catch (e) {
      // The tenant requires MFA of this role and none is set up: only enrolment is
      // open to the session until it is.
      if (isKey || e.code !== 'MFA_REQUIRED') throw e;
      const { mfaEnabled } = await call(MFA_STATE, {}, credential);
      return { email, roles: [], mfaEnabled, enrolmentPending: true };
    }
  };

  const onAuth = useCallback(async ({ tokens, apiKey, email }) => {
    const credential = apiKey ?? tokens.accessToken;
    const who = await whoIs(credential, Boolean(apiKey), email);
    forget();
    setAuth(apiKey ? { apiKey, who } : { ...tokens, who });
    setGeneration((g) => g + 1);
    if (who.enrolmentPending) setMfaOpen(true);
  }, []);

  const endSession = (message) => {
    stepUpRef.current?.resolve(false);
    setStepUp(null);
    setMfaOpen(false);
    forget();
    setError(message);
    setAuth(null);
    setGeneration((g) => g + 1);
  };

  const onSignOut = useCallback(async () => {
    const current = authRef.current;
    if (current && !current.apiKey) {
      // Revokes the session (its refresh token too); an API key has nothing to end.
      await call(SIGN_OUT, {}, current.accessToken).catch(() => {});
    }
    endSession(null);
  }, []);

  // Refresh the access token before it expires.
  useEffect(() => {
    if (!auth || auth.apiKey) return undefined;
    const due = new Date(auth.expiresAt).getTime() - Date.now() - REFRESH_MARGIN_MS;
    const timer = setTimeout(async () => {
      try {
        const { refreshSession } = await call(REFRESH, {
          input: { refreshToken: auth.refreshToken },
        });
        setAuth((current) => (current ? { ...current, ...refreshSession } : current));
      } catch (e) {
        endSession(`Session ended: ${e.message}`);
      }
    }, Math.max(due, 1_000));
    return () => clearTimeout(timer);
  }, [auth]);

  /** Runs `request` (an answer's promise); on MFA_REQUIRED asks for a step-up and runs it again. */
  const withStepUp = useCallback(async (request) => {
    const first = await request();
    const current = authRef.current;
    if (!current || current.apiKey || !needsStepUp(first)) return first;
    const verified = await new Promise((resolve) => setStepUp({ resolve }));
    return verified ? request() : first;
  }, []);

  const finishStepUp = (verified) => {
    stepUpRef.current?.resolve(verified);
    setStepUp(null);
  };

  const onActivated = async () => {
    const wasPending = Boolean(authRef.current?.who?.enrolmentPending);
    const who = await whoIs(bearer(), false, authRef.current?.who?.email);
    setAuth((current) => (current ? { ...current, who } : current));
    // Activation is itself a fresh second factor: a waiting operation can go on.
    if (stepUpRef.current) finishStepUp(true);
    // A session that could do nothing but enrol sees the whole schema now.
    if (wasPending) setGeneration((g) => g + 1);
  };

  const wsClient = useMemo(
    () =>
      createClient({
        url: WS_URL,
        lazy: true,
        // Read at each (re)connection: a refreshed token is picked up.
        connectionParams: () => {
          const credential = bearer();
          return credential ? { Authorization: `Bearer ${credential}` } : {};
        },
      }),
    [generation],
  );
  useEffect(() => () => wsClient.dispose(), [wsClient]);

  const fetcher = useMemo(() => {
    const http = createGraphiQLFetcher({
      url: HTTP_URL,
      // One JSON answer per request (the server sends no incremental delivery), so
      // the answer can be read here: its ids kept, its MFA_REQUIRED caught.
      enableIncrementalDelivery: false,
      // The header is built per request, so a refreshed token is used at once.
      fetch: (input, init = {}) => {
        const credential = bearer();
        const headers = new Headers(init.headers);
        if (credential) headers.set('authorization', `Bearer ${credential}`);
        return fetch(input, { ...init, headers });
      },
    });
    // Subscriptions go over the WebSocket, decided from the text being run (the
    // editor's own parse may lag an example just opened).
    return (params, options) => {
      if (chosenOperation(params)?.operation === 'subscription') {
        return recorded(params, wsClient.iterate(params));
      }
      return withStepUp(async () => {
        const answer = await http(params, options);
        remember(answer?.data);
        return answer;
      });
    };
  }, [wsClient]);

  const bearerNow = bearer();
  return (
    <div className="sq-app">
      <header className="sq-header">
        <strong>Sequestra playground</strong>
        <SignInPanel
          auth={auth}
          onAuth={onAuth}
          onSignOut={onSignOut}
          onMfa={() => setMfaOpen(true)}
          error={error}
          setError={setError}
        />
      </header>
      <main className="sq-graphiql">
        <GraphiQL
          key={generation}
          fetcher={fetcher}
          plugins={PLUGINS}
          defaultQuery={bearerNow ? EXAMPLES[0].query : '# Sign in above, then run a query.\n{ serverTime }\n'}
          defaultEditorToolsVisibility="variables"
          shouldPersistHeaders={false}
        />
      </main>
      {mfaOpen && auth && !auth.apiKey && (
        <MfaPanel
          enabled={Boolean(auth.who?.mfaEnabled)}
          bearer={bearer}
          withStepUp={withStepUp}
          onActivated={onActivated}
          onClose={() => {
            setMfaOpen(false);
            // Closed without activating: a waiting operation is not run again.
            if (stepUpRef.current?.enrolling) finishStepUp(false);
          }}
        />
      )}
      {stepUp && !stepUp.enrolling && (
        <StepUpDialog
          enabled={Boolean(auth?.who?.mfaEnabled)}
          bearer={bearer}
          onDone={finishStepUp}
          onEnrol={() => {
            setStepUp((pending) => pending && { ...pending, enrolling: true });
            setMfaOpen(true);
          }}
        />
      )}
    </div>
  );
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
