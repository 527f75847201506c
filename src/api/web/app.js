// pointsman's web page: the clusters, one cluster's tree kept live, the actions an
// operator takes on it (each confirmed in a sentence that says what will happen, each
// answered in the page), the recoveries, the audit log and the routes. Everything goes
// through the same /api/v1 endpoints the CLI uses; nothing is computed here that the
// agent has not said.
//
// Pages are hash routes (#/, #/cluster/NAME, #/recoveries, #/audit), so the agent
// serves one document and a reload keeps the place.

import { h, fill, icon, ago, clock, millis, plural } from './dom.js';
import * as api from './api.js';
import { drawTree, drawnState, badgesOf, ROLE_LABEL, since } from './topology.js';

const RANK = { problem: 2, warning: 1, ok: 0 };
// Clusters listed per page of the dashboard.
const PAGE_SIZE = 100;
/** Problems a recovery (`POST .../recover`) acts on. */
const RECOVERABLE = ['DeadPrimary', 'DeadPrimaryAndSomeReplicas', 'DeadIntermediatePrimary'];
/** Problem codes that are also findings: shown on the boxes and under the tree. */
const FINDING_PROBLEMS = ['ErrantGtid', 'ReplicationStopped', 'ReplicationLagging', 'PrimaryReadOnly'];

const state = {
  details: new Map(), // name → ClusterDetail
  summaries: [], // ClusterSummary, problems first
  heard: false,
  status: 'connecting',
  statusError: null,
  /** The agent's clock when it was last heard from. */
  asOf: null,
  /** The last fingerprints of the routes and recoveries the stream sent. */
  changes: null,
};

const main = document.getElementById('main');
const dialogEl = document.getElementById('dialog');
const noticesEl = document.getElementById('notices');
const connectionEl = document.getElementById('connection');
let page = null;

// ---------------------------------------------------------------- data

function sortSummaries(list) {
  return [...list].sort((a, b) => (RANK[b.health.status] - RANK[a.health.status]) || a.name.localeCompare(b.name, 'en', { numeric: true }));
}

/** The detail of the cluster in view, as the live feed sends it (`null`: none now):
 * the only one kept, so what is shown is never an old copy of another cluster. */
function setDetail(detail) {
  state.details = new Map(detail ? [[detail.name, detail]] : []);
  updated();
}

function setSummaries(list, detail) {
  state.summaries = sortSummaries(list);
  const names = new Set(list.map((c) => c.name));
  for (const name of [...state.details.keys()]) if (!names.has(name)) state.details.delete(name);
  if (detail) state.details.set(detail.name, detail);
  updated();
}

function updated() {
  state.heard = true;
  updateHeader();
  refresh();
}

function refresh() {
  // Never redraw under a dragged box: try again when it is dropped.
  if (document.body.classList.contains('drag-active') || document.body.classList.contains('pressing')) {
    clearTimeout(refresh.later);
    refresh.later = setTimeout(refresh, 150);
    return;
  }
  if (page && page.update) page.update();
}

const feed = new api.Feed({
  onSummaries: setSummaries,
  onDetail: setDetail,
  onStatus: (status, error) => {
    state.status = status;
    state.statusError = error || null;
    showConnection();
  },
  // What the page shows is as of the last word from the agent, by its clock.
  onHeard: (agentNow) => {
    state.asOf = agentNow;
  },
  // The routes or the recent recoveries changed: the panels that show them read again.
  onChanges: (changes) => {
    const previous = state.changes || {};
    state.changes = changes;
    if (page && page.onChanges) page.onChanges(changes, previous);
  },
  watched: () => (page && page.cluster) || null,
});

function showConnection() {
  const { status, statusError } = state;
  const [kind, glyph, text, title] = {
    live: ['ok', 'ok', 'Live', 'Updated by the agent as things change (server-sent events)'],
    polling: ['ok', 'ok', 'Polling every 1 s', 'The live stream is not available (it cannot carry a token): asking once a second instead'],
    reconnecting: ['warning', 'warning', 'Reconnecting…', 'The live stream dropped; the browser is reconnecting'],
    stale: ['problem', 'problem', 'Not live', statusError || 'no word from the agent'],
    down: ['problem', 'problem', 'Agent not answering', statusError || ''],
    connecting: ['muted', 'info', 'Connecting…', ''],
  }[status] || ['muted', 'info', status, ''];
  connectionEl.className = `connection conn-${kind}`;
  connectionEl.title = title;
  fill(connectionEl, icon(glyph), h('span', {}, text),
    state.asOf && status !== 'live' && status !== 'polling' ? h('span', { class: 'muted as-of' }, ` · as of ${clock(state.asOf).slice(11)}`) : null);
  const notLive = status === 'down' || status === 'stale';
  document.body.classList.toggle('stale', notLive);
  const stale = document.getElementById('stale');
  stale.hidden = !notLive;
  if (notLive) {
    const what = status === 'stale' ? 'No word from the agent. ' : 'The agent does not answer. ';
    fill(stale, icon('problem'), h('span', {}, h('strong', {}, what),
      state.asOf ? `What you see is what it said at ${clock(state.asOf).slice(11)}, not now. ` : '',
      statusError ? h('span', { class: 'muted' }, statusError) : null));
  }
}

// ---------------------------------------------------------------- notices and dialogs

/** A message at the top of the page: kind ok | error | working | info. */
function notice(kind, text, { sticky = kind === 'error' || kind === 'working', keep = false } = {}) {
  const glyph = { ok: 'ok', error: 'problem', working: 'info', info: 'info' }[kind];
  const close = h('button', { class: 'icon-button', title: 'Dismiss', 'aria-label': 'Dismiss' }, icon('close'));
  const el = h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    kind === 'working' ? h('span', { class: 'spinner', 'aria-hidden': 'true' }) : icon(glyph),
    h('span', { class: 'notice-text' }, text), h('span', { class: 'notice-time' }, clock(new Date().toISOString()).slice(11)), close);
  close.addEventListener('click', () => el.remove());
  if (keep) el.dataset.keep = 'true';
  noticesEl.prepend(el);
  while (noticesEl.children.length > 4) noticesEl.lastChild.remove();
  if (!sticky) setTimeout(() => el.remove(), 20000);
  return el;
}

/**
 * A confirmation: `sentence` says exactly what will happen. Resolves to true, or
 * false when cancelled. `content` (inputs) may be given; `valid()` gates the button.
 */
function confirmDialog({ title, sentence, content, confirmLabel = 'Confirm', cancelLabel = 'Cancel', danger = false, valid }) {
  return new Promise((resolve) => {
    const confirm = h('button', { type: 'submit', class: danger ? 'button danger' : 'button primary', 'data-action': 'confirm' }, confirmLabel);
    const cancel = cancelLabel ? h('button', { type: 'button', class: 'button', 'data-action': 'cancel' }, cancelLabel) : null;
    const form = h('form', { class: 'dialog-form' },
      h('h2', { id: 'dialog-title' }, title),
      sentence ? h('p', { class: 'sentence' }, sentence) : null,
      content || null,
      h('div', { class: 'dialog-buttons' }, cancel, confirm));
    const check = () => { confirm.disabled = valid ? !valid() : false; };
    form.addEventListener('input', check);
    form.addEventListener('change', check);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (valid && !valid()) return;
      finish(true);
    });
    if (cancel) cancel.addEventListener('click', () => finish(false));
    const finish = (answer) => {
      dialogEl.removeEventListener('cancel', onCancel);
      dialogEl.close();
      resolve(answer);
    };
    const onCancel = (event) => { event.preventDefault(); finish(false); };
    dialogEl.addEventListener('cancel', onCancel);
    fill(dialogEl, form);
    form.recheck = check;
    dialogEl.form = form;
    check();
    dialogEl.showModal();
    const first = form.querySelector('input:not([type=radio]), select, input[type=radio]:checked');
    // A dangerous confirmation never has the focus: an Enter meant for the button
    // that opened the dialog must not confirm it.
    (first || (danger ? cancel : confirm)).focus();
  });
}

api.onTokenNeeded(async (reason) => {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, 'aria-label': 'API token' });
  const ok = await confirmDialog({
    title: 'This agent needs its API token',
    sentence: 'Enter the token this agent was given (api.token in its configuration) to go on.',
    content: [h('p', { class: 'muted small' }, `The agent said: ${reason}`),
      h('div', { class: 'field' }, h('label', {}, icon('key'), 'Token'), input,
        h('p', { class: 'muted small' }, 'Kept in this browser tab only (sessionStorage) until you close it.'))],
    confirmLabel: 'Use this token',
    valid: () => input.value.trim() !== '',
  });
  return ok ? input.value : null;
});

/**
 * Runs an action after its confirmation: shows it working, then its result or the
 * agent's error sentence, and asks for fresh data.
 */
async function act({ working, run, done, failed }) {
  const progress = notice('working', working);
  try {
    const result = await run();
    progress.remove();
    const said = done(result);
    const [kind, text] = typeof said === 'object' ? [said.kind, said.text] : ['ok', said];
    // The agent's own sentences start in lower case, as error messages do.
    if (text) notice(kind, text.charAt(0).toUpperCase() + text.slice(1));
    feed.nudge();
    if (page && page.afterAction) page.afterAction();
    return result;
  } catch (error) {
    progress.remove();
    notice('error', `${failed}: ${error.message}`);
    if (page && page.afterAction) page.afterAction();
    return null;
  }
}

// ---------------------------------------------------------------- actions

const path = (key) => `/api/v1/instances/${api.enc(key)}`;

/** Whether this browser asks for the cluster's name before a switchover or recovery. */
const TYPE_TO_CONFIRM = 'pointsman.typeToConfirm';
const typeToConfirm = () => localStorage.getItem(TYPE_TO_CONFIRM) === 'yes';

/** When asked for (a preference of this browser), a field to type the cluster's name in. */
function typedName(name) {
  if (!typeToConfirm()) return { field: null, typed: () => true };
  const input = h('input', { type: 'text', name: 'typed-name', autocomplete: 'off', 'aria-label': `Type ${name} to confirm`, placeholder: name });
  return {
    field: h('div', { class: 'field' }, h('label', {}, 'Type ', h('span', { class: 'mono strong' }, name), ' to confirm'), input),
    typed: () => input.value.trim() === name,
  };
}

async function switchover(detail, chosen) {
  const old = detail.primary;
  let to = chosen;
  const sentence = h('p', { class: 'sentence' }, to
    ? `Make ${to} the new primary of ${detail.name}? Writes pause for a moment; ${old} becomes its replica.`
    : `Asking the agent which replica of ${detail.name} it would promote…`);
  const name = typedName(detail.name);
  const answer = confirmDialog({
    title: 'Switch over',
    content: [sentence, h('p', { class: 'muted' }, 'The other replicas will replicate from the new primary, and the routes follow it. pointsman refuses, changing nothing, if the replica is not fit to take over (lagging, not replicating, errant GTIDs).'), name.field],
    confirmLabel: 'Switch over',
    valid: () => to !== null && name.typed(),
  });
  if (!to) {
    // Name the replica before anything is done: the best one the agent ranks, and why.
    api.get(`/api/v1/clusters/${api.enc(detail.name)}/candidates`, { quiet: true }).then((c) => {
      const verdicts = c.verdicts || [];
      const best = verdicts.find((v) => v.eligible);
      if (best) {
        to = best.instance;
        const rule = String(best.rule).replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
        const others = verdicts.filter((v) => v !== best);
        fill(sentence, `Make `, h('strong', { class: 'mono', 'data-field': 'candidate' }, to), ` the new primary of ${detail.name}? `,
          `It ranks first of ${plural(verdicts.length, 'replica')}: ${best.position} transactions, promotion rule ${RULE_TEXT[rule] || rule}`,
          others.length ? `; next: ${others.map((v) => `${v.instance}${v.eligible ? '' : ' (not eligible)'}`).join(', ')}` : '',
          `. Writes pause for a moment; ${old} becomes its replica.`);
      } else {
        fill(sentence, h('span', { class: 'inline-error' }, icon('problem'), `No replica of ${detail.name} can take over: ${c.error || verdicts.map((v) => `${v.instance}: ${v.reasons.join('; ')}`).join(' · ') || 'it has none'}. Nothing will change.`));
      }
      if (dialogEl.form && dialogEl.form.recheck) dialogEl.form.recheck();
    }).catch((error) => {
      fill(sentence, h('span', { class: 'inline-error' }, icon('problem'), `The candidates could not be read: ${error.message}`));
    });
  }
  if (!(await answer) || !to) return;
  await act({
    working: `Switching ${detail.name} over${to ? ` to ${to}` : ''}…`,
    run: () => api.post(`/api/v1/clusters/${api.enc(detail.name)}/switchover`, to ? { to } : {}),
    done: (r) => `${r.new_primary} is the new primary of ${detail.name}; ${r.old_primary} is its replica. Writes paused ${r.write_gap_ms} ms${r.route_gap_ms ? `, and the routes named the new primary ${r.route_gap_ms} ms later` : ''}.`,
    failed: `Switchover of ${detail.name} not done`,
  });
}

async function relocate(detail, key, below) {
  const view = instanceOf(detail, key);
  const current = view && view.facts && view.facts.replication && view.facts.replication.source;
  const ok = await confirmDialog({
    title: 'Move a replica',
    sentence: `Move ${key} below ${below}? It will replicate from ${below}${current ? ` instead of ${current}` : ''}.`,
    content: h('p', { class: 'muted' }, 'Replication stops for a moment and resumes by GTID from the new source; nothing else changes.'),
    confirmLabel: 'Move it',
  });
  if (!ok) return;
  await act({
    working: `Moving ${key} below ${below}…`,
    run: () => api.post(`${path(key)}/relocate`, { below }),
    done: (r) => r.message || `${key} now replicates from ${below}.`,
    failed: `${key} not moved`,
  });
}

async function relocateDialog(detail, key) {
  const view = instanceOf(detail, key);
  const current = view && view.facts && view.facts.replication && view.facts.replication.source;
  const options = detail.instances.filter((v) => v.key !== key && v.key !== current && v.role !== 'fenced_primary');
  const select = h('select', { name: 'below', 'aria-label': 'New source' },
    h('option', { value: '' }, 'Choose the instance to replicate from'),
    options.map((v) => h('option', { value: v.key }, `${v.key} (${ROLE_LABEL[v.role].toLowerCase()})`)));
  const ok = await confirmDialog({
    title: `Move ${key}`,
    sentence: `Make ${key} replicate from another instance${current ? ` instead of ${current}` : ''}.`,
    content: h('div', { class: 'field' }, h('label', {}, 'Below'), select),
    confirmLabel: 'Continue',
    valid: () => select.value !== '',
  });
  if (ok) await relocate(detail, key, select.value);
}

/** The node of `key` in the cluster's tree. */
function nodeOf(node, key) {
  if (node.key === key) return node;
  for (const child of node.replicas) {
    const found = nodeOf(child, key);
    if (found) return found;
  }
  return null;
}

/** Every key under `node` (not itself). */
function keysBelow(node) {
  return node.replicas.flatMap((child) => [child.key, ...keysBelow(child)]);
}

/** Moves every replica of `key` below another instance, one after the other. */
async function relocateReplicasDialog(detail, key) {
  const node = nodeOf(detail.tree, key);
  const replicas = node ? node.replicas.map((c) => c.key) : [];
  const under = new Set(node ? keysBelow(node) : []);
  const options = detail.instances.filter((v) => v.key !== key && v.role !== 'fenced_primary' && !v.unreachable_since
    && !(under.has(v.key) && !replicas.includes(v.key)));
  const select = h('select', { name: 'below', 'aria-label': 'New source' },
    h('option', { value: '' }, 'Choose the instance they replicate from'),
    options.map((v) => h('option', { value: v.key }, `${v.key} (${ROLE_LABEL[v.role].toLowerCase()})`)));
  const sentence = h('p', { class: 'sentence' });
  const moving = () => replicas.filter((r) => r !== select.value);
  const say = () => {
    sentence.textContent = select.value
      ? `Move ${plural(moving().length, 'replica')} of ${key} (${moving().join(', ')}) below ${select.value}? Each stops replicating for a moment and resumes by GTID from ${select.value}.`
      : `Move the ${plural(replicas.length, 'replica')} of ${key} (${replicas.join(', ')}) below another instance.`;
  };
  say();
  select.addEventListener('change', say);
  const ok = await confirmDialog({
    title: `Move the replicas of ${key}`,
    content: [sentence, h('div', { class: 'field' }, h('label', {}, 'Below'), select)],
    confirmLabel: 'Move them',
    valid: () => select.value !== '' && moving().length > 0,
  });
  if (!ok) return;
  const below = select.value;
  const list = moving();
  await act({
    working: `Moving ${plural(list.length, 'replica')} of ${key} below ${below}…`,
    run: async () => {
      for (const [index, replica] of list.entries()) {
        try {
          await api.post(`${path(replica)}/relocate`, { below });
        } catch (error) {
          const done = index ? `${list.slice(0, index).join(', ')} moved; ` : '';
          throw new Error(`${done}${replica} not moved: ${error.message}${index + 1 < list.length ? ` (${list.slice(index + 1).join(', ')} left where they were)` : ''}`);
        }
      }
      return list;
    },
    done: (moved) => `${moved.join(', ')} now replicate${moved.length === 1 ? 's' : ''} from ${below}.`,
    failed: `Replicas of ${key} not all moved`,
  });
}

async function setReplication(key, running, source) {
  const ok = await confirmDialog({
    title: running ? 'Start replication' : 'Stop replication',
    sentence: running
      ? `Start replication on ${key}? It resumes receiving and applying changes${source ? ` from ${source}` : ''}.`
      : `Stop replication on ${key}? It stops receiving and applying changes${source ? ` from ${source}` : ''} until you start it again.`,
    content: running ? null : h('p', { class: 'muted' }, 'While it is stopped the replica falls behind, leaves the readers\' routes, and cannot be a good candidate for promotion.'),
    confirmLabel: running ? 'Start replication' : 'Stop replication',
    danger: !running,
  });
  if (!ok) return;
  await act({
    working: `${running ? 'Starting' : 'Stopping'} replication on ${key}…`,
    run: () => api.post(`${path(key)}/replication`, { running }),
    done: (r) => r.message || `Replication ${running ? 'started' : 'stopped'} on ${key}.`,
    failed: `Replication on ${key} not ${running ? 'started' : 'stopped'}`,
  });
}

async function setReadOnly(detail, key, readOnly) {
  const primary = key === detail.primary;
  let sentence;
  if (primary && readOnly) sentence = `Set read_only ON on ${key}, the primary of ${detail.name}? Applications can no longer write to ${detail.name} until it is OFF again.`;
  else if (primary) sentence = `Set read_only OFF on ${key}, the primary of ${detail.name}? It takes writes again.`;
  else if (readOnly) sentence = `Set read_only ON on ${key}? It stops accepting writes from anyone but replication.`;
  else sentence = `Make the replica ${key} writable (read_only OFF)? Anything written there is an errant transaction the primary never had.`;
  const ok = await confirmDialog({
    title: readOnly ? 'Set read_only ON' : 'Set read_only OFF',
    sentence,
    confirmLabel: readOnly ? 'Set read_only ON' : 'Set read_only OFF',
    danger: primary === readOnly,
  });
  if (!ok) return;
  await act({
    working: `Setting read_only ${readOnly ? 'ON' : 'OFF'} on ${key}…`,
    run: () => api.put(`${path(key)}/read_only`, { read_only: readOnly }),
    done: (r) => r.message || `read_only is ${readOnly ? 'ON' : 'OFF'} on ${key}.`,
    failed: `read_only not changed on ${key}`,
  });
}

async function downtime(key) {
  const duration = h('select', { name: 'duration', 'aria-label': 'Duration' },
    ['15m', '30m', '1h', '2h', '4h', '8h', '24h'].map((d) => h('option', { value: d, selected: d === '1h' }, d)));
  const reason = h('input', { type: 'text', name: 'reason', placeholder: 'e.g. kernel upgrade, ticket OPS-123', 'aria-label': 'Reason', required: true });
  const sentence = h('p', { class: 'sentence' });
  const say = () => { sentence.textContent = `Downtime ${key} for ${duration.value}? Until then automatic recovery leaves it alone: no failover is started for it.`; };
  say();
  duration.addEventListener('change', say);
  const ok = await confirmDialog({
    title: `Downtime ${key}`,
    content: [sentence, h('div', { class: 'field-row' },
      h('div', { class: 'field' }, h('label', {}, 'For'), duration),
      h('div', { class: 'field grow' }, h('label', {}, 'Reason'), reason))],
    confirmLabel: 'Downtime it',
    valid: () => reason.value.trim() !== '',
  });
  if (!ok) return;
  await act({
    working: `Downtiming ${key}…`,
    run: () => api.put(`${path(key)}/downtime`, { duration: duration.value, reason: reason.value.trim() }),
    done: (r) => `${key} is downtimed until ${clock(r.until)}: ${r.reason}.`,
    failed: `${key} not downtimed`,
  });
}

async function endDowntime(key) {
  const ok = await confirmDialog({
    title: 'End downtime',
    sentence: `End the downtime of ${key}? Automatic recovery watches it again at once.`,
    confirmLabel: 'End downtime',
  });
  if (!ok) return;
  await act({
    working: `Ending the downtime of ${key}…`,
    run: () => api.del(`${path(key)}/downtime`),
    done: (r) => (r.ended ? `The downtime of ${key} has ended.` : `${key} was not downtimed.`),
    failed: `Downtime of ${key} not ended`,
  });
}

async function reattach(detail, key) {
  const ok = await confirmDialog({
    title: 'Re-attach the old primary',
    sentence: `Re-attach ${key} as a replica of ${detail.primary}? It stops being fenced and replicates from ${detail.primary}.`,
    content: h('p', { class: 'muted' }, `pointsman refuses, naming the GTIDs, if ${key} has transactions ${detail.primary} never had.`),
    confirmLabel: 'Re-attach',
  });
  if (!ok) return;
  await act({
    working: `Re-attaching ${key}…`,
    run: () => api.post(`${path(key)}/reattach`),
    done: (r) => `${r.instance} now replicates from ${r.source}.`,
    failed: `${key} not re-attached`,
  });
}

async function forget(key, fenced) {
  const ok = await confirmDialog({
    title: `Forget ${key}`,
    sentence: fenced
      ? `Forget ${key} and stop keeping it read_only? Do this only if it is being decommissioned: if it comes back it can take writes.`
      : `Forget ${key}? pointsman stops polling it; a neighbour that still replicates with it brings it back.`,
    confirmLabel: 'Forget it',
    danger: true,
  });
  if (!ok) return;
  await act({
    working: `Forgetting ${key}…`,
    run: () => api.del(`${path(key)}${fenced ? '?unfence=true' : ''}`),
    done: () => `${key} is forgotten.`,
    failed: `${key} not forgotten`,
  });
}

async function acknowledge(name) {
  const comment = h('input', { type: 'text', name: 'comment', placeholder: 'what was done, who looked', 'aria-label': 'Comment' });
  const ok = await confirmDialog({
    title: `Acknowledge the recoveries of ${name}`,
    sentence: `Acknowledge the recoveries of ${name}? Automatic recovery may act on ${name} again at once, not only after the block period.`,
    content: h('div', { class: 'field' }, h('label', {}, 'Comment'), comment),
    confirmLabel: 'Acknowledge',
  });
  if (!ok) return;
  await act({
    working: `Acknowledging the recoveries of ${name}…`,
    run: () => api.post(`/api/v1/clusters/${api.enc(name)}/ack`, { comment: comment.value.trim() }),
    done: (r) => `${plural(r.acknowledged, 'recovery', 'recoveries')} of ${name} acknowledged: automatic recovery may act again.`,
    failed: `Recoveries of ${name} not acknowledged`,
  });
}

const RULE_TEXT = { prefer: 'preferred', neutral: 'neutral', prefer_not: 'preferably not', must_not: 'must not be promoted' };

/** If the primary died now: the agent's answer (who would take over, what would stop it), read only. */
function whatIfDialog(name) {
  const sentence = h('p', { class: 'sentence' }, h('span', { class: 'spinner' }), ' Asking the agent…');
  const list = h('div', { class: 'candidates' });
  confirmDialog({ title: `What if the primary of ${name} died now?`, content: [sentence, list], confirmLabel: 'Close', cancelLabel: null });
  api.get(`/api/v1/clusters/${api.enc(name)}/what-if`).then((w) => {
    fill(sentence, w.summary);
    fill(list,
      w.candidate ? h('p', {}, 'Would promote ', h('span', { class: 'mono strong', 'data-field': 'candidate' }, w.candidate),
        w.automatic ? ' by itself.' : ' only when asked (Recover).') : null,
      (w.verdicts || []).map((v, index) => h('div', { class: `candidate ${v.eligible ? 'eligible' : 'ineligible'}` },
        h('span', { class: 'rank' }, `${index + 1}`),
        h('span', { class: 'candidate-body' },
          h('span', { class: 'mono strong' }, v.instance),
          h('span', { class: `verdict ${v.eligible ? 'verdict-ok' : 'verdict-no'}` }, icon(v.eligible ? 'ok' : 'problem'), v.eligible ? 'eligible' : 'passed over'),
          h('span', { class: 'muted small' }, `${v.position} transactions`),
          v.reasons.length ? h('ul', { class: 'reasons' }, v.reasons.map((r) => h('li', {}, r))) : null))));
  }).catch((error) => {
    fill(sentence, h('span', { class: 'inline-error' }, icon('problem'), `The agent could not say: ${error.message}`));
  });
}

/** Recovers by hand: the ranked candidates, `preferred` (or the best) chosen at first. */
async function recoverDialog(detail, preferred = null) {
  const name = detail.name;
  const list = h('div', { class: 'candidates', role: 'radiogroup', 'aria-label': 'Candidates' }, h('p', { class: 'muted' }, h('span', { class: 'spinner' }), ' Asking the agent which replicas could take over…'));
  const sentence = h('p', { class: 'sentence' }, `Choose the replica to promote as the new primary of ${name}.`);
  let chosen = null;
  let failed = detail.primary;
  const say = () => {
    sentence.textContent = chosen
      ? `Promote ${chosen} to be the new primary of ${name}? ${failed} is fenced (kept read_only until re-attached) and the other replicas replicate from ${chosen}.`
      : `No replica can be promoted: nothing will change.`;
  };
  const typed = typedName(name);
  const answer = confirmDialog({
    title: `Recover ${name}`, content: [sentence, list, typed.field], confirmLabel: 'Promote', danger: true,
    valid: () => chosen !== null && typed.typed(),
  });
  api.get(`/api/v1/clusters/${api.enc(name)}/candidates`).then((c) => {
    failed = c.failed || failed;
    const verdicts = c.verdicts || [];
    const best = verdicts.find((v) => v.eligible);
    chosen = (verdicts.find((v) => v.eligible && v.instance === preferred) || best || {}).instance || null;
    fill(list,
      c.error ? h('p', { class: 'inline-error' }, icon('problem'), c.error) : null,
      verdicts.length ? null : h('p', { class: 'muted' }, 'No replica to judge.'),
      verdicts.map((v, index) => {
        const radio = h('input', { type: 'radio', name: 'candidate', value: v.instance, disabled: !v.eligible, checked: v.instance === chosen });
        radio.addEventListener('change', () => { chosen = v.instance; say(); });
        const rule = String(v.rule).replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
        return h('label', { class: `candidate ${v.eligible ? 'eligible' : 'ineligible'}` }, radio,
          h('span', { class: 'rank' }, `${index + 1}`),
          h('span', { class: 'candidate-body' },
            h('span', { class: 'mono strong' }, v.instance),
            h('span', { class: `verdict ${v.eligible ? 'verdict-ok' : 'verdict-no'}` }, icon(v.eligible ? 'ok' : 'problem'), v.eligible ? (index === 0 ? 'eligible, best' : 'eligible') : 'not eligible'),
            h('span', { class: 'muted small' }, `${v.position} transactions · ${RULE_TEXT[rule] || rule}`),
            // Equal to the best on what counts: say so, or "best" reads as better.
            v.eligible && v !== best && v.position === best.position && v.rule === best.rule
              ? h('span', { class: 'muted small tie' }, `As good as no. 1 (${best.instance}): equal ties go by configuration order, then address.`) : null,
            v.reasons.length ? h('ul', { class: 'reasons' }, v.reasons.map((r) => h('li', {}, r))) : null));
      }));
    say();
    if (dialogEl.form && dialogEl.form.recheck) dialogEl.form.recheck();
  }).catch((error) => {
    fill(list, h('p', { class: 'inline-error' }, icon('problem'), `The candidates could not be read: ${error.message}`));
  });
  if (!(await answer) || !chosen) return;
  const to = chosen;
  await act({
    working: `Recovering ${name}: promoting ${to}…`,
    run: () => api.post(`/api/v1/clusters/${api.enc(name)}/recover`, { to }),
    done: (r) => {
      if (r.status === 'succeeded') return `Recovery of ${name} succeeded: ${r.successor || to} is the new primary. Its steps are under Recoveries.`;
      const step = (r.steps || []).find((st) => !st.ok);
      return { kind: 'error', text: `Recovery of ${name} ${r.status}${step ? ` at "${step.step}": ${step.detail}` : ''}.` };
    },
    failed: `Recovery of ${name} not done`,
  });
}

async function setAutomatic(on) {
  const ok = await confirmDialog({
    title: on ? 'Turn automatic recovery on' : 'Turn automatic recovery off',
    sentence: on
      ? 'Turn automatic recovery on? pointsman fails over by itself again, for the clusters its configuration names.'
      : 'Turn automatic recovery off? pointsman keeps watching, but no failover happens until someone recovers by hand or turns it on again.',
    confirmLabel: on ? 'Turn on' : 'Turn off',
    danger: !on,
  });
  if (!ok) return;
  await act({
    working: `Turning automatic recovery ${on ? 'on' : 'off'}…`,
    run: () => api.put('/api/v1/recovery', { automatic: on }),
    done: (r) => `Automatic recovery is ${r.automatic ? 'on' : 'off'}.`,
    failed: 'Automatic recovery not switched',
  });
}

function instanceOf(detail, key) {
  return detail.instances.find((v) => v.key === key);
}

// ---------------------------------------------------------------- pages

const COVERAGE = {
  on: ['ok', 'Automatic recovery on'],
  not_covered: ['warning', 'Not covered by automatic recovery'],
  off: ['warning', 'Automatic recovery off'],
  downtimed: ['warning', 'Primary downtimed'],
  blocked: ['warning', 'Automatic recovery blocked'],
  no_agent: ['problem', 'No agent acts'],
  unknown: ['warning', 'Automatic recovery unknown'],
};

/** Whether a failure of the primary would be recovered automatically now, and by whom. */
function coverageLabel(coverage, { why = false } = {}) {
  if (!coverage) return null;
  const [kind, text] = COVERAGE[coverage.state] || ['warning', coverage.state];
  const until = coverage.until ? ` until ${clock(coverage.until).slice(11)}` : '';
  let agent = '';
  if (coverage.acting_agent) agent = coverage.this_agent_acts ? ` · ${coverage.acting_agent} (this agent) acts` : ` · ${coverage.acting_agent} acts, not this agent`;
  return h('span', { class: `coverage coverage-${kind}`, 'data-coverage': coverage.state, title: coverage.why },
    icon(kind === 'ok' ? 'ok' : kind === 'problem' ? 'problem' : 'refused'), h('span', {}, `${text}${until}${agent}`),
    why && coverage.state !== 'on' ? h('span', { class: 'coverage-why' }, ` — ${coverage.why}`) : null);
}

/** The steps of a recovery as run: time, name, instance, what each said. */
function stepsTable(r) {
  return h('table', { class: 'steps' }, h('tbody', {}, r.steps.map((st) => h('tr', { class: st.ok ? '' : 'step-failed' },
    h('td', { class: 'step-ok' }, icon(st.ok ? 'ok' : 'problem', st.ok ? 'ok' : 'failed')),
    h('td', { class: 'step-ms' }, `${st.duration_ms} ms`),
    h('td', { class: 'step-name' }, st.step, st.instance ? h('div', { class: 'mono muted small' }, st.instance) : null),
    h('td', { class: 'step-detail' }, h('pre', {}, st.detail))))));
}

/**
 * The announcement of a recovery nobody has acknowledged yet: what failed, who took
 * over and how long it took, the steps, and what to do (Re-attach, Acknowledge). On the
 * dashboard (`detail` null) it names the cluster and links to it.
 */
function recoveryBanner(name, r, detail) {
  if (!r) return null;
  const took = r.finished_at ? millis(Date.parse(r.finished_at) - Date.parse(r.started_at)) : null;
  const at = clock(r.started_at).slice(11);
  const what = r.kind === 'failover' ? 'Failover' : `Recovery (${r.kind})`;
  const failedStep = (r.steps || []).find((st) => !st.ok);
  let headline;
  if (r.status === 'succeeded') {
    headline = [`${what} at ${at}: `, h('span', { class: 'mono' }, r.failed), ' failed; ',
      h('span', { class: 'mono strong' }, r.successor), ` took over${took ? ` in ${took}` : ''}.`];
  } else if (r.status === 'running') {
    headline = [`${what} under way since ${at}: `, h('span', { class: 'mono' }, r.failed), ' failed.'];
  } else {
    headline = [`${what} at ${at} ${r.status.replace('_', ' ')}: `, h('span', { class: 'mono' }, r.failed), ' failed',
      r.successor ? [' and ', h('span', { class: 'mono strong' }, r.successor), ' was chosen'] : ' and nobody took over',
      failedStep ? ` — at "${failedStep.step}": ${failedStep.detail}` : '', '.'];
  }
  const old = detail && instanceOf(detail, r.failed);
  const back = old && old.role === 'fenced_primary' && !old.unreachable_since;
  const kind = r.status === 'succeeded' ? 'done' : r.status === 'running' ? 'running' : 'failed';
  return h('div', { class: `banner banner-recovery banner-recovery-${kind}`, role: 'alert', 'data-kind': 'recovery', 'data-recovery': r.id, dataset: { cluster: name } },
    icon(kind === 'done' ? 'info' : kind === 'running' ? 'info' : 'problem'),
    h('div', { class: 'banner-body' },
      h('div', {}, detail ? null : h('a', { class: 'strong', href: `#/cluster/${encodeURIComponent(name)}` }, `${name}: `), h('strong', {}, headline)),
      h('div', { class: 'muted small' }, [words(r.problem), r.trigger === 'automatic' ? 'automatic' : `by ${r.trigger}`, `recovery ${r.id}`, 'not acknowledged'].join(' · '),
        old && old.role === 'fenced_primary' ? ` · ${r.failed} is fenced (kept read_only)${back ? ' and answers again' : ' until it is back and re-attached'}` : ''),
      detail && r.steps && r.steps.length ? h('details', {}, h('summary', {}, plural(r.steps.length, 'step')), stepsTable(r)) : null),
    h('div', { class: 'banner-actions' },
      back ? button('Re-attach…', () => reattach(state.details.get(name) || detail, r.failed), 'small', 'reattach') : null,
      detail ? null : h('a', { class: 'button small', href: `#/cluster/${encodeURIComponent(name)}` }, 'Open'),
      button('Acknowledge…', () => acknowledge(name), 'small primary', 'acknowledge')));
}

function healthLabel(health) {
  if (health.status === 'ok') return [icon('ok'), h('span', {}, 'OK')];
  const parts = [];
  if (health.problems) parts.push(plural(health.problems, 'problem'));
  if (health.warnings) parts.push(plural(health.warnings, 'warning'));
  return [icon(health.status === 'problem' ? 'problem' : 'warning'), h('span', {}, parts.join(' · '))];
}

function healthPill(health, big) {
  return h('span', { class: `health health-${health.status}${big ? ' big' : ''}` }, healthLabel(health));
}

function waiting() {
  return h('p', { class: 'muted loading' }, h('span', { class: 'spinner' }), state.status === 'down'
    ? ` The agent does not answer: ${state.statusError || ''}` : ' Waiting for the agent…');
}

/**
 * What the Discover form was given: `host`, `host:port`, `[v6]:port` or a bare v6
 * address; the port field counts only when the host names none.
 */
function hostAndPort(text, port) {
  const value = text.trim();
  const bracketed = value.match(/^\[([^\]]+)\](?::(\d+))?$/);
  if (bracketed) return { host: bracketed[1], port: bracketed[2] ? Number(bracketed[2]) : port };
  const named = value.match(/^([^:]+):(\d+)$/);
  if (named) return { host: named[1], port: Number(named[2]) };
  return { host: value, port };
}

/** The clusters, problems first, and the Discover form. */
function dashboardPage() {
  const list = h('div', { class: 'cluster-list', id: 'cluster-list' });
  const count = h('span', { class: 'muted' });
  const host = h('input', { type: 'text', name: 'host', placeholder: 'db1.example.com or db1:3306', required: true, 'aria-label': 'Host', autocomplete: 'off' });
  const port = h('input', { type: 'number', name: 'port', value: '3306', min: 1, max: 65535, required: true, 'aria-label': 'Port' });
  const submit = h('button', { type: 'submit', class: 'button primary' }, icon('search'), 'Discover');
  const form = h('form', { class: 'discover', 'aria-label': 'Discover an instance' },
    h('label', {}, 'Discover an instance'), host, h('span', { class: 'colon' }, ':'), port, submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const target = hostAndPort(host.value, Number(port.value));
    if (!target.host) return;
    // Shown as given, so what was discovered is what was typed.
    port.value = String(target.port);
    submit.disabled = true;
    await act({
      working: `Discovering ${target.host}:${target.port}…`,
      run: () => api.post('/api/v1/discover', target),
      done: (v) => {
        host.value = '';
        const version = v.facts ? ` (${v.facts.flavor === 'mysql' ? 'MySQL' : 'MariaDB'} ${v.facts.version.major}.${v.facts.version.minor}.${v.facts.version.patch})` : '';
        return `Discovered ${v.key}${version}, in cluster ${v.cluster}; its topology is being crawled.`;
      },
      failed: `${target.host}:${target.port} not discovered`,
    });
    submit.disabled = false;
  });
  const automatic = h('div', { class: 'automatic' });
  const loadAutomatic = () => api.get('/api/v1/recovery', { quiet: true }).then((r) => {
    const button = h('button', { class: 'button small' }, r.automatic ? 'Turn off…' : 'Turn on…');
    button.addEventListener('click', () => setAutomatic(!r.automatic));
    fill(automatic, r.automatic ? icon('ok') : icon('refused'), h('span', {}, 'Automatic recovery is '),
      h('strong', {}, r.automatic ? 'on' : 'off'), button);
    automatic.className = `automatic ${r.automatic ? 'auto-on' : 'auto-off'}`;
  }).catch(() => fill(automatic));

  const announcements = h('div', { class: 'alerts announcements' });
  const typing = h('input', { type: 'checkbox', name: 'type-to-confirm', checked: typeToConfirm() ? true : null });
  typing.addEventListener('change', () => localStorage.setItem(TYPE_TO_CONFIRM, typing.checked ? 'yes' : 'no'));
  const typingLabel = h('label', { class: 'preference muted small', title: 'A preference of this browser only' }, typing,
    ' Ask me to type the cluster\'s name before a switchover or a recovery');
  fill(main, h('section', { class: 'dashboard' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Clusters'), count, h('span', { class: 'spacer' }), automatic),
    announcements, form, list, typingLabel));
  loadAutomatic();

  // Thousands of clusters: the ones with problems first, a filter, and a page at a time.
  const filter = h('input', { type: 'search', name: 'filter', placeholder: 'Filter by cluster, alias or instance', 'aria-label': 'Filter clusters', autocomplete: 'off' });
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of clusters' });
  let first = 0;
  filter.addEventListener('input', () => { first = 0; update(); });
  list.before(h('div', { class: 'list-tools' }, filter, pager));
  let drawn = null;
  const update = () => {
    const wanted = filter.value.trim().toLowerCase();
    const shown = wanted ? state.summaries.filter((c) => [c.name, c.alias || '', ...(c.members || []), ...(c.formerly || [])]
      .some((text) => text.toLowerCase().includes(wanted))) : state.summaries;
    if (first >= shown.length) first = Math.max(0, Math.floor((shown.length - 1) / PAGE_SIZE) * PAGE_SIZE);
    const slice = shown.slice(first, first + PAGE_SIZE);
    const announced = state.summaries.filter((c) => c.unacknowledged);
    const signature = JSON.stringify([state.heard, wanted, first, shown.length, state.summaries.length, slice, announced.map((c) => c.unacknowledged)]);
    if (signature === drawn) return;
    drawn = signature;
    if (!state.heard) return fill(list, waiting());
    count.textContent = plural(state.summaries.length, 'cluster');
    fill(announcements, announced.map((c) => recoveryBanner(c.name, c.unacknowledged, null)));
    const go = (to) => { first = to; update(); list.scrollIntoView({ block: 'start' }); };
    fill(pager, shown.length > PAGE_SIZE ? [
      button('Previous', () => go(first - PAGE_SIZE), 'small', 'previous-page'),
      h('span', { class: 'muted' }, `${(first + 1).toLocaleString('en')}–${(first + slice.length).toLocaleString('en')} of ${shown.length.toLocaleString('en')}`),
      button('Next', () => go(first + PAGE_SIZE), 'small', 'next-page'),
    ] : wanted ? h('span', { class: 'muted' }, `${plural(shown.length, 'cluster')} match`) : null);
    const [previous, next] = pager.querySelectorAll('button');
    if (previous) previous.disabled = first === 0;
    if (next) next.disabled = first + PAGE_SIZE >= shown.length;
    if (!state.summaries.length) {
      return fill(list, h('div', { class: 'empty' }, h('p', {}, 'No clusters yet.'),
        h('p', { class: 'muted' }, 'Give pointsman one instance of a topology above (or as discovery.seeds in its configuration); it finds the rest.')));
    }
    if (!shown.length) return fill(list, h('div', { class: 'empty' }, h('p', {}, `No cluster matches "${filter.value.trim()}".`)));
    fill(list, slice.map((c) => {
      const worst = (c.problems || []).find((p) => !FINDING_PROBLEMS.includes(p.code)) || (c.findings || [])[0];
      return h('a', { class: `cluster-row sev-${c.health.status}`, href: `#/cluster/${encodeURIComponent(c.name)}`, dataset: { cluster: c.name } },
        h('span', { class: 'cluster-health' }, healthPill(c.health)),
        h('span', { class: 'cluster-name' }, c.name, c.alias && c.alias !== c.name ? h('span', { class: 'muted' }, ` (${c.alias})`) : null),
        h('span', { class: 'cluster-primary' }, h('span', { class: 'muted' }, 'primary '), h('span', { class: 'mono' }, c.primary)),
        h('span', { class: 'cluster-count' }, plural(c.instance_count, 'instance')),
        h('span', { class: 'cluster-note' },
          c.recovery_refused ? h('span', { class: 'refused-inline' }, icon('refused'), 'automatic recovery refused') : null,
          c.coverage && c.coverage.state !== 'on' && !c.recovery_refused ? coverageLabel(c.coverage) : null,
          worst ? h('span', { class: worst.explanation ? 'worst' : 'muted' }, worst.explanation ? `${words(worst.code)}: ${worst.instance} — ${worst.explanation}` : `${worst.instance}: ${worst.message}`) : null),
        icon('arrow'));
    }));
  };
  return { name: 'clusters', update, afterAction: loadAutomatic };
}

/** One cluster: its tree, live; what is wrong; routing; recent recoveries. */
function clusterPage(name, preselected = null) {
  let selected = preselected;
  let lastKeys = [];
  const head = h('div', { class: 'cluster-head' });
  const alerts = h('div', { class: 'alerts' });
  const canvas = h('div', { class: 'canvas', 'aria-label': 'Replication tree' });
  const panel = h('aside', { class: 'panel', hidden: true, 'aria-label': 'Instance' });
  const findings = h('section', { class: 'findings' });
  const routing = h('section', { class: 'routing' });
  const recent = h('section', { class: 'recent' });
  const hint = h('p', { class: 'hint' });
  const drawHint = (primaryDown) => fill(hint, icon('info'), primaryDown
    ? h('span', {}, h('strong', {}, 'The primary is down: Recover…'), ' promotes the replica you choose (or drag a replica onto the dead primary to choose it). A switchover needs a live primary. Click an instance for its details and other actions.')
    : h('span', {}, h('strong', {}, 'Drag a replica onto the primary'), ' to make it the primary (a graceful switchover); onto the primary\'s lower half, to move it below the primary instead. Drag it onto another instance to make it replicate from there (only the instances it can move to light up). Click an instance for its details and other actions, such as moving all its replicas.'));
  drawHint(false);
  fill(main, h('section', { class: 'cluster-view' },
    h('nav', { class: 'crumbs' }, h('a', { href: '#/' }, 'Clusters'), ' › ', h('span', {}, name)),
    head, alerts, hint, h('div', { class: 'workspace' }, canvas, panel), findings, routing, recent));

  const select = (key, byKeyboard = false) => {
    selected = selected === key ? null : key;
    drawn.tree = null;
    update();
    // From the keyboard, the focus follows into the panel that opened.
    if (byKeyboard && selected && !panel.hidden) panel.querySelector('h2').focus();
  };
  const drop = (dragged, target, onPrimary) => {
    const detail = state.details.get(name);
    if (!detail) return;
    const primaryDown = detail.problems.some((p) => RECOVERABLE.includes(p.code) && p.instance === detail.primary);
    if (onPrimary && primaryDown) recoverDialog(detail, dragged);
    else if (onPrimary) switchover(detail, dragged);
    else relocate(detail, dragged, target);
  };

  const drawn = { head: null, alerts: null, tree: null, panel: null, findings: null };
  const update = () => {
    const detail = state.details.get(name);
    if (!detail) {
      if (!state.heard) return fill(canvas, waiting());
      // Renamed by a recovery (a cluster without an alias is named after its primary)?
      // The agent keeps its former names; while this page watched, its instances say.
      const renamed = state.summaries.find((c) => (c.formerly || []).includes(name))
        || state.summaries.find((c) => c.name !== name && (c.members || []).some((k) => lastKeys.includes(k) && k !== lastKeys[0]));
      // Known, its detail on its way (the live stream follows the cluster in view).
      if (!renamed && state.summaries.some((c) => c.name === name)) return fill(canvas, waiting());
      if (renamed) {
        if (drawn.renamedTo === renamed.name) return; // said once; the page is moving
        drawn.renamedTo = renamed.name;
        notice('info', `Cluster ${name} is now called ${renamed.name} (formerly ${name}): a cluster without an alias is named after its primary, and a recovery changed it.`, { keep: true });
        location.replace(`#/cluster/${encodeURIComponent(renamed.name)}`);
        return;
      }
      for (const part of Object.keys(drawn)) drawn[part] = null;
      panel.hidden = true;
      fill(head, h('h1', {}, name));
      fill(alerts, h('div', { class: 'banner banner-warning' }, icon('warning'),
        h('span', {}, `No cluster named ${name} is known now. `, h('a', { href: '#/' }, 'See all clusters'), '.')));
      canvas.replaceChildren();
      return;
    }
    lastKeys = detail.instances.map((v) => v.key);
    if (selected && !instanceOf(detail, selected)) selected = null;
    if (routingPending) loadRouting();

    const headSig = JSON.stringify([detail.health, detail.primary, detail.alias, detail.instances.length, detail.problems, detail.coverage, detail.formerly]);
    if (headSig !== drawn.head) {
      drawn.head = headSig;
      const primaryDown = detail.problems.some((p) => RECOVERABLE.includes(p.code));
      const buttons = [];
      if (primaryDown) buttons.push(button('Recover…', () => recoverDialog(state.details.get(name)), 'danger', 'recover'));
      else if (detail.instances.length > 1) {
        buttons.push(button('What if…', () => whatIfDialog(name), '', 'what-if'));
        buttons.push(button('Switch over…', () => switchover(state.details.get(name), null), '', 'switchover'));
      }
      fill(head,
        h('h1', {}, name, detail.alias && detail.alias !== name ? h('span', { class: 'muted' }, ` (${detail.alias})`) : null),
        healthPill(detail.health, true),
        h('span', { class: 'muted' }, 'primary ', h('span', { class: 'mono' }, detail.primary), ` · ${plural(detail.instances.length, 'instance')}`,
          detail.formerly && detail.formerly.length ? h('span', { class: 'formerly' }, ` · formerly ${detail.formerly.join(', ')}`) : null),
        h('span', { class: 'spacer' }), buttons,
        h('div', { class: 'coverage-line' }, coverageLabel(detail.coverage, { why: true })));
      drawHint(detail.problems.some((p) => RECOVERABLE.includes(p.code) && p.instance === detail.primary));
    }

    const old = detail.unacknowledged && instanceOf(detail, detail.unacknowledged.failed);
    const alertSig = JSON.stringify([detail.problems, detail.recovery_refused, detail.unacknowledged, old && [old.role, old.unreachable_since]]);
    if (alertSig !== drawn.alerts) {
      drawn.alerts = alertSig;
      const banners = [recoveryBanner(name, detail.unacknowledged, detail)];
      if (detail.recovery_refused) {
        // The agent's refusal ends with what to type in a shell; here the buttons say it.
        const why = detail.coverage && detail.coverage.state !== 'on' && detail.recovery_refused.startsWith(detail.coverage.why)
          ? detail.coverage.why : detail.recovery_refused;
        banners.push(h('div', { class: 'banner banner-refused', role: 'alert', 'data-kind': 'recovery-refused' }, icon('refused'),
          h('span', {}, h('strong', {}, 'Automatic recovery refused: '), why),
          /\back\b|acknowledg/i.test(detail.recovery_refused) ? button('Acknowledge…', () => acknowledge(name), 'small') : null,
          /disabled|recovery enable/i.test(detail.recovery_refused) ? button('Turn it on…', () => setAutomatic(true), 'small') : null));
      }
      for (const problem of detail.problems.filter((p) => !FINDING_PROBLEMS.includes(p.code))) {
        const recoverable = RECOVERABLE.includes(problem.code);
        banners.push(h('div', { class: 'banner banner-problem', role: 'alert', 'data-code': problem.code }, icon('problem'),
          h('span', {}, h('strong', {}, `${words(problem.code)}: `), h('span', { class: 'mono' }, problem.instance), ` — ${problem.explanation}`),
          recoverable ? button('Recover…', () => recoverDialog(state.details.get(name)), 'danger small') : null));
      }
      fill(alerts, banners);
    }

    const treeSig = drawnState(detail, selected);
    if (treeSig !== drawn.tree) {
      drawn.tree = treeSig;
      drawTree(canvas, detail, { selected, select, drop });
    }

    const view = selected && instanceOf(detail, selected);
    const panelSig = JSON.stringify([selected, view && stableView(view), detail.primary]);
    if (panelSig !== drawn.panel) {
      drawn.panel = panelSig;
      drawPanel(panel, detail, selected, () => select(selected));
    }
    if (view) updateLiveFields(panel, view);

    const findSig = JSON.stringify(detail.findings);
    if (findSig !== drawn.findings) {
      drawn.findings = findSig;
      fill(findings, h('h2', {}, 'What is wrong'),
        detail.findings.length ? h('ul', { class: 'finding-list' }, detail.findings.map((f) => h('li', { class: `finding finding-${f.severity}` },
          h('span', { class: `sev-label sev-label-${f.severity}` }, icon(f.severity === 'problem' ? 'problem' : 'warning'), f.severity === 'problem' ? 'Problem' : 'Warning'),
          h('span', { class: 'mono strong' }, f.instance),
          h('span', { class: 'finding-text' }, f.message, f.detail ? h('code', { class: 'detail' }, f.detail) : null))))
          : h('p', { class: 'all-good' }, icon('ok'), 'Nothing wrong found: every instance answers and replicates.'));
    }
  };

  // Routing and recent recoveries are read on their own, less often. Only a cluster
  // with an alias is routed: for another one nothing is asked (the agent would say 404).
  let routingPending = false;
  const notRouted = () => fill(routing, h('h2', {}, 'Routing'), h('p', { class: 'muted not-routed' }, icon('info'),
    `Not routed: give ${name} a [[cluster]] alias in the agent's configuration to route it (ProxySQL, Consul, DNS).`));
  const loadRouting = async () => {
    const known = state.details.get(name);
    routingPending = !known;
    if (!known) return;
    if (!known.alias) return notRouted();
    try {
      const view = await api.get(`/api/v1/routes?cluster=${api.enc(name)}`, { quiet: true });
      drawRouting(routing, view, name);
    } catch (error) {
      if (error.status === 404) {
        notRouted();
      } else {
        fill(routing, h('h2', {}, 'Routing'), h('p', { class: 'inline-error' }, icon('problem'), error.message));
      }
    }
  };
  const loadRecent = async () => {
    try {
      const records = await api.get(`/api/v1/recoveries?cluster=${api.enc(name)}&limit=5`, { quiet: true });
      const unacked = records.filter((r) => !r.acknowledged_at && r.kind !== 'switchover');
      fill(recent, h('div', { class: 'section-head' }, h('h2', {}, 'Recent recoveries'),
        unacked.length ? button('Acknowledge…', () => acknowledge(name), 'small') : null,
        h('span', { class: 'spacer' }), h('a', { href: `#/recoveries?cluster=${encodeURIComponent(name)}` }, `All recoveries of ${name} →`)),
      records.length ? records.map((r) => recoveryCard(r, { compact: true })) : h('p', { class: 'muted' }, 'None yet.'));
    } catch (error) {
      fill(recent, h('h2', {}, 'Recent recoveries'), h('p', { class: 'inline-error' }, icon('problem'), error.message));
    }
  };
  loadRouting();
  loadRecent();
  // Live, the stream says when routes or recoveries change; polling, they are read
  // again every 5 s (reading the routes asks every backend).
  const timer = setInterval(() => { if (feed.polling) { loadRouting(); loadRecent(); } }, 5000);
  return {
    name: 'clusters', cluster: name, update,
    afterAction: () => { loadRouting(); loadRecent(); },
    onChanges: (changes, previous) => {
      if (changes.routes !== previous.routes) loadRouting();
      if (changes.recoveries !== previous.recoveries) loadRecent();
    },
    leave: () => clearInterval(timer),
  };
}

function button(label, onclick, kind = '', actionName = null) {
  const el = h('button', { type: 'button', class: `button ${kind}`, 'data-action': actionName }, label);
  el.addEventListener('click', onclick);
  return el;
}

/** "DeadPrimaryAndSomeReplicas" → "Dead primary and some replicas". */
function words(code) {
  const text = code.replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase();
  return text.charAt(0).toUpperCase() + text.slice(1).replace(/gtid/g, 'GTID');
}

/** An instance without what changes at every poll or write (shown in place instead). */
function stableView(view) {
  const facts = view.facts;
  const r = facts && facts.replication;
  return {
    ...view, last_seen: null, probe_millis: null, source_last_heard: null,
    facts: facts && {
      ...facts, gtid: null,
      replication: r && { ...r, received_heartbeats: null, received_gtids: null, read_source_log_pos: null, exec_source_log_pos: null, source_log_file: null, seconds_behind_source: null },
    },
  };
}

/** The panel's fields that change at every poll, by name. */
function liveFields(view) {
  const facts = view.facts;
  const r = facts && facts.replication;
  const g = facts && facts.gtid;
  const at = (iso) => (iso ? `${ago(iso)} (${clock(iso).slice(11)})` : 'never');
  let gtid = '';
  if (g && g.flavor === 'mysql') gtid = `${g.executed || '(empty)'}${g.mode && g.mode !== 'ON' ? ` — gtid_mode ${g.mode}` : ''}`;
  if (g && g.flavor === 'mariadb') gtid = `current_pos ${g.current_pos || '(empty)'}; binlog_pos ${g.binlog_pos || '(empty)'}`;
  return {
    last_seen: at(view.last_seen),
    source_last_heard: at(view.source_last_heard),
    probe_millis: view.probe_millis === null || view.probe_millis === undefined ? '' : `${view.probe_millis} ms`,
    gtid,
    received_gtids: r ? r.received_gtids || '(none)' : '',
    lag: r ? (r.seconds_behind_source === null ? 'unknown' : `${r.seconds_behind_source} s${r.sql_delay ? ` (configured delay ${r.sql_delay} s)` : ''}`) : '',
  };
}

function updateLiveFields(panel, view) {
  const fields = liveFields(view);
  for (const el of panel.querySelectorAll('[data-field]')) {
    const text = fields[el.dataset.field];
    if (el.textContent !== text) el.textContent = text;
  }
}

/** The selected instance: its facts in full and what can be done to it. */
function drawPanel(panel, detail, key, close) {
  const view = key && instanceOf(detail, key);
  if (!view) {
    panel.hidden = true;
    panel.replaceChildren();
    return;
  }
  panel.hidden = false;
  const facts = view.facts;
  const r = facts && facts.replication;
  const actions = [];
  const running = r && r.io_running === 'yes' && r.sql_running;
  if (view.role === 'replica' || view.role === 'intermediate_primary') {
    actions.push(button('Make primary…', () => switchover(detail, key), 'primary', 'make-primary'));
    actions.push(button('Move below…', () => relocateDialog(detail, key), '', 'relocate'));
    if (r) actions.push(button(running ? 'Stop replication…' : 'Start replication…', () => setReplication(key, !running, r.source), running ? '' : 'primary', running ? 'stop-replication' : 'start-replication'));
  }
  if (view.role === 'primary') {
    if (view.unreachable_since) actions.push(button('Recover…', () => recoverDialog(detail), 'danger', 'recover'));
    else if (detail.instances.length > 1) actions.push(button('Switch over…', () => switchover(detail, null), '', 'switchover'));
  }
  const node = nodeOf(detail.tree, key);
  if (node && node.replicas.length && !view.unreachable_since) {
    actions.push(button(node.replicas.length === 1 ? 'Move its replica…' : `Move its ${node.replicas.length} replicas…`, () => relocateReplicasDialog(detail, key), '', 'relocate-replicas'));
  }
  if (view.role === 'fenced_primary') actions.push(button('Re-attach…', () => reattach(detail, key), 'primary', 'reattach'));
  if (facts && view.role !== 'fenced_primary') {
    actions.push(button(facts.read_only ? 'Set read_only OFF…' : 'Set read_only ON…', () => setReadOnly(detail, key, !facts.read_only), '', 'read-only'));
  }
  actions.push(view.downtimed_until
    ? button('End downtime…', () => endDowntime(key), '', 'end-downtime')
    : button('Downtime…', () => downtime(key), '', 'downtime'));
  if (view.role !== 'primary') actions.push(button('Forget…', () => forget(key, view.fenced), 'quiet', 'forget'));

  const rows = [];
  const row = (label, value, cls) => { if (value !== null && value !== undefined && value !== '') rows.push(h('dt', {}, label), h('dd', { class: cls || '' }, value)); };
  row('Role', ROLE_LABEL[view.role]);
  if (facts && view.unreachable_since) {
    row('Facts below', `as last seen${view.last_seen ? ` at ${clock(view.last_seen).slice(11)}` : ''}: it does not answer now`, 'last-seen');
  }
  if (facts) {
    row('Version', `${facts.flavor === 'mysql' ? 'MySQL' : 'MariaDB'} ${facts.version.full}`);
    row('Server id', String(facts.server_id));
    row('Server UUID', facts.server_uuid, 'mono');
    row('read_only', `${facts.read_only ? 'ON' : 'OFF'}${facts.super_read_only === null || facts.super_read_only === undefined ? '' : ` (super_read_only ${facts.super_read_only ? 'ON' : 'OFF'})`}${view.unreachable_since ? ', when last seen' : ''}`);
    row('Binary log', facts.log_bin ? `${facts.binlog_format}, log_replica_updates ${facts.log_replica_updates ? 'ON' : 'OFF'}` : 'OFF');
    if (facts.gtid) row(facts.gtid.flavor === 'mysql' ? 'GTID executed' : 'GTID', h('span', { 'data-field': 'gtid' }), 'mono wrap');
    if (r) {
      row('Replicates from', r.source, 'mono');
      row('IO thread', `${r.io_running}${r.io_state ? ` — ${r.io_state}` : ''}`);
      row('SQL thread', r.sql_running ? 'yes' : 'no');
      row('Lag', h('span', { 'data-field': 'lag' }));
      if (r.last_io_errno) row('Last IO error', `${r.last_io_errno}: ${r.last_io_error}`, 'error-text');
      if (r.last_sql_errno) row('Last SQL error', `${r.last_sql_errno}: ${r.last_sql_error}`, 'error-text');
      row('Received GTIDs', h('span', { 'data-field': 'received_gtids' }), 'mono wrap');
      if (r.heartbeat_period) row('Heartbeat', `every ${r.heartbeat_period} s`);
      row('Source last heard', h('span', { 'data-field': 'source_last_heard' }));
    }
    const semi = facts.semi_sync;
    if (semi && (semi.source_enabled || semi.replica_enabled)) {
      row('Semi-sync', [semi.source_enabled ? `source ${semi.source_active ? 'active' : 'inactive'}, ${semi.source_clients} clients` : null,
        semi.replica_enabled ? `replica ${semi.replica_active ? 'active' : 'inactive'}` : null].filter(Boolean).join('; '));
    } else {
      row('Semi-sync', 'off (asynchronous)');
    }
    if (facts.replicas.length) row('Replicas', facts.replicas.join(', '), 'mono wrap');
  }
  if (view.unreachable_since) row('Unreachable since', since(view.unreachable_since), 'error-text');
  if (view.last_error) row('Last error', view.last_error, 'error-text wrap');
  row('Last seen', h('span', { 'data-field': 'last_seen' }));
  row('Last probe took', h('span', { 'data-field': 'probe_millis' }));
  if (view.downtimed_until) row('Downtimed until', clock(view.downtimed_until));
  const closeButton = h('button', { class: 'icon-button', title: 'Close', 'aria-label': 'Close' }, icon('close'));
  closeButton.addEventListener('click', close);
  const badges = badgesOf(view);
  fill(panel,
    h('div', { class: 'panel-head' }, h('span', { class: 'role' }, ROLE_LABEL[view.role]), h('span', { class: 'spacer' }), closeButton),
    h('h2', { class: 'mono', tabindex: -1 }, key),
    badges.length ? h('div', { class: 'badges' }, badges.map((b) => h('span', { class: `badge badge-${b.kind}`, title: b.title }, icon(b.icon), b.text))) : null,
    view.findings.length ? h('ul', { class: 'panel-findings' }, view.findings.filter((f) => !(view.fenced && f.code === 'PrimaryReadOnly')).map((f) => h('li', {}, f.message, f.detail ? h('code', { class: 'detail' }, f.detail) : null))) : null,
    h('div', { class: 'panel-actions' }, actions),
    h('dl', { class: 'facts' }, rows));
}

/** An endpoint (`{key, addresses}`) or a plain key, as `host:port`. */
const keyOf = (e) => (typeof e === 'string' ? e : e.key);

function drawRouting(section, view, name) {
  const route = view.clusters.find((c) => c.cluster === name);
  const parts = [h('h2', {}, 'Routing')];
  if (route) {
    parts.push(h('div', { class: 'route-summary' },
      h('div', {}, h('span', { class: 'label' }, 'Writer'), h('span', { class: 'mono strong' }, route.writer ? route.writer.key : 'none (withdrawn)')),
      h('div', {}, h('span', { class: 'label' }, 'Readers'), h('span', { class: 'mono' }, route.readers.map(keyOf).join(', ') || 'none')),
      route.standby.length ? h('div', {}, h('span', { class: 'label' }, 'Standby'), h('span', { class: 'mono' }, route.standby.map(keyOf).join(', '))) : null,
      route.fenced.length ? h('div', {}, h('span', { class: 'label' }, 'Fenced'), h('span', { class: 'mono' }, route.fenced.map(keyOf).join(', ')), h('span', { class: 'muted' }, ' (named by no backend)')) : null,
      h('div', { class: 'muted small' }, `epoch ${route.epoch}${route.recovery_id ? ` · recovery ${route.recovery_id}` : ''}${route.decided_at ? ` · decided ${clock(route.decided_at)}` : ''}`)));
  }
  if (!view.backends.length) parts.push(h('p', { class: 'muted' }, 'No routing backends are configured.'));
  for (const backend of view.backends) {
    const st = backend.status;
    const inspections = backend.inspections.filter((i) => i.cluster === name);
    const drift = inspections.some((i) => !i.in_sync);
    let kind; let label;
    if (backend.error) { kind = 'problem'; label = 'Unreachable'; }
    else if (st.failing_since) { kind = 'problem'; label = `Failing since ${clock(st.failing_since).slice(11)}`; }
    else if (drift) { kind = 'warning'; label = 'Drift'; }
    else { kind = 'ok'; label = 'In sync'; }
    parts.push(h('div', { class: `backend backend-${kind}` },
      h('div', { class: 'backend-head' },
        h('span', { class: `badge badge-${kind === 'ok' ? 'ok' : kind}` }, icon(kind === 'ok' ? 'ok' : kind === 'warning' ? 'warning' : 'problem'), label),
        h('span', { class: 'mono strong' }, st.backend),
        st.last_promotion_lag_ms !== null && st.last_promotion_lag_ms !== undefined ? h('span', { class: 'muted' }, `${st.last_promotion_lag_ms} ms behind the last promotion`) : null,
        st.last_success ? h('span', { class: 'muted' }, `last applied ${clock(st.last_success).slice(11)}`) : null),
      backend.error ? h('p', { class: 'inline-error' }, backend.error) : null,
      st.last_error && !backend.error ? h('p', { class: 'inline-error' }, st.last_error) : null,
      st.persist_error ? h('p', { class: 'inline-error', 'data-kind': 'not-saved' },
        `Not saved: traffic follows the routes, but they would not survive a restart of ${st.backend}: ${st.persist_error} (retrying)`) : null,
      inspections.map((i) => diffTable(i))));
  }
  fill(section, parts);
}

/** What a backend should say vs what it says now, line by line; differences marked. */
function diffTable(inspection) {
  const should = new Set(inspection.should);
  const now = new Set(inspection.now);
  const lines = [...new Set([...inspection.should, ...inspection.now])];
  return h('table', { class: `diff ${inspection.in_sync ? 'in-sync' : 'drift'}` },
    h('thead', {}, h('tr', {}, h('th', {}, 'Should say'), h('th', {}, 'Says now'))),
    h('tbody', {}, lines.map((line) => {
      const both = should.has(line) && now.has(line);
      return h('tr', { class: both ? '' : 'differs' },
        h('td', { class: 'mono' }, should.has(line) ? line : h('span', { class: 'missing' }, '—')),
        h('td', { class: 'mono' }, now.has(line) ? line : h('span', { class: 'missing' }, icon('warning'), 'missing')));
    })));
}

const STATUS_ICON = { succeeded: 'ok', failed: 'problem', aborted: 'refused', running: 'info', interrupted: 'warning' };

function recoveryCard(r, { compact, open } = {}) {
  const took = r.finished_at ? Date.parse(r.finished_at) - Date.parse(r.started_at) : null;
  const status = r.status;
  return h('article', { class: `recovery recovery-${status}` },
    h('div', { class: 'recovery-head' },
      h('span', { class: `badge badge-status-${status}` }, icon(STATUS_ICON[status] || 'info'), status),
      h('span', { class: 'strong' }, `${r.kind} of ${r.cluster}`),
      h('span', { class: 'muted' }, [r.problem.toLowerCase() === r.kind.toLowerCase() ? null : r.problem,
        r.trigger === 'automatic' ? 'automatic' : `by ${r.trigger}`].filter(Boolean).join(' · ')),
      h('span', { class: 'spacer' }),
      h('span', { class: 'muted' }, clock(r.started_at), took !== null ? ` · ${millis(took)}` : '')),
    h('div', { class: 'recovery-what' }, h('span', { class: 'mono' }, r.failed), ' ', icon('arrow'), ' ',
      h('span', { class: 'mono strong' }, r.successor || 'no successor'),
      r.acknowledged_at ? h('span', { class: 'muted' }, ` · acknowledged by ${r.acknowledged_by || '?'} ${clock(r.acknowledged_at)}${r.ack_comment ? `: ${r.ack_comment}` : ''}`)
        : r.kind === 'switchover' ? null : [h('span', { class: 'unacked' }, ' · not acknowledged'),
          compact ? null : button('Acknowledge…', () => acknowledge(r.cluster), 'small')]),
    h('details', { open: open || (!compact && status !== 'succeeded') ? true : null },
      h('summary', {}, `${plural(r.steps.length, 'step')}`, h('span', { class: 'muted' }, ` · id ${r.id}`)),
      stepsTable(r)));
}

/** A filter of the clusters known now, plus the one asked for. */
function clusterFilter(current, onchange) {
  const names = new Set(state.summaries.map((c) => c.name));
  if (current) names.add(current);
  const select = h('select', { 'aria-label': 'Cluster' }, h('option', { value: '' }, 'All clusters'),
    [...names].sort().map((n) => h('option', { value: n, selected: n === current }, n)));
  select.addEventListener('change', () => onchange(select.value));
  return select;
}

function recoveriesPage(cluster) {
  const list = h('div', { class: 'recovery-list' }, waiting());
  const go = (value) => { location.hash = `#/recoveries${value ? `?cluster=${encodeURIComponent(value)}` : ''}`; };
  const head = h('div', { class: 'page-head' });
  const drawHead = () => fill(head, h('h1', {}, 'Recoveries'), h('span', { class: 'muted' }, 'failovers, switchovers and re-pointings, newest first'),
    h('span', { class: 'spacer' }), cluster ? button('Acknowledge…', () => acknowledge(cluster), 'small') : null, clusterFilter(cluster, go));
  drawHead();
  fill(main, h('section', { class: 'recoveries-page' }, head, list));
  const load = async () => {
    try {
      const records = await api.get(`/api/v1/recoveries?limit=100${cluster ? `&cluster=${api.enc(cluster)}` : ''}`, { quiet: true });
      fill(list, records.length ? records.map((r, i) => recoveryCard(r, { open: i === 0 })) : h('p', { class: 'muted' }, 'No recoveries recorded.'));
    } catch (error) {
      fill(list, h('p', { class: 'inline-error' }, icon('problem'), error.message));
    }
  };
  load();
  let known = state.summaries.length;
  // Live, read again when the stream says the recoveries changed; polling, every 5 s.
  const timer = setInterval(() => { if (feed.polling) load(); }, 5000);
  return {
    name: 'recoveries', afterAction: load,
    update: () => { if (state.summaries.length !== known) { known = state.summaries.length; drawHead(); } },
    onChanges: (changes, previous) => {
      if (changes.recoveries !== previous.recoveries) load();
    },
    leave: () => clearInterval(timer),
  };
}

function auditPage(cluster) {
  const body = h('tbody', {});
  const table = h('table', { class: 'audit' }, h('thead', {}, h('tr', {}, ['When', 'Who', 'What', 'Cluster', 'Instance', 'Message'].map((t) => h('th', {}, t)))), body);
  const go = (value) => { location.hash = `#/audit${value ? `?cluster=${encodeURIComponent(value)}` : ''}`; };
  const head = h('div', { class: 'page-head' });
  const drawHead = () => fill(head, h('h1', {}, 'Audit log'), h('span', { class: 'muted' }, 'everything pointsman and its operators did, newest first'),
    h('span', { class: 'spacer' }), clusterFilter(cluster, go));
  drawHead();
  const status = h('div', {}, waiting());
  fill(main, h('section', { class: 'audit-page' }, head, status, h('div', { class: 'table-scroll' }, table)));
  const load = async () => {
    try {
      const records = await api.get(`/api/v1/audit?limit=300${cluster ? `&cluster=${api.enc(cluster)}` : ''}`, { quiet: true });
      status.replaceChildren(records.length ? '' : h('p', { class: 'muted' }, 'Nothing recorded.'));
      fill(body, records.map((a) => h('tr', {},
        h('td', { class: 'nowrap' }, clock(a.at)), h('td', {}, a.actor), h('td', { class: 'nowrap strong' }, a.action),
        h('td', {}, a.cluster ? h('a', { href: `#/cluster/${encodeURIComponent(a.cluster)}` }, a.cluster) : ''),
        h('td', { class: 'mono nowrap' }, a.instance || ''), h('td', { class: 'message' }, a.message))));
    } catch (error) {
      status.replaceChildren(h('p', { class: 'inline-error' }, icon('problem'), error.message));
    }
  };
  load();
  const timer = setInterval(load, 5000);
  let known = state.summaries.length;
  return {
    name: 'audit', afterAction: load, leave: () => clearInterval(timer),
    update: () => { if (state.summaries.length !== known) { known = state.summaries.length; drawHead(); } },
  };
}

/** What is wrong anywhere: every problem and finding of every cluster, worst first. */
function problemsPage() {
  const body = h('tbody', {});
  const status = h('div', {}, waiting());
  fill(main, h('section', { class: 'problems-page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Problems'), h('span', { class: 'muted' }, 'everything wrong in every cluster, problems first')),
    status, h('table', { class: 'problems-table' },
      h('thead', {}, h('tr', {}, ['Severity', 'Cluster', 'Instance', 'What'].map((t) => h('th', {}, t)))), body)));
  // The summaries carry every cluster's problems and findings.
  let drawn = null;
  const update = () => {
    const rows = [];
    for (const d of state.summaries) {
      for (const p of (d.problems || []).filter((x) => !FINDING_PROBLEMS.includes(x.code))) {
        rows.push({ rank: 3, severity: 'problem', cluster: d.name, instance: p.instance, text: `${words(p.code)}: ${p.explanation}` });
      }
      if (d.recovery_refused) rows.push({ rank: 2, severity: 'warning', cluster: d.name, instance: d.primary, text: `Automatic recovery refused: ${d.recovery_refused}` });
      for (const f of d.findings || []) rows.push({ rank: f.severity === 'problem' ? 3 : 1, severity: f.severity, cluster: d.name, instance: f.instance, text: f.message });
    }
    rows.sort((a, b) => (b.rank - a.rank) || a.cluster.localeCompare(b.cluster) || a.instance.localeCompare(b.instance));
    const signature = JSON.stringify([state.heard, rows]);
    if (signature === drawn) return;
    drawn = signature;
    if (!state.heard) return;
    status.replaceChildren(rows.length ? '' : h('p', { class: 'all-good' }, icon('ok'), `Nothing wrong in ${plural(state.summaries.length, 'cluster')}.`));
    fill(body, rows.map((r) => h('tr', { class: `finding-${r.severity}`, dataset: { cluster: r.cluster } },
      h('td', {}, h('span', { class: `sev-label sev-label-${r.severity}` }, icon(r.severity === 'problem' ? 'problem' : 'warning'), r.severity === 'problem' ? 'Problem' : 'Warning')),
      h('td', {}, h('a', { href: `#/cluster/${encodeURIComponent(r.cluster)}` }, r.cluster)),
      h('td', { class: 'mono' }, h('a', { href: `#/cluster/${encodeURIComponent(r.cluster)}?select=${encodeURIComponent(r.instance)}` }, r.instance)),
      h('td', { class: 'what' }, r.text))));
  };
  return { name: 'problems', update };
}

/** The header's count of clusters with problems, and the names the search offers. */
function updateHeader() {
  const troubled = state.summaries.filter((c) => c.health.status === 'problem').length;
  const count = document.getElementById('problem-count');
  count.hidden = troubled === 0;
  count.textContent = String(troubled);
  const names = [...state.summaries.map((c) => c.name), ...state.summaries.flatMap((c) => c.members || [])];
  const list = document.getElementById('known-names');
  const signature = names.join(' ');
  if (list.dataset.names !== signature) {
    list.dataset.names = signature;
    fill(list, [...new Set(names)].map((n) => h('option', { value: n })));
  }
}

// An instance (host:port) or a cluster by name: the cluster's page, the instance chosen.
document.getElementById('search').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = event.target.elements.find;
  const wanted = input.value.trim();
  if (!wanted) return;
  if (state.summaries.some((c) => c.name === wanted)) {
    location.hash = `#/cluster/${encodeURIComponent(wanted)}`;
    input.value = '';
    return;
  }
  try {
    const view = await api.get(`/api/v1/instances/${api.enc(wanted)}`, { quiet: true });
    location.hash = `#/cluster/${encodeURIComponent(view.cluster)}?select=${encodeURIComponent(view.key)}`;
    input.value = '';
  } catch (error) {
    notice('error', `${wanted}: ${error.message}`);
  }
});

// ---------------------------------------------------------------- routing

function route() {
  if (page && page.leave) page.leave();
  // Results of the page left behind go with it; errors stay until dismissed.
  for (const el of noticesEl.querySelectorAll('.notice-ok:not([data-keep]), .notice-info:not([data-keep])')) el.remove();
  const hash = location.hash.replace(/^#/, '') || '/';
  const [where, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  const parts = where.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'cluster' && parts[1]) page = clusterPage(parts[1], params.get('select'));
  else if (parts[0] === 'recoveries') page = recoveriesPage(params.get('cluster') || '');
  else if (parts[0] === 'audit') page = auditPage(params.get('cluster') || '');
  else if (parts[0] === 'problems') page = problemsPage();
  else page = dashboardPage();
  for (const link of document.querySelectorAll('[data-nav]')) {
    link.classList.toggle('current', link.dataset.nav === page.name);
  }
  document.title = page.cluster ? `${page.cluster} · pointsman` : 'pointsman';
  window.scrollTo(0, 0);
  page.update();
  feed.follow();
  feed.nudge();
}

window.addEventListener('hashchange', route);
// Relative times ("12 s ago") move on without redrawing anything else.
setInterval(() => {
  for (const el of document.querySelectorAll('[data-ago]')) {
    const text = ago(el.dataset.ago);
    el.textContent = el.textContent.startsWith(' · data from') ? ` · data from ${text}` : text;
  }
}, 1000);

/** With several agents ([ha]): which one leads, and whether this page's agent does. */
async function showLeader() {
  const el = document.getElementById('leader');
  let health;
  try { health = await api.get('/api/v1/health', { quiet: true }); } catch { return; }
  if (!health.leader) { el.hidden = true; return; }
  el.hidden = false;
  el.title = `The agent that acts: ${health.leader.name} (${health.leader.api})`;
  fill(el, health.role === 'leader'
    ? 'This agent leads'
    : h('span', {}, 'Follower · leader: ', h('a', { href: `${health.leader.api}/` }, health.leader.name)));
}

route();
feed.start();
showConnection();
showLeader();
setInterval(showLeader, 5000);
