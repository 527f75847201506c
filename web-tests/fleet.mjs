// The dashboard over a fleet larger than one page (tests/web.rs started 150 simulated
// clusters, killed the primary of the one whose name sorts last, with automatic
// recovery off, and runs this script, which wants exit code 0):
//
//   node web-tests/fleet.mjs <agent url> <clusters> <killed cluster> <an instance of another cluster> <screenshot dir>
//
// The cluster in trouble comes first, though its name sorts last; the clusters come a
// page of 100 at a time, Next and Previous move between pages and stay at hand at the
// foot of the page; the filter finds a
// cluster by one of its instances and says when nothing matches; and a cluster opened
// from the list shows its tree (its detail comes by the live stream of that cluster).

import { check, openPage, runSteps } from './harness.mjs';

const [url, clusters, killed, instance, outDir] = process.argv.slice(2);
if (!url || !clusters || !killed || !instance || !outDir) {
  console.error('usage: node web-tests/fleet.mjs <agent url> <clusters> <killed cluster> <an instance of another cluster> <screenshot dir>');
  process.exit(2);
}
const total = Number(clusters);
const PATIENCE = 30_000;

const session = await openPage(outDir, /^$/);
const { page, shot, step } = session;
const text = async (locator) => ((await locator.textContent()) || '').replace(/\s+/g, ' ').trim();
const rows = page.locator('.cluster-row');
const pager = page.locator('.pager');

await runSteps(session, outDir, async () => {
  await step('every cluster is counted, the one in trouble first', async () => {
    await page.goto(`${url}/`);
    await page.locator('.dashboard .page-head', { hasText: `${total} clusters` }).waitFor({ timeout: PATIENCE });
    await rows.first().waitFor({ timeout: PATIENCE });
    await page.waitForFunction((name) => document.querySelector('.cluster-row')?.dataset.cluster === name, killed, { timeout: PATIENCE });
    const first = rows.first();
    check((await first.getAttribute('class')).includes('sev-problem'), `the first row is not marked as a problem: ${await first.getAttribute('class')}`);
    check((await text(first)).includes('Dead primary'), `the first row says "${await text(first)}"`);
    await shot('first-page');
  });

  await step('a page of 100 at a time', async () => {
    check(await rows.count() === 100, `${await rows.count()} rows on the first page`);
    check((await text(pager)).includes(`1–100 of ${total}`), `the pager says "${await text(pager)}"`);
    check(await page.getByRole('button', { name: 'Previous' }).isDisabled(), 'Previous is enabled on the first page');
    // At the foot of the page the filter and the pager are still at hand.
    await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
    await page.waitForFunction(() => window.scrollY > 0);
    const box = await pager.boundingBox();
    check(box && box.y >= 0 && box.y + box.height <= 900, `the pager is out of view at the foot of the page: ${JSON.stringify(box)}`);
    await page.screenshot({ path: `${outDir}/scrolled.png` });
    await page.getByRole('button', { name: 'Next' }).click();
    await pager.filter({ hasText: `101–${total} of ${total}` }).waitFor({ timeout: PATIENCE });
    check(await rows.count() === total - 100, `${await rows.count()} rows on the second page`);
    check(await page.getByRole('button', { name: 'Next' }).isDisabled(), 'Next is enabled on the last page');
    check(await rows.filter({ hasText: killed }).count() === 0, 'the cluster in trouble is on the second page too');
    await shot('second-page');
    await page.getByRole('button', { name: 'Previous' }).click();
    await pager.filter({ hasText: `1–100 of ${total}` }).waitFor({ timeout: PATIENCE });
  });

  await step('the filter finds a cluster by one of its instances', async () => {
    await page.getByLabel('Filter clusters').fill(instance);
    await pager.filter({ hasText: '1 cluster match' }).waitFor({ timeout: PATIENCE });
    check(await rows.count() === 1, `${await rows.count()} rows for ${instance}`);
    await shot('filtered');
    await page.getByLabel('Filter clusters').fill('no-such-host');
    await page.locator('.empty', { hasText: 'No cluster matches "no-such-host"' }).waitFor({ timeout: PATIENCE });
    check(await rows.count() === 0, 'rows shown for a filter nothing matches');
    await page.getByLabel('Filter clusters').fill(instance);
    await rows.first().waitFor({ timeout: PATIENCE });
  });

  await step('a cluster opened from the list shows its tree', async () => {
    await rows.first().click();
    await page.locator('.canvas .inst[data-key]').first().waitFor({ timeout: PATIENCE });
    const boxes = await page.locator('.canvas .inst[data-key]').count();
    check(boxes === 3, `${boxes} instances drawn`);
    check(await page.locator(`.canvas .inst[data-key="${instance}"]`).count() === 1, `${instance} is not drawn`);
    await shot('cluster');
  });
});
