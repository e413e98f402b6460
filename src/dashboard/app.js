// The Muster dashboard. Everything it shows comes from the broker through Muster's
// JavaScript client (/client.js) over this page's own WebSocket; everything a human does here
// goes through the same operations agents use, under the human's name (a `human` session).
//
// Rendering is incremental: each task, agent and message has one element, kept in a Map and
// updated in place when an event about it arrives; nothing re-renders the whole page per
// event. When the connection drops the page says so and greys out until the client has
// resumed from its last seq; if the broker could not replay what was missed, the page reloads
// its state instead of showing stale data.
//
// The page shows one workspace of the broker, the one its address names
// (`/w/{workspace}/dashboard`; `/dashboard` is `default`), and switches by going to another's.

import { MusterClient } from '/client.js';

const STATUSES = ['todo', 'doing', 'review', 'blocked', 'done', 'cancelled'];
const FINISHED = new Set(['done', 'cancelled']);
/** Events kept in the activity feed. */
const ACTIVITY_MAX = 300;
/** Messages kept on screen for the open channel. */
const MESSAGES_MAX = 300;
/** What an agent name may be (as the broker checks it). */
const NAME_PATTERN = /^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?$/;

const $ = (id) => document.getElementById(id);

/** The workspace this page shows, from its address; names are case-insensitive (one
 * spelling, lowercase, as the broker writes them). */
const WORKSPACE = /^\/w\/([^/]+)\/dashboard\/?$/.exec(location.pathname)?.[1].toLowerCase() ?? 'default';

/** The address of a workspace's dashboard. */
function dashboardOf(workspace) {
  return workspace === 'default' ? '/dashboard' : `/w/${encodeURIComponent(workspace)}/dashboard`;
}

/** A localStorage key for what this page keeps per workspace (read cursors, the open
 * channel: each workspace has its own channels and `seq`). `default`'s are the keys of a page
 * from before workspaces. */
function local(key) {
  return WORKSPACE === 'default' ? `muster.${key}` : `muster.w.${WORKSPACE}.${key}`;
}

/** Creates an element with attributes and children (strings become text, never HTML). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** "3s ago", "5m ago", "2h ago", "4d ago". */
function ago(iso) {
  if (!iso) return '';
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

/** The time of day; with the date too when it is not today ("Nov 30 14:02:05"). */
function clock(iso) {
  const t = new Date(iso);
  const now = new Date();
  const time = t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (t.toDateString() === now.toDateString()) return time;
  const year = t.getFullYear() === now.getFullYear() ? {} : { year: 'numeric' };
  return `${t.toLocaleDateString([], { month: 'short', day: 'numeric', ...year })} ${time}`;
}
const idNumber = (id) => Number(String(id).slice(2));

// ---------------------------------------------------------------------------------------
// State

const state = {
  /** @type {Map<string, any>} task id → task */
  tasks: new Map(),
  /** @type {Map<string, any>} name → presence (as GET /presence gives it) */
  agents: new Map(),
  /** @type {Map<string, {name: string, lastSeq: number, unread: number}>} */
  channels: new Map(),
  /** @type {Map<string, any>} reservation id → file reservation */
  files: new Map(),
  channel: localStorage.getItem(local('channel')) || 'general',
  me: localStorage.getItem('muster.me') || '',
  token: localStorage.getItem('muster.token') || '',
  epoch: null,
  loaded: false,
  /**
   * Finished columns hold the tasks the board page brings (those finished last); "Show
   * older" pages back through the rest. status → the cursor of the next older page, null
   * once there is none, undefined before the first.
   * @type {Map<string, string | null | undefined>}
   */
  older: new Map(),
  /** The task whose detail is open. */
  detail: null,
};

/** @type {MusterClient} */
let client;

// ---------------------------------------------------------------------------------------
// Connection

function connect() {
  if (client) client.close();
  const options = { url: location.origin, topics: ['*'] };
  if (WORKSPACE !== 'default') options.workspace = WORKSPACE;
  if (state.me) Object.assign(options, { agent: state.me, human: true });
  if (state.token) options.token = state.token;
  client = new MusterClient(options);
  client.on('status', showConnection);
  client.on('welcome', (welcome) => {
    // A fresh start, or a reconnection that could not replay what was missed: re-read.
    if (!state.loaded || !welcome.resumed) loadAll().catch(showLoadError);
    showConnection(client.status);
    loadWorkspaces();
  });
  client.on('event', onEvent);
  client.on('revoked', () => {
    // The token this page used was revoked: ask for another one.
    $('connection').textContent = 'This token was revoked';
    askForToken('the broker revoked this token; enter a new one');
  });
  client.on('removed', () => {
    // Nobody works in a removed workspace: the broker ended the session, for good.
    $('connection').textContent = `Workspace ${WORKSPACE} was removed (archived or deleted): switch to another`;
  });
  const attempt = client;
  attempt.ready().catch((error) => {
    // The client gives up when its first connection fails; the page keeps trying.
    if (attempt !== client) return;
    if (error.code === 'unauthorized' || error.code === 'forbidden') {
      // Tokens are on: ask for one (and the name it belongs to) instead of retrying.
      showConnection('closed');
      $('connection').textContent = 'A token is needed';
      askForToken(error.message);
      return;
    }
    if (error.code === 'not_found' || error.code === 'conflict') {
      // The workspace is gone, or archived (no one may act in it): retrying cannot help.
      showConnection('closed');
      $('connection').textContent = error.message;
      return;
    }
    showConnection('reconnecting');
    $('connection').textContent = `No broker at ${location.origin} (${error.message}); retrying…`;
    setTimeout(() => attempt === client && connect(), 2000);
  });
}

function showConnection(status) {
  document.body.dataset.connection = status;
  const text = {
    connecting: 'Connecting…',
    open: liveLabel(),
    reconnecting: 'Reconnecting… what you see may be out of date',
    closed: 'Disconnected: reload the page to reconnect',
  }[status] ?? status;
  $('connection').textContent = text;
}

/** When the last change arrived (the seq itself is in the tooltip). */
let lastChangeAt = null;

function liveLabel() {
  return lastChangeAt ? `Live · last change ${ago(lastChangeAt)}` : 'Live · up to date';
}

function showLive() {
  if (client?.status !== 'open') return;
  $('connection').textContent = liveLabel();
  $('connection').title = `up to event #${client.lastSeq ?? 0}`;
}

function showLoadError(error) {
  // A closed client's calls all fail: the connection line already says why it closed.
  if (client.status === 'closed') return;
  $('connection').textContent = `Could not load the board: ${error.message}`;
}

async function loadAll() {
  if (state.epoch && client.epoch !== state.epoch) {
    // Another data dir behind the same address: nothing we hold is valid.
    state.tasks.clear();
    state.agents.clear();
    state.channels.clear();
    state.older.clear();
  }
  state.epoch = client.epoch;
  const [tasks, agents, channels, files] = await Promise.all([
    client.tasks({}),
    client.presence(),
    client.channels(),
    client.files(),
  ]);
  state.files = new Map(files.map((r) => [r.id, r]));
  for (const task of tasks) {
    // An event may already have brought a newer version of this task.
    const known = state.tasks.get(task.id);
    if (!known || when(known.updatedAt) <= when(task.updatedAt)) state.tasks.set(task.id, task);
  }
  state.agents = new Map(agents.map((a) => [a.name, a]));
  for (const c of channels) {
    const known = state.channels.get(c.name);
    state.channels.set(c.name, { name: c.name, lastSeq: c.lastSeq, unread: known?.unread ?? 0 });
  }
  if (!state.channels.has('general')) state.channels.set('general', { name: 'general', lastSeq: 0, unread: 0 });
  state.loaded = true;
  renderBoard();
  renderTeam();
  renderFiles();
  await Promise.all([
    countUnread(),
    openChannel(state.channel),
    loadActivity(),
    state.detail && loadComments(state.detail),
  ]);
  showConnection(client.status);
}

function onEvent(event) {
  const data = event.data;
  if (event.type === 'task.commented') {
    // A comment: the task itself did not change.
    addComment(data.message);
  } else if (event.type.startsWith('task.')) {
    const known = state.tasks.get(data.task.id);
    if (!known || when(known.updatedAt) <= when(data.task.updatedAt)) upsertTask(data.task, true);
    if (state.detail === data.task.id) {
      renderDetail();
      $('task-history').append(historyItem(event));
    }
  } else if (event.type === 'chat.message') {
    onMessage(data.message);
  } else if (event.type === 'presence.changed') {
    onAgentRecord({ ...data.agent, claimsExpireAt: data.claimsExpireAt ?? null });
  } else if (event.type === 'files.reserved' || event.type === 'files.released') {
    for (const r of data.reservations) {
      if (event.type === 'files.reserved') state.files.set(r.id, r);
      else state.files.delete(r.id);
    }
    renderTeamSoon();
    renderFiles();
    if (state.detail) renderDetail();
  }
  onContact(event);
  addActivity(event, true);
  lastChangeAt = event.at;
  showLive();
}

// ---------------------------------------------------------------------------------------
// Workspaces

/** Shows this page's workspace; the switcher offers it and `default` until the list comes. */
function showWorkspace() {
  $('workspace-name').textContent = WORKSPACE;
  document.title = `${WORKSPACE} · Muster`;
  renderWorkspaces([...new Set([WORKSPACE, 'default'])].sort().map((name) => ({ name, archived: false })));
}

/** Fills the switcher with the broker's workspaces, this page's selected. */
function renderWorkspaces(workspaces) {
  const select = $('workspace-switch');
  const list = workspaces.some((w) => w.name === WORKSPACE) ? workspaces : [{ name: WORKSPACE, archived: false }, ...workspaces];
  const options = list.map((w) =>
    h('option', { value: w.name, selected: w.name === WORKSPACE, dataset: { archived: w.archived } }, w.archived ? `${w.name} (archived)` : w.name),
  );
  // Left alone when nothing changed: replacing the options closes a list the human opened.
  const same = (a, b) => a.value === b.value && a.textContent === b.textContent;
  if (options.length === select.options.length && options.every((o, i) => same(o, select.options[i]))) return;
  select.replaceChildren(...options);
  select.value = WORKSPACE;
}

/** Reads the broker's workspaces into the switcher; without them it keeps what it shows. */
async function loadWorkspaces() {
  try {
    renderWorkspaces(await client.workspaces());
  } catch {
    // A broker that cannot say (the session ended): the switcher still shows this one.
  }
}

/** Goes to another workspace's dashboard. */
function switchWorkspace(event) {
  const name = event.target.value;
  if (name !== WORKSPACE) location.assign(dashboardOf(name));
}

// ---------------------------------------------------------------------------------------
// Board

/** @type {Map<string, HTMLElement>} status → the <ol> of that column */
const columns = new Map();
/** @type {Map<string, HTMLLIElement>} task id → its card */
const cards = new Map();

function buildColumns() {
  const board = $('board');
  for (const status of STATUSES) {
    const list = h('ol', { 'aria-label': `${status} tasks` });
    const count = h('span', { class: 'count' });
    const more = FINISHED.has(status) && h('button', { type: 'button', class: 'older', dataset: { status } }, `Show older ${status}`);
    const waiting = status === 'blocked' && h('span', { class: 'waiting-count', hidden: true });
    const column = h('section', { class: 'column', dataset: { status } }, h('h3', {}, status, count, waiting), list, more);
    list.count = count;
    list.waiting = waiting;
    columns.set(status, list);
    board.append(column);
    if (more) more.addEventListener('click', () => showOlder(status, more));
  }
}

/**
 * Loads older finished tasks of a column, newest first: the next page that holds any the
 * page does not show yet (the first pages repeat the ones the board brought).
 */
async function showOlder(status, button) {
  button.disabled = true;
  try {
    let added = 0;
    while (added === 0 && state.older.get(status) !== null) {
      const cursor = state.older.get(status) ?? undefined;
      const page = await client.taskPage({ status: [status], order: 'desc', limit: 50, cursor });
      for (const task of page.tasks) {
        const known = state.tasks.get(task.id);
        if (!known) added += 1;
        if (!known || when(known.updatedAt) < when(task.updatedAt)) upsertTask(task, false);
      }
      state.older.set(status, page.next ?? null);
    }
    button.hidden = state.older.get(status) === null;
  } catch (error) {
    button.textContent = `Could not load: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

/** Where a task sits in its column: open work by priority then age, finished work newest first. */
function before(a, b) {
  if (FINISHED.has(a.status)) {
    const [at, bt] = [when(a.updatedAt), when(b.updatedAt)];
    return at > bt || (at === bt && idNumber(a.id) > idNumber(b.id));
  }
  // Ready work first: a task waiting on unfinished ones sinks below those that can start.
  const [aw, bw] = [unfinishedBlockers(a).length > 0, unfinishedBlockers(b).length > 0];
  if (aw !== bw) return bw;
  if (a.priority !== b.priority) return a.priority < b.priority;
  return idNumber(a.id) < idNumber(b.id);
}

/**
 * A wire time in milliseconds. Times are RFC 3339 with a fraction only when it is not zero
 * ("10:00:05Z", then "10:00:05.300Z"), so as strings they do not sort: compare them parsed.
 */
function when(time) {
  return Date.parse(time);
}

function holder(task) {
  return task.claim?.agent ?? task.assignee ?? null;
}

function unfinishedBlockers(task) {
  return (task.blockedBy ?? []).filter((id) => {
    const blocker = state.tasks.get(id);
    return !blocker || !FINISHED.has(blocker.status);
  });
}

/**
 * When the claims of a task's holder are released if it stays away: set while the holder is
 * offline (its last session closed, or it went silent), null while it is here.
 */
function ownerGoneUntil(task) {
  const owner = task.claim && state.agents.get(task.claim.agent);
  if (!owner || owner.status !== 'offline' || !owner.claimsExpireAt) return null;
  return owner.claimsExpireAt;
}

/** "owner gone, released in 3 min" / "… in 40 s" / "… any moment". */
function releasedIn(iso) {
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (seconds <= 0) return 'owner gone, released any moment';
  if (seconds < 60) return `owner gone, released in ${seconds} s`;
  return `owner gone, released in ${Math.ceil(seconds / 60)} min`;
}

function cardContent(task) {
  const blockers = unfinishedBlockers(task);
  const gone = ownerGoneUntil(task);
  const who = task.claim
    ? `held by ${task.claim.agent}`
    : task.assignee
      ? `reserved for ${task.assignee}`
      : 'unassigned';
  const waiting = blockers.length > 0 && !FINISHED.has(task.status);
  const label = [task.id, task.title, task.priority, task.status, who, waiting && `waiting on ${blockers.join(', ')}`]
    .filter(Boolean)
    .join(', ');
  return h(
    'button',
    {
      type: 'button',
      class: `card${waiting ? ' waiting' : ''}${task.claim ? ' held' : ''}${gone ? ' gone' : ''}`,
      dataset: { priority: task.priority },
      'aria-label': label,
    },
    h(
      'span',
      { class: 'line' },
      h('span', { class: 'id' }, task.id),
      h('span', { class: `prio ${task.priority}` }, task.priority),
      task.claim && h('span', { class: 'holder', title: `${task.claim.agent} holds the claim` }, task.claim.agent),
      task.claim && h('span', { class: 'age', dataset: { since: task.claim.at }, title: 'claimed' }, ago(task.claim.at)),
      !task.claim && task.assignee && !FINISHED.has(task.status) && h('span', { class: 'reserved', title: `reserved for ${task.assignee}: only it may claim` }, `for ${task.assignee}`),
      !task.claim && task.assignee && FINISHED.has(task.status) && h('span', { class: 'assignee' }, task.assignee),
    ),
    h('span', { class: 'title' }, task.title),
    waiting && h('span', { class: 'line waiting-on' }, `waiting on ${blockers.join(', ')}`),
    gone && h('span', { class: 'line owner-gone', dataset: { until: gone } }, releasedIn(gone)),
    (task.tags ?? []).length > 0 && h('span', { class: 'line' }, task.tags.map((t) => h('span', { class: 'tag' }, t))),
  );
}

function placeCard(li, task) {
  const list = columns.get(task.status);
  let next = null;
  for (const other of list.children) {
    const t = state.tasks.get(other.dataset.id);
    if (other !== li && t && before(task, t)) {
      next = other;
      break;
    }
  }
  if (li.parentElement !== list || li.nextElementSibling !== next) list.insertBefore(li, next);
}

/** Adds or updates one card; the rest of the board is untouched. */
function upsertTask(task, live) {
  const previous = state.tasks.get(task.id);
  state.tasks.set(task.id, task);
  let li = cards.get(task.id);
  if (!li) {
    li = h('li', { dataset: { id: task.id } });
    cards.set(task.id, li);
  }
  li.replaceChildren(cardContent(task));
  li.hidden = !matchesFilters(task);
  placeCard(li, task);
  if (live) li.firstElementChild.classList.add('flash');
  // Tasks waiting on this one show their blockers: refresh them when it finishes.
  if (previous && previous.status !== task.status) {
    for (const other of state.tasks.values()) {
      const card = cards.get(other.id);
      if (!card || !other.blockedBy?.includes(task.id)) continue;
      card.replaceChildren(cardContent(other));
      placeCard(card, other);
    }
  }
  if (!previous || previous.status !== task.status || holder(previous) !== holder(task)) {
    updateCounts();
    renderTeamSoon();
  }
}

function renderBoard() {
  for (const list of columns.values()) list.replaceChildren();
  cards.clear();
  const sorted = [...state.tasks.values()].sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0));
  const fragments = new Map(STATUSES.map((s) => [s, document.createDocumentFragment()]));
  for (const task of sorted) {
    const li = h('li', { dataset: { id: task.id } }, cardContent(task));
    li.hidden = !matchesFilters(task);
    cards.set(task.id, li);
    fragments.get(task.status)?.append(li);
  }
  for (const [status, fragment] of fragments) columns.get(status).append(fragment);
  updateCounts();
  updateAgentFilter();
}

function updateCounts() {
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  let waiting = 0;
  for (const task of state.tasks.values()) {
    counts[task.status] += 1;
    if (task.status === 'todo' && unfinishedBlockers(task).length > 0) waiting += 1;
  }
  for (const [status, list] of columns) list.count.textContent = String(counts[status]);
  // Tasks waiting on others stay in todo (they are not `blocked`): say so where one looks.
  const blocked = columns.get('blocked');
  blocked.waiting.textContent = waiting ? `+ ${waiting} waiting in todo` : '';
  blocked.waiting.hidden = waiting === 0;
}

// Filters

function matchesFilters(task) {
  const agent = $('filter-agent').value;
  const priority = $('filter-priority').value;
  const text = $('filter-text').value.trim().toLowerCase();
  if (agent && holder(task) !== agent) return false;
  if (priority && task.priority !== priority) return false;
  if (text) {
    const haystack = `${task.id} ${task.title} ${(task.tags ?? []).join(' ')}`.toLowerCase();
    if (!haystack.includes(text)) return false;
  }
  return true;
}

function applyFilters() {
  for (const [id, li] of cards) li.hidden = !matchesFilters(state.tasks.get(id));
}

function updateAgentFilter() {
  const select = $('filter-agent');
  const names = new Set([...state.agents.keys()]);
  for (const task of state.tasks.values()) if (holder(task)) names.add(holder(task));
  const current = select.value;
  const sorted = [...names].sort();
  const existing = [...select.options].slice(1).map((o) => o.value);
  if (existing.join('\n') !== sorted.join('\n')) {
    select.replaceChildren(h('option', { value: '' }, 'everyone'), ...sorted.map((n) => h('option', { value: n }, n)));
    select.value = current;
  }
  const datalist = $('agent-names');
  if (datalist.options.length !== sorted.length) datalist.replaceChildren(...sorted.map((n) => h('option', { value: n })));
}

// ---------------------------------------------------------------------------------------
// Team

/** @type {Map<string, HTMLLIElement>} */
const rows = new Map();
let teamTimer = null;

/**
 * What presence shows of an agent record: the broker announces it (`shown`, `stuck`) with
 * every change, including those by silence alone (idle, offline, stuck), so the page never
 * polls for it. Records from before the broker announced fall back to their fields.
 */
function statusOf(agent) {
  if (agent.shown) return agent.shown;
  if (agent.connections > 0) return agent.status ?? 'active';
  if (agent.leftAt) return 'offline';
  return agent.status ?? 'active';
}

function onAgentRecord(record) {
  const known = state.agents.get(record.name) ?? {};
  state.agents.set(record.name, {
    ...known,
    name: record.name,
    status: statusOf(record),
    note: record.note,
    connections: record.connections,
    lastSeenAt: record.lastSeenAt,
    claimsExpireAt: record.claimsExpireAt ?? null,
    human: record.human ?? known.human ?? false,
    stuck: record.stuck ?? false,
  });
  // The cards of the tasks it holds say whether their owner is gone.
  for (const task of state.tasks.values()) {
    if (task.claim?.agent === record.name) cards.get(task.id)?.replaceChildren(cardContent(task));
  }
  renderTeamSoon();
}

/** The agent whose action an event records (its contact moves its "last seen"). */
function actorOf(event) {
  const d = event.data;
  switch (event.type) {
    case 'task.created':
      return d.task.createdBy;
    case 'task.claimed':
    case 'inbox.acked':
    case 'files.reserved':
      return d.agent;
    case 'task.updated':
    case 'task.released':
    case 'task.completed':
    case 'files.released':
      return d.by;
    case 'chat.message':
    case 'task.commented':
      return d.message.from;
    default:
      return null;
  }
}

/** Contact with an agent: it was seen when the event happened. */
function onContact(event) {
  const agent = state.agents.get(actorOf(event) ?? '');
  if (agent && when(agent.lastSeenAt) < when(event.at)) {
    agent.lastSeenAt = event.at;
    renderTeamSoon();
  }
}

/** The task an agent is on: one it holds in `doing`, else any it holds. */
function currentTask(name) {
  let found = null;
  for (const task of state.tasks.values()) {
    if (task.claim?.agent !== name) continue;
    if (task.status === 'doing') return task;
    found ??= task;
  }
  return found;
}

function renderTeamSoon() {
  if (teamTimer) return;
  teamTimer = requestAnimationFrame(() => {
    teamTimer = null;
    renderTeam();
  });
}

/** An agent's (or a task's) reservations, by id. */
function reservationsOf(match) {
  return [...state.files.values()].filter(match).sort((a, b) => idNumber(a.id) - idNumber(b.id));
}

/** `src/auth/** (shared)`: a reservation in a few words. */
function held(r) {
  return `${r.pattern}${r.exclusive ? '' : ' (shared)'}`;
}

function agentRow(agent) {
  const task = currentTask(agent.name);
  const files = reservationsOf((r) => r.agent === agent.name);
  const li = rows.get(agent.name) ?? h('li', { class: 'agent' });
  li.dataset.status = agent.status;
  li.dataset.name = agent.name;
  li.classList.toggle('is-stuck', Boolean(agent.stuck));
  // (replaceChildren, unlike h, would write a `false` as text: each child is an element.)
  li.replaceChildren(
    h('span', { class: 'dot', 'aria-hidden': 'true' }),
    h('span', { class: 'name' }, agent.name),
    agent.connections > 0
      ? h('span', { class: 'live', title: 'holds a live WebSocket session' }, agent.connections > 1 ? `live · ${agent.connections} connections` : 'live')
      : h('span', { class: 'not-live', title: 'no live session: seen through HTTP, or gone' }, 'not connected'),
    h('span', { class: 'seen', dataset: { at: agent.lastSeenAt }, title: agent.lastSeenAt }, ago(agent.lastSeenAt)),
    h(
      'span',
      { class: 'sub' },
      h('span', { class: 'status' }, agent.status),
      task && h('span', { class: 'task' }, `${task.id} ${task.title}`),
      agent.note && h('span', { class: 'note' }, `“${agent.note}”`),
      agent.stuck && h('span', { class: 'stuck' }, 'STUCK'),
      agent.human && h('span', { class: 'tag' }, 'human'),
    ),
    ...(files.length > 0 ? [h('span', { class: 'files', title: files.map((r) => `${r.repo}: ${held(r)}`).join('\n') }, `files: ${files.map(held).join(', ')}`)] : []),
  );
  rows.set(agent.name, li);
  return li;
}

function renderTeam() {
  const order = { active: 0, idle: 2, offline: 3 };
  // Stuck first, then those with a live session, then by status: the top of the panel is
  // who needs a look and who is working now.
  const live = (a) => (a.connections > 0 ? 0 : 1);
  const agents = [...state.agents.values()].sort(
    (a, b) =>
      (b.stuck ? 1 : 0) - (a.stuck ? 1 : 0) ||
      live(a) - live(b) ||
      (order[a.status] ?? 1) - (order[b.status] ?? 1) ||
      a.name.localeCompare(b.name),
  );
  const list = $('team');
  agents.forEach((agent, i) => {
    const li = agentRow(agent);
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
  });
  for (const [name, li] of rows) {
    if (!state.agents.has(name)) {
      li.remove();
      rows.delete(name);
    }
  }
  const online = agents.filter((a) => a.status !== 'offline').length;
  const connected = agents.filter((a) => a.connections > 0).length;
  $('team-count').textContent = `${online} of ${agents.length} here · ${connected} live`;
  updateAgentFilter();
}

function tick() {
  for (const el of document.querySelectorAll('.seen[data-at], .comment time[data-at]')) el.textContent = ago(el.dataset.at);
  for (const el of document.querySelectorAll('.owner-gone[data-until]')) el.textContent = releasedIn(el.dataset.until);
  showLive();
}

function tickCards() {
  for (const el of document.querySelectorAll('.age[data-since]')) el.textContent = ago(el.dataset.since);
}

// ---------------------------------------------------------------------------------------
// Chat

const readKey = (channel) => local(`read.${channel}`);
const lastRead = (channel) => Number(localStorage.getItem(readKey(channel)) || 0);

function markRead(channel, seq) {
  if (seq > lastRead(channel)) localStorage.setItem(readKey(channel), String(seq));
  const c = state.channels.get(channel);
  if (c) c.unread = 0;
  renderChannelsSoon();
}

let channelsFrame = null;
function renderChannelsSoon() {
  channelsFrame ??= requestAnimationFrame(() => {
    channelsFrame = null;
    renderChannels();
  });
}

async function countUnread() {
  const pending = [...state.channels.values()].filter((c) => c.name !== state.channel && c.lastSeq > lastRead(c.name));
  await Promise.all(
    pending.slice(0, 30).map(async (c) => {
      const page = await client.messages({ channel: c.name, since: lastRead(c.name), limit: 100 });
      c.unread = page.messages.length;
    }),
  );
  renderChannels();
}

function renderChannels() {
  const nav = $('channels');
  const names = [...state.channels.keys()].sort((a, b) => (a === 'general' ? -1 : b === 'general' ? 1 : a.localeCompare(b)));
  nav.replaceChildren(
    ...names.map((name) => {
      const c = state.channels.get(name);
      const unread = c.unread > 0 ? ` ${c.unread > 99 ? '99+' : c.unread}` : '';
      const button = h(
        'button',
        { type: 'button', 'aria-current': name === state.channel ? 'true' : 'false', dataset: { channel: name } },
        `#${name}`,
        unread && h('span', { class: 'badge', 'aria-label': `${c.unread} unread` }, unread.trim()),
      );
      button.addEventListener('click', () => openChannel(name));
      return button;
    }),
  );
  const total = [...state.channels.values()].reduce((sum, c) => sum + c.unread, 0);
  const badge = $('chat-unread');
  badge.hidden = total === 0;
  badge.textContent = String(total);
}

/** Message text with @mentions highlighted, built from text nodes (never HTML). */
function withMentions(content) {
  return content.split(/(@[A-Za-z0-9_][A-Za-z0-9._-]*)/).map((part, i) => (i % 2 ? h('span', { class: 'mention' }, part) : part));
}

function messageItem(m) {
  const from = m.to ? `${m.from} → ${m.to}` : m.from;
  const human = state.agents.get(m.from)?.human;
  return h(
    'li',
    { class: 'message', dataset: { seq: m.seq, id: m.id } },
    h('span', { class: 'from' }, from),
    human && h('span', { class: 'tag' }, 'human'),
    h('time', { datetime: m.at, title: m.at }, clock(m.at)),
    h('div', { class: 'content' }, withMentions(m.content)),
  );
}

async function openChannel(name) {
  state.channel = name;
  localStorage.setItem(local('channel'), name);
  $('post-text').placeholder = `Message #${name} — @name to mention`;
  const page = await client.messages({ channel: name, limit: 100 });
  if (state.channel !== name) return;
  const list = $('messages');
  list.replaceChildren(...page.messages.map(messageItem));
  chatAtBottom = true;
  list.scrollTop = list.scrollHeight;
  const last = page.messages.at(-1)?.seq ?? 0;
  markRead(name, last);
}

function onMessage(message) {
  const c = state.channels.get(message.channel) ?? { name: message.channel, lastSeq: 0, unread: 0 };
  c.lastSeq = Math.max(c.lastSeq, message.seq);
  state.channels.set(message.channel, c);
  const chatVisible = !$('chat-panel').hidden;
  if (message.channel === state.channel) {
    const list = $('messages');
    if (!list.querySelector(`[data-seq="${message.seq}"]`)) list.append(messageItem(message));
    while (list.children.length > MESSAGES_MAX) list.firstElementChild.remove();
    followChatSoon();
    if (chatVisible && document.visibilityState === 'visible') {
      markRead(message.channel, message.seq);
      return;
    }
  }
  c.unread += 1;
  renderChannelsSoon();
}

// Reading the scroll position forces a layout of the whole page: never once per message.
// The list follows new messages while the reader is at its bottom (tracked on scroll), and
// scrolls at most once per frame.
let chatAtBottom = true;
let chatFollow = null;
function followChatSoon() {
  if (chatFollow || !chatAtBottom) return;
  chatFollow = requestAnimationFrame(() => {
    chatFollow = null;
    const list = $('messages');
    list.scrollTop = list.scrollHeight;
  });
}

async function postMessage(event) {
  event.preventDefault();
  const text = $('post-text');
  const content = text.value.trim();
  if (!content) return;
  const me = await ensureMe();
  if (!me) return;
  try {
    await client.post({ from: me, content, channel: state.channel });
    text.value = '';
    text.setCustomValidity('');
  } catch (error) {
    text.setCustomValidity(error.message);
    text.reportValidity();
  }
}

// ---------------------------------------------------------------------------------------
// Activity

function describe(event) {
  const d = event.data;
  const by = (name, nobody = 'the broker') => (name ? `${name}${state.agents.get(name)?.human ? ' (human)' : ''}` : nobody);
  switch (event.type) {
    case 'task.created':
      return `${d.task.id} created by ${by(d.task.createdBy, 'someone unnamed')}: ${d.task.title}`;
    case 'task.claimed':
      return `${d.task.id} claimed by ${by(d.agent)}`;
    case 'task.released':
      return `${d.task.id} released from ${d.agent} by ${by(d.by)} (${d.reason})`;
    case 'task.completed':
      return `${d.task.id} done by ${by(d.by, 'someone unnamed')}`;
    case 'task.updated':
      return `${d.task.id} ${d.changes?.join(', ')} changed by ${by(d.by, 'someone unnamed')}: now ${d.task.status}, ${d.task.priority}${d.task.assignee ? `, ${d.task.assignee}` : ''}`;
    case 'task.ready':
      return `${d.task.id} is ready: its blockers are done`;
    case 'chat.message':
      return `${d.message.from} in #${d.message.channel}: ${d.message.content}`;
    case 'task.commented':
      return `${d.message.task} commented by ${by(d.message.from)}: ${d.message.content}`;
    case 'presence.changed':
      return `${d.agent.name} ${d.agent.connections > 0 ? `connected (${d.agent.connections})` : d.agent.leftAt ? 'left' : d.agent.status ?? 'active'}`;
    case 'inbox.acked':
      return `${d.agent} read their inbox`;
    case 'files.reserved':
      return `${by(d.agent)} reserved ${d.reservations.map(held).join(', ')} in ${d.reservations[0]?.repo}`;
    case 'files.released':
      return `${d.agent}'s ${d.reservations.map(held).join(', ')} released by ${by(d.by)} (${d.reason})`;
    default:
      return event.type;
  }
}

function activityItem(event) {
  return h(
    'li',
    { class: 'event', dataset: { seq: event.seq } },
    h('span', { class: 'type' }, event.type),
    h('time', { datetime: event.at }, clock(event.at)),
    h('div', {}, describe(event)),
  );
}

function addActivity(event, live) {
  const list = $('activity');
  if (list.querySelector(`[data-seq="${event.seq}"]`)) return;
  if (live) list.prepend(activityItem(event));
  else list.append(activityItem(event));
  while (list.children.length > ACTIVITY_MAX) list.lastElementChild.remove();
}

async function loadActivity() {
  const since = Math.max(0, (client.lastSeq ?? 0) - 100);
  const events = await client.history(['*'], { since, limit: 100 });
  const list = $('activity');
  list.replaceChildren(...events.reverse().map(activityItem));
}

// ---------------------------------------------------------------------------------------
// Files: the reservations held now, and reserving as the human

function fileItem(r) {
  const until = r.expiresAt ? `until ${new Date(r.expiresAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}` : 'with its task';
  return h(
    'li',
    { class: 'reservation', dataset: { id: r.id, agent: r.agent } },
    h('span', { class: 'pattern' }, r.pattern),
    h('span', { class: 'holder' }, r.agent),
    h(
      'span',
      { class: 'sub' },
      h('span', {}, r.exclusive ? 'exclusive' : 'shared'),
      r.task && h('span', { class: 'task' }, r.task),
      h('span', {}, until),
      h('span', { class: 'repo' }, r.repo),
      r.reason && h('span', { class: 'note' }, `“${r.reason}”`),
    ),
    r.agent === state.me && h('button', { type: 'button', class: 'release', dataset: { repo: r.repo, pattern: r.pattern } }, 'Release'),
  );
}

function renderFiles() {
  const files = reservationsOf(() => true);
  $('files').replaceChildren(...(files.length ? files.map(fileItem) : [h('li', { class: 'empty' }, 'No files reserved')]));
  $('files-count').textContent = files.length ? String(files.length) : '';
  const repos = [...new Set(files.map((r) => r.repo))];
  $('repo-names').replaceChildren(...repos.map((repo) => h('option', { value: repo })));
}

/** A refused reservation: who holds what, and a path both patterns match. */
function conflictList(error) {
  if (!error.conflicts?.length) return [error.message];
  return [
    h('p', {}, 'Not reserved: another agent holds these paths.'),
    h(
      'ul',
      { class: 'conflicts' },
      error.conflicts.map((c) =>
        h(
          'li',
          { class: 'conflict', dataset: { holder: c.holder.agent } },
          h('strong', {}, c.holder.agent),
          ` holds ${c.holder.pattern} (${c.holder.exclusive ? 'exclusive' : 'shared'}, ${c.holder.id}${c.holder.task ? `, for ${c.holder.task}` : ''})`,
          ` — ${c.pattern} overlaps it: both match `,
          h('code', {}, c.witness),
        ),
      ),
    ),
  ];
}

async function reserveFiles(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const me = await ensureMe();
  if (!me) return;
  const data = new FormData(form);
  const patterns = String(data.get('patterns')).split(/[\s,]+/).filter(Boolean);
  $('reserve-error').replaceChildren();
  try {
    await client.reserveFiles({ repo: String(data.get('repo')).trim(), patterns, shared: data.get('shared') === 'on', agent: me });
    form.querySelector('[name="patterns"]').value = '';
  } catch (error) {
    $('reserve-error').replaceChildren(...conflictList(error));
  }
}

async function releaseFile(event) {
  const button = event.target.closest('button.release');
  if (!button) return;
  try {
    await client.releaseFiles({ repo: button.dataset.repo, patterns: [button.dataset.pattern], agent: state.me });
  } catch (error) {
    $('reserve-error').replaceChildren(error.message);
  }
}

// ---------------------------------------------------------------------------------------
// Task detail and control

function historyItem(event) {
  return h('li', { class: 'event' }, h('span', { class: 'type' }, event.type), h('time', { datetime: event.at }, clock(event.at)), h('div', {}, describe(event)));
}

function renderDetail() {
  const task = state.tasks.get(state.detail);
  if (!task) return;
  $('task-dialog-title').textContent = `${task.id} ${task.title}`;
  const row = (term, ...value) => [h('dt', {}, term), h('dd', {}, ...value)];
  $('task-detail').replaceChildren(
    h(
      'dl',
      { class: 'detail' },
      row('Status', task.status),
      row('Priority', task.priority),
      row('Assignee', task.assignee ?? '—'),
      row('Claim', task.claim ? `${task.claim.agent}, ${ago(task.claim.at)} (token ${task.claim.token})` : '—'),
      row('After', task.blockedBy?.length ? task.blockedBy.join(', ') : '—'),
      row(
        'Files',
        ...(() => {
          const files = reservationsOf((r) => r.task === task.id);
          if (!files.length) return ['—'];
          return [h('ul', { class: 'task-files' }, files.map((r) => h('li', {}, `${held(r)} — ${r.agent}, ${r.repo}`)))];
        })(),
      ),
      row('Tags', task.tags?.length ? task.tags.join(', ') : '—'),
      row('Created', `${ago(task.createdAt)} by ${task.createdBy ?? '—'}`),
      row('Updated', ago(task.updatedAt)),
      task.description && h('p', { class: 'description' }, task.description),
    ),
  );
  $('detail-priority').value = task.priority;
  $('detail-release').disabled = !task.claim;
  $('detail-cancel').disabled = FINISHED.has(task.status);
}

async function openDetail(id) {
  state.detail = id;
  $('detail-error').textContent = '';
  const task = state.tasks.get(id);
  $('detail-assignee').value = task?.assignee ?? '';
  const edit = $('edit-form');
  edit.elements.title.value = task?.title ?? '';
  edit.elements.description.value = task?.description ?? '';
  $('detail-edit').open = false;
  renderDetail();
  $('task-history').replaceChildren();
  $('task-comments').replaceChildren();
  updateCommentCount();
  $('comment-error').textContent = '';
  const text = $('comment-text');
  if (text.dataset.task !== id) text.value = '';
  text.dataset.task = id;
  const dialog = $('task-dialog');
  if (!dialog.open) dialog.showModal();
  const comments = loadComments(id);
  try {
    const events = await client.history([`task:${id}`], { since: 0, limit: 500 });
    // Comments have their own list above.
    const history = events.filter((e) => e.type !== 'task.commented');
    if (state.detail === id) $('task-history').replaceChildren(...history.map(historyItem));
  } catch (error) {
    $('detail-error').textContent = `History unavailable: ${error.message}`;
  }
  await comments;
}

// Task comments: messages in the task's thread (`#T-3`), shown oldest first in its detail.

/** The task a comment is on. */
function commentTask(message) {
  return message.task ?? (message.channel?.startsWith('#') ? message.channel.slice(1) : null);
}

function commentItem(m) {
  const human = state.agents.get(m.from)?.human;
  return h(
    'li',
    { class: 'comment', dataset: { id: m.id, seq: m.seq, from: m.from } },
    h('span', { class: 'from' }, m.from),
    human && h('span', { class: 'tag' }, 'human'),
    h('time', { datetime: m.at, title: clock(m.at), dataset: { at: m.at } }, ago(m.at)),
    h('div', { class: 'content' }, withMentions(m.content)),
  );
}

function updateCommentCount() {
  const count = $('task-comments').children.length;
  $('comments-count').textContent = count ? String(count) : '';
}

/**
 * Adds a comment to the open task's list, in seq order, once: the page may see the same
 * comment in its own reply, in the event, and in a page it is loading.
 */
function addComment(message) {
  if (!state.detail || commentTask(message) !== state.detail) return;
  const list = $('task-comments');
  if ([...list.children].some((li) => li.dataset.id === message.id)) return;
  const next = [...list.children].find((li) => Number(li.dataset.seq) > message.seq) ?? null;
  list.insertBefore(commentItem(message), next);
  if (!next) list.scrollTop = list.scrollHeight;
  updateCommentCount();
}

/** Loads every page of a task's comments into its open detail. */
async function loadComments(id) {
  try {
    let cursor;
    do {
      const page = await client.call('task.comments', { task: id, limit: 200, cursor });
      if (state.detail !== id) return;
      for (const message of page.messages) addComment(message);
      cursor = page.next ?? undefined;
    } while (cursor);
  } catch (error) {
    if (state.detail === id) $('comment-error').textContent = `Comments unavailable: ${error.message}`;
  }
}

/** Comments on the open task as the human; a refusal shows the broker's reason. */
async function postComment(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const id = state.detail;
  const me = await ensureMe();
  if (!me || !id) return;
  const text = $('comment-text');
  const button = form.querySelector('button[type="submit"]');
  $('comment-error').textContent = '';
  button.disabled = true;
  try {
    const { message } = await client.call('task.comment', { task: id, from: me, content: text.value });
    addComment(message);
    if (state.detail === id) text.value = '';
  } catch (error) {
    if (state.detail === id) $('comment-error').textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

/** Asks before a destructive action; resolves to true if the human confirms. */
function confirmAction(text) {
  const dialog = $('confirm-dialog');
  $('confirm-text').textContent = text;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true }));
}

/** Runs a control action for the open task as the human, showing any refusal. */
async function control(action) {
  const id = state.detail;
  const me = await ensureMe();
  if (!me || !id) return;
  $('detail-error').textContent = '';
  try {
    await action(id, me, state.tasks.get(id));
  } catch (error) {
    $('detail-error').textContent = error.message;
  }
}

async function saveEdit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await control(async (id, me, task) => {
    const title = form.elements.title.value.trim();
    const description = form.elements.description.value;
    const changes = { agent: me };
    if (title !== task.title) changes.title = title;
    if (description !== (task.description ?? '')) changes.description = description;
    if (Object.keys(changes).length > 1) await client.updateTask(id, changes);
    $('detail-edit').open = false;
  });
}

async function changePriority() {
  await control((id, me) => client.updateTask(id, { priority: $('detail-priority').value, agent: me }));
}

async function reassign() {
  await control(async (id, me, task) => {
    const to = $('detail-assignee').value.trim();
    if (to && !NAME_PATTERN.test(to)) throw new Error(`"${to}" is not a valid agent name`);
    if (task.claim && task.claim.agent !== to) {
      const ok = await confirmAction(`${id} is held by ${task.claim.agent}. Take it from ${task.claim.agent} and ${to ? `assign it to ${to}` : 'leave it unassigned'}?`);
      if (!ok) return;
      await client.release(id, { agent: me, force: true });
    }
    await client.updateTask(id, { assignee: to || null, agent: me });
  });
}

async function forceRelease() {
  await control(async (id, me, task) => {
    if (!task.claim) return;
    const ok = await confirmAction(`Force-release ${id} from ${task.claim.agent}? It goes back to the board for anyone to claim.`);
    if (ok) await client.release(id, { agent: me, force: true });
  });
}

async function cancelTask() {
  await control(async (id, me, task) => {
    const held = task.claim ? ` ${task.claim.agent} holds it and will lose it.` : '';
    const ok = await confirmAction(`Cancel ${id} “${task.title}”?${held}`);
    if (!ok) return;
    if (task.claim) await client.release(id, { agent: me, force: true });
    await client.updateTask(id, { status: 'cancelled', agent: me });
  });
}

// Creating a task

async function createTask(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = form.querySelector('.error');
  const me = await ensureMe();
  if (!me) return;
  const data = new FormData(form);
  const task = { title: String(data.get('title')).trim(), priority: data.get('priority'), agent: me };
  const description = String(data.get('description')).trim();
  const assignee = String(data.get('assignee')).trim();
  const blockedBy = String(data.get('blockedBy')).split(/[\s,]+/).filter(Boolean).map((id) => (/^\d+$/.test(id) ? `T-${id}` : id.toUpperCase()));
  if (description) task.description = description;
  if (assignee) task.assignee = assignee;
  if (blockedBy.length) task.blockedBy = blockedBy;
  try {
    await client.createTask(task);
    form.reset();
    error.textContent = '';
    $('create-dialog').close();
  } catch (e) {
    error.textContent = e.message;
  }
}

// Who the human is

function ensureMe() {
  if (state.me) return Promise.resolve(state.me);
  const dialog = $('name-dialog');
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(state.me || null), { once: true }));
}

function setMe(name) {
  name = name.trim();
  if (name === state.me) return;
  if (name && !NAME_PATTERN.test(name)) {
    $('me').setCustomValidity('Letters, digits, . _ - (up to 64)');
    $('me').reportValidity();
    return;
  }
  $('me').setCustomValidity('');
  state.me = name;
  $('me').value = name;
  if (name) localStorage.setItem('muster.me', name);
  else localStorage.removeItem('muster.me');
  // The session now acts as this person (or as an observer again).
  connect();
}

function askForToken(why) {
  const dialog = $('token-dialog');
  $('token-why').textContent = `${why}. Ask whoever runs the broker for one: muster token add NAME --human.`;
  dialog.querySelector('[name="name"]').value = state.me;
  if (!dialog.open) dialog.showModal();
}

// ---------------------------------------------------------------------------------------
// Wiring

function setTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}

function selectTab(tab) {
  for (const t of document.querySelectorAll('[role="tab"]')) {
    const selected = t === tab;
    t.setAttribute('aria-selected', String(selected));
    t.tabIndex = selected ? 0 : -1;
    $(t.getAttribute('aria-controls')).hidden = !selected;
  }
  if (tab.id === 'tab-chat') {
    const c = state.channels.get(state.channel);
    if (c) markRead(state.channel, c.lastSeq);
  }
}

function wire() {
  buildColumns();
  showWorkspace();
  $('workspace-switch').addEventListener('change', switchWorkspace);
  // Workspaces come and go: the list is read again when the human goes to pick one.
  $('workspace-switch').addEventListener('focus', () => client?.status === 'open' && loadWorkspaces());
  $('me').value = state.me;
  $('me').addEventListener('change', (e) => setMe(e.target.value));
  $('theme').addEventListener('click', () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === 'dark'
      : matchMedia('(prefers-color-scheme: dark)').matches;
    const theme = dark ? 'light' : 'dark';
    localStorage.setItem('muster.theme', theme);
    setTheme(theme);
  });
  setTheme(localStorage.getItem('muster.theme'));

  $('filters').addEventListener('input', applyFilters);
  $('filters').addEventListener('submit', (e) => e.preventDefault());
  $('board').addEventListener('click', (e) => {
    const li = e.target.closest('li[data-id]');
    if (li) openDetail(li.dataset.id);
  });
  $('task-dialog').addEventListener('close', () => {
    state.detail = null;
  });
  $('detail-priority').addEventListener('change', changePriority);
  $('detail-assign').addEventListener('click', reassign);
  $('detail-release').addEventListener('click', forceRelease);
  $('detail-cancel').addEventListener('click', cancelTask);
  $('edit-form').addEventListener('submit', saveEdit);
  $('comment-form').addEventListener('submit', postComment);
  $('comment-text').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      $('comment-form').requestSubmit();
    }
  });

  $('new-task').addEventListener('click', () => $('create-dialog').showModal());
  $('create-form').addEventListener('submit', createTask);
  $('create-form').querySelector('.close').addEventListener('click', () => $('create-dialog').close());

  $('name-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = new FormData(e.currentTarget).get('name');
    setMe(String(name));
    $('name-dialog').close();
  });
  $('name-form').querySelector('.close').addEventListener('click', () => $('name-dialog').close());

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    state.token = String(data.get('token')).trim();
    localStorage.setItem('muster.token', state.token);
    $('token-dialog').close();
    state.me = '';
    setMe(String(data.get('name')));
  });
  $('post').addEventListener('submit', postMessage);
  $('reserve').addEventListener('submit', reserveFiles);
  $('files').addEventListener('click', releaseFile);
  $('messages').addEventListener('scroll', (e) => {
    const list = e.currentTarget;
    chatAtBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  });
  $('post-text').addEventListener('input', (e) => e.target.setCustomValidity(''));
  $('post-text').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      $('post').requestSubmit();
    }
  });

  const tabs = [...document.querySelectorAll('[role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener('click', () => selectTab(tab));
    tab.addEventListener('keydown', (e) => {
      if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
      const next = tabs[(tabs.indexOf(tab) + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length];
      selectTab(next);
      next.focus();
    });
  }
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && !$('chat-panel').hidden) {
      const c = state.channels.get(state.channel);
      if (c) markRead(state.channel, c.lastSeq);
    }
  });

  setInterval(tick, 1000);
  setInterval(tickCards, 5000);
}

wire();
connect();
