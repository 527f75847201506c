// A screenshot of one cluster's page, as docs/screenshot.png is made:
//
//   node web-tests/screenshot.mjs <agent url> <cluster> <out.png> [--drag]
//
// With --drag, the last replica is held over the primary (showing what a drop would
// do) and the drag is cancelled with Escape after the picture: nothing changes.

import { chromium } from 'playwright-core';

const [url, cluster, out, option] = process.argv.slice(2);
if (!url || !cluster || !out) {
  console.error('usage: node web-tests/screenshot.mjs <agent url> <cluster> <out.png> [--drag]');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.POINTSMAN_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 760 }, deviceScaleFactor: 1 });
  await page.goto(`${url}/#/cluster/${encodeURIComponent(cluster)}`);
  await page.locator('.board .inst').first().waitFor({ timeout: 30_000 });
  await page.locator('.routing h2').waitFor({ timeout: 30_000 });
  await page.waitForTimeout(600);
  if (option === '--drag') {
    const replicas = page.locator('.board .inst[data-role=replica]');
    const from = await replicas.last().boundingBox();
    const to = await page.locator('.board .inst[data-role=primary]').boundingBox();
    await page.mouse.move(from.x + from.width / 2, from.y + 24);
    await page.mouse.down();
    await page.mouse.move(from.x + from.width / 2 - 10, from.y + 30, { steps: 3 });
    await page.mouse.move(to.x + to.width * 0.6, to.y + to.height * 0.45, { steps: 12 });
  }
  await page.screenshot({ path: out });
  if (option === '--drag') await page.keyboard.press('Escape');
  console.log(`saved ${out}`);
} finally {
  await browser.close();
}
