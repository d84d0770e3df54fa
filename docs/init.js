// Swagger UI start-up for /docs/. Kept in a file (not an inline <script>) so the
// CSP can stay at script-src 'self' with no 'unsafe-inline', nonce or hash.
window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  // null: never render the badge that loads https://validator.swagger.io/validator?url=...
  // (a third-party request leaking our spec URL, and blocked by img-src 'self' anyway).
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',          // no top bar / URL box (StandaloneLayout needs inline style)
  deepLinking: true,             // #/tag/operationId links to an operation
  queryConfigEnabled: false,     // ignore ?url=/?configUrl= in the page address
  persistAuthorization: false,   // never keep credentials in localStorage
  tryItOutEnabled: false,        // "Try it out" is clicked per operation; requests go to the spec's servers ("/")
  // Swagger UI fetches every openIdConnect scheme's openIdConnectUrl (the issuer's discovery
  // document, another origin) as soon as the spec loads, which connect-src 'self' blocks. No
  // operation uses that scheme (they use bearerAuth: paste a token into Authorize), so the page
  // drops it from the copy of the spec it renders; /openapi.json itself is unchanged.
  responseInterceptor: (res) => {
    try {
      if (res.ok && new URL(res.url, location.href).pathname === '/openapi.json') {
        const spec = JSON.parse(res.text);
        const schemes = spec && spec.components && spec.components.securitySchemes;
        if (schemes) {
          for (const [name, s] of Object.entries(schemes)) if (s && s.type === 'openIdConnect') delete schemes[name];
          res.text = JSON.stringify(spec); res.data = res.text; res.body = spec;
        }
      }
    } catch (e) { /* not JSON: leave it to Swagger UI's own error display */ }
    return res;
  }
});
