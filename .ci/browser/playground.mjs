// The playground in a real browser: Debian's chromium driven by playwright-core,
// headless, with every host but the server's unresolvable. Signs in as the demo's
// ADMIN (the one without MFA), runs a query and a subscription from the examples,
// and saves a screenshot. Fails on any request to another origin, on a
// Content-Security-Policy violation, or when a step does not show its result.
//
// SEQUESTRA_URL (http://127.0.0.1:PORT), SEQUESTRA_DEMO_CREDENTIALS (the file
// `serve --demo --demo-credentials` wrote), SEQUESTRA_SCREENSHOT (where to save).
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { totp } from '../totp.mjs';

const base = process.env.SEQUESTRA_URL ?? 'http://127.0.0.1:8080';
const creds = JSON.parse(readFileSync(process.env.SEQUESTRA_DEMO_CREDENTIALS, 'utf8'));
const screenshot = process.env.SEQUESTRA_SCREENSHOT ?? 'playground.png';
const tenant = creds.tenants.find((t) => t.slug === 'acme');
const admin = tenant.users.find((u) => u.roles.includes('ADMIN') && !u.totpSecret);
const origin = new URL(base).origin;
const wsOrigin = origin.replace(/^http/, 'ws');

const problems = [];
let page;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    // The network is closed to anything but the server.
    `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE ${new URL(base).hostname}`,
    '--no-sandbox',
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  context.on('request', (request) => {
    const url = new URL(request.url());
    if (url.protocol === 'data:' || url.protocol === 'blob:') return;
    if (url.origin !== origin) problems.push(`request to another origin: ${request.url()}`);
  });
  page = await context.newPage();
  page.on('websocket', (ws) => {
    if (new URL(ws.url()).origin !== wsOrigin) problems.push(`websocket to another origin: ${ws.url()}`);
  });
  page.on('console', (msg) => {
    if (process.env.DEBUG) console.log(`console.${msg.type()}: ${msg.text()}`);
    if (/Content Security Policy|Refused to/i.test(msg.text())) {
      problems.push(`CSP: ${msg.text()}`);
    }
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));

  const response = await page.goto(`${base}/playground/`);
  const headers = response.headers();
  for (const [name, expected] of [
    ['x-frame-options', 'DENY'],
    ['x-content-type-options', 'nosniff'],
  ]) {
    if (headers[name] !== expected) problems.push(`${name}: ${headers[name]}`);
  }
  if (!/script-src 'self'/.test(headers['content-security-policy'] ?? '')) {
    problems.push(`content-security-policy: ${headers['content-security-policy']}`);
  }

  // What the page sends: the tokens it was given, and its refreshes.
  let accessToken = null;
  let refreshed = null;
  const refreshedPromise = new Promise((resolve) => {
    refreshed = resolve;
  });
  page.on('response', async (res) => {
    const body = res.request().postData() ?? '';
    if (!res.url().endsWith('/graphql')) return;
    if (body.includes('signIn(')) {
      accessToken = (await res.json().catch(() => ({}))).data?.signIn?.accessToken ?? null;
    } else if (body.includes('refreshSession(')) {
      const data = (await res.json().catch(() => ({}))).data;
      if (data?.refreshSession?.accessToken) refreshed(data.refreshSession.accessToken);
    }
  });

  // Sign in.
  await page.getByLabel('Tenant').fill('acme');
  await page.getByLabel('Email').fill(admin.email);
  await page.getByLabel('Password').fill(admin.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('signed-in').waitFor({ timeout: 15000 });
  const banner = await page.getByTestId('signed-in').innerText();
  if (!banner.includes(admin.email)) problems.push(`signed-in banner: ${banner}`);

  // The token is in memory only.
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  if (/eyJ|sq_live_/.test(stored)) problems.push('a credential was written to web storage');

  // A query from the examples, run, and its result.
  await page.getByRole('button', { name: /Examples/ }).first().click();
  await page.getByRole('button', { name: 'Users and their roles' }).click();
  await page.locator('.graphiql-execute-button').click();
  await page
    .locator('.graphiql-response')
    .getByText(admin.email, { exact: false })
    .first()
    .waitFor({ timeout: 15000 });

  // A subscription through /graphql/ws with the token in connection_init.
  await page.getByRole('button', { name: 'Server clock (subscription)' }).click();
  await page.locator('.graphiql-execute-button').click();
  await page.locator('.graphiql-response').getByText('serverTime').first().waitFor({ timeout: 15000 });
  await page.locator('.graphiql-execute-button').click(); // stop it

  // Back to the query for the picture.
  await page.getByRole('button', { name: 'Users and their roles' }).click();
  await page.locator('.graphiql-execute-button').click();
  await page.locator('.graphiql-response').getByText(admin.email).first().waitFor({ timeout: 15000 });
  await page.screenshot({ path: screenshot });

  // Refreshed before it expires.
  const fresh = await Promise.race([
    refreshedPromise,
    new Promise((_, reject) => setTimeout(() => reject(new Error('no refresh within 30 s')), 30000)),
  ]);
  if (!fresh || fresh === accessToken) problems.push('the refresh did not bring a new token');

  // Sign-out revokes the session: its tokens stop working.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 15000 });
  const after = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${fresh}` },
    body: JSON.stringify({ query: '{ viewer { id } }' }),
  }).then((r) => r.json());
  if (after.errors?.[0]?.extensions?.code !== 'UNAUTHENTICATED') {
    problems.push(`the token still works after sign-out: ${JSON.stringify(after)}`);
  }

  // A user with MFA: the password, then the authenticator code.
  const secure = tenant.users.find((u) => u.roles.includes('ADMIN') && u.totpSecret);
  await page.getByLabel('Email').fill(secure.email);
  await page.getByLabel('Password').fill(secure.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  // The next step's code (the server allows one step of skew): seeding the demo
  // used the code of the step it ran in, and codes are single-use.
  await page.getByLabel('Authenticator code').fill(totp(secure.totpSecret, Date.now() + 30000));
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.getByTestId('signed-in').waitFor({ timeout: 15000 });
  const mfaBanner = await page.getByTestId('signed-in').innerText();
  if (!mfaBanner.includes(secure.email)) problems.push(`MFA sign-in banner: ${mfaBanner}`);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 15000 });
  console.log(
    `playground: signed in as ${admin.email}, ran a query and a subscription, token refreshed, signed out (session revoked), signed in with MFA as ${secure.email}; screenshot ${screenshot}`,
  );
} catch (err) {
  problems.push(`step failed: ${err.message.split('\n').slice(0, 3).join(' | ')}`);
  await page
    ?.screenshot({ path: screenshot.replace(/\.png$/, '-failure.png') })
    .catch(() => {});
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(`playground browser test failed:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
