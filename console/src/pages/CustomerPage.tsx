import { useState } from 'preact/hooks';
import { api, type CustomerUsage, type MyUsage } from '../api';
import { Chart, colorFor, dayRange, daysAgo, today, type Series } from '../components/Chart';
import { CreateKeyForm, KeysTable } from '../components/Keys';
import { ErrorBox, Loading, StatusBadge, fmtNum, fmtTime, useLoad } from '../components/ui';
import { href, navigate } from '../router';

export const USAGE_DAYS = 30;

type Row = CustomerUsage['history'][number] | MyUsage['history'][number];

/** Per-day sums over meters, for every day of the window (days without usage are 0). */
export function usageSeries(history: Row[], fields: string[]): { days: string[]; series: Series[]; totals: Record<string, number> } {
  const end = today();
  const first = history.reduce((m, r) => (r.day < m ? r.day : m), daysAgo(USAGE_DAYS - 1, end));
  const days = dayRange(first, end);
  const idx = new Map(days.map((d, i) => [d, i]));
  const totals: Record<string, number> = {};
  const series = fields.map((f, i) => {
    const values = days.map(() => 0);
    for (const r of history) {
      const j = idx.get(r.day);
      const v = (r as unknown as Record<string, number>)[f] ?? 0;
      if (j !== undefined) values[j] += v;
      totals[f] = (totals[f] ?? 0) + v;
    }
    return { label: f, color: colorFor(f, i), values };
  });
  return { days, series, totals };
}

export function UsageTiles({ totals, fields }: { totals: Record<string, number>; fields: string[] }) {
  return (
    <dl class="tiles" data-testid="usage-totals">
      {fields.map((f) => (
        <div key={f}>
          <dt>{f}</dt>
          <dd data-testid={`usage-${f}`}>{fmtNum(totals[f] ?? 0)}</dd>
        </div>
      ))}
    </dl>
  );
}

export function CustomerLookup() {
  const [id, setId] = useState('');
  return (
    <>
      <h1>Customers</h1>
      <form
        class="filters"
        role="search"
        aria-label="Look up a customer"
        onSubmit={(e) => {
          e.preventDefault();
          if (id.trim()) navigate(href(['customers', id.trim()]));
        }}
      >
        <div class="field">
          <label for="lookup-customer">Customer id</label>
          <input id="lookup-customer" required value={id} onInput={(e) => setId((e.target as HTMLInputElement).value)} />
        </div>
        <button type="submit">Look up</button>
      </form>
      <p class="muted">A customer's page shows its subscription, Stripe ids, plan, keys and metered usage.</p>
    </>
  );
}

const FIELDS = ['allowed', 'denied', 'reported', 'pending', 'unbilled'];

export function CustomerPage({ id, canWrite }: { id: string; canWrite: boolean }) {
  const customer = useLoad((signal) => api.getCustomer(id, signal), [id]);
  const usage = useLoad((signal) => api.getCustomerUsage(id, USAGE_DAYS, signal), [id]);
  const plans = useLoad(() => api.listPlans(), []);
  const [refresh, setRefresh] = useState(0);
  const c = customer.data;
  const u = usage.data ? usageSeries(usage.data.history, FIELDS) : null;
  return (
    <>
      <div class="page-head">
        <h1>
          Customer <span class="mono">{id}</span>
        </h1>
        <a href={href(['customers'])}>Look up another</a>
      </div>
      {customer.loading && !c ? <Loading what="Loading the customer" /> : null}
      <ErrorBox error={customer.error} onRetry={customer.reload} title="Customer" />
      {c ? (
        <section aria-labelledby="sub-title" class="panel">
          <h2 id="sub-title">Subscription</h2>
          <dl class="props">
            <dt>Status</dt>
            <dd>
              <StatusBadge status={c.subscription_status} />
            </dd>
            <dt>Plan</dt>
            <dd>{c.plan_id ? <a href={href(['keys'], { plan: c.plan_id })}>{c.plan_id}</a> : <span class="muted">none</span>}</dd>
            <dt>Current period ends</dt>
            <dd>{fmtTime(c.current_period_end)}</dd>
            <dt>Stripe customer</dt>
            <dd class="mono">{c.stripe_customer_id ?? '—'}</dd>
            <dt>Stripe subscription</dt>
            <dd class="mono">{c.stripe_subscription_id ?? '—'}</dd>
            {c.unknown_price_id ? (
              <>
                <dt>Unknown price</dt>
                <dd>
                  <span class="mono">{c.unknown_price_id}</span> <span class="warning-inline">no plan lists this price: add it to a plan</span>
                </dd>
              </>
            ) : null}
            <dt>Created</dt>
            <dd>{fmtTime(c.created_at)}</dd>
            <dt>Keys</dt>
            <dd>{c.keys.length}</dd>
          </dl>
        </section>
      ) : null}
      {c ? (
        <section aria-labelledby="cust-keys-title">
          <div class="page-head">
            <h2 id="cust-keys-title">Keys</h2>
          </div>
          {canWrite ? <CreateKeyForm mode="operator" plans={plans.data?.items} fixedCustomer={id} onCreated={() => setRefresh((n) => n + 1)} /> : null}
          <KeysTable mode="operator" canWrite={canWrite} filters={{ customer_id: id }} showCustomer={false} refresh={refresh} label={`Keys of ${id}`} />
        </section>
      ) : null}
      {c || usage.data ? (
        <section aria-labelledby="usage-title">
          <h2 id="usage-title">Usage</h2>
          <p class="muted small">
            Per UTC day, as of the last usage rollup. <em>reported</em>: Stripe has it; <em>pending</em>: sent or about to be;{' '}
            <em>unbilled</em>: written off (no Stripe customer, or too old).
          </p>
          {usage.loading && !usage.data ? <Loading what="Loading usage" /> : null}
          <ErrorBox error={usage.error} onRetry={usage.reload} title="Usage" />
          {u ? (
            <>
              <UsageTiles totals={u.totals} fields={FIELDS} />
              <Chart id="customer-usage" title={`Requests per day for ${id}`} days={u.days} series={u.series} />
              {usage.data && usage.data.history.length ? (
                <details>
                  <summary>Per meter</summary>
                  <div class="table-wrap">
                    <table>
                      <thead>
                        <tr>
                          <th scope="col">Day</th>
                          <th scope="col">Meter</th>
                          {FIELDS.map((f) => (
                            <th scope="col" class="num" key={f}>
                              {f}
                            </th>
                          ))}
                        </tr>
                      </thead>
                      <tbody>
                        {usage.data.history.map((r) => (
                          <tr key={`${r.day}/${r.meter}`}>
                            <td>{r.day}</td>
                            <td class="mono small">{r.meter ?? '—'}</td>
                            {FIELDS.map((f) => (
                              <td class="num" key={f}>
                                {fmtNum((r as unknown as Record<string, number>)[f])}
                              </td>
                            ))}
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                </details>
              ) : null}
            </>
          ) : null}
        </section>
      ) : null}
    </>
  );
}
