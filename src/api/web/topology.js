// One cluster drawn as a tree, left to right: the primary at the left, each replica to
// the right of its source, SVG curves between them. Each instance is a box a person can
// read from across the room: role, host:port, flavour and version, read_only, binlog
// format, lag, replication threads, semi-sync, and a badge per problem — colour, icon
// and words together, never colour alone.
//
// Dragging a replica box onto another box asks to act (the page decides what and
// confirms first): onto the primary → switchover, onto any other instance → relocate.
// Pointer events, not HTML5 drag and drop: they work the same with a mouse, a pen and a
// finger, and let the page show what a drop would do before it happens.

import { h, s, icon, ago, clock } from './dom.js';

/** How an instance's role reads in its box. */
export const ROLE_LABEL = {
  primary: 'Primary',
  intermediate_primary: 'Intermediate primary',
  replica: 'Replica',
  fenced_primary: 'Old primary · fenced',
};

/** Per finding code: the badge's icon and its words. */
const FINDING_BADGES = {
  Unreachable: ['unreachable', 'Unreachable'],
  ReplicationIoError: ['broken', 'Replication broken (IO)'],
  ReplicationSqlError: ['broken', 'Replication broken (SQL)'],
  ReplicationStopped: ['stopped', 'Replication stopped'],
  ReplicationLagging: ['lag', 'Lagging'],
  ErrantGtid: ['errant', 'Errant GTID'],
  PrimaryReadOnly: ['fenced', 'Primary is read_only'],
  ReplicaWritable: ['warning', 'Replica writable'],
  BinlogFormatMismatch: ['warning', 'Binlog format differs'],
  VersionMismatch: ['warning', 'Version differs'],
  LogReplicaUpdatesOff: ['warning', 'log_replica_updates OFF'],
  BinlogOff: ['warning', 'Binlog off'],
  SlowHeartbeat: ['warning', 'Slow heartbeat'],
  FencedDetached: ['fenced', 'Back, detached: re-attach or forget'],
  SemiSyncFellBack: ['warning', 'Semi-sync fell back to async'],
  SemiSyncMayFallBack: ['warning', 'Semi-sync timeout short'],
};

/** The instance's worst state: 'problem', 'warning' or 'ok'. */
export function severityOf(view) {
  const findings = view.findings.filter((f) => !(view.fenced && f.code === 'PrimaryReadOnly'));
  if (findings.some((f) => f.severity === 'problem')) return 'problem';
  if (findings.length) return 'warning';
  return 'ok';
}

/** Replication lag in seconds, or null when unknown or not a replica. */
export function lagOf(view) {
  const replication = view.facts && view.facts.replication;
  if (!replication) return null;
  return replication.seconds_behind_source;
}

/** The badges of one instance, most serious first: [{kind, icon, text, title}]. */
export function badgesOf(view) {
  const badges = [];
  for (const finding of view.findings) {
    // Read-only is what fencing is for: not a problem on a fenced old primary.
    if (view.fenced && finding.code === 'PrimaryReadOnly') continue;
    const [name, label] = FINDING_BADGES[finding.code] || ['warning', finding.code];
    let text = label;
    if (finding.code === 'ReplicationLagging' && lagOf(view) !== null) text = `${label} ${lagOf(view)} s`;
    if (finding.code === 'Unreachable' && view.unreachable_since) text = `${label} since ${clock(view.unreachable_since).slice(11)}`;
    let title = finding.message;
    if (finding.code === 'ErrantGtid' && finding.detail) title = `Errant GTIDs: ${finding.detail}\n${finding.message}`;
    else if (finding.detail) title = `${finding.message}\n${finding.detail}`;
    const same = badges.find((b) => b.code === finding.code && b.text === text);
    if (same) same.title += `\n${title}`; // IO and SQL thread both stopped: one badge
    else badges.push({ kind: finding.severity, icon: name, text, title, code: finding.code });
  }
  if (view.fenced) {
    badges.push({ kind: 'fenced', icon: 'fenced', text: 'Fenced', title: 'An old primary replaced by a failover: pointsman keeps it read_only until it is re-attached' });
  }
  if (view.downtimed_until) {
    badges.push({
      kind: 'downtime', icon: 'downtime', text: `Downtimed until ${clock(view.downtimed_until).slice(11, 16)}`,
      title: `Out of automatic recovery until ${clock(view.downtimed_until)}`,
    });
  }
  return badges;
}

function badge(b) {
  return h('span', { class: `badge badge-${b.kind}`, title: b.title, 'data-code': b.code || b.kind }, icon(b.icon), h('span', {}, b.text));
}

/** A thread's state as a small labelled chip: "IO yes", "SQL no". */
function thread(name, state) {
  const kind = state === 'yes' ? 'ok' : state === 'connecting' ? 'warning' : 'problem';
  return h('span', { class: `thread thread-${kind}`, title: `${name} thread: ${state}` }, `${name} ${state}`);
}

function semiSyncText(facts, role) {
  const semi = facts.semi_sync;
  if (!semi) return null;
  if (role === 'primary' && semi.source_enabled) {
    return semi.source_active ? `semi-sync, ${semi.source_clients} ack${semi.source_clients === 1 ? '' : 's'}` : 'semi-sync inactive';
  }
  if (semi.replica_enabled) return semi.replica_active ? 'semi-sync' : 'semi-sync inactive';
  return 'async';
}

/** One instance's box. */
export function instanceBox(view, { draggable, selected }) {
  const facts = view.facts;
  const severity = severityOf(view);
  const unreachable = !!view.unreachable_since;
  const classes = ['inst', `sev-${severity}`, `role-${view.role}`];
  if (unreachable) classes.push('unreachable');
  if (view.fenced) classes.push('fenced');
  if (view.downtimed_until) classes.push('downtimed');
  if (draggable) classes.push('draggable');
  if (selected) classes.push('selected');

  const roleIcon = view.role === 'primary' ? icon('primary') : view.role === 'fenced_primary' ? icon('fenced') : null;
  // An instance that does not answer has no read_only now: what it had when last seen
  // ("writable" on a fenced old primary) would contradict what the box says.
  const ro = facts && !unreachable ? (facts.read_only ? h('span', { class: 'pill pill-ro', title: 'read_only ON' }, 'read_only') : h('span', { class: `pill ${view.role === 'primary' ? 'pill-rw' : 'pill-rw-warn'}`, title: 'read_only OFF: takes writes' }, 'writable')) : null;
  const header = h('div', { class: 'inst-head' },
    h('span', { class: 'role' }, roleIcon, ROLE_LABEL[view.role] || view.role),
    h('span', { class: 'spacer' }), ro);

  const lines = [];
  if (facts) {
    const flavour = facts.flavor === 'mysql' ? 'MySQL' : 'MariaDB';
    const gtid = facts.gtid && (facts.gtid.flavor === 'mariadb' || String(facts.gtid.mode).toUpperCase() === 'ON') ? 'GTID' : 'no GTID';
    lines.push(h('div', { class: 'inst-meta' }, `${flavour} ${facts.version.major}.${facts.version.minor}.${facts.version.patch}`, sep(), facts.log_bin ? facts.binlog_format : 'binlog off', sep(), gtid, sep(), semiSyncText(facts, view.role)));
    // What a server that does not answer said before: labelled so, never shown as now.
    if (unreachable) lines.push(h('div', { class: 'inst-meta last-seen' }, 'facts when last seen'));
    const r = facts.replication;
    if (r && !unreachable) {
      const lag = r.seconds_behind_source;
      const lagText = lag === null || lag === undefined ? 'lag unknown' : `lag ${lag} s`;
      lines.push(h('div', { class: 'inst-repl' }, thread('IO', r.io_running), thread('SQL', r.sql_running ? 'yes' : 'no'),
        h('span', { class: `lag ${view.findings.some((f) => f.code === 'ReplicationLagging') ? 'lag-high' : ''}` }, lagText),
        r.sql_delay ? h('span', { class: 'muted' }, `delay ${r.sql_delay} s`) : null));
    }
  } else {
    lines.push(h('div', { class: 'inst-meta muted' }, unreachable ? 'never answered' : 'not probed yet'));
  }
  const badges = badgesOf(view);
  return h('div', {
    class: classes.join(' '), tabindex: 0, role: 'button',
    'aria-label': `${ROLE_LABEL[view.role]} ${view.key}${badges.length ? ': ' + badges.map((b) => b.text).join(', ') : ''}`,
    dataset: { key: view.key, role: view.role },
  },
  header,
  h('div', { class: 'inst-key' }, view.key),
  lines,
  badges.length ? h('div', { class: 'badges' }, badges.map(badge)) : null,
  h('div', { class: 'drop-hint', 'aria-hidden': 'true' }));
}

function sep() {
  return h('span', { class: 'sep' }, ' · ');
}

/** The parts of a cluster that change what is drawn (not poll times or counters). */
export function drawnState(detail, selected) {
  return JSON.stringify([selected, detail.tree, detail.instances.map((v) => [
    v.key, v.role, v.fenced, v.downtimed_until, v.unreachable_since,
    // An unreachable instance's message counts the seconds, and MySQL's replication
    // error counts its reconnect attempts ("This was attempt 7/86400"): neither is a
    // reason to redraw (once a second, under an operator's pointer).
    v.findings.map((f) => [f.code, f.severity, f.code === 'Unreachable' ? null : steadyMessage(f.message), f.detail]),
    v.facts && [v.facts.flavor, v.facts.version.full, v.facts.read_only, v.facts.log_bin, v.facts.binlog_format,
      v.facts.semi_sync, v.facts.replicas.length, v.facts.gtid && v.facts.gtid.mode,
      v.facts.replication && [v.facts.replication.source, v.facts.replication.io_running, v.facts.replication.sql_running,
        v.facts.replication.seconds_behind_source, v.facts.replication.sql_delay]],
  ])]);
}

/** A finding's message without the counters that change while nothing else does. */
function steadyMessage(message) {
  return message && message.replace(/attempt \d+\/\d+/g, 'attempt n');
}

/**
 * Draws `detail`'s tree into `canvas` (replacing what was there). `actions` get
 * called on a click (`select(key)`) and on a drop (`drop(dragged, target)`).
 */
export function drawTree(canvas, detail, { selected, select, drop }) {
  const views = new Map(detail.instances.map((v) => [v.key, v]));
  const placed = new Set();
  const edges = [];

  const subtree = (node) => {
    placed.add(node.key);
    const view = views.get(node.key) || { key: node.key, role: 'replica', findings: [], facts: null };
    const draggable = view.role === 'replica' || view.role === 'intermediate_primary';
    const box = instanceBox(view, { draggable, selected: selected === node.key });
    const children = node.replicas.map((child) => {
      edges.push([node.key, child.key, views.get(child.key)]);
      return subtree(child);
    });
    return h('div', { class: 'subtree' }, h('div', { class: 'cell' }, box), children.length ? h('div', { class: 'children' }, children) : null);
  };

  const tree = h('div', { class: 'tree' }, subtree(detail.tree));
  const outside = detail.instances.filter((v) => !placed.has(v.key));
  const svg = s('svg', { class: 'edges', 'aria-hidden': 'true' });
  const board = h('div', { class: 'board' }, svg, tree,
    outside.length ? h('div', { class: 'outside' },
      h('div', { class: 'outside-title' }, icon('fenced'), 'Outside the replication tree'),
      h('div', { class: 'outside-list' }, outside.map((v) => instanceBox(v, { draggable: false, selected: selected === v.key })))) : null);
  canvas.replaceChildren(board);

  const drawEdges = () => drawEdgesNow(board, svg, edges);
  requestAnimationFrame(drawEdges);
  if (canvas._observer) canvas._observer.disconnect();
  canvas._observer = new ResizeObserver(drawEdges);
  canvas._observer.observe(board);

  enableDrag(board, detail, { select, drop });
}

function drawEdgesNow(board, svg, edges) {
  // Measured without the old drawing: an edge layer as large as the board was before
  // would keep the board that large (scrollbars with nothing to scroll to).
  svg.setAttribute('width', 0);
  svg.setAttribute('height', 0);
  const origin = board.getBoundingClientRect();
  svg.setAttribute('width', board.scrollWidth);
  svg.setAttribute('height', board.scrollHeight);
  svg.replaceChildren();
  for (const [from, to, view] of edges) {
    const a = board.querySelector(`.inst[data-key="${CSS.escape(from)}"]`);
    const b = board.querySelector(`.inst[data-key="${CSS.escape(to)}"]`);
    if (!a || !b) continue;
    const ra = a.getBoundingClientRect();
    const rb = b.getBoundingClientRect();
    const x1 = ra.right - origin.left;
    const y1 = ra.top + ra.height / 2 - origin.top;
    const x2 = rb.left - origin.left;
    const y2 = rb.top + rb.height / 2 - origin.top;
    const dx = Math.max(24, (x2 - x1) / 2);
    const state = edgeState(view);
    svg.append(s('path', { class: `edge edge-${state}`, d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2 - 6},${y2}` }));
    svg.append(s('path', { class: `edge-head edge-${state}`, d: `M${x2 - 8},${y2 - 5} L${x2},${y2} L${x2 - 8},${y2 + 5} z` }));
  }
}

/** How a replica's link to its source looks: ok, lagging or broken. */
function edgeState(view) {
  if (!view) return 'ok';
  const codes = view.findings.map((f) => f.code);
  if (view.unreachable_since || codes.some((c) => ['ReplicationIoError', 'ReplicationSqlError', 'ReplicationStopped'].includes(c))) return 'broken';
  if (codes.includes('ReplicationLagging')) return 'lagging';
  return 'ok';
}

const DRAG_THRESHOLD = 6;

/** Pointer-driven drag of replica boxes onto other boxes; a click without motion selects. */
function enableDrag(board, detail, { select, drop }) {
  board.addEventListener('keydown', (event) => {
    const box = event.target.closest && event.target.closest('.inst');
    if (box && (event.key === 'Enter' || event.key === ' ')) {
      event.preventDefault();
      select(box.dataset.key, true);
    }
  });
  board.addEventListener('pointerdown', (event) => {
    const box = event.target.closest('.inst');
    if (!box || event.button !== 0) return;
    const startX = event.clientX;
    const startY = event.clientY;
    let ghost = null;
    let target = null;
    const dragged = box.dataset.key;
    const canDrag = box.classList.contains('draggable');
    const view = detail.instances.find((v) => v.key === dragged);
    const source = view && view.facts && view.facts.replication ? view.facts.replication.source : null;
    // Its own replicas (a loop) and its source (nothing would change) are no targets, nor
    // is a dead replica or a fenced old primary.
    const subtree = box.closest('.subtree');
    const below = new Set([...(subtree ? subtree.querySelectorAll('.inst') : [])].filter((b) => b !== box).map((b) => b.dataset.key));
    const valid = (other) => other !== box && other.dataset.role !== 'fenced_primary' && !below.has(other.dataset.key)
      && (other.dataset.role === 'primary' || (other.dataset.key !== source && !other.classList.contains('unreachable')));
    // A live primary that is not already its source offers two things: its upper half
    // makes the replica the primary, its lower half moves the replica below it.
    const twoZones = (other) => other.dataset.role === 'primary' && !other.classList.contains('unreachable') && other.dataset.key !== source;

    const targetAt = (x, y) => {
      const el = document.elementFromPoint(x, y);
      const over = el && el.closest('.inst');
      if (!over || !board.contains(over) || !valid(over)) return null;
      return over;
    };
    /** What dropping at (x, y) on `over` does: 'relocate', 'switchover' or 'recover'. */
    const operationAt = (over, y) => {
      if (over.dataset.role !== 'primary') return ['relocate', `Move ${dragged} below ${over.dataset.key}`];
      if (over.classList.contains('unreachable')) return ['recover', `Recover: promote ${dragged}`];
      const r = over.getBoundingClientRect();
      if (twoZones(over) && y > r.top + r.height / 2) return ['relocate', `Move ${dragged} below the primary (no switchover)`];
      return ['switchover', `Make ${dragged} the primary (switchover)`];
    };
    const move = (e) => {
      if (!canDrag) return;
      if (!ghost) {
        if (Math.hypot(e.clientX - startX, e.clientY - startY) < DRAG_THRESHOLD) return;
        ghost = h('div', { class: 'ghost', 'aria-hidden': 'true' },
          h('div', { class: 'ghost-key' }, dragged),
          h('div', { class: 'ghost-caption' }, 'Drop it on an instance'));
        document.body.append(ghost);
        box.classList.add('dragging');
        document.body.classList.add('drag-active');
        for (const other of board.querySelectorAll('.inst')) {
          if (!valid(other)) continue;
          other.classList.add('drop-target');
          if (twoZones(other)) other.classList.add('two-zones');
          other.querySelector('.drop-hint').textContent = other.dataset.role !== 'primary' ? 'Drop here: replicate from this one'
            : other.classList.contains('unreachable') ? 'Drop here: recover, choosing it'
              : twoZones(other) ? 'Upper half: make it the primary · lower half: move it below' : 'Drop here: make it the primary';
        }
      }
      ghost.style.transform = `translate(${e.clientX + 16}px, ${e.clientY + 18}px)`;
      const over = targetAt(e.clientX, e.clientY);
      const [operation, caption] = over ? operationAt(over, e.clientY) : [null, 'Drop it on a highlighted instance'];
      if (over !== target || ghost.dataset.operation !== operation) {
        if (target) target.classList.remove('drop-hover', 'zone-upper', 'zone-lower');
        target = over;
        if (target) target.classList.add('drop-hover', ...(twoZones(target) ? [operation === 'relocate' ? 'zone-lower' : 'zone-upper'] : []));
        ghost.dataset.operation = operation || '';
        ghost.querySelector('.ghost-caption').textContent = caption;
      }
    };
    const finish = (e, cancelled) => {
      document.body.classList.remove('pressing');
      window.removeEventListener('pointermove', move);
      window.removeEventListener('pointerup', up);
      window.removeEventListener('pointercancel', cancel);
      window.removeEventListener('keydown', key);
      if (!ghost) {
        if (!cancelled) select(dragged);
        return;
      }
      // Judged before the targets lose their hints: a box shrinks when its hint goes.
      const over = cancelled ? null : targetAt(e.clientX, e.clientY);
      const operation = over ? operationAt(over, e.clientY)[0] : null;
      ghost.remove();
      box.classList.remove('dragging');
      document.body.classList.remove('drag-active');
      for (const other of board.querySelectorAll('.drop-target')) other.classList.remove('drop-target', 'drop-hover', 'two-zones', 'zone-upper', 'zone-lower');
      if (over) drop(dragged, over.dataset.key, operation !== 'relocate');
    };
    const up = (e) => finish(e, false);
    const cancel = (e) => finish(e, true);
    const key = (e) => { if (e.key === 'Escape') finish(e, true); };
    // The page holds its redraws while a box is pressed: the box must stay the box.
    document.body.classList.add('pressing');
    window.addEventListener('pointermove', move);
    window.addEventListener('pointerup', up);
    window.addEventListener('pointercancel', cancel);
    window.addEventListener('keydown', key);
    if (canDrag) event.preventDefault(); // no text selection while dragging
  });
}

/** A small "since" helper for panels: "unreachable since 09:30:12 (12 s ago)". */
export function since(iso) {
  return `${clock(iso)} (${ago(iso)})`;
}
