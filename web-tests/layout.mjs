// The page's layout as an operator on a laptop, a narrow window or a phone sees it,
// light and dark (tests/web.rs starts an agent on a sandbox whose third node replicates
// from the second — a tree of three levels — and runs this script, which wants exit
// code 0):
//
//   node web-tests/layout.mjs <agent url> <cluster> <screenshot dir>
//
// Checked, not only photographed: at 1400×900 three levels fit beside the open panel
// (no horizontal scrolling) and the canvas has no scrollbar with nothing to scroll to
// once the panel closes; Enter on a box moves the focus into the panel; a notice does
// not move the tree; at 800×900 the audit log fits the window; at 390 px the header
// wraps and every page link stays on screen. Screenshots of each state, light and dark.

import { check, openPage, runSteps } from './harness.mjs';

const [url, cluster, outDir] = process.argv.slice(2);
if (!url || !cluster || !outDir) {
  console.error('usage: node web-tests/layout.mjs <agent url> <cluster> <screenshot dir>');
  process.exit(2);
}
const PATIENCE = 30_000;

// A discovery of an address nobody answers on is refused on purpose (a notice).
const session = await openPage(outDir, /status of (4|5)\d\d/);
const { page, shot, step } = session;

/** Whether an element scrolls in a direction although it need not (1 px of rounding allowed). */
const overflow = (selector) => page.locator(selector).evaluate((el) => ({
  x: el.scrollWidth - el.clientWidth, y: el.scrollHeight - el.clientHeight,
}));
const pageOverflowX = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);

async function both(name) {
  await page.emulateMedia({ colorScheme: 'light' });
  await shot(`${name}-light`);
  await page.emulateMedia({ colorScheme: 'dark' });
  await shot(`${name}-dark`);
  await page.emulateMedia({ colorScheme: 'light' });
}

await runSteps(session, outDir, async () => {
  await page.setViewportSize({ width: 1400, height: 900 });

  await step('1400×900: three levels fit beside the open panel', async () => {
    await page.goto(`${url}/#/cluster/${encodeURIComponent(cluster)}`);
    await page.waitForFunction(() => document.querySelectorAll('.board .inst').length === 3, null, { timeout: PATIENCE });
    await page.waitForFunction(() => document.querySelectorAll('.children .children .inst').length === 1, null, { timeout: PATIENCE });
    const deepest = page.locator('.children .children .inst');
    const key = await deepest.getAttribute('data-key');
    await deepest.click();
    await page.locator('.panel h2', { hasText: key }).waitFor({ timeout: PATIENCE });
    const o = await overflow('.canvas');
    check(o.x <= 1, `with the panel open the tree scrolls ${o.x} px sideways`);
    await both('cluster-1400-panel');
  });

  await step('closing the panel leaves no scrollbar with nothing to scroll to', async () => {
    await page.locator('.panel .icon-button[title=Close]').click();
    await page.locator('.panel').waitFor({ state: 'hidden', timeout: 5000 });
    await page.waitForFunction(() => {
      const c = document.querySelector('.canvas');
      return c.scrollWidth - c.clientWidth <= 1 && c.scrollHeight - c.clientHeight <= 1;
    }, null, { timeout: 5000 }).catch(async () => {
      const o = await overflow('.canvas');
      check(false, `the canvas scrolls ${o.x} px sideways and ${o.y} px down with the whole tree shown`);
    });
    await both('cluster-1400');
  });

  await step('Enter on a box opens its panel with the focus in it', async () => {
    const first = page.locator('.board .inst').first();
    await first.focus();
    await page.keyboard.press('Enter');
    await page.locator('.panel h2').waitFor({ timeout: 5000 });
    const focused = await page.evaluate(() => !!document.activeElement && !!document.activeElement.closest('.panel'));
    check(focused, `after Enter the focus is on ${await page.evaluate(() => document.activeElement && document.activeElement.outerHTML.slice(0, 80))}, not in the panel`);
    await page.keyboard.press('Tab');
    check(await page.evaluate(() => !!document.activeElement.closest('.panel')), 'Tab from the panel heading leaves the panel');
    await page.locator('.panel .icon-button[title=Close]').click();
  });

  await step('a notice does not move the tree', async () => {
    const before = await page.locator('.canvas').boundingBox();
    await page.goto(`${url}/#/`);
    await page.locator('form.discover input[name=host]').fill('127.0.0.1:1');
    await page.locator('form.discover button[type=submit]').click();
    await page.locator('.notice-error').waitFor({ timeout: PATIENCE });
    await page.goBack();
    await page.waitForFunction(() => document.querySelectorAll('.board .inst').length === 3, null, { timeout: PATIENCE });
    check(await page.locator('.notice-error').count() === 1, 'the error notice went away on its own');
    const after = await page.locator('.canvas').boundingBox();
    check(Math.abs(after.y - before.y) <= 1, `the tree moved from y=${before.y} to y=${after.y} under the notice`);
    await both('cluster-1400-notice');
    await page.locator('.notice-error .icon-button').click();
  });

  await page.setViewportSize({ width: 800, height: 900 });

  await step('800×900: the cluster, the dashboard and the audit log fit the window', async () => {
    await page.goto(`${url}/#/cluster/${encodeURIComponent(cluster)}`);
    await page.waitForFunction(() => document.querySelectorAll('.board .inst').length === 3, null, { timeout: PATIENCE });
    check(await pageOverflowX() <= 1, `the cluster page scrolls ${await pageOverflowX()} px sideways`);
    await both('cluster-800');
    await page.goto(`${url}/#/`);
    await page.locator(`.cluster-row[data-cluster="${cluster}"]`).waitFor({ timeout: PATIENCE });
    check(await pageOverflowX() <= 1, `the dashboard scrolls ${await pageOverflowX()} px sideways`);
    await both('dashboard-800');
    await page.goto(`${url}/#/audit`);
    await page.locator('.audit tbody tr').first().waitFor({ timeout: PATIENCE });
    check(await pageOverflowX() <= 1, `the audit log scrolls the page ${await pageOverflowX()} px sideways`);
    const table = await overflow('.table-scroll');
    check(table.x <= 1, `the audit table is ${table.x} px wider than the window`);
    await both('audit-800');
  });

  await page.setViewportSize({ width: 390, height: 844 });

  await step('390 px: the header wraps and every page link stays on screen', async () => {
    await page.goto(`${url}/#/`);
    await page.locator(`.cluster-row[data-cluster="${cluster}"]`).waitFor({ timeout: PATIENCE });
    check(await pageOverflowX() <= 1, `the dashboard scrolls ${await pageOverflowX()} px sideways at 390 px`);
    for (const link of await page.locator('.bar nav a').all()) {
      const r = await link.boundingBox();
      check(r && r.x >= 0 && r.x + r.width <= 390, `the link "${await link.textContent()}" is off screen (${JSON.stringify(r)})`);
    }
    await both('dashboard-390');
  });
});
