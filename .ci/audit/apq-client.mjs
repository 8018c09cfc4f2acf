// Apollo's automatic persisted queries, spoken by the real client: @apollo/client's
// PersistedQueryLink over its HttpLink, against a running `sequestra serve`
// (SEQUESTRA_AUDIT_URL, http://127.0.0.1:PORT/graphql). Every request the client
// makes is recorded, and the exchange must be the protocol's:
//
//   query, first time:  GET  hash only → PERSISTED_QUERY_NOT_FOUND
//                       POST hash + document → data
//   query, again:       GET  hash only → data (a short URL a cache can key on)
//   mutation, first:    POST hash only → PERSISTED_QUERY_NOT_FOUND; POST with document
//   mutation, again:    POST hash only → data
import { createHash } from 'node:crypto';
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';

const url = process.env.SEQUESTRA_AUDIT_URL ?? 'http://127.0.0.1:8080/graphql';
const exchanges = [];

async function recordingFetch(input, init = {}) {
  const target = new URL(typeof input === 'string' ? input : input.url);
  const method = init.method ?? 'GET';
  const body = init.body ? JSON.parse(init.body) : null;
  const extensions = body?.extensions ?? JSON.parse(target.searchParams.get('extensions') ?? 'null');
  const response = await fetch(input, init);
  const answer = await response.clone().json();
  exchanges.push({
    method,
    hash: extensions?.persistedQuery?.sha256Hash ?? null,
    withDocument: Boolean(body?.query ?? target.searchParams.get('query')),
    status: response.status,
    code: answer.errors?.[0]?.extensions?.code ?? null,
  });
  return response;
}

const client = new ApolloClient({
  cache: new InMemoryCache(),
  link: ApolloLink.from([
    new PersistedQueryLink({
      sha256: (text) => createHash('sha256').update(text).digest('hex'),
      useGETForHashedQueries: true,
    }),
    new HttpLink({ uri: url, fetch: recordingFetch }),
  ]),
});

const CLOCK = gql`
  query Clock {
    serverTime
  }
`;
const RESET = gql`
  mutation Reset($input: RequestPasswordResetInput!) {
    requestPasswordReset(input: $input) {
      accepted
    }
  }
`;

const problems = [];
const expect = (what, actual, expected) => {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    problems.push(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
};
const shape = (list) => list.map((e) => `${e.method} ${e.withDocument ? 'document' : 'hash'} ${e.code ?? e.status}`);

for (let round = 1; round <= 2; round += 1) {
  const before = exchanges.length;
  const { data, error } = await client.query({ query: CLOCK, fetchPolicy: 'network-only' });
  if (error || !data?.serverTime) problems.push(`query round ${round}: ${error?.message ?? JSON.stringify(data)}`);
  expect(
    `query round ${round}`,
    shape(exchanges.slice(before)),
    round === 1 ? ['GET hash PERSISTED_QUERY_NOT_FOUND', 'POST document 200'] : ['GET hash 200'],
  );
}
for (let round = 1; round <= 2; round += 1) {
  const before = exchanges.length;
  const { data, error } = await client.mutate({
    mutation: RESET,
    variables: { input: { tenant: 'no-such-tenant', email: 'nobody@example.com' } },
  });
  if (error || data?.requestPasswordReset?.accepted !== true) {
    problems.push(`mutation round ${round}: ${error?.message ?? JSON.stringify(data)}`);
  }
  expect(
    `mutation round ${round}`,
    shape(exchanges.slice(before)),
    round === 1 ? ['POST hash PERSISTED_QUERY_NOT_FOUND', 'POST document 200'] : ['POST hash 200'],
  );
}
const hashes = new Set(exchanges.map((e) => e.hash));
if (hashes.has(null) || hashes.size !== 2) problems.push(`every request carries one of two hashes: ${[...hashes]}`);

if (problems.length) {
  console.error(`apq-client: the persisted-query exchange went wrong:\n  ${problems.join('\n  ')}`);
  console.error(`  exchanges: ${JSON.stringify(exchanges)}`);
  process.exit(1);
}
console.log(`apq-client (@apollo/client PersistedQueryLink): ${shape(exchanges).join(' | ')}`);
