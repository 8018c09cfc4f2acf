// The graphql-ws reference client against a running `sequestra serve --demo`:
// connects with the demo API key in connection_init, subscribes, and must receive
// a heartbeat and a payment update (the demo's released payment settling) in time.
// Exits non-zero otherwise. SEQUESTRA_WS_URL and SEQUESTRA_DEMO_CREDENTIALS name
// the server and the file `--demo-credentials` wrote.
import { readFileSync } from 'node:fs';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const url = process.env.SEQUESTRA_WS_URL ?? 'ws://127.0.0.1:8080/graphql/ws';
const creds = JSON.parse(readFileSync(process.env.SEQUESTRA_DEMO_CREDENTIALS, 'utf8'));
const key = creds.tenants[0].apiKeys[0].key;

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${key}` },
  retryAttempts: 0,
  lazy: false,
});

function first(query, accept, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`no matching update within ${ms} ms for: ${query}`));
    }, ms);
    const stop = client.subscribe(
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
}

try {
  const tick = await first('subscription { serverTime }', (d) => Boolean(d.serverTime), 5000);
  console.log(`graphql-ws: heartbeat ${tick.serverTime}`);
  const update = await first(
    'subscription { myPaymentUpdates { id status purpose } }',
    (d) => d.myPaymentUpdates.status === 'SETTLED',
    30000,
  );
  console.log(`graphql-ws: payment ${update.myPaymentUpdates.id} ${update.myPaymentUpdates.status}`);
  await client.dispose();
  process.exit(0);
} catch (err) {
  console.error(`graphql-ws client failed: ${err.message}`);
  await client.dispose();
  process.exit(1);
}
