"""A CycloneDX 1.5 JSON SBOM of a bundle, made with cyclonedx-python-lib.

The bundle is the BOM's subject (type `machine-learning-model`, its manifest digest as a
hash); each pinned PyPI dependency is a `library` with purl `pkg:pypi/NAME@VERSION`; each
file of the bundle is a `file` with the sha256 of its bytes as read now (not as the manifest
claims: `shipyard check` compares the two). The library is used rather than hand-written JSON
because it knows each schema version's rules and the test validates its output.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from uuid import UUID

from packaging.utils import canonicalize_name

from shipyard.bundle import files
from shipyard.bundle.manifest import MANIFEST_NAME, Manifest
from shipyard.depaudit.osv import PACKAGE_NAME, PIN
from shipyard.errors import missing_extra


def sbom_json(
    bundle_dir: Path,
    *,
    manifest: Manifest | None = None,
    serial: UUID | None = None,
    now: datetime | None = None,
) -> str:
    """The SBOM as CycloneDX 1.5 JSON text; `serial` and `now` make it reproducible."""
    try:
        from cyclonedx.model import HashAlgorithm, HashType, Property
        from cyclonedx.model.bom import Bom, BomMetaData
        from cyclonedx.model.component import Component, ComponentType
        from cyclonedx.output import make_outputter
        from cyclonedx.schema import OutputFormat, SchemaVersion
        from packageurl import PackageURL
    except ImportError as exc:  # pragma: no cover - a dependency of shipyard itself
        raise missing_extra("cyclonedx-python-lib", "audit") from exc

    root = Path(bundle_dir)
    manifest = manifest or Manifest.read(root)
    subject = Component(
        name=manifest.name,
        version=manifest.version,
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=f"bundle:{manifest.name}@{manifest.version}",
        description=manifest.description or None,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=manifest.digest())],
        properties=[Property(name="shipyard:runtime", value=manifest.runtime.kind)],
    )
    bom = Bom(metadata=BomMetaData(component=subject, timestamp=now), serial_number=serial)
    libraries = []
    deps = manifest.dependencies
    for raw_name, spec in sorted((deps.packages if deps else {}).items()):
        name_match = PACKAGE_NAME.fullmatch(raw_name.strip())
        if not name_match:
            continue  # not a PyPI name: it has no purl; `shipyard audit` lists it as unchecked
        name = canonicalize_name(name_match.group(1))
        pin = PIN.fullmatch(spec.strip())
        version = pin["version"] if pin else None
        library = Component(
            name=name,
            version=version,
            type=ComponentType.LIBRARY,
            bom_ref=f"pkg:pypi/{name}@{version}" if version else f"pkg:pypi/{name}",
            purl=PackageURL(type="pypi", name=name, version=version),
        )
        libraries.append(library)
        bom.components.add(library)
    for relative in [MANIFEST_NAME, *(entry.path for entry in manifest.all_files())]:
        # resolve_inside refuses a path that escapes the bundle before anything is read.
        digest, size = files.sha256_file(files.resolve_inside(root, relative))
        bom.components.add(
            Component(
                name=relative,
                type=ComponentType.FILE,
                bom_ref=f"file:{relative}",
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest)],
                properties=[Property(name="shipyard:size", value=str(size))],
            )
        )
    bom.register_dependency(subject, libraries)
    if deps is not None:
        bom.metadata.properties.add(Property(name="shipyard:python", value=deps.python))
    return make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_5).output_as_string(indent=2)


def write_sbom(
    bundle_dir: Path,
    dest: Path,
    *,
    manifest: Manifest | None = None,
    serial: UUID | None = None,
    now: datetime | None = None,
) -> Path:
    """Write the SBOM to `dest` atomically (temp file, then rename); returns `dest`."""
    text = sbom_json(bundle_dir, manifest=manifest, serial=serial, now=now)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".sbom-", dir=dest.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp, dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return dest
