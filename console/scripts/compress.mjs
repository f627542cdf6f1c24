// Writes precompressed siblings (.br and .gz) next to every .js, .css, .html and .svg file under
// the given directory. Deterministic: same input bytes give the same output bytes (gzip with no
// file name and mtime 0, fixed levels), so rebuilding unchanged sources changes nothing.
import { readdirSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const dir = process.argv[2] ?? 'dist';
const EXT = /\.(js|css|html|svg)$/;

function* walk(d) {
  for (const name of readdirSync(d).sort()) {
    const p = join(d, name);
    if (statSync(p).isDirectory()) yield* walk(p);
    else yield p;
  }
}

let count = 0;
for (const file of walk(dir)) {
  if (!EXT.test(file)) continue;
  const data = readFileSync(file);
  const br = brotliCompressSync(data, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
      [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
      [constants.BROTLI_PARAM_SIZE_HINT]: data.length,
    },
  });
  // Node's gzip header has mtime 0 and no file name.
  const gz = gzipSync(data, { level: 9 });
  writeFileSync(`${file}.br`, br);
  writeFileSync(`${file}.gz`, gz);
  count++;
}
console.log(`compress: ${count} files in ${dir} with .br and .gz siblings`);
