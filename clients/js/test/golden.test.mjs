// The client against the protocol's golden frames (protocol/examples): what it sends for
// each operation, and how it takes each kind of server frame.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import WebSocket from 'ws';

import { MusterError } from '../muster.js';
import { harness, record, repo, until } from '../test-support/broker.mjs';

const examples = path.join(repo, 'protocol/examples');

/** @param {'client' | 'server'} side */
function golden(side) {
  const dir = path.join(examples, side);
  return readdirSync(dir)
    .filter((name) => name.endsWith('.json'))
    .sort()
    .map((name) => ({ name, frame: JSON.parse(readFileSync(path.join(dir, name), 'utf8')) }));
}

/** A `ws` WebSocket that records every frame sent and, while `hold` is set, keeps it. */
function recordingSocket() {
  const log = { sent: /** @type {any[]} */ ([]), hold: false };
  class Recording extends WebSocket {
    send(data, ...rest) {
      log.sent.push(JSON.parse(String(data)));
      if (!log.hold) super.send(data, ...rest);
    }
  }
  return { Recording, log };
}

/** How to make each client frame with the client's API. */
const makers = {
  'hello.json': (c) =>
    c.call('hello', { workspace: 'web-app', agent: 'link', topics: ['tasks', 'inbox:link'], since: 120, epoch: '3f2a9c1d5e7b8a60' }),
  'subscribe.json': (c) => c.subscribe(['chat:ops', 'presence']),
  'unsubscribe.json': (c) => c.unsubscribe(['presence']),
  'task.create.json': (c) =>
    c.createTask({ title: 'Fix auth redirect', assignee: 'link', priority: 'P1', blockedBy: ['T-3'], tags: ['auth'] }),
  'task.claim.json': (c) => c.claim('T-12', { idempotencyKey: 'claim-T-12-once' }),
  'task.update.json': (c) => c.updateTask('T-12', { status: 'review', token: 3 }),
  'task.release.json': (c) => c.release('T-12', { agent: 'kai', force: true }),
  'task.complete.json': (c) => c.complete('T-12', { token: 3 }),
  'task.next.json': (c) => c.next({ claim: true }),
  'task.get.json': (c) => c.task('T-12'),
  'task.list.json': (c) => c.taskPage({ status: ['todo', 'doing'], assignee: 'link', order: 'desc', limit: 50 }),
  'task.comment.json': (c) =>
    c.comment('T-12', '@kai the flaky test was a race in the fixture; fixed in #530', { idempotencyKey: 'comment-T-12-race' }),
  'task.comments.json': (c) => c.comments('T-12', { limit: 50 }),
  'chat.post.json': (c) => c.post({ content: '@link PR #522 is green, merge it', channel: 'general' }),
  'chat.read.json': (c) => c.messages({ channel: 'general', since: 40, limit: 20 }),
  'chat.channels.json': (c) => c.channels(),
  'inbox.read.json': (c) => c.inbox({ all: true }),
  'inbox.ack.json': (c) => c.ack({ seq: 130 }),
  'presence.list.json': (c) => c.presence({ limit: 100 }),
  'presence.set.json': (c) => c.setStatus({ status: 'busy', note: 'on T-12' }),
  'files.reserve.json': (c) =>
    c.reserveFiles({
      repo: 'git.example.com/acme/app',
      patterns: ['src/auth/**', 'Cargo.lock'],
      task: 'T-12',
      reason: 'rewriting the session store',
    }),
  'files.release.json': (c) => c.releaseFiles({ repo: 'git.example.com/acme/app', patterns: ['Cargo.lock'] }),
  'files.list.json': (c) => c.files({ repo: 'git.example.com/acme/app' }),
  'files.who.json': (c) => c.whoHasFiles('git.example.com/acme/app', ['src/auth/session.rs', 'README.md']),
  'workspace.list.json': (c) => c.workspaces(),
  'workspace.add.json': (c) => c.addWorkspace('web-app'),
  // The session's own workspace (last, by name): the broker ends the session after it.
  'workspace.remove.json': (c) => c.removeWorkspace('web-app', { purge: true }),
};

/** The frame without what varies from run to run: its `id` and `after` (checked by the
 * callers). @param {any} frame */
function withoutId({ id, after, ...rest }) {
  assert.equal(typeof id, 'number');
  return rest;
}

test('the client sends exactly the golden client frames', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const { Recording, log } = recordingSocket();
  const frames = golden('client');
  assert.deepEqual(frames.map((f) => f.name).sort(), Object.keys(makers).sort(), 'a maker for every golden frame');

  // The client's own hello, from its options, is the golden hello: in a workspace, which
  // has to exist first.
  const hello = frames.find((f) => f.name === 'hello.json').frame;
  const admin = h.client({ url: broker.url });
  await admin.ready();
  await admin.addWorkspace(hello.workspace);
  const client = h.client({
    url: broker.url,
    WebSocket: Recording,
    workspace: hello.workspace,
    agent: hello.agent,
    topics: hello.topics,
    since: hello.since,
    epoch: hello.epoch,
  });
  const resyncs = record(client, 'resync');
  await client.ready();
  assert.deepEqual(withoutId(log.sent[0]), withoutId(hello));
  assert.equal(client.workspace, hello.workspace);
  assert.equal(resyncs.length, 1, 'the golden epoch is not this broker\'s: resync');

  for (const { name, frame } of frames) {
    log.sent.length = 0;
    const seen = client.seen;
    // The broker answers each, often with an error (T-12 does not exist, hello was already
    // sent), but never because of the frame's shape: it parses frames strictly.
    await makers[name](client).catch((error) => {
      assert.ok(error instanceof MusterError, String(error));
      assert.doesNotMatch(error.message, /unknown field|missing field|invalid type/, name);
    });
    assert.equal(log.sent.length, 1, name);
    assert.deepEqual(withoutId(log.sent[0]), withoutId(frame), name);
    // Every request says the newest event the client has seen (the welcome's head, then
    // each reply's).
    if (name !== 'hello.json') assert.equal(log.sent[0].after, seen, name);
  }
  assert.equal(typeof client.seen, 'number');
});

test('the client takes each golden server frame as the right kind', async (t) => {
  const h = harness(t);
  const broker = await h.broker();
  const { Recording, log } = recordingSocket();
  const client = h.client({ url: broker.url, WebSocket: Recording, agent: 'link' });
  const events = record(client, 'event');
  await client.ready();
  const frames = golden('server');
  const replies = frames.filter((f) => 're' in f.frame);
  const eventFrames = frames.filter((f) => 'seq' in f.frame).sort((a, b) => a.frame.seq - b.frame.seq);
  assert.equal(replies.length + eventFrames.length, frames.length, 'every server frame is a reply or an event');

  // Replies settle the call they answer. The broker is kept out of it: the call's frame is
  // held back, and the golden reply is fed in with its `re` set to the call's id.
  log.hold = true;
  for (const { name, frame } of replies) {
    if (frame.re === null) {
      // An answer to a frame too broken to have an id: nothing waits for it, nothing breaks.
      client._handleFrame(frame);
      continue;
    }
    log.sent.length = 0;
    const call = name === 'welcome.json' ? client.call('hello', { agent: 'link' }) : client.claim('T-12');
    client._handleFrame({ ...frame, re: log.sent[0].id });
    if (frame.ok) {
      assert.deepEqual(await call, name === 'reply.task.json' ? frame.data.task : frame.data, name);
      if ('head' in frame) assert.ok(client.seen >= frame.head, `${name}: a reply's head is seen`);
    } else {
      await assert.rejects(call, (error) => {
        assert.ok(error instanceof MusterError, name);
        assert.deepEqual([error.code, error.message], [frame.error.code, frame.error.message], name);
        return true;
      });
    }
  }
  log.hold = false;
  assert.deepEqual(events, [], 'no reply is taken for an event');

  // Events are emitted in order, once: a repeated seq is a duplicate.
  for (const { frame } of eventFrames) client._handleFrame(frame);
  for (const { frame } of eventFrames) client._handleFrame(frame);
  assert.deepEqual(events, eventFrames.map((f) => f.frame));
  assert.equal(client.lastSeq, eventFrames.at(-1).frame.seq);
  // The connection still works after all this.
  await until(() => client.status === 'open', 'open');
  assert.deepEqual(await client.tasks(), []);
});
