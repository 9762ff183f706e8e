// Starts Swagger UI on AGP's own OpenAPI document. A file of its own because the explorer page's
// Content-Security-Policy allows no inline script. Served at /api/v1/docs/explorer.js.
'use strict';

window.addEventListener('DOMContentLoaded', () => {
  // eslint-disable-next-line no-undef
  window.ui = SwaggerUIBundle({
    url: '/api/v1/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    // Never send the document to a third-party validator (and the CSP would refuse it).
    validatorUrl: null,
    // eslint-disable-next-line no-undef
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
    // "Authorize" takes the admin token for "Try it out"; it is kept in this page only.
    persistAuthorization: false,
    tryItOutEnabled: false,
    displayRequestDuration: true,
  });
});
