// The fetch wrapper for the management API, typed by the types generated from
// docs/openapi.yaml (src/api-types.ts, `npm run gen-types`). Same origin as the console.
import type { components, operations } from './api-types';
import { getToken } from './session';

export type Schemas = components['schemas'];
export type Plan = Schemas['Plan'];
export type PlanCreateInput = Schemas['PlanCreateInput'];
export type PlanReplaceInput = Schemas['PlanReplaceInput'];
/** A key; `last_used_at` is absent in listings (the server's indexes do not carry it). */
export type Key = Schemas['Key'];
/**
 * The generator drops `properties` that sit beside a `$ref` (IssuedKey = KeyFields + key), so
 * the plaintext field is added here, as the spec's IssuedKey schema declares it.
 */
export type IssuedKey = Schemas['IssuedKey'] & { key: string };
export type KeyList = Schemas['KeyList'];
export type KeyStatus = Schemas['KeyStatus'];
export type Customer = Schemas['Customer'];
export type CustomerUsage = Schemas['CustomerUsage'];
export type MyUsage = Schemas['MyUsage'];
export type Me = Schemas['Me'];
export type ApiErrorBody = Schemas['Error'];
export type Stats = Schemas['Stats'];
export type DenialCode = keyof Schemas['DeniedByCode'];
/** Every code the spec names, in the order the authorizer checks them. */
export const DENIAL_CODES = [
  'key_expired',
  'key_revoked',
  'key_disabled',
  'subscription_inactive',
  'insufficient_scope',
  'rate_limited',
  'quota_exceeded',
] as const satisfies readonly DenialCode[];

type Json<R> = R extends { content: { 'application/json': infer T } } ? T : void;
type Ok<Op> = Op extends { responses: infer R }
  ? 200 extends keyof R
    ? Json<R[200]>
    : 201 extends keyof R
      ? Json<R[201]>
      : void
  : never;
type Query<Op> = Op extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;
type Body<Op> = Op extends { requestBody?: { content: { 'application/json': infer B } } } ? B : never;

/** An answer other than 2xx, or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId?: string,
    readonly field?: string,
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}

type Opts = { query?: Record<string, string | number | undefined | null>; body?: unknown; signal?: AbortSignal; headers?: Record<string, string> };

async function call<T>(method: string, path: string, opts: Opts = {}): Promise<T> {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(opts.query ?? {})) {
    if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
  }
  const url = path + (qs.size ? `?${qs}` : '');
  const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
  const token = getToken();
  if (token) headers.authorization = `Bearer ${token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      signal: opts.signal,
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new ApiError(0, 'network_error', 'The server could not be reached.');
  }
  const requestId = res.headers.get('x-request-id') ?? undefined;
  const text = await res.text();
  let data: unknown = undefined;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
  }
  if (!res.ok) {
    const err = (data as Partial<ApiErrorBody> | undefined)?.error;
    const retry = err?.retry_after ?? (Number(res.headers.get('retry-after')) || undefined);
    throw new ApiError(
      res.status,
      err?.code ?? `http_${res.status}`,
      err?.message ?? (res.statusText || `HTTP ${res.status}`),
      (data as Partial<ApiErrorBody> | undefined)?.request_id ?? requestId,
      err?.field,
      retry,
    );
  }
  return data as T;
}

const enc = encodeURIComponent;
type Op = operations;

export const api = {
  listPlans: () => call<Ok<Op['listPlans']>>('GET', '/v1/plans'),
  createPlan: (body: Body<Op['createPlan']>) => call<Ok<Op['createPlan']>>('POST', '/v1/plans', { body }),
  replacePlan: (id: string, body: Body<Op['replacePlan']>) =>
    call<Ok<Op['replacePlan']>>('PUT', `/v1/plans/${enc(id)}`, { body }),
  deletePlan: (id: string) => call<void>('DELETE', `/v1/plans/${enc(id)}`),

  listKeys: (query: Query<Op['listKeys']>, signal?: AbortSignal) =>
    call<Ok<Op['listKeys']>>('GET', '/v1/keys', { query, signal }),
  createKey: (body: Body<Op['createKey']>, idempotencyKey?: string) =>
    call<IssuedKey>('POST', '/v1/keys', {
      body,
      headers: idempotencyKey ? { 'idempotency-key': idempotencyKey } : undefined,
    }),
  updateKey: (id: string, body: Body<Op['updateKey']>) => call<Key>('PATCH', `/v1/keys/${enc(id)}`, { body }),
  rotateKey: (id: string, body: Body<Op['rotateKey']>) => call<IssuedKey>('POST', `/v1/keys/${enc(id)}/rotate`, { body }),
  revokeKey: (id: string) => call<Key>('POST', `/v1/keys/${enc(id)}/revoke`, { body: {} }),

  getCustomer: (id: string, signal?: AbortSignal) =>
    call<Ok<Op['getCustomer']>>('GET', `/v1/customers/${enc(id)}`, { signal }),
  getCustomerUsage: (id: string, days: number, signal?: AbortSignal) =>
    call<Ok<Op['getCustomerUsage']>>('GET', `/v1/customers/${enc(id)}/usage`, { query: { days }, signal }),

  getStats: (days: number, signal?: AbortSignal) =>
    call<Ok<Op['getStats']>>('GET', '/v1/stats', { query: { days }, signal }),

  getMe: (signal?: AbortSignal) => call<Ok<Op['getMe']>>('GET', '/v1/me', { signal }),
  listMyKeys: (query: Query<Op['listMyKeys']>, signal?: AbortSignal) =>
    call<Ok<Op['listMyKeys']>>('GET', '/v1/me/keys', { query, signal }),
  createMyKey: (body: Body<Op['createMyKey']>, idempotencyKey?: string) =>
    call<IssuedKey>('POST', '/v1/me/keys', {
      body,
      headers: idempotencyKey ? { 'idempotency-key': idempotencyKey } : undefined,
    }),
  updateMyKey: (id: string, body: Body<Op['updateMyKey']>) => call<Key>('PATCH', `/v1/me/keys/${enc(id)}`, { body }),
  rotateMyKey: (id: string, body: Body<Op['rotateMyKey']>) =>
    call<IssuedKey>('POST', `/v1/me/keys/${enc(id)}/rotate`, { body }),
  revokeMyKey: (id: string) => call<Key>('POST', `/v1/me/keys/${enc(id)}/revoke`, { body: {} }),
  getMyUsage: (days: number, signal?: AbortSignal) =>
    call<Ok<Op['getMyUsage']>>('GET', '/v1/me/usage', { query: { days }, signal }),
};

/** A random Idempotency-Key for one create (a double click or a retry makes one key). */
export function newIdempotencyKey(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return 'console-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
