// Hash routing (#/keys?status=active, #/customers/acme): deep links need nothing from the server.
import { useEffect, useState } from 'preact/hooks';

export interface Route {
  /** Decoded path segments: "#/customers/a%40b" is ["customers", "a@b"]. */
  parts: string[];
  query: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const h = hash.replace(/^#/, '');
  const [path, qs = ''] = h.split('?', 2);
  const parts = path
    .split('/')
    .filter(Boolean)
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
  return { parts, query: new URLSearchParams(qs) };
}

export function useRoute(): Route {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return parseHash(hash);
}

/** "#/customers/a%40b?x=1" from parts and query. */
export function href(parts: string[], query?: Record<string, string | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v) q.set(k, v);
  const s = q.toString();
  return '#/' + parts.map(encodeURIComponent).join('/') + (s ? `?${s}` : '');
}

export function navigate(to: string): void {
  if (location.hash !== to) location.hash = to;
}
