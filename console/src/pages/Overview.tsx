import { api, DENIAL_CODES, type Stats } from '../api';
import { Chart, colorFor, dayRange, type Series } from '../components/Chart';
import { ErrorBox, Loading, fmtNum, fmtTime, useLoad } from '../components/ui';
import { href } from '../router';

const DAYS = 30;

function seriesOf(stats: Stats): { days: string[]; series: Series[]; codes: string[] } {
  const sorted = [...stats.days].sort((a, b) => a.day.localeCompare(b.day));
  const first = sorted[0]?.day ?? stats.day;
  const last = sorted.length ? sorted[sorted.length - 1].day : stats.day;
  const days = dayRange(first, last > stats.day ? last : stats.day);
  const byDay = new Map(sorted.map((d) => [d.day, d]));
  const seen = new Set<string>();
  for (const d of sorted) for (const [c, n] of Object.entries(d.denied_by_code ?? {})) if (n) seen.add(c);
  // The codes with denials, in the order the authorizer checks them.
  const codes = DENIAL_CODES.filter((c) => seen.has(c));
  const series: Series[] = [
    { label: 'allowed', color: colorFor('allowed', 0), values: days.map((d) => byDay.get(d)?.allowed ?? 0) },
    ...codes.map((c, i) => ({
      label: `denied: ${c}`,
      color: colorFor(c, i + 1),
      values: days.map((d) => byDay.get(d)?.denied_by_code?.[c] ?? 0),
    })),
  ];
  if (!codes.length) series.push({ label: 'denied', color: colorFor('denied', 1), values: days.map((d) => byDay.get(d)?.denied ?? 0) });
  return { days, series, codes };
}

export function Overview() {
  const stats = useLoad((signal) => api.getStats(DAYS, signal), []);
  const s = stats.data;
  const chart = s ? seriesOf(s) : null;
  const totals = s
    ? s.days.reduce(
        (acc, d) => {
          acc.allowed += d.allowed;
          acc.denied += d.denied;
          for (const [c, n] of Object.entries(d.denied_by_code ?? {})) acc.byCode[c] = (acc.byCode[c] ?? 0) + (n ?? 0);
          return acc;
        },
        { allowed: 0, denied: 0, byCode: {} as Record<string, number> },
      )
    : null;
  return (
    <>
      <div class="page-head">
        <h1>Overview</h1>
        <button type="button" class="secondary" onClick={stats.reload} disabled={stats.loading}>
          Refresh
        </button>
      </div>
      <p class="muted">As of the last usage rollup{s ? ` (day ${s.day}, UTC)` : ''}; the last {DAYS} days.</p>
      {stats.loading && !s ? <Loading what="Loading statistics" /> : null}
      <ErrorBox error={stats.error} onRetry={stats.reload} title="Statistics" />
      {s && chart && totals ? (
        <>
          <section aria-labelledby="totals-title">
            <h2 id="totals-title" class="visually-hidden">
              Totals
            </h2>
            <dl class="tiles" data-testid="totals">
              <div>
                <dt>Allowed</dt>
                <dd data-testid="total-allowed">{fmtNum(totals.allowed)}</dd>
              </div>
              <div>
                <dt>Denied</dt>
                <dd data-testid="total-denied">{fmtNum(totals.denied)}</dd>
              </div>
              {Object.entries(totals.byCode)
                .filter(([, n]) => n > 0)
                .map(([c, n]) => (
                  <div key={c}>
                    <dt>
                      <code>{c}</code>
                    </dt>
                    <dd data-testid={`total-${c}`}>{fmtNum(n)}</dd>
                  </div>
                ))}
            </dl>
          </section>
          <Chart id="requests" title="Requests per day (UTC): allowed, and denied by code" days={chart.days} series={chart.series} />
          <div class="columns">
            <section aria-labelledby="top-customers-title">
              <h2 id="top-customers-title">Top customers on {s.day}</h2>
              {s.top_customers.length ? (
                <table>
                  <thead>
                    <tr>
                      <th scope="col">Customer</th>
                      <th scope="col" class="num">
                        Allowed
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {s.top_customers.map((c) => (
                      <tr key={c.customer_id}>
                        <td>
                          <a href={href(['customers', c.customer_id])}>{c.customer_id}</a>
                        </td>
                        <td class="num">{fmtNum(c.allowed)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              ) : (
                <p class="muted">No traffic that day.</p>
              )}
            </section>
            <section aria-labelledby="top-keys-title">
              <h2 id="top-keys-title">Top keys on {s.day}</h2>
              {s.top_keys.length ? (
                <table>
                  <thead>
                    <tr>
                      <th scope="col">Key</th>
                      <th scope="col">Customer</th>
                      <th scope="col" class="num">
                        Allowed
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {s.top_keys.map((k) => (
                      <tr key={k.key_id}>
                        <td class="mono small">{k.key_id}</td>
                        <td>
                          <a href={href(['customers', k.customer_id])}>{k.customer_id}</a>
                        </td>
                        <td class="num">{fmtNum(k.allowed)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              ) : (
                <p class="muted">No traffic that day.</p>
              )}
            </section>
          </div>
          <section aria-labelledby="near-quota-title">
            <h2 id="near-quota-title">Keys near their quota</h2>
            {s.near_quota.length ? (
              <table>
                <thead>
                  <tr>
                    <th scope="col">Key</th>
                    <th scope="col">Customer</th>
                    <th scope="col">Used</th>
                    <th scope="col">Resets</th>
                  </tr>
                </thead>
                <tbody>
                  {s.near_quota.map((k) => (
                    <tr key={k.key_id}>
                      <td class="mono small">{k.key_id}</td>
                      <td>
                        <a href={href(['customers', k.customer_id])}>{k.customer_id}</a>
                      </td>
                      <td>
                        <meter min={0} max={k.limit} value={k.used} high={k.limit * 0.8} optimum={0} aria-label={`${k.key_id} quota used`} />{' '}
                        {fmtNum(k.used)} / {fmtNum(k.limit)} a {k.period}
                      </td>
                      <td class="nowrap">{fmtTime(k.reset)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : (
              <p class="muted">None.</p>
            )}
          </section>
        </>
      ) : null}
    </>
  );
}
