// Run with `node --experimental-websocket` (Node 20) or Node 22+: the client with the
// platform's standard WebSocket, as in a browser (no `WebSocket` option), including a
// reconnection after the broker is killed. Usage: node ... standard-websocket.mjs DATA_DIR
// Prints "ok" and exits 0 on success.

import assert from 'node:assert/strict';

import { MusterClient } from '../muster.js';
import { sleep, startBroker, until } from './broker.mjs';

const dataDir = process.argv[2];
assert.equal(typeof globalThis.WebSocket, 'function', 'a global WebSocket');
let broker = await startBroker({ dataDir });
try {
  const client = new MusterClient({ url: broker.url, agent: 'link', topics: ['tasks'] });
  const events = [];
  const statuses = [];
  client.on('event', (e) => events.push(e));
  client.on('status', (s) => statuses.push(s));
  await client.ready();
  const task = await client.createTask({ title: 'from the standard WebSocket' });
  await until(() => events.length === 1, 'the event');
  assert.equal(events[0].data.task.id, task.id);

  const port = broker.port;
  await broker.kill('SIGKILL');
  await until(() => client.status === 'reconnecting', 'reconnecting');
  await sleep(300); // some attempts fail while nothing listens
  broker = await startBroker({ dataDir, port });
  await until(() => client.status === 'open', 'open again', 8000);
  const claimed = await client.claim(task.id);
  assert.equal(claimed.claim?.agent, 'link');
  await until(() => events.length === 2, 'the claim event');
  assert.deepEqual(events.map((e) => e.type), ['task.created', 'task.claimed']);
  assert.deepEqual(statuses, ['open', 'reconnecting', 'open']);
  client.close();
  console.log('ok');
} finally {
  await broker.kill();
}
