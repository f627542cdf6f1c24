import { useState } from 'preact/hooks';
import { ErrorBox } from '../components/ui';
import { startSignIn, type ConsoleConfig } from '../oidc';

export function SignIn({
  config,
  onToken,
  error: outerError,
  busy: outerBusy,
}: {
  config: ConsoleConfig;
  onToken: (token: string) => Promise<void>;
  error?: unknown;
  busy?: boolean;
}) {
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const oidc = config.oidc;
  let issuerName = oidc?.issuer ?? '';
  try {
    if (oidc) issuerName = new URL(oidc.issuer).host;
  } catch {
    /* not a URL: show it as is */
  }
  return (
    <main class="signin" id="main">
      <h1>Tollgate console</h1>
      <p class="muted">Sign in to manage plans, API keys and customers, or your own keys.</p>
      {outerBusy ? (
        <p role="status" class="loading">
          Signing in…
        </p>
      ) : null}
      <ErrorBox error={outerError ?? error} title="Sign-in" />
      {oidc ? (
        <section aria-labelledby="oidc-title" class="panel">
          <h2 id="oidc-title">With your identity provider</h2>
          <button
            type="button"
            disabled={busy || outerBusy}
            onClick={async () => {
              setBusy(true);
              setError(undefined);
              try {
                await startSignIn(oidc);
              } catch (e) {
                setError(e);
                setBusy(false);
              }
            }}
          >
            Sign in with {issuerName}
          </button>
        </section>
      ) : null}
      <section aria-labelledby="token-title" class="panel">
        <h2 id="token-title">With a token</h2>
        <form
          onSubmit={async (e) => {
            e.preventDefault();
            setBusy(true);
            setError(undefined);
            try {
              await onToken(token.trim());
            } catch (err) {
              setError(err);
            } finally {
              setBusy(false);
            }
          }}
        >
          <div class="field">
            <label for="token">Admin token or JWT</label>
            <input
              id="token"
              type="password"
              required
              autocomplete="off"
              spellcheck={false}
              value={token}
              aria-describedby="token-hint"
              onInput={(e) => setToken((e.target as HTMLInputElement).value)}
            />
            <span class="hint" id="token-hint">
              The local stack prints its admin token (<code>tga_…</code>) at start. Kept in this tab only (sessionStorage) until you sign
              out or close it.
            </span>
          </div>
          <button type="submit" disabled={busy || outerBusy || !token.trim()}>
            {busy ? 'Signing in…' : 'Sign in'}
          </button>
        </form>
      </section>
    </main>
  );
}
