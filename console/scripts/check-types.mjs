// Fails when src/api-types.ts is not what docs/openapi.yaml generates: the spec and the
// console's client have drifted. Fix: npm run gen-types, review, commit.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const tmp = mkdtempSync(join(tmpdir(), 'tollgate-console-types-'));
const out = join(tmp, 'api-types.ts');
try {
  execFileSync(process.execPath, ['node_modules/openapi-typescript/bin/cli.js', '../docs/openapi.yaml', '-o', out], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const fresh = readFileSync(out, 'utf8');
  const committed = readFileSync('src/api-types.ts', 'utf8');
  if (fresh !== committed) {
    const a = committed.split('\n');
    const b = fresh.split('\n');
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    console.error(
      `check-types: src/api-types.ts is out of date with docs/openapi.yaml (first difference at line ${i + 1}):\n` +
        `  committed: ${a[i] ?? '(end of file)'}\n  generated: ${b[i] ?? '(end of file)'}\n` +
        'The spec and the console client have drifted: run `npm run gen-types`, fix any type errors (npm run typecheck), and commit.',
    );
    process.exit(1);
  }
  console.log('check-types: src/api-types.ts matches docs/openapi.yaml');
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
