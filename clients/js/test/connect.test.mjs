import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import test from 'node:test';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

import { MusterClient, MusterError } from '../muster.js';
import { freePort, harness, next, record } from '../test-support/broker.mjs';

test('connects, says hello, and receives the event of a task it creates', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const client = h.client({ url: broker.url, agent: 'link', topics: ['tasks'] });
  assert.equal(client.status, 'connecting');
  const welcomed = next(client, 'welcome');
  await client.ready();
  const welcome = await welcomed;
  assert.equal(client.status, 'open');
  assert.match(welcome.epoch, /^[0-9a-f]+$/);
  assert.equal(typeof welcome.head, 'number');
  assert.equal(welcome.resumed, false);
  assert.equal(client.epoch, welcome.epoch);
  assert.equal(client.lastSeq, welcome.head);

  const created = next(client, 'event', (e) => e.type === 'task.created');
  const task = await client.createTask({ title: 'Fix auth redirect', priority: 'P1' });
  assert.equal(task.id, 'T-1');
  assert.equal(task.createdBy, 'link');
  const event = await created;
  assert.equal(event.data.task.id, 'T-1');
  assert.equal(client.lastSeq, event.seq);
});

test('a claim held by another agent is refused with conflict naming the owner', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const link = h.client({ url: broker.url, agent: 'link' });
  const zelda = h.client({ url: broker.url, agent: 'zelda' });
  await Promise.all([link.ready(), zelda.ready()]);
  const task = await link.createTask({ title: 'Fix auth redirect' });
  const claimed = await link.claim(task.id);
  assert.equal(claimed.claim?.agent, 'link');
  await assert.rejects(zelda.claim(task.id), (error) => {
    assert.ok(error instanceof MusterError);
    assert.equal(error.code, 'conflict');
    assert.match(error.message, /link/);
    return true;
  });
});

test('ready() rejects with unreachable when no broker answers, and the client closes', async () => {
  const port = await freePort();
  const client = new MusterClient({ url: `http://127.0.0.1:${port}`, WebSocket });
  await assert.rejects(client.ready(), (error) => error instanceof MusterError && error.code === 'unreachable');
  assert.equal(client.status, 'closed');
});

test('close() ends the session: status closed, pending and later calls reject', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const client = h.client({ url: broker.url, agent: 'link' });
  const statuses = record(client, 'status');
  await client.ready();
  const pending = client.presence();
  client.close();
  await assert.rejects(pending, (error) => error instanceof MusterError && error.code === 'closed');
  await assert.rejects(client.tasks(), (error) => error instanceof MusterError && error.code === 'closed');
  assert.equal(client.status, 'closed');
  assert.deepEqual(statuses, ['open', 'closed']);
});

test('human is sent in hello only when set to true', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const hellos = [];
  class Recording extends WebSocket {
    send(data, ...rest) {
      const frame = JSON.parse(data);
      if (frame.op === 'hello') hellos.push(frame);
      super.send(data, ...rest);
    }
  }
  const plain = h.client({ url: broker.url, agent: 'link', human: false, WebSocket: Recording });
  await plain.ready();
  assert.equal('human' in hellos[0], false);
  const person = h.client({ url: broker.url, agent: 'ganon', human: true, WebSocket: Recording });
  // A broker that predates `human` refuses the field; either way the frame carries it.
  await person.ready().catch((error) => assert.equal(error.code, 'invalid'));
  assert.equal(hellos[1].human, true);
  assert.equal(hellos[1].agent, 'ganon');
});

test('without a WebSocket implementation the constructor says to pass the ws package', () => {
  const saved = globalThis.WebSocket;
  // Node 22+ has a global WebSocket: take it away to see what Node 20 users see.
  delete globalThis.WebSocket;
  try {
    assert.throws(
      () => new MusterClient({ url: 'http://127.0.0.1:4445' }),
      (error) => error instanceof Error && /`ws`/.test(error.message) && /WebSocket/.test(error.message),
    );
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});

test('works with the platform\'s standard WebSocket, as in a browser', async (t) => {
  // Node 22+ has it; Node 20 has it behind --experimental-websocket (since 20.10).
  const flags = typeof globalThis.WebSocket === 'function' ? [] : ['--experimental-websocket'];
  const probe = spawnSync(process.execPath, [...flags, '-e', 'process.exit(typeof WebSocket === "function" ? 0 : 1)']);
  if (probe.status !== 0) return t.skip('this Node has no standard WebSocket');
  const dataDir = harness(t).tempDir();
  const script = fileURLToPath(new URL('../test-support/standard-websocket.mjs', import.meta.url));
  const run = spawnSync(process.execPath, [...flags, script, dataDir], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
  assert.match(run.stdout, /^ok$/m);
});
