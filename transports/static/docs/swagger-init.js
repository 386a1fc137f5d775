// Swagger UI over the broker's own document, with nothing loaded from elsewhere:
// validatorUrl null keeps the badge from calling validator.swagger.io.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/schema/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  // The token lives in this tab only; a reload asks for it again.
  persistAuthorization: false,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
