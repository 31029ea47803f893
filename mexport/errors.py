"""Typed errors. Library code raises these; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class MexportError(Exception):
    """Base class for every error a user can cause or fix. Exit code 2 (bad usage or input)."""

    exit_code = 2


class InputError(MexportError):
    """A file or option given by the user is missing, unreadable or invalid."""


class WeightsError(MexportError):
    """Weights are missing, corrupt or do not match their recorded checksum."""


class ConversionError(MexportError):
    """A converter could not turn the model into the requested format."""


class FidelityError(MexportError):
    """An artifact was written but does not reproduce the float model well enough."""

    exit_code = 1


class ArtifactRunError(MexportError):
    """An artifact loaded but its runtime failed to run it: a failed artifact, not bad input."""

    exit_code = 1


class CannotVerifyError(MexportError):
    """An artifact contains something the validator cannot execute; never reported as a pass."""

    exit_code = 1


class UnsupportedOpError(MexportError):
    """A runtime cannot load an artifact: it lacks an op, or the op's version, that the artifact
    uses (an app's pinned older runtime). Names the op so the export can be changed to avoid it."""

    exit_code = 1

    def __init__(self, message: str, *, runtime: str, runtime_version: str, op: str, op_version: int | None) -> None:
        super().__init__(message)
        self.runtime, self.runtime_version, self.op, self.op_version = runtime, runtime_version, op, op_version
