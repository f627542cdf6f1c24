import { resolve } from 'node:path';

/** The local stack binary (cargo build -p tollgate-dev --bin tollgate). */
export const TOLLGATE_BIN = resolve(process.env.TOLLGATE_BIN ?? '../target/debug/tollgate');

/** Where each page's screenshot goes. */
export const SCREENSHOTS = resolve(process.env.CONSOLE_SCREENSHOTS ?? '../target/console-screenshots');

/** What the tests read (set by global-setup, inherited by the workers). */
export function env() {
  const need = (k: string) => {
    const v = process.env[k];
    if (!v) throw new Error(`${k} is not set: the global setup did not run`);
    return v;
  };
  return {
    /** The local stack: the console at `${consoleOrigin}/console/`, beside /v1, /proxy and the rollup. */
    consoleOrigin: need('TG_STACK_URL'),
    stack: need('TG_STACK_URL'),
    adminToken: need('TG_ADMIN_TOKEN'),
    idp: need('TG_IDP_URL'),
  };
}
