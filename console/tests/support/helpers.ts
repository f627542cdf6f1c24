import { expect, type Locator, type Page } from '@playwright/test';
import { join } from 'node:path';
import { SCREENSHOTS, env } from './config';

export const consoleUrl = (hash = '') => `${env().consoleOrigin}/console/${hash}`;

/** A full-page screenshot under target/console-screenshots/, with secrets masked. */
export async function shot(page: Page, name: string, mask: Locator[] = []) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true, mask: [page.locator('#secret-value'), ...mask] });
}

/** A token for one of the identity provider stand-in's users (admin, reader, acme, globex). */
export async function mint(user: string): Promise<string> {
  const r = await fetch(`${env().idp}/test/token?user=${encodeURIComponent(user)}`);
  if (!r.ok) throw new Error(`minting a token for ${user}: ${r.status}`);
  return (await r.json()).token;
}

/** A management API call as the admin, straight to the stack. */
export async function admin(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await fetch(`${env().stack}${path}`, {
    method,
    headers: { authorization: `Bearer ${env().adminToken}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** One request through the gateway emulation with an API key; its status. */
export async function proxied(key: string, path = '/proxy/anything'): Promise<number> {
  const r = await fetch(`${env().stack}${path}`, { headers: { 'x-api-key': key } });
  await r.arrayBuffer();
  return r.status;
}

/** The usage rollup, now. */
export async function rollup(): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const r = await admin('POST', '/internal/rollup');
    if (r.status === 200) return;
    if (r.status !== 409) throw new Error(`rollup: ${r.status} ${JSON.stringify(r.body)}`);
    await new Promise((res) => setTimeout(res, 500));
  }
  throw new Error('rollup: still in progress after 10 s');
}

export async function signInWithToken(page: Page, token: string, expectRole: 'admin' | 'read only' | 'customer') {
  await page.goto(consoleUrl());
  await page.getByLabel('Admin token or JWT').fill(token);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await expect(page.getByTestId('role')).toHaveText(expectRole);
}

/** Buttons that would write, by their names; a read-only session must have none. */
export const WRITE_BUTTONS = /^(New plan|New key|Create|Edit|Save|Delete|Rotate|Disable|Enable|Revoke)/i;
