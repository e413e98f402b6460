// How the dashboard copes with a big team: 1,000 tasks and 50 connected agents, in headless
// Chromium against the release broker. Measures the first full render, how long one pushed
// claim takes to move its card, and, during a burst of events at full speed, the long tasks
// (main-thread work over 50 ms, i.e. jank) and how soon the page has caught up.
//
//   cargo build --release && cd tests/dashboard && npm ci && node bench.mjs
//   node bench.mjs --smoke     # 120 tasks, 5 agents, on $MUSTER_BIN: that it still works (CI)
//
// Prints medians; nothing is asserted beyond the page showing what it must (BENCHMARKS.md).

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { MusterClient } from '../../clients/js/muster.js';

const here = dirname(fileURLToPath(import.meta.url));
const MUSTER = resolve(here, process.env.MUSTER_BIN ?? '../../target/release/muster');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SMOKE = process.argv.includes('--smoke');
const [TASKS, AGENTS, BURST, SINGLE, LOADS] = SMOKE ? [120, 5, 20, 3, 1] : [1000, 50, 500, 30, 3];
// Agents hold T-1 … T-2A; the next tenth of the board is done; then the single claims, then
// the burst's claims.
const DONE = TASKS / 10;
const FIRST_SINGLE = 2 * AGENTS + DONE + 1;
const FIRST_BURST = FIRST_SINGLE + SINGLE;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function startBroker(dataDir) {
  const child = spawn(MUSTER, ['serve', '--addr', '127.0.0.1:0', '--data-dir', dataDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((ok, fail) => {
    let seen = '';
    child.stderr.on('data', (chunk) => {
      seen += chunk;
      const match = seen.match(/listening on (http:\/\/\S+)/);
      if (match) {
        child.stderr.removeAllListeners('data');
        child.stderr.resume(); // keep draining: a full pipe would block the broker
        ok({ child, base: match[1] });
      }
    });
    child.once('exit', (code) => fail(new Error(`broker exited ${code}: ${seen}`)));
  });
}

async function post(base, path, body) {
  const response = await fetch(`${base}${path}`, { method: 'POST', body: JSON.stringify(body) });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

const root = mkdtempSync(join(tmpdir(), 'muster-dashboard-bench-'));
const { child, base } = await startBroker(join(root, 'data'));
const agents = [];
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'] });
try {
  // The board: 1,000 tasks, 50 agents each holding two, 100 done (smoke: smaller).
  for (let i = 0; i < TASKS; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, TASKS - i) }, (_, j) => post(base, '/tasks', { title: `Task ${i + j + 1}: do a plausible amount of work`, priority: `P${(i + j) % 4}`, tags: ['bench'] })),
    );
  }
  for (let a = 0; a < AGENTS; a++) {
    const client = new MusterClient({ url: base, agent: `agent-${a}`, WebSocket });
    await client.ready();
    agents.push(client);
    await client.claim(`T-${a * 2 + 1}`);
    await client.claim(`T-${a * 2 + 2}`);
  }
  for (let i = 2 * AGENTS + 1; i < FIRST_SINGLE; i++) await post(base, `/tasks/T-${i}/complete`, { agent: 'lead' });

  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  await page.addInitScript(() => {
    // Time the page's handling of each WebSocket frame (the JS client + the dashboard).
    window.handling = [];
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      set onmessage(fn) {
        super.onmessage = (e) => {
          const start = performance.now();
          fn(e);
          window.handling.push(performance.now() - start);
        };
      }
      get onmessage() {
        return super.onmessage;
      }
    };
    window.longTasks = [];
    new PerformanceObserver((list) => window.longTasks.push(...list.getEntries().map((e) => e.duration))).observe({ type: 'longtask', buffered: true });
  });
  const loads = [];
  for (let run = 0; run < LOADS; run++) {
    await page.goto(`${base}/dashboard`);
    await page.waitForFunction(
      ([tasks, agents]) => document.querySelectorAll('#board li[data-id]').length === tasks && document.querySelectorAll('#team li').length >= agents,
      [TASKS, AGENTS],
      { polling: 'raf' },
    );
    loads.push(await page.evaluate(() => performance.now()));
  }
  const loadLongTasks = await page.evaluate(() => window.longTasks.slice());

  // One claim at a time: from sending it to its card being in `doing`, timed by the page
  // itself (a MutationObserver; both clocks are this machine's wall clock).
  await page.evaluate(() => {
    window.moved = {};
    const doing = document.querySelector('[data-status="doing"] ol');
    new MutationObserver((records) => {
      const now = performance.timeOrigin + performance.now();
      for (const r of records) for (const n of r.addedNodes) if (n.dataset?.id && !window.moved[n.dataset.id]) window.moved[n.dataset.id] = now;
    }).observe(doing, { childList: true });
  });
  const single = [];
  for (let i = 0; i < SINGLE; i++) {
    const id = `T-${FIRST_SINGLE + i}`;
    const sent = performance.timeOrigin + performance.now();
    await agents[i % AGENTS].claim(id);
    await page.waitForFunction((id) => window.moved[id], id, { polling: 'raf' });
    single.push((await page.evaluate((id) => window.moved[id], id)) - sent);
  }

  // A burst: claims and chat messages as fast as the agents can send them.
  await page.evaluate(() => {
    window.longTasks = [];
    window.handling = [];
  });
  const burstStart = performance.now();
  const sends = [];
  for (let i = 0; i < BURST; i++) {
    const agent = agents[i % AGENTS];
    sends.push(i % 2 ? agent.claim(`T-${FIRST_BURST + i}`) : agent.post({ content: `progress note ${i} @agent-${(i + 1) % AGENTS}` }));
  }
  await Promise.all(sends);
  const acked = performance.now();
  const lastClaim = `T-${FIRST_BURST + BURST - 1}`;
  await page.waitForSelector(`[data-status="doing"] li[data-id="${lastClaim}"]`, { state: 'attached', polling: 'raf' });
  const caughtUp = performance.now();
  const burstLongTasks = await page.evaluate(() => window.longTasks.slice());
  const handling = (await page.evaluate(() => window.handling.slice())).sort((a, b) => a - b);

  console.log(`board: ${TASKS} tasks, ${AGENTS} agents connected, Chromium ${browser.version()}`);
  console.log(`first render (navigation start → all cards and agents on screen): median ${median(loads).toFixed(0)} ms of ${loads.map((l) => l.toFixed(0)).join(', ')}`);
  console.log(`  long tasks during the last load: ${loadLongTasks.length}, longest ${Math.max(0, ...loadLongTasks).toFixed(0)} ms`);
  console.log(`one claim, sent → its card in doing on the page: median ${median(single).toFixed(1)} ms, max ${Math.max(...single).toFixed(1)} ms (n=${single.length})`);
  console.log(`burst of ${BURST} events (${BURST / 2} claims, ${BURST / 2} messages) sent in ${(acked - burstStart).toFixed(0)} ms; page caught up ${(caughtUp - acked).toFixed(0)} ms after the last ack`);
  console.log(`  long tasks during the burst: ${burstLongTasks.length}, longest ${Math.max(0, ...burstLongTasks).toFixed(0)} ms`);
  const p99 = handling[Math.floor(handling.length * 0.99)];
  console.log(`  page time per event frame: median ${median(handling).toFixed(2)} ms, p99 ${p99.toFixed(2)} ms, total ${handling.reduce((a, b) => a + b, 0).toFixed(0)} ms (n=${handling.length})`);
} finally {
  agents.forEach((a) => a.close());
  await browser.close();
  child.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
}
