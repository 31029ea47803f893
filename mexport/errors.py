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
