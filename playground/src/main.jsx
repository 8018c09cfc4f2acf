// The Sequestra playground: GraphiQL with a sign-in panel. The access token lives
// in this page's memory only (never localStorage), is refreshed before it expires
// and is sent as `Authorization: Bearer`; subscriptions use /graphql/ws with the
// same token in connection_init. An API key can be pasted instead.
import 'graphiql/setup-workers/vite';
import 'graphiql/style.css';
import './playground.css';

import { StrictMode, useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { GraphiQL } from 'graphiql';
import { useGraphiQL, useGraphiQLActions } from '@graphiql/react';
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { createClient } from 'graphql-ws';
import { parse } from 'graphql';
import { EXAMPLES } from './examples.js';

const HTTP_URL = '/graphql';
const WS_URL = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`;
/** Refresh this long before the access token expires. */
const REFRESH_MARGIN_MS = 60_000;

/** Whether the operation `params` names (or its only one) is a subscription. */
function isSubscription({ query, operationName }) {
  try {
    const operations = parse(query).definitions.filter((d) => d.kind === 'OperationDefinition');
    const chosen = operationName
      ? operations.find((op) => op.name?.value === operationName)
      : operations.length === 1
        ? operations[0]
        : undefined;
    return chosen?.operation === 'subscription';
  } catch {
    return false;
  }
}

/** One GraphQL call outside GraphiQL (sign-in, refresh, sign-out). */
async function call(query, variables, bearer) {
  const headers = { 'content-type': 'application/json' };
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const response = await fetch(HTTP_URL, {
    method: 'POST',
    headers,
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors?.length) {
    const first = body.errors[0];
    const code = first.extensions?.code ? ` (${first.extensions.code})` : '';
    throw new Error(`${first.message}${code}`);
  }
  return body.data;
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
const WHO = `query { viewer { email roles } }`;

function SignInPanel({ auth, onAuth, onSignOut, error, setError }) {
  const [tenant, setTenant] = useState('acme');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [challenge, setChallenge] = useState(null);
  const [code, setCode] = useState('');
  const [apiKey, setApiKey] = useState('');
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

  if (auth) {
    return (
      <div className="sq-panel" data-testid="signed-in">
        <span>
          Signed in{auth.who ? ` as ${auth.who.email} (${auth.who.roles.join(', ')})` : ''}
          {auth.apiKey ? ' with an API key' : ''}
        </span>
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
        await onAuth({ tokens: signIn });
      }
    });
  };
  const verify = (e) => {
    e.preventDefault();
    run(async () => {
      const { verifyMfa } = await call(VERIFY, { input: { challenge, code } });
      setChallenge(null);
      setCode('');
      await onAuth({ tokens: verifyMfa });
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
          <label>
            Authenticator code
            <input
              name="code"
              autoComplete="one-time-code"
              inputMode="numeric"
              value={code}
              onChange={(e) => setCode(e.target.value)}
            />
          </label>
          <button type="submit" disabled={busy}>Verify</button>
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

/** The examples pane: each opens in the query editor. */
function Examples() {
  const queryEditor = useGraphiQL((state) => state.queryEditor);
  const { setOperationName } = useGraphiQLActions();
  const open = (example) => {
    queryEditor?.setValue(example.query);
    // At once: the editor's own parse of the new text comes a moment later.
    const named = /^\s*(?:query|mutation|subscription)\s+(\w+)/.exec(example.query);
    setOperationName(named ? named[1] : '');
  };
  const roles = [...new Set(EXAMPLES.map((e) => e.role))];
  return (
    <div className="sq-examples">
      <div className="graphiql-doc-explorer-title">Examples</div>
      {roles.map((role) => (
        <section key={role}>
          <h3>{role}</h3>
          <ul>
            {EXAMPLES.filter((e) => e.role === role).map((example) => (
              <li key={example.name}>
                <button
                  type="button"
                  className="graphiql-un-styled"
                  onClick={() => open(example)}
                >
                  {example.name}
                </button>
              </li>
            ))}
          </ul>
        </section>
      ))}
    </div>
  );
}

const examplesPlugin = {
  title: 'Examples',
  icon: () => <span aria-hidden="true">Ex</span>,
  content: Examples,
};

function App() {
  // { accessToken, refreshToken, expiresAt, who } or { apiKey, who }; memory only.
  const [auth, setAuth] = useState(null);
  const [error, setError] = useState(null);
  // A new GraphiQL (and a fresh introspection) for every sign-in and sign-out.
  const [generation, setGeneration] = useState(0);
  const authRef = useRef(auth);
  authRef.current = auth;

  const bearer = auth ? (auth.apiKey ?? auth.accessToken) : null;

  const onAuth = useCallback(async ({ tokens, apiKey }) => {
    const credential = apiKey ?? tokens.accessToken;
    const { viewer } = await call(WHO, {}, credential);
    setAuth(apiKey ? { apiKey, who: viewer } : { ...tokens, who: viewer });
    setGeneration((g) => g + 1);
  }, []);

  const onSignOut = useCallback(async () => {
    const current = authRef.current;
    if (current && !current.apiKey) {
      // Revokes the session (its refresh token too); an API key has nothing to end.
      await call(SIGN_OUT, {}, current.accessToken).catch(() => {});
    }
    setAuth(null);
    setGeneration((g) => g + 1);
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
        setError(`Session ended: ${e.message}`);
        setAuth(null);
        setGeneration((g) => g + 1);
      }
    }, Math.max(due, 1_000));
    return () => clearTimeout(timer);
  }, [auth]);

  const wsClient = useMemo(
    () =>
      createClient({
        url: WS_URL,
        lazy: true,
        // Read at each (re)connection: a refreshed token is picked up.
        connectionParams: () => {
          const current = authRef.current;
          const credential = current ? (current.apiKey ?? current.accessToken) : null;
          return credential ? { Authorization: `Bearer ${credential}` } : {};
        },
      }),
    [generation],
  );
  useEffect(() => () => wsClient.dispose(), [wsClient]);

  const fetcher = useMemo(() => {
    const http = createGraphiQLFetcher({
      url: HTTP_URL,
      // The header is built per request, so a refreshed token is used at once.
      fetch: (input, init = {}) => {
        const current = authRef.current;
        const credential = current ? (current.apiKey ?? current.accessToken) : null;
        const headers = new Headers(init.headers);
        if (credential) headers.set('authorization', `Bearer ${credential}`);
        return fetch(input, { ...init, headers });
      },
    });
    // Subscriptions go over the WebSocket, decided from the text being run (the
    // editor's own parse may lag an example just opened).
    return (params, options) =>
      isSubscription(params) ? wsClient.iterate(params) : http(params, options);
  }, [wsClient]);

  return (
    <div className="sq-app">
      <header className="sq-header">
        <strong>Sequestra playground</strong>
        <SignInPanel
          auth={auth}
          onAuth={onAuth}
          onSignOut={onSignOut}
          error={error}
          setError={setError}
        />
      </header>
      <main className="sq-graphiql">
        <GraphiQL
          key={generation}
          fetcher={fetcher}
          plugins={[examplesPlugin]}
          defaultQuery={bearer ? EXAMPLES[0].query : '# Sign in above, then run a query.\n{ serverTime }\n'}
          shouldPersistHeaders={false}
        />
      </main>
    </div>
  );
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
