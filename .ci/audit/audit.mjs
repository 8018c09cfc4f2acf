// Runs the graphql-http server audits against SEQUESTRA_AUDIT_URL (default
// http://127.0.0.1:8080/graphql). Exits non-zero when any MUST audit fails; prints
// every SHOULD/MAY result so the README's list of exceptions can be checked.
import { serverAudits } from 'graphql-http';

const url = process.env.SEQUESTRA_AUDIT_URL ?? 'http://127.0.0.1:8080/graphql';
const audits = serverAudits({ url, fetchFn: fetch });
let mustFailed = 0;
const counts = { ok: 0, warn: 0, error: 0 };
for (const audit of audits) {
  const result = await audit.fn();
  counts[result.status] += 1;
  if (result.status !== 'ok') {
    const level = audit.name.startsWith('MUST') ? 'MUST' : 'OTHER';
    if (result.status === 'error') mustFailed += 1;
    console.log(`[${result.status}] ${audit.id} ${audit.name}: ${result.reason} ${level}`);
  }
}
console.log(`graphql-http audit: ${counts.ok} ok, ${counts.warn} warnings, ${counts.error} MUST failures (${audits.length} audits)`);
process.exit(mustFailed === 0 ? 0 : 1);
