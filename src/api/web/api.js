// Talking to the agent: JSON calls under /api/v1 with the bearer token when the agent
// wants one, and the live feed of every cluster. Every call that changes something says
// Content-Type: application/json, body or not: the agent refuses changes without it
// (other sites' pages cannot send it).
//
// The token: on a 401 the page asks for it once (concurrent calls share one prompt),
// keeps it in sessionStorage — this tab, until it closes — and retries the call.
//
// The live feed: server-sent events from /api/v1/events?cluster=NAME (`event:
// summaries`, every cluster's summary, and `event: cluster`, the detail of the cluster
// in view, each at connect and on every change): the page over thousands of clusters
// gets the little its list shows, and one cluster in full. The stream is opened again
// when the cluster in view changes. EventSource cannot send an Authorization header,
// so when the stream is refused (an agent with api.token_for_reads answers it 401) or
// missing, the page polls instead, once a second, with the header: GET
// /api/v1/clusters, plus the one cluster in view.

const TOKEN_KEY = 'pointsman.api-token';

/** An error as the API says it: the HTTP status and its sentence. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let askForToken = async () => null;
let pendingPrompt = null;
let declined = false;

/** Sets the function that asks a person for the token: (reason) => Promise<string|null>. */
export function onTokenNeeded(ask) {
  askForToken = ask;
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function forgetToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage disabled: nothing kept */ }
}

function promptForToken(reason, { quiet }) {
  if (quiet && declined) return Promise.resolve(null);
  if (!pendingPrompt) {
    pendingPrompt = askForToken(reason).then((value) => {
      pendingPrompt = null;
      const given = value && value.trim();
      if (!given) {
        declined = true;
        return null;
      }
      declined = false;
      try {
        sessionStorage.setItem(TOKEN_KEY, given);
      } catch { /* storage disabled: the token lives for this call only */ }
      return given;
    });
  }
  return pendingPrompt;
}

async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === 'string') return body.error;
  } catch { /* not JSON */ }
  return text.trim() || `${response.status} ${response.statusText}`;
}

/**
 * Calls the API and returns the parsed JSON, or throws an ApiError with the agent's
 * own sentence. `quiet`: a background read that must not ask for the token again after
 * a person declined to give it.
 */
export async function call(method, path, body, { quiet = false } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: 'application/json' };
    const current = token();
    if (current) headers.Authorization = `Bearer ${current}`;
    if (method !== 'GET') headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method, headers, cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new ApiError(0, `the agent does not answer (${error.message}): is pointsman still running?`);
    }
    if (response.status === 401 && attempt < 3) {
      const reason = await errorOf(response);
      if (current) forgetToken(); // it was refused: ask for the right one
      const given = await promptForToken(reason, { quiet });
      if (!given) throw new ApiError(401, reason);
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await errorOf(response));
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }
}

export const get = (path, options) => call('GET', path, undefined, options);
export const post = (path, body) => call('POST', path, body === undefined ? {} : body);
export const put = (path, body) => call('PUT', path, body);
export const del = (path) => call('DELETE', path);

/** `host:port` as a path segment. */
export const enc = (value) => encodeURIComponent(value);

/** Silence longer than this (the agent sends a heartbeat every second) means the page
 * is no longer live: the agent is frozen or the network is gone. */
export const STALE_AFTER_MS = 3500;

/**
 * Keeps `onSummaries` fed with every cluster's summary (and, while polling, the detail
 * of `watched()` with it), `onDetail` with the detail of `watched()` as it changes
 * (live only), `onChanges` with the fingerprints of the routes and
 * recent recoveries (live only), `onHeard` with the agent's clock each time it is
 * heard from, and `onStatus` with how: 'live', 'polling', 'reconnecting', 'stale' (no
 * word for `STALE_AFTER_MS`, with how long) or 'down' (with the error).
 */
export class Feed {
  constructor({ onSummaries, onDetail, onStatus, onHeard, onChanges, watched }) {
    this.onDetail = onDetail;
    this.onChanges = onChanges;
    this.onSummaries = onSummaries;
    this.onStatus = onStatus;
    this.onHeard = onHeard;
    this.watched = watched;
    this.source = null;
    this.timer = null;
    this.polling = false;
    this.lastHeard = null;
    this.stale = false;
  }

  /** The agent answered (at `agentNow` by its clock, when it said). */
  heard(agentNow) {
    this.lastHeard = Date.now();
    this.onHeard(agentNow || new Date().toISOString());
    if (this.stale) {
      this.stale = false;
      this.onStatus(this.polling ? 'polling' : 'live');
    }
  }

  /** Once a second: silence past `STALE_AFTER_MS` makes the page say it is not live. */
  watchSilence() {
    setInterval(() => {
      if (this.lastHeard === null) return;
      const silent = Date.now() - this.lastHeard;
      if (silent > STALE_AFTER_MS) {
        this.stale = true;
        this.onStatus('stale', `${Math.round(silent / 1000)} s without a heartbeat: the agent is frozen or the network is down`);
      }
    }, 1000);
  }

  start() {
    this.watchSilence();
    if (typeof EventSource === 'undefined') return this.poll();
    this.listen();
  }

  /** The cluster in view changed: a live stream is opened again for it. */
  follow() {
    if (this.polling || !this.source) return;
    if (this.listening !== (this.watched() || null)) this.listen();
  }

  listen() {
    if (this.source) this.source.close();
    clearTimeout(this.silence);
    this.silence = null;
    const watched = this.watched() || null;
    this.listening = watched;
    let heard = false;
    const source = new EventSource(`/api/v1/events${watched ? `?cluster=${enc(watched)}` : ''}`);
    this.source = source;
    const readable = (handle) => (event) => {
      heard = true;
      this.heard(null);
      this.onStatus('live');
      try {
        handle(JSON.parse(event.data));
      } catch (error) {
        this.onStatus('down', `the live feed sent something unreadable: ${error.message}`);
      }
    };
    source.addEventListener('changes', (event) => {
      this.heard(null);
      try { this.onChanges(JSON.parse(event.data)); } catch { /* the panels poll again later */ }
    });
    source.addEventListener('heartbeat', (event) => {
      let now = null;
      try { now = JSON.parse(event.data).now; } catch { /* the time is only shown */ }
      this.heard(now);
    });
    source.addEventListener('summaries', readable((list) => this.onSummaries(list, null)));
    source.addEventListener('cluster', readable((detail) => this.onDetail(detail)));
    source.onerror = () => {
      if (source !== this.source) return; // replaced by the stream of another cluster
      if (!heard || source.readyState === EventSource.CLOSED) {
        // Refused (a token for reads, an older agent without the stream) or gone before
        // it said anything: poll with the header instead.
        source.close();
        this.source = null;
        this.poll();
      } else {
        // The browser reconnects by itself; say so, and after a few seconds without
        // success say the agent is not answering.
        if (this.silence) return; // still failing since the first error
        this.onStatus('reconnecting');
        this.silence = setTimeout(() => {
          if (source.readyState !== EventSource.OPEN) this.onStatus('down', 'the live stream is broken and the agent does not answer: is pointsman still running?');
        }, 5000);
      }
    };
    source.onopen = () => {
      clearTimeout(this.silence);
      this.silence = null;
    };
  }

  /** Asks again now (after an action), when polling. */
  nudge() {
    if (this.polling) this.tick();
  }

  poll() {
    this.polling = true;
    this.onStatus('polling');
    this.tick();
  }

  async tick() {
    clearTimeout(this.timer);
    try {
      const summaries = await get('/api/v1/clusters', { quiet: true });
      const name = this.watched();
      const detail = name && summaries.some((c) => c.name === name)
        ? await get(`/api/v1/clusters/${enc(name)}`, { quiet: true }) : null;
      this.onSummaries(summaries, detail);
      this.heard(null);
      this.onStatus('polling');
    } catch (error) {
      this.onStatus('down', error.message);
    }
    this.timer = setTimeout(() => this.tick(), 1000);
  }
}
