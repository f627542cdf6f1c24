import { useState } from 'preact/hooks';
import { api, type KeyStatus } from '../api';
import { CreateKeyForm, KeysTable } from '../components/Keys';
import { useLoad } from '../components/ui';
import { href, navigate, type Route } from '../router';

export function KeysPage({ route, canWrite }: { route: Route; canWrite: boolean }) {
  const q = route.query;
  const filters = {
    customer_id: q.get('customer') || undefined,
    plan_id: q.get('plan') || undefined,
    status: (q.get('status') || undefined) as KeyStatus | undefined,
  };
  const plans = useLoad(() => api.listPlans(), []);
  const [customer, setCustomer] = useState(filters.customer_id ?? '');
  const [refresh, setRefresh] = useState(0);
  const apply = (patch: Record<string, string | undefined>) =>
    navigate(href(['keys'], { customer: filters.customer_id, plan: filters.plan_id, status: filters.status, ...patch }));
  return (
    <>
      <div class="page-head">
        <h1>Keys</h1>
      </div>
      {canWrite ? <CreateKeyForm mode="operator" plans={plans.data?.items} onCreated={() => setRefresh((n) => n + 1)} /> : null}
      <form
        class="filters"
        role="search"
        aria-label="Filter keys"
        onSubmit={(e) => {
          e.preventDefault();
          apply({ customer: customer.trim() || undefined });
        }}
      >
        <div class="field">
          <label for="filter-customer">Customer</label>
          <input id="filter-customer" value={customer} placeholder="any" onInput={(e) => setCustomer((e.target as HTMLInputElement).value)} />
        </div>
        <div class="field">
          <label for="filter-plan">Plan</label>
          <select id="filter-plan" value={filters.plan_id ?? ''} onChange={(e) => apply({ plan: (e.target as HTMLSelectElement).value || undefined })}>
            <option value="">any</option>
            {(plans.data?.items ?? []).map((p) => (
              <option key={p.id} value={p.id}>
                {p.id}
              </option>
            ))}
            {filters.plan_id && !plans.data?.items.some((p) => p.id === filters.plan_id) ? <option value={filters.plan_id}>{filters.plan_id}</option> : null}
          </select>
        </div>
        <div class="field">
          <label for="filter-status">Status</label>
          <select id="filter-status" value={filters.status ?? ''} onChange={(e) => apply({ status: (e.target as HTMLSelectElement).value || undefined })}>
            <option value="">any</option>
            <option value="active">active</option>
            <option value="disabled">disabled</option>
            <option value="revoked">revoked</option>
          </select>
        </div>
        <button type="submit" class="secondary">
          Filter
        </button>
      </form>
      <KeysTable mode="operator" canWrite={canWrite} filters={filters} refresh={refresh} label="Keys" />
    </>
  );
}
