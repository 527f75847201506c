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
 * have refused) are not counted as the page's errors.
 */
export async function openPage(outDir, expected) {
  mkdirSync(outDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.POINTSMAN_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
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
