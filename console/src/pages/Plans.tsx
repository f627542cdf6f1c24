import { useState } from 'preact/hooks';
import { api, type Plan, type PlanCreateInput } from '../api';
import { Confirm, Dialog, ErrorBox, Field, Loading, fmtNum, fmtTime, useLoad } from '../components/ui';
import { href } from '../router';

export function limitsText(p: Pick<Plan, 'rate_limit' | 'quota'>): string {
  const parts: string[] = [];
  if (p.rate_limit) parts.push(`${fmtNum(p.rate_limit.limit)} per ${fmtNum(p.rate_limit.window_s)} s`);
  if (p.quota) parts.push(`${fmtNum(p.quota.limit)} a ${p.quota.period}`);
  return parts.join(', ') || 'unlimited';
}

export function Plans({ canWrite }: { canWrite: boolean }) {
  const plans = useLoad(() => api.listPlans(), []);
  const [editing, setEditing] = useState<Plan | 'new' | null>(null);
  const [deleting, setDeleting] = useState<Plan | null>(null);
  const items = plans.data?.items ?? [];
  return (
    <>
      <div class="page-head">
        <h1>Plans</h1>
        {canWrite ? (
          <button type="button" onClick={() => setEditing('new')}>
            New plan
          </button>
        ) : null}
      </div>
      {plans.loading && !plans.data ? <Loading what="Loading plans" /> : null}
      <ErrorBox error={plans.error} onRetry={plans.reload} title="Plans" />
      {plans.data ? (
        items.length === 0 ? (
          <p class="muted">No plans yet.</p>
        ) : (
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">Plans</caption>
              <thead>
                <tr>
                  <th scope="col">Plan</th>
                  <th scope="col">Limits</th>
                  <th scope="col">Max keys</th>
                  <th scope="col">Stripe prices</th>
                  <th scope="col">Meter</th>
                  <th scope="col">Updated</th>
                  {canWrite ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {items.map((p) => (
                  <tr key={p.id} data-plan-id={p.id}>
                    <td>
                      <div class="strong">{p.name}</div>
                      <div class="mono small">
                        <a href={href(['keys'], { plan: p.id })} title={`Keys on ${p.id}`}>
                          {p.id}
                        </a>
                      </div>
                    </td>
                    <td>{limitsText(p)}</td>
                    <td>{p.max_keys ?? <span class="muted">10 (default)</span>}</td>
                    <td class="mono small">{p.stripe_price_ids.join(', ') || <span class="muted">—</span>}</td>
                    <td class="mono small">{p.meter_event_name ?? <span class="muted">—</span>}</td>
                    <td class="nowrap">{fmtTime(p.updated_at)}</td>
                    {canWrite ? (
                      <td class="row-actions">
                        <button type="button" class="secondary small" onClick={() => setEditing(p)}>
                          Edit<span class="visually-hidden"> {p.id}</span>
                        </button>
                        <button type="button" class="danger small" onClick={() => setDeleting(p)}>
                          Delete<span class="visually-hidden"> {p.id}</span>
                        </button>
                      </td>
                    ) : null}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )
      ) : null}
      {editing ? (
        <PlanForm
          plan={editing === 'new' ? null : editing}
          onClose={() => setEditing(null)}
          onSaved={() => {
            setEditing(null);
            plans.reload();
          }}
        />
      ) : null}
      {deleting ? (
        <Confirm
          title="Delete plan"
          danger
          confirmLabel="Delete plan"
          message={
            <p>
              Delete the plan <strong>{deleting.name}</strong> (<code>{deleting.id}</code>)? The server refuses while a key that is not
              revoked uses it.
            </p>
          }
          onConfirm={async () => {
            await api.deletePlan(deleting.id);
            plans.reload();
          }}
          onClose={() => setDeleting(null)}
        />
      ) : null}
    </>
  );
}

function num(v: string): number | null {
  return v.trim() === '' ? null : Number(v);
}

function PlanForm({ plan, onClose, onSaved }: { plan: Plan | null; onClose: () => void; onSaved: () => void }) {
  const [f, setF] = useState({
    id: plan?.id ?? '',
    name: plan?.name ?? '',
    rate: plan?.rate_limit ? String(plan.rate_limit.limit) : '',
    window: plan?.rate_limit ? String(plan.rate_limit.window_s) : '60',
    quota: plan?.quota ? String(plan.quota.limit) : '',
    period: plan?.quota?.period ?? 'month',
    maxKeys: plan?.max_keys ? String(plan.max_keys) : '',
    prices: plan?.stripe_price_ids.join(', ') ?? '',
    meter: plan?.meter_event_name ?? '',
  });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const set = (k: keyof typeof f) => (e: Event) => setF({ ...f, [k]: (e.target as HTMLInputElement).value });
  return (
    <Dialog title={plan ? `Edit plan ${plan.id}` : 'New plan'} onClose={onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(undefined);
          const rate = num(f.rate);
          const quota = num(f.quota);
          const body: Omit<PlanCreateInput, 'id'> = {
            name: f.name.trim(),
            rate_limit: rate === null ? null : { limit: rate, window_s: Number(f.window) },
            quota: quota === null ? null : { limit: quota, period: f.period as 'day' | 'month' },
            max_keys: num(f.maxKeys),
            stripe_price_ids: f.prices
              .split(/[\s,]+/)
              .map((s) => s.trim())
              .filter(Boolean),
            meter_event_name: f.meter.trim() || null,
          };
          try {
            if (plan) await api.replacePlan(plan.id, body);
            else await api.createPlan({ id: f.id.trim(), ...body });
            onSaved();
          } catch (err) {
            setError(err);
            setBusy(false);
          }
        }}
      >
        {plan ? (
          <p class="small muted">Saving replaces the whole plan; its limits apply to every key it governs from their next request.</p>
        ) : null}
        <div class="grid">
          {plan ? null : (
            <Field label="Plan id" id="plan-id" hint="a-z, 0-9, _ or -; cannot change later.">
              <input id="plan-id" required pattern="[a-z0-9][a-z0-9_\-]{0,63}" value={f.id} onInput={set('id')} />
            </Field>
          )}
          <Field label="Name" id="plan-name">
            <input id="plan-name" required maxLength={50} value={f.name} onInput={set('name')} />
          </Field>
          <Field label="Rate limit (requests)" id="plan-rate" hint="Empty: no rate limit.">
            <input id="plan-rate" type="number" min={1} value={f.rate} onInput={set('rate')} />
          </Field>
          <Field label="Rate limit window (seconds)" id="plan-window">
            <input id="plan-window" type="number" min={1} max={86400} value={f.window} onInput={set('window')} />
          </Field>
          <Field label="Quota (requests)" id="plan-quota" hint="Empty: no quota.">
            <input id="plan-quota" type="number" min={1} value={f.quota} onInput={set('quota')} />
          </Field>
          <Field label="Quota period" id="plan-period">
            <select id="plan-period" value={f.period} onChange={set('period')}>
              <option value="day">day</option>
              <option value="month">month</option>
            </select>
          </Field>
          <Field label="Max keys per customer" id="plan-max-keys" hint="For self-service; empty: 10.">
            <input id="plan-max-keys" type="number" min={1} max={1000} value={f.maxKeys} onInput={set('maxKeys')} />
          </Field>
          <Field label="Stripe price ids" id="plan-prices" hint="Comma-separated price_… ids that buy this plan.">
            <input id="plan-prices" value={f.prices} onInput={set('prices')} />
          </Field>
          <Field label="Billing Meter event name" id="plan-meter" hint="Optional.">
            <input id="plan-meter" value={f.meter} onInput={set('meter')} />
          </Field>
        </div>
        <ErrorBox error={error} title="Save plan" />
        <div class="actions">
          <button type="button" class="secondary" onClick={onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" disabled={busy}>
            {busy ? 'Saving…' : plan ? 'Save plan' : 'Create plan'}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
