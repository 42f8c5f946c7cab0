"""The one error tree of shipyard.

Every error knows the HTTP status it maps to, the CLI exit code, a stable machine code and a
hint that tells the user what to do next::

    ShipyardError
    ├── UserError (400, exit 2)          bad input from the caller
    │   ├── ManifestError                 shipyard.yaml is broken or incomplete
    │   ├── SchemaError                   data does not fit a schema
    │   ├── BundleError                   files missing, extra, escaping the bundle
    │   │   └── IntegrityError            a file's sha256 does not match (also signature)
    │   ├── UnsafeArtifactError           a pickle reaches a global outside the allowlist
    │   ├── ReferenceError_               a NAME:VERSION / NAME@ALIAS that is malformed
    │   ├── ConfigError                   a setting has a wrong value
    │   ├── BadJSONError                  a request body that is not JSON
    │   ├── PayloadTooLargeError (413)    a body or batch over the limit
    │   ├── UnsupportedMediaTypeError (415)  a content type the route does not take
    │   ├── RequestTimeoutError (408)     a client too slow to send its body
    │   └── MethodNotAllowedError (405)
    ├── NotFoundError (404, exit 3)       no such model, version, alias or file
    ├── ConflictError (409, exit 4)       different content under an existing version
    ├── OverloadedError (429)            too many requests in flight; retry later
    ├── ModelFailureError (503)           the model failed or timed out, no fallback
    ├── UnavailableError (503)            not ready, or shutting down
    ├── FragileBundleError (422, exit 5)  a bundle has error-level findings
    ├── RuntimeUnavailableError (501, exit 6)  an optional framework is not installed
    └── RegistryUnavailableError (503, exit 2) the database is locked or unreachable
"""

from __future__ import annotations

from typing import Any, ClassVar


class ShipyardError(Exception):
    """Base of every error shipyard raises on purpose."""

    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, hint: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip() if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        """The one JSON error body used by every route and by `--json` output."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.details:
            body["details"] = self.details
        return {"error": body}


class UserError(ShipyardError):
    status = 400
    exit_code = 2
    code = "bad_input"


class ManifestError(UserError):
    code = "bad_manifest"


class SchemaError(UserError):
    code = "schema_violation"
    status = 422


class BundleError(UserError):
    code = "bad_bundle"


class IntegrityError(BundleError):
    code = "integrity"


class UnsafeArtifactError(BundleError):
    code = "unsafe_artifact"


class BadReferenceError(UserError):
    code = "bad_reference"


class ConfigError(UserError):
    code = "bad_config"


class BadJSONError(UserError):
    code = "bad_json"


class PayloadTooLargeError(UserError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(UserError):
    status = 415
    code = "unsupported_media_type"


class RequestTimeoutError(UserError):
    status = 408
    code = "request_timeout"


class MethodNotAllowedError(UserError):
    status = 405
    code = "method_not_allowed"


class OverloadedError(ShipyardError):
    status = 429
    code = "overloaded"


class ModelFailureError(ShipyardError):
    status = 503
    code = "model_failure"


class UnavailableError(ShipyardError):
    status = 503
    code = "unavailable"


class NotFoundError(ShipyardError):
    status = 404
    exit_code = 3
    code = "not_found"


class ConflictError(ShipyardError):
    status = 409
    exit_code = 4
    code = "conflict"


class GoneError(ShipyardError):
    """The thing existed but is past its retention."""

    status = 410
    exit_code = 3
    code = "gone"


class UnauthorizedError(ShipyardError):
    """No credentials, or credentials that are not valid (never says which)."""

    status = 401
    exit_code = 2
    code = "unauthorized"


class ForbiddenError(ShipyardError):
    """Valid credentials without the permission the action needs."""

    status = 403
    exit_code = 2
    code = "forbidden"


class FragileBundleError(ShipyardError):
    status = 422
    exit_code = 5
    code = "fragile_bundle"


class RuntimeUnavailableError(ShipyardError):
    status = 501
    exit_code = 6
    code = "runtime_unavailable"


class RegistryUnavailableError(ShipyardError):
    status = 503
    exit_code = 2
    code = "registry_unavailable"


def missing_extra(package: str, extra: str) -> RuntimeUnavailableError:
    """The error raised when an optional framework is not importable."""
    return RuntimeUnavailableError(
        f"The Python package {package!r} is not installed.",
        hint=f"Install it with: pip install 'shipyard[{extra}]'",
    )
