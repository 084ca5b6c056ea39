// The extension's half of the device-frame round trip (libs/pa-device-wire/tests/roundtrip.rs
// runs it): prints the frames src/frames.js builds, one JSON line each (`{case, text}`, `text`
// being exactly what the socket sends), then reads gateway frames from stdin, one per line, and
// prints what the extension reads from each (`{parsed}`; null = ignored).

import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import {
  CONNECT_PATH,
  DEVICE_PROTOCOL,
  ENROLL_PATH,
  KEEPALIVE_MS,
  TOKEN_PROTOCOL_PREFIX,
  enrollBody,
  helloFrame,
  parseGatewayFrame,
  pingFrame,
  protocols,
  resultFrame,
} from './src/frames.js';
import { TOOLS, connectUrl } from './src/tools.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const manifest = JSON.parse(fs.readFileSync(path.join(here, 'src', 'manifest.json'), 'utf8'));
const out = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);

out({
  case: 'constants',
  value: {
    connect_path: CONNECT_PATH,
    enroll_path: ENROLL_PATH,
    device_protocol: DEVICE_PROTOCOL,
    token_protocol_prefix: TOKEN_PROTOCOL_PREFIX,
    keepalive_ms: KEEPALIVE_MS,
    connect_url: connectUrl('https://gw.example'),
    protocols: protocols('tok'),
  },
});
// As background.js sends them.
out({
  case: 'hello',
  text: helloFrame({ agentVersion: manifest.version, platform: 'chrome-extension/Linux x86_64', readOnly: false, tools: TOOLS }),
});
out({ case: 'result_ok', text: resultFrame('c1', 'the page\'s text: «ok»\n') });
out({ case: 'result_error', text: resultFrame('c2', 'refused: file: URLs are not opened', true) });
out({ case: 'ping', text: pingFrame() });
out({ case: 'enroll', text: enrollBody({ code: ' ABCD-1234 ', name: '' }) });
out({ case: 'end' });

for await (const line of readline.createInterface({ input: process.stdin })) {
  out({ parsed: parseGatewayFrame(line) });
}
