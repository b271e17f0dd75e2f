import { defineConfig } from "vite";

// Served by the daemon under /console/ (packages/server/src/api/console-assets.ts), with a strict
// Content-Security-Policy: no inline script, so no module-preload polyfill injected into the page.
export default defineConfig({
  base: "/console/",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: { outDir: "dist", emptyOutDir: true, modulePreload: { polyfill: false }, assetsInlineLimit: 0, chunkSizeWarningLimit: 1024 },
});
