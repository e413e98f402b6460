// Test support: a real broker per test, temp dirs, and small waiting helpers.
// (Outside test/ so that `node --test test/` does not run it as a test file.)

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

import { MusterClient } from '../muster.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** clients/js */
export const root = path.resolve(here, '..');
/** The repository root (for protocol/examples). */
export const repo = path.resolve(root, '../..');
export const BIN = process.env.MUSTER_BIN
  ? path.resolve(process.env.MUSTER_BIN)
  : path.resolve(root, '../../target/debug/muster');

/** A free TCP port on 127.0.0.1 (for restarting a broker on the same address). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts `muster serve` and resolves once it listens.
 * @param {{dataDir: string, port?: number}} options
 */
export function startBroker({ dataDir, port = 0 }) {
  if (!existsSync(BIN)) {
    throw new Error(`no broker binary at ${BIN}: run \`cargo build\` at the repository root (or set MUSTER_BIN)`);
  }
  const child = spawn(BIN, ['serve', '--addr', `127.0.0.1:${port}`, '--data-dir', dataDir], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info' },
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the broker did not say it was listening within 10 s:\n${log}`));
    }, 10_000);
    child.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`the broker exited before listening:\n${log}`));
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const match = /listening on http:\/\/(\S+)/.exec(log);
      if (!match) return;
      clearTimeout(timer);
      // Keep draining stderr so the broker never blocks on a full pipe.
      child.stderr.removeAllListeners('data');
      child.stderr.resume();
      const addr = match[1];
      resolve({
        addr,
        url: `http://${addr}`,
        port: Number(addr.split(':').pop()),
        dataDir,
        /** Kills the broker and waits for it to be gone. */
        async kill(signal = 'SIGKILL') {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          return exited;
        },
      });
    });
  });
}

/**
 * Everything a test starts, stopped and removed when the test ends.
 * @param {import('node:test').TestContext} t
 */
export function harness(t) {
  const clients = [];
  const brokers = [];
  const dirs = [];
  t.after(async () => {
    for (const client of clients) client.close();
    await Promise.all(brokers.map((b) => b.kill()));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  return {
    tempDir() {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'muster-js-test-'));
      dirs.push(dir);
      return dir;
    },
    /** @param {{dataDir?: string, port?: number}} [options] */
    async broker(options = {}) {
      const broker = await startBroker({ dataDir: options.dataDir ?? this.tempDir(), port: options.port });
      brokers.push(broker);
      return broker;
    },
    /** @param {import('../muster.js').MusterOptions} options */
    client(options) {
      const client = new MusterClient({ WebSocket, ...options });
      clients.push(client);
      return client;
    },
  };
}

/**
 * Resolves with the next value emitted as `name` that satisfies `pred`.
 * @param {MusterClient} client
 * @param {'event' | 'status' | 'welcome' | 'resync' | 'revoked'} name
 * @param {(value: any) => boolean} [pred]
 */
export function next(client, name, pred = () => true, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off(name, fn);
      reject(new Error(`no '${name}' within ${timeoutMs} ms`));
    }, timeoutMs);
    const fn = (value) => {
      if (!pred(value)) return;
      clearTimeout(timer);
      client.off(name, fn);
      resolve(value);
    };
    client.on(name, fn);
  });
}

/**
 * Records everything a client emits as `name`.
 * @param {MusterClient} client
 * @param {'event' | 'status' | 'welcome' | 'resync' | 'revoked'} name
 * @returns {any[]}
 */
export function record(client, name) {
  const seen = [];
  client.on(name, (value) => seen.push(value));
  return seen;
}

/** Polls `check` until it returns true. */
export async function until(check, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
