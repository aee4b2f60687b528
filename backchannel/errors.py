"""The one exception tree of backchannel.

Every error our code raises on purpose is a :class:`BackchannelError`. Third-party
errors (slixmpp, aiohttp, geopy) are translated where they enter our code, so the bot,
the commands and the gateway never import a third-party exception type::

    BackchannelError
    ├── ConfigError                 bad or missing setting (names file and key)
    ├── ServerError                 the managed local XMPP server
    │   └── ServerNotInstalled      prosody/ejabberd binary missing (says how to install)
    ├── XmppError                   talking to the XMPP server
    │   ├── NotConnected            no live session right now (retry later)
    │   ├── XmppTimeout             (also a TimeoutError) no answer in time
    │   └── XmppRefused             the server answered with an error condition
    ├── EventError                  an event that breaks the contract (a 4xx, a dead letter)
    │   ├── EventTooLarge
    │   └── UnknownSource
    ├── TaskError                   an outside service call failed
    │   ├── TemporaryTaskError      worth retrying (timeouts, 5xx, 408, 429)
    │   └── PermanentTaskError      not worth retrying (4xx, validation)
    ├── CallbackError               calling a site back failed
    │   └── CallbackRefused         the destination is not allowed (SSRF guard, 410)
    ├── StoreError                  the local state store
    ├── UsageExit                   bad command-line input (the CLI exits 2 with one line)
    └── CommandError                an operator command failed; its text goes to the user
        ├── UsageError              bad arguments (text is a usage line)
        └── PermissionDenied        the caller's role may not run this
"""

from __future__ import annotations


class BackchannelError(Exception):
    """Base of every error backchannel raises on purpose."""


class ConfigError(BackchannelError):
    """A setting is missing or wrong. The message names the file and the key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ""
        if file and key:
            where = f"{file}: {key}: "
        elif file:
            where = f"{file}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}")
        self.file = file
        self.key = key
        self.reason = message


class ServerError(BackchannelError):
    """The managed local XMPP server could not be started, stopped or queried."""


class ServerNotInstalled(ServerError):
    """The server binary is missing; the message says how to install it."""


class XmppError(BackchannelError):
    """Talking to the XMPP server failed."""


class NotConnected(XmppError):
    """There is no live XMPP session right now; the caller may retry later."""


class XmppTimeout(XmppError, TimeoutError):
    """The XMPP server did not answer in time."""


class XmppRefused(XmppError):
    """The XMPP server answered with an error condition (e.g. forbidden, item-not-found)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


class EventError(BackchannelError, ValueError):
    """An event breaks the contract. The message says which rule and where."""


class EventTooLarge(EventError):
    """The serialized event is above the configured size limit."""


class UnknownSource(EventError):
    """The event's `source` is not a registered site."""


class TaskError(BackchannelError):
    """A call to an outside service failed."""

    retry_after: float | None = None


class TemporaryTaskError(TaskError):
    """Worth retrying: timeouts, connection errors, 5xx, 408, 429."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentTaskError(TaskError):
    """Not worth retrying: the request itself is wrong (4xx, validation)."""


class CallbackError(BackchannelError):
    """Calling a site back failed (may be retried)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CallbackRefused(CallbackError):
    """The callback must not be (re)sent: forbidden destination, or the site answered 410."""


class StoreError(BackchannelError):
    """The local state store failed."""


class UsageExit(BackchannelError):
    """Bad command-line input: the CLI prints this one line and exits with status 2."""


class CommandError(BackchannelError):
    """An operator command failed in an expected way; the message is shown to the user."""


class UsageError(CommandError):
    """The command's arguments are wrong; the message is a usage hint."""


class PermissionDenied(CommandError):
    """The caller's role may not run this command."""
