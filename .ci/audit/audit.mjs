// Runs the graphql-http server audits against SEQUESTRA_AUDIT_URL (default
// http://127.0.0.1:8080/graphql). Exits non-zero when any audit is not `ok`: a MUST
// failure (`error`) and a SHOULD failure (`warn`) alike. The README says every audit
// passes, so there is no exception list to keep in step.
import { serverAudits } from 'graphql-http';

const url = process.env.SEQUESTRA_AUDIT_URL ?? 'http://127.0.0.1:8080/graphql';
const audits = serverAudits({ url, fetchFn: fetch });
const counts = { ok: 0, warn: 0, error: 0 };
for (const audit of audits) {
  const result = await audit.fn();
  counts[result.status] = (counts[result.status] ?? 0) + 1;
  if (result.status !== 'ok') {
    console.log(`[${result.status}] ${audit.id} ${audit.name}: ${result.reason}`);
  }
}
const failed = audits.length - counts.ok;
console.log(
  `graphql-http audit: ${counts.ok} ok, ${counts.warn} SHOULD failures, ${counts.error} MUST failures (${audits.length} audits)`,
);
process.exit(failed === 0 ? 0 : 1);
