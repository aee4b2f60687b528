"""backchannel: take slow, flaky back-end work off web sites, over XMPP PubSub.

This package is the composition root: settings, the exception tree, the managed
local XMPP server, assembling components and the command-line entry point.
"""

__version__ = "0.1.0"
