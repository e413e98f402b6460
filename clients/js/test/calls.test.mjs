import assert from 'node:assert/strict';
import test from 'node:test';

import { MusterError } from '../muster.js';
import { harness, next } from '../test-support/broker.mjs';

test('every typed call works against the broker', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const kai = h.client({ url: broker.url, agent: 'kai' });
  await kai.ready();

  // Tasks.
  const a = await kai.createTask({ title: 'A', description: 'first', priority: 'P1', tags: ['auth'] });
  assert.deepEqual([a.id, a.title, a.description, a.priority, a.tags, a.status], ['T-1', 'A', 'first', 'P1', ['auth'], 'todo']);
  const b = await kai.createTask({ title: 'B', blockedBy: ['T-1'], assignee: 'link', agent: 'zelda' });
  assert.deepEqual([b.id, b.blockedBy, b.assignee, b.createdBy], ['T-2', ['T-1'], 'link', 'zelda']);
  assert.deepEqual((await kai.tasks()).map((x) => x.id), ['T-1', 'T-2']);
  assert.deepEqual((await kai.tasks({ status: 'todo', tag: 'auth' })).map((x) => x.id), ['T-1']);
  assert.deepEqual((await kai.tasks({ priority: 'P1' })).map((x) => x.id), ['T-1']);
  assert.deepEqual((await kai.tasks({ assignee: 'link' })).map((x) => x.id), ['T-2']);
  assert.equal((await kai.task('T-2')).title, 'B');

  const renamed = await kai.updateTask('T-1', { title: 'A2', assignee: 'kai' });
  assert.deepEqual([renamed.title, renamed.assignee], ['A2', 'kai']);
  assert.equal((await kai.updateTask('T-1', { assignee: null })).assignee, null);

  assert.equal((await kai.next())?.id, 'T-1', 'T-2 waits on T-1');
  const picked = await kai.next({ claim: true });
  assert.deepEqual([picked?.id, picked?.status, picked?.claim?.agent], ['T-1', 'doing', 'kai']);
  const again = await kai.claim('T-1');
  assert.equal(again.claim?.token, picked?.claim?.token, 're-claiming is idempotent');
  const released = await kai.release('T-1');
  assert.deepEqual([released.status, released.claim], ['todo', null]);
  const claimed = await kai.claim('T-1');
  const done = await kai.complete('T-1', { token: claimed.claim?.token });
  assert.equal(done.status, 'done');
  const forLink = await kai.claim('T-2', { agent: 'link' });
  assert.equal(forLink.claim?.agent, 'link');
  const forced = await kai.release('T-2', { agent: 'kai', force: true });
  assert.equal(forced.status, 'todo');
  await assert.rejects(kai.task('T-99'), (e) => e instanceof MusterError && e.code === 'not_found');

  // Chat and inboxes.
  const hello = await kai.post({ content: '@link PR #522 is green, merge it', channel: 'general' });
  assert.deepEqual([hello.from, hello.channel, hello.mentions], ['kai', 'general', ['link']]);
  const direct = await kai.post({ from: 'zelda', to: 'link', content: 'are you there?', replyTo: hello.id });
  assert.deepEqual([direct.from, direct.to, direct.replyTo], ['zelda', 'link', hello.id]);
  const general = await kai.messages({ channel: 'general' });
  assert.equal(general.channel, 'general');
  assert.deepEqual(general.messages.map((m) => m.id), [hello.id]);
  assert.deepEqual((await kai.messages({ since: hello.seq })).messages, []);
  const channels = await kai.channels();
  assert.ok(channels.some((c) => c.name === 'general' && c.messages === 1 && c.lastSeq === hello.seq), JSON.stringify(channels));
  const inbox = await kai.inbox({ agent: 'link' });
  assert.deepEqual([inbox.agent, inbox.unread], ['link', 2]);
  assert.deepEqual(inbox.messages.map((m) => m.id), [hello.id, direct.id]);
  const cursor = await kai.ack({ agent: 'link', seq: hello.seq });
  assert.deepEqual(cursor, { agent: 'link', cursor: hello.seq });
  assert.equal((await kai.inbox({ agent: 'link' })).unread, 1);
  await kai.ack({ agent: 'link' });
  const emptied = await kai.inbox({ agent: 'link' });
  assert.deepEqual([emptied.unread, emptied.messages], [0, []]);
  assert.equal((await kai.inbox({ agent: 'link', all: true, limit: 1 })).messages.length, 1);
  assert.equal((await kai.inbox()).agent, 'kai');

  // Presence.
  const me = await kai.setStatus({ status: 'busy', note: 'on T-2' });
  assert.deepEqual([me.name, me.status, me.note], ['kai', 'busy', 'on T-2']);
  const everyone = await kai.presence();
  const seen = everyone.find((p) => p.name === 'kai');
  assert.deepEqual([seen?.status, seen?.note, seen?.connections], ['busy', 'on T-2', 1]);
  assert.equal((await kai.setStatus({ note: null })).note, null);

  // Subscriptions.
  assert.deepEqual((await kai.subscribe(['chat', 'tasks'])).sort(), ['chat', 'tasks']);
  assert.deepEqual(await kai.unsubscribe(['chat']), ['tasks']);
  await assert.rejects(kai.subscribe(['nonsense:topic:x']), (e) => e instanceof MusterError && e.code === 'invalid');

  // History over HTTP.
  const history = await kai.history(['task:T-1']);
  assert.ok(history.every((e) => e.data.task.id === 'T-1'));
  const types = history.map((e) => e.type);
  assert.equal(types[0], 'task.created');
  for (const type of ['task.updated', 'task.claimed', 'task.released', 'task.completed']) {
    assert.ok(types.includes(type), `${type} in ${types}`);
  }
  assert.ok(history.every((e, i) => i === 0 || e.seq > history[i - 1].seq));
  const page = await kai.history(['task:T-1'], { since: history[1].seq, limit: 2 });
  assert.deepEqual(page.map((e) => e.seq), history.slice(2, 4).map((e) => e.seq));
  await assert.rejects(kai.history(['bogus']), (e) => e instanceof MusterError && e.code === 'invalid');

  // Any operation through call().
  assert.equal((await kai.call('task.get', { task: 'T-1' })).task.status, 'done');
  await assert.rejects(kai.call('task.frobnicate'), (e) => e instanceof MusterError && e.code === 'invalid');
});

test('comments on a task: the event on the task\'s topic, the mention in the inbox, the thread read back', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const kai = h.client({ url: broker.url, agent: 'kai' });
  const link = h.client({ url: broker.url, agent: 'link', topics: ['task:T-1'] });
  await Promise.all([kai.ready(), link.ready()]);
  const task = await kai.createTask({ title: 'Flaky test' });
  assert.equal(task.id, 'T-1');

  const commented = next(link, 'event', (e) => e.type === 'task.commented');
  const first = await kai.comment(task.id, '@link the flaky test was a race in the fixture');
  assert.deepEqual(
    [first.task, first.channel, first.from, first.mentions],
    ['T-1', '#T-1', 'kai', ['link']],
  );
  const event = await commented;
  assert.deepEqual(event.data.message, first);
  assert.equal(event.seq, first.seq);
  // The mention lands in link's inbox, as a chat message's would.
  const inbox = await link.inbox();
  assert.deepEqual(inbox.messages.map((m) => m.id), [first.id]);

  const second = await link.comment(task.id, 'fixed in #530', { replyTo: first.id });
  assert.deepEqual([second.task, second.from, second.replyTo], ['T-1', 'link', first.id]);
  // Through chat.post with `task`, the same kind of comment.
  const third = await kai.post({ content: 'thanks', task: task.id });
  assert.deepEqual([third.task, third.channel], ['T-1', '#T-1']);

  // Every comment, oldest first, across pages.
  const all = await kai.comments(task.id, { limit: 2 });
  assert.deepEqual(all.map((m) => m.id), [first.id, second.id, third.id]);
  assert.deepEqual(all.map((m) => m.content), ['@link the flaky test was a race in the fixture', 'fixed in #530', 'thanks']);
  assert.deepEqual(await kai.comments(task.id), all);
  // Comments stay out of the chat channels.
  assert.deepEqual((await kai.messages()).messages, []);
  await assert.rejects(kai.comment('T-99', 'nobody here'), (e) => e instanceof MusterError && e.code === 'not_found');
  await assert.rejects(kai.comments('T-99'), (e) => e instanceof MusterError && e.code === 'not_found');
});
