// DOM helpers, icons and formatting shared by the page's modules. No framework: `h`
// builds elements, text always goes through textContent (never innerHTML), so
// nothing an instance or an error message says can inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An HTML element: h('div', {class: 'x', onclick: f}, child, 'text', [more]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, as `h`. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Icons: 16×16 strokes in currentColor, so a badge's icon has the badge's colour and
// does not depend on which fonts the machine has.
const ICONS = {
  ok: ['M3.2 8.6l3 3 6.6-7'],
  problem: ['circle:8,8,6.2', 'M5.6 5.6l4.8 4.8M10.4 5.6l-4.8 4.8'],
  warning: ['M8 1.8l6.6 11.7H1.4z', 'M8 6.2v3.4', 'M8 11.6v.1'],
  broken: ['M6.5 4.5L5 3a2.5 2.5 0 0 0-3.5 3.5L3 8', 'M9.5 11.5L11 13a2.5 2.5 0 0 0 3.5-3.5L13 8', 'M10 2v2M14 6h-2M6 14v-2M2 10h2'],
  stopped: ['circle:8,8,6.2', 'M6.4 5.6v4.8M9.6 5.6v4.8'],
  lag: ['circle:8,8,6.2', 'M8 4.6V8l2.4 1.6'],
  errant: ['M8 2.5v6.5M4.8 5.8h6.4M4.8 12.8h6.4'],
  unreachable: ['circle:8,8,6.2', 'M3.7 12.3l8.6-8.6'],
  downtime: ['M12.8 10.2A5.6 5.6 0 0 1 5.8 3.2a5.6 5.6 0 1 0 7 7z'],
  fenced: ['M3.8 7.4h8.4v6.2H3.8z', 'M5.6 7.4V5.4a2.4 2.4 0 0 1 4.8 0v2'],
  primary: ['M2.4 12.6h11.2', 'M2.8 11l-.9-6.4 3.4 2.8L8 2.8l2.7 4.6 3.4-2.8-.9 6.4z'],
  grip: ['M6 4v.1M10 4v.1M6 8v.1M10 8v.1M6 12v.1M10 12v.1'],
  info: ['circle:8,8,6.2', 'M8 7.4v4', 'M8 4.9v.1'],
  refused: ['circle:8,8,6.2', 'M4.2 8h7.6'],
  arrow: ['M2.5 8h10M9 4.5L12.5 8 9 11.5'],
  close: ['M4 4l8 8M12 4l-8 8'],
  route: ['M3 13V9a3 3 0 0 1 3-3h7', 'M10 3l3 3-3 3'],
  search: ['circle:7,7,4.4', 'M10.3 10.3l3.5 3.5'],
  key: ['circle:5.2,10.8,2.8', 'M7.2 8.8L13 3M11 5l1.8 1.8'],
};

/** An inline SVG icon; `label` makes it announced, otherwise it is decoration. */
export function icon(name, label) {
  const parts = ICONS[name] || ICONS.info;
  const el = s('svg', {
    class: `icon icon-${name}`, viewBox: '0 0 16 16', width: 16, height: 16,
    'aria-hidden': label ? null : 'true', role: label ? 'img' : null, 'aria-label': label || null,
  });
  for (const part of parts) {
    if (part.startsWith('circle:')) {
      const [cx, cy, r] = part.slice(7).split(',');
      el.append(s('circle', { cx, cy, r }));
    } else {
      el.append(s('path', { d: part }));
    }
  }
  return el;
}

/** "12 s", "4 min", "3 h 5 min", "2 d". */
export function span(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return 'unknown';
  const secs = Math.max(0, Math.round(ms / 1000));
  if (secs < 60) return `${secs} s`;
  const mins = Math.floor(secs / 60);
  if (mins < 60) return `${mins} min`;
  const hours = Math.floor(mins / 60);
  if (hours < 48) return mins % 60 ? `${hours} h ${mins % 60} min` : `${hours} h`;
  return `${Math.floor(hours / 24)} d`;
}

/** How long ago an RFC 3339 time was, in words. */
export function ago(iso, now = Date.now()) {
  if (!iso) return 'never';
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return iso;
  if (now - at < 1500) return 'just now';
  return `${span(now - at)} ago`;
}

/** The browser's offset from UTC at `at`, as "UTC" or "UTC+01:00". */
function zone(at) {
  const offset = -at.getTimezoneOffset();
  if (offset === 0) return 'UTC';
  const pad = (n) => String(n).padStart(2, '0');
  const abs = Math.abs(offset);
  return `UTC${offset > 0 ? '+' : '-'}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/**
 * A local date and time, to the second, with its zone: "2026-11-23 09:29:38 UTC".
 * `.slice(11)` of it is the time with its zone.
 */
export function clock(iso) {
  if (!iso) return '';
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return iso;
  const pad = (n) => String(n).padStart(2, '0');
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())} ${zone(at)}`;
}

/** Milliseconds as a person reads them: "61 ms", "1.2 s". */
export function millis(ms) {
  if (ms === null || ms === undefined) return '';
  if (ms < 1000) return `${ms} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
}

/** "3 instances", "1 instance". */
export function plural(n, word, words = `${word}s`) {
  return `${n} ${n === 1 ? word : words}`;
}
