// The dashboard in a real headless Chromium, against the real broker binary. It checks what a
// human sees, without ever reloading the page: changes made with curl and by WebSocket
// agents appear by push, a message posted from the page reaches an agent, a force-release
// from the page frees the task, a broker restart shows "reconnecting" and then resumes, and
// file reservations show per agent and per task, with who holds what when one is refused.
// Each workspace has its own page (`/w/{workspace}/dashboard`), and a switcher between them.
//
// Run by `cargo test` (tests/js.rs) with MUSTER_BIN set; by hand:
//   cargo build && cd tests/dashboard && npm ci && MUSTER_BIN=../../target/debug/muster npm test

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { MusterClient } from '../../clients/js/muster.js';

const here = dirname(fileURLToPath(import.meta.url));
const MUSTER = resolve(here, process.env.MUSTER_BIN ?? '../../target/debug/muster');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = resolve(here, process.env.MUSTER_ARTIFACTS ?? '../../target/artifacts');
/** How long to wait for something to show on the page. */
const SHOWS = 10_000;

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

/** Starts `muster serve` and resolves once it listens. */
function startBroker(dataDir, addr, extra = []) {
  const child = spawn(MUSTER, ['serve', '--addr', addr, '--data-dir', dataDir, ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, MUSTER_LOG: 'muster=info' },
  });
  return new Promise((ok, fail) => {
    let seen = '';
    const timer = setTimeout(() => fail(new Error(`broker did not start:\n${seen}`)), 15_000);
    child.stderr.on('data', (chunk) => {
      seen += chunk;
      if (seen.includes('listening on http://')) {
        clearTimeout(timer);
        ok(child);
      }
    });
    child.once('exit', (code) => fail(new Error(`broker exited (${code}):\n${seen}`)));
  });
}

function stop(child) {
  return new Promise((ok) => {
    if (child.exitCode !== null || child.signalCode !== null) return ok();
    child.once('exit', ok);
    child.kill('SIGKILL');
  });
}

/** The literal curl a user would type; returns the parsed JSON body. */
function curl(base, method, path, body) {
  const args = ['-sS', '-X', method, `${base}${path}`];
  if (body) args.push('-d', JSON.stringify(body));
  return JSON.parse(execFileSync('curl', args, { encoding: 'utf8' }));
}

function agent(base, options) {
  return new MusterClient({ url: base, WebSocket, reconnect: false, ...options });
}

/** Resolves with the first event on `client` that `match` accepts. */
function nextEvent(client, match, what) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`no ${what} within ${SHOWS} ms`)), SHOWS);
    const listener = (event) => {
      if (!match(event)) return;
      clearTimeout(timer);
      client.off('event', listener);
      ok(event);
    };
    client.on('event', listener);
  });
}

test('the dashboard shows the team working, live, and lets a human step in', { timeout: 120_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'muster-dashboard-'));
  const port = await freePort();
  const addr = `127.0.0.1:${port}`;
  const base = `http://${addr}`;
  let broker = await startBroker(join(root, 'data'), addr);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
  const clients = [];
  t.after(async () => {
    clients.forEach((c) => c.close());
    await browser.close();
    await stop(broker);
    rmSync(root, { recursive: true, force: true });
  });

  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  // Any script error or Content-Security-Policy violation on the page fails the test.
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // Chromium logs each refused reconnection attempt while the broker restarts: expected.
    const refused = /WebSocket connection to .* failed/.test(m.text());
    if (m.type() === 'error' && !refused) problems.push(`console error: ${m.text()}`);
  });
  const response = await page.goto(`${base}/dashboard`);
  assert.match(response.headers()['content-security-policy'], /script-src 'self'/);
  await page.waitForSelector('body[data-connection="open"]', { timeout: SHOWS });

  await t.test('a task created with curl appears', async () => {
    const created = curl(base, 'POST', '/tasks', { title: 'Fix auth redirect', assignee: 'link', priority: 'P1' });
    assert.equal(created.task.id, 'T-1');
    const card = page.locator('[data-status="todo"] li[data-id="T-1"]');
    await card.waitFor({ timeout: SHOWS });
    assert.match(await card.innerText(), /Fix auth redirect/);
    assert.match(await card.innerText(), /P1/);
  });

  await t.test('a claim made with curl moves the card and shows who holds it', async () => {
    // Before the claim the card says whom the task is reserved for.
    assert.equal(await page.locator('li[data-id="T-1"] .reserved').innerText(), 'for link');
    curl(base, 'POST', '/tasks/T-1/claim', { agent: 'link' });
    const card = page.locator('[data-status="doing"] li[data-id="T-1"]');
    await card.waitFor({ timeout: SHOWS });
    assert.equal(await card.locator('.holder').innerText(), 'link');
    assert.equal(await card.locator('.reserved').count(), 0);
    assert.equal(await page.locator('[data-status="todo"] li[data-id="T-1"]').count(), 0);
  });

  await t.test('an agent connecting over WebSocket appears online, then offline when it leaves', async () => {
    const zelda = agent(base, { agent: 'zelda' });
    await zelda.ready();
    const row = page.locator('#team li[data-name="zelda"]');
    await page.locator('#team li[data-name="zelda"][data-status="active"]').waitFor({ timeout: SHOWS });
    zelda.close();
    await page.locator('#team li[data-name="zelda"][data-status="offline"]').waitFor({ timeout: SHOWS });
    assert.equal(await row.count(), 1);
  });

  await t.test('a message posted from the page reaches a WebSocket subscriber', async () => {
    const listener = agent(base, { agent: 'link', topics: ['chat'] });
    clients.push(listener);
    await listener.ready();
    // The human names themself once; the page reconnects as that person.
    await page.fill('#me', 'alice');
    await page.press('#me', 'Enter');
    await page.waitForSelector('body[data-connection="open"]', { timeout: SHOWS });
    const heard = nextEvent(listener, (e) => e.type === 'chat.message', 'chat message');
    await page.fill('#post-text', '@link T-1 looks stuck, can you check?');
    await page.click('#post button[type="submit"]');
    const event = await heard;
    assert.equal(event.data.message.from, 'alice');
    assert.equal(event.data.message.content, '@link T-1 looks stuck, can you check?');
    assert.deepEqual(event.data.message.mentions, ['link']);
    // On the page the mention is highlighted, and the broker knows alice is a person.
    await page.locator('#messages .mention', { hasText: '@link' }).waitFor({ timeout: SHOWS });
    const alice = curl(base, 'GET', '/presence/alice');
    assert.equal(alice.agent.human, true);
  });

  await t.test('a force-release from the page frees the task, recorded as the human', async () => {
    const watcher = agent(base, { topics: ['task:T-1'] });
    clients.push(watcher);
    await watcher.ready();
    const released = nextEvent(watcher, (e) => e.type === 'task.released', 'task.released');
    await page.click('li[data-id="T-1"] .card');
    await page.locator('#task-dialog[open]').waitFor({ timeout: SHOWS });
    await page.locator('#task-history li', { hasText: 'claimed by link' }).waitFor({ timeout: SHOWS });
    await page.click('#detail-release');
    // Destructive: the page asks first.
    await page.locator('#confirm-dialog[open]').waitFor({ timeout: SHOWS });
    assert.match(await page.locator('#confirm-text').innerText(), /link/);
    await page.click('#confirm-yes');
    const event = await released;
    assert.equal(event.data.by, 'alice');
    assert.equal(event.data.reason, 'forced');
    assert.equal(curl(base, 'GET', '/tasks/T-1').task.claim, null);
    await page.locator('[data-status="todo"] li[data-id="T-1"]').waitFor({ timeout: SHOWS });
    await page.locator('#task-history li', { hasText: 'released from link by alice (human)' }).waitFor({ timeout: SHOWS });
    await page.keyboard.press('Escape');
  });

  await t.test("a task's comments show in its detail, live, and the human adds one", async () => {
    await page.click('li[data-id="T-1"] .card');
    await page.locator('#task-dialog[open]').waitFor({ timeout: SHOWS });
    const comments = page.locator('#task-comments li.comment');
    assert.equal(await comments.count(), 0);

    // Another agent comments over HTTP: it appears in the open detail, as text, not HTML.
    const posted = curl(base, 'POST', '/tasks/T-1/comments', { from: 'link', content: 'It loops on <b>Safari</b> only, @alice' });
    assert.deepEqual([posted.message.task, posted.message.channel], ['T-1', '#T-1']);
    const fromLink = page.locator('#task-comments li.comment[data-from="link"]');
    await fromLink.waitFor({ timeout: SHOWS });
    assert.equal(await fromLink.locator('.content').innerText(), 'It loops on <b>Safari</b> only, @alice');
    assert.equal(await fromLink.locator('b').count(), 0);
    await fromLink.locator('.mention', { hasText: '@alice' }).waitFor({ timeout: SHOWS });
    assert.match(await fromLink.locator('time').innerText(), /^\d+s ago$/);

    // An empty comment is refused by the broker, and the page says why.
    await page.click('#comment-form button[type="submit"]');
    await page.locator('#comment-error', { hasText: /empty/ }).waitFor({ timeout: SHOWS });

    // The human comments from the form: shown once, though both the reply and the event bring it.
    await page.fill('#comment-text', 'Thanks, I will take it from here');
    await page.click('#comment-form button[type="submit"]');
    await page.locator('#task-comments li.comment[data-from="alice"]', { hasText: 'Thanks, I will take it from here' }).waitFor({ timeout: SHOWS });
    await page.locator('#activity li', { hasText: 'T-1 commented by alice' }).waitFor({ state: 'attached', timeout: SHOWS });
    assert.equal(await page.inputValue('#comment-text'), '');
    assert.equal(await page.locator('#comment-error').innerText(), '');
    const authors = () => comments.evaluateAll((lis) => lis.map((li) => li.dataset.from));
    assert.deepEqual(await authors(), ['link', 'alice']);
    assert.equal(await page.locator('#comments-count').innerText(), '2');

    const thread = curl(base, 'GET', '/tasks/T-1/comments');
    assert.equal(thread.channel, '#T-1');
    assert.deepEqual(
      thread.messages.map((m) => [m.from, m.content]),
      [['link', 'It loops on <b>Safari</b> only, @alice'], ['alice', 'Thanks, I will take it from here']],
    );

    // Opened again, the detail loads them, oldest first.
    await page.keyboard.press('Escape');
    await page.locator('#task-dialog[open]').waitFor({ state: 'detached', timeout: SHOWS });
    await page.click('li[data-id="T-1"] .card');
    await page.locator('#task-comments li.comment[data-from="alice"]').waitFor({ timeout: SHOWS });
    assert.deepEqual(await authors(), ['link', 'alice']);
    await page.keyboard.press('Escape');
  });

  await t.test('a human creates, reprioritizes, reassigns and cancels a task from the page', async () => {
    await page.click('#new-task');
    await page.fill('#create-form [name="title"]', 'Triage the nightly failures');
    await page.selectOption('#create-form [name="priority"]', 'P3');
    await page.click('#create-form button[type="submit"]');
    const card = page.locator('[data-status="todo"] li[data-id="T-2"]');
    await card.waitFor({ timeout: SHOWS });
    let task = curl(base, 'GET', '/tasks/T-2').task;
    assert.deepEqual([task.title, task.priority, task.createdBy], ['Triage the nightly failures', 'P3', 'alice']);

    await card.locator('.card').click();
    await page.selectOption('#detail-priority', 'P0');
    await page.locator('li[data-id="T-2"] .prio', { hasText: 'P0' }).waitFor({ timeout: SHOWS });
    await page.fill('#detail-assignee', 'zelda');
    await page.click('#detail-assign');
    await page.locator('li[data-id="T-2"] .reserved', { hasText: 'for zelda' }).waitFor({ timeout: SHOWS });
    task = curl(base, 'GET', '/tasks/T-2').task;
    assert.deepEqual([task.priority, task.assignee], ['P0', 'zelda']);

    // Cancelling asks first; saying no changes nothing.
    await page.click('#detail-cancel');
    await page.click('#confirm-dialog button[value="no"]');
    assert.equal(curl(base, 'GET', '/tasks/T-2').task.status, 'todo');
    await page.click('#detail-cancel');
    await page.click('#confirm-yes');
    await page.locator('[data-status="cancelled"] li[data-id="T-2"]').waitFor({ timeout: SHOWS });
    assert.equal(curl(base, 'GET', '/tasks/T-2').task.status, 'cancelled');
    await page.keyboard.press('Escape');
  });

  await t.test('a broker restart shows "reconnecting", then the page resumes and catches up', async () => {
    await stop(broker);
    await page.waitForSelector('body[data-connection="reconnecting"]', { timeout: SHOWS });
    assert.match(await page.locator('#connection').innerText(), /Reconnecting/);
    broker = await startBroker(join(root, 'data'), addr);
    curl(base, 'POST', '/tasks', { title: 'Written while the page was away', priority: 'P0' });
    await page.waitForSelector('body[data-connection="open"]', { timeout: 15_000 });
    await page.locator('[data-status="todo"] li[data-id="T-3"]').waitFor({ timeout: SHOWS });
    // Nothing from before the restart is lost or doubled.
    assert.equal(await page.locator('li[data-id="T-1"]').count(), 1);
  });

  await t.test('a populated board, for the README', async () => {
    const names = ['link', 'zelda', 'kai', 'mira', 'otto'];
    const work = [
      ['Fix flaky login test', 'P1'],
      ['Migrate sessions table to UUIDs', 'P2'],
      ['Write release notes for 0.4', 'P3'],
      ['Rate-limit the export endpoint', 'P0'],
      ['Profile cold start', 'P2'],
      ['Add retry to webhook sender', 'P2'],
      ['Document the MCP setup', 'P3'],
    ];
    for (const [title, priority] of work) curl(base, 'POST', '/tasks', { title, priority, tags: ['backend'] });
    const sessions = [];
    for (const name of names.slice(0, 4)) {
      const s = agent(base, { agent: name });
      await s.ready();
      sessions.push(s);
      clients.push(s);
    }
    // T-4 … T-10 are the work above.
    curl(base, 'POST', '/tasks/T-7/claim', { agent: 'zelda' });
    curl(base, 'POST', '/tasks/T-9/claim', { agent: 'kai' });
    curl(base, 'POST', '/tasks/T-4/claim', { agent: 'mira' });
    curl(base, 'POST', '/tasks/T-4/complete', { agent: 'mira' });
    curl(base, 'POST', '/tasks/T-1/claim', { agent: 'link' });
    curl(base, 'POST', '/presence/otto', { status: 'busy', note: 'reviewing PR #522' });
    curl(base, 'POST', '/chat/messages', { from: 'zelda', content: '@kai T-7 touches your webhook code, heads up' });
    curl(base, 'POST', '/chat/messages', { from: 'kai', content: 'thanks @zelda, I will rebase after you merge' });
    await page.locator('[data-status="doing"] li').nth(2).waitFor({ timeout: SHOWS });
    await page.locator('#messages li', { hasText: 'rebase' }).waitFor({ timeout: SHOWS });
    // Let the highlight of just-changed cards fade.
    await new Promise((ok) => setTimeout(ok, 1200));
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png') });
  });

  await t.test('file reservations show per agent and per task, and a refused one names who holds what', async () => {
    // link holds T-1 (above) and reserves for it.
    const reserved = curl(base, 'POST', '/files/reserve', {
      repo: 'app', patterns: ['src/auth/**'], task: 'T-1', agent: 'link', reason: 'session rewrite',
    });
    assert.equal(reserved.reservations[0].id, 'R-1');
    await page.locator('#team li[data-name="link"] .files', { hasText: 'src/auth/**' }).waitFor({ timeout: SHOWS });
    await page.click('li[data-id="T-1"] .card');
    await page.locator('#task-detail .task-files', { hasText: 'src/auth/** — link, app' }).waitFor({ timeout: SHOWS });
    await page.keyboard.press('Escape');

    // alice, the human, asks for an overlapping set from the page: refused, nothing reserved.
    await page.click('#tab-files');
    await page.locator('#files li[data-id="R-1"]', { hasText: 'src/auth/**' }).waitFor({ timeout: SHOWS });
    await page.fill('#reserve [name="repo"]', 'app');
    await page.fill('#reserve [name="patterns"]', 'src/auth/session.rs, docs/**');
    await page.click('#reserve button[type="submit"]');
    const conflict = page.locator('#reserve-error .conflict[data-holder="link"]');
    await conflict.waitFor({ timeout: SHOWS });
    const says = await conflict.innerText();
    for (const part of ['link', 'src/auth/**', 'R-1', 'T-1', 'src/auth/session.rs']) assert.ok(says.includes(part), `${part} in ${says}`);
    assert.deepEqual(curl(base, 'GET', '/files?agent=alice').reservations, []);

    // What does not overlap is granted, shown, and released from the page.
    await page.fill('#reserve [name="patterns"]', 'docs/**');
    await page.click('#reserve button[type="submit"]');
    const mine = page.locator('#files li[data-agent="alice"]', { hasText: 'docs/**' });
    await mine.waitFor({ timeout: SHOWS });
    await mine.locator('button.release').click();
    await mine.waitFor({ state: 'detached', timeout: SHOWS });
    assert.deepEqual(curl(base, 'GET', '/files?agent=alice').reservations, []);

    // Completing T-1 ends its reservation: it leaves link's row.
    curl(base, 'POST', '/tasks/T-1/complete', { agent: 'link' });
    await page.locator('#team li[data-name="link"] .files').waitFor({ state: 'detached', timeout: SHOWS });
    await page.locator('#activity li', { hasText: 'released by link (task_ended)' }).waitFor({ state: 'attached', timeout: SHOWS });
    await page.click('#tab-chat');
  });

  await t.test('finished columns show the tasks finished last, and older ones on demand', async () => {
    // 110 tasks cancelled one after another: the board's page holds the last 100 finished.
    const ids = [];
    for (let i = 0; i < 110; i++) {
      const id = curl(base, 'POST', '/tasks', { title: `Old experiment ${i}` }).task.id;
      curl(base, 'PATCH', `/tasks/${id}`, { status: 'cancelled', agent: 'lead' });
      ids.push(id);
    }
    await page.reload();
    const cancelled = (id) => page.locator(`[data-status="cancelled"] li[data-id="${id}"]`);
    await cancelled(ids[109]).waitFor({ timeout: SHOWS });
    assert.equal(await cancelled(ids[10]).count(), 1, 'the 100th finished last is shown');
    assert.equal(await cancelled(ids[0]).count(), 0, 'older ones wait to be asked for');
    assert.equal(await cancelled('T-2').count(), 0);
    const older = page.locator('button.older[data-status="cancelled"]');
    // One click brings the older ones (here the last page, with T-2, cancelled at the start).
    await older.click();
    await cancelled(ids[0]).waitFor({ timeout: SHOWS });
    await cancelled('T-2').waitFor({ timeout: SHOWS });
    await older.waitFor({ state: 'hidden', timeout: SHOWS });
    const order = await page.locator('[data-status="cancelled"] li').evaluateAll((lis) => lis.map((li) => li.dataset.id));
    assert.equal(order.at(-1), 'T-2');
    assert.equal(order[0], ids[109]);
  });

  await t.test('the board tells at a glance: waiting, reserved or held, owner gone, who is live', async () => {
    const create = (body) => curl(base, 'POST', '/tasks', body).task.id;
    const first = create({ title: 'Design the schema', priority: 'P2' });
    const second = create({ title: 'Write the migration', priority: 'P2' });
    const waiting = create({ title: 'Ship the new schema', priority: 'P0', blockedBy: [first, second] });
    const card = (id) => page.locator(`li[data-id="${id}"] .card`);
    // A P0 waiting on two unfinished tasks says so, and sits below the work that can start.
    await card(waiting).locator('.waiting-on', { hasText: `waiting on ${first}, ${second}` }).waitFor({ timeout: SHOWS });
    const todo = await page.locator('[data-status="todo"] li').evaluateAll((lis) => lis.map((li) => li.dataset.id));
    assert.ok(todo.indexOf(waiting) > todo.indexOf(first), `${waiting} after ${first} in ${todo}`);
    assert.match(await page.locator('[data-status="blocked"] h3 .waiting-count').innerText(), /\+ 1 waiting in todo/);
    curl(base, 'POST', `/tasks/${first}/complete`, { agent: 'lead' });
    curl(base, 'POST', `/tasks/${second}/complete`, { agent: 'lead' });
    await card(waiting).locator('.waiting-on').waitFor({ state: 'detached', timeout: SHOWS });
    await page.locator('[data-status="blocked"] h3 .waiting-count').waitFor({ state: 'hidden', timeout: SHOWS });

    // Reserved for an agent, then held by it: two different looks.
    const reserved = create({ title: 'Review the API docs', assignee: 'otto' });
    await card(reserved).locator('.reserved', { hasText: 'for otto' }).waitFor({ timeout: SHOWS });
    assert.equal(await card(reserved).locator('.holder').count(), 0);

    // quinn holds a task over a live session, then goes away: its claim waits out the grace.
    const held = create({ title: 'Rotate the signing keys' });
    const quinn = agent(base, { agent: 'quinn' });
    await quinn.ready();
    await quinn.claim(held);
    await card(held).locator('.holder', { hasText: 'quinn' }).waitFor({ timeout: SHOWS });
    assert.equal(await card(held).locator('.owner-gone').count(), 0);
    quinn.close();
    await card(held).locator('.owner-gone', { hasText: /owner gone, released in [45] min/ }).waitFor({ timeout: SHOWS });

    // Live sessions show as such, with their count, above those only seen through HTTP.
    const rex = [agent(base, { agent: 'rex' }), agent(base, { agent: 'rex' })];
    clients.push(...rex);
    await Promise.all(rex.map((c) => c.ready()));
    const rexRow = page.locator('#team li[data-name="rex"]');
    await rexRow.locator('.live', { hasText: 'live · 2 connections' }).waitFor({ timeout: SHOWS });
    assert.equal(await page.locator('#team li[data-name="otto"] .not-live').innerText(), 'not connected');
    assert.doesNotMatch(await page.locator('#team').innerText(), /\b(false|undefined|null)\b/);
    const order = await page.locator('#team li').evaluateAll((lis) => lis.map((li) => Boolean(li.querySelector('.live'))));
    assert.ok(order.indexOf(false) > order.lastIndexOf(true), `live rows first: ${order}`);
    // At 900 px the live agents are in view, not below the fold.
    const box = await rexRow.boundingBox();
    assert.ok(box && box.y + box.height <= 900, `rex's row at ${JSON.stringify(box)}`);

    // The connection line speaks of time, not of a raw seq (which stays in the tooltip).
    const connection = page.locator('#connection');
    assert.match(await connection.innerText(), /^Live · (up to date|last change \d+s ago)$/);
    assert.match(await connection.getAttribute('title'), /^up to event #\d+$/);
  });

  await t.test('a task title and description are edited from the page', async () => {
    const id = curl(base, 'POST', '/tasks', { title: 'Fix teh typo', description: 'in the README' }).task.id;
    await page.locator(`li[data-id="${id}"] .card`).click();
    await page.locator('#task-dialog[open]').waitFor({ timeout: SHOWS });
    await page.click('#detail-edit summary');
    assert.equal(await page.inputValue('#edit-form [name="title"]'), 'Fix teh typo');
    await page.fill('#edit-form [name="title"]', 'Fix the typo');
    await page.fill('#edit-form [name="description"]', 'in the README, second paragraph');
    await page.click('#edit-form button[type="submit"]');
    await page.locator(`li[data-id="${id}"] .title`, { hasText: 'Fix the typo' }).waitFor({ timeout: SHOWS });
    const task = curl(base, 'GET', `/tasks/${id}`).task;
    assert.deepEqual([task.title, task.description], ['Fix the typo', 'in the README, second paragraph']);
    await page.keyboard.press('Escape');
  });

  await t.test('chat older than a day shows its date', async () => {
    // The same broker seen two days later: yesterday's messages carry their date.
    const later = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    await later.clock.setFixedTime(new Date(Date.now() + 2 * 86_400_000));
    await later.goto(`${base}/dashboard`);
    const time = later.locator('#messages li time').first();
    await time.waitFor({ timeout: SHOWS });
    assert.match(await time.innerText(), /[A-Z][a-z]{2} \d{1,2}/);
    // Today's are shown as a time only.
    assert.doesNotMatch(await page.locator('#messages li time').first().innerText(), /[A-Z][a-z]{2} \d{1,2}/);
    await later.close();
  });

  assert.deepEqual(problems, []);
});

test('presence from silence arrives pushed: idle, stuck, offline, then back, without polling', { timeout: 60_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'muster-dashboard-presence-'));
  const addr = `127.0.0.1:${await freePort()}`;
  const base = `http://${addr}`;
  const thresholds = ['--idle-after', '1s', '--stuck-after', '2s', '--offline-after', '4s', '--claim-lease', '10m'];
  const broker = await startBroker(join(root, 'data'), addr, thresholds);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-first-run'] });
  t.after(async () => {
    await browser.close();
    await stop(broker);
    rmSync(root, { recursive: true, force: true });
  });
  curl(base, 'POST', '/tasks', { title: 'A long migration' });
  curl(base, 'POST', '/tasks/T-1/claim', { agent: 'link' });
  const page = await browser.newPage();
  // Every time the page asks for presence, over HTTP or the WebSocket.
  const presenceReads = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname.startsWith('/presence')) presenceReads.push(r.url());
  });
  page.on('websocket', (ws) =>
    ws.on('framesent', ({ payload }) => {
      if (String(payload).includes('"op":"presence.list"')) presenceReads.push('presence.list');
    }),
  );
  await page.goto(`${base}/dashboard`);
  const link = page.locator('#team li[data-name="link"]');
  await link.locator('.status', { hasText: 'idle' }).waitFor({ timeout: SHOWS });
  await link.locator('.stuck').waitFor({ timeout: SHOWS });
  await link.locator('.status', { hasText: 'offline' }).waitFor({ timeout: SHOWS });
  // Contact brings link back: active, not stuck.
  curl(base, 'POST', '/presence/link', {});
  await link.locator('.status', { hasText: 'active' }).waitFor({ timeout: SHOWS });
  assert.equal(await link.locator('.stuck').count(), 0);
  assert.deepEqual(presenceReads, ['presence.list'], 'presence is read once, at load; the rest is pushed');
});

test('with tokens on, the page asks for one and then acts as its owner', { timeout: 60_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'muster-dashboard-tokens-'));
  const data = join(root, 'data');
  const token = execFileSync(MUSTER, ['token', 'add', 'alice', '--human', '--data-dir', data], { encoding: 'utf8' }).trim();
  const addr = `127.0.0.1:${await freePort()}`;
  const base = `http://${addr}`;
  const broker = await startBroker(data, addr);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-first-run'] });
  t.after(async () => {
    await browser.close();
    await stop(broker);
    rmSync(root, { recursive: true, force: true });
  });
  const page = await browser.newPage();
  await page.goto(`${base}/dashboard`);
  await page.locator('#token-dialog[open]').waitFor({ timeout: SHOWS });
  await page.fill('#token-form [name="name"]', 'alice');
  await page.fill('#token-form [name="token"]', token);
  await page.click('#token-form button[type="submit"]');
  await page.waitForSelector('body[data-connection="open"]', { timeout: SHOWS });
  await page.click('#new-task');
  await page.fill('#create-form [name="title"]', 'Made with a token');
  await page.click('#create-form button[type="submit"]');
  await page.locator('li[data-id="T-1"]').waitFor({ timeout: SHOWS });
  // The broker took it as alice's; without a token nobody reads it.
  const denied = JSON.parse(execFileSync('curl', ['-sS', `${base}/tasks/T-1`], { encoding: 'utf8' }));
  assert.equal(denied.error.code, 'unauthorized');
  const task = JSON.parse(execFileSync('curl', ['-sS', '-H', `Authorization: Bearer ${token}`, `${base}/tasks/T-1`], { encoding: 'utf8' }));
  assert.equal(task.task.createdBy, 'alice');
});

test('each workspace has its own dashboard, and the switcher goes from one to another', { timeout: 60_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'muster-dashboard-workspaces-'));
  const addr = `127.0.0.1:${await freePort()}`;
  const base = `http://${addr}`;
  const broker = await startBroker(join(root, 'data'), addr);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-first-run'] });
  t.after(async () => {
    await browser.close();
    await stop(broker);
    rmSync(root, { recursive: true, force: true });
  });
  for (const name of ['a', 'b', 'old']) assert.equal(curl(base, 'POST', '/workspaces', { name }).name, name);
  curl(base, 'POST', '/w/a/tasks', { title: 'Alpha: fix the login page' });
  curl(base, 'POST', '/w/b/tasks', { title: 'Beta: rate-limit the export' });
  curl(base, 'POST', '/w/b/tasks', { title: 'Beta: profile cold start' });
  curl(base, 'POST', '/tasks', { title: 'Default: write the release notes' });
  assert.equal(curl(base, 'DELETE', '/workspaces/old').archived, true);

  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console error: ${m.text()}`));
  const titles = () => page.locator('#board li .title').evaluateAll((els) => els.map((el) => el.textContent).sort());
  const opened = async (path) => {
    await page.waitForURL(`${base}${path}`, { timeout: SHOWS });
    await page.waitForSelector('body[data-connection="open"]', { timeout: SHOWS });
  };

  // b's page: b's name, b's tasks and no one else's.
  const response = await page.goto(`${base}/w/b/dashboard`);
  assert.match(response.headers()['content-security-policy'], /script-src 'self'/);
  await opened('/w/b/dashboard');
  await page.locator('#board li', { hasText: 'Beta: profile cold start' }).waitFor({ timeout: SHOWS });
  assert.deepEqual(await titles(), ['Beta: profile cold start', 'Beta: rate-limit the export']);
  assert.equal(await page.locator('#workspace-name').innerText(), 'b');
  assert.match(await page.title(), /^b · Muster$/);

  // The switcher lists every workspace, the archived one marked, b selected.
  const options = page.locator('#workspace-switch option');
  await page.locator('#workspace-switch option[value="old"]').waitFor({ state: 'attached', timeout: SHOWS });
  assert.deepEqual(
    await options.evaluateAll((os) => os.map((o) => [o.value, o.textContent])),
    [['a', 'a'], ['b', 'b'], ['default', 'default'], ['old', 'old (archived)']],
  );
  assert.equal(await page.inputValue('#workspace-switch'), 'b');

  // Switching goes to a's page, which shows a's tasks, live, and none of b's.
  await page.selectOption('#workspace-switch', 'a');
  await opened('/w/a/dashboard');
  await page.locator('#board li', { hasText: 'Alpha: fix the login page' }).waitFor({ timeout: SHOWS });
  assert.equal(await page.locator('#workspace-name').innerText(), 'a');
  assert.equal(await page.inputValue('#workspace-switch'), 'a');
  curl(base, 'POST', '/w/b/tasks', { title: 'Beta: written while a is shown' });
  curl(base, 'POST', '/w/a/tasks', { title: 'Alpha: written while a is shown' });
  await page.locator('#board li', { hasText: 'Alpha: written while a is shown' }).waitFor({ timeout: SHOWS });
  assert.deepEqual(await titles(), ['Alpha: fix the login page', 'Alpha: written while a is shown']);

  // And back to the default workspace, at /dashboard.
  await page.selectOption('#workspace-switch', 'default');
  await opened('/dashboard');
  await page.locator('#board li', { hasText: 'Default: write the release notes' }).waitFor({ timeout: SHOWS });
  assert.deepEqual(await titles(), ['Default: write the release notes']);
  assert.equal(await page.locator('#workspace-name').innerText(), 'default');
  assert.deepEqual(problems, []);
});
