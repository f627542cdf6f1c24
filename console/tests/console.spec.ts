// The console in Chromium against a real local stack (global-setup.ts). The scenarios run in
// order and build on each other: a plan, keys on it, traffic, a rollup, then other roles.
import { expect, test, type Page } from '@playwright/test';
import { env } from './support/config';
import { WRITE_BUTTONS, admin, consoleUrl, mint, proxied, rollup, shot, signInWithToken } from './support/helpers';

test.describe.configure({ mode: 'serial' });

const PLAN = 'console-test';
const CUSTOMER = 'acme';
const OTHER = 'globex';
/** The key created in the browser (its plaintext lives only in this process, never logged). */
let created: { id: string; secret: string } | null = null;

async function signInAdmin(page: Page) {
  await signInWithToken(page, env().adminToken, 'admin');
}

test('a wrong token is refused with the API error', async ({ page }) => {
  await page.goto(consoleUrl());
  await expect(page.getByRole('heading', { name: 'Tollgate console' })).toBeVisible();
  await shot(page, '01-sign-in');
  await page.getByLabel('Admin token or JWT').fill('tga_not_the_token');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  const alert = page.getByRole('alert');
  await expect(alert).toContainText('Your sign-in is not valid any more');
  await expect(alert).toContainText('unauthorized');
  await shot(page, '02-sign-in-refused');
});

test('admin signs in, the session survives a reload, and signs out', async ({ page }) => {
  await signInAdmin(page);
  await expect(page.getByRole('heading', { name: 'Overview', level: 1 })).toBeVisible();
  await page.reload();
  await expect(page.getByTestId('role')).toHaveText('admin');
  await expect(page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Plans' })).toBeVisible();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page.getByLabel('Admin token or JWT')).toBeVisible();
  expect(await page.evaluate(() => JSON.stringify(sessionStorage))).not.toContain(env().adminToken);
});

test('the overview draws the documented GET /v1/stats shape (a canned answer)', async ({ page }) => {
  // The browser's request is answered here with the shape the server is adding, so the page is
  // checked whatever the server has; the real endpoint is exercised by the last test.
  const day = (n: number) => new Date(Date.now() - n * 86400000).toISOString().slice(0, 10);
  const days = Array.from({ length: 30 }, (_, i) => {
    const allowed = 40 + ((i * 37) % 60);
    const rl = i % 3 === 0 ? 5 + (i % 7) : 0;
    const q = i > 25 ? 4 : 0;
    return { day: day(29 - i), allowed, denied: rl + q, denied_by_code: { rate_limited: rl, quota_exceeded: q } };
  });
  const stats = {
    day: day(0),
    days,
    top_keys: [{ key_id: 'key_01M95CXHNR3A39YDS1CTM5VMM6', customer_id: 'acme', allowed: 120 }],
    top_customers: [
      { customer_id: 'acme', allowed: 300 },
      { customer_id: 'globex', allowed: 12 },
    ],
    near_quota: [{ key_id: 'key_01M95CXHNR3A39YDS1CTM5VMM6', customer_id: 'acme', used: 900, limit: 1000, period: 'day', reset: `${day(-1)}T00:00:00Z` }],
  };
  await page.route('**/v1/stats?*', (route) => route.fulfill({ json: stats, headers: { 'x-request-id': 'canned' } }));
  await signInAdmin(page);
  const sum = (f: (d: (typeof days)[number]) => number) => days.reduce((n, d) => n + f(d), 0);
  await expect(page.getByTestId('total-allowed')).toHaveText(sum((d) => d.allowed).toLocaleString('en-US'));
  await expect(page.getByTestId('total-rate_limited')).toHaveText(String(sum((d) => d.denied_by_code.rate_limited)));
  await expect(page.getByTestId('total-quota_exceeded')).toHaveText(String(sum((d) => d.denied_by_code.quota_exceeded)));
  await expect(page.getByTestId('requests-chart').locator('canvas')).toBeVisible();
  await expect(page.getByRole('region', { name: /Top customers/ })).toContainText('globex');
  await expect(page.getByRole('region', { name: 'Keys near their quota' })).toContainText('900 / 1,000 a day');
  await page.getByText('Table').click();
  await expect(page.getByTestId('requests-table').locator('tbody tr')).toHaveCount(30);
  await shot(page, '09-overview-canned');
  // And the errors: a 429 from the API is shown as such, with its code and request id.
  await page.unroute('**/v1/stats?*');
  await page.route('**/v1/stats?*', (route) =>
    route.fulfill({
      status: 429,
      headers: { 'retry-after': '7' },
      json: { error: { code: 'too_many_attempts', message: 'slow down' }, request_id: 'req-429' },
    }),
  );
  await page.getByRole('button', { name: 'Refresh' }).click();
  const alert = page.getByRole('alert');
  await expect(alert).toContainText('Too many requests');
  await expect(alert).toContainText('too_many_attempts');
  await expect(alert).toContainText('Retry in 7 s');
  await expect(alert).toContainText('req-429');
});

test('admin creates a plan', async ({ page }) => {
  await signInAdmin(page);
  await page.getByRole('link', { name: 'Plans' }).click();
  await expect(page.getByRole('heading', { name: 'Plans', level: 1 })).toBeVisible();
  await page.getByRole('button', { name: 'New plan' }).click();
  const dialog = page.getByRole('dialog', { name: 'New plan' });
  await dialog.getByLabel('Plan id').fill(PLAN);
  await dialog.getByLabel('Name', { exact: true }).fill('Console test');
  await dialog.getByLabel('Rate limit (requests)').fill('3');
  await dialog.getByLabel('Rate limit window (seconds)').fill('60');
  await dialog.getByLabel('Quota (requests)').fill('1000');
  await dialog.getByLabel('Quota period').selectOption('day');
  await shot(page, '03-plan-form');
  await dialog.getByRole('button', { name: 'Create plan' }).click();
  await expect(dialog).toBeHidden();
  const row = page.locator(`tr[data-plan-id="${PLAN}"]`);
  await expect(row).toContainText('Console test');
  await expect(row).toContainText('3 per 60 s, 1,000 a day');
  // The same id again: the API's 409, shown in the form.
  await page.getByRole('button', { name: 'New plan' }).click();
  await dialog.getByLabel('Plan id').fill(PLAN);
  await dialog.getByLabel('Name', { exact: true }).fill('Again');
  await dialog.getByRole('button', { name: 'Create plan' }).click();
  await expect(dialog.getByRole('alert')).toContainText('conflict');
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await shot(page, '04-plans');
});

test('admin creates a key: the plaintext is shown once, with a copy button', async ({ page, context }) => {
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: env().consoleOrigin });
  await signInAdmin(page);
  await page.getByRole('link', { name: 'Keys' }).click();
  await page.getByRole('button', { name: 'New key' }).click();
  const form = page.getByRole('form', { name: 'Create a key' });
  await form.getByLabel('Customer id').fill(CUSTOMER);
  await form.getByLabel('Plan').selectOption(PLAN);
  await form.getByLabel('Name').fill('acme prod');
  await form.getByRole('button', { name: 'Create key' }).click();

  const dialog = page.getByRole('dialog', { name: 'Key created' });
  await expect(dialog).toBeVisible();
  await expect(dialog.getByRole('note')).toContainText('shown this once');
  const secret = await dialog.getByLabel(/API key for key_/).inputValue();
  expect(secret).toMatch(/^tg_(live|test)_[0-9A-Za-z]{49}$/);
  const label = await dialog.locator('label[for="secret-value"]').textContent();
  const id = /key_[0-9A-Z]{26}/.exec(label ?? '')![0];
  created = { id, secret };
  await dialog.getByRole('button', { name: 'Copy' }).click();
  await expect(dialog.getByRole('status')).toHaveText('Copied to the clipboard.');
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(secret);
  await shot(page, '05-key-created');
  await dialog.getByRole('button', { name: 'I have saved the key' }).click();
  await expect(dialog).toBeHidden();

  // Gone for good: not in the page, not in storage; the list shows only the display form.
  const row = page.locator(`tr[data-key-id="${id}"]`);
  await expect(row).toContainText('acme prod');
  await expect(row).toContainText(`tg_${secret.split('_')[1]}_...${secret.slice(-4)}`);
  expect(await page.content()).not.toContain(secret);
  expect(await page.evaluate(() => JSON.stringify(sessionStorage) + JSON.stringify(localStorage))).not.toContain(secret);
  await page.reload();
  await expect(page.locator(`tr[data-key-id="${id}"]`)).toBeVisible();
  expect(await page.content()).not.toContain(secret);
  await shot(page, '06-keys');
});

test('key filters and cursor paging', async ({ page }) => {
  // 27 more keys for another customer: two pages of 25.
  for (let i = 0; i < 27; i++) {
    const r = await admin('POST', '/v1/keys', { customer_id: OTHER, plan_id: PLAN, name: `globex ${i}` });
    expect(r.status).toBe(201);
  }
  await signInAdmin(page);
  await page.goto(consoleUrl(`#/keys?customer=${OTHER}`));
  await expect(page.getByLabel('Customer', { exact: true })).toHaveValue(OTHER);
  await expect(page.locator('tbody tr[data-key-id]')).toHaveCount(25);
  await expect(page.getByText('page 1')).toBeVisible();
  await page.getByRole('button', { name: 'Next page' }).click();
  await expect(page.getByText('page 2')).toBeVisible();
  await expect(page.locator('tbody tr[data-key-id]')).toHaveCount(2);
  await page.getByRole('button', { name: 'Previous page' }).click();
  await expect(page.locator('tbody tr[data-key-id]')).toHaveCount(25);
  // Status filter: no revoked keys for globex yet.
  await page.getByLabel('Status').selectOption('revoked');
  await expect(page).toHaveURL(/status=revoked/);
  await expect(page.getByText('No keys')).toBeVisible();
  await shot(page, '07-keys-filtered');
});

test('traffic beyond the rate limit, a rollup, and the customer page shows it', async ({ page }) => {
  expect(created).not.toBeNull();
  const statuses: number[] = [];
  for (let i = 0; i < 5; i++) statuses.push(await proxied(created!.secret));
  expect(statuses).toEqual([200, 200, 200, 429, 429]);
  // The second 429 may be answered from the authorizer's memory: the stack's sweep counts it
  // within 2 s, so rollups soon show both denials, exactly.
  const usage = async () => (await admin('GET', `/v1/customers/${CUSTOMER}/usage`)).body;
  const total = (body: any, f: string) => body.history.reduce((n: number, r: any) => n + r[f], 0);
  await expect
    .poll(async () => {
      await rollup();
      const body = await usage();
      return [total(body, 'allowed'), total(body, 'denied')];
    }, { timeout: 10_000 })
    .toEqual([3, 2]);

  await signInAdmin(page);
  await page.goto(consoleUrl(`#/customers/${CUSTOMER}`));
  await expect(page.getByRole('heading', { name: `Customer ${CUSTOMER}` })).toBeVisible();
  const keyRow = page.getByRole('region', { name: `Keys of ${CUSTOMER}` }).locator(`tr[data-key-id="${created!.id}"]`);
  await expect(keyRow).toBeVisible();
  // The requests it made show as its last use (the listing carries last_used_at).
  await expect(keyRow).not.toContainText('never');
  const listed = await admin('GET', `/v1/keys?customer_id=${CUSTOMER}`);
  expect(listed.body.items.find((k: any) => k.key_id === created!.id).last_used_at).toMatch(/^\d{4}-\d\d-\d\dT/);
  // The page shows what clients saw: 3 allowed, 2 denied.
  await expect(page.getByTestId('usage-allowed')).toHaveText('3');
  await expect(page.getByTestId('usage-denied')).toHaveText('2');
  await expect(page.getByTestId('customer-usage-chart').locator('canvas')).toBeVisible();
  await shot(page, '08-customer');
});

test('a plan that keys use cannot be deleted: the 409 is shown', async ({ page }) => {
  await signInAdmin(page);
  await page.goto(consoleUrl('#/plans'));
  await page.locator(`tr[data-plan-id="${PLAN}"]`).getByRole('button', { name: /^Delete/ }).click();
  const dialog = page.getByRole('dialog', { name: 'Delete plan' });
  await dialog.getByRole('button', { name: 'Delete plan' }).click();
  await expect(dialog.getByRole('alert')).toContainText('Conflict');
  await expect(dialog.getByRole('alert')).toContainText('conflict');
  await shot(page, '10-plan-delete-conflict');
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await expect(page.locator(`tr[data-plan-id="${PLAN}"]`)).toBeVisible();
});

test('rotate, disable and enable a key', async ({ page }) => {
  await signInAdmin(page);
  await page.goto(consoleUrl(`#/keys?customer=${CUSTOMER}`));
  const row = page.locator(`tr[data-key-id="${created!.id}"]`);
  await row.getByRole('button', { name: /^Rotate/ }).click();
  const dialog = page.getByRole('dialog', { name: 'Rotate key' });
  await dialog.getByLabel('Grace period (seconds)').fill('60');
  await dialog.getByRole('button', { name: 'Rotate key' }).click();
  const secretDialog = page.getByRole('dialog', { name: 'New secret for the rotated key' });
  const fresh = await secretDialog.getByLabel(/API key for/).inputValue();
  expect(fresh).toMatch(/^tg_(live|test)_/);
  expect(fresh).not.toBe(created!.secret);
  await shot(page, '11-key-rotated');
  await secretDialog.getByRole('button', { name: 'I have saved the key' }).click();
  await expect(row).toContainText('previous secret valid until');
  created = { id: created!.id, secret: fresh };

  await row.getByRole('button', { name: /^Disable/ }).click();
  await expect(row.getByText('disabled', { exact: true })).toBeVisible();
  expect(await proxied(fresh)).toBe(403);
  await row.getByRole('button', { name: /^Enable/ }).click();
  await expect(row.getByText('active', { exact: true })).toBeVisible();
});

test('revoke a key, with a confirmation', async ({ page }) => {
  await signInAdmin(page);
  await page.goto(consoleUrl(`#/keys?customer=${CUSTOMER}`));
  const row = page.locator(`tr[data-key-id="${created!.id}"]`);
  await row.getByRole('button', { name: /^Revoke/ }).click();
  const dialog = page.getByRole('dialog', { name: 'Revoke key' });
  await expect(dialog).toContainText('cannot be undone');
  await shot(page, '12-revoke-confirm');
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await expect(dialog).toBeHidden();
  await expect(row.getByText('active', { exact: true })).toBeVisible();

  await row.getByRole('button', { name: /^Revoke/ }).click();
  await dialog.getByRole('button', { name: 'Revoke key' }).click();
  await expect(dialog).toBeHidden();
  await expect(row.getByText('revoked', { exact: true }).first()).toBeVisible();
  await expect(row.getByRole('button')).toHaveCount(0);
  expect(await proxied(created!.secret)).toBe(401);
  await shot(page, '13-key-revoked');
});

test('a read-only session sees no button that writes', async ({ page }) => {
  await signInWithToken(page, await mint('reader'), 'read only');
  const pages: [string, string, string][] = [
    ['', 'Overview', '14-read-only-overview'],
    ['#/plans', 'Plans', '15-read-only-plans'],
    [`#/keys?customer=${OTHER}`, 'Keys', '16-read-only-keys'],
    [`#/customers/${CUSTOMER}`, `Customer ${CUSTOMER}`, '17-read-only-customer'],
  ];
  for (const [hash, heading, name] of pages) {
    await page.goto(consoleUrl(hash));
    await expect(page.getByRole('heading', { name: heading, level: 1 })).toBeVisible();
    await expect(page.getByRole('status')).toHaveCount(0);
    if (hash.startsWith('#/keys') || hash.startsWith('#/customers')) await expect(page.locator('tr[data-key-id]').first()).toBeVisible();
    if (hash === '#/plans') await expect(page.locator(`tr[data-plan-id="${PLAN}"]`)).toBeVisible();
    await expect(page.getByRole('button', { name: WRITE_BUTTONS })).toHaveCount(0);
    await shot(page, name);
  }
});

test('a customer session sees only its own keys and cannot open another customer', async ({ page }) => {
  // A live key for acme (the browser-made one is revoked by now), and globex's keys exist.
  const mine = await admin('POST', '/v1/keys', { customer_id: CUSTOMER, plan_id: PLAN, name: 'acme ci' });
  expect(mine.status).toBe(201);
  const theirs = await admin('GET', `/v1/keys?customer_id=${OTHER}&limit=1`);
  const theirId: string = theirs.body.items[0].key_id;

  const token = await mint(CUSTOMER);
  await signInWithToken(page, token, 'customer');
  await expect(page.getByRole('heading', { name: 'Your API keys' })).toBeVisible();
  await expect(page.locator(`tr[data-key-id="${mine.body.key_id}"]`)).toBeVisible();
  await expect(page.locator(`tr[data-key-id="${created!.id}"]`)).toBeVisible();
  expect(await page.content()).not.toContain(theirId);
  expect(await page.content()).not.toContain(OTHER);
  // No operator navigation.
  const nav = page.getByRole('navigation', { name: 'Main' });
  await expect(nav.getByRole('link')).toHaveText(['Your keys']);
  await shot(page, '18-customer-portal');

  // Another customer's page is not offered, and the API refuses it anyway.
  await page.goto(consoleUrl(`#/customers/${OTHER}`));
  await expect(page.getByRole('alert')).toContainText('Not allowed for your role');
  expect(await page.content()).not.toContain(theirId);
  await shot(page, '19-customer-forbidden');
  const asCustomer = (path: string) => fetch(`${env().stack}${path}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
  expect(await asCustomer(`/v1/customers/${OTHER}`)).toBe(403);
  expect(await asCustomer(`/v1/me/keys/${theirId}`)).toBe(404);

  // Its own key: disable and enable it again.
  await page.goto(consoleUrl());
  // A customer with no plan (none bought through Stripe) cannot make keys: the API's 409 shows.
  await page.getByRole('button', { name: 'New key' }).click();
  await page.getByRole('form', { name: 'Create a key' }).getByRole('button', { name: 'Create key' }).click();
  await expect(page.getByRole('form', { name: 'Create a key' }).getByRole('alert')).toContainText('no_plan');
  await page.getByRole('button', { name: 'Cancel' }).click();
  const row = page.locator(`tr[data-key-id="${mine.body.key_id}"]`);
  await row.getByRole('button', { name: /^Disable/ }).click();
  await expect(row.getByText('disabled', { exact: true })).toBeVisible();
  await row.getByRole('button', { name: /^Enable/ }).click();
  await expect(row.getByText('active', { exact: true })).toBeVisible();
});

test('OpenID Connect sign-in: authorization code with PKCE', async ({ page }) => {
  await page.goto(consoleUrl('#/plans'));
  const host = new URL(env().idp).host;
  await page.getByRole('button', { name: `Sign in with ${host}` }).click();
  await expect(page.getByRole('heading', { name: 'Test identity provider' })).toBeVisible();
  await page.getByRole('radio', { name: /^reader/ }).check();
  await page.getByRole('button', { name: 'Continue' }).click();
  await expect(page.getByTestId('role')).toHaveText('read only');
  // Back where the sign-in started, with the code gone from the address bar.
  await expect(page.getByRole('heading', { name: 'Plans', level: 1 })).toBeVisible();
  expect(page.url()).not.toContain('code=');
  await shot(page, '20-oidc-signed-in');
  await page.getByRole('button', { name: 'Sign out' }).click();

  // An answer that no sign-in here started is refused.
  await page.goto(`${env().consoleOrigin}/console/?code=forged&state=forged`);
  await expect(page.getByRole('alert')).toContainText('state mismatch');
  await expect(page.getByLabel('Admin token or JWT')).toBeVisible();
});

test('the overview charts requests and denials by code, and a rollup moves them', async ({ page }) => {
  await signInAdmin(page);
  await expect(page.getByRole('heading', { name: 'Overview', level: 1 })).toBeVisible();
  await expect(page.getByRole('status')).toHaveCount(0);
  await shot(page, '21-overview');
  // Everything so far: 3 allowed (acme's first key) and its 2 rate-limited requests.
  await expect(page.getByTestId('total-allowed')).toHaveText('3');
  await expect(page.getByTestId('total-rate_limited')).toHaveText('2');
  await expect(page.getByTestId('requests-chart').locator('canvas')).toBeVisible();
  await expect(page.getByRole('region', { name: /Top customers/ })).toContainText(CUSTOMER);
  // More traffic on a fresh key (its own rate-limit window): 3 allowed, then denied.
  const k = await admin('POST', '/v1/keys', { customer_id: CUSTOMER, plan_id: PLAN, name: 'overview' });
  expect(k.status).toBe(201);
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++) statuses.push(await proxied(k.body.key));
  expect(statuses).toEqual([200, 200, 200, 429]);
  await rollup();
  await page.getByRole('button', { name: 'Refresh' }).click();
  await expect(page.getByTestId('total-allowed')).toHaveText('6');
  await expect(page.getByTestId('total-rate_limited')).toHaveText('3');
  await shot(page, '22-overview-after-traffic');
});

test('no page logs an error to the browser console, signed out or signed in', async ({ page }) => {
  const errors: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`${page.url()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => errors.push(`${page.url()}: ${err.message}`));
  const pages = ['', '#/overview', '#/plans', '#/keys', '#/customers', `#/customers/${CUSTOMER}`];
  // Signed out: every address shows the sign-in (and fetches the console's configuration).
  for (const hash of pages) {
    await page.goto(consoleUrl(hash));
    await expect(page.getByLabel('Admin token or JWT')).toBeVisible();
  }
  await signInAdmin(page);
  for (const hash of pages) {
    await page.goto(consoleUrl(hash));
    await expect(page.getByTestId('role')).toHaveText('admin');
    await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
    await expect(page.getByRole('status')).toHaveCount(0);
  }
  expect(errors).toEqual([]);
});
