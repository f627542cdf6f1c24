// Console configuration (/console/config.json, optional) and OpenID Connect sign-in:
// authorization code flow with PKCE (S256), state and nonce checked, public client (no secret).
import { jwtPayload } from './session';

export interface OidcConfig {
  issuer: string;
  client_id: string;
  scope?: string;
  /** Which token the API gets as the Bearer: the id_token (default) or the access_token. */
  use?: 'id_token' | 'access_token';
  /** Extra authorization request parameters, e.g. {"audience": "https://api.example"} (Auth0). */
  extra_params?: Record<string, string>;
  /** Where the provider sends the browser back; default: this page's /console/ URL. */
  redirect_uri?: string;
}

export interface ConsoleConfig {
  oidc?: OidcConfig;
  /** The JWT claim carrying the role (TOLLGATE_JWT_ROLE_CLAIM); default tollgate_role. */
  role_claim?: string;
}

export async function loadConfig(): Promise<ConsoleConfig> {
  try {
    const res = await fetch(`${import.meta.env.BASE_URL}config.json`, { cache: 'no-store', credentials: 'omit' });
    if (!res.ok) return {};
    const type = res.headers.get('content-type') ?? '';
    // An SPA fallback answering index.html for config.json means "no config".
    if (!type.includes('json')) return {};
    const cfg = (await res.json()) as ConsoleConfig;
    if (cfg.oidc && (typeof cfg.oidc.issuer !== 'string' || typeof cfg.oidc.client_id !== 'string')) {
      delete cfg.oidc;
    }
    return cfg && typeof cfg === 'object' ? cfg : {};
  } catch {
    return {};
  }
}

const FLOW_KEY = 'tollgate.console.oidc';

interface Flow {
  state: string;
  nonce: string;
  verifier: string;
  token_endpoint: string;
  redirect_uri: string;
  client_id: string;
  use: 'id_token' | 'access_token';
  return_hash: string;
}

function b64url(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function random(n = 32): string {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

function defaultRedirect(): string {
  return new URL(import.meta.env.BASE_URL, location.origin).href;
}

async function discover(issuer: string): Promise<{ authorization_endpoint: string; token_endpoint: string }> {
  const url = issuer.replace(/\/+$/, '') + '/.well-known/openid-configuration';
  let res: Response;
  try {
    res = await fetch(url, { credentials: 'omit' });
  } catch {
    throw new Error(`Could not reach the identity provider (${url}).`);
  }
  if (!res.ok) throw new Error(`The identity provider's discovery document answered ${res.status}.`);
  const doc = await res.json();
  if (typeof doc.authorization_endpoint !== 'string' || typeof doc.token_endpoint !== 'string') {
    throw new Error('The discovery document names no authorization or token endpoint.');
  }
  return doc;
}

/** Sends the browser to the identity provider. */
export async function startSignIn(cfg: OidcConfig): Promise<void> {
  const doc = await discover(cfg.issuer);
  const verifier = random(48);
  const challenge = b64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
  const flow: Flow = {
    state: random(),
    nonce: random(),
    verifier,
    token_endpoint: doc.token_endpoint,
    redirect_uri: cfg.redirect_uri ?? defaultRedirect(),
    client_id: cfg.client_id,
    use: cfg.use === 'access_token' ? 'access_token' : 'id_token',
    return_hash: location.hash,
  };
  sessionStorage.setItem(FLOW_KEY, JSON.stringify(flow));
  const url = new URL(doc.authorization_endpoint);
  const params: Record<string, string> = {
    ...cfg.extra_params,
    response_type: 'code',
    client_id: cfg.client_id,
    redirect_uri: flow.redirect_uri,
    scope: cfg.scope ?? 'openid',
    state: flow.state,
    nonce: flow.nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  location.assign(url.href);
}

/** Whether this page load is the provider sending the browser back. */
export function isCallback(): boolean {
  const q = new URLSearchParams(location.search);
  return (q.has('code') || q.has('error')) && q.has('state');
}

/**
 * Completes the flow on the redirect back: checks the state, exchanges the code (with the PKCE
 * verifier) and returns the bearer token. Removes the code from the address bar either way.
 */
export async function completeSignIn(): Promise<{ token: string; returnHash: string }> {
  const q = new URLSearchParams(location.search);
  const raw = sessionStorage.getItem(FLOW_KEY);
  sessionStorage.removeItem(FLOW_KEY);
  history.replaceState(null, '', location.pathname + location.hash);
  const flow: Flow | null = raw ? JSON.parse(raw) : null;
  if (!flow || q.get('state') !== flow.state) {
    throw new Error('The sign-in answer does not match a sign-in started here (state mismatch). Try again.');
  }
  if (q.has('error')) {
    throw new Error(`The identity provider refused: ${q.get('error')}${q.get('error_description') ? ` (${q.get('error_description')})` : ''}`);
  }
  const body = new URLSearchParams({
    grant_type: 'authorization_code',
    code: q.get('code') ?? '',
    redirect_uri: flow.redirect_uri,
    client_id: flow.client_id,
    code_verifier: flow.verifier,
  });
  let res: Response;
  try {
    res = await fetch(flow.token_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body,
      credentials: 'omit',
    });
  } catch {
    throw new Error('Could not reach the identity provider\'s token endpoint.');
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw new Error(`The token endpoint answered ${res.status}${data.error ? `: ${data.error}` : ''}.`);
  }
  const token = flow.use === 'access_token' ? data.access_token : data.id_token;
  if (typeof token !== 'string' || !token) throw new Error(`The token endpoint returned no ${flow.use}.`);
  if (data.id_token) {
    const claims = jwtPayload(data.id_token);
    if (!claims || claims.nonce !== flow.nonce) {
      throw new Error('The ID token was not issued for this sign-in (nonce mismatch).');
    }
  }
  return { token, returnHash: flow.return_hash };
}
