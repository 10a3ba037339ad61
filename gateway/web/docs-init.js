// Starts Swagger UI (served by the gateway from the swagger-ui-py package) on the
// OpenAPI document named by the page. A file of its own so the page needs no inline script.
const root = document.getElementById("swagger-ui");
window.ui = window.SwaggerUIBundle({
  url: root.dataset.spec,
  domNode: root,
  deepLinking: true,
  persistAuthorization: true,
  tryItOutEnabled: false,
});
