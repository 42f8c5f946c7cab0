"""The OpenAPI document, generated from each deployment's input and output schema, and /docs.

The docs page is self-contained (no CDN): it fetches /openapi.json and renders every route
with its fields and an example request you can send from the page.
"""

from __future__ import annotations

from typing import Any

from shipyard import __version__
from shipyard.bundle.manifest import FieldSpec, Schema
from shipyard.bundle.samples import example_rows
from shipyard.serving.fleet import Fleet
from shipyard.serving.v2 import datatype_for

JSON_TYPES = {
    "float32": "number",
    "float64": "number",
    "int32": "integer",
    "int64": "integer",
    "bool": "boolean",
    "string": "string",
    "category": None,
}
ERROR = {"$ref": "#/components/schemas/Error"}


def field_schema(spec: FieldSpec, *, nullable_ok: bool = True) -> dict[str, Any]:
    scalar: dict[str, Any] = {}
    kind = JSON_TYPES[spec.dtype]
    if spec.categories is not None:
        scalar["enum"] = list(spec.categories)
    elif kind is not None:
        scalar["type"] = kind
    if spec.minimum is not None:
        scalar["minimum"] = spec.minimum
    if spec.maximum is not None:
        scalar["maximum"] = spec.maximum
    if spec.dtype.startswith("float"):
        limit = 3.4028234663852886e38 if spec.dtype == "float32" else 1.7976931348623157e308
        scalar.setdefault("minimum", -limit)
        scalar.setdefault("maximum", limit)
    if spec.description:
        scalar["description"] = spec.description
    schema = scalar
    for size in reversed(spec.shape):
        schema = {"type": "array", "items": schema}
        if size > 0:
            schema["minItems"] = schema["maxItems"] = size
    if spec.nullable and nullable_ok and not spec.shape:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def request_schema(schema: Schema, max_rows: int) -> dict[str, Any]:
    if schema.layout == "text":
        record: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "required": [schema.inputs[0].name],
            "properties": {schema.inputs[0].name: {"type": "string"}},
        }
    else:
        record = {
            "type": "object",
            "additionalProperties": False,
            "required": [f.name for f in schema.inputs],
            "properties": {f.name: field_schema(f) for f in schema.inputs},
        }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["inputs"],
        "properties": {
            "inputs": {"type": "array", "minItems": 1, "maxItems": max_rows, "items": record},
            "parameters": {"type": "object"},
        },
    }


def response_schema(schema: Schema) -> dict[str, Any]:
    props: dict[str, Any] = {
        "model_version": {"type": "string"},
        "variant": {"type": "string"},
        "request_id": {"type": "string"},
    }
    for index, spec in enumerate(schema.outputs):
        name = "predictions" if index == 0 else spec.name
        props[name] = {"type": "array", "items": field_schema(spec, nullable_ok=False)}
    return {
        "type": "object",
        "properties": props,
        "required": ["predictions", "model_version", "variant", "request_id"],
    }


def _example(live_schema: Schema, manifest: Any) -> dict[str, Any]:
    rows = example_rows(manifest)
    if live_schema.layout == "array":
        return {"inputs": [{live_schema.inputs[0].name: row} for row in rows[:1].tolist()]}
    if live_schema.layout == "text":
        return {"inputs": [{live_schema.inputs[0].name: rows[0]}]}
    return {"inputs": rows.head(1).to_dict(orient="records")}


V2_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": ["BOOL", "INT32", "INT64", "FP32", "FP64", "BYTES"]},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
V2_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": V2_TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}},
            },
        },
        "parameters": {"type": "object"},
    },
}


def _v2_example(schema: Schema, manifest: Any) -> dict[str, Any]:
    rows = example_rows(manifest)
    if schema.layout == "array":
        first = rows[:1]
        return {
            "inputs": [
                {
                    "name": schema.inputs[0].name,
                    "shape": list(first.shape),
                    "datatype": datatype_for(schema.inputs[0]),
                    "data": first.ravel().tolist(),
                }
            ]
        }
    if schema.layout == "text":
        return {
            "inputs": [
                {
                    "name": schema.inputs[0].name,
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [rows[0]],
                }
            ]
        }
    record = rows.head(1).to_dict(orient="records")[0]
    return {
        "inputs": [
            {
                "name": spec.name,
                "shape": [1],
                "datatype": datatype_for(spec),
                "data": [record[spec.name]],
            }
            for spec in schema.inputs
        ]
    }


def _errors() -> dict[str, Any]:
    answers = {
        "400": "Malformed request",
        "404": "Unknown deployment",
        "408": "Body too slow",
        "413": "Body or batch too large",
        "415": "Wrong content type",
        "422": "Input breaks the schema",
        "429": "Too many requests in flight",
        "503": "Not ready, or the model failed",
    }
    return {
        code: {"description": text, "content": {"application/json": {"schema": ERROR}}}
        for code, text in answers.items()
    }


def document(fleet: Fleet) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name, live in sorted(fleet.deployments.items()):
        model = live.champion.model
        paths[f"/v1/deployments/{name}/predict"] = {
            "post": {
                "summary": f"Predict with {name} ({model.name}:{model.version})",
                "operationId": f"predict_{name}",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": request_schema(model.schema, live.spec.serving.max_rows),
                            "example": _example(model.schema, model.manifest),
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Predictions",
                        "content": {"application/json": {"schema": response_schema(model.schema)}},
                    },
                    **_errors(),
                },
            }
        }
    simple = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }
    for route in ("/v2", "/v2/health/live", "/v1/deployments", "/livez"):
        paths[route] = {
            "get": {
                "summary": route,
                "operationId": route.strip("/").replace("/", "_"),
                "responses": simple,
            }
        }
    paths["/v2/health/ready"] = {
        "get": {
            "summary": "Readiness",
            "operationId": "ready",
            "responses": {**simple, **_errors()},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "shipyard model server",
            "version": __version__,
            "description": "Native JSON prediction routes generated from each "
            "deployment's schema; the Open Inference Protocol V2 routes live under /v2.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "hint": {"type": "string"},
                                "details": {"type": "object"},
                            },
                        }
                    },
                }
            }
        },
    }


DOCS_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shipyard API</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem} section{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:1rem}
code,pre,textarea{font-family:ui-monospace,monospace;font-size:.85rem}
textarea{width:100%;height:8rem} .m{font-weight:bold;color:#075} button{margin:.5rem 0}
pre{background:#f6f6f6;padding:.5rem;overflow:auto}
</style></head><body>
<h1>shipyard model server</h1><p>Routes from <a href="/openapi.json">/openapi.json</a>.</p>
<div id="routes">Loading&hellip;</div>
<script>
async function main(){
  const doc = await (await fetch('/openapi.json')).json();
  const root = document.getElementById('routes'); root.textContent = '';
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const s = document.createElement('section');
      const h = document.createElement('h2');
      h.innerHTML = '<span class="m"></span> <code></code>';
      h.querySelector('.m').textContent = method.toUpperCase();
      h.querySelector('code').textContent = path;
      s.appendChild(h);
      const p = document.createElement('p'); p.textContent = op.summary || ''; s.appendChild(p);
      const body = op.requestBody && op.requestBody.content['application/json'];
      const out = document.createElement('pre');
      let area = null;
      if (body) {
        area = document.createElement('textarea');
        area.value = JSON.stringify(body.example || {}, null, 2); s.appendChild(area);
      }
      const b = document.createElement('button'); b.textContent = 'Send';
      b.onclick = async () => {
        const init = {method: method.toUpperCase()};
        if (area) { init.body = area.value; init.headers = {'content-type': 'application/json'}; }
        const r = await fetch(path, init);
        out.textContent = r.status + '\\n' + JSON.stringify(await r.json(), null, 2);
      };
      s.appendChild(b); s.appendChild(out); root.appendChild(s);
    }
  }
}
main();
</script></body></html>
"""
