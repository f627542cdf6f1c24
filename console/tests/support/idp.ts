// A stand-in OpenID Connect provider on loopback for the browser tests: discovery, JWKS (one
// P-256 key, ES256), an authorization endpoint with a tiny "choose who you are" page, and a
// token endpoint that checks the code, the redirect URI and the PKCE verifier (S256). It also
// mints tokens directly for tests (GET /test/token?user=...), as tollgate-test-issuer does for
// the Rust tests, but for every role (that binary prints only a customer token).
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const AUDIENCE = 'https://api.tollgate.test';
export const CLIENT_ID = 'tollgate-console-test';

/** The users the provider knows: role and customer claims as Tollgate reads them. */
export const USERS: Record<string, { role: string | string[]; customer?: string; email: string }> = {
  admin: { role: 'admin', email: 'admin@example.test' },
  reader: { role: 'read_only', email: 'reader@example.test' },
  acme: { role: 'customer', customer: 'acme', email: 'dev@acme.test' },
  globex: { role: 'customer', customer: 'globex', email: 'dev@globex.test' },
};

const b64u = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export interface Idp {
  issuer: string;
  token(user: string, extra?: Record<string, unknown>): string;
  close(): Promise<void>;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (c) => (s += c));
    req.on('end', () => resolve(s));
    req.on('error', reject);
  });
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export async function startIdp(): Promise<Idp> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'console-test-ec', use: 'sig', alg: 'ES256' };
  const codes = new Map<string, { user: string; challenge: string; redirect: string; client: string; nonce?: string; used: boolean }>();
  let issuer = '';

  const signJwt = (key: KeyObject, claims: Record<string, unknown>) => {
    const header = b64u(JSON.stringify({ alg: 'ES256', typ: 'JWT', kid: jwk.kid }));
    const payload = b64u(JSON.stringify(claims));
    const sig = sign('sha256', Buffer.from(`${header}.${payload}`), { key, dsaEncoding: 'ieee-p1363' });
    return `${header}.${payload}.${b64u(sig)}`;
  };
  const token = (user: string, extra: Record<string, unknown> = {}) => {
    const u = USERS[user];
    if (!u) throw new Error(`unknown test user ${user}`);
    const now = Math.floor(Date.now() / 1000);
    return signJwt(privateKey, {
      iss: issuer,
      aud: AUDIENCE,
      sub: `user-${user}`,
      email: u.email,
      iat: now,
      nbf: now,
      exp: now + 3600,
      tollgate_role: u.role,
      ...(u.customer ? { tollgate_customer_id: u.customer } : {}),
      ...extra,
    });
  };

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, {
      'content-type': typeof body === 'string' ? 'text/html; charset=utf-8' : 'application/json',
      'cache-control': 'no-store',
      ...headers,
    });
    res.end(text);
  };
  const cors = { 'access-control-allow-origin': '*', 'access-control-allow-headers': 'content-type, accept', 'access-control-allow-methods': 'GET, POST' };

  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', issuer);
    try {
      if (req.method === 'OPTIONS') return send(res, 204, '', cors);
      if (url.pathname === '/.well-known/openid-configuration') {
        return send(
          res,
          200,
          {
            issuer,
            authorization_endpoint: `${issuer}/authorize`,
            token_endpoint: `${issuer}/token`,
            jwks_uri: `${issuer}/jwks.json`,
            response_types_supported: ['code'],
            subject_types_supported: ['public'],
            id_token_signing_alg_values_supported: ['ES256'],
            code_challenge_methods_supported: ['S256'],
          },
          cors,
        );
      }
      if (url.pathname === '/jwks.json') return send(res, 200, { keys: [jwk] }, cors);
      if (url.pathname === '/test/token') return send(res, 200, { token: token(url.searchParams.get('user') ?? '') });
      if (url.pathname === '/authorize' && req.method === 'GET') {
        const q = url.searchParams;
        const problems: string[] = [];
        if (q.get('response_type') !== 'code') problems.push('response_type must be code');
        if (q.get('client_id') !== CLIENT_ID) problems.push('unknown client_id');
        if (q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge')) problems.push('PKCE S256 required');
        if (!q.get('state')) problems.push('state required');
        if (!(q.get('scope') ?? '').split(' ').includes('openid')) problems.push('scope must include openid');
        if (problems.length) return send(res, 400, `<!doctype html><title>Bad request</title><p>${esc(problems.join('; '))}</p>`);
        const hidden = [...q.entries()].map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`).join('');
        const choices = Object.keys(USERS)
          .map((u, i) => `<label><input type="radio" name="user" value="${u}" ${i === 0 ? 'checked' : ''}> ${u} (${esc(String(USERS[u].role))})</label><br>`)
          .join('');
        return send(
          res,
          200,
          `<!doctype html><html lang="en"><title>Test identity provider</title><h1>Test identity provider</h1><form method="post" action="/authorize">${hidden}<fieldset><legend>Sign in as</legend>${choices}</fieldset><button type="submit">Continue</button></form></html>`,
        );
      }
      if (url.pathname === '/authorize' && req.method === 'POST') {
        const f = new URLSearchParams(await readBody(req));
        const code = randomBytes(24).toString('base64url');
        codes.set(code, {
          user: f.get('user') ?? 'admin',
          challenge: f.get('code_challenge') ?? '',
          redirect: f.get('redirect_uri') ?? '',
          client: f.get('client_id') ?? '',
          nonce: f.get('nonce') ?? undefined,
          used: false,
        });
        const back = new URL(f.get('redirect_uri') ?? '');
        back.searchParams.set('code', code);
        back.searchParams.set('state', f.get('state') ?? '');
        res.writeHead(302, { location: back.href });
        return res.end();
      }
      if (url.pathname === '/token' && req.method === 'POST') {
        const f = new URLSearchParams(await readBody(req));
        const c = codes.get(f.get('code') ?? '');
        const bad = (why: string) => send(res, 400, { error: 'invalid_grant', error_description: why }, cors);
        if (f.get('grant_type') !== 'authorization_code') return bad('grant_type');
        if (!c || c.used) return bad('unknown or used code');
        c.used = true;
        if (f.get('client_id') !== c.client) return bad('client_id');
        if (f.get('redirect_uri') !== c.redirect) return bad('redirect_uri');
        const verifier = f.get('code_verifier') ?? '';
        if (createHash('sha256').update(verifier).digest('base64url') !== c.challenge) return bad('PKCE verifier');
        const id = token(c.user, { aud: [AUDIENCE, CLIENT_ID], nonce: c.nonce });
        return send(res, 200, { id_token: id, access_token: token(c.user), token_type: 'Bearer', expires_in: 3600 }, cors);
      }
      send(res, 404, { error: 'not_found' }, cors);
    } catch (e) {
      send(res, 500, { error: String(e) }, cors);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    issuer,
    token,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
