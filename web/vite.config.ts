/// <reference types="vitest/config" />
import { fileURLToPath, URL } from 'node:url';

import { quasar, transformAssetUrls } from '@quasar/vite-plugin';
import vue from '@vitejs/plugin-vue';
import { defineConfig } from 'vite';

export default defineConfig({
  plugins: [
    vue({ template: { transformAssetUrls } }),
    quasar({ sassVariables: false }),
  ],
  resolve: { alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) } },
  build: {
    target: 'es2022',
    // Hashed file names under assets/: the gateway serves them as immutable.
    assetsDir: 'assets',
    // Tests build into their own folder so they never touch the dist a running gateway serves.
    outDir: process.env.PA_WEB_OUT_DIR || 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 800,
  },
  server: {
    port: 9000,
    proxy: { '/v1': { target: 'http://127.0.0.1:8080', ws: true } },
  },
  test: {
    environment: 'node',
    include: ['test/**/*.test.ts'],
  },
});
