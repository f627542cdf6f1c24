// Hand-written: `GET /v1/stats` is being added to the server and is not in docs/openapi.yaml
// yet. Once it is, delete this file and use the generated `components["schemas"][...]` /
// `operations["..."]` types from api-types.ts instead (npm run gen-types).

/** The denial codes the authorizer answers with. */
export const DENIAL_CODES = [
  'key_expired',
  'key_revoked',
  'key_disabled',
  'subscription_inactive',
  'insufficient_scope',
  'rate_limited',
  'quota_exceeded',
] as const;
export type DenialCode = (typeof DENIAL_CODES)[number];

export interface StatsDay {
  /** UTC day, YYYY-MM-DD. */
  day: string;
  allowed: number;
  denied: number;
  /** Denials per code; codes with no denials may be absent. */
  denied_by_code: Partial<Record<DenialCode | string, number>>;
}

export interface Stats {
  /** The day the top lists and near_quota describe (the last rollup's). */
  day: string;
  days: StatsDay[];
  top_keys: { key_id: string; customer_id: string; allowed: number }[];
  top_customers: { customer_id: string; allowed: number }[];
  near_quota: {
    key_id: string;
    customer_id: string;
    used: number;
    limit: number;
    period: 'day' | 'month' | string;
    reset: string;
  }[];
}
