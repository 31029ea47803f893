"""``mexport bundle``: the hand-off package for app teams, and its verification.

A bundle (a zip, or a directory) holds the artifacts, ``manifest.json`` (schema
:data:`~mexport.bundle.manifest.SCHEMA`, a sha256 for every file), golden vectors with
tolerances, the validation summary, and a README with the model card and device snippets.
"""

from .create import BundleResult, create_bundle
from .manifest import SCHEMA, BundleError
from .verify import VerifyReport, verify_bundle

__all__ = ["SCHEMA", "BundleError", "BundleResult", "VerifyReport", "create_bundle", "verify_bundle"]
