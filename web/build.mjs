// Bundles src/main.ts and src/app.css into dist/ with index.html, whose
// references get a content hash as query so a new build is never served stale.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";

const dist = new URL("./dist/", import.meta.url);
await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

const result = await build({
  entryPoints: { app: "src/main.ts", "app-style": "src/app.css" },
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022", "chrome109", "firefox115", "safari16"],
  outdir: "dist",
  sourcemap: "linked",
  legalComments: "none",
  metafile: true,
  logLevel: "warning",
});

const js = await readFile(new URL("app.js", dist));
const css = await readFile(new URL("app-style.css", dist));
await writeFile(new URL("app.css", dist), css);
await rm(new URL("app-style.css", dist));
await rm(new URL("app-style.css.map", dist), { force: true });
const hash = (b) => createHash("sha256").update(b).digest("hex").slice(0, 10);
const html = (await readFile(new URL("./index.html", import.meta.url), "utf8"))
  .replace('href="app.css"', `href="app.css?v=${hash(css)}"`)
  .replace('src="app.js"', `src="app.js?v=${hash(js)}"`);
await writeFile(new URL("index.html", dist), html);

const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log(
  `dist/app.js ${js.length} bytes (${kb(js.length)}), gzip ${gzipSync(js, { level: 9 }).length} bytes; ` +
    `dist/app.css ${css.length} bytes; ${Object.keys(result.metafile.inputs).length} inputs`,
);
