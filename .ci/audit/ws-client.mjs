// A money flow watched over WebSocket with the graphql-ws reference client, against a
// running `sequestra serve --demo --demo-credentials FILE`, whenever it is run:
//   1. connects with the demo API key in connection_init and gets a heartbeat;
//   2. subscribes to myPaymentUpdates (the key reads as the tenant's ADMIN: every
//      payment of the tenant);
//   3. signs in as the demo SENDER (password, then a TOTP code from its totpSecret:
//      the sign-in is the MFA step-up a release needs), creates an escrow to the
//      demo BENEFICIARY, funds it and releases it;
//   4. waits for that release's payment to reach SETTLED (the simulated PSP's webhook,
//      SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS after the release).
// Exits non-zero otherwise. SEQUESTRA_WS_URL names the server's WebSocket endpoint (the
// HTTP one is derived from it) and SEQUESTRA_DEMO_CREDENTIALS the credentials file.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { totp } from '../totp.mjs';

const url = process.env.SEQUESTRA_WS_URL ?? 'ws://127.0.0.1:8080/graphql/ws';
const httpUrl = url.replace(/^ws/, 'http').replace(/\/ws$/, '');
const creds = JSON.parse(readFileSync(process.env.SEQUESTRA_DEMO_CREDENTIALS, 'utf8'));
const tenant = creds.tenants[0];
const key = tenant.apiKeys[0].key;
const sender = tenant.users.find((u) => u.roles.includes('SENDER'));
const beneficiary = tenant.users.find((u) => u.roles.includes('BENEFICIARY'));

async function gql(token, query, variables = {}) {
  const res = await fetch(httpUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ query, variables }),
  });
  return res.json();
}

function must(result, what) {
  if (result.errors) throw new Error(`${what}: ${JSON.stringify(result.errors)}`);
  return result.data;
}

/** The SENDER's access token: password, then a TOTP code. Codes are single-use and
 * the server accepts one step of skew: the next step's code is used (seeding spent
 * the current one). When that was spent too (an earlier run in the same 30 s), the
 * client waits for the next step rather than guessing: failed codes count towards
 * the second factor's lockout. */
async function signInSender() {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    if (attempt > 0) {
      const wait = 30000 - (Date.now() % 30000) + 500;
      console.log(`graphql-ws: this step's code was used already; waiting ${Math.round(wait / 1000)} s for the next`);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    const signIn = must(
      await gql(null, 'mutation($i: SignInInput!) { signIn(input: $i) { mfaChallenge } }', {
        i: { tenant: tenant.slug, email: sender.email, password: sender.password },
      }),
      'signIn',
    ).signIn;
    const verified = await gql(
      null,
      'mutation($i: VerifyMfaInput!) { verifyMfa(input: $i) { accessToken } }',
      { i: { challenge: signIn.mfaChallenge, code: totp(sender.totpSecret, Date.now() + 30000) } },
    );
    if (!verified.errors) return verified.data.verifyMfa.accessToken;
  }
  throw new Error('the SENDER could not complete its MFA sign-in');
}

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${key}` },
  retryAttempts: 0,
  lazy: false,
});

/** Resolves with the first result `accept` takes; `started` resolves once subscribed. */
function watch(query, accept, ms) {
  let stop;
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`no matching update within ${ms} ms for: ${query}`));
    }, ms);
    stop = client.subscribe(
      { query },
      {
        next: (result) => {
          if (result.errors) {
            clearTimeout(timer);
            stop();
            reject(new Error(JSON.stringify(result.errors)));
          } else if (accept(result.data)) {
            clearTimeout(timer);
            stop();
            resolve(result.data);
          }
        },
        error: (err) => {
          clearTimeout(timer);
          reject(err instanceof Error ? err : new Error(JSON.stringify(err)));
        },
        complete: () => {},
      },
    );
  });
  return done;
}

try {
  const tick = await watch('subscription { serverTime }', (d) => Boolean(d.serverTime), 5000);
  console.log(`graphql-ws: heartbeat ${tick.serverTime}`);

  // Every payment update of the tenant from now on, kept until the release's shows up.
  const seen = [];
  let expected = null;
  let settled;
  const settledSeen = new Promise((resolve) => {
    settled = resolve;
  });
  const updates = watch(
    'subscription { myPaymentUpdates { id status } }',
    (d) => {
      seen.push(d.myPaymentUpdates);
      if (expected && seen.some((p) => p.id === expected && p.status === 'SETTLED')) {
        settled();
        return true;
      }
      return false;
    },
    90000,
  );
  // The server acknowledges a subscribe without a message; a heartbeat proves the
  // socket is live before anything is released.
  await watch('subscription { serverTime(intervalSeconds: 1) }', (d) => Boolean(d.serverTime), 5000);

  const providerId = must(
    await gql(key, '{ users(first: 50) { edges { node { id email } } } }'),
    'users',
  ).users.edges.find((e) => e.node.email === beneficiary.email).node.id;
  const token = await signInSender();
  const deadline = new Date(Date.now() + 7 * 24 * 3600 * 1000).toISOString();
  const escrow = must(
    await gql(
      token,
      `mutation($i: CreateEscrowInput!) {
         createEscrow(input: $i) { escrow { id status } } }`,
      {
        i: {
          providerId,
          amount: '12.50',
          currency: 'EUR',
          description: 'ws-client.mjs: a release watched over WebSocket',
          deadline,
          idempotencyKey: randomUUID(),
        },
      },
    ),
    'createEscrow',
  ).createEscrow.escrow;
  must(
    await gql(
      token,
      'mutation($e: ID!, $k: String!) { fundEscrow(input: { escrowId: $e, amount: "12.50", idempotencyKey: $k }) { escrow { status } } }',
      { e: escrow.id, k: randomUUID() },
    ),
    'fundEscrow',
  );
  const released = must(
    await gql(
      token,
      'mutation($e: ID!, $k: String!) { releaseEscrow(input: { escrowId: $e, idempotencyKey: $k }) { escrow { status } payments { id status } } }',
      { e: escrow.id, k: randomUUID() },
    ),
    'releaseEscrow',
  ).releaseEscrow;
  expected = released.payments[0].id;
  console.log(`graphql-ws: escrow ${escrow.id} ${released.escrow.status}, payment ${expected} ${released.payments[0].status}`);
  if (seen.some((p) => p.id === expected && p.status === 'SETTLED')) settled();
  await Promise.race([updates, settledSeen]);
  const moves = seen.filter((p) => p.id === expected).map((p) => p.status);
  console.log(`graphql-ws: payment ${expected} seen ${moves.join(' -> ')}`);
  await client.dispose();
  process.exit(0);
} catch (err) {
  console.error(`graphql-ws client failed: ${err.message}`);
  await client.dispose();
  process.exit(1);
}
