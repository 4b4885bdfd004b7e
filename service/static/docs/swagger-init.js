// Starts Swagger UI on /openapi.json (a file, not an inline script: the page's CSP allows 'self' only).
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null, // the default would send the document to validator.swagger.io
  presets: [SwaggerUIBundle.presets.apis],
});
