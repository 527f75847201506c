// A cluster without an alias is named after its primary, so its failover renamed it
// (tests/web.rs killed the primary and waited for the automatic failover, then runs
// this script, which wants exit code 0):
//
//   node web-tests/renamed.mjs <agent url> <old name> <new name> <screenshot dir>
//
// A link to the old name (a bookmark, a chat message from before the failover) leads
// to the cluster under its new name, saying "formerly"; the failover is announced there
// and on the dashboard until acknowledged; Recent recoveries and the Recoveries page of
// either name list it (before, the old name's history was lost: "None yet").

import { check, openPage, runSteps } from './harness.mjs';

const [url, oldName, newName, outDir] = process.argv.slice(2);
if (!url || !oldName || !newName || !outDir) {
  console.error('usage: node web-tests/renamed.mjs <agent url> <old name> <new name> <screenshot dir>');
  process.exit(2);
}
const PATIENCE = 30_000;

const session = await openPage(outDir, /^$/);
const { page, shot, step } = session;
const text = async (locator) => ((await locator.textContent()) || '').replace(/\s+/g, ' ').trim();

await runSteps(session, outDir, async () => {
  await step('the old name leads to the cluster under its new name, which says "formerly"', async () => {
    await page.goto(`${url}/#/cluster/${encodeURIComponent(oldName)}`);
    await page.waitForFunction((name) => decodeURIComponent(location.hash) === `#/cluster/${name}`, newName, { timeout: PATIENCE });
    const notice = page.locator('.notice', { hasText: `now called ${newName}` });
    await notice.waitFor({ timeout: PATIENCE });
    check((await text(notice)).includes(`formerly ${oldName}`), `the notice says "${await text(notice)}"`);
    const head = page.locator('.cluster-head');
    await head.locator('.formerly').waitFor({ timeout: PATIENCE });
    const said = await text(head);
    check(said.includes(`formerly ${oldName}`), `the heading says "${said}", not "formerly ${oldName}"`);
    check(said.includes(`primary ${newName}`), `the heading says "${said}", not primary ${newName}`);
    check(await page.locator('.banner', { hasText: 'No cluster named' }).count() === 0, 'the page says the cluster is unknown');
    await shot('followed');
  });

  await step('the failover is announced: the old primary failed, the new one took over, automatically', async () => {
    const banner = page.locator('.alerts .banner-recovery');
    await banner.waitFor({ timeout: PATIENCE });
    const said = await text(banner);
    check(said.includes(`${oldName} failed; ${newName} took over in`), `the announcement says "${said}"`);
    check(said.includes('automatic') && said.includes('not acknowledged'), `the announcement says "${said}"`);
  });

  await step('Recent recoveries keeps the history made under the old name', async () => {
    const card = page.locator('.recent .recovery').first();
    await card.waitFor({ timeout: PATIENCE });
    const said = await text(card);
    check(said.includes(`failover of ${oldName}`) && said.includes(newName), `the recent recovery says "${said}"`);
    check(await page.locator('.recent', { hasText: 'None yet' }).count() === 0, 'Recent recoveries says "None yet"');
    await shot('history');
  });

  await step('the Recoveries page of the old name lists it too', async () => {
    await page.goto(`${url}/#/recoveries?cluster=${encodeURIComponent(oldName)}`);
    const card = page.locator('.recovery-list .recovery').first();
    await card.waitFor({ timeout: PATIENCE });
    const said = await text(card);
    check(said.includes(`failover of ${oldName}`), `the Recoveries page of ${oldName} says "${said}"`);
  });

  await step('the dashboard announces it under the new name; acknowledging ends it', async () => {
    await page.goto(`${url}/#/`);
    const banner = page.locator(`.announcements .banner-recovery[data-cluster="${newName}"]`);
    await banner.waitFor({ timeout: PATIENCE });
    await shot('dashboard-announced');
    await banner.locator('[data-action=acknowledge]').click();
    const dialog = page.locator('dialog[open]');
    await dialog.waitFor({ timeout: 5000 });
    await dialog.locator('[data-action=confirm]').click();
    await banner.waitFor({ state: 'detached', timeout: PATIENCE });
    await shot('acknowledged');
  });
});
