// The frames the extension sends and how it reads the gateway's (the Rust definition checks
// them too: libs/pa-device-wire/tests/roundtrip.rs).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { helloFrame, parseGatewayFrame, pingFrame, protocols, resultFrame } from '../src/frames.js';

test('the frames it sends', () => {
  assert.deepEqual(JSON.parse(helloFrame({ agentVersion: '1', platform: 'p', tools: [] })), {
    type: 'hello',
    agent_version: '1',
    platform: 'p',
    read_only: false,
    tools: [],
  });
  assert.deepEqual(JSON.parse(resultFrame('c1', 42, true)), { type: 'result', id: 'c1', content: '42', is_error: true });
  assert.equal(pingFrame(), '{"type":"ping"}');
  assert.deepEqual(protocols('t'), ['pa-device', 'pa-device-token.t']);
});

test('gateway frames are read with their defaults, anything else is ignored', () => {
  assert.deepEqual(parseGatewayFrame('{"type":"call","id":"c","tool":"click"}'), {
    type: 'call',
    id: 'c',
    tool: 'click',
    arguments: {},
    run_id: '',
  });
  assert.deepEqual(parseGatewayFrame('{"type":"welcome","device_id":"d"}'), { type: 'welcome', device_id: 'd', name: '' });
  for (const bad of ['', 'x', 'null', '[]', '{"type":"call","tool":"click"}', '{"type":"nope"}', '{"type":"cancel","id":1}']) {
    assert.equal(parseGatewayFrame(bad), null, bad);
  }
  assert.equal(parseGatewayFrame(new ArrayBuffer(4)), null);
});
