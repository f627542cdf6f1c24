// The signed-in session: the bearer token (sessionStorage only: gone when the tab closes) and
// the role the console worked out for it. The server enforces roles; the console only uses them
// to decide what to show.

export type Role = 'admin' | 'read_only' | 'customer';

export interface Session {
  token: string;
  role: Role;
  /** The customer a `customer` session acts as (from GET /v1/me). */
  customerId?: string;
  /** A label for the header: the JWT's subject or email, or "admin token". */
  who: string;
  /** Seconds since the epoch when the JWT expires, if it says. */
  exp?: number;
}

const KEY = 'tollgate.console.session';

export function loadSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as Session;
    return s && typeof s.token === 'string' && s.role ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(s: Session): void {
  sessionStorage.setItem(KEY, JSON.stringify(s));
}

export function clearSession(): void {
  sessionStorage.removeItem(KEY);
}

/** The token the API calls carry: the stored session's, or one being tried at sign-in. */
let pending: string | null = null;
export function getToken(): string | null {
  return pending ?? loadSession()?.token ?? null;
}
export function withPendingToken<T>(token: string, f: () => Promise<T>): Promise<T> {
  pending = token;
  return f().finally(() => {
    pending = null;
  });
}

/** The payload of a JWT (not verified: the server verifies; this only reads claims). */
export function jwtPayload(token: string): Record<string, unknown> | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const json = JSON.parse(new TextDecoder().decode(bytes));
    return json && typeof json === 'object' && !Array.isArray(json) ? json : null;
  } catch {
    return null;
  }
}

/**
 * The most capable role a claim value names (a string or a list, as the server reads it), or
 * null if it names none the console knows.
 */
export function roleFromClaim(value: unknown): Role | null {
  const names = Array.isArray(value) ? value : [value];
  const known = names.filter((v): v is string => typeof v === 'string');
  if (known.includes('admin')) return 'admin';
  if (known.includes('read_only')) return 'read_only';
  if (known.includes('customer')) return 'customer';
  return null;
}
