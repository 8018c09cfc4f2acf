// The playground in a real browser: Debian's chromium driven by playwright-core,
// headless, with every host but the server's unresolvable. Two users in two browser
// contexts:
//
// - the demo SENDER (MFA) walks the escrow money flow from the examples (providers,
//   create, fund, with ids carried from answer to variables), waits until its
//   sign-in's second factor is no longer recent (the server runs with a 1-minute
//   step-up window), releases: the answer is MFA_REQUIRED, the step-up dialog takes
//   an authenticator code, and the release runs again and pays; then follows the
//   payment over the WebSocket until the simulated PSP settles it, in the history;
// - meanwhile the demo ADMIN without MFA: its examples (none of the SENDER's), a
//   query and a subscription (several events in the history), a token refresh,
//   sign-out (session revoked), MFA enrolment from the panel, a sign-in with one of
//   the recovery codes it was given, and the other ADMIN's TOTP sign-in.
//
// Fails on any request to another origin, on a Content-Security-Policy violation, on
// a page error, or when a step does not show its result.
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
const secure = tenant.users.find((u) => u.roles.includes('ADMIN') && u.totpSecret);
const sender = tenant.users.find((u) => u.roles.includes('SENDER') && u.totpSecret);
const origin = new URL(base).origin;
const wsOrigin = origin.replace(/^http/, 'ws');
/** The server's step-up window (SEQUESTRA_MFA_STEP_UP_MINUTES=1), and a margin. */
const STEP_UP_WINDOW_MS = 60_000 + 2_000;
const WAIT = { timeout: 15000 };

const problems = [];
const pages = [];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    // The network is closed to anything but the server.
    `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE ${new URL(base).hostname}`,
    '--no-sandbox',
  ],
});

/** A page in its own context (its own memory: one signed-in user each). */
async function openPlayground(who) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  context.on('request', (request) => {
    const url = new URL(request.url());
    if (url.protocol === 'data:' || url.protocol === 'blob:') return;
    if (url.origin !== origin) problems.push(`${who}: request to another origin: ${request.url()}`);
  });
  const page = await context.newPage();
  pages.push([who, page]);
  page.on('websocket', (ws) => {
    if (new URL(ws.url()).origin !== wsOrigin) problems.push(`${who}: websocket to another origin: ${ws.url()}`);
  });
  page.on('console', (msg) => {
    if (process.env.DEBUG) console.log(`${who} console.${msg.type()}: ${msg.text()}`);
    if (/Content Security Policy|Refused to/i.test(msg.text())) problems.push(`${who}: CSP: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`${who}: page error: ${err.message}`));
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
  return page;
}

/** Password, then (if asked) the second factor: `{ code }` or `{ recoveryCode }`. */
async function signIn(page, user, second) {
  await page.getByLabel('Tenant').fill('acme');
  await page.getByLabel('Email').fill(user.email);
  await page.getByLabel('Password').fill(user.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  if (second?.recoveryCode) {
    await page.getByRole('button', { name: 'Use a recovery code instead' }).click();
    await page.getByLabel('Recovery code').fill(second.recoveryCode);
    await page.getByRole('button', { name: 'Verify' }).click();
  } else if (second?.code) {
    await page.getByLabel('Authenticator code').fill(second.code);
    await page.getByRole('button', { name: 'Verify' }).click();
  }
  await page.getByTestId('signed-in').waitFor(WAIT);
  const banner = await page.getByTestId('signed-in').innerText();
  if (!banner.includes(user.email)) problems.push(`signed-in banner: ${banner}`);
}

async function signOut(page) {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('button', { name: 'Sign in' }).waitFor(WAIT);
}

/** The examples pane, opened once the schema (the caller's) has loaded. */
async function showExamples(page, expected) {
  if (!(await page.locator('.sq-examples').isVisible())) {
    await page.getByRole('button', { name: /Examples/ }).first().click();
  }
  await page.getByRole('button', { name: expected, exact: true }).waitFor(WAIT);
}

async function examplesShown(page) {
  return page.locator('.sq-examples li button').allInnerTexts();
}

async function run(page, example) {
  await page.getByRole('button', { name: example, exact: true }).click();
  await page.locator('.graphiql-execute-button').click();
}

async function responseShows(page, text) {
  await page.locator('.graphiql-response').getByText(text, { exact: false }).first().waitFor(WAIT);
}

async function seenId(page, prefix) {
  const text = await page.getByTestId('seen-ids').innerText();
  return new RegExp(`${prefix}_[0-9a-f]{32}`).exec(text)?.[0];
}

try {
  // --- SENDER: the money flow up to the release -------------------------------------
  const money = await openPlayground('sender');
  const requests = [];
  money.on('request', (r) => {
    if (r.url().endsWith('/graphql') && r.method() === 'POST') requests.push(r.postData() ?? '');
  });
  // The next step's code (the server allows one step of skew): seeding the demo used
  // the code of the step it ran in, and codes are single-use.
  await signIn(money, sender, { code: totp(sender.totpSecret, Date.now() + 30000) });
  const signedInAt = Date.now();
  await showExamples(money, '1. Providers you have paid');
  const senderSees = await examplesShown(money);
  for (const hidden of ['Audit log', 'Users and their roles']) {
    if (senderSees.includes(hidden)) problems.push(`the SENDER is offered "${hidden}"`);
  }
  await run(money, '1. Providers you have paid');
  await responseShows(money, 'provider');
  const provider = await seenId(money, 'usr');
  if (!provider) problems.push('no provider id was kept from the answer');
  await run(money, '2. Create an escrow for the last one');
  await responseShows(money, 'DRAFT');
  const escrow = await seenId(money, 'esc');
  await run(money, '3. Fund it');
  await responseShows(money, 'FUNDED');

  // --- ADMIN without MFA ------------------------------------------------------------
  const page = await openPlayground('admin');
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
  await signIn(page, admin);

  // The token is in memory only.
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  if (/eyJ|sq_live_/.test(stored)) problems.push('a credential was written to web storage');

  // The examples its role may run, and not the SENDER's.
  await showExamples(page, 'Audit log');
  const adminSees = await examplesShown(page);
  // An ADMIN may fund an escrow but not create one: the flow is not offered in part.
  for (const hidden of ['2. Create an escrow for the last one', '3. Fund it']) {
    if (adminSees.includes(hidden)) problems.push(`the ADMIN is offered "${hidden}"`);
  }
  await run(page, 'Users and their roles');
  await responseShows(page, admin.email);

  // A subscription through /graphql/ws with the token in connection_init; every
  // event is kept in the history, not only the last.
  await run(page, 'Server clock (subscription)');
  await responseShows(page, 'serverTime');
  await page.getByRole('button', { name: /Subscription events/ }).first().click();
  await page.getByTestId('history-entry').nth(2).waitFor(WAIT);
  await page.locator('.graphiql-execute-button').click(); // stop it
  const clockEvents = await page.getByTestId('history-entry').count();

  // Back to the query for the picture.
  await showExamples(page, 'Users and their roles');
  await run(page, 'Users and their roles');
  await responseShows(page, admin.email);
  await page.screenshot({ path: screenshot });

  // Refreshed before it expires.
  const fresh = await Promise.race([
    refreshedPromise,
    new Promise((_, reject) => setTimeout(() => reject(new Error('no refresh within 30 s')), 30000)),
  ]);
  if (!fresh || fresh === accessToken) problems.push('the refresh did not bring a new token');

  // Sign-out revokes the session: its tokens stop working.
  await signOut(page);
  const after = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${fresh}` },
    body: JSON.stringify({ query: '{ viewer { id } }' }),
  }).then((r) => r.json());
  if (after.errors?.[0]?.extensions?.code !== 'UNAUTHENTICATED') {
    problems.push(`the token still works after sign-out: ${JSON.stringify(after)}`);
  }

  // MFA enrolment from the panel: the seed, a first code, recovery codes shown once.
  await signIn(page, admin);
  await page.getByRole('button', { name: 'MFA settings' }).click();
  await page.getByRole('button', { name: 'Set up an authenticator' }).click();
  const seed = (await page.getByTestId('mfa-secret').innerText()).trim();
  const qr = await page.getByRole('img', { name: /QR code/ }).getAttribute('src');
  if (!qr?.startsWith('data:image/svg+xml')) problems.push(`the QR code is not an SVG image: ${qr?.slice(0, 40)}`);
  await page.getByLabel('First code').fill(totp(seed, Date.now()));
  await page.getByRole('button', { name: 'Activate' }).click();
  await page.getByTestId('recovery-codes').waitFor(WAIT);
  const codes = await page.getByTestId('recovery-codes').locator('li').allInnerTexts();
  if (codes.length < 5) problems.push(`recovery codes shown: ${codes.length}`);
  await page.getByRole('button', { name: 'I have kept them' }).click();
  await signOut(page);
  // Its next sign-in asks for the second factor: one of the recovery codes.
  await signIn(page, admin, { recoveryCode: codes[0].trim() });
  await signOut(page);

  // The other ADMIN: the password, then the authenticator code.
  await signIn(page, secure, { code: totp(secure.totpSecret, Date.now() + 30000) });
  await signOut(page);

  // --- SENDER: the release, once the sign-in's second factor is no longer recent ----
  const wait = signedInAt + STEP_UP_WINDOW_MS - Date.now();
  if (wait > 0) await sleep(wait);
  const releasesBefore = requests.filter((b) => b.includes('releaseEscrow(')).length;
  await run(money, '4. Release it (asks for a step-up)');
  const dialog = money.getByRole('dialog', { name: 'Step-up' });
  await dialog.waitFor(WAIT);
  await dialog.getByLabel('Step-up code').fill(totp(sender.totpSecret, Date.now()));
  await dialog.getByRole('button', { name: 'Verify and run again' }).click();
  await responseShows(money, 'RELEASED');
  await dialog.waitFor({ state: 'detached', ...WAIT });
  const releases = requests.filter((b) => b.includes('releaseEscrow(')).length - releasesBefore;
  if (releases !== 2) problems.push(`the release was sent ${releases} times (refused, then again after the step-up)`);
  if (!requests.some((b) => b.includes('verifyStepUp('))) problems.push('no verifyStepUp was sent');
  const payment = await seenId(money, 'pay');
  if (!payment) problems.push('no payment id in the release answer');

  // Its payment, followed over the WebSocket until the simulated PSP settles it.
  await run(money, '5. Follow your payments (subscription)');
  await money.getByRole('button', { name: /Subscription events/ }).first().click();
  await money
    .getByTestId('history-entry')
    .filter({ hasText: payment ?? 'pay_' })
    .filter({ hasText: 'SETTLED' })
    .first()
    .waitFor({ timeout: 30000 });
  await money.screenshot({ path: screenshot.replace(/\.png$/, '-sender.png') });
  await money.locator('.graphiql-execute-button').click(); // stop it

  console.log(
    `playground: SENDER ${sender.email} created, funded and released escrow ${escrow} for ${provider} ` +
      `(MFA_REQUIRED, step-up dialog, run again), payment ${payment} seen SETTLED in the history; ` +
      `ADMIN ${admin.email} ran a query and a subscription (${clockEvents} events kept), token refreshed, ` +
      `signed out (session revoked), enrolled MFA from the panel, signed in with a recovery code; ` +
      `${secure.email} signed in with TOTP; screenshot ${screenshot}`,
  );
} catch (err) {
  problems.push(`step failed: ${err.message.split('\n').slice(0, 3).join(' | ')}`);
  for (const [who, page] of pages) {
    await page.screenshot({ path: screenshot.replace(/\.png$/, `-${who}-failure.png`) }).catch(() => {});
  }
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(`playground browser test failed:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
