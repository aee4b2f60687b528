"""Operator commands, defined once and transport-free.

The chat bot, XEP-0050 ad-hoc commands and the CLI all call :meth:`Dispatcher.run` on a
registry built by :func:`builtin_registry`; see :mod:`commands.model` for the schema.
"""

from commands.backend import OperatorBackend
from commands.builtin import builtin_registry
from commands.dispatch import Dispatcher, RateLimiter
from commands.model import (
    Argument,
    AuditRecord,
    Command,
    Context,
    InternalCommandError,
    RateLimited,
    Result,
    Role,
    role_of,
)
from commands.registry import Registry

__all__ = [
    "Argument",
    "AuditRecord",
    "Command",
    "Context",
    "Dispatcher",
    "InternalCommandError",
    "OperatorBackend",
    "RateLimited",
    "RateLimiter",
    "Registry",
    "Result",
    "Role",
    "builtin_registry",
    "role_of",
]
