"""The OpenAPI 3.1 document of the API, written out (the request bodies are parsed by hand, so
no framework could infer them). ``GET /openapi.json`` serves :func:`document`; docs/openapi.json
is the same document committed (``python -m worker.api.openapi > docs/openapi.json``; a test
checks they match)."""

from __future__ import annotations

import json
from typing import Any

VERSION = "1.0.0"

_ERROR_CODES = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "subject_erased",
    "too_large",
    "unsupported_media",
    "bad_params",
    "bad_callback_url",
    "rate_limited",
    "busy",
    "not_ready",
    "timeout",
    "internal_error",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_AUTH_ERRORS = {
    "401": _error("`unauthorized`: no key, a malformed, unknown or revoked key"),
    "403": _error("`forbidden`: the key lacks the scope"),
    "429": {
        "description": "`rate_limited`: over the key's token bucket",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": _ref("Error")}},
    },
}

_SUBJECT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": _ref("SubjectRequest")}},
}

_SUBMIT_ERRORS = {
    "400": _error("`bad_request`: a malformed multipart body, or the upload was cut short"),
    "409": _error("`subject_erased`: the subject's erasure is under way"),
    "413": _error("`too_large`: the upload is over `max_upload_bytes` (checked while streaming)"),
    "415": _error(
        "`unsupported_media`: not a JPEG, PNG, WebP or HEIF image nor an MP4, MOV or "
        "WebM/Matroska video (from its first bytes), or not multipart/form-data"
    ),
    "422": _error(
        "`bad_params`: a field is missing or invalid (unknown job type, params, attr, callback_url)"
    ),
    "503": {
        "description": "`busy`: `api.max_concurrent_uploads` uploads are in progress",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": _ref("Error")}},
    },
    "504": _error("`timeout`: the upload took longer than `api.request_timeout_s`"),
}

_FIELDS: dict[str, Any] = {
    "job": {"type": "string", "enum": ["detect", "pta", "ar", "deid"]},
    "params": {"type": "string", "description": "Job parameters, a JSON object as text"},
    "subject": {
        "type": "string",
        "maxLength": 256,
        "description": "The upstream's subject id (namespaced by the key's tenant)",
    },
    "research_consent": {"type": "boolean"},
    "minor": {"type": "boolean"},
    "guardian_consent": {"type": "boolean"},
    "attr": {
        "type": "array",
        "items": {"type": "string"},
        "description": "KEY=VALUE, repeatable: age, region, device (generalized at submit)",
    },
    "callback_url": {
        "type": "string",
        "format": "uri",
        "description": "Receives the signed job summary when the job ends",
    },
}

_HEADERS = [
    ("Facemedia-Job", True, "The job type"),
    ("Facemedia-Subject", True, "The upstream's subject id"),
    ("Facemedia-Params", False, "Job parameters, a JSON object"),
    ("Facemedia-Research-Consent", False, "true or false"),
    ("Facemedia-Minor", False, "true or false"),
    ("Facemedia-Guardian-Consent", False, "true or false"),
    ("Facemedia-Attr", False, "KEY=VALUE, repeatable"),
    ("Facemedia-Callback-Url", False, "Receives the signed job summary when the job ends"),
]

_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 128},
    "description": "A retry with the same key (same tenant) answers the first job, body unread",
}

_ACCEPTED = {
    "description": "Stored encrypted and queued (or, for a retried Idempotency-Key, the first job)",
    "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{job_id}"}},
    "content": {"application/json": {"schema": _ref("Accepted")}},
}


def _schemas() -> dict[str, Any]:
    nullable_str = {"type": ["string", "null"]}
    return {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "enum": _ERROR_CODES},
                "message": {"type": "string"},
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["job_id", "status"],
            "properties": {"job_id": {"type": "string"}, "status": {"type": "string"}},
        },
        "JobStatus": {
            "type": "object",
            "description": "The job's public summary (`facemedia status --json`): no subject "
            "id, no attribute, no parameter value",
            "required": ["job_id", "status", "error_code", "faces", "outputs", "original_deleted"],
            "properties": {
                "job_id": {"type": "string"},
                "job_type": {"type": "string"},
                "status": {
                    "type": "string",
                    "enum": ["queued", "processing", "succeeded", "failed", "expired", "cancelled"],
                },
                "error_code": nullable_str,
                "error_message": nullable_str,
                "faces": {"type": ["integer", "null"]},
                "outputs": {"type": "array", "items": {"type": "string"}},
                "original_deleted": {"type": "boolean"},
                "deliveries": {"type": "integer"},
                "retries": {"type": "integer"},
                "created_at": nullable_str,
                "started_at": nullable_str,
                "finished_at": nullable_str,
                "duration_s": {"type": ["number", "null"]},
                "media_kind": nullable_str,
                "frames": {"type": ["integer", "null"]},
                "effects": {"type": ["array", "null"], "items": {"type": "string"}},
                "webhook": {"type": ["object", "null"]},
            },
        },
        "SubjectRequest": {
            "type": "object",
            "required": ["subject"],
            "properties": {"subject": {"type": "string", "maxLength": 256}},
            "additionalProperties": False,
        },
        "HoldRequest": {
            "type": "object",
            "required": ["subject", "reason"],
            "properties": {
                "subject": {"type": "string", "maxLength": 256},
                "reason": {
                    "type": "string",
                    "enum": [
                        "litigation",
                        "court_order",
                        "regulator_request",
                        "law_enforcement",
                        "contract_dispute",
                        "security_incident",
                    ],
                },
                "note": {"type": "string", "description": "Sealed under the subject's key"},
            },
            "additionalProperties": False,
        },
        "RightsResult": {
            "type": "object",
            "properties": {
                "action": {"type": "string"},
                "deleted": {"type": "integer"},
                "held": {"type": "integer"},
                "pending": {"type": "boolean"},
                "already_done": {"type": "boolean"},
                "subject_erased": {"type": "boolean"},
                "objects_deleted": {"type": "integer"},
                "crypto_complete": {"type": "boolean"},
                "crypto_complete_by": nullable_str,
            },
        },
        "Hold": {
            "type": "object",
            "properties": {
                "held": {"type": "boolean"},
                "reason": nullable_str,
                "note": {"type": "boolean", "description": "A note was stored (sealed)"},
            },
        },
    }


def _subject_op(summary: str, ok: dict[str, Any], body: Any = None) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": body or _SUBJECT_BODY,
            "responses": {
                "200": ok,
                "404": _error("`not_found`: no such subject in the key's tenant"),
                "415": _error("`unsupported_media`: the body is not application/json"),
                "422": _error("`bad_params`: no subject, or an unknown field"),
                **_AUTH_ERRORS,
            },
        }
    }


def document() -> dict[str, Any]:
    """The OpenAPI document of the API."""
    rights = _json("Done (idempotent)", _ref("RightsResult"))
    hold = _json("The hold as it now stands", _ref("Hold"))
    hold_body = {"required": True, "content": {"application/json": {"schema": _ref("HoldRequest")}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "facemedia",
            "version": VERSION,
            "description": "Privacy-preserving face photo and video jobs over HTTP (docs/API.md). "
            "Uploads stream into the encryptor; nothing is stored in clear.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "The process answers",
                    "responses": {"200": _json("Alive", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "The ledger, the store and the broker are reachable",
                    "responses": {
                        "200": _json("Ready", {"type": "object"}),
                        "503": _error("`not_ready`: the message names what is unreachable"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
                }
            },
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job: a multipart form, the file part last",
                    "security": [{"bearer": []}],
                    "parameters": [_IDEMPOTENCY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["job", "subject", "file"],
                                    "properties": {
                                        **_FIELDS,
                                        "file": {
                                            "type": "string",
                                            "contentMediaType": "application/octet-stream",
                                            "description": "The media; must be the last part",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"202": _ACCEPTED, **_SUBMIT_ERRORS, **_AUTH_ERRORS},
                },
                "put": {
                    "summary": "Submit a job: the raw media as the body, fields as headers",
                    "security": [{"bearer": []}],
                    "parameters": [
                        _IDEMPOTENCY,
                        *[
                            {
                                "name": name,
                                "in": "header",
                                "required": required,
                                "schema": {"type": "string"},
                                "description": text,
                            }
                            for name, required, text in _HEADERS
                        ],
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/octet-stream": {
                                "schema": {
                                    "type": "string",
                                    "contentMediaType": "application/octet-stream",
                                }
                            }
                        },
                    },
                    "responses": {"202": _ACCEPTED, **_SUBMIT_ERRORS, **_AUTH_ERRORS},
                },
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "The job's status (the same JSON as `facemedia status --json`)",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "job_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json("The job", _ref("JobStatus")),
                        "404": _error("`not_found`: unknown, or another tenant's job"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/jobs/{job_id}/outputs/{name}": {
                "get": {
                    "summary": "One output, decrypted and streamed (the read is audited)",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "job_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The output, with its content type",
                            "content": {
                                "*/*": {"schema": {"type": "string", "contentMediaType": "*/*"}}
                            },
                        },
                        "404": _error("`not_found`: no such job (or another tenant's) or output"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/subjects/erase": _subject_op("Erase everything held about a subject", rights),
            "/v1/subjects/consent/withdraw": _subject_op(
                "Withdraw the subject's research consent", rights
            ),
            "/v1/subjects/export": _subject_op(
                "Everything held about a subject, as a streamed zip",
                {
                    "description": "report.json, then each decrypted output and research sample",
                    "content": {
                        "application/zip": {
                            "schema": {"type": "string", "contentMediaType": "application/zip"}
                        }
                    },
                },
            ),
            "/v1/subjects/hold": _subject_op("Put a legal hold on a subject", hold, hold_body),
            "/v1/subjects/hold/release": _subject_op("Release a subject's legal hold", hold),
        },
    }


def render() -> str:
    """The document as committed in docs/openapi.json."""
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
