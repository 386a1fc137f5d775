// Service tokens (admins): list, create (the token is shown once), revoke (GET/POST/DELETE /tokens).

import { explain } from "../lib/api.js";
import { $, confirmDialog, fmtAgo, h, labelRow, setText, toast } from "../lib/dom.js";

export class TokensView {
  constructor(app) {
    this.app = app;
    $("#create-token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.create(event.target);
    });
  }

  show() {
    this.load();
  }

  hide() {}

  destroy() {}

  async load() {
    try {
      this.render(await this.app.session.request("GET", "/tokens"));
    } catch (error) {
      toast(`could not list service tokens: ${explain(error)}`, "error");
    }
  }

  render(tokens) {
    const table = $("#tokens-table");
    const rows = tokens.map((t) =>
      labelRow(table, h(
        "tr",
        { dataset: { token: t.id } },
        h("td", null, t.name),
        h("td", null, h("code", null, t.id)),
        h("td", null, t.scopes.join(", ")),
        h("td", null, t.created_by),
        h("td", { title: t.created_at }, fmtAgo(t.created_at)),
        h("td", null, t.expires_at ?? "never"),
        h("td", null, h(
          "button",
          { type: "button", class: "small danger", dataset: { action: "revoke" }, "aria-label": `Revoke ${t.name}`, onclick: () => this.revoke(t) },
          "Revoke",
        )),
      )),
    );
    $("#tokens-table tbody").replaceChildren(...rows);
    $("#tokens-empty").hidden = rows.length > 0;
    setText($("#tokens-count"), `${rows.length} active`);
  }

  async create(form) {
    const data = new FormData(form);
    const body = {
      name: String(data.get("name")).trim(),
      scopes: String(data.get("scopes")).split(/[\s,]+/).filter(Boolean),
    };
    const expires = String(data.get("expires_at") || "");
    if (expires) body.expires_at = new Date(expires).toISOString();
    try {
      const created = await this.app.session.request("POST", "/tokens", { body });
      // Shown once: the broker keeps only its hash.
      setText($("#token-secret"), created.token);
      $("#token-created").hidden = false;
      form.reset();
      this.load();
    } catch (error) {
      toast(`could not create the token: ${explain(error)}`, "error");
    }
  }

  async revoke(token) {
    if (!(await confirmDialog(`Revoke service token ${token.name}? Its sessions end at once.`, "Revoke"))) return;
    try {
      await this.app.session.request("DELETE", `/tokens/${encodeURIComponent(token.id)}`);
      toast(`token ${token.name} revoked`);
      this.load();
    } catch (error) {
      toast(`could not revoke ${token.name}: ${explain(error)}`, "error");
    }
  }
}
