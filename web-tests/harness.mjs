// Shared by the browser tests: Debian's Chromium (/usr/bin/chromium, or
// $POINTSMAN_CHROMIUM) launched headless with the flags this closed network needs,
// driven by playwright-core (which never downloads a browser of its own); a page that
// collects its own errors; numbered steps; screenshots into the test's directory.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

/**
 * Opens a page. Console errors matching `expected` (the loads an action is meant to
 * have refused) are not counted as the page's errors. `moreArgs`: Chromium flags of
 * the test's own.
 */
export async function openPage(outDir, expected, moreArgs = []) {
  mkdirSync(outDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.POINTSMAN_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...moreArgs],
  });
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error' && !expected.test(message.text())) pageErrors.push(message.text());
  });
  const shot = (name) => page.screenshot({ path: join(outDir, `${name}.png`), fullPage: true });
  let count = 0;
  async function step(name, body) {
    count += 1;
    const started = Date.now();
    await body();
    console.log(`ok ${count} - ${name} (${Date.now() - started} ms)`);
  }
  return { browser, page, pageErrors, shot, step, steps: () => count };
}

/** Drags `from` onto `to` (locators) with the mouse, as a person would. */
export async function drag(page, from, to) {
  // The board is redrawn by live events: a box found can be replaced before it is
  // measured (boundingBox then says null). Measure both again until both are drawn.
  const shown = async (locator) => {
    await locator.waitFor({ state: 'visible', timeout: 1_000 }).catch(() => {});
    return locator.boundingBox({ timeout: 1_000 }).catch(() => null);
  };
  let a = null;
  let b = null;
  for (const started = Date.now(); !(a && b) && Date.now() - started < 10_000;) {
    a = await shown(from);
    b = await shown(to);
  }
  if (!(a && b)) {
    // Say which: a box missing, hidden, or drawn more than once.
    const counts = `${await from.count()} box(es) match the dragged one, ${await to.count()} the target`;
    check(false, `cannot find the boxes to drag (${counts})`);
  }
  await page.mouse.move(a.x + a.width / 2, a.y + 24);
  await page.mouse.down();
  await page.mouse.move(a.x + a.width / 2 + 12, a.y + 36, { steps: 3 });
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2, { steps: 12 });
  await page.mouse.up();
}

/** After a failed step: a screenshot, and what the page showed. */
export async function showFailure(page, shot, pageErrors, outDir) {
  try {
    await shot('failure');
    const said = async (selector) => (await page.locator(selector).allTextContents())
      .map((t) => t.replace(/\s+/g, ' ').trim());
    for (const [what, selector] of [['notices', '.notice'], ['banners', '.banner'], ['the open dialog', 'dialog[open]']]) {
      const texts = await said(selector);
      if (texts.length) console.error(`${what}: ${texts.join(' | ')}`);
    }
    if (pageErrors.length) console.error(`page errors: ${pageErrors.join(' | ')}`);
    console.error(`the page was at ${page.url()}; its screenshot is ${join(outDir, 'failure.png')}`);
  } catch { /* the browser itself failed */ }
}

/**
 * Runs a script's steps (`body`) on the page `openPage` gave: afterwards the page must
 * have logged no errors. A failed step prints what the page showed, saves failure.png
 * and exits 1.
 */
export async function runSteps({ browser, page, pageErrors, shot, steps }, outDir, body) {
  try {
    await body();
    check(pageErrors.length === 0, `the page logged errors: ${pageErrors.join(' | ')}`);
    console.log(`all ${steps()} steps passed; screenshots in ${outDir}`);
    await browser.close();
  } catch (error) {
    console.error(`not ok ${steps() + 1} - ${error.message}`);
    await showFailure(page, shot, pageErrors, outDir);
    await browser.close();
    process.exit(1);
  }
}
