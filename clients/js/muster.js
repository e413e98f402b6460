// @ts-check
/**
 * @file muster.js — the JavaScript client of the Muster broker.
 *
 * One WebSocket session to the broker: a typed call per operation, a stream of events in
 * `seq` order, and automatic reconnection with backoff that resumes from the last `seq`
 * received (no gap, no duplicate), or says `resync` when it cannot.
 *
 * One plain ES module without dependencies. It runs unchanged in a browser (the broker
 * serves this file at `/client.js`) and in Node 20+, where the caller passes a WebSocket
 * class (`import WebSocket from 'ws'`). Only the browser WebSocket API is used.
 *
 * A session works in one workspace of the broker (`workspace`; `default` unless named): its
 * board, chat, presence, reservations and events are that workspace's alone.
 *
 * The protocol is described in the broker's `protocol/` crate (`ws.rs`) and its golden
 * frames under `protocol/examples/`.
 *
 * @example
 * import { MusterClient } from './muster.js';
 * const client = new MusterClient({ url: 'http://127.0.0.1:4445', agent: 'link', topics: ['tasks'] });
 * client.on('event', (e) => console.log(e.seq, e.type));
 * await client.ready();
 * const task = await client.createTask({ title: 'Fix auth redirect', priority: 'P1' });
 * await client.claim(task.id);
 */

// ---------------------------------------------------------------------------------------
// Wire types (camelCase, as the broker sends them)
// ---------------------------------------------------------------------------------------

/** @typedef {'todo' | 'doing' | 'review' | 'blocked' | 'done' | 'cancelled'} TaskStatus */
/** @typedef {'P0' | 'P1' | 'P2' | 'P3'} Priority */

/**
 * Who holds a task.
 * @typedef {object} Claim
 * @property {string} agent The owner.
 * @property {number} token Fencing token: grows with every claim of the task.
 * @property {string} at When the claim was taken (RFC 3339).
 */

/**
 * A unit of work on the board.
 * @typedef {object} Task
 * @property {string} id `T-1`, `T-2`, ...
 * @property {string} title
 * @property {string} description
 * @property {TaskStatus} status
 * @property {Priority} priority
 * @property {string | null} assignee
 * @property {string[]} blockedBy Task ids that must be finished first.
 * @property {string[]} tags
 * @property {string | null} createdBy
 * @property {string} createdAt
 * @property {string} updatedAt
 * @property {Claim | null} claim The current claim, while someone holds the task.
 * @property {number} lastToken The last fencing token issued (0: never claimed).
 */

/**
 * A chat message, or a comment on a task (then `task` names it, and `channel` is its
 * thread, `#T-3`).
 * @typedef {object} ChatMessage
 * @property {string} id `M-1`, `M-2`, ...
 * @property {number} seq The `seq` of the `chat.message` (or `task.commented`) event that
 *   carried it.
 * @property {string} channel `general`, `dm:a,b` for a direct message without a channel,
 *   `#T-3` for a comment on T-3.
 * @property {string} from
 * @property {string} content
 * @property {string[]} mentions
 * @property {string | null} to Recipient of a direct message.
 * @property {string | null} replyTo
 * @property {string} at
 * @property {string} [task] The task it comments on (absent for chat messages).
 */

/**
 * A channel with messages.
 * @typedef {object} ChannelInfo
 * @property {string} name
 * @property {number} messages Messages posted.
 * @property {number} lastSeq `seq` of the newest message.
 */

/**
 * `{channel, messages, next}`, oldest first (`chat.read`, and `task.comments` with the
 * task's thread as `channel`).
 * @typedef {object} MessageList
 * @property {string} channel
 * @property {ChatMessage[]} messages
 * @property {string | null} next The `cursor` of the next page the same way (older
 *   messages, or newer ones after `since`), or null when there is no more.
 */

/**
 * One page of tasks, by id.
 * @typedef {object} TaskPage
 * @property {Task[]} tasks
 * @property {string | null} next The `cursor` of the next page, or null on the last.
 */

/**
 * Which tasks `task.list` returns. Without `status` or `all`: every unfinished task and the
 * last finished ones.
 * @typedef {object} TaskFilter
 * @property {TaskStatus | TaskStatus[]} [status] Only these (finished ones from all history).
 * @property {boolean} [all] Every task, finished ones from all history included.
 * @property {'asc' | 'desc'} [order] By id, oldest first (default) or newest first.
 * @property {string} [assignee]
 * @property {Priority} [priority]
 * @property {string} [tag]
 * @property {number} [limit] Tasks per page (default 500, at most 1000).
 * @property {string} [cursor] The `next` of the previous page.
 */

/**
 * An agent's inbox: messages that mention it or are addressed to it.
 * @typedef {object} Inbox
 * @property {string} agent
 * @property {number} cursor Read up to this `seq`.
 * @property {number} unread Messages after the cursor.
 * @property {ChatMessage[]} messages Unread ones (all with `all: true`), oldest first.
 * @property {string | null} next The `cursor` of the next page, or null.
 */

/**
 * An inbox read cursor.
 * @typedef {object} Cursor
 * @property {string} agent
 * @property {number} cursor
 */

/**
 * An agent as presence shows it.
 * @typedef {object} Presence
 * @property {string} name
 * @property {string} status `active`, `idle`, `offline`, or one the agent set (`busy`).
 * @property {string} lastSeen For humans: `2s ago`.
 * @property {string} lastSeenAt
 * @property {number} connections Open WebSocket sessions.
 * @property {string | null} task The task it holds, if any.
 * @property {string | null} note
 * @property {boolean} stuck
 * @property {string | null} claimsExpireAt
 * @property {boolean} [human] A person using the dashboard (absent for AI agents).
 */

/**
 * File reservation: paths of a repository an agent holds, exclusively or shared.
 * @typedef {object} Reservation
 * @property {string} id `R-1`, `R-2`, ...
 * @property {string} repo
 * @property {string} pattern A repository-relative path or glob.
 * @property {string} agent The holder.
 * @property {boolean} exclusive
 * @property {string | null} task The task it is for (it ends with the claim).
 * @property {string | null} reason
 * @property {string} at Made or last renewed.
 * @property {string | null} expiresAt
 */

/**
 * A refused reservation's overlap: `holder` holds a pattern that shares `witness` with
 * the `pattern` asked for.
 * @typedef {object} FileConflict
 * @property {string} pattern
 * @property {Reservation} holder
 * @property {string} witness A path both patterns match.
 */

/**
 * One entry of the broker's event log. `data` depends on `type`: `task.*` carry `task`
 * (and `agent`, `by`, `changes`, `reason`), except `task.commented`, which carries
 * `message` (the comment, whose `task` names the task), as `chat.message` does;
 * `presence.changed` carries `agent` (the agent record, with `shown`: the status presence
 * shows now, and `stuck`; sent too when silence alone makes an agent idle, offline or
 * stuck, and when it is back), `inbox.acked` `agent` and `seq`,
 * `files.reserved` and `files.released` `agent` and `reservations` (and `by`, `reason`).
 * @typedef {object} MusterEvent
 * @property {number} seq Global sequence number: gap-free, never reused.
 * @property {string} type `task.created`, `task.claimed`, `task.commented`,
 *   `chat.message`, ...
 * @property {string} at
 * @property {any} data
 */

/**
 * A workspace of the broker: a board, chat, presence and reservations of its own, with its
 * own `seq` and epoch.
 * @typedef {object} WorkspaceInfo
 * @property {string} name Lowercase; its HTTP routes are `/w/{name}/...` (`default`'s are
 *   also the unprefixed ones).
 * @property {boolean} archived Removed without `purge`: its data are kept, every write is
 *   refused, and it has no sessions.
 * @property {number} head Its last event's `seq`.
 */

/**
 * An error as the broker describes it.
 * @typedef {object} ErrorInfo
 * @property {string} code `conflict`, `not_found`, `invalid`, ...
 * @property {string} message
 * @property {string} [field] The request field at fault, for `invalid`.
 * @property {FileConflict[]} [conflicts] For a refused reservation: each overlap.
 */

// ---------------------------------------------------------------------------------------
// Client types
// ---------------------------------------------------------------------------------------

/**
 * A class with the browser WebSocket API (the browser's own, or `ws` in Node).
 * @typedef {new (url: string) => WebSocket} WebSocketClass
 */

/**
 * @typedef {object} MusterOptions
 * @property {string | string[]} [url] The broker: `http://127.0.0.1:4445` (or `ws://...`).
 *   In a browser, the page's origin by default. For a cluster, every node's URL: they are
 *   tried in turn, at the start and after each lost connection, resuming by `seq`.
 * @property {string} [workspace] Work in this workspace of the broker (names are
 *   case-insensitive): sent in every hello, and `history()` reads `/w/{workspace}/events`.
 *   Without it, `default` (or the workspace a `/w/{workspace}` URL names). `url` is then the
 *   broker's own address, not a `/w/...` one.
 * @property {string} [agent] Act as this agent (in the session's workspace): it is present
 *   while the session is open, and its claims are held.
 * @property {boolean} [human] The session is a person (the dashboard); needs `agent`.
 * @property {string} [token] The token the broker issued (where tokens are on): sent in
 *   `hello`, and as `Authorization: Bearer` by `history()`.
 * @property {string[]} [topics] Topics received from every (re)connection: `*`, `tasks`,
 *   `task:<id>`, `chat`, `chat:<channel>`, `presence`, `inbox:<agent>`, `files`.
 * @property {number} [since] Resume after this `seq` on the first connection (a `seq` of
 *   the session's workspace: each one counts its own).
 * @property {string} [epoch] The workspace's epoch `since` belongs to.
 * @property {boolean} [reconnect] Reconnect when the connection is lost (default true).
 * @property {WebSocketClass} [WebSocket] WebSocket implementation (default
 *   `globalThis.WebSocket`; in Node 20, pass the `ws` package's class).
 */

/** @typedef {'connecting' | 'open' | 'reconnecting' | 'closed'} Status */

/**
 * Emitted after each hello.
 * @typedef {object} WelcomeInfo
 * @property {string} workspace The session's workspace, as the broker names it.
 * @property {string} epoch The workspace's epoch (its history's identity).
 * @property {number} head Events after this `seq` arrive live.
 * @property {boolean} recovered The broker replayed every event after the `since` sent.
 * @property {boolean} resumed Events after the previous `lastSeq` were replayed: nothing
 *   was missed.
 */

/**
 * Emitted when a (re)connection could not replay what was missed: re-read the state.
 * @typedef {object} ResyncInfo
 * @property {string} epoch The broker's epoch now.
 * @property {number} head Live events continue after this `seq`.
 */

/**
 * Emitted when the broker ended the session because its token was revoked (close code
 * 4003): the client is closed for good; a new token is needed.
 * @typedef {object} RevokedInfo
 * @property {string} reason What the broker said.
 */

/**
 * Emitted when the broker ended the session because its workspace was removed (archived or
 * purged): the client is closed for good; no session can work in it any more.
 * @typedef {object} RemovedInfo
 * @property {string | null} workspace The session's workspace.
 * @property {string} reason What the broker said.
 */

/**
 * @typedef {object} EventMap
 * @property {MusterEvent} event
 * @property {Status} status
 * @property {WelcomeInfo} welcome
 * @property {ResyncInfo} resync
 * @property {RevokedInfo} revoked
 * @property {RemovedInfo} removed
 */

/** Close code: the session's token was revoked. Final: no reconnection. */
const CLOSE_REVOKED = 4003;
/** Close code: the session's workspace was removed. Final: no reconnection. */
const CLOSE_WORKSPACE_REMOVED = 4004;

/** First and longest wait between reconnection attempts, in ms. */
const BACKOFF_MIN = 100;
const BACKOFF_MAX = 5000;
/** How long opening a socket and getting the welcome may take, in ms. */
const CONNECT_TIMEOUT = 10000;
/** The hello always uses this id: no call can be pending before the welcome. */
const HELLO_ID = 0;
/** `WebSocket.OPEN`, which a custom implementation may not define as a static. */
const OPEN = 1;

/** An error from the broker (its `code`), or from the client: `unreachable`,
 * `disconnected`, `closed`, `protocol`. */
export class MusterError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {string} [field] The request field at fault, for `invalid`.
   * @param {FileConflict[]} [conflicts] For a refused reservation: each overlap.
   */
  constructor(code, message, field, conflicts = []) {
    super(message);
    this.name = 'MusterError';
    /** @type {string} */
    this.code = code;
    /** @type {string | undefined} */
    this.field = field;
    /** @type {FileConflict[]} */
    this.conflicts = conflicts;
  }
}

// ---------------------------------------------------------------------------------------
// Topics (the same rules as the broker's; the cases are in protocol/examples/topics.json)
// ---------------------------------------------------------------------------------------

/** An agent name: 1-64 of letters, digits, `.`, `_`, `-`, starting and ending with a
 * letter, digit or `_`. */
const AGENT_NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?$/;
/** A channel name: 1-132 of letters, digits, `.`, `_`, `-`, `:`, `,`. */
const CHANNEL_NAME = /^[A-Za-z0-9._:,-]{1,132}$/;
const MAX_TASK_NUMBER = 18446744073709551615n;

/**
 * Reads a topic as the broker does: `*`, `tasks`, `task:<id>`, `chat`, `chat:<channel>`,
 * `presence`, `inbox:<agent>`, `files`, normalized (`task:12` is `task:T-12`).
 * @param {string} topic
 * @returns {string} The topic as the broker writes it.
 * @throws {MusterError} `invalid` (field `topics`) when it is not a topic.
 */
export function parseTopic(topic) {
  const bad = () => new MusterError('invalid', `topics: ${JSON.stringify(topic)} is not a topic`, 'topics');
  if (['*', 'tasks', 'chat', 'presence', 'files'].includes(topic)) return topic;
  const colon = topic.indexOf(':');
  if (colon < 0) throw bad();
  const [kind, rest] = [topic.slice(0, colon), topic.slice(colon + 1)];
  if (kind === 'task') {
    const number = /^(?:[Tt]-)?([1-9][0-9]*)$/.exec(rest)?.[1];
    if (number === undefined || BigInt(number) > MAX_TASK_NUMBER) throw bad();
    return `task:T-${number}`;
  }
  if (kind === 'chat' && CHANNEL_NAME.test(rest)) return topic;
  // Agent names are case-insensitive: one spelling, lowercase.
  if (kind === 'inbox' && AGENT_NAME.test(rest)) return `inbox:${rest.toLowerCase()}`;
  throw bad();
}

/**
 * The inbox topics of a message's recipients: `to` and the mentioned agents, not the
 * sender.
 * @param {ChatMessage} message
 * @returns {string[]}
 */
function inboxTopics(message) {
  /** @type {string[]} */
  const recipients = [];
  for (const name of [...(message.to ? [message.to] : []), ...message.mentions]) {
    if (name !== message.from && !recipients.includes(name)) recipients.push(name);
  }
  return recipients.map((name) => `inbox:${name}`);
}

/**
 * The topics an event is published on (`*` matches every event and is not listed).
 * @param {MusterEvent} event
 * @returns {string[]}
 */
export function eventTopics(event) {
  const data = /** @type {any} */ (event.data);
  // A comment is on its task's topics, and in its recipients' inboxes as a chat message is.
  if (event.type === 'task.commented') {
    const { message } = data;
    return ['tasks', ...(message.task ? [`task:${message.task}`] : []), ...inboxTopics(message)];
  }
  if (event.type.startsWith('task.')) return ['tasks', `task:${data.task.id}`];
  switch (event.type) {
    case 'chat.message': {
      const { message } = data;
      return ['chat', `chat:${message.channel}`, ...inboxTopics(message)];
    }
    case 'presence.changed':
      return ['presence'];
    case 'inbox.acked':
      return [`inbox:${data.agent}`];
    case 'files.reserved':
    case 'files.released':
      return ['files'];
    default:
      return [];
  }
}

/**
 * Whether a subscriber to `topic` receives `event`.
 * @param {string} topic
 * @param {MusterEvent} event
 * @returns {boolean}
 */
export function receives(topic, event) {
  const normalized = parseTopic(topic);
  return normalized === '*' || eventTopics(event).includes(normalized);
}

/**
 * The WebSocket URL of a broker: `http` → `ws`, `https` → `wss`, path `/ws`.
 * @param {string} url
 * @returns {string}
 */
function wsUrl(url) {
  let base = url.replace(/\/+$/, '');
  base = base.replace(/^http(s?):\/\//, 'ws$1://');
  return base.endsWith('/ws') ? base : `${base}/ws`;
}

/**
 * The HTTP URL of a broker (for `history`): `ws` → `http`, without `/ws`.
 * @param {string} url
 * @returns {string}
 */
function httpUrl(url) {
  let base = url.replace(/\/+$/, '');
  base = base.replace(/^ws(s?):\/\//, 'http$1://');
  return base.endsWith('/ws') ? base.slice(0, -3) : base;
}

/** One WebSocket session to the broker, kept alive across connection losses. */
export class MusterClient {
  /** @type {Status} */
  #status = 'connecting';
  /** @type {number | null} */
  #lastSeq = null;
  /** @type {string | null} */
  #epoch = null;
  /** The newest event seen in any answer (a reply's `head`, an event's `seq`): sent with
   * every request as `after`, so that a read through another node of a cluster is never
   * older than what this client has seen. @type {number | null} */
  #seen = null;
  /** Topics sent in every hello; follows subscribe/unsubscribe. @type {string[]} */
  #topics;
  /** @type {{[K in keyof EventMap]: Set<(value: EventMap[K]) => void>}} */
  #listeners = {
    event: new Set(),
    status: new Set(),
    welcome: new Set(),
    resync: new Set(),
    revoked: new Set(),
    removed: new Set(),
  };
  /** Calls sent on the current connection, waiting for their reply, by id.
   * @type {Map<number, {resolve: (data: any) => void, reject: (error: MusterError) => void}>} */
  #pending = new Map();
  #nextId = HELLO_ID + 1;
  /** The current connection (null between attempts). @type {WebSocket | null} */
  #socket = null;
  /** Whether the current connection got its welcome. */
  #welcomed = false;
  #backoff = BACKOFF_MIN;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #timer;
  #everConnected = false;
  /** @type {Promise<void>} */
  #ready;
  /** @type {() => void} */
  #resolveReady = () => {};
  /** @type {(error: MusterError) => void} */
  #rejectReady = () => {};

  /** @type {string[]} */
  #urls;
  /** Index in `#urls` of the node tried last. */
  #at = 0;
  /** Nodes tried for the first connection. */
  #tried = 0;
  /** The `workspace` option, sent in every hello. @type {string | undefined} */
  #workspace;
  /** The session's workspace, from the last welcome. @type {string | null} */
  #welcomedIn = null;
  #agent;
  #human;
  #token;
  #reconnect;
  #WebSocket;

  /**
   * Starts connecting at once; `await client.ready()` for the first welcome.
   * @param {MusterOptions} [options]
   */
  constructor(options = {}) {
    const Impl = options.WebSocket ?? globalThis.WebSocket;
    if (!Impl) {
      throw new Error(
        'No WebSocket implementation: Node 20 has no global WebSocket. ' +
          "Install the `ws` package and pass its class: import WebSocket from 'ws'; " +
          'new MusterClient({ url, WebSocket })',
      );
    }
    const url = options.url ?? globalThis.location?.origin;
    const urls = (Array.isArray(url) ? url : [url]).filter(Boolean);
    if (urls.length === 0) throw new Error('MusterClient: `url` is required (e.g. http://127.0.0.1:4445)');
    this.#urls = urls;
    this.#workspace = options.workspace || undefined;
    this.#agent = options.agent;
    this.#human = options.human === true;
    this.#token = options.token || undefined;
    this.#reconnect = options.reconnect ?? true;
    this.#WebSocket = Impl;
    this.#topics = [...(options.topics ?? [])];
    this.#lastSeq = options.since ?? null;
    this.#epoch = options.epoch ?? null;
    this.#ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // Nobody has to call ready(): an unobserved failure must not be reported as unhandled.
    this.#ready.catch(() => {});
    this.#connect();
  }

  /** `connecting`, `open`, `reconnecting` or `closed`. @returns {Status} */
  get status() {
    return this.#status;
  }

  /** The `seq` of the last event received (or the broker's head at the last hello that
   * could not resume); `null` before the first welcome unless `since` was given.
   * @returns {number | null} */
  get lastSeq() {
    return this.#lastSeq;
  }

  /** The workspace's epoch (its history's identity), once connected.
   * @returns {string | null} */
  get epoch() {
    return this.#epoch;
  }

  /** The session's workspace as the broker names it (lowercase), from the welcome; `null`
   * before the first. @returns {string | null} */
  get workspace() {
    return this.#welcomedIn;
  }

  /** The newest event this client has seen in any reply or event (sent as `after` with
   * every request); `null` before the first welcome. @returns {number | null} */
  get seen() {
    return this.#seen;
  }

  /**
   * Resolves at the first welcome. Rejects with `unreachable` when the first connection
   * fails (the client is then closed), with the broker's error when it refuses the hello,
   * or with `closed` when `close()` came first.
   * @returns {Promise<void>}
   */
  ready() {
    return this.#ready;
  }

  /**
   * Listens to `event` (each event once, in `seq` order), `status`, `welcome`, `resync`,
   * `revoked` or `removed`.
   * @template {keyof EventMap} K
   * @param {K} name
   * @param {(value: EventMap[K]) => void} fn
   * @returns {this}
   */
  on(name, fn) {
    this.#listeners[name].add(fn);
    return this;
  }

  /**
   * Stops listening.
   * @template {keyof EventMap} K
   * @param {K} name
   * @param {(value: EventMap[K]) => void} fn
   * @returns {this}
   */
  off(name, fn) {
    this.#listeners[name].delete(fn);
    return this;
  }

  /**
   * @template {keyof EventMap} K
   * @param {K} name
   * @param {EventMap[K]} value
   */
  #emit(name, value) {
    for (const fn of [...this.#listeners[name]]) {
      // One faulty listener must not stop the others, nor the frames after this one.
      try {
        fn(value);
      } catch (error) {
        console.error(`muster: a '${name}' listener threw`, error);
      }
    }
  }

  /** The node connected to (or tried) now. */
  get #url() {
    return this.#urls[this.#at];
  }

  /** Where the workspace's HTTP routes are, below a node's URL: `/w/{workspace}`, or
   * nothing for the URL's own. */
  get #prefix() {
    return this.#workspace === undefined ? '' : `/w/${encodeURIComponent(this.#workspace)}`;
  }

  /** @param {Status} status */
  #setStatus(status) {
    if (this.#status === status) return;
    this.#status = status;
    this.#emit('status', status);
  }

  /** Opens a connection and says hello, resuming after `lastSeq`. */
  #connect() {
    this.#welcomed = false;
    let socket;
    try {
      socket = new this.#WebSocket(wsUrl(this.#url));
      this.#tried += 1;
    } catch (error) {
      // A malformed URL throws at once; the broker can never be reached at it.
      this.#socket = null;
      this.#lost(null, String(error));
      return;
    }
    this.#socket = socket;
    // A socket can hang in CONNECTING (a silent firewall) or wait forever for a welcome.
    this.#timer = setTimeout(() => this.#lost(socket, 'timed out'), CONNECT_TIMEOUT);
    socket.onopen = () => {
      if (socket !== this.#socket) return;
      // JSON.stringify leaves out `undefined` fields: the broker refuses fields it does not
      // know (an older one refuses `human`), and `null` would mean something else.
      const hello = {
        id: HELLO_ID,
        op: 'hello',
        workspace: this.#workspace,
        agent: this.#agent,
        human: this.#human ? true : undefined,
        token: this.#token,
        topics: this.#topics.length > 0 ? this.#topics : undefined,
        since: this.#lastSeq ?? undefined,
        epoch: this.#lastSeq !== null ? (this.#epoch ?? undefined) : undefined,
      };
      socket.send(JSON.stringify(hello));
    };
    socket.onmessage = (message) => {
      if (socket !== this.#socket) return;
      let frame;
      try {
        frame = JSON.parse(String(message.data));
      } catch {
        console.error('muster: a frame that is not JSON', message.data);
        return;
      }
      if (this.#welcomed) this._handleFrame(frame);
      else this.#welcome(socket, frame);
    };
    // Browsers follow an error with a close event, but some implementations (Node 20's
    // experimental WebSocket) only report the error of a failed connection.
    socket.onerror = (event) => this.#lost(socket, /** @type {any} */ (event).message || 'connection error');
    socket.onclose = (event) => {
      const reason = event.reason ? `closed ${event.code}: ${event.reason}` : `closed ${event.code}`;
      if (event.code === CLOSE_REVOKED) this.#revoked(socket, reason);
      else if (event.code === CLOSE_WORKSPACE_REMOVED) this.#removed(socket, reason);
      else this.#lost(socket, reason);
    };
  }

  /**
   * The first frame of a connection: the answer to hello.
   * @param {WebSocket} socket
   * @param {any} frame
   */
  #welcome(socket, frame) {
    if (frame?.re !== HELLO_ID) return;
    if (!frame.ok) {
      const error = frame.error ?? { code: 'protocol', message: 'hello refused without an error' };
      const refused = new MusterError(error.code, `the broker refused hello: ${error.message}`, error.field);
      if (!this.#everConnected) {
        // A refused first hello is a mistake in the options; retrying cannot fix it.
        this.#rejectReady(refused);
        this.close();
      } else {
        this.#lost(socket, refused.message);
      }
      return;
    }
    clearTimeout(this.#timer);
    const { workspace, epoch, head, recovered } = frame.data;
    const since = this.#lastSeq;
    const epochChanged = this.#epoch !== null && this.#epoch !== epoch;
    const resumed = since !== null && recovered && !epochChanged;
    this.#welcomed = true;
    this.#everConnected = true;
    this.#backoff = BACKOFF_MIN;
    // What was seen of another history says nothing about this one.
    if (epochChanged) this.#seen = null;
    this.#see(head);
    this.#epoch = epoch;
    this.#welcomedIn = workspace ?? null;
    // Without a replay, live events continue after head: what came before is not coming.
    if (!resumed) this.#lastSeq = head;
    this.#setStatus('open');
    this.#emit('welcome', { workspace, epoch, head, recovered, resumed });
    if (since !== null && !resumed) this.#emit('resync', { epoch, head });
    this.#resolveReady();
  }

  /**
   * INTERNAL (exposed for tests): handles one parsed server frame after the welcome — a
   * reply (has `re`) settles its pending call, an event (has `seq`) is emitted once.
   * @param {any} frame
   */
  _handleFrame(frame) {
    if (frame === null || typeof frame !== 'object') return;
    if ('re' in frame) {
      if (typeof frame.head === 'number') this.#see(frame.head);
      // `re: null` answers a frame too broken to have an id: nothing waits for it.
      const waiting = this.#pending.get(frame.re);
      if (!waiting) return;
      this.#pending.delete(frame.re);
      if (frame.ok) waiting.resolve(frame.data);
      else {
        const error = frame.error ?? { code: 'protocol', message: 'a reply without data or error' };
        waiting.reject(new MusterError(error.code, error.message, error.field, error.conflicts));
      }
    } else if (typeof frame.seq === 'number') {
      // A replay after a reconnection may overlap what was already seen.
      if (this.#lastSeq !== null && frame.seq <= this.#lastSeq) return;
      this.#lastSeq = frame.seq;
      this.#see(frame.seq);
      this.#emit('event', frame);
    }
  }

  /** @param {number} seq */
  #see(seq) {
    if (this.#seen === null || seq > this.#seen) this.#seen = seq;
  }

  /**
   * The connection `socket` failed or ended: fail its calls, then retry or give up.
   * @param {WebSocket | null} socket
   * @param {string} reason
   */
  #lost(socket, reason) {
    if (socket !== this.#socket || this.#status === 'closed') return;
    clearTimeout(this.#timer);
    this.#socket = null;
    if (socket) this.#detach(socket);
    this.#failPending('disconnected', `connection to the broker lost before it answered (${reason}); the operation may or may not have happened`);
    // The next attempt goes to the next node (a cluster's; with one URL, the same broker).
    const failedUrl = this.#url;
    this.#at = (this.#at + 1) % this.#urls.length;
    if (!this.#everConnected) {
      if (this.#tried < this.#urls.length) {
        this.#connect();
        return;
      }
      const where = this.#urls.length > 1 ? `any of ${this.#urls.join(', ')}` : failedUrl;
      this.#rejectReady(new MusterError('unreachable', `broker not reachable at ${where}: ${reason}`));
      this.#setStatus('closed');
      return;
    }
    if (!this.#reconnect) {
      this.#setStatus('closed');
      return;
    }
    this.#setStatus('reconnecting');
    // Jitter spreads the reconnections of many clients after a broker restart.
    const delay = Math.min(this.#backoff * (0.75 + Math.random() / 2), BACKOFF_MAX);
    this.#backoff = Math.min(this.#backoff * 2, BACKOFF_MAX);
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  /**
   * The broker revoked the session's token: fail its calls, close for good, say so.
   * @param {WebSocket} socket
   * @param {string} reason
   */
  #revoked(socket, reason) {
    if (socket !== this.#socket || this.#status === 'closed') return;
    clearTimeout(this.#timer);
    this.#socket = null;
    this.#detach(socket);
    this.#failPending('unauthorized', `the broker revoked this session's token (${reason})`);
    this.#setStatus('closed');
    this.#emit('revoked', { reason });
  }

  /**
   * The broker removed the session's workspace: fail its calls, close for good, say so.
   * @param {WebSocket} socket
   * @param {string} reason
   */
  #removed(socket, reason) {
    if (socket !== this.#socket || this.#status === 'closed') return;
    clearTimeout(this.#timer);
    this.#socket = null;
    this.#detach(socket);
    const workspace = this.#welcomedIn ?? this.#workspace ?? null;
    this.#failPending('disconnected', `the broker removed workspace ${workspace} (${reason}) before it answered; the operation may or may not have happened`);
    this.#setStatus('closed');
    this.#emit('removed', { workspace, reason });
  }

  /**
   * Silences and closes a socket we are done with.
   * @param {WebSocket} socket
   */
  #detach(socket) {
    socket.onopen = socket.onmessage = socket.onclose = null;
    // Keep an error handler: `ws` throws on an 'error' event nobody listens to.
    socket.onerror = () => {};
    try {
      socket.close();
    } catch {
      // Already closed.
    }
  }

  /**
   * @param {string} code
   * @param {string} message
   */
  #failPending(code, message) {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const { reject } of pending) reject(new MusterError(code, message));
  }

  /**
   * Ends the session: status `closed`, no reconnection, pending calls reject (`closed`).
   */
  close() {
    if (this.#status === 'closed') return;
    clearTimeout(this.#timer);
    const socket = this.#socket;
    this.#socket = null;
    if (socket) this.#detach(socket);
    this.#failPending('closed', 'the client was closed before the broker answered');
    this.#rejectReady(new MusterError('closed', 'the client was closed'));
    this.#setStatus('closed');
  }

  /**
   * Sends any operation; resolves to the reply's `data`. Rejects with the broker's error,
   * or `disconnected` when the connection is down or lost before the answer (requests are
   * never queued: the caller decides whether to retry), or `closed`.
   * @param {string} op `task.claim`, `chat.post`, ... (see the protocol's `Op`)
   * @param {Record<string, any>} [args] The operation's fields; `undefined` ones are left out.
   * @returns {Promise<any>}
   */
  call(op, args = {}) {
    if (this.#status === 'closed') {
      return Promise.reject(new MusterError('closed', 'the client is closed'));
    }
    const socket = this.#socket;
    if (!socket || !this.#welcomed || socket.readyState !== OPEN) {
      return Promise.reject(new MusterError('disconnected', 'not connected to the broker; retry when the status is open'));
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      try {
        // `id` and `op` first for readable frames, but never overridden by an argument.
        // JSON.stringify leaves out `undefined` arguments (the broker refuses unknown
        // fields, and `null` means "clear" for some).
        const frame = { id, op, ...args };
        frame.id = id;
        frame.op = op;
        if (this.#seen !== null) frame.after = this.#seen;
        socket.send(JSON.stringify(frame));
      } catch (error) {
        this.#pending.delete(id);
        reject(new MusterError('disconnected', `could not send: ${error}`));
      }
    });
  }

  // -------------------------------------------------------------------------------------
  // Typed calls: the arguments are the HTTP bodies; each returns the useful part of data.
  // -------------------------------------------------------------------------------------

  /**
   * Creates a task (`task.create`).
   * @param {{title: string, description?: string, priority?: Priority, assignee?: string,
   *   blockedBy?: string[], tags?: string[], agent?: string}} task
   * @returns {Promise<Task>}
   */
  async createTask(task) {
    return (await this.call('task.create', task)).task;
  }

  /**
   * Changes fields of a task (`task.update`); `assignee: null` unassigns. A status change
   * follows the rules of the dedicated operations (`doing` claims, `done` completes).
   * @param {string} id
   * @param {{title?: string, description?: string, priority?: Priority,
   *   assignee?: string | null, status?: TaskStatus, blockedBy?: string[], tags?: string[],
   *   agent?: string, token?: number}} changes
   * @returns {Promise<Task>}
   */
  async updateTask(id, changes) {
    return (await this.call('task.update', { task: id, ...changes })).task;
  }

  /**
   * Claims a task (`task.claim`), as the session's agent unless `agent` names one. Every
   * write takes `idempotencyKey`: a retry with the same key gets the first answer back.
   * @param {string} id
   * @param {{agent?: string, token?: number, idempotencyKey?: string}} [options]
   * @returns {Promise<Task>} The task; `claim.token` is the fencing token.
   */
  async claim(id, options = {}) {
    return (await this.call('task.claim', { task: id, ...options })).task;
  }

  /**
   * Releases a claim (`task.release`); `force` takes it from another owner.
   * @param {string} id
   * @param {{agent?: string, force?: boolean, token?: number}} [options]
   * @returns {Promise<Task>}
   */
  async release(id, options = {}) {
    return (await this.call('task.release', { task: id, ...options })).task;
  }

  /**
   * Completes a task (`task.complete`).
   * @param {string} id
   * @param {{agent?: string, token?: number}} [options]
   * @returns {Promise<Task>}
   */
  async complete(id, options = {}) {
    return (await this.call('task.complete', { task: id, ...options })).task;
  }

  /**
   * The next open task for an agent (`task.next`); with `claim: true`, claimed atomically.
   * @param {{agent?: string, claim?: boolean}} [options]
   * @returns {Promise<Task | null>} `null` when there is nothing to do.
   */
  async next(options = {}) {
    return (await this.call('task.next', options)).task;
  }

  /**
   * One task (`task.get`).
   * @param {string} id
   * @returns {Promise<Task>}
   */
  async task(id) {
    return (await this.call('task.get', { task: id })).task;
  }

  /**
   * One page of tasks (`task.list`), by id; pass its `next` as `cursor` for the next.
   * @param {TaskFilter} [filter]
   * @returns {Promise<TaskPage>}
   */
  async taskPage(filter = {}) {
    const status = typeof filter.status === 'string' ? [filter.status] : filter.status;
    return this.call('task.list', { ...filter, status });
  }

  /**
   * Every task that passes the filter, page after page (`filter.limit` a page). Without
   * `status` or `all`: the board, every unfinished task and the last finished ones.
   * @param {TaskFilter} [filter]
   * @returns {Promise<Task[]>}
   */
  async tasks(filter = {}) {
    const tasks = [];
    let cursor = filter.cursor;
    do {
      const page = await this.taskPage({ ...filter, cursor });
      tasks.push(...page.tasks);
      cursor = page.next ?? undefined;
    } while (cursor);
    return tasks;
  }

  /**
   * Every item of a paged list op, following `next`.
   * @param {string} op
   * @param {string} key The list's field in the reply.
   * @param {{limit?: number, task?: string}} options
   * @returns {Promise<any[]>}
   */
  async #all(op, key, options) {
    const items = [];
    let cursor;
    do {
      const page = await this.call(op, { ...options, cursor });
      items.push(...page[key]);
      cursor = page.next ?? undefined;
    } while (cursor);
    return items;
  }

  /**
   * Posts a chat message (`chat.post`), from the session's agent unless `from` is set.
   * `@name` mentions and `to` land in inboxes. With `task` (not with `channel` or `to`)
   * it is a comment on that task, as `comment()` makes.
   * @param {{from?: string, content: string, channel?: string, to?: string,
   *   replyTo?: string, task?: string}} message
   * @returns {Promise<ChatMessage>}
   */
  async post(message) {
    return (await this.call('chat.post', message)).message;
  }

  /**
   * Comments on a task (`task.comment`), from the session's agent unless `from` is set:
   * a message in the task's thread (`#T-12`), published as `task.commented` on `tasks`,
   * `task:<id>` and the inboxes of its `@name` mentions.
   * @param {string} id
   * @param {string} content
   * @param {{from?: string, replyTo?: string, idempotencyKey?: string}} [options]
   * @returns {Promise<ChatMessage>} The comment (its `task` is `id`).
   */
  async comment(id, content, options = {}) {
    return (await this.call('task.comment', { task: id, content, ...options })).message;
  }

  /**
   * Every comment on a task (`task.comments`), oldest first: every page.
   * @param {string} id
   * @param {{limit?: number}} [options] Comments per page.
   * @returns {Promise<ChatMessage[]>}
   */
  async comments(id, options = {}) {
    return this.#all('task.comments', 'messages', { task: id, ...options });
  }

  /**
   * Reads a channel (`chat.read`; `general` by default), oldest first: after `since`, or
   * the newest before `before` (or at all); `next` goes on the same way.
   * @param {{channel?: string, since?: number, before?: number, limit?: number,
   *   cursor?: string}} [options]
   * @returns {Promise<MessageList>}
   */
  async messages(options = {}) {
    return this.call('chat.read', options);
  }

  /**
   * Channels with messages (`chat.channels`), by name: every page.
   * @param {{limit?: number}} [options] Channels per page.
   * @returns {Promise<ChannelInfo[]>}
   */
  async channels(options = {}) {
    return this.#all('chat.channels', 'channels', options);
  }

  /**
   * An agent's inbox (`inbox.read`; the session's agent by default).
   * @param {{agent?: string, all?: boolean, limit?: number, cursor?: string}} [options]
   * @returns {Promise<Inbox>}
   */
  async inbox(options = {}) {
    return this.call('inbox.read', options);
  }

  /**
   * Marks an inbox read up to `seq` (`inbox.ack`; default: everything).
   * @param {{agent?: string, seq?: number}} [options]
   * @returns {Promise<Cursor>}
   */
  async ack(options = {}) {
    return this.call('inbox.ack', options);
  }

  /**
   * Every agent seen (`presence.list`), by name: every page.
   * @param {{limit?: number}} [options] Agents per page.
   * @returns {Promise<Presence[]>}
   */
  async presence(options = {}) {
    return this.#all('presence.list', 'agents', options);
  }

  /**
   * A heartbeat with a status and note (`presence.set`); `note: null` clears the note,
   * `status: 'active'` clears the status.
   * @param {{agent?: string, status?: string, note?: string | null}} [options]
   * @returns {Promise<Presence>}
   */
  async setStatus(options = {}) {
    return (await this.call('presence.set', options)).agent;
  }

  /**
   * Reserves paths of a repository for the session's agent (`files.reserve`), all or none:
   * an overlap with another agent's reservation fails with `conflict`, and the error's
   * `conflicts` name each holder, its pattern and a path both match.
   * @param {{repo: string, patterns: string[], shared?: boolean, task?: string,
   *   reason?: string, ttlSeconds?: number, agent?: string}} request
   * @returns {Promise<Reservation[]>}
   */
  async reserveFiles(request) {
    return (await this.call('files.reserve', request)).reservations;
  }

  /**
   * Releases the session agent's reservations in a repository (`files.release`): those
   * with `patterns`, those of `task`, or all.
   * @param {{repo: string, patterns?: string[], task?: string, agent?: string}} request
   * @returns {Promise<Reservation[]>} What was released.
   */
  async releaseFiles(request) {
    return (await this.call('files.release', request)).reservations;
  }

  /**
   * The reservations held now (`files.list`), by id.
   * @param {{repo?: string, agent?: string, task?: string}} [filter]
   * @returns {Promise<Reservation[]>}
   */
  async files(filter = {}) {
    return (await this.call('files.list', filter)).reservations;
  }

  /**
   * Who holds each path (`files.who`).
   * @param {string} repo
   * @param {string[]} paths Repository-relative paths.
   * @returns {Promise<{path: string, reservations: Reservation[]}[]>}
   */
  async whoHasFiles(repo, paths) {
    return (await this.call('files.who', { repo, paths })).paths;
  }

  /**
   * Every workspace of the broker (`workspace.list`), by name, archived ones included.
   * @returns {Promise<WorkspaceInfo[]>}
   */
  async workspaces() {
    return (await this.call('workspace.list')).workspaces;
  }

  /**
   * Adds a workspace (`workspace.add`; with tokens on, a person's token only): sessions
   * work in it with the `workspace` option. A name taken (an archived workspace's too) is
   * refused with `conflict`.
   * @param {string} name 1-64 of letters, digits, `_`, `-`, starting with a letter or
   *   digit; case-insensitive (the broker lowercases it).
   * @returns {Promise<WorkspaceInfo>}
   */
  async addWorkspace(name) {
    return this.call('workspace.add', { name });
  }

  /**
   * Removes a workspace (`workspace.remove`; with tokens on, a person's token only):
   * archived (read-only, its data kept), or deleted with `purge`. Its sessions end (each
   * client of it emits `removed`). `default` cannot be removed.
   * @param {string} name
   * @param {{purge?: boolean}} [options]
   * @returns {Promise<WorkspaceInfo>} It, as it is now (`archived`).
   */
  async removeWorkspace(name, { purge } = {}) {
    return this.call('workspace.remove', { name, purge });
  }

  /**
   * Receives more topics, now and after every reconnection.
   * @param {string[]} topics
   * @returns {Promise<string[]>} Every topic subscribed now.
   */
  async subscribe(topics) {
    const now = (await this.call('subscribe', { topics })).topics;
    // Only what the broker accepted is re-sent on reconnection: a refused topic would make
    // every later hello fail.
    this.#topics = [...now];
    return now;
  }

  /**
   * Stops receiving topics.
   * @param {string[]} topics
   * @returns {Promise<string[]>} The topics still subscribed.
   */
  async unsubscribe(topics) {
    const now = (await this.call('unsubscribe', { topics })).topics;
    this.#topics = [...now];
    return now;
  }

  /**
   * Past events from the workspace's log over HTTP (`GET /events`, under
   * `/w/{workspace}` when the `workspace` option names one), oldest first: e.g. a
   * task's history with `history(['task:T-12'])`. One page: at most `limit` events
   * (broker default 100, at most 1000); page on with `since` = the last `seq`. Works
   * whether or not the WebSocket is connected.
   * @param {string[]} topics
   * @param {{since?: number, limit?: number}} [options]
   * @returns {Promise<MusterEvent[]>}
   */
  async history(topics, { since = 0, limit } = {}) {
    const query = new URLSearchParams({ since: String(since), topics: topics.join(',') });
    if (limit !== undefined) query.set('limit', String(limit));
    const url = `${httpUrl(this.#url)}${this.#prefix}/events?${query}`;
    let response;
    try {
      response = await fetch(url, this.#token ? { headers: { Authorization: `Bearer ${this.#token}` } } : undefined);
    } catch (error) {
      throw new MusterError('unreachable', `broker not reachable at ${url}: ${error}`);
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const error = body?.error ?? { code: 'protocol', message: `HTTP ${response.status}` };
      throw new MusterError(error.code, error.message, error.field);
    }
    return body.events;
  }
}
