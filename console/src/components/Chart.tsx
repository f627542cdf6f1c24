// A per-day chart (uPlot, loaded on first use) with the same numbers as a table beside it.
import { useEffect, useRef, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import { fmtNum } from './ui';

export interface Series {
  label: string;
  values: number[];
  color: string;
}

export const COLORS: Record<string, string> = {
  allowed: '#2b6cb0',
  denied: '#c53030',
  key_expired: '#805ad5',
  key_revoked: '#4a5568',
  key_disabled: '#a0aec0',
  subscription_inactive: '#d69e2e',
  insufficient_scope: '#319795',
  rate_limited: '#dd6b20',
  quota_exceeded: '#c53030',
  reported: '#2f855a',
  pending: '#d69e2e',
  unbilled: '#718096',
};
const FALLBACK = ['#3182ce', '#e53e3e', '#38a169', '#d69e2e', '#805ad5', '#319795', '#dd6b20'];
export function colorFor(name: string, i: number): string {
  return COLORS[name] ?? FALLBACK[i % FALLBACK.length];
}

/** Every UTC day from `from` to `to` (YYYY-MM-DD), inclusive. */
export function dayRange(from: string, to: string): string[] {
  const out: string[] = [];
  const end = Date.parse(`${to}T00:00:00Z`);
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= end && out.length < 400; t += 86400000) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

export function today(): string {
  return new Date().toISOString().slice(0, 10);
}

export function daysAgo(n: number, from = today()): string {
  return new Date(Date.parse(`${from}T00:00:00Z`) - n * 86400000).toISOString().slice(0, 10);
}

export function Chart({ title, days, series, id }: { title: string; days: string[]; series: Series[]; id: string }) {
  const box = useRef<HTMLDivElement>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let plot: uPlot | undefined;
    let ro: ResizeObserver | undefined;
    let cancelled = false;
    Promise.all([import('uplot'), import('uplot/dist/uPlot.min.css')])
      .then(([{ default: UPlot }]) => {
        if (cancelled || !box.current) return;
        const el = box.current;
        const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
        const opts: uPlot.Options = {
          width: Math.max(el.clientWidth, 280),
          height: 240,
          tzDate: (ts) => UPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
          scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.1] } },
          axes: [{}, { size: 56 }],
          legend: { live: true },
          cursor: { drag: { x: false, y: false } },
          series: [
            { label: 'day', value: (_u, v) => (v == null ? '—' : new Date(v * 1000).toISOString().slice(0, 10)) },
            ...series.map((s) => ({
              label: s.label,
              stroke: s.color,
              width: 2,
              fill: s.color + '14',
              points: { show: days.length <= 45, size: 5 },
            })),
          ],
        };
        plot = new UPlot(opts, [xs, ...series.map((s) => s.values)], el);
        ro = new ResizeObserver(() => {
          if (plot && el.clientWidth > 0) plot.setSize({ width: Math.max(el.clientWidth, 280), height: 240 });
        });
        ro.observe(el);
      })
      .catch(() => setFailed(true));
    return () => {
      cancelled = true;
      ro?.disconnect();
      plot?.destroy();
    };
  }, [JSON.stringify(days), JSON.stringify(series)]);

  return (
    <figure class="chart" aria-labelledby={`${id}-caption`}>
      <figcaption id={`${id}-caption`}>{title}</figcaption>
      <div ref={box} class="chart-box" role="img" aria-label={`${title}: chart; the table below has the same numbers`} data-testid={`${id}-chart`} />
      {failed ? <p class="muted">The chart could not be drawn; the table has the numbers.</p> : null}
      <details>
        <summary>Table</summary>
        <div class="table-wrap">
          <table data-testid={`${id}-table`}>
            <caption class="visually-hidden">{title}</caption>
            <thead>
              <tr>
                <th scope="col">Day</th>
                {series.map((s) => (
                  <th scope="col" class="num" key={s.label}>
                    {s.label}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {days
                .map((d, i) => (
                  <tr key={d}>
                    <th scope="row">{d}</th>
                    {series.map((s) => (
                      <td class="num" key={s.label}>
                        {fmtNum(s.values[i])}
                      </td>
                    ))}
                  </tr>
                ))
                .reverse()}
            </tbody>
          </table>
        </div>
      </details>
    </figure>
  );
}
