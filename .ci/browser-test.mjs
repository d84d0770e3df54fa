// browser-test.mjs: checks the Swagger UI page at BASE/docs/ in Debian's headless Chromium.
//
// Usage (Node 20, as root; nothing is downloaded at run time, no browser download ever):
//   apt-get install -y chromium                      # provides /usr/bin/chromium
//   tmp="$(mktemp -d)"
//   npm install --no-save --no-audit --no-fund --prefix "$tmp" playwright-core@1.65.1
//   NODE_PATH="$tmp/node_modules" node browser-test.mjs http://127.0.0.1:8080
//
// How playwright-core is found: ES `import` ignores NODE_PATH, so this script loads it with
// createRequire(), whose CommonJS resolution does honour NODE_PATH. PLAYWRIGHT_CORE=/abs/path/to/
// node_modules/playwright-core overrides that. playwright-core has no install script and never
// fetches a browser; we launch /usr/bin/chromium (override: CHROMIUM=/path).
//
// Checks, each printed as PASS/FAIL with a one-line reason; exit 0 only if all pass:
//   ops         every (method, path) in BASE/openapi.json `paths` is rendered as an .opblock
//   console     zero console errors and zero uncaught page errors
//   origin      zero requests to any origin other than BASE's (requests elsewhere are also aborted,
//               so the test itself never sends traffic off the machine), and zero attempts at one
//               that the page's CSP blocked before sending (from securitypolicyviolation blockedURI)
//   csp         zero CSP violations (securitypolicyviolation events + CSP console messages)
//   tryitout    POST /egfr and POST /crcl: Try it out + Execute with the default example shows 200;
//               POST /crcl again with the response media type application/fhir+json: 200, an Observation
//   authorize   only when env TOKEN is set (else prints SKIP): Authorize dialog -> bearerAuth value =
//               TOKEN -> Authorize -> Close; then POST /Patient: Try it out, a small Patient body,
//               Execute; passes if the page shows 201 and the request Swagger UI sent carried
//               `Authorization: Bearer <TOKEN>`. Only the bearerAuth (http bearer) form is touched,
//               never an openIdConnect/oauth2 one. The token is never printed (output is redacted).
//               console/origin/csp above cover this part too.
// Optional env: TOKEN (see authorize); VERBOSE=1 lists every request; SCREENSHOT=/tmp/docs.png
// saves a full-page PNG (with TOKEN set, it may show the token in Swagger UI's curl box);
// RENDER_TIMEOUT_MS (default 30000).
// and prints the bytes transferred for the page load (sum of response body sizes).
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
let chromium;
try {
  ({ chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core'));
} catch (e) {
  console.error('FAIL setup: cannot load playwright-core (set NODE_PATH="$tmp/node_modules", see top of file): ' + e.message);
  process.exit(2);
}

const baseArg = process.argv[2];
if (!baseArg) {
  console.error('usage: node browser-test.mjs BASE_URL   (e.g. http://127.0.0.1:8080)');
  process.exit(2);
}
const BASE = new URL(baseArg);
const ORIGIN = BASE.origin;
const DOCS_URL = new URL('/docs/', BASE).href;
const SPEC_URL = new URL('/openapi.json', BASE).href;
const RENDER_TIMEOUT_MS = Number(process.env.RENDER_TIMEOUT_MS || 30000);
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

// Never print the token: every line this script prints goes through redact().
const TOKEN = (process.env.TOKEN || '').trim();
const redact = (s) => (TOKEN && typeof s === 'string' ? s.split(TOKEN).join('<TOKEN>') : s);
for (const k of ['log', 'error', 'warn']) {
  const orig = console[k].bind(console);
  console[k] = (...args) => orig(...args.map(redact));
}

const failures = [];
let passes = 0;
const fail = (check, reason) => { failures.push(check); console.log(`FAIL ${check}: ${reason}`); };
const pass = (check, info) => { passes++; console.log(`PASS ${check}: ${info}`); };
const short = (s, n = 200) => (s.length > n ? s.slice(0, n) + '…' : s);

// 1. The spec, fetched directly (Node's fetch), gives the expected operations.
let expected = [];
try {
  const res = await fetch(SPEC_URL);
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  const spec = await res.json();
  for (const [p, item] of Object.entries(spec.paths || {})) {
    for (const m of METHODS) if (item && typeof item === 'object' && item[m]) expected.push(`${m.toUpperCase()} ${p}`);
  }
} catch (e) {
  console.log(`FAIL spec: cannot read ${SPEC_URL}: ${e.message}`);
  process.exit(1);
}
console.log(`spec: ${expected.length} operations in ${SPEC_URL}`);

const userDataDir = mkdtempSync(join(tmpdir(), 'docs-browser-test-'));
const browser = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  bypassCSP: false,
  serviceWorkers: 'block',
});
const context = browser; // a persistent context is the browser context

const consoleErrors = [];     // {phase, text}
const pageErrors = [];
const cspViolations = [];     // strings
const requests = [];          // every request URL, in order
const foreign = [];           // requests to another origin
const failedRequests = [];
let phase = 'load';
let loadBytes = 0, loadHeaderBytes = 0, loadResponses = 0;
let allBytes = 0;
const pendingSizes = [];

const isNetworkUrl = (u) => u.startsWith('http:') || u.startsWith('https:') || u.startsWith('ws:') || u.startsWith('wss:');

// Record every request in the context; abort (after recording) anything not on BASE's origin.
await context.route('**/*', (route) => {
  const u = route.request().url();
  if (isNetworkUrl(u) && new URL(u).origin !== ORIGIN) return route.abort('blockedbyclient');
  return route.continue();
});
context.on('request', (req) => {
  const u = req.url();
  requests.push(`${req.method()} ${u}`);
  if (isNetworkUrl(u) && new URL(u).origin !== ORIGIN) foreign.push(`${req.method()} ${u}`);
  else if (!isNetworkUrl(u) && !u.startsWith('data:') && !u.startsWith('blob:') && u !== 'about:blank') foreign.push(`${req.method()} ${u}`);
});
context.on('requestfailed', (req) => failedRequests.push(`${phase}: ${req.method()} ${req.url()} (${req.failure()?.errorText})`));
context.on('requestfinished', (req) => {
  const ph = phase;
  pendingSizes.push(req.sizes().then((s) => {
    allBytes += s.responseBodySize;
    if (ph === 'load') { loadBytes += s.responseBodySize; loadHeaderBytes += s.responseHeadersSize; loadResponses++; }
  }).catch(() => {}));
});

// CSP violations as the page sees them: listener installed before any page script runs.
await context.addInitScript(() => {
  window.__cspViolations = [];
  window.__cspBlockedURIs = [];
  window.addEventListener('securitypolicyviolation', (e) => {
    if (e.blockedURI) window.__cspBlockedURIs.push(e.blockedURI);
    window.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile || ''}:${e.lineNumber || ''}`);
  }, true);
});

const page = context.pages()[0] || await context.newPage();
page.on('console', (msg) => {
  const text = msg.text();
  if (/Content[- ]Security[- ]Policy/i.test(text)) cspViolations.push('console: ' + short(text));
  if (msg.type() === 'error') consoleErrors.push({ phase, text, url: msg.location()?.url || '' });
});
page.on('pageerror', (err) => pageErrors.push(`${phase}: ${err.message}`));

let exitCode = 0;
try {
  // 2. Load the page and wait until Swagger UI has rendered the operations (or shown an error).
  const resp = await page.goto(DOCS_URL, { waitUntil: 'load' });
  if (!resp || !resp.ok()) fail('load', `GET ${DOCS_URL} answered ${resp ? resp.status() : 'nothing'}`);
  const want = expected.length;
  await page.waitForFunction((n) => {
    const ops = document.querySelectorAll('#swagger-ui .opblock').length;
    const err = document.querySelector('#swagger-ui .errors-wrapper, #swagger-ui .loading-container .loading + *');
    const info = document.querySelector('#swagger-ui .information-container .info');
    return (info && ops >= n) || !!err;
  }, want, { timeout: RENDER_TIMEOUT_MS, polling: 100 }).catch(() => {});
  await page.waitForLoadState('networkidle', { timeout: 10000 }).catch(() => {});
  await Promise.all(pendingSizes);

  const title = await page.title();
  console.log(`page: ${DOCS_URL} title=${JSON.stringify(title)}`);
  const uiErrors = await page.$$eval('#swagger-ui .errors-wrapper', (els) => els.map((e) => e.innerText.trim()).filter(Boolean));
  if (uiErrors.length) fail('render', 'Swagger UI shows errors: ' + short(uiErrors.join(' | ').replace(/\s+/g, ' ')));

  // (a) every (method, path) rendered as an operation block.
  const rendered = await page.$$eval('#swagger-ui .opblock', (els) => els.map((el) => {
    const m = el.querySelector('.opblock-summary-method')?.textContent.trim().toUpperCase() || '';
    const pEl = el.querySelector('.opblock-summary [data-path]');
    const p = pEl ? pEl.getAttribute('data-path') : (el.querySelector('.opblock-summary-path, .opblock-summary-path__deprecated')?.textContent || '').replace(/\u200b/g, '').trim();
    return `${m} ${p}`;
  }));
  const renderedSet = new Set(rendered);
  const missing = expected.filter((op) => !renderedSet.has(op));
  if (want === 0) fail('ops', 'spec has no operations');
  else if (missing.length) fail('ops', `${missing.length}/${want} operations not rendered: ${short(missing.join(', '), 400)} (rendered: ${rendered.length})`);
  else pass('ops', `${want}/${want} operations rendered (${rendered.length} .opblock elements)`);

  // (e) bytes transferred by the page load.
  const loadReqCount = requests.length;
  console.log(`bytes: page load transferred ${loadBytes} response body bytes (+${loadHeaderBytes} header bytes) in ${loadResponses} responses / ${loadReqCount} requests`);

  // Try it out + Execute on each calculator with its default example: a 200 as JSON, and for POST
  // /crcl also with the response media type switched to application/fhir+json (Swagger UI then sends
  // that Accept), which must answer 200 with an Observation.
  phase = 'tryitout';
  for (const [path, media] of [['/egfr', ''], ['/crcl', ''], ['/crcl', 'application/fhir+json']]) {
    const label = `POST ${path}${media ? ' as ' + media : ''}`;
    const op = page.locator('#swagger-ui .opblock.opblock-post').filter({ has: page.locator(`.opblock-summary [data-path="${path}"]`) }).first();
    try {
      if (await op.count() === 0) throw new Error('operation not rendered');
      if (!(await op.locator('button.execute').count())) {
        if (!(await op.locator('.opblock-body').count())) await op.locator('.opblock-summary-control, .opblock-summary').first().click();
        const tryBtn = op.locator('button.try-out__btn');
        await tryBtn.waitFor({ state: 'visible', timeout: 10000 });
        await tryBtn.click();
      }
      if (media) {
        const select = op.locator('.responses-wrapper select').first();
        await select.waitFor({ state: 'visible', timeout: 10000 });
        await select.selectOption(media);
      }
      const sentAccept = page.waitForRequest((req) => req.method() === 'POST' && new URL(req.url()).pathname === path, { timeout: 15000 });
      const exec = op.locator('button.execute');
      await exec.waitFor({ state: 'visible', timeout: 10000 });
      await exec.click();
      const accept = (await (await sentAccept).allHeaders())['accept'] || '';
      const row = op.locator('.live-responses-table .response').first();
      const status = row.locator('.response-col_status').first();
      await page.waitForFunction((el) => /\d{3}/.test(el.innerText), await status.elementHandle(), { timeout: 15000 });
      const code = (await status.innerText()).trim().match(/\d{3}/)?.[0];
      const body = (await row.locator('.response-col_description pre').first().innerText().catch(() => '')).trim();
      const problems = [];
      if (code !== '200') problems.push(`Execute showed ${code ? 'response code ' + code : 'no response code'} (want 200)`);
      if (media && !accept.includes(media)) problems.push(`the request's Accept was ${JSON.stringify(accept)}`);
      if (media && !body.includes('"resourceType": "Observation"')) problems.push('the response body is not an Observation');
      if (!media && body.includes('"resourceType"')) problems.push('the default answer is not plain JSON');
      if (problems.length) fail('tryitout', `${label}: ${problems.join('; ')}`);
      else pass('tryitout', `${label}: Execute showed response code 200 (Accept: ${accept})`);
    } catch (e) {
      fail('tryitout', `${label}: ${short(e.message.split('\n')[0])}`);
    }
    await page.waitForLoadState('networkidle', { timeout: 5000 }).catch(() => {});
    await Promise.all(pendingSizes);
  }

  // Authorize (bearerAuth) with TOKEN, then Try it out + Execute on POST /Patient: expect 201.
  if (!TOKEN) {
    console.log('SKIP authorize: TOKEN not set');
  } else {
    phase = 'authorize';
    const sent = [];          // {url, auth} for each POST BASE/Patient the page sent
    const onReq = (req) => {
      const u = req.url();
      if (req.method() === 'POST' && isNetworkUrl(u) && new URL(u).origin === ORIGIN && new URL(u).pathname === '/Patient') {
        sent.push(req.allHeaders().then((h) => ({ url: u, auth: h['authorization'] })).catch(() => ({ url: u, auth: undefined })));
      }
    };
    page.on('request', onReq);
    const label = 'POST /Patient';
    try {
      // 1. Authorize dialog: fill only the bearerAuth (http, Bearer) form.
      await page.locator('#swagger-ui .auth-wrapper button.authorize').first().click();
      const dialog = page.locator('#swagger-ui .dialog-ux .modal-ux');
      await dialog.waitFor({ state: 'visible', timeout: 10000 });
      const bearer = dialog.locator('.auth-container').filter({ has: page.locator('h4 > code', { hasText: /^bearerAuth$/ }) });
      if (await bearer.count() !== 1) throw new Error(`Authorize dialog has ${await bearer.count()} bearerAuth forms (want 1)`);
      const schemes = await dialog.locator('.auth-container h4 > code').allInnerTexts();
      const input = bearer.locator('input#auth-bearer-value, input[type="text"], input[type="password"]').first();
      await input.fill(TOKEN);
      await bearer.locator('button.modal-btn.authorize').click();
      // Swagger UI swaps the bearerAuth form to "Authorized" + Logout once the value is applied.
      await bearer.locator('button.modal-btn', { hasText: 'Logout' }).waitFor({ state: 'visible', timeout: 10000 });
      await dialog.locator('button.modal-btn.btn-done').first().click();
      await dialog.waitFor({ state: 'hidden', timeout: 10000 });

      // 2. POST /Patient: Try it out, body, Execute.
      const op = page.locator('#swagger-ui .opblock.opblock-post').filter({ has: page.locator('.opblock-summary [data-path="/Patient"]') }).first();
      if (await op.count() === 0) throw new Error('no POST /Patient operation rendered');
      await op.locator('.opblock-summary-control, .opblock-summary').first().click();
      const tryBtn = op.locator('button.try-out__btn');
      await tryBtn.waitFor({ state: 'visible', timeout: 10000 });
      await tryBtn.click();
      const body = op.locator('textarea.body-param__text');
      await body.waitFor({ state: 'visible', timeout: 10000 });
      await body.fill(JSON.stringify({ resourceType: 'Patient', gender: 'female', birthDate: '1974-12-25' }));
      const exec = op.locator('button.execute');
      await exec.waitFor({ state: 'visible', timeout: 10000 });
      await exec.click();
      const status = op.locator('.live-responses-table .response .response-col_status').first();
      await status.waitFor({ state: 'visible', timeout: 15000 });
      const code = (await status.innerText()).trim().match(/\d{3}/)?.[0];
      await page.waitForLoadState('networkidle', { timeout: 5000 }).catch(() => {});
      const reqs = await Promise.all(sent);
      const want = `Bearer ${TOKEN}`;
      const withAuth = reqs.filter((r) => r.auth === want).length;
      const problems = [];
      if (code !== '201') problems.push(`Execute showed ${code ? 'response code ' + code : 'no response code'} (want 201)`);
      if (reqs.length !== 1) problems.push(`page sent ${reqs.length} POST ${ORIGIN}/Patient request(s) (want 1)`);
      if (withAuth !== reqs.length || reqs.length === 0) {
        const seen = reqs.map((r) => (r.auth === undefined ? 'no Authorization header'
          : r.auth === want ? 'Bearer <TOKEN>' : /^Bearer /i.test(r.auth) ? 'Bearer <another token>' : 'Authorization of another kind'));
        problems.push(`Authorization on the sent request(s): ${seen.join(', ') || 'none sent'} (want Bearer <TOKEN>)`);
      }
      if (problems.length) fail('authorize', `${label}: ${problems.join('; ')}`);
      else pass('authorize', `bearerAuth set via Authorize dialog (schemes in dialog: ${schemes.join(', ')}); ${label}: Execute showed 201, request carried Authorization: Bearer <TOKEN>`);
    } catch (e) {
      fail('authorize', `${label}: ${short(e.message.split('\n')[0])}`);
    }
    page.off('request', onReq);
    await page.waitForLoadState('networkidle', { timeout: 5000 }).catch(() => {});
    await Promise.all(pendingSizes);
  }

  // (d) CSP violations seen by the page itself.
  const inPage = await page.evaluate(() => window.__cspViolations || []).catch(() => []);
  for (const v of inPage) cspViolations.push('event: ' + v);
  // Requests to other origins that the page attempted but CSP blocked before they were sent
  // (Playwright never sees those as requests): they count for the origin check too.
  const blockedURIs = await page.evaluate(() => window.__cspBlockedURIs || []).catch(() => []);
  const foreignBlocked = [...new Set(blockedURIs.filter((u) => isNetworkUrl(u) && new URL(u).origin !== ORIGIN))];

  // (b) console errors and page errors. During Try it out, Chromium logs an API's 4xx/5xx answer
  // as a console error ("Failed to load resource: ... status of 4xx"); that is the API's answer,
  // not a docs page fault (the authorize check judges its own answer), so it is listed but not
  // counted. Everything else counts.
  const counted = consoleErrors.filter((c) => !((c.phase === 'tryitout' || c.phase === 'authorize') &&
    /Failed to load resource: the server responded with a status of [45]\d\d/.test(c.text) &&
    (!c.url || c.url.startsWith(ORIGIN + '/'))));
  for (const c of consoleErrors) if (!counted.includes(c)) console.log(`info: API error answer during Try it out (not counted): ${short(c.text)}`);
  if (counted.length || pageErrors.length) {
    fail('console', `${counted.length} console error(s), ${pageErrors.length} page error(s): ` +
      short([...counted.map((c) => `[${c.phase}] ${c.text}${c.url ? ' @ ' + c.url : ''}`), ...pageErrors.map((p) => 'pageerror ' + p)].join(' | '), 600));
  } else pass('console', '0 console errors, 0 page errors');

  // (c) requests to other origins.
  if (foreign.length || foreignBlocked.length) {
    fail('origin', [foreign.length ? `${foreign.length} request(s) to other origins than ${ORIGIN}: ${short(foreign.join(', '), 600)}` : '',
      foreignBlocked.length ? `${foreignBlocked.length} request(s) to other origins attempted by the page but blocked by CSP: ${short(foreignBlocked.join(', '), 600)}` : '']
      .filter(Boolean).join('; '));
  } else pass('origin', `${requests.length} requests, all to ${ORIGIN}`);

  if (cspViolations.length) fail('csp', `${cspViolations.length} CSP violation(s): ${short(cspViolations.join(' | '), 600)}`);
  else pass('csp', '0 CSP violations');

  if (failedRequests.length) fail('requests', `${failedRequests.length} failed request(s): ${short(failedRequests.join(', '), 600)}`);

  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true }).catch((e) => console.log('screenshot failed: ' + e.message));
  if (process.env.VERBOSE) for (const r of requests) console.log('request: ' + r);
  console.log(`bytes: total ${allBytes} response body bytes including Try it out`);
  console.log(`TOTAL_PAGE_BYTES ${loadBytes}`);
} catch (e) {
  fail('run', short(e.message.split('\n')[0], 400));
} finally {
  await browser.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}

exitCode = failures.length ? 1 : 0;
// Plain closing line that CI tooling reads as a test count.
console.log(`browser-test: ${passes} passed, ${new Set(failures).size} failed`);
console.log(failures.length ? `RESULT FAIL (${[...new Set(failures)].join(', ')})` : 'RESULT PASS');
process.exit(exitCode);
