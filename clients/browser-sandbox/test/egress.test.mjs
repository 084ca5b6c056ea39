// The egress guard on its own: which addresses are refused, the allow-list, and the proxy
// refusing before it connects (a server on 0.0.0.0 that would answer on 127.0.0.2 never
// sees the request).

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, test } from 'node:test';

import { AllowList, Refused, checkedAddress, nonPublicReason, startEgressProxy } from '../src/egress.mjs';

test('private, loopback, link-local, metadata and mapped addresses are not public', () => {
  for (const [ip, why] of [
    ['127.0.0.1', 'loopback'],
    ['127.0.0.2', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.169.254', 'metadata'],
    ['169.254.1.1', 'link-local'],
    ['100.64.0.1', 'carrier-grade'],
    ['0.0.0.0', 'this network'],
    ['224.0.0.1', 'multicast'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'link-local'],
    ['fd00:ec2::254', 'metadata'],
    ['fc00::1', 'unique-local'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['64:ff9b::10.0.0.1', 'private'],
    ['2002:a00:1::', 'private'],
    ['2001:db8::1', 'documentation'],
  ]) {
    const reason = nonPublicReason(ip);
    assert.ok(reason?.includes(why), `${ip}: ${reason}`);
  }
  for (const ip of ['1.1.1.1', '93.184.216.34', '172.32.0.1', '2606:4700::1111', '::ffff:8.8.8.8']) {
    assert.equal(nonPublicReason(ip), null, ip);
  }
  assert.equal(nonPublicReason('example.com'), 'not an IP address');
});

test('the allow-list takes CIDRs, addresses and host names, and refuses the rest', () => {
  const allow = new AllowList('10.0.0.0/8, 127.0.0.1, Intranet.Example.com., fd00::/8');
  assert.ok(allow.allowsIp('10.9.9.9'));
  assert.ok(allow.allowsIp('127.0.0.1'));
  assert.ok(!allow.allowsIp('127.0.0.2'));
  assert.ok(allow.allowsIp('fd00::5'));
  assert.ok(allow.allowsHost('intranet.example.com'));
  assert.ok(!allow.allowsHost('example.com'));
  assert.throws(() => new AllowList('10.0.0.0/99'), /prefix/);
  assert.throws(() => new AllowList('http://x'), /neither/);
});

test('a host is refused when any of its addresses is private (no rebinding through a mixed answer)', async () => {
  const lookup = async (host) =>
    ({
      'mixed.test': [{ address: '93.184.216.34' }, { address: '10.0.0.7' }],
      'public.test': [{ address: '93.184.216.34' }],
      'meta.test': [{ address: '169.254.169.254' }],
    })[host] ?? [];
  const none = new AllowList('');
  assert.equal(await checkedAddress('public.test', none, lookup), '93.184.216.34');
  await assert.rejects(checkedAddress('mixed.test', none, lookup), (e) => e instanceof Refused && /10\.0\.0\.7/.test(e.message));
  await assert.rejects(checkedAddress('meta.test', none, lookup), /metadata/);
  await assert.rejects(checkedAddress('[::1]', none, lookup), /loopback/);
  await assert.rejects(checkedAddress('nowhere.test', none, lookup), /does not resolve/);
  assert.equal(await checkedAddress('meta.test', new AllowList('meta.test'), lookup), '169.254.169.254');
});

let target;
let hits = [];
let proxy;
const refused = [];

before(async () => {
  // Listens on every address, so 127.0.0.2 would answer if the proxy let it through.
  target = http.createServer((req, res) => {
    hits.push(`${req.socket.localAddress} ${req.method} ${req.url}`);
    res.end('hello from the target');
  });
  await new Promise((resolve) => target.listen(0, '0.0.0.0', resolve));
  proxy = await startEgressProxy({ allow: new AllowList('127.0.0.1'), onRefused: (host, why) => refused.push([host, why]) });
});

after(async () => {
  await proxy.close();
  await new Promise((resolve) => target.close(resolve));
});

function viaProxy(url) {
  const p = new URL(proxy.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: p.hostname, port: p.port, path: url, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

function connectViaProxy(authority) {
  const p = new URL(proxy.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(p.port), p.hostname, () => {
      socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    });
    let head = '';
    socket.on('data', (d) => {
      head += d;
      if (head.includes('\r\n\r\n')) {
        socket.destroy();
        resolve(head.split('\r\n')[0]);
      }
    });
    socket.on('error', reject);
  });
}

test('the proxy forwards to an allowed address and refuses a loopback one before connecting', async () => {
  const port = target.address().port;
  hits = [];
  const ok = await viaProxy(`http://127.0.0.1:${port}/page`);
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'hello from the target');
  assert.deepEqual(hits, [`127.0.0.1 GET /page`]);

  hits = [];
  const no = await viaProxy(`http://127.0.0.2:${port}/secret`);
  assert.equal(no.status, 403);
  assert.equal(no.headers['x-pa-egress'], 'refused');
  assert.match(no.body, /loopback/);
  const meta = await viaProxy('http://169.254.169.254/latest/meta-data/');
  assert.equal(meta.status, 403);
  assert.match(meta.body, /metadata/);
  assert.deepEqual(hits, [], 'a refused request reached the server');
  assert.ok(refused.some(([host]) => host === '127.0.0.2'));

  assert.match(await connectViaProxy(`127.0.0.1:${port}`), /^HTTP\/1\.1 200/);
  assert.match(await connectViaProxy(`127.0.0.2:${port}`), /^HTTP\/1\.1 403/);
  assert.match(await connectViaProxy(`[::1]:${port}`), /^HTTP\/1\.1 403/);
  assert.match(await connectViaProxy('nonsense'), /^HTTP\/1\.1 (400|403)/);
  assert.deepEqual(hits, []);
  const notHttp = await viaProxy('ftp://127.0.0.1/x');
  assert.equal(notHttp.status, 400);
});
