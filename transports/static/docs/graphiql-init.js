// GraphiQL on /graphql with the token pasted in its Headers tab:
//   {"Authorization": "Bearer <access_token>"}
// Queries and mutations send it as a header; subscriptions (graphql-transport-ws)
// send it in connection_init, which is where the broker reads it on a WebSocket.
"use strict";
(function () {
  const url = new URL("/graphql", window.location.href).href;
  const wsUrl = url.replace(/^http/, "ws");
  let headers = {};
  const inner = GraphiQL.createFetcher({
    url: url,
    subscriptionUrl: wsUrl,
    wsConnectionParams: () => {
      const auth = headers.Authorization || headers.authorization;
      return auth ? { Authorization: auth } : {};
    },
  });
  function fetcher(params, options) {
    headers = (options && options.headers) || {};
    return inner(params, options);
  }
  const defaultHeaders = '{\n  "Authorization": "Bearer PASTE-AN-ACCESS-TOKEN"\n}';
  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultHeaders: defaultHeaders,
      defaultEditorToolsVisibility: "headers",
      shouldPersistHeaders: false,
    }),
  );
})();
