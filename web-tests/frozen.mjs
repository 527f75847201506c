// The page against an agent that freezes (started by tests/web.rs as a process of its
// own, whose PID it passes):
//
//   node web-tests/frozen.mjs <agent url> <agent pid> <screenshot dir>
//
// A quiet agent stays "Live" by its heartbeats; frozen with SIGSTOP, the page must say
// within seconds that it is not live and as of when its picture is; after SIGCONT it is
// live again. The agent is always resumed before this script ends.

import { check, openPage, showFailure } from './harness.mjs';

const [url, pidText, outDir] = process.argv.slice(2);
const pid = Number(pidText);
if (!url || !pid || !outDir) {
  console.error('usage: node web-tests/frozen.mjs <agent url> <agent pid> <screenshot dir>');
  process.exit(2);
}
// The page calls itself not live after 3.5 s of silence and checks once a second.
const NOTICED_WITHIN = 10_000;

const { browser, page, pageErrors, shot, step, steps } = await openPage(outDir, /^$/);
const connection = page.locator('#connection');
const says = async () => ((await connection.textContent()) || '').replace(/\s+/g, ' ').trim();
let frozen = false;

try {
  await step('the page is live', async () => {
    await page.goto(url + '/');
    await page.waitForFunction(() => /^Live/.test(document.querySelector('#connection').textContent.trim()), null, { timeout: 30_000 });
  });

  await step('a quiet agent stays live: its heartbeats say it is there', async () => {
    // Nothing changes on the servers; only the heartbeats arrive.
    await page.waitForTimeout(6000);
    const now = await says();
    check(/^Live/.test(now), `after 6 quiet seconds the indicator says "${now}"`);
    check(await page.locator('#stale').isHidden(), 'the not-live banner is shown for a quiet agent');
  });

  await step('frozen, the agent is shown as not live, with the time of its last word', async () => {
    const before = Date.now();
    process.kill(pid, 'SIGSTOP');
    frozen = true;
    await page.waitForFunction(() => /Not live/.test(document.querySelector('#connection').textContent), null, { timeout: NOTICED_WITHIN });
    const took = Date.now() - before;
    const now = await says();
    check(/as of \d\d:\d\d:\d\d/.test(now), `the indicator gives no time: "${now}"`);
    const banner = ((await page.locator('#stale').textContent()) || '').replace(/\s+/g, ' ');
    check(await page.locator('#stale').isVisible(), 'no banner says the page is not live');
    check(/No word from the agent/.test(banner) && /said at \d\d:\d\d:\d\d( UTC\S*)?, not now/.test(banner),
      `the banner says "${banner}"`);
    console.log(`noticed ${took} ms after the freeze`);
    await shot('frozen');
  });

  await step('running again, the page is live again', async () => {
    process.kill(pid, 'SIGCONT');
    frozen = false;
    await page.waitForFunction(() => /^Live/.test(document.querySelector('#connection').textContent.trim()), null, { timeout: 15_000 });
    check(await page.locator('#stale').isHidden(), 'the not-live banner is still shown');
    await shot('live-again');
  });

  check(pageErrors.length === 0, `the page logged errors: ${pageErrors.join(' | ')}`);
  console.log(`all ${steps()} steps passed; screenshots in ${outDir}`);
} catch (error) {
  console.error(`not ok - ${error.message}`);
  await showFailure(page, shot, pageErrors, outDir);
  process.exitCode = 1;
} finally {
  if (frozen) process.kill(pid, 'SIGCONT');
  await browser.close();
}
