// Starts what the browser tests run against: the identity provider stand-in and the Tollgate
// local stack (TOLLGATE_BIN) trusting it and serving the console (built into the binary from
// console/dist) with the provider in /console/config.json, on a free loopback port with a
// random admin token and in-memory storage. Returns the teardown that stops them both.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { SCREENSHOTS, TOLLGATE_BIN } from './support/config';
import { AUDIENCE, CLIENT_ID, startIdp } from './support/idp';

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

async function waitHealthy(url: string, child: ChildProcess, log: () => string, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the local stack exited (${child.exitCode}):\n${log()}`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok && (await r.text()) === 'ok') return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the local stack did not answer /health within ${timeoutMs / 1000} s:\n${log()}`);
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((res) => {
    if (child.exitCode !== null || child.signalCode) return res();
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(t);
      res();
    });
    child.kill('SIGTERM');
  });
}

export default async function globalSetup() {
  if (!existsSync(TOLLGATE_BIN)) {
    throw new Error(
      `no local stack binary at ${TOLLGATE_BIN}: build it (cargo build -p tollgate-dev --bin tollgate) or set TOLLGATE_BIN`,
    );
  }
  mkdirSync(SCREENSHOTS, { recursive: true });
  const idp = await startIdp();
  const port = await freePort();
  const stackUrl = `http://127.0.0.1:${port}`;
  const adminToken = `tga_console_test_${randomBytes(16).toString('hex')}`;
  const consoleConfig = { oidc: { issuer: idp.issuer, client_id: CLIENT_ID, scope: 'openid email' }, role_claim: 'tollgate_role' };
  let log = '';
  const child = spawn(TOLLGATE_BIN, ['dev'], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      TOLLGATE_ADDR: `127.0.0.1:${port}`,
      TOLLGATE_ADMIN_TOKEN: adminToken,
      TOLLGATE_ROLLUP_INTERVAL_S: '0',
      TOLLGATE_JWT_ISSUER: idp.issuer,
      TOLLGATE_JWT_AUDIENCE: AUDIENCE,
      TOLLGATE_CONSOLE_CONFIG: JSON.stringify(consoleConfig),
      RUST_LOG: process.env.RUST_LOG ?? 'warn,dynoxide=error',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (b: Buffer) => {
    log = (log + b.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  try {
    await waitHealthy(stackUrl, child, () => log);
  } catch (e) {
    await stop(child);
    await idp.close();
    throw e;
  }

  // The console the tests drive is the one the stack serves: built, and told about the provider.
  const page = await fetch(`${stackUrl}/console/`);
  const cfg = await fetch(`${stackUrl}/console/config.json`).then((r) => (r.ok ? r.json() : null));
  if (!page.ok || cfg?.oidc?.issuer !== idp.issuer) {
    await stop(child);
    await idp.close();
    throw new Error(`the stack does not serve the console (${page.status}: ${await page.text()}): run npm run build, then rebuild ${TOLLGATE_BIN}`);
  }

  process.env.TG_STACK_URL = stackUrl;
  process.env.TG_ADMIN_TOKEN = adminToken;
  process.env.TG_IDP_URL = idp.issuer;

  return async () => {
    await stop(child);
    await idp.close();
  };
}
