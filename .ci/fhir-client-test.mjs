// fhir-client-test.mjs: drives the FHIR R4 Patient API at BASE with an unmodified, widely used FHIR
// client library, fhir-kit-client (npm), through its public API only: if a standard client cannot
// use the service as documented, this fails.
//
// Usage (Node 20; nothing is downloaded at run time):
//   tmp="$(mktemp -d)"
//   npm install --no-save --no-audit --no-fund --prefix "$tmp" fhir-kit-client@2.0.3
//   NODE_PATH="$tmp/node_modules" TOKEN="$(curl -s 127.0.0.1:9000/token)" \
//     node fhir-client-test.mjs http://127.0.0.1:18098
//
// TOKEN must carry Patient read and write scopes (the dev issuer's token does). It is sent only as
// `customHeaders: {Authorization: 'Bearer ' + TOKEN}` and never printed: all output is redacted.
//
// How fhir-kit-client is found: it is ESM-only and its package.json `exports` has only an "import"
// condition, so neither ES `import` (which ignores NODE_PATH) nor createRequire()'s require() can
// load it by name. This script asks createRequire()'s resolver for its search paths (which honour
// NODE_PATH), finds the package there, and import()s the entry point the package itself declares
// (`exports["."].import`). FHIR_KIT_CLIENT=/abs/path/to/node_modules/fhir-kit-client overrides that.
//
// Steps, each printed as PASS/FAIL with a one-line reason; exit 0 only if all pass:
//   capability      capabilityStatement(): CapabilityStatement, fhirVersion 4.0.1, Patient listed
//   create          create() x3 (accented names; one with an NHS number): 201 bodies with id, version 1
//   read            read() one back: same id, name and identifier as sent
//   update          update() with body id = URL id: meta.versionId "2", change kept
//   vread           vread() version 1: versionId "1", the value from before the update
//   history         resourceHistory(): a history Bundle with 2 entries (versions 2 and 1)
//   search-family   family=nunez finds the "Núñez" patient (accent- and case-insensitive; UPSTREAM=1: family=Núñez)
//   search-nhs      identifier=https://fhir.nhs.uk/Id/nhs-number|9991234578 finds it
//   search-post     the same family search with options.postSearch (POST Patient/_search)
//   paging          _count=1 on this run's 3 patients, followed with nextPage() until no next link:
//                   every patient seen exactly once, one per page; prevPage() from the last page gives
//                   the page before it again
//   if-match-stale  update() with options.headers If-Match W/"1" on version 2: rejected with 412
//   if-match        update() with If-Match W/"2": accepted, versionId "3"
//   patch           patch() with an RFC 6902 array (test + add) and If-Match W/"3": versionId "4", the
//                   name added; then the PDS form {"patches": [...]}: versionId "5"
//   patch-atomic    patch() whose second operation is a failing test: rejected with 422, patient unchanged
//   validate        operation() $validate with a Parameters body (resource, mode create): one information
//                   issue; with an invalid Patient: 200 and an error issue per problem; nothing stored
//   conditional-create  create() with options.headers If-None-Exist: on the NHS number, 200 with the
//                   existing Patient; on a new identifier 201, then 200 with the same id; a plain create
//                   with an NHS number another Patient holds: 409, issue code duplicate
//   delete          delete() one patient
//   read-deleted    read() of it now throws with status 410 (404 too with UPSTREAM=1)
//   search-deleted  the family, identifier and paging searches no longer find it
// Optional env: VERBOSE=1 prints each request the library sent and the status it got.
// UPSTREAM=1 runs against a service whose Patient store is an upstream FHIR server (FHIR_UPSTREAM_URL):
// version ids are then the upstream's (opaque: each step checks the version the server gave, not 1, 2,
// 3 ...), string search is the upstream's (family=Núñez, as stored, instead of nunez: Medplum is
// accent-sensitive), and a read after delete may be 404 (Medplum) as well as 410.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';

// Never print the token: everything written to stdout/stderr (ours, or the library's debug log) is
// redacted.
const TOKEN = (process.env.TOKEN || '').trim();
for (const stream of [process.stdout, process.stderr]) {
  const write = stream.write.bind(stream);
  stream.write = (chunk, ...rest) => write(TOKEN && typeof chunk === 'string' ? chunk.split(TOKEN).join('<TOKEN>')
    : TOKEN && Buffer.isBuffer(chunk) ? chunk.toString('utf8').split(TOKEN).join('<TOKEN>') : chunk, ...rest);
}

const baseArg = process.argv[2];
if (!baseArg) {
  console.error('usage: TOKEN=... NODE_PATH=... node fhir-client-test.mjs BASE_URL   (e.g. http://127.0.0.1:18098)');
  process.exit(2);
}
if (!TOKEN) {
  console.error('FAIL setup: TOKEN is not set (a bearer token with Patient read/write scopes)');
  process.exit(2);
}

async function loadClient() {
  const require = createRequire(import.meta.url);
  let dir = process.env.FHIR_KIT_CLIENT;
  if (!dir) {
    for (const p of require.resolve.paths('fhir-kit-client') || []) {
      if (existsSync(join(p, 'fhir-kit-client', 'package.json'))) { dir = join(p, 'fhir-kit-client'); break; }
    }
  }
  if (!dir) throw new Error('fhir-kit-client not found on NODE_PATH or node_modules paths');
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const exp = pkg.exports && pkg.exports['.'];
  const entry = (typeof exp === 'string' ? exp : exp && (exp.import || exp.default)) || pkg.module || pkg.main;
  const mod = await import(pathToFileURL(join(dir, entry)).href);
  return { Client: mod.Client, version: pkg.version };
}

let Client, libVersion;
try {
  ({ Client, version: libVersion } = await loadClient());
} catch (e) {
  console.error('FAIL setup: cannot load fhir-kit-client (set NODE_PATH="$tmp/node_modules", see top of file): ' + e.message);
  process.exit(2);
}

const BASE = baseArg.replace(/\/+$/, '');
const client = new Client({ baseUrl: BASE, customHeaders: { Authorization: 'Bearer ' + TOKEN } });
console.log(`fhir-kit-client ${libVersion} against ${BASE}`);

const failures = [];
let passes = 0;
const short = (s, n = 300) => (s.length > n ? s.slice(0, n) + '…' : s);
const pass = (step, info) => { passes++; console.log(`PASS ${step}: ${info}`); };
const fail = (step, reason) => { failures.push(step); console.log(`FAIL ${step}: ${reason}`); };
class Check extends Error {}
const must = (cond, msg) => { if (!cond) throw new Check(msg); };

// What the library sent and what came back, for a failure report (token redacted by the writers).
function describeError(e) {
  if (e instanceof Check) return e.message;
  if (e && e.response) {
    const data = e.response.data;
    const body = typeof data === 'string' ? data : JSON.stringify(data);
    return `${e.message}; response body: ${short(body || '(empty)', 600)}`;
  }
  return `${e && e.name}: ${e && e.message}`;
}
function sent(resource) {
  const { request, response } = Client.httpFor(resource);
  return request ? `${request.method} ${request.url} -> ${response ? response.status : '?'}` : '';
}
function verbose(resource) { if (process.env.VERBOSE && resource) console.log('  sent: ' + sent(resource)); }

async function step(name, fn) {
  try {
    const info = await fn();
    pass(name, info);
    return true;
  } catch (e) {
    fail(name, describeError(e));
    return false;
  }
}
// Run fn expecting the library to throw with an HTTP status (or one of several); returns the error.
async function expectStatus(want, fn) {
  let res;
  try {
    res = await fn();
  } catch (e) {
    if (e instanceof Check) throw e;
    must(e && e.response, `library threw without an HTTP response: ${e && e.message}`);
    must([].concat(want).includes(e.response.status), `${e.message} (want ${want}); response body: ${short(JSON.stringify(e.response.data), 400)}`);
    return e;
  }
  throw new Check(`request succeeded (${sent(res)}), want HTTP ${want}; body: ${short(JSON.stringify(res), 300)}`);
}

const UPSTREAM = process.env.UPSTREAM === '1';
const FAMILY = UPSTREAM ? 'Núñez' : 'nunez'; // the family search term
// The main patient's version ids as the server gave them, by number (1-based): the journal's are
// "1", "2", ...; an upstream's are whatever it makes, each new one different from the ones before.
const versionIds = [];
function versionIs(p, n) {
  const v = p && p.meta && p.meta.versionId;
  if (!UPSTREAM) return v === String(n);
  if (versionIds[n - 1] === undefined && v && !versionIds.includes(v)) versionIds[n - 1] = v;
  return !!v && versionIds[n - 1] === v;
}
const vid = (n) => (UPSTREAM ? versionIds[n - 1] : String(n));
const ids = (bundle) => (bundle.entry || []).map((e) => e.resource && e.resource.id);
const run = randomBytes(4).toString('hex');                 // this run's patients share a given name
const tag = 'Fkc' + run.replace(/[0-9]/g, (d) => 'abcdefghij'[d]); // letters only: a plain name part
const NHS_SYSTEM = 'https://fhir.nhs.uk/Id/nhs-number';
const NHS_VALUE = '9991234578';

const specs = [
  { resourceType: 'Patient', identifier: [{ system: NHS_SYSTEM, value: NHS_VALUE }],
    name: [{ use: 'official', family: 'Núñez', given: ['José', tag] }], gender: 'male', birthDate: '1961-03-14' },
  { resourceType: 'Patient', name: [{ use: 'official', family: 'Ångström', given: ['Zoë', tag] }],
    gender: 'female', birthDate: '1984-07-02' },
  { resourceType: 'Patient', name: [{ use: 'official', family: 'Müller-Lüdenscheidt', given: ['Renée', tag] }],
    gender: 'female', birthDate: '1990-11-30' },
];
const created = [];
let main;          // the Núñez patient
let current;       // its latest version as returned by the server

await step('capability', async () => {
  const cs = await client.capabilityStatement();
  verbose(cs);
  must(cs.resourceType === 'CapabilityStatement', `resourceType ${cs.resourceType} (want CapabilityStatement)`);
  must(cs.fhirVersion === '4.0.1', `fhirVersion ${cs.fhirVersion} (want 4.0.1)`);
  const pat = (cs.rest || []).flatMap((r) => r.resource || []).find((r) => r.type === 'Patient');
  must(pat, 'no rest.resource with type Patient');
  return `CapabilityStatement fhirVersion ${cs.fhirVersion}, Patient interactions: ${(pat.interaction || []).map((i) => i.code).join(' ')}`;
});

const createdOk = await step('create', async () => {
  for (const body of specs) {
    const p = await client.create({ resourceType: 'Patient', body });
    verbose(p);
    const { response } = Client.httpFor(p);
    must(response.status === 201, `${sent(p)} (want 201)`);
    must(p.resourceType === 'Patient' && typeof p.id === 'string' && p.id, `no Patient id in ${short(JSON.stringify(p))}`);
    // versionIs records the first patient's (the main one's) first version id.
    must(created.length && UPSTREAM ? !!(p.meta && p.meta.versionId) : versionIs(p, 1), `meta.versionId ${p.meta && p.meta.versionId} (want "1")`);
    must(p.name[0].family === body.name[0].family, `family ${JSON.stringify(p.name[0].family)} (sent ${JSON.stringify(body.name[0].family)})`);
    created.push(p);
  }
  main = created[0];
  return `3 Patients created (201): ${created.map((p) => `${p.name[0].family}=${p.id}`).join(', ')}`;
});

if (!createdOk) {
  console.log('(later steps need the created patients: not run)');
} else {
  await step('read', async () => {
    const p = await client.read({ resourceType: 'Patient', id: main.id });
    verbose(p);
    must(p.id === main.id, `id ${p.id} (want ${main.id})`);
    must(p.name[0].family === 'Núñez' && p.name[0].given[0] === 'José', `name ${JSON.stringify(p.name)}`);
    must(p.identifier && p.identifier[0].system === NHS_SYSTEM && p.identifier[0].value === NHS_VALUE, `identifier ${JSON.stringify(p.identifier)}`);
    current = p;
    return `GET Patient/${p.id}: ${p.name[0].given[0]} ${p.name[0].family}, NHS number ${p.identifier[0].value}, version ${p.meta.versionId}`;
  });

  const updatedOk = await step('update', async () => {
    const body = { ...(current || main), id: main.id, birthDate: '1961-03-15',
      telecom: [{ system: 'phone', value: '+44 20 7946 0000', use: 'home' }] };
    const p = await client.update({ resourceType: 'Patient', id: main.id, body });
    verbose(p);
    must(p.id === main.id, `id ${p.id} (want ${main.id})`);
    must(versionIs(p, 2), `meta.versionId ${p.meta && p.meta.versionId} (want version 2)`);
    must(p.birthDate === '1961-03-15', `birthDate ${p.birthDate} (want the new 1961-03-15)`);
    current = p;
    const etag = Client.httpFor(p).response.headers.get('etag');
    return `PUT Patient/${p.id} -> ${Client.httpFor(p).response.status}, meta.versionId ${vid(2)}${etag ? `, ETag ${etag}` : ''}`;
  });

  await step('vread', async () => {
    const p = await client.vread({ resourceType: 'Patient', id: main.id, version: vid(1) });
    verbose(p);
    must(p.id === main.id && versionIs(p, 1), `id ${p.id} versionId ${p.meta && p.meta.versionId} (want ${main.id} ${vid(1)})`);
    must(p.birthDate === '1961-03-14', `birthDate ${p.birthDate} (want the original 1961-03-14)`);
    return `GET Patient/${p.id}/_history/${vid(1)}: version 1, birthDate ${p.birthDate} (before the update)`;
  });

  await step('history', async () => {
    const b = await client.resourceHistory({ resourceType: 'Patient', id: main.id });
    verbose(b);
    must(b.resourceType === 'Bundle' && b.type === 'history', `resourceType ${b.resourceType} type ${b.type} (want a history Bundle)`);
    const versions = (b.entry || []).map((e) => e.resource && e.resource.meta && e.resource.meta.versionId);
    must(versions.length === 2, `${versions.length} entries (want 2): versions ${JSON.stringify(versions)}`);
    must([...versions].sort().join(',') === [vid(1), vid(2)].sort().join(','), `versions ${JSON.stringify(versions)} (want ${vid(1)} and ${vid(2)})`);
    return `history Bundle with 2 entries, versions ${versions.join(', ')}${b.total !== undefined ? `, total ${b.total}` : ''}`;
  });

  await step('search-family', async () => {
    const b = await client.search({ resourceType: 'Patient', searchParams: { family: FAMILY } });
    verbose(b);
    must(b.resourceType === 'Bundle' && b.type === 'searchset', `resourceType ${b.resourceType} type ${b.type} (want a searchset Bundle)`);
    must(ids(b).includes(main.id), `family=${FAMILY}: ${ids(b).length} match(es), not the Núñez patient ${main.id}`);
    must(!ids(b).includes(created[1].id) && !ids(b).includes(created[2].id), `family=${FAMILY} also matched this run's other patients`);
    return `family=${FAMILY} matched the Núñez patient (${ids(b).length} match(es) in all)`;
  });

  await step('search-nhs', async () => {
    const b = await client.search({ resourceType: 'Patient', searchParams: { identifier: `${NHS_SYSTEM}|${NHS_VALUE}` } });
    verbose(b);
    must(b.resourceType === 'Bundle' && b.type === 'searchset', `resourceType ${b.resourceType} type ${b.type} (want a searchset Bundle)`);
    must(ids(b).includes(main.id), `identifier search: ${ids(b).length} match(es), not ${main.id}`);
    must(!ids(b).includes(created[1].id) && !ids(b).includes(created[2].id), 'identifier search also matched patients without that NHS number');
    return `identifier=${NHS_SYSTEM}|${NHS_VALUE} matched ${main.id} (${ids(b).length} match(es) in all)`;
  });

  await step('search-post', async () => {
    const b = await client.search({ resourceType: 'Patient', searchParams: { family: FAMILY, given: tag }, options: { postSearch: true } });
    verbose(b);
    must(b.resourceType === 'Bundle' && b.type === 'searchset', `resourceType ${b.resourceType} type ${b.type} (want a searchset Bundle)`);
    must(ids(b).length === 1 && ids(b)[0] === main.id, `POST Patient/_search family=${FAMILY}&given=${tag}: ids ${JSON.stringify(ids(b))} (want [${main.id}])`);
    return `POST Patient/_search (form body) family=${FAMILY}&given=${tag}: exactly the Núñez patient`;
  });

  // Follows next links with the library's nextPage(); returns the ids seen, page by page.
  // pages.last is the last Bundle, for prevPage().
  async function pageThrough(searchParams, maxPages = 20) {
    let b = await client.search({ resourceType: 'Patient', searchParams });
    verbose(b);
    const pages = [];
    for (;;) {
      must(b.resourceType === 'Bundle' && b.type === 'searchset', `page ${pages.length + 1}: resourceType ${b.resourceType} type ${b.type}`);
      pages.push(ids(b));
      const next = client.nextPage({ bundle: b });
      if (!next) break;
      must(pages.length < maxPages, `still a next link after ${maxPages} pages`);
      b = await next;
      verbose(b);
    }
    pages.last = b;
    return pages;
  }

  await step('paging', async () => {
    const pages = await pageThrough({ given: tag, _count: 1 });
    const seen = pages.flat();
    const want = created.map((p) => p.id);
    must(pages.every((p) => p.length <= 1), `a page held more than _count=1 entries: ${JSON.stringify(pages)}`);
    must(new Set(seen).size === seen.length, `a patient was seen twice: ${JSON.stringify(pages)}`);
    must(want.every((id) => seen.includes(id)) && seen.length === want.length, `saw ${JSON.stringify(seen)} (want exactly ${JSON.stringify(want)})`);
    // And one step back from the last page with the library's prevPage().
    const prev = client.prevPage({ bundle: pages.last });
    must(prev, 'the last page has no previous link');
    const pb = await prev;
    verbose(pb);
    must(JSON.stringify(ids(pb)) === JSON.stringify(pages[pages.length - 2]), `prevPage() of the last page gave ${JSON.stringify(ids(pb))} (want ${JSON.stringify(pages[pages.length - 2])})`);
    return `given=${tag}&_count=1: ${pages.length} pages via nextPage(), all 3 patients once each, no next link at the end; prevPage() from the last page gave page ${pages.length - 1} again`;
  });

  if (!updatedOk) {
    fail('if-match-stale', 'not run: the update step failed');
    fail('if-match', 'not run: the update step failed');
  } else {
    // fhir-kit-client passes per-request headers through options.headers, so If-Match can be sent.
    await step('if-match-stale', async () => {
      const body = { ...current, birthDate: '1961-03-16' };
      await expectStatus(412, () => client.update({ resourceType: 'Patient', id: main.id, body, options: { headers: { 'If-Match': `W/"${vid(1)}"` } } }));
      const p = await client.read({ resourceType: 'Patient', id: main.id });
      must(versionIs(p, 2) && p.birthDate === '1961-03-15', `after the 412 the patient is version ${p.meta.versionId} birthDate ${p.birthDate} (want unchanged: ${vid(2)}, 1961-03-15)`);
      return `PUT with If-Match W/"${vid(1)}" on version 2 -> 412, patient unchanged`;
    });
    await step('if-match', async () => {
      const body = { ...current, birthDate: '1961-03-16' };
      const p = await client.update({ resourceType: 'Patient', id: main.id, body, options: { headers: { 'If-Match': `W/"${vid(2)}"` } } });
      verbose(p);
      must(versionIs(p, 3) && p.birthDate === '1961-03-16', `versionId ${p.meta && p.meta.versionId} birthDate ${p.birthDate} (want version 3, 1961-03-16)`);
      return `PUT with If-Match W/"${vid(2)}" -> ${Client.httpFor(p).response.status}, meta.versionId ${vid(3)}`;
    });
  }

  if (!updatedOk) {
    for (const s of ['patch', 'patch-atomic']) fail(s, 'not run: the update step failed');
  } else {
    await step('patch', async () => {
      const jsonPatch = [{ op: 'test', path: '/birthDate', value: '1961-03-16' }, { op: 'add', path: '/name/0/given/-', value: 'Pat' }];
      const p = await client.patch({ resourceType: 'Patient', id: main.id, jsonPatch, options: { headers: { 'If-Match': `W/"${vid(3)}"` } } });
      verbose(p);
      must(versionIs(p, 4), `versionId ${p.meta && p.meta.versionId} (want version 4)`);
      must(p.name[0].given.at(-1) === 'Pat' && p.birthDate === '1961-03-16', `given ${JSON.stringify(p.name[0].given)} birthDate ${p.birthDate}`);
      const q = await client.patch({ resourceType: 'Patient', id: main.id, jsonPatch: { patches: [{ op: 'replace', path: '/gender', value: 'other' }] } });
      verbose(q);
      must(versionIs(q, 5) && q.gender === 'other', `PDS form: versionId ${q.meta.versionId} gender ${q.gender} (want version 5, other)`);
      current = q;
      return `PATCH: RFC 6902 array with If-Match W/"${vid(3)}" -> version 4; PDS {"patches": [...]} form -> version 5`;
    });
    await step('patch-atomic', async () => {
      const jsonPatch = [{ op: 'replace', path: '/gender', value: 'male' }, { op: 'test', path: '/birthDate', value: '1900-01-01' }];
      const e = await expectStatus(422, () => client.patch({ resourceType: 'Patient', id: main.id, jsonPatch }));
      const issue = (e.response.data.issue || [])[0] || {};
      must(issue.code === 'processing' && /patch operation 1/.test(issue.diagnostics || ''), `issue ${JSON.stringify(issue)} (want processing, naming operation 1)`);
      const p = await client.read({ resourceType: 'Patient', id: main.id });
      must(versionIs(p, 5) && p.gender === 'other', `after the 422 the patient is version ${p.meta.versionId} gender ${p.gender} (want unchanged: ${vid(5)}, other)`);
      return 'PATCH with a failing test at operation 1 -> 422 naming it; operation 0 not applied';
    });
  }

  await step('validate', async () => {
    const resource = { resourceType: 'Patient', name: [{ family: 'Valid', given: [tag] }], gender: 'female', birthDate: '1980-01-01' };
    const ok = await client.operation({ name: 'validate', resourceType: 'Patient',
      input: { resourceType: 'Parameters', parameter: [{ name: 'resource', resource }, { name: 'mode', valueCode: 'create' }] } });
    verbose(ok);
    must(ok.resourceType === 'OperationOutcome' && ok.issue.length === 1 && ok.issue[0].severity === 'information', `valid Patient: ${short(JSON.stringify(ok))}`);
    const bad = await client.operation({ name: '$validate', resourceType: 'Patient', input: { ...resource, gender: 'woman', birthDate: '1980-02-30' } });
    verbose(bad);
    must(Client.httpFor(bad).response.status === 200, `invalid Patient: status ${Client.httpFor(bad).response.status} (want 200)`);
    const exprs = (bad.issue || []).filter((i) => i.severity === 'error').map((i) => (i.expression || [])[0]);
    must(JSON.stringify(exprs) === JSON.stringify(['Patient.gender', 'Patient.birthDate']), `invalid Patient: error expressions ${JSON.stringify(exprs)} (want gender, birthDate)`);
    const b = await client.search({ resourceType: 'Patient', searchParams: { family: 'valid', given: tag } });
    must(ids(b).length === 0, `$validate stored a Patient: ${JSON.stringify(ids(b))}`);
    return 'POST Patient/$validate: Parameters (mode create) -> one information issue; invalid Patient -> 200 with 2 error issues; nothing stored';
  });

  await step('conditional-create', async () => {
    const ifNone = (crit) => ({ headers: { 'If-None-Exist': crit } });
    const again = await client.create({ resourceType: 'Patient', body: specs[0], options: ifNone(`identifier=${NHS_SYSTEM}|${NHS_VALUE}`) });
    verbose(again);
    must(Client.httpFor(again).response.status === 200 && again.id === main.id, `If-None-Exist on the NHS number: ${sent(again)}, id ${again.id} (want 200 with ${main.id})`);
    const system = `urn:fkc:${run}`;
    const body = { resourceType: 'Patient', identifier: [{ system, value: 'c1' }], name: [{ family: 'Conditional', given: ['Cora'] }], gender: 'female' };
    const first = await client.create({ resourceType: 'Patient', body, options: ifNone(`identifier=${system}|c1`) });
    const second = await client.create({ resourceType: 'Patient', body, options: ifNone(`identifier=${system}|c1`) });
    verbose(first); verbose(second);
    must(Client.httpFor(first).response.status === 201, `no match: ${sent(first)} (want 201)`);
    must(Client.httpFor(second).response.status === 200 && second.id === first.id, `one match: ${sent(second)}, id ${second.id} (want 200 with ${first.id})`);
    const e = await expectStatus(409, () => client.create({ resourceType: 'Patient', body: { ...specs[1], identifier: specs[0].identifier } }));
    const issue = (e.response.data.issue || [])[0] || {};
    must(issue.code === 'duplicate', `a second Patient with NHS number ${NHS_VALUE}: issue ${JSON.stringify(issue)} (want duplicate)`);
    return `If-None-Exist: the NHS number's Patient back (200); a new identifier 201, then 200 with the same id; a plain create with a held NHS number 409 duplicate`;
  });

  const deleted = main;
  const deletedOk = await step('delete', async () => {
    const r = await client.delete({ resourceType: 'Patient', id: deleted.id });
    const { response } = Client.httpFor(r);
    must(response && response.status >= 200 && response.status < 300, `${sent(r)} (want 2xx)`);
    return `${sent(r)}`;
  });

  if (!deletedOk) {
    fail('read-deleted', 'not run: the delete step failed');
    fail('search-deleted', 'not run: the delete step failed');
  } else {
    await step('read-deleted', async () => {
      const e = await expectStatus(UPSTREAM ? [404, 410] : 410, () => client.read({ resourceType: 'Patient', id: deleted.id }));
      return `GET Patient/${deleted.id} after delete: library threw "${e.message}" with response.status ${e.response.status}`;
    });

    await step('search-deleted', async () => {
      const fam = await client.search({ resourceType: 'Patient', searchParams: { family: FAMILY } });
      must(!ids(fam).includes(deleted.id), `family=${FAMILY} still finds the deleted patient`);
      const nhs = await client.search({ resourceType: 'Patient', searchParams: { identifier: `${NHS_SYSTEM}|${NHS_VALUE}` } });
      must(!ids(nhs).includes(deleted.id), 'identifier search still finds the deleted patient');
      const seen = (await pageThrough({ given: tag, _count: 1 })).flat();
      const want = [created[1].id, created[2].id];
      must(seen.length === 2 && want.every((id) => seen.includes(id)), `given=${tag} paging saw ${JSON.stringify(seen)} (want exactly ${JSON.stringify(want)})`);
      return 'family, identifier and paged given searches no longer find it; the other 2 patients still found';
    });
  }
}

console.log(`fhir-client: ${passes} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
