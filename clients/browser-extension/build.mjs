// Builds the unpacked extension into dist/ (or $PA_EXTENSION_OUT): checks the manifest (MV3,
// only the permissions this extension is meant to ask for, every referenced file present, no
// remote code) and copies src/. Load dist/ with chrome://extensions → "Load unpacked".

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { checkManifest } from './manifest-check.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, 'src');
const out = path.resolve(process.env.PA_EXTENSION_OUT || path.join(here, 'dist'));

const manifest = JSON.parse(fs.readFileSync(path.join(src, 'manifest.json'), 'utf8'));
const problems = checkManifest(manifest, (f) => fs.existsSync(path.join(src, f)));
for (const file of fs.readdirSync(src).filter((f) => /\.(js|html)$/.test(f))) {
  const text = fs.readFileSync(path.join(src, file), 'utf8');
  if (/<script[^>]+src=["']https?:|import\s[^;]*from\s+["']https?:|\beval\(/.test(text)) problems.push(`${file} loads remote code or evals`);
}
if (problems.length) {
  console.error(`extension build failed:\n- ${problems.join('\n- ')}`);
  process.exit(1);
}
fs.rmSync(out, { recursive: true, force: true });
fs.cpSync(src, out, { recursive: true });
const bytes = fs.readdirSync(out).reduce((n, f) => n + fs.statSync(path.join(out, f)).size, 0);
console.log(`extension ${manifest.name} ${manifest.version} built into ${out} (${fs.readdirSync(out).length} files, ${bytes} bytes)`);
