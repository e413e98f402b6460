// Topics against the cases the broker is tested with (protocol/examples/topics.json): how
// each is read, and which golden events each receives.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';

import { MusterError, parseTopic, receives } from '../muster.js';
import { repo } from '../test-support/broker.mjs';

const examples = path.join(repo, 'protocol/examples');
const cases = JSON.parse(readFileSync(path.join(examples, 'topics.json'), 'utf8'));

test('topics are read and normalized as the shared cases say', () => {
  for (const { topic, normalized, error } of cases.parse) {
    if (error) {
      assert.throws(() => parseTopic(topic), (e) => e instanceof MusterError && e.field === 'topics', topic);
    } else {
      assert.equal(parseTopic(topic), normalized, topic);
    }
  }
});

test('each golden event reaches the subscribers of its topics and no others', () => {
  for (const { event: file, receive, skip } of cases.match) {
    const event = JSON.parse(readFileSync(path.join(examples, 'server', file), 'utf8'));
    for (const topic of receive) assert.equal(receives(topic, event), true, `${file}: ${topic}`);
    for (const topic of skip) assert.equal(receives(topic, event), false, `${file}: ${topic}`);
  }
});
