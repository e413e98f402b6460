// A session whose token is revoked is closed by the broker with 4003: the client stops for
// good (no reconnection loop), says so with `revoked`, and its calls fail at once.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import test from 'node:test';

import { MusterError } from '../muster.js';
import { BIN, harness, next, record, sleep } from '../test-support/broker.mjs';

/** `muster token <args> --data-dir <dir>`: the token printed, for `add`. */
function token(dataDir, ...args) {
  return execFileSync(BIN, ['token', ...args, '--data-dir', dataDir], { encoding: 'utf8' }).trim();
}

test('a revoked token closes the session for good', async (t) => {
  const h = harness(t);
  const dataDir = h.tempDir();
  const zelda = token(dataDir, 'add', 'zelda');
  token(dataDir, 'add', 'kai'); // tokens stay on after zelda's is gone
  const broker = await h.broker({ dataDir });
  const client = h.client({ url: broker.url, agent: 'zelda', token: zelda });
  const statuses = record(client, 'status');
  await client.ready();
  await client.createTask({ title: 'before' });

  const revoked = next(client, 'revoked');
  token(dataDir, 'remove', 'zelda');
  const { reason } = await revoked;
  assert.match(reason, /4003/);
  assert.equal(client.status, 'closed');
  await assert.rejects(client.tasks(), (e) => e instanceof MusterError && e.code === 'closed');
  await sleep(500); // no reconnection follows
  assert.deepEqual(statuses, ['open', 'closed']);
});
