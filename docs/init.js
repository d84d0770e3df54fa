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
  tryItOutEnabled: false         // "Try it out" is clicked per operation; requests go to the spec's servers ("/")
});
