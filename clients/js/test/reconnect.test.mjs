import assert from 'node:assert/strict';
import test from 'node:test';
import WebSocket from 'ws';

import { MusterClient, MusterError } from '../muster.js';
import { freePort, harness, next, record, sleep, until } from '../test-support/broker.mjs';

/** Creates a task over plain HTTP, as a script would. */
async function createOverHttp(url, title) {
  const response = await fetch(`${url}/tasks`, { method: 'POST', body: JSON.stringify({ title }) });
  assert.equal(response.status, 201, await response.clone().text());
  return (await response.json()).task;
}

test('after a broker crash the client reconnects and resumes: missed events once, in order', async (t) => {
  const h = harness(t);
  const dataDir = h.tempDir();
  const port = await freePort();
  let broker = await h.broker({ dataDir, port });
  // While `away`, the client's reconnection attempts go to a port where nothing listens,
  // so that the writes below certainly happen before it is back (and must be replayed).
  let away = false;
  const nowhere = `ws://127.0.0.1:${await freePort()}/ws`;
  class Gated extends WebSocket {
    constructor(url, ...rest) {
      super(away ? nowhere : url, ...rest);
    }
  }
  const client = h.client({ url: broker.url, topics: ['tasks'], WebSocket: Gated });
  const statuses = record(client, 'status');
  const welcomes = record(client, 'welcome');
  const events = record(client, 'event');
  const resyncs = record(client, 'resync');
  await client.ready();
  await client.createTask({ title: 'before the crash' });
  await until(() => events.length === 1, 'the first event');
  const before = client.lastSeq;
  assert.equal(before, events[0].seq);

  away = true;
  await broker.kill('SIGKILL');
  await until(() => client.status === 'reconnecting', 'status reconnecting');
  await assert.rejects(client.task('T-1'), (e) => e instanceof MusterError && e.code === 'disconnected');

  broker = await h.broker({ dataDir, port });
  const missed = [await createOverHttp(broker.url, 'while away 1'), await createOverHttp(broker.url, 'while away 2')];
  assert.deepEqual(missed.map((task) => task.id), ['T-2', 'T-3']);
  away = false;
  await until(() => events.length === 3, 'the missed events', 8000);
  await sleep(200); // nothing more may come

  assert.deepEqual(statuses, ['open', 'reconnecting', 'open']);
  assert.equal(welcomes.length, 2);
  assert.equal(welcomes[1].resumed, true);
  assert.equal(welcomes[1].recovered, true);
  assert.equal(welcomes[1].head, before + 2, 'the missed events were in the log before the hello');
  assert.equal(welcomes[1].epoch, welcomes[0].epoch);
  assert.deepEqual(resyncs, []);
  assert.deepEqual(
    events.map((e) => [e.seq, e.type, e.data.task.id]),
    [
      [before, 'task.created', 'T-1'],
      [before + 1, 'task.created', 'T-2'],
      [before + 2, 'task.created', 'T-3'],
    ],
  );
  assert.equal(client.lastSeq, before + 2);
  // And the session is usable again.
  assert.equal((await client.task('T-3')).title, 'while away 2');
});

test('a broker with a new data dir cannot replay: the client emits resync and follows the new history', async (t) => {
  const h = harness(t);
  const port = await freePort();
  const first = await h.broker({ port });
  const client = h.client({ url: first.url, topics: ['tasks'] });
  const events = record(client, 'event');
  const welcomes = record(client, 'welcome');
  await client.ready();
  const oldEpoch = client.epoch;
  await client.createTask({ title: 'old history' });
  await client.createTask({ title: 'old history 2' });
  await until(() => events.length === 2, 'the events');

  await first.kill('SIGTERM');
  await until(() => client.status === 'reconnecting', 'status reconnecting');
  const resynced = next(client, 'resync', () => true, 8000);
  const second = await h.broker({ port });
  const resync = await resynced;
  const health = await (await fetch(`${second.url}/health`)).json();
  assert.notEqual(resync.epoch, oldEpoch);
  assert.equal(resync.epoch, health.epoch);
  assert.equal(resync.head, health.head);
  assert.equal(client.epoch, health.epoch);
  assert.equal(client.lastSeq, health.head);
  assert.equal(welcomes.at(-1).resumed, false);
  assert.equal(welcomes.at(-1).recovered, false);

  // The new history's first events have seqs the old one already used: they must not be
  // taken for duplicates.
  const created = next(client, 'event');
  const task = await client.createTask({ title: 'new history' });
  assert.equal(task.id, 'T-1');
  const event = await created;
  assert.equal(event.data.task.id, 'T-1');
  assert.ok(event.seq <= 2, `seq ${event.seq} restarts in the new history`);
});

test('reconnect: false closes the client when the connection is lost', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const client = h.client({ url: broker.url, reconnect: false });
  const statuses = record(client, 'status');
  await client.ready();
  await broker.kill('SIGKILL');
  await until(() => client.status === 'closed', 'status closed');
  assert.deepEqual(statuses, ['open', 'closed']);
  await assert.rejects(client.tasks(), (e) => e instanceof MusterError && e.code === 'closed');
});

test('with several URLs (a cluster), the client connects to one that answers and resumes on another when it is lost', async (t) => {
  const h = harness(t);
  const dataDir = h.tempDir();
  const [nowhere, portA, portB] = [await freePort(), await freePort(), await freePort()];
  const broker = await h.broker({ dataDir, port: portA });
  const urls = [`http://127.0.0.1:${nowhere}`, broker.url, `http://127.0.0.1:${portB}`];
  const client = h.client({ url: urls, topics: ['tasks'] });
  const welcomes = record(client, 'welcome');
  const events = record(client, 'event');
  await client.ready();
  await client.createTask({ title: 'through A' });
  await until(() => events.length === 1, 'the first event');

  // A goes away; the same history comes back at the third URL (a cluster's other node).
  await broker.kill('SIGKILL');
  const other = await h.broker({ dataDir, port: portB });
  await createOverHttp(other.url, 'through B');
  await until(() => events.length === 2, 'the event written through B', 8000);
  await sleep(200); // nothing more may come
  assert.deepEqual(events.map((e) => e.data.task.title), ['through A', 'through B']);
  assert.equal(events[1].seq, events[0].seq + 1);
  assert.equal(welcomes.length, 2);
  assert.equal(welcomes[1].recovered, true);
  assert.equal((await client.task('T-2')).title, 'through B');
});

test('with several URLs none of which answers, ready() names them all', async () => {
  const urls = [`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`];
  const client = new MusterClient({ url: urls, WebSocket });
  await assert.rejects(client.ready(), (error) => {
    assert.ok(error instanceof MusterError);
    assert.equal(error.code, 'unreachable');
    for (const url of urls) assert.match(error.message, new RegExp(url.replace(/[.]/g, '\\.')));
    return true;
  });
  assert.equal(client.status, 'closed');
});
