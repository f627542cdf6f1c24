import { defineConfig } from 'vite';

// Served by the Rust side at /console/ (same origin as /v1/...). Hash routing, so no server
// routes beyond "any unknown path under /console/ is index.html".
export default defineConfig({
  base: '/console/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    // No inline polyfill script: the page runs under `script-src 'self'`.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    cssCodeSplit: true,
    reportCompressedSize: false,
    rollupOptions: {
      output: {
        entryFileNames: 'assets/[name]-[hash].js',
        chunkFileNames: 'assets/[name]-[hash].js',
        assetFileNames: 'assets/[name]-[hash][extname]',
      },
    },
  },
  server: {
    // `npm run dev`: the console on Vite, the API on a local stack (make dev).
    proxy: {
      '/v1': process.env.TOLLGATE_URL ?? 'http://127.0.0.1:3000',
      '/internal': process.env.TOLLGATE_URL ?? 'http://127.0.0.1:3000',
    },
  },
});
