// A primary killed with kill -9 under an open page, with automatic recovery on
// (tests/web.rs runs this script, waits for it to print "watching", kills the primary
// and wants exit code 0):
//
//   node web-tests/killed.mjs <agent url> <cluster> <screenshot dir>
//
// Without a reload, the tree names the new primary, the routing panel names the new
// writer within a second of the tree (both follow the live stream), and the failover
// is announced.

import { check, openPage, runSteps } from './harness.mjs';

const [url, cluster, outDir] = process.argv.slice(2);
if (!url || !cluster || !outDir) {
  console.error('usage: node web-tests/killed.mjs <agent url> <cluster> <screenshot dir>');
  process.exit(2);
}
const PATIENCE = 30_000;

const session = await openPage(outDir, /^$/);
const { page, shot, step } = session;
const rootKey = () => page.locator('.tree > .subtree > .cell > .inst').getAttribute('data-key');
const writer = () => page.locator('.route-summary .mono.strong').textContent();

await runSteps(session, outDir, async () => {
  let primary = null;

  await step('the page shows the cluster, its primary the routed writer', async () => {
    await page.goto(`${url}/#/cluster/${encodeURIComponent(cluster)}`);
    await page.waitForFunction(() => document.querySelectorAll('.board .inst').length === 3, null, { timeout: PATIENCE });
    primary = await rootKey();
    await page.waitForFunction((key) => {
      const el = document.querySelector('.route-summary .mono.strong');
      return el && el.textContent.trim() === key;
    }, primary, { timeout: PATIENCE });
    await page.evaluate(() => { window.notReloaded = true; });
    await shot('before');
  });

  await step('after the kill the tree and then, within a second, the routing panel name the new primary', async () => {
    console.log('watching');
    const moved = await page.waitForFunction((old) => {
      const root = document.querySelector('.tree > .subtree > .cell > .inst');
      return root && root.dataset.key !== old && root.dataset.role === 'primary' ? root.dataset.key : null;
    }, primary, { timeout: 60_000 });
    const successor = await moved.jsonValue();
    const treeMoved = Date.now();
    await page.waitForFunction((key) => {
      const el = document.querySelector('.route-summary .mono.strong');
      return el && el.textContent.trim() === key;
    }, successor, { timeout: 1000 }).catch(async () => {
      check(false, `1 s after the tree named ${successor}, the routing panel still names ${(await writer()).trim()}`);
    });
    console.log(`the routing panel named ${successor} ${Date.now() - treeMoved} ms after the tree did`);
    check(await page.evaluate(() => window.notReloaded === true), 'the page was reloaded');
    await page.locator('.alerts .banner-recovery', { hasText: `${successor} took over` }).waitFor({ timeout: PATIENCE });
    await shot('after');
  });
});
