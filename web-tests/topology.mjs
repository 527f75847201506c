// The web page in a real browser, against a real agent watching a real sandbox
// (started by tests/web.rs, which runs this script and wants exit code 0):
//
//   node web-tests/topology.mjs <agent url> <cluster> <screenshot dir>
//
// Debian's Chromium (/usr/bin/chromium, or $POINTSMAN_CHROMIUM), headless, driven by
// playwright-core — which never downloads a browser of its own. Each step prints one
// line; a failure prints what the page showed, saves failure.png and exits 1.

import { check, drag as dragBoxes, openPage, runSteps } from './harness.mjs';

const [url, cluster, outDir] = process.argv.slice(2);
if (!url || !cluster || !outDir) {
  console.error('usage: node web-tests/topology.mjs <agent url> <cluster> <screenshot dir>');
  process.exit(2);
}
const PATIENCE = 30_000;

/** The agent's API, called directly (not through the page): changes "from outside". */
async function api(method, path, body) {
  const response = await fetch(url + path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// A refused action's 4xx shows in the console as a failed load: expected, not a bug.
const session = await openPage(outDir, /status of (4|5)\d\d/);
const { page, shot, step } = session;
const box = (key) => page.locator(`.board .inst[data-key="${key}"]`);

/** Drags the box of `from` onto the box of `to`. */
const drag = (from, to) => dragBoxes(page, box(from), box(to));

/** Waits for the confirmation, checks its sentence and confirms. */
async function confirm(expected) {
  const dialog = page.locator('dialog[open]');
  await dialog.waitFor({ timeout: 5000 });
  const sentence = (await dialog.locator('.sentence').first().textContent()).trim();
  for (const part of expected) {
    check(sentence.includes(part), `the confirmation says "${sentence}", expected it to mention "${part}"`);
  }
  await dialog.locator('[data-action=confirm]').click();
  await dialog.waitFor({ state: 'detached', timeout: 5000 }).catch(() => {});
  return sentence;
}

/** Waits for a notice of `kind` (ok | error) containing `text`; returns its words. */
async function notice(kind, text) {
  const locator = page.locator(`.notice-${kind}`, { hasText: text }).first();
  await locator.waitFor({ timeout: PATIENCE });
  return (await locator.locator('.notice-text').textContent()).trim();
}

/** Where `key`'s box is, measured again if the live page replaced it meanwhile. */
async function measure(key) {
  for (const started = Date.now(); Date.now() - started < 10_000;) {
    const r = await box(key).boundingBox({ timeout: 1_000 }).catch(() => null);
    if (r) return r;
  }
  check(false, `cannot measure the box of ${key}`);
  return null;
}

/** Presses on `key`'s box and moves far enough to start a drag (the button stays down). */
async function press(key) {
  const r = await measure(key);
  await page.mouse.move(r.x + r.width / 2, r.y + 24);
  await page.mouse.down();
  await page.mouse.move(r.x + r.width / 2 + 14, r.y + 40, { steps: 3 });
  await page.locator('.ghost').waitFor({ timeout: 5000 });
}

/** Moves the pressed pointer over `key`'s box, at `fraction` of its height. */
async function hover(key, fraction) {
  const r = await measure(key);
  await page.mouse.move(r.x + r.width / 2, r.y + r.height * fraction, { steps: 8 });
}

const isTarget = (key) => box(key).evaluate((el) => el.classList.contains('drop-target'));

/** The key in the leftmost box: the primary as the page draws it. */
const rootKey = () => page.locator('.tree > .subtree > .cell > .inst').getAttribute('data-key');

await runSteps(session, outDir, async () => {
  const detail = await api('GET', `/api/v1/clusters/${encodeURIComponent(cluster)}`);
  const primary = detail.primary;
  const replicas = detail.instances.filter((v) => v.role !== 'primary').map((v) => v.key).sort();
  check(replicas.length === 2, `expected a primary and 2 replicas, the agent says ${JSON.stringify(detail.instances.map((v) => [v.key, v.role]))}`);
  const [a, b] = replicas;

  await step('the dashboard lists the cluster with its primary and 3 instances', async () => {
    await page.goto(url + '/');
    const row = page.locator(`.cluster-row[data-cluster="${cluster}"]`);
    await row.waitFor({ timeout: PATIENCE });
    const text = await row.textContent();
    check(text.includes(primary), `the cluster row says "${text}", not the primary ${primary}`);
    check(text.includes('3 instances'), `the cluster row says "${text}", not "3 instances"`);
    await page.locator('.connection', { hasText: 'Live' }).waitFor({ timeout: PATIENCE });
    await shot('dashboard');
  });

  await step('Discover takes host:port in one field', async () => {
    await page.locator('form.discover input[name=host]').fill(primary);
    await page.locator('form.discover input[name=port]').fill('1');
    await page.locator('form.discover button[type=submit]').click();
    const said = await notice('ok', `Discovered ${primary}`);
    check(said.includes(`in cluster ${cluster}`), `the result says "${said}"`);
    check((await page.locator('form.discover input[name=port]').inputValue()) === primary.split(':').pop(), 'the port field does not show the port that was used');
  });

  await step('the topology shows 3 instances, the primary at the left', async () => {
    await page.locator(`.cluster-row[data-cluster="${cluster}"]`).click();
    await page.waitForFunction((n) => document.querySelectorAll('.board .inst').length === n, 3, { timeout: PATIENCE });
    check((await rootKey()) === primary, `the leftmost box is ${await rootKey()}, not the primary ${primary}`);
    for (const key of replicas) {
      check(await box(key).count() === 1, `no box for ${key}`);
    }
    check((await page.locator('.hint').textContent()).includes('Drag a replica onto the primary'), 'no hint on how to switch over');
    // Before anything fails: a failure of the primary would be recovered automatically.
    const coverage = page.locator('.cluster-head [data-coverage=on]');
    check(await coverage.count() === 1, `the heading does not say automatic recovery is on: "${await page.locator('.cluster-head').textContent()}"`);
    check((await coverage.textContent()).includes('Automatic recovery on'), `the coverage says "${await coverage.textContent()}"`);
    check(await page.locator('.banner-recovery').count() === 0, 'a recovery is announced before any was made');
    await page.evaluate(() => { window.notReloaded = true; });
    await shot('topology');
  });

  await step('"Switch over…" names the replica it would promote, and why, before anything is done', async () => {
    const best = (await api('GET', `/api/v1/clusters/${encodeURIComponent(cluster)}/candidates`)).verdicts.find((v) => v.eligible);
    check(best, 'the agent ranks no eligible replica');
    await page.locator('.cluster-head [data-action=switchover]').click();
    const dialog = page.locator('dialog[open]');
    await dialog.waitFor({ timeout: 5000 });
    const named = dialog.locator('[data-field=candidate]');
    await named.waitFor({ timeout: PATIENCE });
    check((await named.textContent()) === best.instance, `the dialog names ${await named.textContent()}, the agent ranks ${best.instance} first`);
    const said = (await dialog.locator('.sentence').textContent()).replace(/\s+/g, ' ');
    check(said.includes(`Make ${best.instance} the new primary of ${cluster}?`) && said.includes('ranks first of 2 replicas') && said.includes(`${best.position} transactions`),
      `the dialog says "${said}"`);
    await shot('switchover-named');
    await dialog.locator('[data-action=cancel]').click();
    await dialog.waitFor({ state: 'detached', timeout: 5000 });
    check((await rootKey()) === primary, 'cancelling the switchover changed the primary');
  });

  await step('"What if…" says who a failure of the primary would bring, and changes nothing', async () => {
    const answer = await api('GET', `/api/v1/clusters/${encodeURIComponent(cluster)}/what-if`);
    check(answer.automatic && answer.candidate, `the agent answers ${JSON.stringify(answer)}`);
    await page.locator('.cluster-head [data-action=what-if]').click();
    const dialog = page.locator('dialog[open]');
    await dialog.waitFor({ timeout: 5000 });
    const named = dialog.locator('[data-field=candidate]');
    await named.waitFor({ timeout: PATIENCE });
    check((await named.textContent()) === answer.candidate, `the dialog names ${await named.textContent()}, the agent ${answer.candidate}`);
    const said = (await dialog.locator('.sentence').textContent()).replace(/\s+/g, ' ');
    check(said.includes(`If ${primary} died now, this agent would recover ${cluster} by itself.`), `the dialog says "${said}"`);
    check(await dialog.locator('[data-action=cancel]').count() === 0, 'a dialog that changes nothing offers Cancel');
    await shot('what-if');
    await dialog.locator('[data-action=confirm]').click();
    await dialog.waitFor({ state: 'detached', timeout: 5000 });
    check((await rootKey()) === primary, 'asking what if changed the primary');
  });

  await step('with "type the cluster\'s name" chosen, Switch over is confirmed only once the name is typed', async () => {
    await page.locator('nav a[data-nav=clusters]').click();
    await page.locator('input[name=type-to-confirm]').check();
    await page.locator(`.cluster-row[data-cluster="${cluster}"]`).click();
    await page.locator('.cluster-head [data-action=switchover]').click();
    const dialog = page.locator('dialog[open]');
    await dialog.locator('[data-field=candidate]').waitFor({ timeout: PATIENCE });
    const confirmButton = dialog.locator('[data-action=confirm]');
    check(await confirmButton.isDisabled(), 'Switch over can be confirmed before the name is typed');
    await page.keyboard.press('Enter');
    check(await dialog.count() === 1, 'Enter in the empty name field confirmed or closed the dialog');
    await dialog.locator('input[name=typed-name]').fill(`${cluster}x`);
    check(await confirmButton.isDisabled(), 'a wrong name enables Switch over');
    await dialog.locator('input[name=typed-name]').fill(cluster);
    check(!(await confirmButton.isDisabled()), 'the right name does not enable Switch over');
    await shot('switchover-typed');
    await dialog.locator('[data-action=cancel]').click();
    await dialog.waitFor({ state: 'detached', timeout: 5000 });
    await page.locator('nav a[data-nav=clusters]').click();
    await page.locator('input[name=type-to-confirm]').uncheck();
    await page.locator(`.cluster-row[data-cluster="${cluster}"]`).click();
    await page.waitForFunction((n) => document.querySelectorAll('.board .inst').length === n, 3, { timeout: PATIENCE });
    check((await rootKey()) === primary, 'the primary changed');
  });

  await step(`two Enters on "Stop replication…" of ${b} only open and close the dialog: Cancel has the focus`, async () => {
    await box(b).click();
    const open = page.locator('.panel [data-action=stop-replication]');
    await open.waitFor({ timeout: PATIENCE });
    await open.focus();
    await page.keyboard.press('Enter');
    await page.locator('dialog[open]').waitFor({ timeout: 5000 });
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.dataset.action);
    check(focused === 'cancel', `the dialog gave the focus to "${focused}", not Cancel`);
    await page.waitForTimeout(120);
    await page.keyboard.press('Enter');
    await page.locator('dialog[open]').waitFor({ state: 'detached', timeout: 5000 });
    check(await page.locator('.notice').count() === 0, `closing the dialog did something: ${await page.locator('.notice').allTextContents()}`);
    // Nothing may follow: give a stray request a second to land, then ask the agent,
    // which audits every action as it takes it.
    await page.waitForTimeout(1000);
    const audit = await api('GET', '/api/v1/audit?limit=50');
    const stopped = audit.filter((r) => r.message.includes(`replication stopped on ${b}`));
    check(stopped.length === 0, `two Enters stopped replication on ${b}: ${JSON.stringify(stopped)}`);
    await page.keyboard.press('Escape');
  });

  await step(`stopping replication on ${a} makes its badge appear without a reload`, async () => {
    await api('POST', `/api/v1/instances/${encodeURIComponent(a)}/replication`, { running: false });
    await box(a).locator('.badge[data-code=ReplicationStopped]').waitFor({ timeout: PATIENCE });
    const badge = (await box(a).locator('.badge[data-code=ReplicationStopped]').textContent()).trim();
    check(/replication stopped/i.test(badge), `the badge says "${badge}"`);
    check(await box(a).locator('.badge svg').count() > 0, 'the badge has no icon');
    check(await page.evaluate(() => window.notReloaded === true), 'the page was reloaded');
    check(await page.locator('.finding-problem', { hasText: a }).count() > 0, `"What is wrong" does not list ${a}`);
    await shot('replication-stopped');
  });

  await step(`the Problems page lists ${a}'s stopped replication, and the search finds ${a}`, async () => {
    await page.locator('#problem-count', { hasText: '1' }).waitFor({ timeout: PATIENCE });
    await page.locator('nav a[data-nav=problems]').click();
    // Both threads were stopped: a row for each.
    const rows = page.locator('.problems-table tbody tr', { hasText: a });
    await rows.filter({ hasText: 'SQL thread is stopped' }).waitFor({ timeout: PATIENCE });
    await rows.filter({ hasText: 'IO thread is stopped' }).waitFor({ timeout: PATIENCE });
    const said = (await rows.first().textContent()).replace(/\s+/g, ' ');
    check(said.includes(cluster) && said.includes('Problem'), `the Problems row says "${said}"`);
    await shot('problems');
    await page.locator('#search input').fill(a);
    await page.locator('#search input').press('Enter');
    await page.locator('.panel h2', { hasText: a }).waitFor({ timeout: PATIENCE });
    check(decodeURIComponent(await page.evaluate(() => location.hash)).startsWith(`#/cluster/${cluster}`), 'the search did not lead to the cluster');
    await page.waitForFunction((n) => document.querySelectorAll('.board .inst').length === n, 3, { timeout: PATIENCE });
    await page.locator('.panel .icon-button[title=Close]').click();
    check(await page.evaluate(() => window.notReloaded === true), 'the page was reloaded');
  });

  await step(`dragging the stopped ${a} onto the primary is refused, and the page says why`, async () => {
    await drag(a, primary);
    await confirm([`Make ${a} the new primary of ${cluster}?`, `${primary} becomes its replica`]);
    const text = await notice('error', 'not done');
    check(text.length > `Switchover of ${cluster} not done: `.length + 10, `the error notice says only "${text}"`);
    check((await rootKey()) === primary, `after a refused switchover the leftmost box is ${await rootKey()}`);
    await shot('switchover-refused');
  });

  await step(`"Start replication" on ${a} from its panel clears the badge`, async () => {
    await box(a).click();
    await page.locator('.panel [data-action=start-replication]').click();
    await confirm([`Start replication on ${a}?`]);
    await notice('ok', a);
    await box(a).locator('.badge[data-code=ReplicationStopped]').waitFor({ state: 'detached', timeout: PATIENCE });
    await page.locator('.panel .icon-button[title=Close]').click();
  });

  await step(`dragging ${b} onto ${a} moves it below ${a}`, async () => {
    await drag(b, a);
    await confirm([`Move ${b} below ${a}?`, `instead of ${primary}`]);
    await notice('ok', b);
    await page.waitForFunction(([parent, child]) => {
      const box = document.querySelector(`.board .inst[data-key="${parent}"]`);
      const children = box && box.closest('.subtree').querySelector(':scope > .children');
      return !!(children && children.querySelector(`.inst[data-key="${child}"]`));
    }, [a, b], { timeout: PATIENCE });
    await page.waitForFunction((key) => document.querySelector(`.board .inst[data-key="${key}"]`).dataset.role === 'intermediate_primary', a, { timeout: PATIENCE });
    await shot('relocated');
  });

  await step(`while ${a} is dragged only valid targets light up: not its own replica ${b}; the primary only as a switchover`, async () => {
    await press(a);
    check(!(await isTarget(b)), `${b}, a replica of ${a}, lights up as a target (a loop)`);
    check(await isTarget(primary), `the primary ${primary} does not light up`);
    check(!(await box(primary).evaluate((el) => el.classList.contains('two-zones'))), `the primary, already ${a}'s source, offers to move ${a} below it`);
    await hover(primary, 0.75);
    check((await page.locator('.ghost-caption').textContent()).includes(`Make ${a} the primary`), `over the primary the ghost says "${await page.locator('.ghost-caption').textContent()}"`);
    await shot('drag-valid-targets');
    // Dropped on its own replica, where nothing lights up: nothing happens.
    await hover(b, 0.5);
    check((await page.locator('.ghost-caption').textContent()).includes('Drop it on a highlighted instance'), `over its own replica the ghost says "${await page.locator('.ghost-caption').textContent()}"`);
    await page.mouse.up();
    await page.locator('.ghost').waitFor({ state: 'detached', timeout: 5000 });
    check(await page.locator('dialog[open]').count() === 0, `dropping ${a} on its own replica opened a dialog`);
  });

  await step(`${b} dropped on the primary's lower half moves back below it, with no switchover`, async () => {
    await press(b);
    check(!(await isTarget(a)), `${a}, ${b}'s source already, lights up as a target`);
    check(await box(primary).evaluate((el) => el.classList.contains('two-zones')), 'the primary does not offer its two halves');
    await hover(primary, 0.25);
    check((await page.locator('.ghost-caption').textContent()).includes(`Make ${b} the primary`), `over the upper half the ghost says "${await page.locator('.ghost-caption').textContent()}"`);
    await hover(primary, 0.8);
    const caption = await page.locator('.ghost-caption').textContent();
    check(caption.includes(`Move ${b} below the primary (no switchover)`), `over the lower half the ghost says "${caption}"`);
    await shot('drag-lower-half');
    await page.mouse.up();
    await confirm([`Move ${b} below ${primary}?`, `instead of ${a}`]);
    await notice('ok', b);
    await page.waitForFunction((key) => document.querySelector(`.board .inst[data-key="${key}"]`).dataset.role === 'replica', a, { timeout: PATIENCE });
    check((await rootKey()) === primary, 'the primary changed');
  });

  await step(`"Move its 2 replicas…" on the primary moves ${b} below ${a} at once`, async () => {
    await box(primary).click();
    await page.locator('.panel [data-action=relocate-replicas]').click();
    const dialog = page.locator('dialog[open]');
    await dialog.waitFor({ timeout: 5000 });
    await dialog.locator('select').selectOption(a);
    await confirm([`Move 1 replica of ${primary} (${b}) below ${a}?`]);
    await notice('ok', `${b} now replicates from ${a}`);
    await page.waitForFunction((key) => document.querySelector(`.board .inst[data-key="${key}"]`).dataset.role === 'intermediate_primary', a, { timeout: PATIENCE });
    await page.locator('.panel .icon-button[title=Close]').click();
    await shot('replicas-moved');
  });

  await step(`dragging ${a} onto the primary switches over, and the tree redraws with ${a} at the left`, async () => {
    await drag(a, primary);
    await confirm([`Make ${a} the new primary of ${cluster}?`, `${primary} becomes its replica`]);
    const text = await notice('ok', 'is the new primary');
    check(text.includes(a), `the result says "${text}"`);
    await page.waitForFunction((key) => {
      const root = document.querySelector('.tree > .subtree > .cell > .inst');
      return root && root.dataset.key === key && root.dataset.role === 'primary';
    }, a, { timeout: PATIENCE });
    await page.waitForFunction((n) => document.querySelectorAll('.board .inst').length === n, 3, { timeout: PATIENCE });
    check(await box(primary).count() === 1, `the old primary ${primary} is not in the tree any more`);
    check(await page.evaluate(() => window.notReloaded === true), 'the page was reloaded');
    await page.locator('.health-ok').first().waitFor({ timeout: PATIENCE });
    await shot('switched-over');
  });

  await step(`a switchover made elsewhere (the API) moves the tree, and the routing and recoveries panels follow at once`, async () => {
    // Live, these panels read again only when the stream says the routes or the
    // recoveries changed: no timer would catch up here.
    const writer = page.locator('.route-summary .mono.strong');
    await page.waitForFunction((key) => {
      const el = document.querySelector('.route-summary .mono.strong');
      return el && el.textContent.trim() === key;
    }, a, { timeout: PATIENCE });
    await api('POST', `/api/v1/clusters/${encodeURIComponent(cluster)}/switchover`, { to: primary });
    await page.waitForFunction((key) => {
      const root = document.querySelector('.tree > .subtree > .cell > .inst');
      return root && root.dataset.key === key && root.dataset.role === 'primary';
    }, primary, { timeout: PATIENCE });
    const treeMoved = Date.now();
    await page.waitForFunction((key) => {
      const el = document.querySelector('.route-summary .mono.strong');
      return el && el.textContent.trim() === key;
    }, primary, { timeout: 3000 });
    const routed = Date.now() - treeMoved;
    await page.waitForFunction((key) => [...document.querySelectorAll('.recovery .recovery-what .mono.strong')]
      .some((successor) => successor.textContent.trim() === key), primary, { timeout: 3000 });
    console.log(`the routing panel named the new primary ${routed} ms after the tree did`);
    check((await writer.textContent()).trim() === primary, 'the routing panel names another writer');
    await shot('panels-follow');
  });

  await step('the recoveries page lists the switchover with its steps', async () => {
    await page.locator('nav a[data-nav=recoveries]').click();
    const card = page.locator('.recovery', { hasText: `switchover of ${cluster}` }).first();
    await card.waitFor({ timeout: PATIENCE });
    check((await card.textContent()).includes(a), 'the switchover record does not name the new primary');
    // A recovery made elsewhere appears on this page by itself.
    const before = await page.locator('.recovery').count();
    await api('POST', `/api/v1/clusters/${encodeURIComponent(cluster)}/switchover`, { to: a });
    await page.waitForFunction((n) => document.querySelectorAll('.recovery').length > n, before, { timeout: 5000 });
    await page.locator('nav a[data-nav=audit]').click();
    await page.locator('.audit td', { hasText: 'switchover' }).first().waitFor({ timeout: PATIENCE });
    await shot('audit');
  });

});
