// Workspaces: one broker, several boards. A session works in the workspace its `workspace`
// option names, in every hello (reconnections too); nothing of one workspace reaches
// another: tasks, events, presence, `seq`. Workspaces are listed, added and removed over the
// session, and a session whose workspace is removed ends for good.

import assert from 'node:assert/strict';
import test from 'node:test';

import { MusterError } from '../muster.js';
import { freePort, harness, next, record, sleep, until } from '../test-support/broker.mjs';

/** A refusal with this broker error code. @param {string} code */
const refused = (code) => (/** @type {any} */ e) => e instanceof MusterError && e.code === code;

test('two workspaces with the same agent name share nothing', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const admin = h.client({ url: broker.url });
  await admin.ready();
  assert.equal(admin.workspace, 'default');
  await admin.addWorkspace('web');
  await admin.addWorkspace('api');

  // The same agent, one session in each; a name is taken in any case.
  const web = h.client({ url: broker.url, workspace: 'WEB', agent: 'link', topics: ['*'] });
  const api = h.client({ url: broker.url, workspace: 'api', agent: 'link', topics: ['*'] });
  const webEvents = record(web, 'event');
  const apiEvents = record(api, 'event');
  const welcomes = record(web, 'welcome');
  await Promise.all([web.ready(), api.ready()]);
  assert.deepEqual([web.workspace, api.workspace], ['web', 'api']);
  assert.equal(welcomes[0].workspace, 'web');
  assert.notEqual(web.epoch, api.epoch, 'each workspace has its own history');

  // Tasks: each workspace numbers its own, and lists only its own.
  const fix = await web.createTask({ title: 'Fix the login page' });
  const rate = await api.createTask({ title: 'Rate-limit /export' });
  assert.deepEqual([fix.id, rate.id], ['T-1', 'T-1']);
  assert.deepEqual((await web.tasks()).map((x) => x.title), ['Fix the login page']);
  assert.deepEqual((await api.tasks()).map((x) => x.title), ['Rate-limit /export']);
  assert.deepEqual(await admin.tasks(), [], 'default has none');
  await web.claim('T-1');
  assert.equal((await api.task('T-1')).claim, null, "a claim in web is not api's");

  // Events: each subscriber hears its own workspace only, numbered from its own seq.
  await until(() => webEvents.some((e) => e.type === 'task.claimed'), "web's claim");
  await sleep(200); // nothing of web's may come to api
  const tasksOf = (events) => events.filter((e) => e.type.startsWith('task.')).map((e) => [e.type, e.data.task.title]);
  assert.deepEqual(tasksOf(webEvents), [
    ['task.created', 'Fix the login page'],
    ['task.claimed', 'Fix the login page'],
  ]);
  assert.deepEqual(tasksOf(apiEvents), [['task.created', 'Rate-limit /export']]);
  const created = (events) => events.find((e) => e.type === 'task.created');
  assert.equal(created(webEvents).seq, created(apiEvents).seq, 'the same seq, in two histories');

  // Presence: link is present once in each, with one connection there.
  const linkIn = async (client) => (await client.presence()).find((p) => p.name === 'link');
  assert.deepEqual([(await linkIn(web))?.connections, (await linkIn(api))?.connections], [1, 1]);
  assert.equal(await linkIn(admin), undefined);

  // History over HTTP reads the session's workspace (`/w/{workspace}/events`).
  const history = await web.history(['tasks']);
  assert.deepEqual(history.map((e) => [e.type, e.data.task.title]), [
    ['task.created', 'Fix the login page'],
    ['task.claimed', 'Fix the login page'],
  ]);
  assert.deepEqual(await admin.history(['tasks']), []);
});

test('workspaces are listed, added, archived and purged', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const admin = h.client({ url: broker.url, agent: 'ada', human: true });
  await admin.ready();
  const names = async () => (await admin.workspaces()).map((w) => [w.name, w.archived]);
  assert.deepEqual(await names(), [['default', false]]);

  const docs = await admin.addWorkspace('Docs');
  assert.deepEqual(docs, { name: 'docs', archived: false, head: 0 });
  await assert.rejects(admin.addWorkspace('docs'), refused('conflict'));
  await assert.rejects(admin.addWorkspace('-docs'), (e) => refused('invalid')(e) && e.field === 'name');
  const writer = h.client({ url: broker.url, workspace: 'docs' });
  await writer.ready();
  await writer.createTask({ title: 'Write the guide' });
  const listed = await admin.workspaces();
  assert.deepEqual(listed.map((w) => [w.name, w.archived]), [['default', false], ['docs', false]]);
  assert.ok(listed[1].head >= 1, JSON.stringify(listed));

  // Archived: listed as such, its history still read over HTTP.
  const archived = await admin.removeWorkspace('docs');
  assert.deepEqual([archived.name, archived.archived], ['docs', true]);
  assert.deepEqual(await names(), [['default', false], ['docs', true]]);
  await assert.rejects(admin.addWorkspace('docs'), refused('conflict'), 'an archived name stays taken');
  const reader = h.client({ url: broker.url, workspace: 'docs', reconnect: false });
  assert.equal((await reader.history(['tasks']))[0].data.task.title, 'Write the guide');

  // Purged: gone, and a session cannot name it any more.
  const purged = await admin.removeWorkspace('docs', { purge: true });
  assert.equal(purged.name, 'docs');
  assert.deepEqual(await names(), [['default', false]]);
  const late = h.client({ url: broker.url, workspace: 'docs' });
  await assert.rejects(late.ready(), refused('not_found'));
  assert.equal(late.status, 'closed');

  await assert.rejects(admin.removeWorkspace('default'), refused('conflict'));
  await assert.rejects(admin.removeWorkspace('nowhere'), refused('not_found'));
});

test('a session whose workspace is removed ends for good', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const admin = h.client({ url: broker.url });
  await admin.ready();
  await admin.addWorkspace('scratch');
  const client = h.client({ url: broker.url, workspace: 'scratch', agent: 'link' });
  const statuses = record(client, 'status');
  await client.ready();

  const removed = next(client, 'removed');
  await admin.removeWorkspace('scratch');
  assert.deepEqual(await removed, { workspace: 'scratch', reason: 'closed 4004: workspace removed' });
  assert.equal(client.status, 'closed');
  await assert.rejects(client.tasks(), refused('closed'));
  await sleep(300); // no reconnection follows
  assert.deepEqual(statuses, ['open', 'closed']);
  // The default workspace's session goes on.
  assert.deepEqual(await admin.tasks(), []);
});

test('a reconnection says hello in the same workspace and resumes its seq', async (t) => {
  const h = harness(t);
  const dataDir = h.tempDir();
  const port = await freePort();
  let broker = await h.broker({ dataDir, port });
  const admin = h.client({ url: broker.url, reconnect: false });
  await admin.ready();
  await admin.addWorkspace('web');
  admin.close();
  const client = h.client({ url: broker.url, workspace: 'web', topics: ['tasks'] });
  const events = record(client, 'event');
  const welcomes = record(client, 'welcome');
  const resyncs = record(client, 'resync');
  await client.ready();
  await client.createTask({ title: 'before the restart' });
  await until(() => events.length === 1, 'the first event');

  await broker.kill('SIGKILL');
  await until(() => client.status === 'reconnecting', 'reconnecting');
  broker = await h.broker({ dataDir, port });
  // Written in default and in web while the client was away: only web's is replayed.
  await fetch(`${broker.url}/tasks`, { method: 'POST', body: JSON.stringify({ title: 'in default' }) });
  const response = await fetch(`${broker.url}/w/web/tasks`, { method: 'POST', body: JSON.stringify({ title: 'while away' }) });
  assert.equal(response.status, 201, await response.clone().text());
  await until(() => events.length === 2, 'the missed event', 8000);
  await sleep(200);

  assert.equal(welcomes.length, 2);
  assert.deepEqual([welcomes[1].workspace, welcomes[1].resumed], ['web', true]);
  assert.deepEqual(resyncs, []);
  assert.deepEqual(events.map((e) => [e.seq, e.data.task.title]), [
    [events[0].seq, 'before the restart'],
    [events[0].seq + 1, 'while away'],
  ]);
  assert.deepEqual((await client.tasks()).map((x) => x.title), ['before the restart', 'while away']);
});
