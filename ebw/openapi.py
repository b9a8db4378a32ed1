"""The OpenAPI 3.1 document of ``/api/`` (served at ``GET /api/openapi.json``), built from
the same tables the API validates with, so it cannot drift from them."""

from __future__ import annotations

from typing import Any

from . import config as config_mod

INT_ATTRS = {
    "hl7_port",
    "dicom_port",
    "pacs_push_delay_seconds",
    "accession_digits",
    "accession_period_minutes",
    "cfind_max_results",
    "broad_query_max",
    "exam_quiet_seconds",
    "ehr_port",
    "pacs_port",
    "oru_ack_timeout_seconds",
    "oru_max_attempts",
}
LIST_ATTRS = {"visit_number", "location_components", "calling_aets", "dicom_allow_from", "vip_values"}


def _prop(attr: str) -> dict[str, Any]:
    s = next(x for x in config_mod.SETTINGS if x.attr == attr)
    if attr in INT_ATTRS:
        schema: dict[str, Any] = {"type": ["integer", "null"] if attr in ("ehr_port", "pacs_port") else "integer"}
    elif attr in LIST_ATTRS:
        schema = {"oneOf": [{"type": "array", "items": {"type": ["string", "integer"]}}, {"type": "string"}]}
    else:
        schema = {"type": "string"}
    return {**schema, "description": f"{s.help} Rule as {s.env}; default {s.default!r}."}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _crud(tag: str, schema: str, collection: str) -> dict[str, Any]:
    errors = {
        "401": {"description": "no valid token"},
        "403": {"description": "the role does not allow it"},
        "422": {"description": "invalid value: the field and the rule", "content": _json(_ref("Error"))},
    }
    return {
        collection: {
            "get": {
                "tags": [tag],
                "summary": f"list {tag}",
                "responses": {"200": {"description": "the list"}, **errors},
            },
            "post": {
                "tags": [tag],
                "summary": f"create ({tag}: read_write)",
                "requestBody": {"content": _json(_ref(schema))},
                "responses": {
                    "201": {"description": "created", "content": _json(_ref(schema))},
                    "409": {"description": "conflict"},
                    **errors,
                },
            },
        },
        collection + "/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {
                "tags": [tag],
                "responses": {
                    "200": {"description": "one", "content": _json(_ref(schema))},
                    "404": {"description": "unknown id"},
                    **errors,
                },
            },
            "put": {
                "tags": [tag],
                "requestBody": {"content": _json(_ref(schema))},
                "responses": {"200": {"description": "updated"}, "409": {"description": "conflict"}, **errors},
            },
            "delete": {
                "tags": [tag],
                "responses": {"200": {"description": "deleted"}, "409": {"description": "still in use"}, **errors},
            },
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def document() -> dict[str, Any]:
    from .api import EHR_FIELDS, ENDPOINT_FIELDS, PACS_FIELDS

    endpoint = {
        "type": "object",
        "properties": {
            "id": {
                "type": "string",
                "pattern": "^[a-z0-9][a-z0-9-]{0,31}$",
                "description": "made from display_name if not given",
            },
            **{field: _prop(attr) for field, attr in ENDPOINT_FIELDS.items()},
            "ehr_connection_id": {
                "type": ["string", "null"],
                "description": "ORU destination (see /api/ehr-connections)",
            },
            "pacs_destination_id": {
                "type": ["string", "null"],
                "description": "PACS destination (see /api/pacs-destinations)",
            },
        },
    }
    paths: dict[str, Any] = {
        "/api/openapi.json": {
            "get": {
                "summary": "this document (no token needed)",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    }
    paths.update(_crud("endpoints", "Endpoint", "/api/endpoints"))
    paths["/api/endpoints/{id}/worklist"] = {
        "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": "q",
                "in": "query",
                "schema": {"type": "string"},
                "description": "search name, patient ID, admission ID, location, accession",
            },
            {"name": "offset", "in": "query", "schema": {"type": "integer"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 500}},
        ],
        "get": {
            "tags": ["endpoints"],
            "summary": "the active worklist items, with recent accession numbers",
            "responses": {"200": {"description": "items"}},
        },
    }
    paths.update(_crud("ehr-connections", "EhrConnection", "/api/ehr-connections"))
    paths.update(_crud("pacs-destinations", "PacsDestination", "/api/pacs-destinations"))
    paths.update(_crud("organizations", "Organization", "/api/organizations"))
    paths.update(_crud("users", "User", "/api/users"))
    paths["/api/exams"] = {
        "get": {
            "tags": ["exams"],
            "parameters": [
                {"name": n, "in": "query", "schema": {"type": "string"}}
                for n in ("orphan", "oru", "state", "endpoint", "limit")
            ],
            "responses": {"200": {"description": "exams, newest first"}},
        }
    }
    paths["/api/exams/{endpoint}/{study_uid}"] = {
        "get": {
            "tags": ["exams"],
            "summary": "one exam: its encounter, instances, ORU and PACS-push state",
            "responses": {"200": {"description": "the exam"}, "404": {"description": "no such exam"}},
        }
    }
    for action in ("complete", "retry-oru"):
        paths["/api/exams/{endpoint}/{study_uid}/" + action] = {
            "post": {
                "tags": ["exams"],
                "responses": {"200": {"description": "done"}, "409": {"description": "not possible now"}},
            }
        }
    paths["/api/audit"] = {
        "get": {
            "tags": ["audit"],
            "summary": "changes, newest first (administrators)",
            "responses": {"200": {"description": "entries"}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "EBW administration API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Endpoint": endpoint,
                "EhrConnection": {
                    "type": "object",
                    "required": ["name", "host", "port"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        **{f: _prop(a) for f, a in EHR_FIELDS.items()},
                    },
                },
                "PacsDestination": {
                    "type": "object",
                    "required": ["name", "aet", "host", "port"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        **{f: _prop(a) for f, a in PACS_FIELDS.items()},
                    },
                },
                "Organization": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "primary_worklist": {"type": ["string", "null"], "description": "an endpoint id"},
                    },
                },
                "User": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "connectivity": {"enum": ["read", "read_write"]},
                        "admin": {"type": "boolean"},
                        "token": {"type": "string", "description": "returned once, by POST"},
                    },
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "field": {"type": "string"},
                        "rule": {"type": "string"},
                    },
                },
            },
        },
    }
