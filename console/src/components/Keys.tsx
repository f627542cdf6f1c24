// Key listing (cursor paging) and the key actions, for operators (/v1/keys) and for a customer
// on its own keys (/v1/me/keys).
import { useState } from 'preact/hooks';
import { api, newIdempotencyKey, type IssuedKey, type Key, type KeyStatus, type Plan } from '../api';
import { href } from '../router';
import { Confirm, Dialog, ErrorBox, Field, Loading, SecretOnce, StatusBadge, fmtTime, useLoad } from './ui';

export type Mode = 'operator' | 'me';

export interface KeyFilters {
  customer_id?: string;
  plan_id?: string;
  status?: KeyStatus;
}

const PAGE = 25;

type Action = { kind: 'rotate' | 'revoke'; key: Key } | null;

type TableProps = {
  mode: Mode;
  canWrite: boolean;
  filters: KeyFilters;
  showCustomer?: boolean;
  /** Bump to reload (after a create elsewhere). */
  refresh?: number;
  label: string;
  /** Called after a change this listing made (rotate, disable, enable, revoke). */
  onChange?: () => void;
};

/** A listing; new filters start again from the first page (a cursor belongs to its filters). */
export function KeysTable(props: TableProps) {
  return <KeysListing key={JSON.stringify(props.filters)} {...props} />;
}

function KeysListing({
  mode,
  canWrite,
  filters,
  showCustomer = true,
  refresh = 0,
  label,
  onChange,
}: TableProps) {
  const changed = () => {
    list.reload();
    onChange?.();
  };
  // Cursors of the pages before this one; the last entry is this page's cursor.
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors[cursors.length - 1];
  const fkey = JSON.stringify(filters);
  const list = useLoad(
    (signal) =>
      mode === 'operator'
        ? api.listKeys({ ...filters, limit: PAGE, cursor }, signal)
        : api.listMyKeys({ status: filters.status, limit: PAGE, cursor }, signal),
    [mode, fkey, cursor, refresh],
  );
  const [action, setAction] = useState<Action>(null);
  const [secret, setSecret] = useState<IssuedKey | null>(null);
  const [rowError, setRowError] = useState<unknown>();
  const [busy, setBusy] = useState<string | null>(null);

  const setStatus = async (k: Key, status: 'active' | 'disabled') => {
    setBusy(k.key_id);
    setRowError(undefined);
    try {
      if (mode === 'operator') await api.updateKey(k.key_id, { status });
      else await api.updateMyKey(k.key_id, { status });
      changed();
    } catch (e) {
      setRowError(e);
    } finally {
      setBusy(null);
    }
  };

  const items: Key[] = list.data?.items ?? [];
  return (
    <section aria-label={label} class="keys">
      {list.loading && !list.data ? <Loading what="Loading keys" /> : null}
      <ErrorBox error={list.error} onRetry={list.reload} title="Keys" />
      <ErrorBox error={rowError} />
      {list.data ? (
        items.length === 0 ? (
          <p class="muted">No keys{cursors.length > 1 ? ' on this page' : ''}.</p>
        ) : (
          <div class="table-wrap">
            <table aria-busy={list.loading}>
              <caption class="visually-hidden">{label}</caption>
              <thead>
                <tr>
                  <th scope="col">Key</th>
                  {showCustomer ? <th scope="col">Customer</th> : null}
                  <th scope="col">Plan</th>
                  <th scope="col">Status</th>
                  <th scope="col">Created</th>
                  <th scope="col">Last used</th>
                  <th scope="col">Expires</th>
                  {canWrite ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {items.map((k) => (
                  <tr key={k.key_id} data-key-id={k.key_id}>
                    <td>
                      <div class="strong">{k.name ?? <span class="muted">(no name)</span>}</div>
                      <div class="mono small">{k.key_id}</div>
                      <div class="mono small muted">{k.display}</div>
                      {k.rotation ? (
                        <div class="small muted">previous secret valid until {fmtTime(k.rotation.previous_secret_valid_until)}</div>
                      ) : null}
                    </td>
                    {showCustomer ? (
                      <td>
                        {mode === 'operator' ? <a href={href(['customers', k.customer_id])}>{k.customer_id}</a> : k.customer_id}
                      </td>
                    ) : null}
                    <td>{k.limits.plan_id ?? <span class="muted">none</span>}</td>
                    <td>
                      <StatusBadge status={k.status} />
                    </td>
                    <td class="nowrap">{fmtTime(k.created_at)}</td>
                    <td class="nowrap">{k.last_used_at ? fmtTime(k.last_used_at) : <span class="muted">never</span>}</td>
                    <td class="nowrap">{fmtTime(k.expires_at)}</td>
                    {canWrite ? (
                      <td>
                        {k.status !== 'revoked' ? (
                          <div class="row-actions">
                            <button type="button" class="secondary small" onClick={() => setAction({ kind: 'rotate', key: k })}>
                              Rotate<span class="visually-hidden"> {k.key_id}</span>
                            </button>
                            {k.status === 'active' ? (
                              <button type="button" class="secondary small" disabled={busy === k.key_id} onClick={() => setStatus(k, 'disabled')}>
                                Disable<span class="visually-hidden"> {k.key_id}</span>
                              </button>
                            ) : (
                              <button type="button" class="secondary small" disabled={busy === k.key_id} onClick={() => setStatus(k, 'active')}>
                                Enable<span class="visually-hidden"> {k.key_id}</span>
                              </button>
                            )}
                            <button type="button" class="danger small" onClick={() => setAction({ kind: 'revoke', key: k })}>
                              Revoke<span class="visually-hidden"> {k.key_id}</span>
                            </button>
                          </div>
                        ) : (
                          <span class="muted small">revoked</span>
                        )}
                      </td>
                    ) : null}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )
      ) : null}
      {list.data && (cursors.length > 1 || list.data.next_cursor) ? (
        <nav class="pager" aria-label="Key pages">
          <button type="button" class="secondary" disabled={cursors.length <= 1} onClick={() => setCursors(cursors.slice(0, -1))}>
            Previous page
          </button>
          <span class="small muted">page {cursors.length}</span>
          <button
            type="button"
            class="secondary"
            disabled={!list.data.next_cursor}
            onClick={() => list.data?.next_cursor && setCursors([...cursors, list.data.next_cursor])}
          >
            Next page
          </button>
        </nav>
      ) : null}

      {action?.kind === 'revoke' ? (
        <Confirm
          title="Revoke key"
          danger
          confirmLabel="Revoke key"
          message={
            <p>
              Revoke <strong>{action.key.name ?? action.key.key_id}</strong> (<code>{action.key.display}</code>)? Every request with it
              is refused from now on, and a rotation's previous secret stops working too. <strong>This cannot be undone.</strong>
            </p>
          }
          onConfirm={async () => {
            if (mode === 'operator') await api.revokeKey(action.key.key_id);
            else await api.revokeMyKey(action.key.key_id);
            changed();
          }}
          onClose={() => setAction(null)}
        />
      ) : null}
      {action?.kind === 'rotate' ? (
        <RotateDialog
          keyObj={action.key}
          mode={mode}
          onDone={(issued) => {
            setAction(null);
            setSecret(issued);
            changed();
          }}
          onClose={() => setAction(null)}
        />
      ) : null}
      {secret ? <SecretOnce secret={secret.key} keyId={secret.key_id} what="New secret for the rotated key" onClose={() => setSecret(null)} /> : null}
    </section>
  );
}

function RotateDialog({ keyObj, mode, onDone, onClose }: { keyObj: Key; mode: Mode; onDone: (k: IssuedKey) => void; onClose: () => void }) {
  const [grace, setGrace] = useState('86400');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  return (
    <Dialog title="Rotate key" onClose={onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(undefined);
          try {
            const body = { grace_s: Number(grace) };
            onDone(mode === 'operator' ? await api.rotateKey(keyObj.key_id, body) : await api.rotateMyKey(keyObj.key_id, body));
          } catch (err) {
            setError(err);
            setBusy(false);
          }
        }}
      >
        <p>
          A new secret for <strong>{keyObj.name ?? keyObj.key_id}</strong>. The current one keeps working for the grace period, then
          stops.
        </p>
        <Field label="Grace period (seconds)" id="rotate-grace" hint="0 to 2,592,000 (30 days); 86,400 is one day.">
          <input
            id="rotate-grace"
            type="number"
            min={0}
            max={2592000}
            step={1}
            required
            value={grace}
            aria-describedby="rotate-grace-hint"
            onInput={(e) => setGrace((e.target as HTMLInputElement).value)}
          />
        </Field>
        <ErrorBox error={error} />
        <div class="actions">
          <button type="button" class="secondary" onClick={onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" disabled={busy}>
            {busy ? 'Rotating…' : 'Rotate key'}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

/** The create form: every field for operators; only a name for a customer's own key. */
export function CreateKeyForm({
  mode,
  plans,
  fixedCustomer,
  onCreated,
}: {
  mode: Mode;
  plans?: Plan[];
  fixedCustomer?: string;
  onCreated: () => void;
}) {
  const [open, setOpen] = useState(false);
  const [customer, setCustomer] = useState(fixedCustomer ?? '');
  const [plan, setPlan] = useState('');
  const [name, setName] = useState('');
  const [env, setEnv] = useState('');
  const [expires, setExpires] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [idem, setIdem] = useState(newIdempotencyKey);
  const [issued, setIssued] = useState<IssuedKey | null>(null);
  const [replayed, setReplayed] = useState(false);

  if (!open) {
    return (
      <>
        <button type="button" onClick={() => setOpen(true)}>
          New key
        </button>
        {issued ? <SecretOnce secret={issued.key} keyId={issued.key_id} what="Key created" onClose={() => setIssued(null)} /> : null}
      </>
    );
  }
  return (
    <form
      class="panel"
      aria-labelledby="create-key-title"
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        setError(undefined);
        setReplayed(false);
        try {
          const k =
            mode === 'operator'
              ? await api.createKey(
                  {
                    customer_id: customer.trim(),
                    plan_id: plan || null,
                    name: name.trim() || null,
                    env: (env || null) as 'live' | 'test' | null,
                    expires_at: expires ? new Date(expires).toISOString() : null,
                  },
                  idem,
                )
              : await api.createMyKey({ name: name.trim() || null }, idem);
          setIdem(newIdempotencyKey());
          if (typeof k.key === 'string') {
            setIssued(k);
            setOpen(false);
            setName('');
            setExpires('');
          } else {
            // An idempotent replay (the first answer was lost): the key exists, its plaintext is gone.
            setReplayed(true);
          }
          onCreated();
        } catch (err) {
          setError(err);
        } finally {
          setBusy(false);
        }
      }}
    >
      <h3 id="create-key-title">Create a key</h3>
      <div class="grid">
        {mode === 'operator' ? (
          <>
            <Field label="Customer id" id="key-customer" hint="Created on first use.">
              <input
                id="key-customer"
                required
                pattern="[A-Za-z0-9_.:@\-]{1,200}"
                value={customer}
                readOnly={!!fixedCustomer}
                onInput={(e) => setCustomer((e.target as HTMLInputElement).value)}
              />
            </Field>
            <Field label="Plan" id="key-plan">
              <select id="key-plan" value={plan} onChange={(e) => setPlan((e.target as HTMLSelectElement).value)}>
                <option value="">the customer's plan</option>
                {(plans ?? []).map((p) => (
                  <option value={p.id} key={p.id}>
                    {p.name} ({p.id})
                  </option>
                ))}
              </select>
            </Field>
          </>
        ) : null}
        <Field label="Name" id="key-name" hint="Optional, up to 25 characters.">
          <input id="key-name" maxLength={25} value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </Field>
        {mode === 'operator' ? (
          <>
            <Field label="Environment" id="key-env">
              <select id="key-env" value={env} onChange={(e) => setEnv((e.target as HTMLSelectElement).value)}>
                <option value="">deployment default</option>
                <option value="live">live</option>
                <option value="test">test</option>
              </select>
            </Field>
            <Field label="Expires (your local time)" id="key-expires" hint="Optional.">
              <input id="key-expires" type="datetime-local" value={expires} onInput={(e) => setExpires((e.target as HTMLInputElement).value)} />
            </Field>
          </>
        ) : null}
      </div>
      <ErrorBox error={error} title="Create key" />
      {replayed ? (
        <p class="warning" role="status">
          The key was already created by an earlier attempt whose answer was lost; its secret cannot be shown again. Rotate it to get a
          new secret.
        </p>
      ) : null}
      <div class="actions">
        <button type="button" class="secondary" onClick={() => setOpen(false)} disabled={busy}>
          Cancel
        </button>
        <button type="submit" disabled={busy}>
          {busy ? 'Creating…' : 'Create key'}
        </button>
      </div>
    </form>
  );
}
