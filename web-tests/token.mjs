// The web page against an agent with api.token and api.token_for_reads (started by
// tests/web.rs):
//
//   node web-tests/token.mjs <agent url> <cluster> <token> <screenshot dir>
//
// The page must ask for the token once, keep it for the tab (sessionStorage), fall back
// from server-sent events (which cannot carry the header) to polling with it, act with
// it, and not ask again after a reload.

import { check, openPage, runSteps } from './harness.mjs';

const [url, cluster, token, outDir] = process.argv.slice(2);
if (!url || !cluster || !token || !outDir) {
  console.error('usage: node web-tests/token.mjs <agent url> <cluster> <token> <screenshot dir>');
  process.exit(2);
}
const PATIENCE = 30_000;


// The refused calls (401) and the refused event stream show as failed loads: expected.
const session = await openPage(outDir, /status of (4|5)\d\d|EventSource/);
const { page, shot, step } = session;

await runSteps(session, outDir, async () => {
  await step('the page asks for the token, once', async () => {
    await page.goto(url + '/');
    const dialog = page.locator('dialog[open]');
    await dialog.waitFor({ timeout: PATIENCE });
    const title = await dialog.locator('h2').textContent();
    check(/token/i.test(title), `the dialog is titled "${title}"`);
    await shot('asks-for-token');
    await dialog.locator('input[name=token]').fill(token);
    await dialog.locator('[data-action=confirm]').click();
    await page.locator(`.cluster-row[data-cluster="${cluster}"]`).waitFor({ timeout: PATIENCE });
    await page.waitForTimeout(2500); // several polls: none may ask again
    check(await page.locator('dialog[open]').count() === 0, 'the page asked for the token again');
    const kept = await page.evaluate(() => sessionStorage.getItem('pointsman.api-token'));
    check(kept === token, 'the token is not kept in sessionStorage');
    const connection = await page.locator('#connection').textContent();
    check(/polling/i.test(connection), `the connection indicator says "${connection}", expected polling`);
    await shot('dashboard-with-token');
  });

  let replica;
  await step('the topology shows 3 instances by polling', async () => {
    await page.locator(`.cluster-row[data-cluster="${cluster}"]`).click();
    await page.waitForFunction(() => document.querySelectorAll('.board .inst').length === 3, null, { timeout: PATIENCE });
    replica = await page.locator('.board .inst[data-role=replica]').first().getAttribute('data-key');
  });

  await step('an action carries the token: downtime a replica, its badge appears', async () => {
    await page.locator(`.board .inst[data-key="${replica}"]`).click();
    await page.locator('.panel [data-action=downtime]').click();
    const dialog = page.locator('dialog[open]');
    await dialog.waitFor({ timeout: 5000 });
    const sentence = await dialog.locator('.sentence').textContent();
    check(sentence.includes(`Downtime ${replica}`), `the confirmation says "${sentence}"`);
    await dialog.locator('input[name=reason]').fill('browser test');
    await dialog.locator('[data-action=confirm]').click();
    await page.locator('.notice-ok', { hasText: 'downtimed until' }).waitFor({ timeout: PATIENCE });
    await page.locator(`.board .inst[data-key="${replica}"] .badge-downtime`).waitFor({ timeout: PATIENCE });
    await shot('downtimed');
  });

  await step('after a reload the page does not ask again', async () => {
    await page.reload();
    await page.waitForFunction(() => document.querySelectorAll('.board .inst').length === 3, null, { timeout: PATIENCE });
    check(await page.locator('dialog[open]').count() === 0, 'the page asked for the token again after a reload');
    await page.locator(`.board .inst[data-key="${replica}"]`).click();
    await page.locator('.panel [data-action=end-downtime]').click();
    await page.locator('dialog[open] [data-action=confirm]').click();
    await page.locator('.notice-ok', { hasText: 'has ended' }).waitFor({ timeout: PATIENCE });
  });

});
