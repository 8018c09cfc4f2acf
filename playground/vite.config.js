// Builds the playground into ../assets/playground, which the server embeds and
// serves at /playground. Everything the page loads comes from there: no CDN, no
// inline script (the server's Content-Security-Policy forbids both).
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

export default defineConfig({
  base: '/playground/',
  plugins: [react()],
  build: {
    outDir: '../assets/playground',
    emptyOutDir: true,
    // Fonts and icons as files, not data: URIs.
    assetsInlineLimit: 0,
    // No inline module-preload polyfill.
    modulePreload: { polyfill: false },
    sourcemap: false,
    chunkSizeWarningLimit: 8000,
  },
  worker: { format: 'es' },
});
