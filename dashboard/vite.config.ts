import { defineConfig } from 'vite';

// `npm run dev` serves the dashboard with hot reload and forwards the API to a
// running daemon (RUNTA_ENDPOINT, default http://127.0.0.1:8080).
const api = process.env.RUNTA_ENDPOINT ?? 'http://127.0.0.1:8080';

export default defineConfig({
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: { target: 'es2022', chunkSizeWarningLimit: 700, sourcemap: false },
  server: {
    proxy: {
      '/v1': { target: api, ws: true, changeOrigin: true },
      '/healthz': { target: api, changeOrigin: true },
    },
  },
});
