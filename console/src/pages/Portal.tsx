// The customer's self-service portal: only /v1/me, /v1/me/keys... and /v1/me/usage.
import { useState } from 'preact/hooks';
import { api } from '../api';
import { Chart } from '../components/Chart';
import { CreateKeyForm, KeysTable } from '../components/Keys';
import { ErrorBox, Loading, StatusBadge, fmtNum, fmtTime, useLoad } from '../components/ui';
import { limitsText } from './Plans';
import { USAGE_DAYS, UsageTiles, usageSeries } from './CustomerPage';

const FIELDS = ['allowed', 'denied'];

export function Portal() {
  const me = useLoad((signal) => api.getMe(signal), []);
  const usage = useLoad((signal) => api.getMyUsage(USAGE_DAYS, signal), []);
  const [refresh, setRefresh] = useState(0);
  const m = me.data;
  const u = usage.data ? usageSeries(usage.data.history, FIELDS) : null;
  return (
    <>
      <h1>Your API keys</h1>
      {me.loading && !m ? <Loading what="Loading your account" /> : null}
      <ErrorBox error={me.error} onRetry={me.reload} title="Account" />
      {m ? (
        <section aria-labelledby="acct-title" class="panel">
          <h2 id="acct-title">Account</h2>
          <dl class="props">
            <dt>Customer</dt>
            <dd class="mono">{m.customer_id}</dd>
            <dt>Subscription</dt>
            <dd>
              <StatusBadge status={m.subscription_status} />
              {m.current_period_end ? <span class="small muted"> until {fmtTime(m.current_period_end)}</span> : null}
            </dd>
            <dt>Plan</dt>
            <dd>{m.plan ? `${m.plan.name} (${limitsText(m.plan)})` : <span class="muted">none</span>}</dd>
            <dt>Keys</dt>
            <dd>
              {fmtNum(m.keys)} of {fmtNum(m.max_keys)}
            </dd>
          </dl>
        </section>
      ) : null}
      {m ? (
        <section aria-labelledby="my-keys-title">
          <h2 id="my-keys-title">Keys</h2>
          <CreateKeyForm
            mode="me"
            onCreated={() => {
              setRefresh((n) => n + 1);
              me.reload();
            }}
          />
          <KeysTable mode="me" canWrite filters={{}} showCustomer={false} refresh={refresh} label="Your keys" onChange={me.reload} />
        </section>
      ) : null}
      {m ? (
        <section aria-labelledby="my-usage-title">
          <h2 id="my-usage-title">Usage</h2>
          <p class="muted small">Per UTC day, as of the last usage count (a few minutes behind).</p>
          {usage.loading && !usage.data ? <Loading what="Loading usage" /> : null}
          <ErrorBox error={usage.error} onRetry={usage.reload} title="Usage" />
          {u ? (
            <>
              <UsageTiles totals={u.totals} fields={FIELDS} />
              <Chart id="my-usage" title="Your requests per day" days={u.days} series={u.series} />
            </>
          ) : null}
        </section>
      ) : null}
    </>
  );
}
