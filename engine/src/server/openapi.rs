//! The OpenAPI 3 document at `/v1/openapi.json`, generated from the same
//! route table the router is built from.

use serde_json::{Map, Value, json};

use crate::config::Role;

/// One documented operation.
#[derive(Debug)]
pub struct Route {
    /// Lower-case HTTP method.
    pub method: &'static str,
    /// Path with `{param}` segments.
    pub path: &'static str,
    /// One line.
    pub summary: &'static str,
    /// The role it needs (`None`: no bearer token, e.g. health, hooks).
    pub role: Option<Role>,
    /// Response content type of the success case.
    pub produces: &'static str,
    /// Request body content type, if any.
    pub consumes: Option<&'static str>,
    /// Success status.
    pub ok: u16,
}

const JSON: &str = "application/json";

/// Every API operation. The router registers exactly these.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/healthz",
        summary: "Liveness: `ok`, or `stopping` during shutdown.",
        role: None,
        produces: JSON,
        consumes: None,
        ok: 200,
    },
    Route {
        method: "get",
        path: "/metrics",
        summary: "Prometheus text exposition.",
        role: Some(Role::Viewer),
        produces: "text/plain",
        consumes: None,
        ok: 200,
    },
    Route {
        method: "get",
        path: "/v1/openapi.json",
        summary: "This document.",
        role: None,
        produces: JSON,
        consumes: None,
        ok: 200,
    },
    Route {
        method: "get",
        path: "/v1/whoami",
        summary: "The caller's tenant and role.",
        role: Some(Role::Viewer),
        produces: JSON,
        consumes: None,
        ok: 200,
    },
    Route {
        method: "get",
        path: "/v1/runs",
        summary: "Runs of the caller's tenant, newest first; filters `status`, `pipeline`; pagination `limit`, `cursor`.",
        role: Some(Role::Viewer),
        produces: JSON,
        consumes: None,
        ok: 200,
    },
    Route {
        method: "post",
        path: "/v1/runs",
        summary: "Submits a run: `{\"pipeline\": PATH}` or `{\"spec\": TOML text | JSON object}`, plus `params`.",
        role: Some(Role::Runner),
        produces: JSON,
        consumes: Some(JSON),
        ok: 201,
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}",
        summary: "A run with its DAG and per-step reports (the `sluice run --json` step fields).",
        role: Some(Role::Viewer),
        produces: JSON,
        consumes: None,
        ok: 200,
    },
    Route {
        method: "post",
        path: "/v1/runs/{id}/cancel",
        summary: "Cancels a run: steps not yet started are skipped.",
        role: Some(Role::Runner),
        produces: JSON,
        consumes: None,
        ok: 202,
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/events",
        summary: "Server-sent events: `run`, `step`, `log`, `metric`, then `end`.",
        role: Some(Role::Viewer),
        produces: "text/event-stream",
        consumes: None,
        ok: 200,
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/logs/{step}",
        summary: "A step's captured logs (`stream=stdout|stderr`, default both), control characters escaped.",
        role: Some(Role::Viewer),
        produces: "text/plain",
        consumes: None,
        ok: 200,
    },
    Route {
        method: "post",
        path: "/v1/runs/{id}/replay",
        summary: "Replays a finished run and compares every digest; gpu jobs are answered from the record unless `rerun_gpu=true`.",
        role: Some(Role::Runner),
        produces: JSON,
        consumes: None,
        ok: 200,
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/verify",
        summary: "Verifies the run's record chain, signature and log inclusion.",
        role: Some(Role::Viewer),
        produces: JSON,
        consumes: None,
        ok: 200,
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/provenance",
        summary: "The run's signed in-toto/SLSA provenance (DSSE envelope).",
        role: Some(Role::Viewer),
        produces: "application/vnd.dsse.envelope.v1+json",
        consumes: None,
        ok: 200,
    },
    Route {
        method: "put",
        path: "/v1/components",
        summary: "Uploads a `.wasm` component of the `sluice:step` world; returns its digest.",
        role: Some(Role::Runner),
        produces: JSON,
        consumes: Some("application/wasm"),
        ok: 201,
    },
    Route {
        method: "get",
        path: "/v1/artifacts/{digest}",
        summary: "An artifact's bytes, verified, streamed.",
        role: Some(Role::Viewer),
        produces: "application/octet-stream",
        consumes: None,
        ok: 200,
    },
    Route {
        method: "get",
        path: "/v1/artifacts/{digest}/lineage",
        summary: "An artifact's lineage among the caller's runs, from their sealed records: every production (`produced_by`), every read (`consumed_by`), every run it was a source of, and its derivation (`upstream`: each artifact it was made from, transitively, with the step and run that first computed it, or the source it came in as; `roots`: the sources reached). Runs whose records do not verify are listed in `skipped`.",
        role: Some(Role::Viewer),
        produces: JSON,
        consumes: None,
        ok: 200,
    },
    Route {
        method: "post",
        path: "/v1/hooks/git",
        summary: "A GitHub/Gitea push webhook (HMAC `X-Hub-Signature-256`, body at most 1 MiB); starts the hook's pipeline. A signed payload delivered before, under any delivery id, answers 409.",
        role: None,
        produces: JSON,
        consumes: Some(JSON),
        ok: 201,
    },
    Route {
        method: "get",
        path: "/v1/admin/tokens",
        summary: "Configured tokens (labels, tenants, roles; never secrets).",
        role: Some(Role::Admin),
        produces: JSON,
        consumes: None,
        ok: 200,
    },
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method, r.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": {
                r.ok.to_string(): {"description": "success", "content": {r.produces: {}}},
                "default": {"description": "error", "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(role) = r.role {
            op["security"] = json!([{"bearer": []}]);
            op["x-sluice-role"] = json!(role.as_str());
        } else {
            op["security"] = json!([]);
        }
        if let Some(ct) = r.consumes {
            op["requestBody"] = json!({"required": true, "content": {ct: {}}});
        }
        let entry = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Sluice", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Reproducible ML pipelines of sandboxed WebAssembly steps."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once() {
        let doc = document();
        let mut n = 0;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                assert!(ROUTES.iter().any(|r| r.path == path && r.method == method));
                n += 1;
            }
        }
        assert_eq!(n, ROUTES.len());
    }
}
