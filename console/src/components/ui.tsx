import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from '../api';

/** Ask the app to sign out (clears the session, back to the sign-in page). */
export function requestSignOut(): void {
  dispatchEvent(new Event('tollgate:signout'));
}

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` when `deps` change (and on reload), with loading and error states. */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: unknown; loading: boolean }>({ loading: true });
  const [n, setN] = useState(0);
  useEffect(() => {
    const ctl = new AbortController();
    setState((s) => ({ data: s.data, loading: true }));
    load(ctl.signal).then(
      (data) => !ctl.signal.aborted && setState({ data, loading: false }),
      (error) => !ctl.signal.aborted && setState({ error, loading: false }),
    );
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, n]);
  const reload = useCallback(() => setN((x) => x + 1), []);
  return { data: state.data, error: state.error, loading: state.loading, reload };
}

export function Loading({ what = 'Loading' }: { what?: string }) {
  return (
    <p class="loading" role="status" aria-live="polite">
      {what}…
    </p>
  );
}

function describe(e: ApiError): string {
  switch (e.status) {
    case 0:
      return 'No answer from the server';
    case 401:
      return 'Your sign-in is not valid any more';
    case 403:
      return 'Not allowed for your role';
    case 404:
      return 'Not found';
    case 409:
      return 'Conflict';
    case 422:
      return 'Invalid input';
    case 429:
      return 'Too many requests';
    default:
      return e.status >= 500 ? `Server error (${e.status})` : `Request failed (${e.status})`;
  }
}

/** An error from the API (or anything else), with what the user can do about it. */
export function ErrorBox({ error, onRetry, title }: { error: unknown; onRetry?: () => void; title?: string }) {
  if (!error) return null;
  if (error instanceof ApiError) {
    return (
      <div class={`error status-${error.status}`} role="alert">
        <p>
          <strong>
            {title ? `${title}: ` : ''}
            {describe(error)}
          </strong>
          {' — '}
          <code class="code">{error.code}</code> {error.message}
          {error.field ? (
            <>
              {' '}
              (field <code>{error.field}</code>)
            </>
          ) : null}
          {error.status === 429 && error.retryAfter !== undefined ? ` Retry in ${error.retryAfter} s.` : null}
        </p>
        {error.requestId ? <p class="muted small">request id {error.requestId}</p> : null}
        {error.status === 401 ? (
          <button type="button" onClick={requestSignOut}>
            Sign in again
          </button>
        ) : onRetry && error.status !== 403 && error.status !== 404 ? (
          <button type="button" class="secondary" onClick={onRetry}>
            Retry
          </button>
        ) : null}
      </div>
    );
  }
  return (
    <div class="error" role="alert">
      <p>
        <strong>{title ? `${title}: ` : ''}Error</strong> — {String((error as Error)?.message ?? error)}
      </p>
    </div>
  );
}

/** A modal dialog (native <dialog>: focus trapped, Escape closes). */
export function Dialog({
  title,
  children,
  onClose,
}: {
  title: string;
  children: ComponentChildren;
  onClose: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => d?.close();
  }, []);
  return (
    <dialog
      ref={ref}
      aria-labelledby="dialog-title"
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
    >
      <h2 id="dialog-title">{title}</h2>
      {children}
    </dialog>
  );
}

/** "Are you sure?" with the action's own words on the confirming button. */
export function Confirm({
  title,
  message,
  confirmLabel,
  danger,
  onConfirm,
  onClose,
}: {
  title: string;
  message: ComponentChildren;
  confirmLabel: string;
  danger?: boolean;
  onConfirm: () => Promise<unknown>;
  onClose: () => void;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  return (
    <Dialog title={title} onClose={onClose}>
      <div>{message}</div>
      <ErrorBox error={error} />
      <div class="actions">
        <button type="button" class="secondary" onClick={onClose} disabled={busy}>
          Cancel
        </button>
        <button
          type="button"
          class={danger ? 'danger' : ''}
          disabled={busy}
          onClick={async () => {
            setBusy(true);
            setError(undefined);
            try {
              await onConfirm();
              onClose();
            } catch (e) {
              setError(e);
              setBusy(false);
            }
          }}
        >
          {busy ? 'Working…' : confirmLabel}
        </button>
      </div>
    </Dialog>
  );
}

/**
 * A key's plaintext, shown once: it lives only in this component's state (never stored,
 * never logged), and is gone when the dialog is closed.
 */
export function SecretOnce({ secret, keyId, what, onClose }: { secret: string; keyId: string; what: string; onClose: () => void }) {
  const [copied, setCopied] = useState<'no' | 'yes' | 'failed'>('no');
  const input = useRef<HTMLInputElement>(null);
  return (
    <Dialog title={what} onClose={onClose}>
      <p class="warning" role="note">
        <strong>Copy this key now.</strong> It is shown this once: Tollgate keeps only a hash of it, and it cannot be shown
        again. If it is lost, rotate the key.
      </p>
      <label for="secret-value">API key for {keyId}</label>
      <div class="secret">
        <input
          id="secret-value"
          ref={input}
          readOnly
          value={secret}
          spellcheck={false}
          autocomplete="off"
          onFocus={(e) => (e.currentTarget as HTMLInputElement).select()}
        />
        <button
          type="button"
          onClick={async () => {
            try {
              await navigator.clipboard.writeText(secret);
              setCopied('yes');
            } catch {
              input.current?.select();
              setCopied('failed');
            }
          }}
        >
          Copy
        </button>
      </div>
      <p class="small" role="status" aria-live="polite">
        {copied === 'yes' ? 'Copied to the clipboard.' : copied === 'failed' ? 'Copying failed: the key is selected, copy it by hand.' : ''}
      </p>
      <div class="actions">
        <button type="button" onClick={onClose}>
          I have saved the key
        </button>
      </div>
    </Dialog>
  );
}

export function fmtTime(ts: string | null | undefined): string {
  if (!ts) return '—';
  const d = new Date(ts);
  if (isNaN(d.getTime())) return ts;
  return d.toISOString().replace('T', ' ').replace(/:\d\d(\.\d+)?Z$/, ' UTC');
}

export function fmtNum(n: number | null | undefined): string {
  return n === null || n === undefined ? '—' : n.toLocaleString('en-US');
}

export function Field({ label, id, hint, children }: { label: string; id: string; hint?: string; children: ComponentChildren }) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {children}
      {hint ? (
        <span class="hint" id={`${id}-hint`}>
          {hint}
        </span>
      ) : null}
    </div>
  );
}

export function StatusBadge({ status }: { status: string | null | undefined }) {
  return <span class={`badge badge-${status ?? 'none'}`}>{status ?? 'none'}</span>;
}
