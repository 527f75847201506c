// Other sites' pages against an agent with no token (started by tests/web.rs, which
// then checks with the servers that nothing changed):
//
//   node web-tests/cross-origin.mjs <agent url> <cluster> <screenshot dir>
//
// A page served from another origin (another loopback port, by this script) tries what
// a browser lets any page do without asking: a `text/plain` fetch (mode no-cors), a
// JSON fetch (which needs a CORS preflight), an HTML form POST, and a form with
// enctype text/plain whose body is JSON — at switchover, recover, the automatic
// recovery switch and downtime. Then a DNS-rebinding page: a name the attacker owns,
// resolved (by the browser's own resolver rules here) to the agent's address. Every
// request must reach the agent and be refused by it; the script prints how many did.

import { createServer } from 'node:http';
import { check, openPage, showFailure } from './harness.mjs';

const [url, cluster, outDir] = process.argv.slice(2);
if (!url || !cluster || !outDir) {
  console.error('usage: node web-tests/cross-origin.mjs <agent url> <cluster> <screenshot dir>');
  process.exit(2);
}
const PATIENCE = 30_000;
const agent = new URL(url);
const c = encodeURIComponent(cluster);

/** The attacker's page: every attempt, each reporting when the agent answered. */
function attackerPage() {
  const target = (path) => `${url}${path}`;
  const forms = [
    ['recover', `/api/v1/clusters/${c}/recover`, ''],
    ['switchover', `/api/v1/clusters/${c}/switchover`, 'text/plain'],
    ['recovery-switch', '/api/v1/recovery', 'text/plain'],
  ].map(([name, path, enctype]) => `
    <iframe name="frame-${name}" id="frame-${name}"></iframe>
    <form id="form-${name}" method="POST" action="${target(path)}" target="frame-${name}"
          ${enctype ? `enctype="${enctype}"` : ''}>
      <input name='{"automatic": false, "to": null, "x": "' value='"}'>
    </form>`).join('\n');
  return `<!doctype html><html><head><title>not pointsman</title></head><body>
<h1>A page of another origin</h1>
${forms}
<script>
window.results = {};
const report = (name, outcome) => { window.results[name] = outcome; };
const attempts = [
  ['fetch-switchover', '/api/v1/clusters/${c}/switchover', 'POST'],
  ['fetch-recover', '/api/v1/clusters/${c}/recover', 'POST'],
  ['fetch-recovery-switch', '/api/v1/recovery', 'PUT'],
  ['fetch-downtime', '/api/v1/instances/127.0.0.1:1/downtime', 'PUT'],
];
for (const [name, path, method] of attempts) {
  // A "simple" request (POST, text/plain) goes out without a preflight; the answer
  // is opaque, but it resolves only once the agent has answered.
  fetch(${JSON.stringify(url)} + path, {
    method: method === 'PUT' ? 'POST' : method, mode: 'no-cors',
    headers: { 'Content-Type': 'text/plain' },
    body: '{"automatic": false, "duration": "1h", "reason": "attack"}',
  }).then(() => report(name, 'answered'), (e) => report(name, 'failed: ' + e.message));
  // A JSON request needs a preflight, which the agent does not grant.
  fetch(${JSON.stringify(url)} + path, {
    method, headers: { 'Content-Type': 'application/json' },
    body: '{"automatic": false, "duration": "1h", "reason": "attack"}',
  }).then(() => report(name + '-json', 'answered'), (e) => report(name + '-json', 'blocked'));
}
for (const form of document.querySelectorAll('form')) form.submit();
</script></body></html>`;
}

const server = createServer((request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
  response.end(attackerPage());
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const attacker = `http://127.0.0.1:${server.address().port}`;

// The rebinding name resolves to the agent's address, as an attacker's DNS would.
const { browser, page, pageErrors, shot, step, steps } = await openPage(
  outDir, /status of (4|5)\d\d|CORS|Failed to load|net::ERR_FAILED/,
  [`--host-resolver-rules=MAP rebound.test ${agent.hostname}`],
);

try {
  await step(`a page from ${attacker} sends simple and JSON requests and forms to the agent`, async () => {
    await page.goto(attacker + '/');
    const expected = 4 * 2;
    await page.waitForFunction((n) => Object.keys(window.results).length === n, expected, { timeout: PATIENCE });
    const results = await page.evaluate(() => window.results);
    for (const [name, outcome] of Object.entries(results)) {
      const wanted = name.endsWith('-json') ? 'blocked' : 'answered';
      check(outcome === wanted, `${name}: ${outcome}, expected ${wanted}`);
    }
    console.log(`requests answered by the agent: ${Object.values(results).filter((o) => o === 'answered').length}`);
    await shot('attacker-page');
  });

  await step('the forms got the agent\'s refusal, which says what to do', async () => {
    for (const name of ['recover', 'switchover', 'recovery-switch']) {
      const frame = page.frameLocator(`#frame-${name}`);
      await frame.locator('body', { hasText: 'Content-Type: application/json' }).waitFor({ timeout: PATIENCE })
        .catch(async () => {
          const said = await frame.locator('body').textContent().catch(() => '(nothing)');
          check(false, `the ${name} form was answered "${said}"`);
        });
    }
    await shot('forms-refused');
  });

  await step('a DNS-rebinding page (rebound.test on the agent\'s address) is refused', async () => {
    const rebound = `http://rebound.test:${agent.port}/`;
    const response = await page.goto(rebound);
    check(response.status() === 403, `${rebound} answered ${response.status()}`);
    const said = await page.locator('body').textContent();
    check(said.includes('api.allowed_hosts'), `${rebound} said "${said}"`);
    const api = await page.evaluate(async () => {
      const answer = await fetch('/api/v1/clusters');
      return [answer.status, await answer.text()];
    });
    check(api[0] === 403, `GET /api/v1/clusters by the rebound name answered ${api[0]}: ${api[1]}`);
    await shot('rebound');
  });

  await step('the agent\'s own page still loads and lists the cluster', async () => {
    await page.goto(url + '/');
    await page.locator(`.cluster-row[data-cluster="${cluster}"]`).waitFor({ timeout: PATIENCE });
  });

  check(pageErrors.length === 0, `the page logged errors: ${pageErrors.join(' | ')}`);
  console.log(`all ${steps()} steps passed; screenshots in ${outDir}`);
  await browser.close();
  server.close();
} catch (error) {
  console.error(`not ok ${steps() + 1} - ${error.message}`);
  await showFailure(page, shot, pageErrors, outDir);
  await browser.close();
  server.close();
  process.exit(1);
}
