"""The manifest, `shipyard.yaml`: every item a deployable bundle declares.

The manifest is pydantic with `extra="forbid"`, so a typo in a key is an error that names the
key, not a silently ignored setting. `Manifest.read(folder)` turns every parse or validation
problem into a `ManifestError` naming the field.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.errors import ManifestError

MANIFEST_NAME = "shipyard.yaml"
SIGNATURE_NAME = "shipyard.sig"
FORMAT_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# libyaml's parser where PyYAML was built with it: a manifest with a reference profile is
# thousands of nodes, and the pure-Python parser spent a quarter of a server's cold start on it.
# Parsing only: the canonical text (the digest) is always written by the pure-Python dumper.
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
OWNER_PATTERN = re.compile(r"^\s*(?P<name>[^<>]+?)\s*<(?P<contact>[^<>\s]+)>\s*$")

DType = Literal["float32", "float64", "int32", "int64", "bool", "string", "category"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Owner(_Strict):
    name: str = Field(min_length=1, description="The person answerable for this model.")
    contact: str = Field(min_length=3, description="An e-mail address or chat handle.")

    @classmethod
    def parse(cls, text: str) -> Owner:
        """Parse `"Name <contact>"`."""
        match = OWNER_PATTERN.match(text or "")
        if not match:
            raise ManifestError(
                f"Got owner {text!r}. Expected 'Name <contact>'.",
                hint="Pass owner='Ana Lima <ana@example.com>'.",
                field="owner",
            )
        return cls(name=match["name"], contact=match["contact"])

    def __str__(self) -> str:
        return f"{self.name} <{self.contact}>"


class FileEntry(_Strict):
    path: str = Field(description="Path relative to the bundle root, with forward slashes.")
    sha256: str = Field(description="Hex sha256 of the file's bytes.")
    size: int = Field(ge=0, description="Size in bytes.")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not SHA256_PATTERN.fullmatch(value):
            raise ValueError("must be 64 lowercase hex characters")
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        # Checked again against the real file system in bundle.paths; this catches the text.
        if not value or value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
            raise ValueError("must be a relative path inside the bundle")
        if any(part in ("..", "") for part in value.split("/")) or "\\" in value:
            raise ValueError("must not contain '..', empty parts or backslashes")
        return value


class RuntimeSpec(_Strict):
    kind: str = Field(description="Which runtime adapter loads the artifact, e.g. 'sklearn'.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Adapter-specific options (entry points, formats)."
    )


class Code(_Strict):
    loader: str | None = Field(
        default=None, description="`module:function` returning the model, for custom runtimes."
    )
    preprocess: str | None = Field(
        default=None, description="`module:function` mapping a DataFrame to model inputs."
    )
    postprocess: str | None = Field(
        default=None, description="`module:function` mapping raw outputs to answers."
    )
    files: list[FileEntry] = Field(
        default_factory=list, description="Python files under `code/`, hashed."
    )


class FieldSpec(_Strict):
    name: str = Field(min_length=1, description="Column or tensor name.")
    dtype: DType = Field(description="Logical type of each value.")
    shape: list[int] = Field(
        default_factory=list, description="Shape of one value; [] for a scalar, -1 for any."
    )
    nullable: bool = Field(default=False, description="Whether null/NaN values are allowed.")
    minimum: float | None = Field(default=None, description="Smallest allowed value.")
    maximum: float | None = Field(default=None, description="Largest allowed value.")
    categories: list[str | int | bool] | None = Field(
        default=None, description="Allowed values for a categorical field."
    )
    description: str = Field(default="", description="What the field means.")


class Schema(_Strict):
    layout: Literal["frame", "array", "text"] = Field(
        default="frame",
        description="How the model takes a batch: a DataFrame of the fields, one 2-D array "
        "(a single tensor field), or a list of strings (a single text field).",
    )
    inputs: list[FieldSpec] = Field(default_factory=list, description="Input fields in order.")
    outputs: list[FieldSpec] = Field(default_factory=list, description="Output fields.")


class Features(_Strict):
    tokenizer: str | None = Field(
        default=None, description="Path of tokenizer files inside the bundle, if any."
    )
    definitions: list[dict[str, Any]] = Field(
        default_factory=list, description="Feature definitions: name, source, transformation."
    )


class Dependencies(_Strict):
    python: str = Field(description="Python version the bundle was built with, e.g. 3.11.7.")
    packages: dict[str, str] = Field(
        default_factory=dict, description="Package name to exact version specifier ('==1.2.3')."
    )


class Metric(_Strict):
    name: str = Field(description="Metric name, e.g. 'accuracy'.")
    value: float = Field(description="Measured value on the evaluation data.")
    threshold: float | None = Field(default=None, description="Value it must meet.")
    higher_is_better: bool = Field(default=True, description="Direction of the threshold.")

    @property
    def passes(self) -> bool:
        if self.threshold is None:
            return True
        return (
            self.value >= self.threshold
            if self.higher_is_better
            else (self.value <= self.threshold)
        )


class Evaluation(_Strict):
    data: str = Field(description="What data the model was evaluated on.")
    rows: int | None = Field(default=None, ge=0, description="Evaluation rows.")
    metrics: list[Metric] = Field(default_factory=list, description="Measured metrics.")
    date: datetime = Field(description="When the evaluation ran (UTC).")


class NumericProfile(_Strict):
    kind: Literal["numeric"] = "numeric"
    count: int = Field(ge=0, description="Non-null values seen.")
    nulls: int = Field(ge=0, description="Null or NaN values seen.")
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = Field(default_factory=dict, description="q -> value.")
    edges: list[float] = Field(default_factory=list, description="Histogram bin edges.")
    counts: list[int] = Field(default_factory=list, description="Histogram counts per bin.")


class CategoricalProfile(_Strict):
    kind: Literal["categorical"] = "categorical"
    count: int = Field(ge=0, description="Non-null values seen.")
    nulls: int = Field(ge=0, description="Null values seen.")
    frequencies: dict[str, int] = Field(default_factory=dict, description="Value -> count.")


FieldProfile = NumericProfile | CategoricalProfile


class Profile(_Strict):
    rows: int = Field(ge=0, description="Rows the profile was computed on.")
    inputs: dict[str, FieldProfile] = Field(default_factory=dict)
    outputs: dict[str, FieldProfile] = Field(default_factory=dict)


class Manifest(_Strict):
    format: int = Field(default=FORMAT_VERSION, description="Manifest format version.")
    name: str = Field(description="Model name: lowercase letters, digits, '.', '_', '-'.")
    version: str = Field(description="Version string, immutable once registered.")
    owner: Owner | None = Field(default=None, description="Who answers for the model.")
    description: str = Field(default="", description="What the model does.")
    runtime: RuntimeSpec = Field(description="Which adapter loads the artifact.")
    artifacts: list[FileEntry] = Field(default_factory=list, description="Model files.")
    code: Code = Field(default_factory=Code, description="Loading and processing code.")
    schema_: Schema | None = Field(default=None, alias="schema", description="I/O schema.")
    features: Features | None = Field(default=None, description="Tokenizer or features.")
    dependencies: Dependencies | None = Field(default=None, description="Pinned runtime.")
    evaluation: Evaluation | None = Field(default=None, description="Evaluation report.")
    profile: Profile | None = Field(default=None, description="Reference profile for drift.")
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")
    created_at: datetime | None = Field(default=None, description="When it was packaged.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, value: Any) -> Any:
        # Hand-written manifests may say `owner: "Name <contact>"`.
        if isinstance(value, str):
            match = OWNER_PATTERN.match(value)
            if not match:
                raise ValueError("must be 'Name <contact>' or {name, contact}")
            return {"name": match["name"], "contact": match["contact"]}
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "must match ^[a-z0-9][a-z0-9._-]{0,63}$ (lowercase letters, digits, . _ -)"
            )
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not VERSION_PATTERN.fullmatch(value):
            raise ValueError("must be 1-64 characters of letters, digits, '.', '_', '+', '-'")
        return value

    @field_validator("format")
    @classmethod
    def _format(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(f"this shipyard reads manifest format {FORMAT_VERSION}")
        return value

    def all_files(self) -> list[FileEntry]:
        """Every hashed file: artifacts first, then code."""
        return [*self.artifacts, *self.code.files]

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def digest(self) -> str:
        """sha256 of the canonical manifest text: the bundle's identity."""
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()


    @classmethod
    def from_text(cls, text: str, source: str = MANIFEST_NAME) -> Manifest:
        try:
            data = yaml.load(text, Loader=YAML_LOADER)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ManifestError(
                f"{source} is not valid YAML{where}.",
                hint="Fix the syntax; `python -c 'import yaml,sys;yaml.safe_load(sys.stdin)'`"
                " shows the error.",
                file=source,
            ) from exc
        if not isinstance(data, dict):
            raise ManifestError(
                f"Got {type(data).__name__} at the top of {source}. Expected a mapping.",
                hint="Start from `shipyard init` for a valid skeleton.",
                file=source,
            )
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = MANIFEST_NAME) -> Manifest:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = []
            for err in exc.errors()[:5]:
                loc = ".".join(str(p) for p in err["loc"]) or "(top)"
                problems.append(f"{loc}: {err['msg']}")
            first = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise ManifestError(
                f"{source} is invalid: " + "; ".join(problems) + ".",
                hint="Fix the named fields; `shipyard init` writes a valid example.",
                file=source,
                field=first,
            ) from exc

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(
                f"No {MANIFEST_NAME} in {folder}.",
                hint="Run `shipyard init` to scaffold a bundle, or `shipyard.package(...)`.",
                file=str(path),
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                f"{path} is not UTF-8 text.", hint="Save the manifest as UTF-8.", file=str(path)
            ) from exc
        return cls.from_text(text, str(path))


def text_has_digest(text: str, digest: str) -> bool:
    """Whether the manifest text `text` has the digest `digest`. A file that shipyard wrote is
    the canonical text itself, so one hash settles it without parsing and dumping it again."""
    if hashlib.sha256(text.encode()).hexdigest() == digest:
        return True
    return Manifest.from_text(text).digest() == digest
