// The cloud browser's only way out: an HTTP proxy on loopback that Chromium must use for every
// request (navigations, subresources, fetch, WebSockets; `<-loopback>` removes Chromium's
// implicit bypass for localhost). The proxy resolves each host itself, refuses private,
// loopback, link-local, CGNAT, unique-local and metadata addresses (the same rules as svc-tools'
// web_fetch) unless the operator's allow-list names them, and connects to the very address it
// checked, so a second DNS answer cannot differ (no rebinding). Redirects need no special case:
// each hop is a new request through the proxy.

import dns from 'node:dns/promises';
import http from 'node:http';
import net from 'node:net';

/** [network, prefix, why] — judged in this order (the metadata address first). */
const V4_RANGES = [
  ['169.254.169.254', 32, 'a cloud metadata address'],
  ['0.0.0.0', 8, "a 'this network' address"],
  ['10.0.0.0', 8, 'a private address'],
  ['100.64.0.0', 10, 'a carrier-grade NAT address'],
  ['127.0.0.0', 8, 'a loopback address'],
  ['169.254.0.0', 16, 'a link-local address'],
  ['172.16.0.0', 12, 'a private address'],
  ['192.0.0.0', 24, 'an IETF protocol address'],
  ['192.0.2.0', 24, 'a documentation address'],
  ['192.88.99.0', 24, 'a relay address'],
  ['192.168.0.0', 16, 'a private address'],
  ['198.18.0.0', 15, 'a benchmarking address'],
  ['198.51.100.0', 24, 'a documentation address'],
  ['203.0.113.0', 24, 'a documentation address'],
  ['224.0.0.0', 4, 'a multicast address'],
  ['240.0.0.0', 4, 'a reserved address'],
];

function v4ToInt(ip) {
  return ip.split('.').reduce((acc, part) => ((acc << 8) | Number(part)) >>> 0, 0);
}

function inV4(ip, network, prefix) {
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return ((v4ToInt(ip) & mask) >>> 0) === ((v4ToInt(network) & mask) >>> 0);
}

function v4Reason(ip) {
  const hit = V4_RANGES.find(([network, prefix]) => inV4(ip, network, prefix));
  return hit ? hit[2] : null;
}

/** The eight 16-bit groups of an IPv6 address (with an embedded dotted IPv4 tail). */
function v6Groups(ip) {
  let text = ip.toLowerCase().split('%')[0];
  const tail = text.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (tail) {
    const n = v4ToInt(tail[1]);
    text = text.slice(0, -tail[1].length) + `${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head, rest] = text.includes('::') ? text.split('::') : [text, null];
  const left = head ? head.split(':') : [];
  const right = rest ? rest.split(':') : [];
  const fill = rest === null ? [] : Array(8 - left.length - right.length).fill('0');
  return [...left, ...fill, ...right].map((g) => parseInt(g || '0', 16));
}

function groupsToV4(hi, lo) {
  return [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff].join('.');
}

function v6Reason(ip) {
  const g = v6Groups(ip);
  const zero = (from, to) => g.slice(from, to).every((x) => x === 0);
  // Addresses that carry an IPv4 address are judged by it (mapped, NAT64, 6to4).
  if (zero(0, 5) && g[5] === 0xffff) return v4Reason(groupsToV4(g[6], g[7]));
  if (g[0] === 0x64 && g[1] === 0xff9b && zero(2, 6)) return v4Reason(groupsToV4(g[6], g[7]));
  if (g[0] === 0x2002) return v4Reason(groupsToV4(g[1], g[2]));
  if (g[0] === 0xfd00 && g[1] === 0x0ec2 && zero(2, 7) && g[7] === 0x254) return 'a cloud metadata address';
  if (zero(0, 8)) return 'the unspecified address';
  if (zero(0, 7) && g[7] === 1) return 'a loopback address';
  if ((g[0] & 0xfe00) === 0xfc00) return 'a unique-local address';
  if ((g[0] & 0xffc0) === 0xfe80) return 'a link-local address';
  if ((g[0] & 0xffc0) === 0xfec0) return 'a site-local address';
  if ((g[0] & 0xff00) === 0xff00) return 'a multicast address';
  if (g[0] === 0x2001 && g[1] === 0x0db8) return 'a documentation address';
  if (g[0] === 0x0100 && zero(1, 4)) return 'a discard address';
  if (zero(0, 6)) return 'an IPv4-compatible address';
  return null;
}

/** Why `ip` is not a public address, or null when it is. */
export function nonPublicReason(ip) {
  const family = net.isIP(ip);
  if (family === 4) return v4Reason(ip);
  if (family === 6) return v6Reason(ip);
  return 'not an IP address';
}

/**
 * Operator exceptions: `10.0.0.0/8, 127.0.0.1, intranet.example.com` (CIDRs, addresses, host
 * names), the syntax of svc-tools' PA_TOOLS_NET_ALLOW.
 */
export class AllowList {
  constructor(value = '') {
    this.blocks = new net.BlockList();
    this.hosts = new Set();
    for (const entry of value.split(',').map((e) => e.trim()).filter(Boolean)) {
      const [address, prefix] = entry.split('/');
      const family = net.isIP(address);
      if (family && (prefix === undefined || /^\d+$/.test(prefix))) {
        const type = family === 4 ? 'ipv4' : 'ipv6';
        const bits = prefix === undefined ? (family === 4 ? 32 : 128) : Number(prefix);
        if (bits > (family === 4 ? 32 : 128)) throw new Error(`${JSON.stringify(entry)}: prefix too long`);
        this.blocks.addSubnet(address, bits, type);
      } else if (/^[A-Za-z0-9.-]+$/.test(entry)) {
        this.hosts.add(entry.toLowerCase().replace(/\.$/, ''));
      } else {
        throw new Error(`${JSON.stringify(entry)} is neither a CIDR nor a host name`);
      }
    }
  }

  allowsIp(ip) {
    const family = net.isIP(ip);
    return family !== 0 && this.blocks.check(ip, family === 4 ? 'ipv4' : 'ipv6');
  }

  allowsHost(host) {
    return this.hosts.has(host.toLowerCase().replace(/\.$/, ''));
  }
}

export class Refused extends Error {}

/**
 * Resolves `host` and returns the one address to connect to, or throws Refused. A host name
 * on the allow-list may resolve anywhere; otherwise every address must be public or allowed.
 */
export async function checkedAddress(host, allow, lookup = dns.lookup) {
  const bare = host.replace(/^\[|\]$/g, '');
  if (!bare) throw new Refused('no host');
  const literal = net.isIP(bare) !== 0;
  const addresses = literal ? [bare] : (await lookup(bare, { all: true, verbatim: true })).map((a) => a.address);
  if (addresses.length === 0) throw new Refused(`${bare} does not resolve`);
  if (!literal && allow.allowsHost(bare)) return addresses[0];
  for (const address of addresses) {
    const why = nonPublicReason(address);
    if (why && !allow.allowsIp(address)) {
      throw new Refused(`${bare} is ${why} (${address}); the cloud browser only reaches the public web`);
    }
  }
  return addresses[0];
}

/** `host:port` (with `[v6]:port`) → {host, port}. */
function splitAuthority(authority, defaultPort) {
  const m = authority.match(/^\[([^\]]+)\](?::(\d+))?$/) || authority.match(/^([^:]+)(?::(\d+))?$/);
  if (!m) return null;
  const port = m[2] === undefined ? defaultPort : Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return null;
  return { host: m[1], port };
}

function refuse(socketOrResponse, status, message) {
  const body = `${message}\n`;
  if (socketOrResponse instanceof http.ServerResponse) {
    socketOrResponse.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'x-pa-egress': 'refused' });
    socketOrResponse.end(body);
  } else {
    socketOrResponse.end(
      `HTTP/1.1 ${status} Refused\r\ncontent-type: text/plain; charset=utf-8\r\nx-pa-egress: refused\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  }
}

/**
 * Starts the egress proxy on 127.0.0.1 (a free port). `onRefused(host, reason)` hears every
 * refusal, so a tool can tell the model why a page did not load.
 */
export async function startEgressProxy({ allow = new AllowList(), lookup, onRefused = () => {} } = {}) {
  const server = http.createServer(async (req, res) => {
    // A plain-HTTP request in absolute form: GET http://host:port/path.
    let url;
    try {
      url = new URL(req.url);
    } catch {
      return refuse(res, 400, 'the proxy takes absolute http:// URLs only');
    }
    if (url.protocol !== 'http:') return refuse(res, 400, `${url.protocol} is not proxied`);
    let address;
    try {
      address = await checkedAddress(url.hostname, allow, lookup);
    } catch (err) {
      onRefused(url.hostname, err.message);
      return refuse(res, 403, `refused: ${err.message}`);
    }
    const headers = { ...req.headers };
    delete headers['proxy-connection'];
    delete headers['proxy-authorization'];
    const upstream = http.request(
      { host: address, port: Number(url.port || 80), method: req.method, path: url.pathname + url.search, headers, setHost: false },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', (err) => {
      if (!res.headersSent) refuse(res, 502, `request failed: ${err.code ?? err.message}`);
      else res.destroy();
    });
    req.pipe(upstream);
  });
  // HTTPS and WebSockets: a tunnel to the checked address.
  server.on('connect', async (req, client, head) => {
    client.on('error', () => {});
    const target = splitAuthority(req.url ?? '', 443);
    if (!target) return refuse(client, 400, 'bad CONNECT target');
    let address;
    try {
      address = await checkedAddress(target.host, allow, lookup);
    } catch (err) {
      onRefused(target.host, err.message);
      return refuse(client, 403, `refused: ${err.message}`);
    }
    const upstream = net.connect(target.port, address, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head?.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
    server,
  };
}
