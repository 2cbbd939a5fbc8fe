// Swagger UI over the gateway's own schema. A file, not an inline script: the page's CSP allows
// scripts from this origin only.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  // The default badge loads an image from validator.swagger.io: nothing leaves this origin.
  validatorUrl: null,
});
