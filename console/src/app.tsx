import { useEffect, useState } from 'preact/hooks';
import { ApiError, api } from './api';
import { ErrorBox, Loading } from './components/ui';
import { completeSignIn, isCallback, loadConfig, type ConsoleConfig } from './oidc';
import { CustomerLookup, CustomerPage } from './pages/CustomerPage';
import { KeysPage } from './pages/KeysPage';
import { Overview } from './pages/Overview';
import { Plans } from './pages/Plans';
import { Portal } from './pages/Portal';
import { SignIn } from './pages/SignIn';
import { href, useRoute, type Route } from './router';
import { clearSession, jwtPayload, loadSession, roleFromClaim, saveSession, withPendingToken, type Role, type Session } from './session';

/**
 * Works out what a token may do, by asking the API (reads only): GET /v1/plans answers admin
 * and read_only; a customer gets 403 there and uses GET /v1/me. admin and read_only differ only
 * in writes, so a JWT's role claim tells them apart; the admin token (not a JWT) is admin.
 */
async function resolveSession(token: string, config: ConsoleConfig): Promise<Session> {
  if (!token) throw new Error('Paste a token first.');
  const claims = jwtPayload(token);
  const who = claims
    ? String(claims.email ?? claims.preferred_username ?? claims.name ?? claims.sub ?? 'signed in')
    : 'admin token';
  const exp = typeof claims?.exp === 'number' ? claims.exp : undefined;
  return withPendingToken(token, async () => {
    try {
      await api.listPlans();
      // A JWT's claim decides; one that names no role the console knows may still read (the
      // server let it), so it is shown as read_only: no write buttons, nothing wrongly offered.
      const role: Role = !claims ? 'admin' : roleFromClaim(claims[config.role_claim ?? 'tollgate_role']) === 'admin' ? 'admin' : 'read_only';
      return { token, role, who, exp };
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 403) throw e;
    }
    try {
      const me = await api.getMe();
      return { token, role: 'customer', customerId: me.customer_id, who, exp };
    } catch (e) {
      // A customer Tollgate does not know yet: still a customer session; the portal says so.
      if (e instanceof ApiError && e.status === 404) return { token, role: 'customer', who, exp };
      throw e;
    }
  });
}

const ROLE_LABEL: Record<Role, string> = { admin: 'admin', read_only: 'read only', customer: 'customer' };

export function App() {
  const [config, setConfig] = useState<ConsoleConfig | null>(null);
  const [session, setSession] = useState<Session | null>(() => {
    const s = loadSession();
    if (s?.exp && s.exp * 1000 < Date.now()) {
      clearSession();
      return null;
    }
    return s;
  });
  const [signInError, setSignInError] = useState<unknown>();
  const [callbackBusy, setCallbackBusy] = useState(isCallback());
  const route = useRoute();

  const signIn = async (token: string, cfg: ConsoleConfig) => {
    const s = await resolveSession(token, cfg);
    saveSession(s);
    setSignInError(undefined);
    setSession(s);
  };

  useEffect(() => {
    loadConfig().then(async (cfg) => {
      setConfig(cfg);
      if (isCallback()) {
        try {
          const { token, returnHash } = await completeSignIn();
          await signIn(token, cfg);
          if (returnHash && returnHash !== location.hash) location.hash = returnHash;
        } catch (e) {
          setSignInError(e);
        } finally {
          setCallbackBusy(false);
        }
      }
    });
    const out = () => {
      clearSession();
      setSession(null);
    };
    addEventListener('tollgate:signout', out);
    return () => removeEventListener('tollgate:signout', out);
  }, []);

  useEffect(() => {
    document.title = session ? `${pageTitle(route, session.role)} · Tollgate console` : 'Sign in · Tollgate console';
  }, [route, session]);

  if (!config) return <Loading what="Starting" />;
  if (!session) {
    return <SignIn config={config} onToken={(t) => signIn(t, config)} error={signInError} busy={callbackBusy} />;
  }
  const operator = session.role !== 'customer';
  const section = route.parts[0] ?? '';
  const nav = operator
    ? [
        ['', 'Overview'],
        ['plans', 'Plans'],
        ['keys', 'Keys'],
        ['customers', 'Customers'],
      ]
    : [['', 'Your keys']];
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById('main')?.focus())}>
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Tollgate</span>
        <nav aria-label="Main">
          <ul>
            {nav.map(([p, label]) => (
              <li key={p}>
                <a href={href(p ? [p] : [])} aria-current={section === p || (p === '' && section === 'overview') ? 'page' : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span class={`badge role-${session.role}`} data-testid="role">
            {ROLE_LABEL[session.role]}
          </span>{' '}
          <span class="small muted">{session.customerId ?? session.who}</span>{' '}
          <button type="button" class="secondary small" onClick={() => dispatchEvent(new Event('tollgate:signout'))}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {operator ? <OperatorPage route={route} canWrite={session.role === 'admin'} /> : <CustomerRoutes route={route} />}
      </main>
    </>
  );
}

function pageTitle(route: Route, role: Role): string {
  const p = route.parts;
  if (role === 'customer') return 'Your keys';
  switch (p[0]) {
    case 'plans':
      return 'Plans';
    case 'keys':
      return 'Keys';
    case 'customers':
      return p[1] ? `Customer ${p[1]}` : 'Customers';
    default:
      return 'Overview';
  }
}

function OperatorPage({ route, canWrite }: { route: Route; canWrite: boolean }) {
  const p = route.parts;
  switch (p[0] ?? '') {
    case '':
    case 'overview':
      return <Overview />;
    case 'plans':
      return <Plans canWrite={canWrite} />;
    case 'keys':
      return <KeysPage route={route} canWrite={canWrite} />;
    case 'customers':
      return p[1] ? <CustomerPage key={p[1]} id={p[1]} canWrite={canWrite} /> : <CustomerLookup />;
    default:
      return <NotFound />;
  }
}

function CustomerRoutes({ route }: { route: Route }) {
  if (route.parts.length === 0) return <Portal />;
  return (
    <>
      <h1>Not available</h1>
      <ErrorBox error={new ApiError(403, 'forbidden', 'This page is for the operator; your account can manage its own keys.')} />
      <p>
        <a href={href([])}>Back to your keys</a>
      </p>
    </>
  );
}

function NotFound() {
  return (
    <>
      <h1>Page not found</h1>
      <p>
        <a href={href([])}>Back to the overview</a>
      </p>
    </>
  );
}
