// A measurement, not a test: how soon the page is usable over a large fleet. Run by
// `cargo bench --bench fleet` against an agent watching thousands of simulated
// clusters: node first-paint.mjs URL EXPECTED_CLUSTERS. Prints one JSON line with, in
// milliseconds from the start of navigation, the first contentful paint and the first
// page of clusters drawn with every cluster counted; then how long a filter and the
// next page take to draw.

import { chromium } from 'playwright-core';

const [url, expected] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.POINTSMAN_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(url);
  const wanted = `${Number(expected).toLocaleString('en')} clusters`;
  // The list is usable when its first page is drawn and the count says every cluster.
  const listed = await page.waitForFunction((text) => {
    const count = document.querySelector('.dashboard .page-head .muted');
    return document.querySelector('.cluster-row') && count && count.textContent.replace(/,/g, '') === text.replace(/,/g, '')
      ? performance.now() : null;
  }, wanted, { timeout: 60_000, polling: 'raf' }).then((handle) => handle.jsonValue());
  const paint = await page.evaluate(() => {
    const entry = performance.getEntriesByName('first-contentful-paint')[0];
    return entry ? entry.startTime : null;
  });
  const rows = await page.locator('.cluster-row').count();

  const timed = async (act, drawn) => {
    const started = await page.evaluate(() => performance.now());
    await act();
    const ended = await page.waitForFunction(drawn, null, { timeout: 30_000, polling: 'raf' })
      .then((handle) => handle.evaluate(() => performance.now()));
    return ended - started;
  };
  // One page holds 100: a smaller fleet has no next page.
  const nextPage = Number(expected) > 100
    ? await timed(() => page.getByRole('button', { name: 'Next' }).click(),
      () => /^101/.test(document.querySelector('.pager .muted')?.textContent || ''))
    : null;
  const filter = await timed(() => page.getByLabel('Filter clusters').fill('127.'),
    () => document.querySelector('.pager .muted') !== null);

  console.log(JSON.stringify({
    first_contentful_paint_ms: paint, list_usable_ms: listed, rows_drawn: rows,
    next_page_ms: nextPage, filter_ms: filter, errors,
  }));
} finally {
  await browser.close();
}
