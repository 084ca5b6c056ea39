// Prints the gzip size of the app shell (everything index.html loads up front) and of all assets.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

const dist = path.resolve(process.argv[2] ?? process.env.PA_WEB_OUT_DIR ?? 'dist');
const html = fs.readFileSync(path.join(dist, 'index.html'), 'utf8');
const gz = (file) => zlib.gzipSync(fs.readFileSync(file), { level: 9 }).length;
const shellFiles = new Set(['index.html']);
for (const m of html.matchAll(/(?:src|href)="\/([^"]+\.(?:js|css))"/g)) shellFiles.add(m[1]);
let shell = 0;
for (const f of shellFiles) shell += gz(path.join(dist, f));
let all = 0;
const walk = (d) => {
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    if (e.isDirectory()) walk(p); else if (/\.(js|css|html)$/.test(e.name)) all += gz(p);
  }
};
walk(dist);
const kb = (n) => `${(n / 1024).toFixed(1)} kB`;
const goal = 300 * 1024;
console.log(`bundle: shell ${kb(shell)} gzip (${shellFiles.size} files; goal < 300 kB), all js/css/html ${kb(all)} gzip`);
if (shell > goal) console.log('bundle: WARNING the shell is over the 300 kB gzip goal');
