// The dead-primary path in a real browser, against a real agent whose cluster has just
// lost its primary (tests/web.rs killed it, with automatic recovery off, and runs this
// script, which wants exit code 0):
//
//   node web-tests/recover.mjs <agent url> <cluster> <screenshot dir>
//
// Everything is checked through the page, as an operator would: the dead primary shows
// as a problem with a Recover action (and the hint says so, not "drag to switch over");
// Recover lists the ranked candidates; a replica dragged onto the dead primary opens the
// same choice with it chosen; the LOWER ranked one is chosen (so the choice is seen to
// be honoured) and confirmed; the page says how it went and redraws the tree with the
// chosen replica as primary and the old one fenced. A line `chosen: <host:port>` tells the Rust test which replica
// was chosen, to check on the servers. A failure prints what the page showed, saves
// failure.png and exits 1.

import { check, drag as dragBoxes, openPage, runSteps } from './harness.mjs';

const [url, cluster, outDir] = process.argv.slice(2);
if (!url || !cluster || !outDir) {
  console.error('usage: node web-tests/recover.mjs <agent url> <cluster> <screenshot dir>');
  process.exit(2);
}
const PATIENCE = 30_000;

const session = await openPage(outDir, /^$/);
const { page, shot, step } = session;
const box = (key) => page.locator(`.board .inst[data-key="${key}"]`);
const text = async (locator) => ((await locator.textContent()) || '').replace(/\s+/g, ' ').trim();

/** Drags the box of `from` onto the box of `to`. */
const drag = (from, to) => dragBoxes(page, box(from), box(to));

/** Waits for the Recover dialog and its candidates; returns the dialog. */
async function recoverDialog() {
  const dialog = page.locator('dialog[open]');
  await dialog.waitFor({ timeout: 5000 });
  const title = await text(dialog.locator('h2'));
  check(title === `Recover ${cluster}`, `the dialog is titled "${title}", expected "Recover ${cluster}"`);
  await page.waitForFunction(() => document.querySelectorAll('dialog[open] .candidate').length >= 2, null, { timeout: PATIENCE });
  return dialog;
}

/** Cancels the open dialog and checks nothing was done. */
async function cancel() {
  await page.locator('dialog[open] [data-action=cancel]').click();
  await page.locator('dialog[open]').waitFor({ state: 'detached', timeout: 5000 });
  check(await page.locator('.notice').count() === 0, `cancelling did something: ${await page.locator('.notice').allTextContents()}`);
  check(await page.locator('.banner-problem[data-code=DeadPrimary]').count() === 1, 'after cancelling the Dead primary banner is gone');
}

/** The key in the leftmost box: the primary as the page draws it. */
const rootKey = () => page.locator('.tree > .subtree > .cell > .inst').getAttribute('data-key');

await runSteps(session, outDir, async () => {
  let dead = null;
  let ranked = [];
  let chosen = null;

  await step('the dashboard shows the cluster in trouble, its dead primary named', async () => {
    await page.goto(url + '/');
    const row = page.locator(`.cluster-row[data-cluster="${cluster}"]`);
    await row.waitFor({ timeout: PATIENCE });
    await page.locator(`.cluster-row.sev-problem[data-cluster="${cluster}"]`, { hasText: 'Dead primary' }).waitFor({ timeout: PATIENCE });
    await page.locator('.connection', { hasText: 'Live' }).waitFor({ timeout: PATIENCE });
    await shot('dashboard');
  });

  await step('the cluster page shows the dead primary as a problem with a Recover action', async () => {
    await page.locator(`.cluster-row[data-cluster="${cluster}"]`).click();
    const banner = page.locator('.banner-problem[data-code=DeadPrimary]');
    await banner.waitFor({ timeout: PATIENCE });
    dead = await text(banner.locator('.mono').first());
    const said = await text(banner);
    check(/^Dead primary: /.test(said), `the banner says "${said}", expected it to start with "Dead primary:"`);
    check(await banner.locator('button', { hasText: 'Recover' }).count() === 1, `the banner "${said}" has no Recover button`);
    check(await page.locator('.cluster-head [data-action=recover]').count() === 1, 'the cluster heading has no Recover button');
    check(await page.locator('.cluster-head [data-action=switchover]').count() === 0, 'the heading offers a switchover of a dead primary');
    await page.waitForFunction((n) => document.querySelectorAll('.board .inst').length === n, 3, { timeout: PATIENCE });
    check((await rootKey()) === dead, `the leftmost box is ${await rootKey()}, not the dead primary ${dead} the banner names`);
    await box(dead).locator('.badge[data-code=Unreachable]').waitFor({ timeout: PATIENCE });
    check(await page.locator('.finding-problem', { hasText: dead }).count() > 0, `"What is wrong" does not list ${dead}`);
    check(await box(dead).locator('.pill').count() === 0, `the dead primary's box still claims a read_only state: "${await text(box(dead))}"`);
    check((await text(box(dead))).includes('facts when last seen'), `the dead primary's box does not say its facts are from when last seen: "${await text(box(dead))}"`);
    // Next to a Recover… button, no shell command to type.
    const refused = await text(page.locator('.banner-refused'));
    check(refused.includes('not in recovery.auto_clusters') && !refused.includes('pointsman recover'), `the refusal banner says "${refused}"`);
    const hint = await text(page.locator('.hint'));
    check(hint.includes('The primary is down: Recover') && !hint.includes('graceful switchover'), `with the primary down the hint says "${hint}"`);
    // Automatic recovery is off here (no auto_clusters): the page says so, and why.
    const coverage = await text(page.locator('.cluster-head [data-coverage]'));
    check(await page.locator('.cluster-head [data-coverage=not_covered]').count() === 1 && coverage.includes('not in recovery.auto_clusters'),
      `the heading's coverage says "${coverage}", not that ${cluster} is outside recovery.auto_clusters`);
    check(await page.locator('.banner-recovery').count() === 0, 'a recovery is announced before any was made');
    await page.evaluate(() => { window.notReloaded = true; });
    await shot('dead-primary');
  });

  await step('Recover lists both replicas as ranked candidates, eligible, best first; Cancel does nothing', async () => {
    await page.locator('.banner-problem[data-code=DeadPrimary] button', { hasText: 'Recover' }).click();
    const dialog = await recoverDialog();
    const candidates = dialog.locator('.candidate');
    const count = await candidates.count();
    check(count === 2, `the dialog lists ${count} candidates, expected the 2 replicas`);
    for (let i = 0; i < count; i += 1) {
      const c = candidates.nth(i);
      const key = await c.locator('input[type=radio]').getAttribute('value');
      const said = await text(c);
      check(key !== dead, `the dead primary ${dead} is offered as a candidate`);
      check(await text(c.locator('.rank')) === String(i + 1), `candidate ${key} is ranked "${await text(c.locator('.rank'))}", expected ${i + 1}`);
      check(await c.evaluate((el) => el.classList.contains('eligible')), `candidate ${key} is not eligible: "${said}"`);
      check(!(await c.locator('input[type=radio]').isDisabled()), `the radio of ${key} is disabled`);
      const verdict = await text(c.locator('.verdict'));
      check(verdict === (i === 0 ? 'eligible, best' : 'eligible'), `candidate ${i + 1} (${key}) says "${verdict}"`);
      const tie = await c.locator('.tie').count();
      check(i > 0 || tie === 0, `the best candidate ${key} says it ties with itself: "${said}"`);
      check(tie === 0 || said.includes(`As good as no. 1 (${ranked[0]})`), `candidate ${key} ties with the wrong one: "${said}"`);
      check(/\d+ transactions · \S/.test(said), `candidate ${key} shows no position and rule: "${said}"`);
      check(await box(key).count() === 1, `candidate ${key} is not in the tree`);
      ranked.push(key);
    }
    check(await candidates.nth(0).locator('input[type=radio]').isChecked(), 'the best candidate is not chosen by default');
    const sentence = await text(dialog.locator('.sentence'));
    check(sentence.includes(`Promote ${ranked[0]} to be the new primary of ${cluster}?`) && sentence.includes(`${dead} is fenced`),
      `with the best candidate chosen the dialog says "${sentence}"`);
    check(!(await dialog.locator('[data-action=confirm]').isDisabled()), 'Promote is disabled with a candidate chosen');
    await shot('candidates');
    await cancel();
  });

  await step('while the primary stays dead the tree is not redrawn under the pointer', async () => {
    // MySQL's replicas retry their source every second and count the attempts in their
    // error message: a tree redrawn for that replaced the boxes being dragged. Judged
    // over 2.5 s in which what the tree draws (the page's own `drawnState` of the
    // cluster, read from the API every 250 ms) held still: on a busy machine a probe
    // may time out meanwhile, and a tree redrawn for that is right. A few tries.
    const drawn = () => page.evaluate(async (name) => {
      const { drawnState } = await import('/topology.js');
      const detail = await (await fetch(`/api/v1/clusters/${encodeURIComponent(name)}`)).json();
      return drawnState(detail, null);
    }, cluster);
    const changes = [];
    for (let attempt = 1; attempt <= 5; attempt++) {
      await box(dead).evaluate((el, mark) => { el.dataset.sameBox = mark; }, String(attempt));
      const before = await drawn();
      let steady = true;
      for (let t = 0; t < 10; t++) {
        await page.waitForTimeout(250);
        const now = await drawn();
        if (now !== before) {
          steady = false;
          changes.push(now);
          break;
        }
      }
      if (!steady) continue;
      check(await page.locator(`.board .inst[data-key="${dead}"][data-same-box="${attempt}"]`).count() === 1,
        'the tree was redrawn although nothing drawn had changed');
      return;
    }
    check(false, `what the tree draws never held still for 2.5 s in 5 tries; it became: ${changes.join(' | ')}`);
  });

  await step('dragging the lower-ranked replica onto the dead primary offers to recover with it, not a switchover', async () => {
    await drag(ranked[1], dead);
    const dialog = await recoverDialog();
    check(await dialog.locator(`input[value="${ranked[1]}"]`).isChecked(), `the dialog after dropping ${ranked[1]} has it not chosen`);
    const sentence = await text(dialog.locator('.sentence'));
    check(sentence.includes(`Promote ${ranked[1]} to be the new primary`), `after dropping ${ranked[1]} the dialog says "${sentence}"`);
    await shot('dropped-on-dead-primary');
    await cancel();
  });

  await step('Recover again, choosing the lower-ranked replica: the dialog says so before anything is done', async () => {
    chosen = ranked[1];
    await page.locator('.cluster-head [data-action=recover]').click();
    const dialog = await recoverDialog();
    check(await dialog.locator(`input[value="${ranked[0]}"]`).isChecked(), `opened afresh, the dialog has not chosen the best, ${ranked[0]}`);
    await dialog.locator('.candidate', { has: page.locator(`input[value="${chosen}"]`) }).click();
    check(await dialog.locator(`input[value="${chosen}"]`).isChecked(), `clicking ${chosen} did not choose it`);
    check(!(await dialog.locator(`input[value="${ranked[0]}"]`).isChecked()), `${ranked[0]} is still chosen too`);
    const sentence = await text(dialog.locator('.sentence'));
    check(sentence.includes(`Promote ${chosen} to be the new primary of ${cluster}?`), `after choosing ${chosen} the dialog says "${sentence}"`);
    check(sentence.includes(`replicate from ${chosen}`), `the dialog does not say the others will replicate from ${chosen}: "${sentence}"`);
    const label = await text(dialog.locator('[data-action=confirm]'));
    check(label === 'Promote', `the confirm button says "${label}"`);
    await shot('chosen');
  });

  await step('confirming promotes the chosen replica, and the page says it succeeded', async () => {
    const dialog = page.locator('dialog[open]');
    await dialog.locator('[data-action=confirm]').click();
    await dialog.waitFor({ state: 'detached', timeout: 5000 }).catch(() => {});
    const result = page.locator('.notice-ok', { hasText: `Recovery of ${cluster} succeeded` }).first();
    await result.waitFor({ timeout: PATIENCE });
    const said = await text(result.locator('.notice-text'));
    check(said.includes(`${chosen} is the new primary`), `the result says "${said}", not that ${chosen} is the new primary`);
    check(await page.locator('.notice-error').count() === 0, `an error is shown: ${await page.locator('.notice-error').allTextContents()}`);
    await shot('result');
  });

  await step('the tree redraws live: the chosen replica is the primary, the other replicates from it, the old one is fenced', async () => {
    await page.waitForFunction((key) => {
      const root = document.querySelector('.tree > .subtree > .cell > .inst');
      return root && root.dataset.key === key && root.dataset.role === 'primary';
    }, chosen, { timeout: PATIENCE });
    const other = ranked[0];
    await page.waitForFunction(([parent, child]) => {
      const box = document.querySelector(`.board .inst[data-key="${parent}"]`);
      const children = box && box.closest('.subtree').querySelector(':scope > .children');
      return !!(children && children.querySelector(`.inst[data-key="${child}"][data-role="replica"]`));
    }, [chosen, other], { timeout: PATIENCE });
    await page.waitForFunction((key) => {
      const box = document.querySelector(`.board .inst[data-key="${key}"]`);
      return box && box.dataset.role === 'fenced_primary' && box.querySelector('.badge[data-code=fenced]');
    }, dead, { timeout: PATIENCE });
    const fencedBox = await text(box(dead));
    check(/fenced/i.test(fencedBox), `the old primary's box says "${fencedBox}"`);
    check(await page.locator('.banner-problem[data-code=DeadPrimary]').count() === 0, 'the Dead primary banner is still shown');
    await page.locator('.cluster-head [data-action=switchover]').waitFor({ timeout: PATIENCE });
    check(await page.locator('.cluster-head [data-action=recover]').count() === 0, 'the heading still offers Recover');
    const head = await text(page.locator('.cluster-head'));
    check(head.includes(`primary ${chosen}`), `the heading says "${head}", not primary ${chosen}`);
    check(await page.evaluate(() => window.notReloaded === true), 'the page was reloaded');
    await shot('recovered');
  });

  await step('the recovery is listed on the cluster page, from the dead primary to the chosen one', async () => {
    const card = page.locator('.recent .recovery', { hasText: `of ${cluster}` }).first();
    await card.waitFor({ timeout: PATIENCE });
    const said = await text(card);
    check(/succeeded/.test(said), `the recovery card says "${said}"`);
    check(said.includes(`${dead}`) && said.includes(`${chosen}`), `the recovery card "${said}" does not name ${dead} → ${chosen}`);
    check(await box(dead).locator('.pill').count() === 0, `the fenced old primary's box claims a read_only state: "${await text(box(dead))}"`);
  });

  await step('the recovery is announced until acknowledged: what failed, who took over, how long, the steps', async () => {
    const banner = page.locator('.alerts .banner-recovery');
    await banner.waitFor({ timeout: PATIENCE });
    const said = await text(banner);
    check(said.includes(`${dead} failed; ${chosen} took over in`), `the announcement says "${said}", not that ${chosen} took over from ${dead}`);
    check(said.includes('not acknowledged') && said.includes('by api 127.0.0.1'), `the announcement "${said}" does not say who acted and that nobody acknowledged it`);
    check(/is fenced/.test(said), `the announcement "${said}" does not say the old primary is fenced`);
    await banner.locator('summary').click();
    check(await banner.locator('.steps tr').count() > 3, 'the announcement lists no steps');
    check(await banner.locator('[data-action=acknowledge]').count() === 1, 'the announcement has no Acknowledge button');
    await shot('announced');
  });

  await step('the dashboard announces it too, with a link to the cluster', async () => {
    await page.goto(`${url}/#/`);
    const banner = page.locator(`.announcements .banner-recovery[data-cluster="${cluster}"]`);
    await banner.waitFor({ timeout: PATIENCE });
    const said = await text(banner);
    check(said.startsWith(`${cluster}: Failover at`) || said.includes(`${cluster}: Failover at`), `the dashboard's announcement says "${said}"`);
    await shot('dashboard-announced');
    await banner.locator('a', { hasText: 'Open' }).click();
    await page.locator('.alerts .banner-recovery').waitFor({ timeout: PATIENCE });
  });

  await step('acknowledging it ends the announcement, here and on the dashboard', async () => {
    await page.locator('.alerts .banner-recovery [data-action=acknowledge]').click();
    const dialog = page.locator('dialog[open]');
    await dialog.waitFor({ timeout: 5000 });
    await dialog.locator('input[name=comment]').fill('looked at it');
    await dialog.locator('[data-action=confirm]').click();
    await page.locator('.alerts .banner-recovery').waitFor({ state: 'detached', timeout: PATIENCE });
    await page.goto(`${url}/#/`);
    await page.locator(`.cluster-row[data-cluster="${cluster}"]`).waitFor({ timeout: PATIENCE });
    check(await page.locator('.announcements .banner-recovery').count() === 0, 'the dashboard still announces the acknowledged recovery');
    await shot('acknowledged');
  });

  console.log(`chosen: ${chosen}`);
});
